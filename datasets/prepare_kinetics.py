#!/usr/bin/env python
"""Build Kinetics-layout CSV lists from a class-per-folder video tree; check and pre-resize videos.

Input trees (``ROOT``):

- ``ROOT/<class>/<video>``: one folder per class; ``--val-fraction`` / ``--test-fraction`` split
  each class at random (``--seed``);
- ``ROOT/{train,val,test}/<class>/<video>`` (the Kinetics download layout): with
  ``--split-folders`` each top folder becomes its split.

Outputs in ``OUT_DIR``: ``train.csv``, ``val.csv`` (and ``test.csv``; a copy of val.csv when no
test split exists, as PySlowFast users do), one ``relative/path label`` a line, paths relative to
the video root (DATA.PATH_PREFIX), plus ``classes.txt`` (line i: class i) and, with ``--check``,
``bad_videos.txt`` (``path<TAB>reason``) listing videos that do not decode; those are left out
of the CSVs unless ``--keep-bad``.

``--resize-short-side 320 --resized-root DIR`` re-encodes every video with PyAV to H.264 (yuv420p,
CRF 23, audio dropped, every frame kept) with the short side scaled to 320 and even sizes, as
``.mp4`` (the usual Kinetics preparation, a large decoding speed-up); videos whose short side is
already at most the target are copied unchanged. Videos that fail to re-encode are reported and
left out. The CSVs then point into ``DIR``.

Example::

    python datasets/prepare_kinetics.py /data/k400/videos /data/k400/lists --split-folders \\
        --classes datasets/kinetics400_classes.txt --check --workers 8 \\
        --resize-short-side 320 --resized-root /data/k400/videos_320
"""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import numpy as np

from regionvit_video.data.prepare import check_job, parallel_map, resize_job

VIDEO_EXTENSIONS = (".mp4", ".mkv", ".webm", ".avi", ".mov", ".m4v", ".mpg", ".mpeg", ".flv", ".ogv", ".3gp")
SPLITS = ("train", "val", "test")


def _norm(name: str) -> str:
    return name.strip().lower().replace("_", " ").replace("(", "").replace(")", "").replace("'", "")


def list_videos(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in VIDEO_EXTENSIONS)


def find_classes(class_dirs: list[Path], classes_file: str | None) -> list[str]:
    """Class names in label order: from ``classes_file`` (matched to folder names loosely) or sorted folders."""
    names = sorted({d.name for d in class_dirs})
    if not classes_file:
        return names
    with open(classes_file, encoding="utf-8") as f:
        ordered = [line.strip() for line in f if line.strip()]
    known = {_norm(n) for n in ordered}
    unknown = [n for n in names if _norm(n) not in known]
    if unknown:
        raise SystemExit(f"error: {len(unknown)} class folders are not in {classes_file}: {unknown[:10]}")
    return ordered


def collect(root: Path, split_folders: bool, classes_file: str | None, val_fraction: float, test_fraction: float,
            seed: int) -> tuple[list[str], dict[str, list[tuple[Path, int]]]]:
    """Videos per split as (absolute path, label)."""
    if split_folders:
        parts = {s: root / s for s in SPLITS if (root / s).is_dir()}
        if "train" not in parts:
            raise SystemExit(f"error: --split-folders needs {root}/train/<class>/...")
        class_dirs = [d for folder in parts.values() for d in folder.iterdir() if d.is_dir()]
    else:
        class_dirs = [d for d in root.iterdir() if d.is_dir()]
    if not class_dirs:
        raise SystemExit(f"error: no class folders under {root}")
    classes = find_classes(class_dirs, classes_file)
    label_of = {_norm(n): i for i, n in enumerate(classes)}
    out: dict[str, list[tuple[Path, int]]] = {s: [] for s in SPLITS}
    rng = np.random.default_rng(seed)
    if split_folders:
        for split, folder in parts.items():
            for d in sorted(folder.iterdir()):
                if d.is_dir():
                    out[split] += [(p, label_of[_norm(d.name)]) for p in list_videos(d)]
    else:
        for d in sorted(class_dirs):
            videos = list_videos(d)
            order = rng.permutation(len(videos))
            n_test = int(round(len(videos) * test_fraction))
            n_val = int(round(len(videos) * val_fraction))
            label = label_of[_norm(d.name)]
            for rank, k in enumerate(order):
                split = "test" if rank < n_test else "val" if rank < n_test + n_val else "train"
                out[split].append((videos[k], label))
    return classes, out


# ---------------------------------------------------------------------------------------------- #
def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("root", help="video tree: ROOT/<class>/<video> or ROOT/{train,val,test}/<class>/<video>")
    p.add_argument("out_dir", help="where train.csv, val.csv, test.csv, classes.txt go")
    p.add_argument("--split-folders", action="store_true", help="ROOT has train/ val/ (test/) folders")
    p.add_argument("--val-fraction", type=float, default=0.1, help="per-class share for val (random split)")
    p.add_argument("--test-fraction", type=float, default=0.0, help="per-class share for test (random split)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--classes", default=None, help="class-name file fixing the label order (e.g. "
                   "datasets/kinetics400_classes.txt); default: sorted folder names")
    p.add_argument("--sep", default=" ", help="path/label separator (DATA.PATH_LABEL_SEPARATOR)")
    p.add_argument("--check", action="store_true", help="decode-check every video, write bad_videos.txt")
    p.add_argument("--keep-bad", action="store_true", help="keep videos that fail --check in the CSVs")
    p.add_argument("--workers", type=int, default=max(1, (os.cpu_count() or 2) - 1))
    p.add_argument("--resize-short-side", type=int, default=0, help="re-encode to this short side (e.g. 320)")
    p.add_argument("--resized-root", default=None, help="output tree of --resize-short-side")
    a = p.parse_args(argv)

    root, out_dir = Path(a.root).resolve(), Path(a.out_dir)
    if not root.is_dir():
        p.error(f"{root} is not a folder")
    if a.resize_short_side and not a.resized_root:
        p.error("--resize-short-side needs --resized-root")
    classes, splits = collect(root, a.split_folders, a.classes, a.val_fraction, a.test_fraction, a.seed)
    all_videos = [v for s in SPLITS for v, _ in splits[s]]
    total = len(all_videos)
    print(f"{len(classes)} classes, " + ", ".join(f"{s}: {len(splits[s])}" for s in SPLITS))

    video_root = root
    bad: dict[str, str] = {}
    if a.resize_short_side:
        video_root = Path(a.resized_root).resolve()
        jobs = [(str(v), str(video_root / v.relative_to(root)), a.resize_short_side) for v in all_videos]
        results = parallel_map(resize_job, jobs, a.workers, "resize")
        bad.update({src: why for src, _, why in results if why})
        for src, why in bad.items():
            print(f"  {src}: {why}", file=sys.stderr)
        moved = {src: Path(out) for src, out, why in results if not why}
        splits = {s: [(moved[str(v)], lab) for v, lab in items if str(v) in moved] for s, items in splits.items()}
        all_videos = [v for s in SPLITS for v, _ in splits[s]]

    out_dir.mkdir(parents=True, exist_ok=True)
    if a.check:
        bad.update({path: why for path, why in parallel_map(check_job, [str(v) for v in all_videos], a.workers, "check")
                    if why})
    if a.check or bad:
        with open(out_dir / "bad_videos.txt", "w", encoding="utf-8") as f:
            for path, why in sorted(bad.items()):
                f.write(f"{path}\t{' '.join(why.split())}\n")
        print(f"{len(bad)} of {total} videos do not decode; listed in {out_dir / 'bad_videos.txt'}")
        for path, why in sorted(bad.items())[:20]:
            print(f"  {path}: {why}")

    for split in SPLITS:
        rows = [(v, lab) for v, lab in splits[split] if a.keep_bad or str(v) not in bad]
        if split == "test" and not rows:
            rows = [(v, lab) for v, lab in splits["val"] if a.keep_bad or str(v) not in bad]
        lines = []
        for v, lab in rows:
            rel = v.relative_to(video_root).as_posix()
            if a.sep in rel:
                raise SystemExit(f"error: path {rel!r} contains the separator {a.sep!r}; pass --sep ',' (and set "
                                 f"DATA.PATH_LABEL_SEPARATOR) or rename the folders")
            lines.append(f"{rel}{a.sep}{lab}\n")
        (out_dir / f"{split}.csv").write_text("".join(lines), encoding="utf-8")
    (out_dir / "classes.txt").write_text("".join(f"{c}\n" for c in classes), encoding="utf-8")
    print(f"wrote {out_dir}/{{train,val,test}}.csv and classes.txt. Config:\n"
          f"  DATA.PATH_TO_DATA_DIR {out_dir.resolve()} DATA.PATH_PREFIX {video_root} "
          f"DATA.CLASS_NAMES {(out_dir / 'classes.txt').resolve()} MODEL.NUM_CLASSES {len(classes)}"
          + (f" DATA.PATH_LABEL_SEPARATOR '{a.sep}'" if a.sep != " " else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
