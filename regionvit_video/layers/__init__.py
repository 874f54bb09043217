"""Reusable RegionViT layers: attention with relative position bias, window layout, tokenizers, norms, temporal init."""
from regionvit_video.layers.attention import RelPosAttention, rel_pos_index
from regionvit_video.layers.norm import LayerNorm2d
from regionvit_video.layers.patch_embed import LocalTokenizer, RegionalTokenizer, keep_dtype
from regionvit_video.layers.time_embed import (TEMPORAL_FC_INITS, TEMPORAL_INITS, TIME_EMBED_INITS, init_temporal_fc,
                                              init_time_embed)
from regionvit_video.layers.windows import WindowLayout, from_windows, to_windows, window_mask

__all__ = [
    "TEMPORAL_FC_INITS",
    "TEMPORAL_INITS",
    "TIME_EMBED_INITS",
    "LayerNorm2d",
    "LocalTokenizer",
    "RegionalTokenizer",
    "RelPosAttention",
    "WindowLayout",
    "from_windows",
    "init_temporal_fc",
    "init_time_embed",
    "keep_dtype",
    "rel_pos_index",
    "to_windows",
    "window_mask",
]
