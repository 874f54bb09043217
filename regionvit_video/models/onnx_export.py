"""ONNX export of the toolkit's models, and a parity check of ONNX Runtime against PyTorch.

``export_onnx(model, "model.onnx")`` traces the model with ``torch.onnx.export(dynamo=True)`` (torch.export,
then the ONNX translation and onnxscript's graph optimisation): opset 18 (torch's own) by default, one
input ``video`` (B, 3, T, H, W) (``image`` (B, 3, H, W) for the image models) with a dynamic batch, one
output ``logits`` (B, num_classes). The graph is fixed to the exported T, H, W. The architecture, class
names and preprocessing of ``model.pretrained_cfg`` go into the file's metadata (ONNX Runtime:
``session.get_modelmeta().custom_metadata_map``).

``check_onnx_parity(model, "model.onnx", clip)`` runs both on the CPU and returns the largest absolute
difference of the logits, whether the top-5 classes agree, and both latencies.
"""
from __future__ import annotations

import contextlib
import json
import logging
import os
import statistics
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Sequence

import torch
import torch.nn as nn

from regionvit_video.models.base import unwrap_model

_logger = logging.getLogger(__name__)

DEFAULT_OPSET = 18
# Opset 17 cannot be had: the exporter writes opset 18 and converts down, and neither onnxscript's converter
# (it keeps ReduceMean's opset-18 attribute noop_with_empty_axes) nor onnx's (no adapter for Pad-18) gives a
# valid opset-17 graph of these models (torch 2.14.1, onnxscript 0.7.2, onnx 1.23.2). Later opsets convert.
MIN_OPSET = 18
OUTPUT_NAME = "logits"


def _input_name(rank: int) -> str:
    return "video" if rank == 5 else "image"


def _default_input_shape(model: nn.Module) -> tuple[int, ...]:
    size = (getattr(model, "pretrained_cfg", None) or {}).get("input_size")
    if not size:
        raise ValueError(f"{type(model).__name__} has no pretrained_cfg['input_size']: pass input_shape")
    return (1, *size)


@contextlib.contextmanager
def _without_slice_split_rule():
    """onnxscript's default rewrite rules less ``SlicesSplit`` (Slice + Slice -> Split), for the duration.

    Its matcher (a pattern with two output nodes) scans the whole graph for every node it starts from:
    quadratic in the graph size, 94 of the 123 s of optimising regionvit_video_small's 4,430 nodes
    (onnxscript 0.7.2), and it never fires on these models (the optimised graph is the same node for
    node without it). ``torch.onnx.export(optimize=True)`` runs ``onnxscript.optimizer.optimize_ir``,
    which reads the rule list at call time. Without that list (another onnxscript), nothing changes.
    """
    try:
        from onnxscript import rewriter
        from onnxscript.rewriter.rules.common import slice_split_rule
    except ImportError:  # pragma: no cover
        yield
        return
    saved = getattr(rewriter, "_DEFAULT_REWRITE_RULES", None)
    if saved is None:  # pragma: no cover
        yield
        return
    rewriter._DEFAULT_REWRITE_RULES = tuple(r for r in saved if r is not slice_split_rule)
    try:
        yield
    finally:
        rewriter._DEFAULT_REWRITE_RULES = saved


def export_onnx(
    model: nn.Module,
    path: str | os.PathLike,
    input_shape: Sequence[int] | None = None,
    *,
    opset: int = DEFAULT_OPSET,
    dynamic_batch: bool = True,
    optimize: bool = True,
) -> Path:
    """Export ``model`` (in eval mode) to an ONNX file.

    Args:
        model: a toolkit model (bare, or in a DDP / torch.compile wrapper); exported in eval mode, on the
            device it is on (export CPU models: the CPU graph takes the attention path that is fastest on
            CPUs for short sequences), left in the mode it was in.
        path: the ``.onnx`` file to write (its folder is created). Models over 2 GB get their weights in
            a ``<path>.data`` file beside it.
        input_shape: (B, 3, T, H, W) for video models, (B, 3, H, W) for image models; default: batch 1 at
            ``model.pretrained_cfg["input_size"]``. T, H and W are fixed in the graph.
        opset: ONNX opset, at least 18 (see ``MIN_OPSET``).
        dynamic_batch: the batch dimension is symbolic (``batch``): one file serves every batch size.
            (It is traced at batch 2 when ``input_shape`` says 1: torch.export fixes dimensions of size 1.)
        optimize: run onnxscript's graph optimisation (constant folding, rewrites, fusions), as
            ``torch.onnx.export`` does by default: a graph of about a third of the nodes (shape
            arithmetic folded; 1,636 instead of 4,430 for regionvit_video_small), a few seconds more.
            ONNX Runtime, which optimises the graph itself, runs both about as fast.

    Returns:
        ``path``.
    """
    if opset < MIN_OPSET:
        raise ValueError(
            f"opset must be at least {MIN_OPSET}, got {opset}: torch's exporter writes opset 18, and the version "
            "converters do not take these models' graphs lower"
        )
    model = unwrap_model(model)
    shape = tuple(int(s) for s in (input_shape if input_shape is not None else _default_input_shape(model)))
    if len(shape) not in (4, 5) or min(shape) < 1:
        raise ValueError(f"input_shape must be (B, C, T, H, W) or (B, C, H, W), got {shape}")
    if dynamic_batch and shape[0] == 1:
        shape = (2, *shape[1:])
    param = next(model.parameters(), None)
    device = param.device if param is not None else torch.device("cpu")
    example = torch.randn(shape, device=device)
    dynamic_shapes = ({0: torch.export.Dim("batch", min=1)},) if dynamic_batch else None
    name = _input_name(len(shape))

    was_training = model.training
    model.eval()
    t0 = time.perf_counter()
    try:
        with torch.no_grad(), _without_slice_split_rule():
            program = torch.onnx.export(
                model,
                (example,),
                dynamo=True,
                opset_version=opset,
                dynamic_shapes=dynamic_shapes,
                input_names=[name],
                output_names=[OUTPUT_NAME],
                optimize=optimize,
                verbose=False,
            )
    finally:
        model.train(was_training)
    if program is None:  # pragma: no cover - dynamo=True always returns a program
        raise RuntimeError("torch.onnx.export returned no program")
    got = program.model.opset_imports.get("")
    if got != opset:  # the exporter's version conversion failed (it only warns)
        raise RuntimeError(f"the ONNX graph has opset {got}, not the {opset} asked for: the version conversion failed")

    cfg = getattr(model, "pretrained_cfg", None) or {}
    meta = {
        "architecture": cfg.get("architecture"),
        "input_layout": "B,C,T,H,W" if len(shape) == 5 else "B,C,H,W",
        "input_shape": json.dumps(["batch" if dynamic_batch else shape[0], *shape[1:]]),
        "label_names": json.dumps(cfg.get("label_names")) if cfg.get("label_names") else None,
        "preprocessing": json.dumps(cfg.get("preprocessing")) if cfg.get("preprocessing") else None,
    }
    for key, value in meta.items():
        if value is not None:
            program.model.metadata_props[key] = str(value)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    program.save(str(path))
    _logger.info("exported %s to %s (opset %d, input %s %s, %.1f s)", cfg.get("architecture", type(model).__name__),
                 path, opset, name, meta["input_shape"], time.perf_counter() - t0)
    return path


@dataclass
class OnnxParity:
    """What :func:`check_onnx_parity` measured.

    Attributes:
        max_abs_diff: largest absolute difference between the ONNX Runtime and the PyTorch logits.
        same_topk: the top-k classes (k = min(5, classes)) are the same, in the same order, for every clip.
        onnx_latency_ms: ONNX Runtime CPU time of one forward of the clip batch (median of the timed runs).
        torch_latency_ms: PyTorch CPU time, likewise (eval mode, ``torch.inference_mode``).
        input_shape: the clip batch's shape.
        threads: intra-op threads of both.
        repeats: timed runs of each after one untimed run that gives the outputs (0: that run timed).
    """

    max_abs_diff: float
    same_topk: bool
    onnx_latency_ms: float
    torch_latency_ms: float
    input_shape: tuple[int, ...]
    threads: int
    repeats: int

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    def __str__(self) -> str:
        runs = "first run" if self.repeats == 0 else f"median of {self.repeats}"
        return (
            f"input {tuple(self.input_shape)}: max |onnx - torch| = {self.max_abs_diff:.3g}, same top-k: "
            f"{self.same_topk}; CPU latency ({self.threads} threads, {runs}): onnxruntime "
            f"{self.onnx_latency_ms:.1f} ms, torch {self.torch_latency_ms:.1f} ms"
        )


def _timed(fn, repeats: int) -> tuple[Any, float]:
    """One run (its output), then ``repeats`` timed runs: (output, median seconds); with ``repeats=0`` the
    one run is timed."""
    t = time.perf_counter()
    out = fn()
    times = [time.perf_counter() - t] if repeats == 0 else []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return out, statistics.median(times)


def check_onnx_parity(
    model: nn.Module,
    onnx_path: str | os.PathLike,
    clip: torch.Tensor,
    *,
    repeats: int = 3,
    threads: int | None = None,
) -> OnnxParity:
    """Run ``clip`` through ONNX Runtime (CPU) and through ``model`` (PyTorch, CPU) and compare.

    Args:
        model: the model the file was exported from, on the CPU (used in eval mode, left as it was).
        onnx_path: the exported file.
        clip: (B, 3, T, H, W) (or (B, 3, H, W)) float input, preprocessed as the model expects.
        repeats: timed runs of each, after one untimed run that gives the outputs; 0: time that one run
            (a first run: includes one-time costs, for models too big to run twice).
        threads: intra-op threads for both (default: ``torch.get_num_threads()``).

    Returns:
        An :class:`OnnxParity`.
    """
    import onnxruntime as ort

    if repeats < 0:
        raise ValueError(f"repeats must be at least 0, got {repeats}")
    model = unwrap_model(model)
    param = next(model.parameters(), None)
    if param is not None and param.device.type != "cpu":
        raise ValueError(f"check_onnx_parity compares CPU runs; the model is on {param.device}")
    threads = threads or torch.get_num_threads()
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.log_severity_level = 3  # errors only (not the constant-folding notes)
    # ORT's idle threads spin-wait after each run by default, taking the cores from the PyTorch runs that follow.
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    session = ort.InferenceSession(str(onnx_path), options, providers=["CPUExecutionProvider"])
    feed = {session.get_inputs()[0].name: clip.detach().cpu().float().contiguous().numpy()}
    onnx_out, onnx_s = _timed(lambda: session.run([OUTPUT_NAME], feed)[0], repeats)

    was_training = model.training
    model.eval()
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        with torch.inference_mode():
            torch_out, torch_s = _timed(lambda: model(clip.cpu().float()), repeats)
    finally:
        torch.set_num_threads(before)
        model.train(was_training)

    onnx_out = torch.from_numpy(onnx_out)
    k = min(5, torch_out.shape[-1])
    same = bool(torch.equal(onnx_out.topk(k, dim=-1).indices, torch_out.topk(k, dim=-1).indices))
    return OnnxParity(
        max_abs_diff=float((onnx_out - torch_out).abs().max()),
        same_topk=same,
        onnx_latency_ms=1000 * onnx_s,
        torch_latency_ms=1000 * torch_s,
        input_shape=tuple(clip.shape),
        threads=threads,
        repeats=repeats,
    )
