"""fvcore FLOP counting that also counts ``F.scaled_dot_product_attention``.

fvcore 0.1.5 has no handle for ``aten::scaled_dot_product_attention`` and would silently skip it. The
handle below counts it the way fvcore counts the two matmuls of an explicit attention
(q @ k^T and attn @ v, one multiply-add = one FLOP), so totals are comparable with numbers measured on
code that writes attention out by hand (e.g. the official RegionViT, whose published FLOPs are fvcore's).
"""
from __future__ import annotations

import math
import warnings
from typing import Any

import torch
import torch.nn as nn


def sdpa_flop_jit(inputs: list[Any], outputs: list[Any]) -> int:
    """fvcore op handle: batch * L * S * (E + Ev) for q (..., L, E), k (..., S, E), v (..., S, Ev)."""
    from fvcore.nn.jit_handles import get_shape

    q, k, v = (get_shape(t) for t in inputs[:3])
    *batch, L, E = q
    S, Ev = k[-2], v[-1]
    return math.prod(batch) * L * S * (E + Ev)


def flop_count_analysis(model: nn.Module, *inputs: torch.Tensor, count_layer_norm: bool = True):
    """fvcore's ``FlopCountAnalysis`` of ``model(*inputs)`` with SDPA counted (:func:`sdpa_flop_jit`) and
    unsupported-op warnings off; call its ``total()`` / ``by_operator()`` under ``torch.no_grad()``.

    Args:
        count_layer_norm: fvcore's default counts ``nn.LayerNorm``; the RegionViT and TimeSformer papers'
            numbers do not (a None handle would only mark the op ignored, fvcore keeps its default
            handle, so LayerNorm gets a handle that counts 0).
    """
    from fvcore.nn import FlopCountAnalysis

    fca = FlopCountAnalysis(model, inputs)
    fca.set_op_handle("aten::scaled_dot_product_attention", sdpa_flop_jit)
    if not count_layer_norm:
        fca.set_op_handle("aten::layer_norm", lambda inputs, outputs: 0)
    return fca.unsupported_ops_warnings(False).uncalled_modules_warnings(False)


def count_flops(model: nn.Module, *inputs: torch.Tensor, count_layer_norm: bool = True) -> int:
    """Total fvcore FLOPs of ``model(*inputs)`` (eval mode, no grad), with SDPA counted.

    Args:
        model: the module.
        *inputs: example inputs.
        count_layer_norm: fvcore's default counts ``nn.LayerNorm``; the RegionViT paper's numbers do not.
    """
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad(), warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*torch.jit", category=FutureWarning)  # fvcore's jit use
            return int(flop_count_analysis(model, *inputs, count_layer_norm=count_layer_norm).total())
    finally:
        model.train(was_training)
