"""RegionViT for video: divided space-time attention (TimeSformer) in every R2L block.

Design (the paper extends RegionViT to Kinetics-400 / SSv2 with TimeSformer-style divided attention; no
official code exists):

- Frames are tokenised separately (batch and time folded, B*T). A learned ``time_embed`` (1, T, C0),
  zero at init (``time_embed_init``), is added to both token streams after the tokenizers (resampled if a clip has another T).
- Before every R2L block, a temporal self-attention over the T frames at each spatial position, for
  regional and local tokens with one set of weights: ``x + DropPath(temporal_fc(temporal_attn(
  temporal_norm(x))))``, ``temporal_fc`` zero-initialised so the model starts as the image model
  (TimeSformer's rule). It runs on the window layout, (B*T*nW, 1+ws^2, C) -> (B*nW*(1+ws^2), T, C);
  padded positions form their own sequences and never mix with real ones. That batch is large
  (3,200 sequences per 8x224 clip for RegionViT-S/M); the attention runs it in chunks of
  ``regionvit_video.layers.attention.ATTENTION_BATCH_CHUNK`` sequences (CUDA's grid limit).
- Spatial R2L attention, downsampling, PEG and FFN run per frame with the image model's weights and keys.
- Head: LayerNorm on every regional token of every frame, mean over space and time, Linear.

Inflation from an image checkpoint: :meth:`RegionViTVideo.filter_pretrained` (called by
:func:`regionvit_video.models.load_pretrained`).
"""
from __future__ import annotations

import logging
from typing import Any, Literal

import torch
import torch.nn as nn
from einops import rearrange

from regionvit_video.layers import RelPosAttention, WindowLayout
from regionvit_video.models.base import TemporalMixin, resample_time_embed
from regionvit_video.models.regionvit import MODEL_CFGS, R2LBlock, RegionViT
from regionvit_video.models.registry import register_model

_logger = logging.getLogger(__name__)


class DividedR2LBlock(R2LBlock):
    """Temporal attention over frames, then the image R2L block on every frame.

    Input/output: window sequences (B*T*nW, 1+ws^2, C) with frames folded into the batch
    (``layout.batch`` = B*T), windows fastest.

    Args:
        dim: channels C.
        num_heads: heads of the spatial and the temporal attention (C/32 in all variants).
        drop: dropout after the temporal attention projection.
        attn_drop: dropout on temporal attention weights.
        qkv_bias: bias on the temporal qkv.
        **kwargs: the :class:`R2LBlock` arguments.
    """

    def __init__(
        self,
        dim: int,
        *,
        num_heads: int,
        drop: float = 0.0,
        attn_drop: float = 0.0,
        qkv_bias: bool = True,
        **kwargs: Any,
    ) -> None:
        super().__init__(dim, num_heads=num_heads, drop=drop, attn_drop=attn_drop, qkv_bias=qkv_bias, **kwargs)
        self.temporal_norm = nn.LayerNorm(dim, eps=1e-6)
        self.temporal_attn = RelPosAttention(
            dim, num_heads=num_heads, qkv_bias=qkv_bias, attn_drop=attn_drop, proj_drop=drop, window_size=None
        )
        self.temporal_fc = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor, layout: WindowLayout, num_frames: int = 1) -> torch.Tensor:
        nW, N = layout.num_windows, x.shape[1]
        xt = rearrange(x, "(b t w) n c -> (b w n) t c", t=num_frames, w=nW)  # one sequence per position
        res = self.temporal_fc(self.temporal_attn(self.temporal_norm(xt)))
        res = rearrange(res, "(b w n) t c -> (b t w) n c", w=nW, n=N)
        # DropPath on the window layout: drawn per frame-window, like the spatial residuals
        x = x + self.drop_path(res)
        return super().forward(x, layout)


class RegionViTVideo(TemporalMixin, RegionViT):
    """RegionViT with divided space-time attention: (B, 3, T, H, W) -> logits (B, num_classes).

    Args:
        num_frames: T the ``time_embed`` is sized for; clips with another T use a resampled embedding.
        time_embed_init: "zeros" (TimeSformer's; what inflation sets), "trunc_normal" (std 0.02) or "normal"
            (std 1: for training from scratch, see :mod:`regionvit_video.layers.time_embed`).
        temporal_fc_init: "zeros" (TimeSformer's; what inflation sets) or "trunc_normal" (from scratch).
        **kwargs: the :class:`RegionViT` arguments (embed_dim, depths, window_size, drop_path_rate, ...).
    """

    map_format = "NCTHW"

    def __init__(
        self,
        *,
        num_frames: int = 8,
        time_embed_init: Literal["zeros", "trunc_normal", "normal"] = "zeros",
        temporal_fc_init: Literal["zeros", "trunc_normal"] = "zeros",
        **kwargs: Any,
    ) -> None:
        if "block_layer" in kwargs:
            raise ValueError("RegionViTVideo sets block_layer itself")
        super().__init__(block_layer=DividedR2LBlock, **kwargs)
        self._image_kwargs = dict(kwargs)
        self.num_frames = num_frames
        self.time_embed = nn.Parameter(torch.zeros(1, num_frames, self.embed_dim[0]))
        self.init_temporal(time_embed_init, temporal_fc_init)
        self.pretrained_cfg = {**self.pretrained_cfg, "input_size": (3, num_frames, 224, 224)}

    @torch.jit.ignore
    def no_weight_decay(self) -> set[str]:
        return {"time_embed"}

    def build_image_twin(self) -> RegionViT:
        """The image RegionViT of this model's spatial architecture (fresh weights): what inflation starts from."""
        return RegionViT(**self._image_kwargs)

    # forward: RegionViT's, with frames folded into the batch -------------------------------------
    def _tokenize(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, dict[str, Any]]:
        """(B, 3, T, H, W) -> regional (B*T, C0, Hr, Wr), local (B*T, C0, H/4, W/4), ``num_frames`` for the blocks."""
        if x.ndim != 5:
            raise ValueError(f"expected a clip (B, C, T, H, W), got shape {tuple(x.shape)}")
        B, _, T = x.shape[:3]
        frames = rearrange(x, "b c t h w -> (b t) c h w")
        te = rearrange(self._time_embed(T), "1 t c -> 1 t c 1 1")
        regional = self.cls_token(frames)  # B*T, C0, Hr, Wr
        local = self.patch_embed(frames)  # B*T, C0, H/4, W/4
        regional = (regional.unflatten(0, (B, T)) + te).flatten(0, 1)
        local = self.pos_drop((local.unflatten(0, (B, T)) + te).flatten(0, 1))
        return regional, local, {"num_frames": T}

    def _pool(self, regional: torch.Tensor, batch: int) -> torch.Tensor:
        tokens = rearrange(regional, "(b t) c h w -> b (t h w) c", b=batch)
        return self.norm(tokens).mean(dim=1)  # norm per token, mean over space and time

    def _stage_map(self, local: torch.Tensor, batch: int) -> torch.Tensor:
        return rearrange(local, "(b t) c h w -> b c t h w", b=batch)  # B, C_s, T, H_s, W_s

    @torch.jit.ignore
    def filter_pretrained(
        self, state_dict: dict[str, torch.Tensor], *, temporal_init: Literal["zero", "copy"] = "zero"
    ) -> dict[str, torch.Tensor]:
        """Map an image (or video) RegionViT state_dict onto this model: RegionViT's adaptation, then inflation.

        Spatial keys map one to one (same names). Temporal keys absent from the file are created:
        ``"zero"``: this model's fresh temporal weights; ``"copy"``: ``temporal_attn.{qkv,proj}`` from the
        block's spatial ``attn`` and ``temporal_norm`` from its ``norm1`` (TimeSformer's rule). In both
        cases ``temporal_fc`` is zero, so the inflated model equals the image model on a static clip.
        A ``time_embed`` of another length is resampled (linear), an absent one starts at zero.
        """
        state_dict = super().filter_pretrained(state_dict, temporal_init=temporal_init)
        out = dict(state_dict)
        own = self.state_dict()
        n_new = 0
        for key, value in own.items():
            if key in out:
                continue
            if key == "time_embed":
                out[key] = torch.zeros_like(value)
            elif ".temporal_" in key:
                if temporal_init == "copy" and ".temporal_fc." not in key:
                    src = key.replace(".temporal_attn.", ".attn.").replace(".temporal_norm.", ".norm1.")
                    if src not in state_dict:
                        raise KeyError(f"temporal_init='copy' needs {src!r} in the checkpoint to initialise {key!r}")
                    out[key] = state_dict[src].clone()
                elif ".temporal_fc." in key:
                    out[key] = torch.zeros_like(value)  # whatever this model's temporal_fc_init
                else:
                    out[key] = value.clone()  # fresh init
            else:
                continue
            n_new += 1
        te, own_te = out.get("time_embed"), own["time_embed"]
        if te is not None and te.shape != own_te.shape and te.shape[-1] == own_te.shape[-1]:
            out["time_embed"] = resample_time_embed(te, own_te.shape[1], mode="linear")
            _logger.info("resampled time_embed from %d to %d frames", te.shape[1], own_te.shape[1])
        if n_new:
            _logger.info("inflation: created %d temporal tensors (temporal_init=%r)", n_new, temporal_init)
        return out


def _create_video(variant: str, **kwargs: Any) -> RegionViTVideo:
    return RegionViTVideo(**{**MODEL_CFGS[variant], **kwargs})


@register_model(kind="video", image_twin="regionvit_tiny")
def regionvit_video_tiny(**kwargs: Any) -> RegionViTVideo:
    """RegionViT-Ti with divided space-time attention."""
    return _create_video("tiny", **kwargs)


@register_model(kind="video", image_twin="regionvit_small")
def regionvit_video_small(**kwargs: Any) -> RegionViTVideo:
    """RegionViT-S with divided space-time attention (paper Table 7: 42.9M params, 59.4 GFLOPs at 8x224)."""
    return _create_video("small", **kwargs)


@register_model(kind="video", image_twin="regionvit_medium")
def regionvit_video_medium(**kwargs: Any) -> RegionViTVideo:
    """RegionViT-M with divided space-time attention (paper Table 7: 57.5M params, 83.1 GFLOPs at 8x224)."""
    return _create_video("medium", **kwargs)


@register_model(kind="video", image_twin="regionvit_base")
def regionvit_video_base(**kwargs: Any) -> RegionViTVideo:
    """RegionViT-B with divided space-time attention."""
    return _create_video("base", **kwargs)


@register_model(kind="video", image_twin="regionvit_small_w14")
def regionvit_video_small_w14(**kwargs: Any) -> RegionViTVideo:
    """RegionViT-S+ (window 14) with divided space-time attention."""
    return _create_video("small_w14", **kwargs)


@register_model(kind="video", image_twin="regionvit_small_w14_peg")
def regionvit_video_small_w14_peg(**kwargs: Any) -> RegionViTVideo:
    """RegionViT-S+ with PEG and divided space-time attention."""
    return _create_video("small_w14_peg", **kwargs)


@register_model(kind="video", image_twin="regionvit_base_w14")
def regionvit_video_base_w14(**kwargs: Any) -> RegionViTVideo:
    """RegionViT-B+ (window 14) with divided space-time attention."""
    return _create_video("base_w14", **kwargs)


@register_model(kind="video", image_twin="regionvit_base_w14_peg")
def regionvit_video_base_w14_peg(**kwargs: Any) -> RegionViTVideo:
    """RegionViT-B+ with PEG and divided space-time attention."""
    return _create_video("base_w14_peg", **kwargs)


@register_model(kind="video", image_twin="regionvit_pico")
def regionvit_video_pico(**kwargs: Any) -> RegionViTVideo:
    """Not from the paper: the pico image variant (tests, CPU demo) with divided space-time attention."""
    return _create_video("pico", **kwargs)


@register_model(kind="video", image_twin="regionvit_pico_w4")
def regionvit_video_pico_w4(**kwargs: Any) -> RegionViTVideo:
    """Not from the paper: ``regionvit_pico_w4`` (window 4, for 64 px clips: the CPU demo) with divided attention."""
    return _create_video("pico_w4", **kwargs)
