#!/usr/bin/env python
"""Data-pipeline throughput: training / test pipelines vs decode-only vs decode-everything.

Writes 10 s H.264 clips (340x256 and 1280x720, 30 fps) to a temp dir with ``write_video`` and
uses the real clip tests/data/realshort.mp4, then prints one table (clips/s, median over
at least ``--repeats`` rounds and ``--row-seconds``, each round averaging several clips: see ``rates``)
with, per clip:

- ``decode``: decord ``get_batch`` of the training indices only (open, decode, close): the frames the
  training item of the same epoch samples, so both paths decode the same frames;
- ``train``: the training item a loading process makes (decode + scale jitter, crop, flip,
  RandAugment: with DATA_LOADER.NORMALIZE_ON_DEVICE, the default, normalisation and random
  erasing are left to the batch on the training device);
- ``train+batch``: that plus the batch step (normalisation, random erasing) run on the CPU, what
  a CPU-only training pays per clip;
- ``test``: the full test item (all NUM_ENSEMBLE_VIEWS x NUM_SPATIAL_CROPS views);
- ``decode_all``: pytorchvideo's ``EncodedVideo`` (PyAV) path: decode every frame in order, then
  ``UniformTemporalSubsample``;

(timed in turn, round after round, so load changes on a shared machine hit all alike; each clip in
a fresh process) and the ratios the pipeline targets: train >= 0.8x decode, train >= 5x decode_all on
10 s clips. Ratios are paired: the median over rounds of the ratio within each round.
A second table gives DataLoader throughput of the training pipeline with 1 and 2 workers.

    OMP_NUM_THREADS=1 python benchmarks/bench_loader.py              # full run
    OMP_NUM_THREADS=1 python benchmarks/bench_loader.py --small      # quick run (shorter, fewer repeats)

Like the loader's worker processes (DATA_LOADER.RETAIN_FREED_MEMORY, on by default), the
in-process rows keep freed memory for reuse; ``--no-retain-memory`` measures glibc's defaults.
"""
from __future__ import annotations

import argparse
import concurrent.futures
import multiprocessing
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

import regionvit_video  # noqa: F401  (pytorchvideo import shim)
from regionvit_video.config.defaults import get_cfg
from regionvit_video.data import build_batch_transform, build_dataset, build_loader
from regionvit_video.data.datasets import _SeededRNG  # the training item's per-sample seeding
from regionvit_video.data.decoder import read_frames
from regionvit_video.data.sampling import uniform_indices
from regionvit_video.data.video_writer import write_video
from regionvit_video.utils.malloc import retain_freed_memory

REPO = Path(__file__).resolve().parents[1]
REAL = REPO / "tests" / "data" / "realshort.mp4"


def make_clip(path: Path, seconds: float, width: int, height: int, fps: int = 30) -> None:
    """A moving textured clip (compresses like real footage better than noise)."""
    n = int(seconds * fps)
    rng = np.random.default_rng(0)
    base = rng.integers(0, 255, (height // 8 + 1, width // 8 + 1, 3), dtype=np.uint8)
    base = np.kron(base, np.ones((8, 8, 1), np.uint8))[:height, :width]
    frames = np.stack([np.roll(base, (2 * i, 3 * i), axis=(0, 1)) for i in range(n)])
    write_video(path, frames, fps=fps, options={"crf": "23", "preset": "veryfast"})


def rates(fns: dict, repeats: int, min_seconds: float = 0.0, round_seconds: float = 0.3,
          max_rounds: int = 200, same_calls: Sequence[str] = ()) -> dict[str, list[float]]:
    """Seconds per call of each function, one entry per round, over at least ``repeats`` rounds.

    After one warm-up call of each function (which also sets ``k``), every round runs each
    function ``k`` times in a row, ``k`` chosen so that a run takes about ``round_seconds`` (the
    random augmentations of the training clip are averaged within a round, not left to the median
    of single clips). The functions take turns, in an order that turns by one each round, so a
    change in machine load (the machine may be shared) hits all of them alike. Rounds go on until
    there are ``repeats`` of them and ``min_seconds`` have passed (cheap clips get more rounds), at
    most ``max_rounds``. The functions
    named in ``same_calls`` all get the smallest ``k`` among them, so they make the same number of
    calls (and, counting epochs from the same start, sample the same clips).
    """
    reps, times = {}, {k: [] for k in fns}
    for k, fn in fns.items():  # warm-up, and how many calls make a round
        t0 = time.perf_counter()
        fn()
        reps[k] = max(1, min(50, round(round_seconds / max(time.perf_counter() - t0, 1e-6))))
    for k in same_calls:
        reps[k] = min(reps[j] for j in same_calls)
    start = time.perf_counter()
    rounds = 0
    names = list(fns)
    while rounds < max_rounds and (rounds < repeats or time.perf_counter() - start < min_seconds):
        # The order turns by one each round: what a function leaves behind (decode_all frees
        # gigabytes on the 1280x720 clip) does not always fall on the same next function.
        for k in names[rounds % len(names):] + names[:rounds % len(names)]:
            fn = fns[k]
            t0 = time.perf_counter()
            for _ in range(reps[k]):
                fn()
            times[k].append((time.perf_counter() - t0) / reps[k])
        rounds += 1
    return times


def rate(times: list[float]) -> float:
    """Calls per second: 1 / the median time per call over the rounds."""
    return 1.0 / statistics.median(times)


def paired_ratio(times: dict[str, list[float]], fast: str, slow: str) -> float:
    """``rate(fast) / rate(slow)`` as the median over rounds of the ratio within each round (paired: a
    slow phase of a shared machine that falls on some rounds moves both sides of their ratios)."""
    return statistics.median(s / f for f, s in zip(times[fast], times[slow]))


def measure_row(path: str, repeats: int, min_seconds: float, retain_memory: bool) -> dict[str, list[float]]:
    """The per-round times of one clip's row, as ``rates`` gives them (run in a fresh process by ``main``)."""
    from pytorchvideo.data.encoded_video import EncodedVideo
    from pytorchvideo.transforms import UniformTemporalSubsample

    torch.set_num_threads(1)
    cfg = get_cfg()  # paper settings: 8 frames uniform, 256-320 jitter, 224 crops, 1 x 3 test views
    cfg.merge_from_list(["MODEL.NUM_CLASSES", 1, "DATA_LOADER.RETAIN_FREED_MEMORY", retain_memory])
    if cfg.DATA_LOADER.RETAIN_FREED_MEMORY:
        retain_freed_memory()  # as in each loading process (regionvit_video/data/loader.py)
    row_dir = Path(tempfile.mkdtemp(prefix="bench_loader_row_"))
    for split in ("train", "val", "test"):
        (row_dir / f"{split}.csv").write_text(f"{path} 0\n")
    cfg.DATA.PATH_TO_DATA_DIR = str(row_dir)
    train_ds, test_ds = build_dataset(cfg, "train"), build_dataset(cfg, "test")
    batch_transform = build_batch_transform(cfg)  # DATA_LOADER.NORMALIZE_ON_DEVICE: the device's part
    # One epoch counter per path, and the same number of calls per round for the three (see rates):
    # in every round they go through the same epochs, so they decode the same frames.
    decode_epoch, train_epoch, train_cpu_epoch = (iter(range(10**6)) for _ in range(3))

    def decode_only():  # the frames the training item of the same epoch decodes (its seeded index draw)
        rng = np.random.default_rng(_SeededRNG(train_ds.seed, next(decode_epoch), 0, 0, 1).seed)
        read_frames(path, lambda n, fps: uniform_indices(n, cfg.DATA.NUM_FRAMES, train=True, rng=rng), "decord",
                    num_threads=cfg.DATA.DECODE_THREADS)

    def train_item():
        train_ds[(0, next(train_epoch))]

    def train_item_and_batch_step():  # + normalisation and random erasing, here on the CPU
        video = train_ds[(0, next(train_cpu_epoch))]["video"][None]
        if batch_transform is not None:
            batch_transform(video)

    def test_item():
        assert test_ds[0]["video"] is not None

    def decode_all():
        video = EncodedVideo.from_path(path, decoder="pyav", decode_audio=False)
        clip = video.get_clip(0, video.duration)["video"]  # C, T, H, W: every frame
        UniformTemporalSubsample(cfg.DATA.NUM_FRAMES)(clip)
        video.close()

    try:
        return rates({"decode": decode_only, "train": train_item, "train_cpu": train_item_and_batch_step,
                      "test": test_item, "decode_all": decode_all}, repeats, min_seconds,
                     same_calls=("decode", "train", "train_cpu"))
    finally:
        shutil.rmtree(row_dir, ignore_errors=True)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--small", action="store_true", help="quick run: 4 s clips, 3 repeats, small loader test")
    p.add_argument("--repeats", type=int, default=None, help="rounds per clip, at least")
    p.add_argument("--row-seconds", type=float, default=None,
                   help="each clip's rounds go on until this much time has passed (cheap clips get more rounds)")
    p.add_argument("--seconds", type=float, default=None, help="length of the generated clips")
    p.add_argument("--loader-videos", type=int, default=None, help="videos in the DataLoader test")
    p.add_argument("--no-retain-memory", action="store_true",
                   help="DATA_LOADER.RETAIN_FREED_MEMORY False, here and in the DataLoader workers")
    a = p.parse_args(argv)
    repeats = a.repeats or (3 if a.small else 10)
    row_seconds = a.row_seconds if a.row_seconds is not None else (0.0 if a.small else 40.0)
    seconds = a.seconds or (4.0 if a.small else 10.0)
    loader_videos = a.loader_videos or (16 if a.small else 48)
    torch.set_num_threads(1)

    cfg = get_cfg()  # paper settings: 8 frames uniform, 256-320 jitter, 224 crops, 1 x 3 test views
    cfg.DATA_LOADER.RETAIN_FREED_MEMORY = not a.no_retain_memory
    if cfg.DATA_LOADER.RETAIN_FREED_MEMORY:
        retain_freed_memory()  # as in each loading process (regionvit_video/data/loader.py)
    tmp = Path(tempfile.mkdtemp(prefix="bench_loader_"))
    # Smallest first: the 1280x720 row's decode-everything path allocates gigabytes, and right after
    # it the next process measured the real clip's decode 10% faster but its training item not
    # (0.74x instead of 0.83x), whatever the kernel was doing with that memory.
    clips = {"realshort 320x240 1.2s": REAL}
    t0 = time.perf_counter()
    for name, (w, h) in {"340x256": (340, 256), "1280x720": (1280, 720)}.items():
        clips[f"{name} {seconds:g}s"] = tmp / f"{name}.mp4"
        make_clip(clips[f"{name} {seconds:g}s"], seconds, w, h)
    print(f"wrote clips in {time.perf_counter() - t0:.1f} s to {tmp}", file=sys.stderr)

    csv = tmp / "train.csv"
    cfg.merge_from_list(["DATA.PATH_TO_DATA_DIR", str(tmp), "MODEL.NUM_CLASSES", 1, "DATA_LOADER.PIN_MEMORY", False])
    # Each row in a fresh process: what one clip leaves behind (the 1280x720 decode-everything path
    # holds gigabytes of float frames) must not slow the next row's allocations.
    rows = []
    spawn = multiprocessing.get_context("spawn")
    for name, path in clips.items():
        with concurrent.futures.ProcessPoolExecutor(1, mp_context=spawn) as pool:
            rows.append((name, pool.submit(measure_row, str(path), repeats, row_seconds,
                                           not a.no_retain_memory).result()))

    views = cfg.TEST.NUM_ENSEMBLE_VIEWS * cfg.TEST.NUM_SPATIAL_CROPS
    print(f"\nclips/s, 1 process, 1 thread, {cfg.DATA.NUM_FRAMES} frames, uniform sampling, train 224 crops, "
          f"test {views} views, RETAIN_FREED_MEMORY {cfg.DATA_LOADER.RETAIN_FREED_MEMORY}")
    print("train: what a loading process does per training clip (decode, scale jitter, crop, flip, RandAugment);"
          "\ntrain+batch: that plus the batch step (normalisation, random erasing) run here on the CPU, which "
          "\nDATA_LOADER.NORMALIZE_ON_DEVICE leaves to the training device;"
          "\nrates: median over the rounds; ratios: median over the rounds of the ratio within a round")
    head = (f"{'clip':<24}{'decode':>9}{'train':>9}{'train+batch':>13}{'test':>9}{'decode_all':>12}"
            f"{'train/decode':>14}{'train+batch/dec':>17}{'train/dec_all':>15}{'rounds':>8}")
    print(head)
    print("-" * len(head))
    for name, t in rows:
        r = {k: rate(v) for k, v in t.items()}
        print(f"{name:<24}{r['decode']:>9.2f}{r['train']:>9.2f}{r['train_cpu']:>13.2f}{r['test']:>9.2f}"
              f"{r['decode_all']:>12.2f}{paired_ratio(t, 'train', 'decode'):>13.2f}x"
              f"{paired_ratio(t, 'train_cpu', 'decode'):>16.2f}x{paired_ratio(t, 'train', 'decode_all'):>14.2f}x"
              f"{len(t['decode']):>8}")

    # DataLoader scaling: the training pipeline on copies of the 340x256 clip.
    small = clips[f"340x256 {seconds:g}s"]
    csv.write_text("".join(f"{small} 0\n" for _ in range(loader_videos)))
    cfg.TRAIN.BATCH_SIZE = 4
    print(f"\nDataLoader, training pipeline, {loader_videos} x 340x256 clips, batch {cfg.TRAIN.BATCH_SIZE}")
    print(f"{'workers':<10}{'clips/s':>10}{'scaling':>10}")
    base = None
    for workers in (1, 2):
        cfg.DATA_LOADER.NUM_WORKERS = workers
        loader = build_loader(cfg, "train")
        loader.sampler.set_epoch(0)
        it = iter(loader)
        next(it)  # worker start-up and the first batch are not counted
        t0 = time.perf_counter()
        n = sum(len(b["path"]) for b in it)
        cps = n / (time.perf_counter() - t0)
        base = base or cps
        print(f"{workers:<10}{cps:>10.2f}{cps / base:>9.2f}x")
        del loader, it
    print(f"\n(machine: {os.cpu_count()} CPUs; loader rates exclude worker start-up and the first batch)")
    shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
