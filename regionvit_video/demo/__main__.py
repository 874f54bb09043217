"""``make demo``: generate the synthetic action dataset, train, test, extract features, predict.

    python -m regionvit_video.demo                      # what `make demo` runs
    python -m regionvit_video.demo --data demo_data --output demo_output SOLVER.MAX_EPOCH 5

Steps, each through the toolkit's own entry points (the same functions ``run_net.py`` calls):

1. ``demo_data/``: the direction-paired synthetic dataset (:mod:`regionvit_video.demo.synthetic_actions`),
   generated once (a complete folder is reused).
2. Train ``configs/demo.yaml`` (a tiny ``regionvit_video_pico`` from scratch; resumes if interrupted,
   does nothing more once complete).
3. The multi-view test (3 crops) on the test split.
4. Features of one test video per class (``FEATURES.MODE video``).
5. Prediction of one test video (``PREDICT``).
6. A summary: test top-1 against the 80% target (chance: 12.5%), and where every output is.

Trailing ``KEY VALUE`` pairs override the config, as with ``run_net.py``.
"""
from __future__ import annotations

import argparse
import csv
import json
import logging
import os
import sys
import time
from pathlib import Path

import torch

import regionvit_video  # noqa: F401  (pytorchvideo shim)
from regionvit_video.demo.synthetic_actions import CLASS_NAMES, make_synthetic_actions

logger = logging.getLogger("regionvit_video.demo")

REPO = Path(__file__).resolve().parents[2]
# The dataset the demo config is tuned for: 64x64 videos of 16 frames at 15 fps (the model sees 56x56 crops).
DEMO_DATA = dict(num_train=480, num_val=96, num_test=96, size=64, num_frames=16, fps=15.0, seed=0)
TARGET_TOP1 = 80.0


def _parse(argv):
    p = argparse.ArgumentParser(prog="python -m regionvit_video.demo", description=__doc__.split("\n")[0])
    p.add_argument("--cfg", default=str(REPO / "configs" / "demo.yaml"), help="config (default: configs/demo.yaml)")
    p.add_argument("--data", default="demo_data", help="dataset folder (generated if missing)")
    p.add_argument("--output", default="demo_output", help="OUTPUT_DIR")
    p.add_argument("--threads", type=int, default=min(2, len(os.sched_getaffinity(0))),
                   help="torch CPU threads (default: up to 2)")
    p.add_argument("opts", nargs=argparse.REMAINDER, help="KEY VALUE pairs overriding the config")
    return p.parse_args(argv)


def _feature_list(data: Path, out: Path) -> Path:
    """A list of the first test video of every class, for the feature-extraction step."""
    chosen: dict[int, str] = {}
    for line in (data / "test.csv").read_text().splitlines():
        rel, label = line.rsplit(" ", 1)
        chosen.setdefault(int(label), rel)
    path = out / "feature_videos.csv"
    path.write_text("".join(f"{rel} {label}\n" for label, rel in sorted(chosen.items())))
    return path


def main(argv=None) -> int:
    args = _parse(argv)
    from regionvit_video.config.load import ConfigError, load_config
    from regionvit_video.engine import cleanup_distributed, init_distributed, multiview_test, setup_run, train
    from regionvit_video.engine.features import extract_features
    from regionvit_video.engine.predict import PREDICTION_FILE, predict

    t0 = time.perf_counter()
    torch.set_num_threads(max(1, args.threads))
    data, out = Path(args.data), Path(args.output)
    paths = ["DATA.PATH_TO_DATA_DIR", str(data), "DATA.PATH_PREFIX", str(data),
             "DATA.CLASS_NAMES", str(data / "classes.txt"), "OUTPUT_DIR", str(out)]
    # Check the config (and the overrides) before spending a minute on the data.
    try:
        load_config(args.cfg, paths + list(args.opts), check_paths=False)
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2

    print(f"[1/5] dataset: {data}/ (8 classes in 4 time-reversed pairs: {', '.join(CLASS_NAMES)})", flush=True)
    info = make_synthetic_actions(data, **DEMO_DATA)
    print(f"      {'generated' if info['generated'] else 'complete, reused'}: {info['num_train']} train, "
          f"{info['num_val']} val, {info['num_test']} test videos ({info['seconds']:.0f} s)", flush=True)

    cfg = load_config(args.cfg, paths + list(args.opts))
    out.mkdir(parents=True, exist_ok=True)
    dist_info = init_distributed(cfg.DEVICE, cfg.DIST_BACKEND)
    setup_run(cfg, dist_info)
    try:
        t = time.perf_counter()
        print(f"[2/5] training {cfg.MODEL.ARCH} for {cfg.SOLVER.MAX_EPOCH} epochs -> {out}/checkpoints", flush=True)
        result = train(cfg, dist_info)
        ckpt = result.last_checkpoint
        train_s = time.perf_counter() - t

        print(f"[3/5] {cfg.TEST.NUM_ENSEMBLE_VIEWS * cfg.TEST.NUM_SPATIAL_CROPS}-view test on {data}/test.csv",
              flush=True)
        results = multiview_test(cfg, dist_info, checkpoint=ckpt)

        print("[4/5] features of one test video per class", flush=True)
        feat_cfg = load_config(args.cfg, paths + list(args.opts) + [
            "FEATURES.ENABLE", "True", "FEATURES.INPUT", str(_feature_list(data, out)),
            "TEST.CHECKPOINT_FILE_PATH", str(ckpt)])
        feats = extract_features(feat_cfg, dist_info)

        video = data / (data / "test.csv").read_text().split()[0]
        print(f"[5/5] prediction for {video}", flush=True)
        predict_cfg = load_config(args.cfg, paths + list(args.opts) + [
            "PREDICT.ENABLE", "True", "PREDICT.INPUT", str(video), "TEST.CHECKPOINT_FILE_PATH", str(ckpt)])
        pred = predict(predict_cfg, dist_info)
    finally:
        cleanup_distributed()

    top1 = results["top1"]
    ok = top1 >= TARGET_TOP1
    index_rows = list(csv.DictReader(open(feats["index_csv"], newline="")))
    lines = [
        "",
        "=" * 78,
        f"regionvit-video demo: {cfg.MODEL.ARCH}, {results['num_videos']} test videos, "
        f"{results['views']['per_video']} views each",
        f"  test top-1 {top1:.1f}%  (target {TARGET_TOP1:.0f}%, chance {100 / len(CLASS_NAMES):.1f}%): "
        f"{'OK' if ok else 'BELOW TARGET'}; top-5 {results['top5']:.1f}%",
        f"  training: {result.epochs_run} epochs run now, {train_s / 60:.1f} min",
        f"  checkpoint:   {ckpt}",
        f"  plots:        {out / 'training_curves.png'}, {out / 'test_confusion_matrix.png'}",
        f"  results:      {out / 'test_results.json'}, {out / 'test_predictions.csv'}",
        f"  features:     {feats['features_dir']} ({len(index_rows)} videos, "
        f"shape {index_rows[0]['shape'] if index_rows else '-'}; index.csv)",
        f"  prediction:   {video.name}: {pred['top_k'][0]['class']} ({100 * pred['top_k'][0]['probability']:.1f}%)"
        f" -> {out / PREDICTION_FILE}",
        f"  total time:   {(time.perf_counter() - t0) / 60:.1f} min",
        "  next: python run_net.py --cfg configs/demo.yaml PREDICT.ENABLE True "
        f"PREDICT.INPUT <video> TEST.CHECKPOINT_FILE_PATH {ckpt}",
        "=" * 78,
    ]
    print("\n".join(lines), flush=True)
    summary = {"test_top1": top1, "test_top5": results["top5"], "target_top1": TARGET_TOP1, "checkpoint": str(ckpt),
               "features_dir": feats["features_dir"], "prediction": pred["top_k"][0],
               "seconds": time.perf_counter() - t0}
    (out / "demo_summary.json").write_text(json.dumps(summary, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO)
    sys.exit(main())
