#!/usr/bin/env python
"""RandAugment per op: this project's uint8 kernels against pytorchvideo's, and inside the training item.

Two tables, one thread:

1. ``isolated``: each of the 14 ops of pytorchvideo's RandAugment on one 8 x 3 x 224 x 224 uint8
   clip (8 frames of the real clip tests/data/realshort.mp4 resized to 224), with the arguments
   the policy gives at magnitude 9: pytorchvideo's function (the torchvision per-image kernels it
   calls) and ``regionvit_video.data.rand_augment``'s, best of ``--repeats`` calls each, the
   speed-up, and how their outputs differ (largest difference, share of differing values).
2. ``in the training item``: the training dataset of the paper's config on the real clip, item
   after item (decode, scale jitter, crop, flip, RandAugment), with every op timed where it runs:
   how often each op ran, its mean cost there (after decoding, with cold caches: more than in
   table 1) and its share of the average clip. ``--items`` items.

    OMP_NUM_THREADS=1 python benchmarks/bench_rand_augment.py            # full run
    OMP_NUM_THREADS=1 python benchmarks/bench_rand_augment.py --small    # quick run
"""
from __future__ import annotations

import argparse
import collections
import shutil
import sys
import tempfile
import time
from functools import partial
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

import regionvit_video  # noqa: F401  (pytorchvideo import shim)
from pytorchvideo.transforms.augmentations import _NAME_TO_TRANSFORM_FUNC, AugmentTransform
from pytorchvideo.transforms.rand_augment import _TRANSFORM_RANDAUG_MAX_PARAMS
from regionvit_video.config.defaults import get_cfg
from regionvit_video.data import build_dataset
from regionvit_video.data.decoder import read_frames
from regionvit_video.data.rand_augment import UINT8_OPS
from regionvit_video.utils.malloc import retain_freed_memory

REPO = Path(__file__).resolve().parents[1]
REAL = REPO / "tests" / "data" / "realshort.mp4"
FILL = (128, 128, 128)  # the training transform's fill (pytorchvideo's 0.5 of float clips)


def real_clip(size: int = 224, frames: int = 8) -> torch.Tensor:
    """(T, 3, size, size) uint8: ``frames`` frames spread over the real clip, resized (bilinear) to a square."""
    video, _, _ = read_frames(REAL, lambda n, fps: np.linspace(0, n - 1, frames).round().astype(int))
    clip = torch.from_numpy(video).permute(0, 3, 1, 2).float()
    return F.interpolate(clip, size=(size, size), mode="bilinear", align_corners=False).round_().to(torch.uint8)


def policy_args(name: str, magnitude: float) -> tuple:
    """The arguments pytorchvideo's RandAugment passes to op ``name`` at ``magnitude`` (signs drawn as it does)."""
    op = AugmentTransform(name, magnitude, transform_max_paras=_TRANSFORM_RANDAUG_MAX_PARAMS)
    return op.level_fn(magnitude, op.level_paras) if op.level_fn is not None else ()


def _ms(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return (time.perf_counter() - t0) * 1e3


def isolated(repeats: int, magnitude: float) -> None:
    clip = real_clip()
    torch.manual_seed(0)  # the random signs of the geometric ops' arguments
    names = list(_TRANSFORM_RANDAUG_MAX_PARAMS)
    args = {name: policy_args(name, magnitude) for name in names}
    fns = {name: (partial(_NAME_TO_TRANSFORM_FUNC[name], clip, *args[name], fill=FILL),  # pytorchvideo, ours
                  partial(UINT8_OPS[name], clip, *args[name], fill=FILL)) for name in names}
    # Every op's two functions are called in turn, one call each per pass over the ops (which of the two
    # goes first alternates: the second finds the clip in cache), and each keeps its best time: a slow
    # phase of a shared machine costs one sample of every op, not all of one op's.
    best = {name: [float("inf"), float("inf")] for name in names}
    for r in range(repeats + 1):  # pass 0 is the warm-up
        for name in names:
            for i in ((0, 1) if r % 2 else (1, 0)):
                t = _ms(fns[name][i])
                if r > 0:
                    best[name][i] = min(best[name][i], t)
    print(f"\nisolated: one {tuple(clip.shape)} uint8 clip of the real clip, magnitude {magnitude:g}, "
          f"best of {repeats} calls, 1 thread")
    head = (f"{'op':<18}{'args':>16}{'pytorchvideo ms':>17}{'ours ms':>10}{'speed-up':>10}{'max diff':>10}"
            f"{'differ %':>10}")
    print(head)
    print("-" * len(head))
    for name in names:
        ref_fn, our_fn = fns[name]
        diff = (ref_fn().int() - our_fn().int()).abs()
        t_ref, t_our = best[name]
        shown = ", ".join(f"{a:.3g}" for a in args[name]) if args[name] else "-"
        # Invert and Posterize are pytorchvideo's own functions in both columns.
        speedup = "same fn" if UINT8_OPS[name] is _NAME_TO_TRANSFORM_FUNC[name] else f"{t_ref / t_our:.1f}x"
        print(f"{name:<18}{shown:>16}{t_ref:>17.2f}{t_our:>10.2f}{speedup:>10}{int(diff.max()):>10}"
              f"{100.0 * float((diff > 0).float().mean()):>10.3f}")
    t_ref, t_our = (sum(best[n][i] for n in names) for i in (0, 1))
    print(f"{'mean of the ops':<34}{t_ref / len(names):>17.2f}{t_our / len(names):>10.2f}{t_ref / t_our:>9.1f}x")


def in_training_item(items: int) -> None:
    retain_freed_memory()  # as in each loading process (regionvit_video/data/loader.py)
    tmp = Path(tempfile.mkdtemp(prefix="bench_rand_augment_"))
    try:
        (tmp / "train.csv").write_text(f"{REAL} 0\n")
        cfg = get_cfg()  # paper settings: 8 frames, 256-320 jitter, 224 crop, RandAugment m9 n2
        cfg.merge_from_list(["DATA.PATH_TO_DATA_DIR", str(tmp), "MODEL.NUM_CLASSES", 1])
        ds = build_dataset(cfg, "train")
        spent, calls = collections.defaultdict(float), collections.Counter()
        for op in ds.train_transform.rand_augment.sampler.transforms_list:
            def timed(*args, _fn=op.transform_fn, _name=op.transform_name, **kwargs):
                t0 = time.perf_counter()
                out = _fn(*args, **kwargs)
                spent[_name] += time.perf_counter() - t0
                calls[_name] += 1
                return out
            op.transform_fn = timed
        for epoch in range(5):  # warm-up
            ds[(0, epoch)]
        spent.clear()
        calls.clear()
        t0 = time.perf_counter()
        for epoch in range(items):
            ds[(0, 1000 + epoch)]
        per_item = (time.perf_counter() - t0) / items * 1e3
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    total = sum(spent.values()) / items * 1e3
    print(f"\nin the training item: real clip, {items} items, {per_item:.2f} ms per item, of which RandAugment "
          f"{total:.2f} ms ({sum(calls.values()) / items:.2f} ops per item), 1 thread")
    head = f"{'op':<18}{'runs':>7}{'ms per run':>12}{'ms per item':>13}{'share':>8}"
    print(head)
    print("-" * len(head))
    for name in sorted(spent, key=lambda k: -spent[k]):
        share = spent[name] / items * 1e3
        print(f"{name:<18}{calls[name]:>7}{spent[name] / calls[name] * 1e3:>12.2f}{share:>13.2f}"
              f"{100.0 * share / total:>7.0f}%")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--small", action="store_true", help="quick run: 5 repeats, 150 items")
    p.add_argument("--repeats", type=int, default=None, help="calls per op in the isolated table (best is kept)")
    p.add_argument("--items", type=int, default=None, help="training items in the second table (0: skip it)")
    p.add_argument("--magnitude", type=float, default=9.0, help="RandAugment magnitude of the isolated table")
    a = p.parse_args(argv)
    torch.set_num_threads(1)
    isolated(a.repeats or (5 if a.small else 25), a.magnitude)
    items = a.items if a.items is not None else (150 if a.small else 1500)
    if items > 0:
        in_training_item(items)
    return 0


if __name__ == "__main__":
    sys.exit(main())
