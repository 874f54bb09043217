"""Reusable RegionViT layers: attention with relative position bias, window layout, tokenizers, norms."""
from regionvit_video.layers.attention import RelPosAttention, rel_pos_index
from regionvit_video.layers.flops import count_flops, sdpa_flop_jit
from regionvit_video.layers.norm import LayerNorm2d
from regionvit_video.layers.patch_embed import LocalTokenizer, RegionalTokenizer
from regionvit_video.layers.windows import WindowLayout, from_windows, to_windows, window_mask

__all__ = [
    "LayerNorm2d",
    "LocalTokenizer",
    "RegionalTokenizer",
    "RelPosAttention",
    "WindowLayout",
    "count_flops",
    "from_windows",
    "rel_pos_index",
    "sdpa_flop_jit",
    "to_windows",
    "window_mask",
]
