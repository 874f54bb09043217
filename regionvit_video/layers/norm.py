"""Channel LayerNorm for NCHW maps, as the official RegionViT ``LayerNorm2d``."""
from __future__ import annotations

import torch
import torch.nn as nn


class LayerNorm2d(nn.Module):
    """LayerNorm over the channel dim of a (B, C, H, W) map.

    Matches the official ``regionvit/attention/attention2d.py::LayerNorm2d`` exactly: biased variance,
    ``eps`` inside the square root, and affine parameters of shape (1, C, 1, 1) (so official
    state_dicts load as they are). The official module keeps ``eps`` in a float32 tensor, so the value
    it adds is float32(1e-5) = 9.99999974738e-06 in every dtype; so does this one. In float32 that is the
    same number as 1e-5; in float64 it is what makes the outputs equal the official code's to 1e-12
    instead of 1e-8. Written out with mean/var rather than ``F.layer_norm`` so that fvcore
    counts no FLOPs for it, as it does not for the official module (the published FLOP numbers).

    A float16 / bfloat16 input (autocast, or a half model) is normalised in float32 and returned in its
    own dtype: a channel variance above 65,504 overflows in float16, and torch.autocast runs ``mean`` /
    ``var`` in the input's dtype. A float32 input takes exactly the ops above (nothing more is traced).

    Args:
        channels: number of channels C.
        eps: added to the variance.
    """

    def __init__(self, channels: int, eps: float = 1e-5) -> None:
        super().__init__()
        self.channels = channels
        self.eps = eps
        self._eps = torch.tensor(eps, dtype=torch.float32, device="cpu").item()  # the official float32 value
        self.weight = nn.Parameter(torch.ones(1, channels, 1, 1))
        self.bias = nn.Parameter(torch.zeros(1, channels, 1, 1))

    def reset_parameters(self) -> None:
        nn.init.ones_(self.weight)
        nn.init.zeros_(self.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dtype in (torch.float16, torch.bfloat16):
            return self._normalize(x.float()).to(x.dtype)
        return self._normalize(x)

    def _normalize(self, x: torch.Tensor) -> torch.Tensor:
        mean = x.mean(1, keepdim=True)
        std = torch.sqrt(x.var(1, unbiased=False, keepdim=True) + self._eps)
        return (x - mean) / std * self.weight + self.bias

    def extra_repr(self) -> str:
        return f"{self.channels}, eps={self.eps}"
