#!/usr/bin/env python
"""Feature extraction throughput next to the multi-view test's, on the same videos and model.

    OMP_NUM_THREADS=2 python benchmarks/bench_features.py                    # pico, 48 demo videos, CPU
    python benchmarks/bench_features.py --arch regionvit_video_small --size 256 --crop 224 --frames 8 --videos 16

Both runs read the same list with the same views (TEST.NUM_ENSEMBLE_VIEWS x TEST.NUM_SPATIAL_CROPS),
the same DataLoader workers and batch size, so the rates should match; the extraction adds writing
one .npy per video. ``clips`` mode (sliding windows, 3 crops each) is listed in clips/s as well.
"""
from __future__ import annotations

import argparse
import os
import shutil
import sys
import time
from pathlib import Path

import torch

import regionvit_video  # noqa: F401
from regionvit_video.demo.synthetic_actions import make_synthetic_actions


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--arch", default="regionvit_video_pico")
    p.add_argument("--videos", type=int, default=48)
    p.add_argument("--size", type=int, default=64, help="generated video side = DATA.TEST_SCALE")
    p.add_argument("--crop", type=int, default=56, help="DATA.TEST_CROP_SIZE")
    p.add_argument("--frames", type=int, default=8, help="DATA.NUM_FRAMES")
    p.add_argument("--video-frames", type=int, default=48, help="frames per generated video")
    p.add_argument("--crops", type=int, default=3)
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--threads", type=int, default=min(2, len(os.sched_getaffinity(0))))
    p.add_argument("--output", default="bench_output/features")
    args = p.parse_args(argv)

    from regionvit_video.config.load import load_config
    from regionvit_video.engine import multiview_test
    from regionvit_video.engine.build import build_model
    from regionvit_video.engine.features import extract_features

    torch.set_num_threads(args.threads)
    out = Path(args.output)
    data = make_synthetic_actions(out / "data", num_train=0, num_val=0, num_test=args.videos, size=args.size,
                                  num_frames=args.video_frames, progress=False)
    base = ["MODEL.ARCH", args.arch, "MODEL.NUM_CLASSES", "8", "DATA.NUM_FRAMES", str(args.frames),
            "DATA.TEST_SCALE", str(args.size), "DATA.TEST_CROP_SIZE", str(args.crop),
            "TEST.NUM_SPATIAL_CROPS", str(args.crops), "TEST.BATCH_SIZE", str(args.batch),
            "FEATURES.BATCH_SIZE", str(args.batch), "DATA_LOADER.NUM_WORKERS", str(args.workers),
            "DATA.PATH_TO_DATA_DIR", data["root"], "DATA.PATH_PREFIX", data["root"], "TRAIN.ENABLE", "False"]
    cfg = load_config(None, base + ["OUTPUT_DIR", str(out / "test")], validate=False)
    ckpt = out / "random_init.pyth"
    torch.save({"model_state": build_model(cfg).state_dict()}, ckpt)
    base += ["TEST.CHECKPOINT_FILE_PATH", str(ckpt)]

    rows = []
    t = time.perf_counter()
    multiview_test(load_config(None, base + ["OUTPUT_DIR", str(out / "test")]))
    rows.append(("test (engine.tester)", args.videos, time.perf_counter() - t, ""))
    for mode in ("video", "clips"):
        shutil.rmtree(out / mode, ignore_errors=True)
        fcfg = load_config(None, base + ["OUTPUT_DIR", str(out / mode), "FEATURES.ENABLE", "True",
                                         "FEATURES.INPUT", data["test_csv"], "FEATURES.MODE", mode,
                                         "FEATURES.WINDOW", str(args.video_frames // 3),
                                         "FEATURES.STRIDE", str(args.video_frames // 6)])
        res = extract_features(fcfg)
        extra = ""
        if mode == "clips":
            windows = 1 + (args.video_frames - args.video_frames // 3) // (args.video_frames // 6)
            extra = f"{windows * res['num_extracted'] / res['seconds']:.1f} windows/s"
        rows.append((f"features {mode}", res["num_extracted"], res["seconds"], extra))

    views = args.crops
    print(f"\n{args.arch}, {args.frames}x{args.crop}x{args.crop} clips, {views} views per video/window, batch "
          f"{args.batch}, {args.workers} workers, {args.threads} threads, {torch.device('cuda' if torch.cuda.is_available() else 'cpu')}")
    print("| pipeline             | videos | seconds | videos/s | other |")
    print("|----------------------|--------|---------|----------|-------|")
    for name, n, s, extra in rows:
        print(f"| {name:<20} | {n:6d} | {s:7.1f} | {n / s:8.2f} | {extra} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
