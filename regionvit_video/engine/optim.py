"""Optimizer, learning-rate schedule and losses, all from timm.

- :func:`build_optimizer`: ``timm.optim.create_optimizer_v2`` on timm's weight-decay parameter
  groups. No decay on biases and every other 1-D parameter (LayerNorm), on the names the model's
  ``no_weight_decay()`` lists (relative-position tables, position/time embeddings, class/region
  tokens) and on every parameter of a normalisation module, whatever its shape: RegionViT's
  ``LayerNorm2d`` keeps (1, C, 1, 1) weights, which timm's 1-D rule alone would decay.
- :func:`build_scheduler`: ``SOLVER.LR_POLICY`` "cosine" (timm's ``CosineLRScheduler``) or
  "steps_with_relative_lrs" (PySlowFast's step schedule, :class:`StepsWithRelativeLRs`, on timm's
  ``Scheduler`` base), both in optimizer updates (stepped per iteration), with a linear warm-up from
  ``SOLVER.WARMUP_START_LR``.
- :func:`build_train_loss`: ``SoftTargetCrossEntropy`` with mixup/cutmix (the mixup builds the
  smoothed soft targets), ``LabelSmoothingCrossEntropy`` without mixup, plain cross-entropy when
  the smoothing is 0.
"""
from __future__ import annotations

import bisect
import fnmatch
import logging
import math
from typing import Sequence

import torch
import torch.nn as nn
from fvcore.common.config import CfgNode
from timm.loss import LabelSmoothingCrossEntropy, SoftTargetCrossEntropy
from timm.optim import create_optimizer_v2
from timm.optim import param_groups_weight_decay
from timm.scheduler import CosineLRScheduler
from timm.scheduler.scheduler import Scheduler

from regionvit_video.config.load import LR_SCALING_CHOICES

logger = logging.getLogger(__name__)

# Name patterns never decayed even when a model forgets them in no_weight_decay().
# Exact parameter names only: RegionViT's ``cls_token`` is a conv tokenizer *module* whose kernel
# is decayed like the patch embedding's.
DEFAULT_NO_DECAY_PATTERNS = ("*rel_pos", "pos_embed", "*.pos_embed", "time_embed", "*.time_embed",
                             "cls_token", "*.cls_token")


def _is_norm(module: nn.Module) -> bool:
    norm_types = (nn.LayerNorm, nn.GroupNorm, nn.modules.batchnorm._BatchNorm, nn.LocalResponseNorm)
    return isinstance(module, norm_types) or "Norm" in type(module).__name__


def no_weight_decay_names(model: nn.Module) -> set[str]:
    """Parameter-name patterns exempt from weight decay (fnmatch patterns, as timm uses them)."""
    names: set[str] = set(DEFAULT_NO_DECAY_PATTERNS)
    if hasattr(model, "no_weight_decay"):
        names |= set(model.no_weight_decay())
    for mod_name, module in model.named_modules():
        if _is_norm(module):
            for p_name, _ in module.named_parameters(recurse=False):
                names.add(f"{mod_name}.{p_name}" if mod_name else p_name)
    return names


def weight_decay_split(model: nn.Module) -> tuple[list[str], list[str]]:
    """(names with decay, names without) under the rules of :func:`build_optimizer`."""
    patterns = no_weight_decay_names(model)
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        exempt = p.ndim <= 1 or name.endswith(".bias") or any(fnmatch.fnmatch(name, pat) for pat in patterns)
        (no_decay if exempt else decay).append(name)
    return decay, no_decay


def global_batch_size(cfg: CfgNode, world_size: int) -> int:
    """Clips per optimizer update: TRAIN.BATCH_SIZE x processes x TRAIN.GRAD_ACCUM_STEPS."""
    return cfg.TRAIN.BATCH_SIZE * world_size * cfg.TRAIN.GRAD_ACCUM_STEPS


def lr_scale(cfg: CfgNode, world_size: int) -> float:
    """The factor on SOLVER.BASE_LR, WARMUP_START_LR and COSINE_END_LR: 1 with ``LR_SCALING none``; global
    batch / ``SOLVER.REFERENCE_BATCH_SIZE`` with ``linear`` (the linear scaling rule)."""
    if cfg.SOLVER.LR_SCALING not in LR_SCALING_CHOICES:
        raise ValueError(f"SOLVER.LR_SCALING must be one of {LR_SCALING_CHOICES}, got {cfg.SOLVER.LR_SCALING!r}")
    if cfg.SOLVER.LR_SCALING == "none":
        return 1.0
    return global_batch_size(cfg, world_size) / cfg.SOLVER.REFERENCE_BATCH_SIZE


def build_optimizer(cfg: CfgNode, model: nn.Module, *, world_size: int = 1) -> torch.optim.Optimizer:
    """timm optimizer (``SOLVER.OPTIMIZING_METHOD``) with the weight-decay groups described above, at
    ``SOLVER.BASE_LR`` times :func:`lr_scale` for this number of processes."""
    solver = cfg.SOLVER
    groups = param_groups_weight_decay(model, solver.WEIGHT_DECAY,
                                       no_weight_decay_list=no_weight_decay_names(model))
    kwargs = {}
    if solver.OPTIMIZING_METHOD.lower() in ("sgd", "momentum", "nesterov"):
        kwargs["momentum"] = solver.MOMENTUM
    scale = lr_scale(cfg, world_size)
    optimizer = create_optimizer_v2(groups, opt=solver.OPTIMIZING_METHOD, lr=solver.BASE_LR * scale,
                                    weight_decay=solver.WEIGHT_DECAY, **kwargs)
    decay, no_decay = weight_decay_split(model)
    how = ("as SOLVER.BASE_LR (SOLVER.LR_SCALING none)" if solver.LR_SCALING == "none" else
           f"= SOLVER.BASE_LR {solver.BASE_LR:g} x global batch {global_batch_size(cfg, world_size)} / "
           f"SOLVER.REFERENCE_BATCH_SIZE {solver.REFERENCE_BATCH_SIZE} (SOLVER.LR_SCALING linear)")
    logger.info("optimizer %s: effective lr %g %s; %d process(es), global batch %d; weight decay %g on %d tensors, "
                "none on %d tensors (norms, biases, rel_pos tables, embeddings)", solver.OPTIMIZING_METHOD,
                solver.BASE_LR * scale, how, world_size, global_batch_size(cfg, world_size), solver.WEIGHT_DECAY,
                len(decay), len(no_decay))
    return optimizer


class StepsWithRelativeLRs(Scheduler):
    """PySlowFast's ``steps_with_relative_lrs``: from update ``steps[i]`` on, the lr is ``lrs[i]`` times
    the optimizer's base lr; a linear warm-up over the first ``warmup_t`` updates goes from
    ``warmup_lr_init`` to the lr the steps give at ``warmup_t`` (PySlowFast's warm-up rule).

    Args:
        optimizer: its param groups' lr are the base lrs.
        steps: update indices where each relative lr starts; ``steps[0]`` must be 0, strictly increasing.
        lrs: relative lr per step, same length as ``steps``.
        warmup_t: warm-up length in updates.
        warmup_lr_init: lr at update 0 of the warm-up.
    """

    def __init__(self, optimizer: torch.optim.Optimizer, steps: Sequence[int], lrs: Sequence[float], *,
                 warmup_t: int = 0, warmup_lr_init: float = 0.0) -> None:
        if len(steps) != len(lrs) or not steps or steps[0] != 0 or any(b <= a for a, b in zip(steps, steps[1:])):
            raise ValueError(f"steps must start at 0, increase strictly and match lrs in length; got {list(steps)}, "
                             f"{list(lrs)}")
        super().__init__(optimizer, param_group_field="lr", t_in_epochs=False)
        self.steps, self.lrs = [int(t) for t in steps], [float(r) for r in lrs]
        self.warmup_t, self.warmup_lr_init = int(warmup_t), float(warmup_lr_init)
        if self.warmup_t:
            self.update_groups(self.warmup_lr_init)

    def _stepped(self, t: int) -> list[float]:
        scale = self.lrs[bisect.bisect_right(self.steps, t) - 1]
        return [v * scale for v in self.base_values]

    def _get_lr(self, t: int) -> list[float]:
        if t < self.warmup_t:
            return [self.warmup_lr_init + (end - self.warmup_lr_init) * t / self.warmup_t
                    for end in self._stepped(self.warmup_t)]
        return self._stepped(t)


def build_scheduler(cfg: CfgNode, optimizer: torch.optim.Optimizer, updates_per_epoch: int, *,
                    world_size: int = 1) -> Scheduler:
    """The ``SOLVER.LR_POLICY`` schedule over ``SOLVER.MAX_EPOCH`` epochs in optimizer updates, with
    linear warm-up over ``SOLVER.WARMUP_EPOCHS``.

    "cosine": to ``SOLVER.COSINE_END_LR``. "steps_with_relative_lrs": ``SOLVER.LRS[i] * BASE_LR`` from
    epoch ``SOLVER.STEPS[i]`` on (PySlowFast's keys and meaning; epochs may be fractional).
    Call ``scheduler.step_update(num_updates)`` after every optimizer step. The absolute lrs
    (WARMUP_START_LR, COSINE_END_LR; BASE_LR through the optimizer) are scaled by :func:`lr_scale`.
    """
    solver = cfg.SOLVER
    scale = lr_scale(cfg, world_size)
    total = max(1, solver.MAX_EPOCH * updates_per_epoch)
    warmup = min(total, int(round(solver.WARMUP_EPOCHS * updates_per_epoch)))
    if solver.LR_POLICY == "steps_with_relative_lrs":
        return StepsWithRelativeLRs(optimizer, [int(round(e * updates_per_epoch)) for e in solver.STEPS],
                                    solver.LRS, warmup_t=warmup, warmup_lr_init=solver.WARMUP_START_LR * scale)
    if solver.LR_POLICY != "cosine":
        raise ValueError(f"SOLVER.LR_POLICY {solver.LR_POLICY!r} is not one of cosine, steps_with_relative_lrs")
    return CosineLRScheduler(
        optimizer,
        t_initial=total,
        lr_min=solver.COSINE_END_LR * scale,
        warmup_t=warmup,
        warmup_lr_init=solver.WARMUP_START_LR * scale,
        warmup_prefix=False,
        t_in_epochs=False,
        cycle_limit=1,
    )


def build_train_loss(cfg: CfgNode, mixup_enabled: bool) -> nn.Module:
    """The training criterion for hard labels (no mixup) or soft targets (mixup/cutmix)."""
    if mixup_enabled:
        return SoftTargetCrossEntropy()
    if cfg.MIXUP.LABEL_SMOOTHING > 0:
        return LabelSmoothingCrossEntropy(smoothing=cfg.MIXUP.LABEL_SMOOTHING)
    return nn.CrossEntropyLoss()


def updates_per_epoch(iters_per_epoch: int, accum_steps: int) -> int:
    """Optimizer steps in an epoch (the last partial accumulation also steps)."""
    return math.ceil(iters_per_epoch / accum_steps)
