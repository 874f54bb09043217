"""Optimizer, learning-rate schedule and losses, all from timm.

- :func:`build_optimizer`: ``timm.optim.create_optimizer_v2`` on timm's weight-decay parameter
  groups. No decay on biases and every other 1-D parameter (LayerNorm), on the names the model's
  ``no_weight_decay()`` lists (relative-position tables, position/time embeddings, class/region
  tokens) and on every parameter of a normalisation module, whatever its shape: RegionViT's
  ``LayerNorm2d`` keeps (1, C, 1, 1) weights, which timm's 1-D rule alone would decay.
- :func:`build_scheduler`: timm's ``CosineLRScheduler`` in optimizer updates (stepped per
  iteration), with a linear warm-up from ``SOLVER.WARMUP_START_LR``.
- :func:`build_train_loss`: ``SoftTargetCrossEntropy`` with mixup/cutmix (the mixup builds the
  smoothed soft targets), ``LabelSmoothingCrossEntropy`` without mixup, plain cross-entropy when
  the smoothing is 0.
"""
from __future__ import annotations

import fnmatch
import logging
import math

import torch
import torch.nn as nn
from fvcore.common.config import CfgNode
from timm.loss import LabelSmoothingCrossEntropy, SoftTargetCrossEntropy
from timm.optim import create_optimizer_v2
from timm.optim import param_groups_weight_decay
from timm.scheduler import CosineLRScheduler

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


def build_optimizer(cfg: CfgNode, model: nn.Module) -> torch.optim.Optimizer:
    """timm optimizer (``SOLVER.OPTIMIZING_METHOD``) with the weight-decay groups described above."""
    solver = cfg.SOLVER
    groups = param_groups_weight_decay(model, solver.WEIGHT_DECAY,
                                       no_weight_decay_list=no_weight_decay_names(model))
    kwargs = {}
    if solver.OPTIMIZING_METHOD.lower() in ("sgd", "momentum", "nesterov"):
        kwargs["momentum"] = solver.MOMENTUM
    optimizer = create_optimizer_v2(groups, opt=solver.OPTIMIZING_METHOD, lr=solver.BASE_LR,
                                    weight_decay=solver.WEIGHT_DECAY, **kwargs)
    decay, no_decay = weight_decay_split(model)
    logger.info("optimizer %s lr %g weight decay %g on %d tensors, none on %d tensors (norms, biases, "
                "rel_pos tables, embeddings)", solver.OPTIMIZING_METHOD, solver.BASE_LR,
                solver.WEIGHT_DECAY, len(decay), len(no_decay))
    return optimizer


def build_scheduler(cfg: CfgNode, optimizer: torch.optim.Optimizer, updates_per_epoch: int) -> CosineLRScheduler:
    """Cosine schedule over ``SOLVER.MAX_EPOCH`` epochs in optimizer updates, with linear warm-up.

    Call ``scheduler.step_update(num_updates)`` after every optimizer step.
    """
    solver = cfg.SOLVER
    total = max(1, solver.MAX_EPOCH * updates_per_epoch)
    warmup = min(total, int(round(solver.WARMUP_EPOCHS * updates_per_epoch)))
    return CosineLRScheduler(
        optimizer,
        t_initial=total,
        lr_min=solver.COSINE_END_LR,
        warmup_t=warmup,
        warmup_lr_init=solver.WARMUP_START_LR,
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
