#!/usr/bin/env python
"""Temporal-attention ablation on the demo dataset: the same training with and without it.

    OMP_NUM_THREADS=2 python benchmarks/bench_demo_ablation.py               # full demo schedule, both models
    python benchmarks/bench_demo_ablation.py --data demo_data --demo-output demo_output   # after `make demo`
    python benchmarks/bench_demo_ablation.py --epochs 3 --num-train 160      # quick look

The demo's classes come in time-reversed pairs (move_left / move_right, ...): reversing a video's
frames gives a valid video of the paired class. A model that cannot compare frames in order (here the
same model as the demo's (``MODEL.ARCH`` of the config) with its temporal attention and time embedding
held at zero, so every
frame is encoded alone and the frame features are averaged) sees the same set of frames for a video
and its reversal, so it can find the pair but must guess the direction: about 50% top-1 at best. The
table shows test top-1, pair accuracy (prediction in the right pair) and direction accuracy (right
class, among videos whose pair was right).
"""
from __future__ import annotations

import argparse
import csv
import os
import sys
import time
from pathlib import Path

import torch

import regionvit_video  # noqa: F401
from regionvit_video.demo.__main__ import DEMO_DATA
from regionvit_video.demo.synthetic_actions import PAIRED_CLASS, make_synthetic_actions
from regionvit_video.models.registry import create_model, is_model, register_model

REPO = Path(__file__).resolve().parents[1]


def register_no_temporal(arch: str) -> str:
    """Register ``<arch>_no_temporal``: ``arch`` with its temporal attention switched off.

    ``temporal_fc`` (whose output is the temporal branch's whole contribution) and ``time_embed`` are
    zero and frozen, so frames are encoded independently and only averaged at the end; everything else
    (architecture, init, recipe) is the demo's.
    """
    name = f"{arch}_no_temporal"
    if is_model(name):
        return name

    def build(**kwargs):
        model = create_model(arch, **kwargs)
        for pname, p in model.named_parameters():
            if pname.endswith(("temporal_fc.weight", "temporal_fc.bias")) or pname == "time_embed":
                with torch.no_grad():
                    p.zero_()
                p.requires_grad_(False)
        return model

    build.__name__ = name
    build.__doc__ = f"{arch} with the temporal attention switched off (temporal_fc and time_embed frozen at 0)."
    register_model(build, kind="video")
    return name


def pair_metrics(predictions_csv: Path) -> dict[str, float]:
    rows = list(csv.DictReader(open(predictions_csv, newline="")))
    n = len(rows)
    label = [int(r["label"]) for r in rows]
    pred = [int(r["pred"]) for r in rows]
    correct = sum(p == y for p, y in zip(pred, label))
    in_pair = sum(p in (y, PAIRED_CLASS[y]) for p, y in zip(pred, label))
    return {"top1": 100.0 * correct / n, "pair": 100.0 * in_pair / n,
            "direction": 100.0 * correct / max(in_pair, 1), "videos": n}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--cfg", default=str(REPO / "configs" / "demo.yaml"))
    p.add_argument("--data", default="bench_output/demo_ablation/data")
    p.add_argument("--output", default="bench_output/demo_ablation")
    p.add_argument("--epochs", type=int, default=None, help="SOLVER.MAX_EPOCH (default: the config's)")
    p.add_argument("--num-train", type=int, default=DEMO_DATA["num_train"])
    p.add_argument("--threads", type=int, default=min(2, len(os.sched_getaffinity(0))))
    p.add_argument("--demo-output", metavar="DIR",
                   help="take the temporal model's row from a finished `make demo` run (its OUTPUT_DIR, e.g. "
                        "demo_output, trained on the same generated data) instead of training it again")
    args = p.parse_args(argv)

    from regionvit_video.config.load import load_config
    from regionvit_video.engine import multiview_test, setup_run, train

    torch.set_num_threads(args.threads)
    data = Path(args.data)
    make_synthetic_actions(data, **{**DEMO_DATA, "num_train": args.num_train})
    base = load_config(args.cfg, check_paths=False).MODEL.ARCH
    table = []
    for arch in (base, register_no_temporal(base)):
        if arch == base and args.demo_output:
            preds = Path(args.demo_output) / "test_predictions.csv"
            if not preds.is_file():
                print(f"error: {preds} not found: run `make demo` first or drop --demo-output", file=sys.stderr)
                return 2
            table.append((f"{arch} (from {args.demo_output})", pair_metrics(preds), float("nan")))
            continue
        out = Path(args.output) / arch
        opts = ["DATA.PATH_TO_DATA_DIR", str(data), "DATA.PATH_PREFIX", str(data), "DATA.CLASS_NAMES",
                str(data / "classes.txt"), "OUTPUT_DIR", str(out), "MODEL.ARCH", arch]
        if args.epochs:
            opts += ["SOLVER.MAX_EPOCH", str(args.epochs)]
        cfg = load_config(args.cfg, opts)
        t = time.perf_counter()
        setup_run(cfg)
        result = train(cfg)
        multiview_test(cfg, checkpoint=result.last_checkpoint)
        m = pair_metrics(out / "test_predictions.csv")
        table.append((arch, m, time.perf_counter() - t))

    print(f"\ntemporal-attention ablation on the demo dataset ({cfg.SOLVER.MAX_EPOCH} epochs, "
          f"{args.num_train} training videos, {table[0][1]['videos']} test videos, chance 12.5%)")
    width = max(len(arch) for arch, _, _ in table)
    print(f"| {'model':<{width}} | top-1 % | pair % | direction % | minutes |")
    print(f"|{'-' * (width + 2)}|---------|--------|-------------|---------|")
    for arch, m, s in table:
        print(f"| {arch:<{width}} | {m['top1']:7.1f} | {m['pair']:6.1f} | {m['direction']:11.1f} | {s / 60:7.1f} |")
    print("direction %: right class among videos whose pair was right; an order-blind model is at ~50%.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
