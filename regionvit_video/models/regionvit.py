"""RegionViT image backbone, exact to the official code (IBM/RegionViT @ 77000c2).

Paper: Chen, Panda, Fan, "RegionViT: Regional-to-Local Attention for Vision Transformers", ICLR 2022,
https://arxiv.org/abs/2106.02689. Behaviour, quirks and state_dict keys follow
``/work/shared/docs/regionvit_spec.md``: official checkpoints load with strict key matching and give the
official outputs (a parity test compares against the official code's outputs).

Layout: an image gives regional tokens (B, C, Hr, Wr) from a 4*ws linear patch embedding and local tokens
(B, C, H, W) at stride 4. Four stages (downsampling + R2L blocks) keep both streams; the classifier
averages the normalised regional tokens of the last stage.
"""
from __future__ import annotations

from typing import Any, Literal, Sequence

import torch
import torch.nn as nn
from timm.layers import DropPath, Mlp, trunc_normal_
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
from regionvit_video.models.registry import register_model

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
        self.drop_path = DropPath(drop_path) if drop_path > 0.0 else nn.Identity()
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = Mlp(in_features=dim, hidden_features=int(dim * mlp_ratio), act_layer=nn.GELU, drop=drop)

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


class RegionViT(nn.Module):
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
        # timm-style description of forward_features(x, detection=True) (local-token maps per stage)
        self.feature_info = [
            dict(num_chs=embed_dim[s + 1], reduction=reductions[s], module=f"layers.{s}") for s in range(n_stages)
        ]
        self.norm = nn.LayerNorm(embed_dim[-1], eps=1e-6)
        self.head = nn.Linear(embed_dim[-1], num_classes) if num_classes > 0 else nn.Identity()
        if det_norm:
            for i in range(n_stages):
                self.add_module(f"norm{i}", LayerNorm2d(embed_dim[1 + i]))
        # Official init: Linear trunc_normal(0.02)/0, LayerNorm 1/0; convs keep PyTorch's default init.
        self.apply(_init_weights)
        self.pretrained_cfg = dict(
            input_size=(3, 224, 224),
            mean=IMAGENET_MEAN,
            std=IMAGENET_STD,
            crop_pct=0.875,
            interpolation="bicubic",
            classifier="head",
        )
        if act_checkpoint:
            self.set_grad_checkpointing(True)

    # timm-style API -------------------------------------------------------------------------------
    @torch.jit.ignore
    def no_weight_decay(self) -> set[str]:
        """Official: empty (rel_pos and the LayerNorm2d weights do get weight decay)."""
        return set()

    @torch.jit.ignore
    def set_grad_checkpointing(self, enable: bool = True) -> None:
        """Recompute each block's activations in backward (saves memory, costs one extra forward)."""
        for stage in self.layers:
            stage.grad_checkpointing = enable

    @torch.jit.ignore
    def get_classifier(self) -> nn.Module:
        return self.head

    def reset_classifier(self, num_classes: int) -> None:
        """Replace the head with a freshly initialised Linear(num_features, num_classes) (0: identity)."""
        self.num_classes = num_classes
        device = self.norm.weight.device
        self.head = nn.Linear(self.num_features, num_classes, device=device) if num_classes > 0 else nn.Identity()
        self.head.apply(_init_weights)

    # forward ---------------------------------------------------------------------------------------
    def _run_stages(
        self, regional: torch.Tensor, local: torch.Tensor, **block_kwargs: Any
    ) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """Stages on (B', C, Hr, Wr) / (B', C, H, W) maps; returns final regional map and per-stage local maps."""
        outs = []
        for i, stage in enumerate(self.layers):
            regional, local = stage(regional, local, **block_kwargs)
            if self.det_norm:
                local = getattr(self, f"norm{i}")(local)  # in place: also feeds the next stage (official)
            outs.append(local)
        return regional, outs

    def forward_features(self, x: torch.Tensor, detection: bool = False) -> torch.Tensor | list[torch.Tensor]:
        """(B, 3, H, W) -> pooled pre-logits (B, num_features).

        With ``detection=True`` returns instead the 4 local-token maps after each stage,
        (B, C_s, H/4/2^s, W/4/2^s) for strides 4, 8, 16, 32 (after ``norm{s}`` when ``det_norm``).
        """
        if x.ndim != 4:
            hint = " (clips (B, C, T, H, W) need a regionvit_video_* model)" if x.ndim == 5 else ""
            raise ValueError(f"expected an image batch (B, C, H, W), got shape {tuple(x.shape)}{hint}")
        regional = self.cls_token(x)  # B, C0, Hr, Wr
        local = self.pos_drop(self.patch_embed(x))  # B, C0, H/4, W/4
        regional, outs = self._run_stages(regional, local)
        if detection:
            return outs
        tokens = self.norm(regional.flatten(2).transpose(1, 2))  # B, Hr*Wr, C: norm per token, then mean
        return tokens.mean(dim=1)

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        """Pooled features (B, num_features) -> logits, or the features themselves with ``pre_logits``."""
        return x if pre_logits else self.head(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))


def _init_weights(m: nn.Module) -> None:
    if isinstance(m, nn.Linear):
        trunc_normal_(m.weight, std=0.02)
        if m.bias is not None:
            nn.init.zeros_(m.bias)
    elif isinstance(m, nn.LayerNorm):
        nn.init.ones_(m.weight)
        nn.init.zeros_(m.bias)


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


@register_model
def regionvit_tiny(**kwargs: Any) -> RegionViT:
    """RegionViT-Ti (13.8M params, 2.4 GFLOPs at 224)."""
    return _create_regionvit("tiny", **kwargs)


@register_model
def regionvit_small(**kwargs: Any) -> RegionViT:
    """RegionViT-S (30.6M params, 5.3 GFLOPs at 224)."""
    return _create_regionvit("small", **kwargs)


@register_model
def regionvit_medium(**kwargs: Any) -> RegionViT:
    """RegionViT-M (41.2M params, 7.4 GFLOPs at 224)."""
    return _create_regionvit("medium", **kwargs)


@register_model
def regionvit_base(**kwargs: Any) -> RegionViT:
    """RegionViT-B (72.7M params, 13.0 GFLOPs at 224)."""
    return _create_regionvit("base", **kwargs)


@register_model
def regionvit_small_w14(**kwargs: Any) -> RegionViT:
    """RegionViT-S+ (window 14, regional patch 56; the paper's detection backbone)."""
    return _create_regionvit("small_w14", **kwargs)


@register_model
def regionvit_small_w14_peg(**kwargs: Any) -> RegionViT:
    """RegionViT-S+ with PEG."""
    return _create_regionvit("small_w14_peg", **kwargs)


@register_model
def regionvit_base_w14(**kwargs: Any) -> RegionViT:
    """RegionViT-B+ (window 14, regional patch 56)."""
    return _create_regionvit("base_w14", **kwargs)


@register_model
def regionvit_base_w14_peg(**kwargs: Any) -> RegionViT:
    """RegionViT-B+ with PEG."""
    return _create_regionvit("base_w14_peg", **kwargs)


@register_model
def regionvit_pico(**kwargs: Any) -> RegionViT:
    """Not from the paper: embed 32/32/64/128/256, depths 1/1/2/1, 3conv, window 7. For tests and CPU demos."""
    return _create_regionvit("pico", **kwargs)


@register_model
def regionvit_pico_w4(**kwargs: Any) -> RegionViT:
    """Not from the paper: pico with window 4 (regional patch 16), for 64 px inputs (the CPU demo)."""
    return _create_regionvit("pico_w4", **kwargs)
