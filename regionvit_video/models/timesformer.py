"""TimeSformer baseline: ViT-B/16 with divided space-time attention, built from timm's ViT parts.

Paper: Bertasius, Wang, Torresani, "Is Space-Time Attention All You Need for Video Understanding?",
ICML 2021, https://arxiv.org/abs/2102.05095. Reference code: facebookresearch/TimeSformer @ a5ef29a,
``timesformer/models/vit.py``. This is the comparison model of the RegionViT paper's Table 7
(TimeSformer 8x224: 196.7 GFLOPs, 121.4M params; exact count here: 121,566,352 with 400 classes).

Behaviour follows the reference code's ``divided_space_time`` model:

- tokens: per-frame 16x16 patches plus ONE cls token per video, ``(B, 1 + N*T, C)`` with the patch tokens
  ordered space-major, time-minor (``(n t)``), as in TimeSformer and mmaction2;
- block: temporal attention over the T tokens of each location (patch tokens only; ``temporal_norm1``,
  ``temporal_attn``, ``temporal_fc`` zero-init), then spatial attention per frame with a copy of the cls
  token in every frame (the T cls outputs are averaged), then the MLP;
- head on the final-normed cls token; ``time_embed`` zero-init.

State-dict keys are TimeSformer's (``blocks.i.temporal_attn.qkv.weight``, ``time_embed``, ...), which are
timm's ViT keys plus the temporal ones, so timm image checkpoints inflate by renaming nothing and official
TimeSformer checkpoints load once their ``model.`` prefix is stripped (``filter_pretrained`` does both).

Deliberate differences from the reference code (both only matter at a size other than the checkpoint's):
``pos_embed`` is resized with 2-D bicubic interpolation on the patch grid, at load time and at forward time
(TimeSformer: 1-D nearest along the flattened sequence at load, 2-D nearest at forward). ``time_embed`` is
resized with 1-D nearest interpolation like TimeSformer.
"""
from __future__ import annotations

import re
from typing import Any, Literal

import torch
import torch.nn as nn
from einops import rearrange, repeat
from timm.layers import PatchEmbed, resample_abs_pos_embed, to_2tuple, trunc_normal_
from timm.models.vision_transformer import Attention, VisionTransformer
from torch.utils.checkpoint import checkpoint

from regionvit_video.models.base import (ClassifierMixin, TemporalMixin, check_temporal_init, init_weights,
                                         make_pretrained_cfg, mlp_branch, resample_time_embed, take_indices)
from regionvit_video.models.registry import register_model

# jx_vit_base_p16_224 (the checkpoint TimeSformer starts from) and timm's ViT-B/16 weights use 0.5/0.5.
VIT_MEAN = (0.5, 0.5, 0.5)
VIT_STD = (0.5, 0.5, 0.5)


class DividedSpaceTimeBlock(nn.Module):
    """TimeSformer's ``divided_space_time`` block on ``(B, 1 + N*T, C)`` tokens (cls first, patches ``(n t)``).

    Args:
        dim: token width C.
        num_heads: heads of both attentions.
        mlp_ratio: MLP hidden width / C.
        qkv_bias: bias on the qkv projections.
        proj_drop: dropout after the attention projections and in the MLP.
        attn_drop: dropout on the attention weights.
        drop_path: stochastic depth of the three residual branches.
    """

    def __init__(self, dim: int, num_heads: int, *, mlp_ratio: float = 4.0, qkv_bias: bool = True,
                 proj_drop: float = 0.0, attn_drop: float = 0.0, drop_path: float = 0.0) -> None:
        super().__init__()
        attn_kwargs = dict(num_heads=num_heads, qkv_bias=qkv_bias, attn_drop=attn_drop, proj_drop=proj_drop)
        # Temporal branch (new in video; inflated from the spatial one by filter_pretrained).
        self.temporal_norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.temporal_attn = Attention(dim, **attn_kwargs)
        self.temporal_fc = nn.Linear(dim, dim)
        # Spatial branch and MLP: exactly timm's ViT block (same names, so image weights load as they are).
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.attn = Attention(dim, **attn_kwargs)
        self.drop_path, self.norm2, self.mlp = mlp_branch(dim, mlp_ratio, proj_drop, drop_path)

    def forward(self, x: torch.Tensor, num_frames: int) -> torch.Tensor:
        """x: (B, 1 + N*T, C) -> same shape."""
        T = num_frames
        cls, patches = x[:, :1], x[:, 1:]  # B, 1, C / B, N*T, C

        # 1. Temporal attention, patch tokens only. As in TimeSformer, DropPath sees (B*N) rows here and
        # (B*T) rows below, so it drops per location / per frame rather than per clip.
        xt = rearrange(patches, "b (n t) c -> (b n) t c", t=T)
        res_t = self.drop_path(self.temporal_attn(self.temporal_norm1(xt)))
        res_t = self.temporal_fc(rearrange(res_t, "(b n) t c -> b (n t) c", b=x.shape[0]))
        xt = patches + res_t  # B, N*T, C

        # 2. Spatial attention per frame; each frame gets its own copy of the clip's cls token.
        xs = rearrange(xt, "b (n t) c -> (b t) n c", t=T)
        xs = torch.cat([repeat(cls, "b 1 c -> (b t) 1 c", t=T), xs], dim=1)  # B*T, 1 + N, C
        res_s = self.drop_path(self.attn(self.norm1(xs)))
        # The T per-frame cls outputs are averaged into one cls residual (the only cross-frame pooling).
        res_cls = rearrange(res_s[:, :1], "(b t) 1 c -> b t c", t=T).mean(dim=1, keepdim=True)  # B, 1, C
        res_s = rearrange(res_s[:, 1:], "(b t) n c -> b (n t) c", t=T)
        # The spatial residual is added to xt (not to the block input); the cls gets the averaged residual.
        x = torch.cat([cls, xt], dim=1) + torch.cat([res_cls, res_s], dim=1)

        # 3. MLP.
        return x + self.drop_path(self.mlp(self.norm2(x)))


class TimeSformer(ClassifierMixin, TemporalMixin, nn.Module):
    """TimeSformer (divided space-time attention): (B, 3, T, H, W) -> logits (B, num_classes).

    Any T (``time_embed`` is resized, nearest) and any H, W divisible by the patch size (``pos_embed`` is
    resized, 2-D bicubic).

    Args:
        num_classes: classifier outputs; 0 gives an identity head.
        num_frames: T the time embedding is built for.
        img_size: H = W (or (H, W)) the positional embedding is built for.
        patch_size: square patch side.
        in_chans: input channels.
        embed_dim: token width.
        depth: number of blocks.
        num_heads: attention heads.
        mlp_ratio: MLP hidden width / embed_dim.
        qkv_bias: bias on qkv.
        drop_rate: dropout before the head (timm's ``drop_rate``; TimeSformer has none).
        pos_drop_rate: dropout after adding the positional and time embeddings.
        proj_drop_rate: dropout after attention projections and in the MLPs.
        attn_drop_rate: dropout on attention weights.
        drop_path_rate: stochastic depth, ``linspace(0, drop_path_rate)`` over the blocks.
        act_checkpoint: activation checkpointing per block.
        time_embed_init: "zeros" (TimeSformer's), "trunc_normal" (std 0.02) or "normal" (std 1: for training
            from scratch, see :mod:`regionvit_video.layers.time_embed`).
        temporal_fc_init: "zeros" (TimeSformer's) or "trunc_normal" (from scratch).
    """

    def __init__(self, *, num_classes: int = 400, num_frames: int = 8, img_size: int | tuple[int, int] = 224,
                 patch_size: int = 16, in_chans: int = 3, embed_dim: int = 768, depth: int = 12, num_heads: int = 12,
                 mlp_ratio: float = 4.0, qkv_bias: bool = True, drop_rate: float = 0.0, pos_drop_rate: float = 0.0,
                 proj_drop_rate: float = 0.0, attn_drop_rate: float = 0.0, drop_path_rate: float = 0.1,
                 act_checkpoint: bool = False, time_embed_init: Literal["zeros", "trunc_normal", "normal"] = "zeros",
                 temporal_fc_init: Literal["zeros", "trunc_normal"] = "zeros") -> None:
        super().__init__()
        img_size = to_2tuple(img_size)
        if embed_dim % num_heads:
            raise ValueError(f"embed_dim {embed_dim} is not divisible by num_heads {num_heads}")
        if img_size[0] % patch_size or img_size[1] % patch_size:
            raise ValueError(f"img_size {img_size} is not divisible by patch_size {patch_size}")
        if num_frames < 1:
            raise ValueError(f"num_frames must be >= 1, got {num_frames}")
        self.num_classes = num_classes
        self.num_frames = num_frames
        self.num_features = self.embed_dim = embed_dim
        self.grad_checkpointing = False
        # The image ViT of the same architecture (build_image_twin): what inflation starts from.
        self._image_kwargs = dict(img_size=img_size, patch_size=patch_size, in_chans=in_chans, embed_dim=embed_dim,
                                  depth=depth, num_heads=num_heads, mlp_ratio=mlp_ratio, qkv_bias=qkv_bias,
                                  num_classes=num_classes, dynamic_img_size=True)

        # Conv2d kernel = stride = patch on every frame; strict_img_size=False allows other sizes.
        self.patch_embed = PatchEmbed(
            img_size=img_size, patch_size=patch_size, in_chans=in_chans, embed_dim=embed_dim, strict_img_size=False
        )
        self.grid_size = tuple(self.patch_embed.grid_size)
        num_patches = self.grid_size[0] * self.grid_size[1]
        self.cls_token = nn.Parameter(torch.zeros(1, 1, embed_dim))
        self.pos_embed = nn.Parameter(torch.zeros(1, num_patches + 1, embed_dim))
        self.pos_drop = nn.Dropout(pos_drop_rate)
        self.time_embed = nn.Parameter(torch.zeros(1, num_frames, embed_dim))
        self.time_drop = nn.Dropout(pos_drop_rate)

        dpr = torch.linspace(0, drop_path_rate, depth, device="cpu").tolist()
        self.blocks = nn.ModuleList(
            DividedSpaceTimeBlock(
                embed_dim,
                num_heads,
                mlp_ratio=mlp_ratio,
                qkv_bias=qkv_bias,
                proj_drop=proj_drop_rate,
                attn_drop=attn_drop_rate,
                drop_path=dpr[i],
            )
            for i in range(depth)
        )
        self.norm = nn.LayerNorm(embed_dim, eps=1e-6)
        self.head_drop = nn.Dropout(drop_rate)
        self.head = nn.Linear(embed_dim, num_classes) if num_classes > 0 else nn.Identity()

        # TimeSformer init: Linear trunc_normal(0.02)/0, LayerNorm 1/0, pos/cls trunc_normal(0.02),
        # time_embed 0 and temporal_fc 0 in every block (the model starts as a per-frame image model).
        trunc_normal_(self.pos_embed, std=0.02)
        trunc_normal_(self.cls_token, std=0.02)
        self.apply(init_weights)
        self.init_temporal(time_embed_init, temporal_fc_init)
        # timm's description of the maps forward_intermediates returns: every block's patch tokens
        self.feature_info = [dict(num_chs=embed_dim, reduction=patch_size, module=f"blocks.{i}") for i in range(depth)]

        self.pretrained_cfg = make_pretrained_cfg((3, num_frames, *img_size), VIT_MEAN, VIT_STD)
        self.set_grad_checkpointing(act_checkpoint)

    # timm-style API -------------------------------------------------------------------------------
    @torch.jit.ignore
    def no_weight_decay(self) -> set[str]:
        return {"pos_embed", "cls_token", "time_embed"}

    _repeated_blocks = (DividedSpaceTimeBlock,)  # compile_repeated_blocks

    @torch.jit.ignore
    def set_grad_checkpointing(self, enable: bool = True) -> None:
        """Recompute each block's activations in backward (saves memory, costs one extra forward)."""
        self.grad_checkpointing = enable

    def build_image_twin(self) -> VisionTransformer:
        """timm's image ViT of this model's spatial architecture (fresh weights): what inflation starts from
        (``vit_base_patch16_224``'s layout for timesformer_base)."""
        return VisionTransformer(**self._image_kwargs)

    # forward ---------------------------------------------------------------------------------------
    def _pos_embed(self, grid: tuple[int, int]) -> torch.Tensor:
        if grid == self.grid_size:
            return self.pos_embed
        return resample_abs_pos_embed(self.pos_embed, new_size=list(grid), old_size=list(self.grid_size))

    def _tokens(self, x: torch.Tensor) -> tuple[torch.Tensor, tuple[int, int]]:
        """(B, 3, T, H, W) -> tokens (B, 1 + N*T, C) (cls first, patches (n t)) and the patch grid."""
        if x.ndim != 5:
            raise ValueError(f"TimeSformer expects a (B, C, T, H, W) clip, got shape {tuple(x.shape)}")
        B, _, T, H, W = x.shape
        x = self.patch_embed(rearrange(x, "b c t h w -> (b t) c h w"))  # B*T, N, C
        grid = (H // self.patch_embed.patch_size[0], W // self.patch_embed.patch_size[1])
        pos = self._pos_embed(grid)
        # One cls per clip: TimeSformer prepends it to every frame, adds pos, then keeps the first B rows;
        # all rows are the same parameter + position vector, so this is the same thing.
        cls = self.pos_drop((self.cls_token + pos[:, :1]).expand(B, -1, -1))  # B, 1, C
        x = self.pos_drop(x + pos[:, 1:])
        x = rearrange(x, "(b t) n c -> (b n) t c", b=B)
        x = self.time_drop(x + self._time_embed(T))
        return torch.cat([cls, rearrange(x, "(b n) t c -> b (n t) c", b=B)], dim=1), grid  # B, 1 + N*T, C

    def _run_blocks(self, x: torch.Tensor, num_frames: int, *, take: list[int] | tuple[int, ...] = (),
                    last: int | None = None) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """Blocks 0..``last`` on the tokens; returns the tokens and those after the blocks ``take``."""
        outs = []
        for i, blk in enumerate(self.blocks[: len(self.blocks) if last is None else last + 1]):
            if self.grad_checkpointing and torch.is_grad_enabled() and not torch.jit.is_scripting():
                x = checkpoint(blk, x, num_frames, use_reentrant=False)
            else:
                x = blk(x, num_frames)
            if i in take:
                outs.append(x)
        return x, outs

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 3, T, H, W) -> final-normed cls token (B, num_features), the pooled pre-logit feature."""
        tokens, _ = self._tokens(x)
        tokens, _ = self._run_blocks(tokens, x.shape[2])
        return self.norm(tokens)[:, 0]

    def forward_intermediates(
        self,
        x: torch.Tensor,
        indices: int | list[int] | tuple[int, ...] | None = None,
        *,
        norm: bool = False,
        stop_early: bool = False,
        output_fmt: str = "NCTHW",
        intermediates_only: bool = False,
    ) -> list[torch.Tensor] | tuple[torch.Tensor, list[torch.Tensor]]:
        """Every block's patch-token map (``feature_info``: one entry per block), and the pooled features.

        As timm's ViT: the intermediates are the tokens after each selected block, the cls token dropped
        (timm's ``return_prefix_tokens=False``), reshaped to the clip's layout.

        Args:
            x: clips (B, 3, T, H, W).
            indices: blocks to return: None all, n the last n, a list those (negative from the end).
            norm: pass each map through the final LayerNorm (timm's ``norm``).
            stop_early: run only up to the last block asked for (with ``intermediates_only``).
            output_fmt: ``"NCTHW"``, the only layout.
            intermediates_only: return only the maps.

        Returns:
            ``(features, maps)``: ``features`` as :meth:`forward_features` returns them (so
            ``forward_head(features)`` gives the logits) and one (B, C, T, H/16, W/16) map per selected block;
            only the maps with ``intermediates_only``.
        """
        take, last = take_indices(len(self.blocks), indices, norm=norm, stop_early=stop_early, output_fmt=output_fmt,
                                  formats=("NCTHW",), intermediates_only=intermediates_only)
        T = x.shape[2]
        tokens, (gh, gw) = self._tokens(x)
        tokens, outs = self._run_blocks(tokens, T, take=take, last=last)
        maps = [rearrange((self.norm(y) if norm else y)[:, 1:], "b (h w t) c -> b c t h w", h=gh, w=gw, t=T)
                for y in outs]  # patches are ordered space-major, time-minor
        return maps if intermediates_only else (self.norm(tokens)[:, 0], maps)

    # checkpoint adaptation -------------------------------------------------------------------------
    def filter_pretrained(
        self, state_dict: dict[str, torch.Tensor], *, temporal_init: Literal["copy", "zero"] = "copy"
    ) -> dict[str, torch.Tensor]:
        """Map a timm-layout ViT image state dict (or a TimeSformer one) to this model's keys.

        Image weights are inflated with TimeSformer's rule: every spatial weight is copied as it is;
        with ``temporal_init="copy"`` each block's ``temporal_attn`` is copied from its ``attn`` and
        ``temporal_norm1`` from ``norm1``; with ``"zero"`` they are left out (fresh init). ``temporal_fc``
        and ``time_embed`` are set to zero (whatever this model's ``*_init``), so the inflated model starts
        as the image model. ``pos_embed`` is resized 2-D bicubic
        on the patch grid when the grid differs. The head is passed through whatever its shape (the loader
        re-initialises a mismatched head); keys this model lacks are passed through for the loader to report.

        A video state dict (one that has ``temporal_attn`` keys, e.g. an official TimeSformer checkpoint
        with its ``model.`` prefix) is passed through, ``time_embed`` resized (nearest) when T differs;
        ``temporal_init`` is then ignored.

        Args:
            state_dict: the checkpoint's model weights (already unwrapped from ``model``/``state_dict``).
            temporal_init: ``"copy"`` or ``"zero"`` (see above).

        Returns:
            A new dict (input tensors are not modified).
        """
        check_temporal_init(temporal_init)
        sd = dict(state_dict)
        for prefix in ("module.", "model."):
            if sd and all(k.startswith(prefix) for k in sd):
                sd = {k[len(prefix) :]: v for k, v in sd.items()}
        is_video = any(".temporal_attn." in k for k in sd)

        out: dict[str, torch.Tensor] = {}
        for k, v in sd.items():
            if k == "patch_embed.proj.weight" and v.ndim == 2:  # linear-form patch embedding -> conv form
                v = v.reshape(self.patch_embed.proj.weight.shape)
            elif k == "pos_embed" and v.shape[1] != self.pos_embed.shape[1]:
                v = resample_abs_pos_embed(v, new_size=list(self.grid_size), num_prefix_tokens=1)
            elif k == "time_embed" and v.shape[1] != self.num_frames:
                v = resample_time_embed(v, self.num_frames, mode="nearest")
            out[k] = v
            if is_video or temporal_init != "copy":
                continue
            m = re.fullmatch(r"(blocks\.\d+)\.(attn|norm1)\.(.+)", k)
            if m:
                new = {"attn": "temporal_attn", "norm1": "temporal_norm1"}[m.group(2)]
                out[f"{m.group(1)}.{new}.{m.group(3)}"] = v.clone()
        if not is_video:
            own = self.state_dict()
            for k, v in own.items():
                if k == "time_embed" or ".temporal_fc." in k:
                    out.setdefault(k, torch.zeros_like(v))
        return out


# Variants ------------------------------------------------------------------------------------------
def _create_timesformer(defaults: dict[str, Any], **kwargs: Any) -> TimeSformer:
    return TimeSformer(**{**defaults, **kwargs})


@register_model(kind="video")
def timesformer_base(**kwargs: Any) -> TimeSformer:
    """TimeSformer 8x224 (divided space-time, ViT-B/16): 121,566,352 params with 400 classes."""
    return _create_timesformer(dict(patch_size=16, embed_dim=768, depth=12, num_heads=12), **kwargs)


@register_model(kind="video")
def timesformer_tiny(**kwargs: Any) -> TimeSformer:
    """NOT from the paper: a tiny TimeSformer (patch 16, dim 64, depth 2, 2 heads) for tests."""
    return _create_timesformer(dict(patch_size=16, embed_dim=64, depth=2, num_heads=2), **kwargs)
