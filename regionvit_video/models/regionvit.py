"""RegionViT image backbone, exact to the official code (IBM/RegionViT @ 77000c2).

Paper: Chen, Panda, Fan, "RegionViT: Regional-to-Local Attention for Vision Transformers", ICLR 2022,
https://arxiv.org/abs/2106.02689. Reference code: https://github.com/IBM/RegionViT (``regionvit/regionvit.py``).
Behaviour, quirks and state_dict keys follow that code: official checkpoints load with strict key matching
and give the official outputs (tests/test_models_regionvit.py compares against outputs of the official code
stored in tests/data/regionvit_parity.pt).

Layout: an image gives regional tokens (B, C, Hr, Wr) from a 4*ws linear patch embedding and local tokens
(B, C, H, W) at stride 4. Four stages (downsampling + R2L blocks) keep both streams; the classifier
averages the normalised regional tokens of the last stage.
"""
from __future__ import annotations

import logging
import re
from typing import Any, Literal, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.utils.checkpoint import checkpoint

from regionvit_video.layers import (
    LayerNorm2d,
    LocalTokenizer,
    RegionalTokenizer,
    RelPosAttention,
    WindowLayout,
    from_windows,
    keep_dtype,
    to_windows,
)
from regionvit_video.models.base import (ClassifierMixin, check_temporal_init, init_weights, make_pretrained_cfg,
                                         mlp_branch, take_indices)
from regionvit_video.models.registry import register_model

_logger = logging.getLogger(__name__)

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class R2LBlock(nn.Module):
    """Regional-to-local attention block (official ``R2LAttentionPlusFFN``), channels in == out.

    On window sequences x (B*nW, 1+ws^2, C), token 0 of each window being its regional token:
        1. RSA: r <- r + DropPath(Attn(norm0(r))) over the nW regional tokens of each image (no bias).
        2. LSA: x <- x + DropPath(Attn(norm1(x), rel_pos, mask)) inside each window.
        3. FFN: x <- x + DropPath(MLP(norm2(x))).
    RSA and LSA share one attention module (qkv, proj, rel_pos) but have their own LayerNorms, as in the
    official code. DropPath on the window layout drops per window, not per image (official quirk).

    Args:
        dim: channels C.
        num_heads: attention heads.
        window_size: ws.
        mlp_ratio: FFN hidden width / C.
        qkv_bias: bias on qkv.
        drop: dropout after attention proj and in the MLP.
        attn_drop: dropout on attention weights.
        drop_path: stochastic depth rate of all three residuals.
    """

    def __init__(
        self,
        dim: int,
        *,
        num_heads: int,
        window_size: int,
        mlp_ratio: float = 4.0,
        qkv_bias: bool = True,
        drop: float = 0.0,
        attn_drop: float = 0.0,
        drop_path: float = 0.0,
    ) -> None:
        super().__init__()
        self.norm0 = nn.LayerNorm(dim, eps=1e-6)
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.attn = RelPosAttention(
            dim, num_heads=num_heads, qkv_bias=qkv_bias, attn_drop=attn_drop, proj_drop=drop, window_size=window_size
        )
        self.drop_path, self.norm2, self.mlp = mlp_branch(dim, mlp_ratio, drop, drop_path)

    def forward(self, x: torch.Tensor, layout: WindowLayout) -> torch.Tensor:
        nW, C = layout.num_windows, x.shape[-1]
        regional = x[:, 0].reshape(layout.batch, nW, C)  # B, nW, C
        regional = regional + self.drop_path(self.attn(self.norm0(regional)))
        x = torch.cat([regional.reshape(-1, 1, C), x[:, 1:]], dim=1)  # B*nW, 1+ws^2, C
        x = x + self.drop_path(self.attn(self.norm1(x), rel_pos=True, mask=layout.mask, num_windows=nW))
        return x + self.drop_path(self.mlp(self.norm2(x)))


class Projection(nn.Module):
    """Downsampling between stages (official ``Projection``), one module for both token streams.

    ``'c'`` with in == out (stage 1): identity. ``'sc'``: LayerNorm2d -> GELU -> 3x3/s2 grouped conv with
    channel multiplier out/in (groups = in). ``proj_cls`` is the same module as ``proj`` (the official
    code shares it), so the state_dict holds both key names for the same tensors.

    Both outputs keep their input's dtype (:func:`~regionvit_video.layers.patch_embed.keep_dtype`): under
    torch.autocast the conv returns bfloat16 / float16, and the residual stream of stages 2-4 (``x +
    DropPath(...)`` in every block) would run in low precision from there on.
    """

    def __init__(self, in_dim: int, out_dim: int, *, mode: Literal["c", "sc"]) -> None:
        super().__init__()
        if mode == "c" and in_dim == out_dim:
            self.proj = nn.Sequential(nn.Identity())
        elif mode == "sc":
            if out_dim % in_dim:
                raise ValueError(f"downsampling needs out_dim divisible by in_dim, got {in_dim} -> {out_dim}")
            self.proj = nn.Sequential(
                LayerNorm2d(in_dim),
                nn.GELU(),
                nn.Conv2d(in_dim, out_dim, kernel_size=3, stride=2, padding=1, groups=in_dim),
            )
        else:
            raise ValueError(f"unsupported downsampling mode {mode!r} for {in_dim} -> {out_dim} channels")
        self.proj_cls = self.proj

    def forward(self, regional: torch.Tensor, local: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        # B, C_in, Hr, Wr / B, C_in, H, W -> B, C_out, Hr', Wr' / B, C_out, H', W' (same dtypes as the inputs)
        return keep_dtype(self.proj_cls(regional), regional), keep_dtype(self.proj(local), local)


class RegionViTStage(nn.Module):
    """One stage (official ``ConvAttBlock``): ``block[0]`` downsampling, ``block[1:]`` R2L blocks, opt. PEG.

    Works on 2-D maps: regional (B, C, Hr, Wr) and local (B, C, H, W). The window layout, padding and mask
    are built once; with PEG, after the first block the maps go back to 2-D (cropped), get ``x + peg(x)``
    (same conv for both streams) and are re-flattened.

    Args:
        in_dim: input channels.
        out_dim: channels of this stage.
        depth: number of R2L blocks.
        num_heads: heads.
        window_size: ws.
        downsample: ``'c'`` (none) or ``'sc'`` (stride 2).
        drop_path: per-block stochastic depth rates (length ``depth``).
        peg: add the positional encoding generator (3x3 depthwise conv without bias).
        block_layer: the block class (the video model passes its divided space-time block).
        **block_kwargs: passed to every block (mlp_ratio, qkv_bias, drop, attn_drop).
    """

    def __init__(
        self,
        in_dim: int,
        out_dim: int,
        *,
        depth: int,
        num_heads: int,
        window_size: int,
        downsample: Literal["c", "sc"],
        drop_path: Sequence[float],
        peg: bool = False,
        block_layer: type[R2LBlock] = R2LBlock,
        **block_kwargs: Any,
    ) -> None:
        super().__init__()
        self.ws = window_size
        blocks: list[nn.Module] = [Projection(in_dim, out_dim, mode=downsample)]
        for i in range(depth):
            blocks.append(
                block_layer(
                    out_dim, num_heads=num_heads, window_size=window_size, drop_path=drop_path[i], **block_kwargs
                )
            )
        self.block = nn.ModuleList(blocks)
        self.peg = nn.Conv2d(out_dim, out_dim, kernel_size=3, padding=1, groups=out_dim, bias=False) if peg else None
        self.grad_checkpointing = False

    def forward(
        self, regional: torch.Tensor, local: torch.Tensor, **block_kwargs: Any
    ) -> tuple[torch.Tensor, torch.Tensor]:
        regional, local = self.block[0](regional, local)
        x, layout = to_windows(regional, local, self.ws)  # B*nW, 1+ws^2, C
        for i in range(1, len(self.block)):
            blk = self.block[i]
            if self.grad_checkpointing and torch.is_grad_enabled():
                x = checkpoint(blk, x, layout, use_reentrant=False, **block_kwargs)
            else:
                x = blk(x, layout, **block_kwargs)
            if self.peg is not None and i == 1:
                regional, local = from_windows(x, layout)
                regional, local = regional + self.peg(regional), local + self.peg(local)
                x, layout = to_windows(regional, local, self.ws)
        return from_windows(x, layout)


class RegionViT(ClassifierMixin, nn.Module):
    """RegionViT for images: (B, 3, H, W) -> logits (B, num_classes). Any H, W.

    Args:
        num_classes: classifier outputs; 0 gives an identity head.
        in_chans: image channels.
        embed_dim: 5 widths: tokenizer C0 and stages 1..4 (stage s maps embed_dim[s] -> embed_dim[s+1]).
        depths: R2L blocks per stage.
        num_heads: heads per stage (default C/32).
        window_size: ws per stage; the regional patch is 4 * window_size[0].
        patch_conv_type: local tokenizer, ``'3conv'`` (tiny/small) or ``'1conv'`` (medium/base).
        downsampling: per stage ``'c'`` (none) or ``'sc'`` (LN2d+GELU+grouped conv, stride 2).
        mlp_ratio: FFN width ratio.
        qkv_bias: bias on qkv.
        drop_rate: dropout after the local tokenizer, the attention projections and in the MLPs.
        attn_drop_rate: dropout on attention weights.
        drop_path_rate: stochastic depth, linear from 0 over all R2L blocks.
        peg: positional encoding generator after the first block of every stage.
        det_norm: LayerNorm2d ``norm0..3`` on each stage's local output, applied in place (detection).
        act_checkpoint: activation checkpointing per block.
        block_layer: block class; the video model passes its divided space-time block.
    """

    def __init__(
        self,
        *,
        num_classes: int = 1000,
        in_chans: int = 3,
        embed_dim: Sequence[int] = (96, 96, 192, 384, 768),
        depths: Sequence[int] = (2, 2, 8, 2),
        num_heads: Sequence[int] | None = None,
        window_size: int | Sequence[int] = 7,
        patch_conv_type: Literal["3conv", "1conv"] = "3conv",
        downsampling: Sequence[Literal["c", "sc"]] = ("c", "sc", "sc", "sc"),
        mlp_ratio: float = 4.0,
        qkv_bias: bool = True,
        drop_rate: float = 0.0,
        attn_drop_rate: float = 0.0,
        drop_path_rate: float = 0.0,
        peg: bool = False,
        det_norm: bool = False,
        act_checkpoint: bool = False,
        block_layer: type[R2LBlock] = R2LBlock,
    ) -> None:
        super().__init__()
        n_stages = len(depths)
        if isinstance(window_size, int):
            window_size = (window_size,) * n_stages
        if num_heads is None:
            num_heads = tuple(d // 32 for d in embed_dim[1:])
        if len(embed_dim) != n_stages + 1:
            raise ValueError(f"embed_dim needs {n_stages + 1} entries (tokenizer + stages), got {tuple(embed_dim)}")
        for what, seq in (("num_heads", num_heads), ("window_size", window_size), ("downsampling", downsampling)):
            if len(seq) != n_stages:
                raise ValueError(f"{what} needs {n_stages} entries (one per stage), got {tuple(seq)}")
        self.num_classes = num_classes
        self.embed_dim = tuple(embed_dim)
        self.window_size = tuple(window_size)
        self.num_features = embed_dim[-1]
        self.det_norm = det_norm

        self.patch_embed = LocalTokenizer(in_chans=in_chans, embed_dim=embed_dim[0], conv_type=patch_conv_type)
        # "cls_token" is the official name of the regional tokenizer (kept for checkpoint keys).
        self.cls_token = RegionalTokenizer(in_chans=in_chans, embed_dim=embed_dim[0], patch_size=4 * window_size[0])
        self.pos_drop = nn.Dropout(drop_rate)
        dpr = torch.linspace(0, drop_path_rate, sum(depths), device="cpu").tolist()  # official stochastic-depth rule
        self.layers = nn.ModuleList()
        for s in range(n_stages):
            self.layers.append(
                RegionViTStage(
                    embed_dim[s],
                    embed_dim[s + 1],
                    depth=depths[s],
                    num_heads=num_heads[s],
                    window_size=window_size[s],
                    downsample=downsampling[s],
                    drop_path=dpr[sum(depths[:s]) : sum(depths[: s + 1])],
                    peg=peg,
                    block_layer=block_layer,
                    mlp_ratio=mlp_ratio,
                    qkv_bias=qkv_bias,
                    drop=drop_rate,
                    attn_drop=attn_drop_rate,
                )
            )
        reductions = [4 * 2 ** sum(d == "sc" for d in downsampling[: s + 1]) for s in range(n_stages)]
        # timm's description of the maps forward_intermediates returns (the local tokens after each stage)
        self.feature_info = [
            dict(num_chs=embed_dim[s + 1], reduction=reductions[s], module=f"layers.{s}") for s in range(n_stages)
        ]
        self.norm = nn.LayerNorm(embed_dim[-1], eps=1e-6)
        self.head_drop = nn.Identity()  # the official model has no dropout before its head
        self.head = nn.Linear(embed_dim[-1], num_classes) if num_classes > 0 else nn.Identity()
        if det_norm:
            for i in range(n_stages):
                self.add_module(f"norm{i}", LayerNorm2d(embed_dim[1 + i]))
        # Official init: Linear trunc_normal(0.02)/0, LayerNorm 1/0; convs keep PyTorch's default init.
        self.apply(init_weights)
        self.pretrained_cfg = make_pretrained_cfg((3, 224, 224), IMAGENET_MEAN, IMAGENET_STD, crop_pct=0.875)
        self.set_grad_checkpointing(act_checkpoint)

    # timm-style API (forward, forward_head and the classifier: ClassifierMixin) ---------------------
    @torch.jit.ignore
    def no_weight_decay(self) -> set[str]:
        """Official: empty (rel_pos and the LayerNorm2d weights do get weight decay)."""
        return set()

    @torch.jit.ignore
    def set_grad_checkpointing(self, enable: bool = True) -> None:
        """Recompute each block's activations in backward (saves memory, costs one extra forward)."""
        for stage in self.layers:
            stage.grad_checkpointing = enable

    _repeated_blocks = (R2LBlock,)  # compile_repeated_blocks (the video model's DividedR2LBlock is one)

    # forward ---------------------------------------------------------------------------------------
    # The video model overrides the three steps that differ: tokenizing, pooling, the layout of the maps.
    map_format = "NCHW"

    def _tokenize(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, dict[str, Any]]:
        """(B, 3, H, W) -> regional (B, C0, Hr, Wr), local (B, C0, H/4, W/4), the stages' keyword arguments."""
        if x.ndim != 4:
            hint = " (clips (B, C, T, H, W) need a regionvit_video_* model)" if x.ndim == 5 else ""
            raise ValueError(f"expected an image batch (B, C, H, W), got shape {tuple(x.shape)}{hint}")
        return self.cls_token(x), self.pos_drop(self.patch_embed(x)), {}

    def _pool(self, regional: torch.Tensor, batch: int) -> torch.Tensor:
        """Final regional map (B, C, Hr, Wr) -> (B, C): LayerNorm per token, then the mean."""
        return self.norm(regional.flatten(2).transpose(1, 2)).mean(dim=1)

    def _stage_map(self, local: torch.Tensor, batch: int) -> torch.Tensor:
        return local  # B, C_s, H_s, W_s

    def _run_stages(self, regional: torch.Tensor, local: torch.Tensor, *, take: Sequence[int] = (),
                    last: int | None = None, **block_kwargs: Any) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """Stages 0..``last`` on the maps; returns the final regional map and the local maps of stages ``take``."""
        outs = []
        for i, stage in enumerate(self.layers[: len(self.layers) if last is None else last + 1]):
            regional, local = stage(regional, local, **block_kwargs)
            if self.det_norm:
                local = getattr(self, f"norm{i}")(local)  # in place: also feeds the next stage (official)
            if i in take:
                outs.append(local)
        return regional, outs

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """Input -> pooled pre-logits (B, num_features)."""
        regional, local, kwargs = self._tokenize(x)
        regional, _ = self._run_stages(regional, local, **kwargs)
        return self._pool(regional, x.shape[0])

    def forward_intermediates(
        self,
        x: torch.Tensor,
        indices: int | Sequence[int] | None = None,
        *,
        norm: bool = False,
        stop_early: bool = False,
        output_fmt: str | None = None,
        intermediates_only: bool = False,
    ) -> list[torch.Tensor] | tuple[torch.Tensor, list[torch.Tensor]]:
        """The local-token map after each stage (``feature_info``), and the pooled features.

        Args:
            x: images (B, 3, H, W) (the video model: clips (B, 3, T, H, W)).
            indices: stages to return: None all 4, n the last n, a list those (negative from the end).
            norm: not supported (the maps have no norm layer of their own; build with ``det_norm=True`` for
                the detection LayerNorm2d ``norm0..3``, which the maps then pass through).
            stop_early: run only up to the last stage asked for (with ``intermediates_only``).
            output_fmt: ``"NCHW"`` (image model) / ``"NCTHW"`` (video model), the only layout.
            intermediates_only: return only the maps.

        Returns:
            ``(features, maps)``: ``features`` as :meth:`forward_features` returns them (so
            ``forward_head(features)`` gives the logits) and the maps, (B, C_s, H/4/2^s, W/4/2^s) for strides
            4, 8, 16, 32 (video: (B, C_s, T, H_s, W_s)); only the maps with ``intermediates_only``.
        """
        if norm:
            raise ValueError("RegionViT's stage maps have no norm layer; build the model with det_norm=True")
        take, last = take_indices(len(self.layers), indices, norm=norm, stop_early=stop_early,
                                  output_fmt=output_fmt or self.map_format, formats=(self.map_format,),
                                  intermediates_only=intermediates_only)
        regional, local, kwargs = self._tokenize(x)
        regional, maps = self._run_stages(regional, local, take=take, last=last, **kwargs)
        maps = [self._stage_map(m, x.shape[0]) for m in maps]
        return maps if intermediates_only else (self._pool(regional, x.shape[0]), maps)

    # checkpoint adaptation -------------------------------------------------------------------------
    @torch.jit.ignore
    def filter_pretrained(self, state_dict: dict[str, torch.Tensor], *,
                          temporal_init: Literal["zero", "copy"] = "zero") -> dict[str, torch.Tensor]:
        """Adapt an official (or this toolkit's) RegionViT state_dict to this model: :func:`checkpoint_filter_fn`.

        ``temporal_init`` concerns only video models (checked here, used by :class:`RegionViTVideo`).
        """
        check_temporal_init(temporal_init)
        return checkpoint_filter_fn(state_dict, self)


# Weight adaptation ---------------------------------------------------------------------------------
_DET_NORM_KEY = re.compile(r"^norm[0-9]+\.(weight|bias)$")


def checkpoint_filter_fn(state_dict: dict[str, torch.Tensor], model: nn.Module) -> dict[str, torch.Tensor]:
    """timm's ``checkpoint_filter_fn`` for RegionViT: official aliases, det_norm keys, window-size changes.

    - ``proj_cls`` is the same module as ``proj`` (:class:`Projection`): whichever name a file lacks is
      filled from the other, and the weights load through ``proj``;
    - the detection ``norm0..3`` keys are dropped when the model has no det_norm (the official rule);
    - relative-position tables and the regional tokenizer kernel of another window size are resized to
      the model's (:func:`resize_rel_pos_table`, :func:`resize_patch_kernel`).

    Returns a new dict (input tensors are not modified).
    """
    out = dict(state_dict)
    for key in list(out):
        if ".proj_cls." in key:
            twin = key.replace(".proj_cls.", ".proj.")
            if twin not in out:
                out[twin] = out[key]
            elif not _same(out[twin], out[key]):
                _logger.warning("%s differs from its alias %s; using %s", key, twin, twin)
            del out[key]
    own = model.state_dict()
    for key in list(out):
        if _DET_NORM_KEY.match(key) and key not in own:
            del out[key]
    for key, value in list(out.items()):
        target = own.get(key)
        if target is None or target.shape == value.shape:
            continue
        if key.endswith("attn.rel_pos") and value.ndim == 2 and value.shape[0] == target.shape[0]:
            out[key] = resize_rel_pos_table(value, (int(round(target.shape[1] ** 0.5)) + 1) // 2)
        elif key == "cls_token.proj.weight" and value.shape[:2] == target.shape[:2]:
            out[key] = resize_patch_kernel(value, tuple(target.shape[-2:]))
    return out


def _same(a: torch.Tensor, b: torch.Tensor) -> bool:
    """Equal values (one storage, as a state_dict gives tied weights, or equal contents; meta: by shape)."""
    if a.is_meta or b.is_meta or a.data_ptr() == b.data_ptr():
        return a.shape == b.shape
    return torch.equal(a, b)


def resize_rel_pos_table(table: torch.Tensor, new_window: int) -> torch.Tensor:
    """Resize RegionViT relative-position tables (heads, (2ws-1)^2) to another window size, bicubic.

    The official layout is wrapped (entry for offset d sits at (d + ws//2) mod (2ws-1), see
    :func:`regionvit_video.layers.rel_pos_index`), so the table is first rolled into geometric order
    (offset -(ws-1) .. ws-1), resized as a 2-D image, then rolled back into the new window's wrap.
    (The official ``convert_cls_model_to_diff_ws.py`` resizes the wrapped table directly, which mixes
    unrelated offsets.)
    """
    heads, n = table.shape
    size = int(round(n**0.5))
    if size * size != n or size % 2 == 0:
        raise ValueError(f"relative-position table of {n} entries is not (2ws-1)^2")
    old_ws, new_size = (size + 1) // 2, 2 * new_window - 1
    shift_old = old_ws - 1 - old_ws // 2
    shift_new = new_window - 1 - new_window // 2
    geo = torch.roll(table.view(heads, size, size), shifts=(shift_old, shift_old), dims=(1, 2))
    geo = F.interpolate(geo[None].float(), size=(new_size, new_size), mode="bicubic", align_corners=False)[0]
    wrapped = torch.roll(geo, shifts=(-shift_new, -shift_new), dims=(1, 2))
    return wrapped.reshape(heads, new_size * new_size).to(table.dtype)


def resize_patch_kernel(weight: torch.Tensor, new_size: tuple[int, int]) -> torch.Tensor:
    """Bicubic resize of a patch-embedding kernel (C, 3, P, P) -> (C, 3, P', P') (as the official tool)."""
    return F.interpolate(weight.float(), size=new_size, mode="bicubic", align_corners=False).to(weight.dtype)


# Variants ------------------------------------------------------------------------------------------
# Official configs (regionvit/regionvit.py::_model_cfg). Heads are C/32 everywhere; all windows equal.
#            local tokenizer  embed_dim                      depths          window  peg
MODEL_CFGS: dict[str, dict[str, Any]] = {
    "tiny": dict(patch_conv_type="3conv", embed_dim=(64, 64, 128, 256, 512), depths=(2, 2, 8, 2), window_size=7),
    "small": dict(patch_conv_type="3conv", embed_dim=(96, 96, 192, 384, 768), depths=(2, 2, 8, 2), window_size=7),
    "medium": dict(patch_conv_type="1conv", embed_dim=(96, 96, 192, 384, 768), depths=(2, 2, 14, 2), window_size=7),
    "base": dict(patch_conv_type="1conv", embed_dim=(128, 128, 256, 512, 1024), depths=(2, 2, 14, 2), window_size=7),
    "small_w14": dict(patch_conv_type="3conv", embed_dim=(96, 96, 192, 384, 768), depths=(2, 2, 8, 2), window_size=14),
    "small_w14_peg": dict(
        patch_conv_type="3conv", embed_dim=(96, 96, 192, 384, 768), depths=(2, 2, 8, 2), window_size=14, peg=True
    ),
    "base_w14": dict(
        patch_conv_type="1conv", embed_dim=(128, 128, 256, 512, 1024), depths=(2, 2, 14, 2), window_size=14
    ),
    "base_w14_peg": dict(
        patch_conv_type="1conv", embed_dim=(128, 128, 256, 512, 1024), depths=(2, 2, 14, 2), window_size=14, peg=True
    ),
    # NOT from the paper: a tiny model for tests and the CPU demo (head_dim 32 -> 1, 2, 4, 8 heads).
    "pico": dict(patch_conv_type="3conv", embed_dim=(32, 32, 64, 128, 256), depths=(1, 1, 2, 1), window_size=7),
    # NOT from the paper: pico with window 4 (regional patch 16) for the 64 px CPU demo: 64 px tiles
    # into 4x4 regions without padding, about 0.17 GFLOPs per 4-frame video clip instead of 0.39.
    "pico_w4": dict(patch_conv_type="3conv", embed_dim=(32, 32, 64, 128, 256), depths=(1, 1, 2, 1), window_size=4),
}


def _create_regionvit(variant: str, **kwargs: Any) -> RegionViT:
    return RegionViT(**{**MODEL_CFGS[variant], **kwargs})


@register_model(kind="image")
def regionvit_tiny(**kwargs: Any) -> RegionViT:
    """RegionViT-Ti (13.8M params, 2.4 GFLOPs at 224)."""
    return _create_regionvit("tiny", **kwargs)


@register_model(kind="image")
def regionvit_small(**kwargs: Any) -> RegionViT:
    """RegionViT-S (30.6M params, 5.3 GFLOPs at 224)."""
    return _create_regionvit("small", **kwargs)


@register_model(kind="image")
def regionvit_medium(**kwargs: Any) -> RegionViT:
    """RegionViT-M (41.2M params, 7.4 GFLOPs at 224)."""
    return _create_regionvit("medium", **kwargs)


@register_model(kind="image")
def regionvit_base(**kwargs: Any) -> RegionViT:
    """RegionViT-B (72.7M params, 13.0 GFLOPs at 224)."""
    return _create_regionvit("base", **kwargs)


@register_model(kind="image")
def regionvit_small_w14(**kwargs: Any) -> RegionViT:
    """RegionViT-S+ (window 14, regional patch 56; the paper's detection backbone)."""
    return _create_regionvit("small_w14", **kwargs)


@register_model(kind="image")
def regionvit_small_w14_peg(**kwargs: Any) -> RegionViT:
    """RegionViT-S+ with PEG."""
    return _create_regionvit("small_w14_peg", **kwargs)


@register_model(kind="image")
def regionvit_base_w14(**kwargs: Any) -> RegionViT:
    """RegionViT-B+ (window 14, regional patch 56)."""
    return _create_regionvit("base_w14", **kwargs)


@register_model(kind="image")
def regionvit_base_w14_peg(**kwargs: Any) -> RegionViT:
    """RegionViT-B+ with PEG."""
    return _create_regionvit("base_w14_peg", **kwargs)


@register_model(kind="image")
def regionvit_pico(**kwargs: Any) -> RegionViT:
    """Not from the paper: embed 32/32/64/128/256, depths 1/1/2/1, 3conv, window 7. For tests and CPU demos."""
    return _create_regionvit("pico", **kwargs)


@register_model(kind="image")
def regionvit_pico_w4(**kwargs: Any) -> RegionViT:
    """Not from the paper: pico with window 4 (regional patch 16), for 64 px inputs (the CPU demo)."""
    return _create_regionvit("pico_w4", **kwargs)
