"""RegionViT's flattened window layout: padding, the per-window mask, and the way back to 2-D maps.

Every regional token owns a ws x ws window of local tokens. Blocks work on sequences
``[regional token, ws*ws local tokens]``, one per window, windows ordered batch-major then row-major,
local tokens row-major inside a window (the official ``F.unfold`` order).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from einops import rearrange


@dataclass(frozen=True)
class WindowLayout:
    """What :func:`from_windows` needs to undo :func:`to_windows`.

    Attributes:
        batch: leading batch size B (images, or B*T frames).
        ws: window size.
        grid: (Hr, Wr) regional grid = window grid.
        size: (H, W) of the local map before padding.
        mask: (nW, 1+ws^2, 1+ws^2) bool, True = may attend, or None without padding.
    """

    batch: int
    ws: int
    grid: tuple[int, int]
    size: tuple[int, int]
    mask: torch.Tensor | None

    @property
    def num_windows(self) -> int:
        return self.grid[0] * self.grid[1]


def window_mask(grid: tuple[int, int], ws: int, pad_b: int, pad_r: int, device=None) -> torch.Tensor:
    """Official RegionViT attention mask for a bottom/right padded local map, (nW, 1+ws^2, 1+ws^2) bool.

    Windows in the last column (except the last row) get RIGHT (both tokens in a real column), all
    windows of the last row get BOTTOM (both in a real row), and the bottom-right window gets
    RIGHT *or* BOTTOM: a union where the intersection would be correct. That is the official code's bug,
    kept so that official weights give official outputs. Index 0 (the regional token) is always valid.
    The rows of padding queries allow no key at all; :class:`~regionvit_video.layers.attention.RelPosAttention`
    opens key 0 for them (``open_fully_masked_rows``) before any kernel sees the mask.
    """
    nh, nw = grid
    pos = torch.arange(ws * ws, device=device)
    true = torch.ones(1, dtype=torch.bool, device=device)
    col_ok = torch.cat([true, pos % ws < ws - pad_r])  # 1 + ws^2
    row_ok = torch.cat([true, pos // ws < ws - pad_b])
    right = col_ok[:, None] & col_ok[None, :]
    bottom = row_ok[:, None] & row_ok[None, :]
    n = 1 + ws * ws
    mask = torch.ones(nh, nw, n, n, dtype=torch.bool, device=device)
    mask[: nh - 1, nw - 1] = right
    mask[nh - 1, :] = bottom
    mask[nh - 1, nw - 1] = right | bottom  # official union quirk
    return mask.flatten(0, 1)


def to_windows(regional: torch.Tensor, local: torch.Tensor, ws: int) -> tuple[torch.Tensor, WindowLayout]:
    """(B, C, Hr, Wr) regional + (B, C, H, W) local maps -> (B*nW, 1+ws^2, C) window sequences.

    The local map is zero-padded at the bottom/right to (Hr*ws, Wr*ws) if needed (official rule; note the
    image pad of the regional tokenizer is centred instead), and the padding mask is built.
    """
    B, C, H, W = local.shape
    Hr, Wr = regional.shape[-2:]
    pad_b, pad_r = Hr * ws - H, Wr * ws - W
    if pad_b < 0 or pad_r < 0:
        raise ValueError(f"local map {H}x{W} is larger than the {Hr}x{Wr} regional grid times window {ws}")
    mask = None
    if pad_b or pad_r:
        local = F.pad(local, (0, pad_r, 0, pad_b))
        mask = window_mask((Hr, Wr), ws, pad_b, pad_r, device=local.device)
    local = rearrange(local, "b c (nh wy) (nw wx) -> (b nh nw) (wy wx) c", wy=ws, wx=ws)
    regional = rearrange(regional, "b c nh nw -> (b nh nw) 1 c")
    layout = WindowLayout(batch=B, ws=ws, grid=(Hr, Wr), size=(H, W), mask=mask)
    return torch.cat([regional, local], dim=1), layout


def from_windows(x: torch.Tensor, layout: WindowLayout) -> tuple[torch.Tensor, torch.Tensor]:
    """(B*nW, 1+ws^2, C) -> regional (B, C, Hr, Wr) and local (B, C, H, W) maps, padding cropped."""
    (Hr, Wr), ws, (H, W) = layout.grid, layout.ws, layout.size
    regional = rearrange(x[:, 0], "(b nh nw) c -> b c nh nw", nh=Hr, nw=Wr)
    local = rearrange(x[:, 1:], "(b nh nw) (wy wx) c -> b c (nh wy) (nw wx)", nh=Hr, nw=Wr, wy=ws, wx=ws)
    return regional, local[:, :, :H, :W]
