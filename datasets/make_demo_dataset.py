#!/usr/bin/env python
"""Generate the synthetic direction-paired action dataset used by ``make demo``.

Example::

    python datasets/make_demo_dataset.py demo_data --num-train 480 --num-val 96 --num-test 96

Writes ``train.csv``/``val.csv``/``test.csv`` (Kinetics layout, paths relative to the folder) and
``classes.txt``; train on it with ``DATA.PATH_TO_DATA_DIR <root> DATA.PATH_PREFIX <root>``. Running it
again with the same arguments does nothing. See :mod:`regionvit_video.demo.synthetic_actions`.
"""
import argparse
import json
import sys

import regionvit_video  # noqa: F401
from regionvit_video.demo.synthetic_actions import make_synthetic_actions


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("root", help="output folder")
    p.add_argument("--num-train", type=int, default=480)
    p.add_argument("--num-val", type=int, default=96)
    p.add_argument("--num-test", type=int, default=96)
    p.add_argument("--size", type=int, default=64, help="frame side in pixels")
    p.add_argument("--num-frames", type=int, default=16)
    p.add_argument("--fps", type=float, default=15.0)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--workers", type=int, default=None, help="encoding processes (default: up to 2)")
    args = p.parse_args(argv)
    info = make_synthetic_actions(
        args.root, num_train=args.num_train, num_val=args.num_val, num_test=args.num_test, size=args.size,
        num_frames=args.num_frames, fps=args.fps, seed=args.seed, workers=args.workers,
    )
    print(json.dumps(info, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
