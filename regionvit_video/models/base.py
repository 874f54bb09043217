"""What every model of the registry shares: the classifier API, the weight init, the time embedding,
and the ``forward_intermediates`` contract.

A registered model (:mod:`regionvit_video.models.registry`) provides, as timm's models do:

- ``forward(x)`` = ``forward_head(forward_features(x))``; ``forward_features`` returns the pooled
  pre-logit features ``(B, num_features)`` (timm returns the unpooled map there; here pooling is part
  of the backbone because RegionViT pools its regional tokens and TimeSformer takes its cls token);
- ``forward_head(x, pre_logits=False)``, ``get_classifier()``, ``reset_classifier(num_classes)``;
- ``forward_intermediates(x, indices=None, *, norm=False, stop_early=False, output_fmt=...,
  intermediates_only=False)`` (timm's name and arguments): the per-stage (RegionViT) or per-block
  (TimeSformer) feature maps listed in ``feature_info``, and, unless ``intermediates_only``, the
  pooled features too, as ``(features, intermediates)`` with ``forward_head(features) == forward(x)``;
- ``filter_pretrained(state_dict, temporal_init=...)``: the model's own adaptation of a checkpoint's
  weights (timm's ``checkpoint_filter_fn``), which :func:`regionvit_video.models.load_pretrained` calls;
- ``no_weight_decay()``, ``set_grad_checkpointing(enable)``, ``pretrained_cfg``;
- ``compile_repeated_blocks(**compile_kwargs)``: regional compilation (Hugging Face diffusers' name), every
  block of the classes in ``_repeated_blocks`` compiled in place.

Video models also have ``num_frames``, ``time_embed`` (1, T, C) and a zero-initialised ``temporal_fc``
per block (:class:`TemporalMixin`), and ``build_image_twin()``: the image model of the same spatial
architecture, whose weights they inflate from.
"""
from __future__ import annotations

from typing import Literal, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F
from timm.layers import DropPath, Mlp, trunc_normal_
from timm.models._features import feature_take_indices

from regionvit_video.layers import TEMPORAL_INITS, init_temporal_fc, init_time_embed

__all__ = ["COMPILE_SCOPES", "ClassifierMixin", "TemporalMixin", "check_temporal_init", "init_weights",
           "make_pretrained_cfg", "mlp_branch", "resample_time_embed", "take_indices", "unwrap_model"]

# What MODEL.COMPILE compiles: the whole model as one graph, or each repeated block (compile_repeated_blocks).
COMPILE_SCOPES = ("model", "blocks")


def unwrap_model(model: nn.Module) -> nn.Module:
    """The bare model inside DDP (``.module``) and ``torch.compile`` (``._orig_mod``) wrappers."""
    while True:
        if isinstance(getattr(model, "module", None), nn.Module):
            model = model.module
        elif isinstance(getattr(model, "_orig_mod", None), nn.Module):
            model = model._orig_mod
        else:
            return model


def init_weights(m: nn.Module) -> None:
    """The init RegionViT, TimeSformer and timm's ViT share: Linear trunc_normal(0.02) / 0, LayerNorm 1 / 0."""
    if isinstance(m, nn.Linear):
        trunc_normal_(m.weight, std=0.02)
        if m.bias is not None:
            nn.init.zeros_(m.bias)
    elif isinstance(m, nn.LayerNorm):
        nn.init.ones_(m.weight)
        nn.init.zeros_(m.bias)


def make_pretrained_cfg(input_size: tuple[int, ...], mean: tuple[float, ...], std: tuple[float, ...],
                        **extra) -> dict:
    """timm's ``pretrained_cfg`` of a model here: its input size and normalisation; bicubic resizing and the
    classifier named ``head`` (what :func:`regionvit_video.models.load_pretrained` re-initialises) for all."""
    return dict(input_size=input_size, mean=mean, std=std, interpolation="bicubic", classifier="head", **extra)


def mlp_branch(dim: int, mlp_ratio: float, drop: float, drop_path: float) -> tuple[nn.Module, nn.Module, Mlp]:
    """``(drop_path, norm2, mlp)``: the MLP half every transformer block here ends with, as in timm's ViT block
    (``x + drop_path(mlp(norm2(x)))``, LayerNorm eps 1e-6, GELU MLP of ``dim * mlp_ratio`` hidden units);
    the drop path also serves the block's attention residuals."""
    return (DropPath(drop_path) if drop_path > 0.0 else nn.Identity(), nn.LayerNorm(dim, eps=1e-6),
            Mlp(in_features=dim, hidden_features=int(dim * mlp_ratio), act_layer=nn.GELU, drop=drop))


def take_indices(num_features: int, indices: int | Sequence[int] | None, *, norm: bool, stop_early: bool,
                 output_fmt: str, formats: Sequence[str], intermediates_only: bool) -> tuple[list[int], int]:
    """timm's ``feature_take_indices`` (None: all, int n: the last n, a list: those, negative from the end)
    with the checks ``forward_intermediates`` shares; returns ``(indices, last index to run)``."""
    if output_fmt not in formats:
        raise ValueError(f"output_fmt must be one of {tuple(formats)}, got {output_fmt!r}")
    if stop_early and not intermediates_only:
        raise ValueError("stop_early=True leaves the final features uncomputed: pass intermediates_only=True")
    idx, last = feature_take_indices(num_features, None if indices is None else
                                     (indices if isinstance(indices, int) else list(indices)))
    return idx, (last if stop_early else num_features - 1)


class ClassifierMixin:
    """``forward``, ``forward_head``, ``get_classifier`` and ``reset_classifier`` over the model's
    ``head`` (Linear or Identity), ``head_drop``, ``num_features`` and ``num_classes``."""

    head: nn.Module
    head_drop: nn.Module
    num_features: int
    num_classes: int
    _repeated_blocks: tuple[type[nn.Module], ...] = ()  # the block classes the model repeats

    def compile_repeated_blocks(self, **compile_kwargs) -> int:
        """Regional compilation: ``torch.compile`` every block of the classes in ``_repeated_blocks``, in place
        (``nn.Module.compile``: parameter names and the state_dict stay the same). Blocks of one class and
        input shape share one compiled graph, so compiling takes the time of a few blocks instead of the whole
        model (PyTorch's regional compilation recipe); the rest of the model runs eagerly. Returns the number
        of blocks compiled. ``compile_kwargs`` go to ``torch.compile`` (backend, mode, dynamic, ...)."""
        blocks = [m for m in self.modules() if isinstance(m, self._repeated_blocks)]  # type: ignore[attr-defined]
        if not blocks:
            raise ValueError(f"{type(self).__name__} declares no repeated blocks to compile")
        for block in blocks:
            nn.Module.compile(block, **compile_kwargs)
        return len(blocks)

    @torch.jit.ignore
    def get_classifier(self) -> nn.Module:
        return self.head

    def reset_classifier(self, num_classes: int) -> None:
        """Replace the head with a freshly initialised Linear(num_features, num_classes) (0: identity)."""
        self.num_classes = num_classes
        device = next(self.parameters()).device
        self.head = nn.Linear(self.num_features, num_classes, device=device) if num_classes > 0 else nn.Identity()
        self.head.apply(init_weights)

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        """Pooled features (B, num_features) -> logits, or the features themselves with ``pre_logits``."""
        x = self.head_drop(x)
        return x if pre_logits else self.head(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))


def check_temporal_init(temporal_init: str) -> None:
    if temporal_init not in TEMPORAL_INITS:
        raise ValueError(f"temporal_init must be one of {TEMPORAL_INITS}, got {temporal_init!r}")


class TemporalMixin:
    """The time embedding and ``temporal_fc`` every video model has.

    ``time_embed`` (1, T, C) is added to the tokens of frame t; a clip of another length uses it
    resampled along time (nearest, as TimeSformer). ``init_temporal`` applies the
    ``time_embed_init`` / ``temporal_fc_init`` choices (:mod:`regionvit_video.layers.time_embed`).
    """

    time_embed: nn.Parameter

    def init_temporal(self, time_embed_init: str, temporal_fc_init: str) -> None:
        init_time_embed(self.time_embed, time_embed_init)
        for m in self.modules():
            fc = getattr(m, "temporal_fc", None)
            if isinstance(fc, nn.Linear):
                init_temporal_fc(fc, temporal_fc_init)

    def _time_embed(self, num_frames: int) -> torch.Tensor:
        """(1, T, C); nearest resampling along time when T differs from the model's."""
        if num_frames == self.time_embed.shape[1]:
            return self.time_embed
        return resample_time_embed(self.time_embed, num_frames, mode="nearest")


def resample_time_embed(time_embed: torch.Tensor, num_frames: int,
                        mode: Literal["nearest", "linear"] = "nearest") -> torch.Tensor:
    """(1, T, C) -> (1, num_frames, C), interpolated along time."""
    kwargs = {} if mode == "nearest" else {"align_corners": False}
    return F.interpolate(time_embed.transpose(1, 2), size=num_frames, mode=mode, **kwargs).transpose(1, 2)
