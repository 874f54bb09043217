"""RegionViT tokenizers: the local tokenizer (patch size 4) and the regional tokenizer (patch 4*ws).

State_dict keys follow the official code: ``proj.{0,1,3,4,6}.*`` for the 3-conv stem, ``proj.*`` for the
1-conv stem and the regional (linear) tokenizer.
"""
from __future__ import annotations

from typing import Literal

import torch
import torch.nn as nn
import torch.nn.functional as F

from regionvit_video.layers.norm import LayerNorm2d


def keep_dtype(x: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """``x`` in ``like``'s dtype. The tokenizers and the downsampling between stages end in convolutions,
    which torch.autocast runs in bfloat16 / float16; casting their outputs back to the input's dtype keeps
    the token streams, and so every residual sum of the blocks, in float32 under autocast (as timm's ViTs
    do), while a model run in half precision throughout stays in half precision."""
    return x if x.dtype == like.dtype else x.to(like.dtype)


class LocalTokenizer(nn.Module):
    """Image (B, 3, H, W) -> local tokens (B, C, H', W') at stride 4. Never pads the image.

    Args:
        in_chans: image channels.
        embed_dim: output channels C.
        conv_type: ``"3conv"``: conv3x3/s2 (C/4) -> LN2d -> GELU -> conv3x3/s2 (C/2) -> LN2d -> GELU ->
            conv3x3/s1 (C), H' = ceil(ceil(H/2)/2). ``"1conv"``: one conv k8/s4/p3, H' = floor((H-2)/4)+1.
    """

    def __init__(self, *, in_chans: int = 3, embed_dim: int = 96, conv_type: Literal["3conv", "1conv"] = "3conv"):
        super().__init__()
        if conv_type == "3conv":
            if embed_dim % 4:
                raise ValueError(f"3conv tokenizer needs embed_dim divisible by 4, got {embed_dim}")
            self.proj = nn.Sequential(
                nn.Conv2d(in_chans, embed_dim // 4, kernel_size=3, stride=2, padding=1),
                LayerNorm2d(embed_dim // 4),
                nn.GELU(),
                nn.Conv2d(embed_dim // 4, embed_dim // 2, kernel_size=3, stride=2, padding=1),
                LayerNorm2d(embed_dim // 2),
                nn.GELU(),
                nn.Conv2d(embed_dim // 2, embed_dim, kernel_size=3, stride=1, padding=1),
            )
        elif conv_type == "1conv":
            self.proj = nn.Conv2d(in_chans, embed_dim, kernel_size=8, stride=4, padding=3)
        else:
            raise ValueError(f"conv_type must be '3conv' or '1conv', got {conv_type!r}")
        self.conv_type = conv_type

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return keep_dtype(self.proj(x), x)  # B, C, H', W' in x's dtype


class RegionalTokenizer(nn.Module):
    """Image (B, 3, H, W) -> regional tokens (B, C, Hr, Wr): one linear patch embedding of size P = 4*ws.

    Pads the raw image with zeros first, exactly as the official ``PatchEmbed(extra_padding=True)``: only
    if H or W is not divisible by P, and then *each* side gets P - (size mod P), so a side that was
    already divisible gets a whole extra P (official quirk, e.g. 200x168 -> 224x196 at P=28). The pad is
    split floor(pad/2) left/top, the rest right/bottom.

    Args:
        in_chans: image channels.
        embed_dim: output channels C.
        patch_size: P, the regional patch (4 * stage-1 window size).
    """

    def __init__(self, *, in_chans: int = 3, embed_dim: int = 96, patch_size: int = 28):
        super().__init__()
        self.patch_size = patch_size
        self.proj = nn.Conv2d(in_chans, embed_dim, kernel_size=patch_size, stride=patch_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        H, W = x.shape[-2:]
        P = self.patch_size
        if H % P or W % P:
            pad_w, pad_h = P - W % P, P - H % P  # full extra patch on a divisible side (official quirk)
            x = F.pad(x, (pad_w // 2, pad_w - pad_w // 2, pad_h // 2, pad_h - pad_h // 2))
        return keep_dtype(self.proj(x), x)  # B, C, Hr, Wr in x's dtype
