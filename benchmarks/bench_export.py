#!/usr/bin/env python
"""ONNX export benchmark: export time, graph size, ONNX Runtime vs PyTorch parity and CPU latency, one table.

For every model (default: the demo model regionvit_video_pico_w4 at 4x64x64, regionvit_video_small and
timesformer_base at 8x224; random weights with the temporal branch active) it exports with
``regionvit_video.models.export_onnx`` (dynamic batch, opset 18, onnxscript optimisation on, and off with
``--compare-optimize``), then runs the same clip through ONNX Runtime (CPU) and PyTorch (eval, CPU) on the
same number of threads:

- export seconds, graph nodes, file MB;
- max |logits difference| and whether the top-5 agree;
- latency: median over ``--rounds`` interleaved rounds (ONNX Runtime, PyTorch, again), after one untimed
  run of each, so that a shared machine's drift hits both alike. On a machine whose cores other processes
  also use, PyTorch's OpenMP threads wait for each other at every op (measured: regionvit_video_pico_w4 at
  batch 1, 1.28 s on 2 threads against 33 ms on 1, with another process busy); ``--threads 1`` then gives
  figures that compare.

Usage::

    OMP_NUM_THREADS=2 python benchmarks/bench_export.py                         # full run (minutes)
    python benchmarks/bench_export.py --models regionvit_video_pico_w4 --rounds 3   # smoke run
    python benchmarks/bench_export.py --json out.json --compare-optimize
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path

import torch

# name -> (create_model kwargs, input shape at batch 1)
MODELS = {
    "regionvit_video_pico_w4": (dict(num_classes=8, num_frames=4), (1, 3, 4, 64, 64)),
    "regionvit_video_small": (dict(num_classes=400, num_frames=8), (1, 3, 8, 224, 224)),
    "timesformer_base": (dict(num_classes=400, num_frames=8), (1, 3, 8, 224, 224)),
}


def _model(name: str):
    from regionvit_video.models import create_model

    kwargs, shape = MODELS[name]
    model = create_model(name, time_embed_init="normal", temporal_fc_init="trunc_normal", **kwargs).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.01)
    return model, shape


def bench(name: str, optimize: bool, rounds: int, batch: int, threads: int, tmp: Path) -> dict:
    import onnx
    import onnxruntime as ort

    from regionvit_video.models import check_onnx_parity, export_onnx

    torch.manual_seed(0)
    model, shape = _model(name)
    path = tmp / f"{name}-{int(optimize)}.onnx"
    t = time.perf_counter()
    export_onnx(model, path, shape, optimize=optimize)
    export_s = time.perf_counter() - t
    nodes = len(onnx.load(str(path), load_external_data=False).graph.node)
    clip = torch.randn(batch, *shape[1:])
    parity = check_onnx_parity(model, path, clip, repeats=1, threads=threads)

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.log_severity_level = 3
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    feed = {"video": clip.numpy()}
    session.run(None, feed)
    onnx_t, torch_t = [], []
    with torch.inference_mode():
        model(clip)
        for _ in range(rounds):
            t = time.perf_counter()
            session.run(None, feed)
            onnx_t.append(time.perf_counter() - t)
            t = time.perf_counter()
            model(clip)
            torch_t.append(time.perf_counter() - t)
    return {
        "model": name,
        "input": [batch, *shape[1:]],
        "optimize": optimize,
        "export_s": round(export_s, 1),
        "nodes": nodes,
        "file_mb": round(path.stat().st_size / 2**20, 1),
        "max_abs_diff": parity.max_abs_diff,
        "same_top5": parity.same_topk,
        "onnx_ms": round(1000 * statistics.median(onnx_t), 1),
        "torch_ms": round(1000 * statistics.median(torch_t), 1),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--models", nargs="+", default=list(MODELS), choices=list(MODELS))
    ap.add_argument("--rounds", type=int, default=5, help="interleaved timed rounds")
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--threads", type=int, default=int(os.environ.get("OMP_NUM_THREADS", torch.get_num_threads())))
    ap.add_argument("--compare-optimize", action="store_true", help="also export without onnxscript's optimisation")
    ap.add_argument("--json", help="write the rows to this file")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    import onnxruntime as ort

    print(f"torch {torch.__version__}, onnxruntime {ort.__version__}, {platform.processor() or platform.machine()}, "
          f"{args.threads} threads, batch {args.batch}, {args.rounds} interleaved rounds")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.models:
            for optimize in ((True, False) if args.compare_optimize else (True,)):
                rows.append(bench(name, optimize, args.rounds, args.batch, args.threads, Path(tmp)))
                r = rows[-1]
                print(f"  {r['model']} optimize={r['optimize']}: export {r['export_s']} s", flush=True)
    head = ("model", "input", "opt", "export s", "nodes", "MB", "max abs diff", "top5", "onnxruntime ms", "torch ms")
    print("| " + " | ".join(head) + " |\n|" + "---|" * len(head))
    for r in rows:
        cells = (r["model"], "x".join(map(str, r["input"])), "on" if r["optimize"] else "off", r["export_s"], r["nodes"],
                 r["file_mb"], f"{r['max_abs_diff']:.2g}", "same" if r["same_top5"] else "DIFFER", r["onnx_ms"],
                 r["torch_ms"])
        print("| " + " | ".join(map(str, cells)) + " |")
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2) + "\n")


if __name__ == "__main__":
    main()
