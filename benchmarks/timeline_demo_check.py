#!/usr/bin/env python
"""The timeline on `make demo`'s checkpoint: does a long video of known actions get the right classes at the
right times?

    make demo                                                        # demo_data/ and demo_output/
    .venv/bin/python benchmarks/timeline_demo_check.py --data demo_data --demo-output demo_output

Joins test clips of the demo dataset into one video, ``--clips-per-class`` consecutive clips of each class (the
classes in a fixed shuffled order), so that the ground truth is a run of one class after another with known
start and end times; runs the timeline job (``regionvit_video.engine.timeline.timeline``, as ``run_net.py
TIMELINE.ENABLE True`` does) on it with the newest checkpoint of ``--demo-output`` and prints:

- every window: its time, the class at its centre, the predicted class and probability, right or wrong;
- window accuracy (the top-1 against the class at the window's centre) over all windows and for each kind of
  window: inside one clip, across a cut between two clips of the same class, across a change of class; the
  share of the covered time whose segment carries the right class;
- for every change of class, the distance from the true boundary to the nearest predicted one (a change of the
  segments' label), and how many fall within the tolerance (half a window plus half a stride by default: a
  window centred on the boundary sees both classes equally).

Every demo clip is one complete event (the shape moves, turns or grows once, from start to end), and the clips
are joined with hard cuts: a window across a cut sees the shape jump, a motion the model never saw in training,
even when both clips are of one class. So "the right class for most of the video" is judged on the windows inside
one clip (as a test clip is seen), and the other kinds are printed beside it. The window defaults to one demo
clip (16 frames at 15 fps) and the stride to a quarter of it. The joined video
is re-encoded (x264), so its pixels differ from the clips' by the encoder's rounding. Results go to
``--output`` (default ``<demo-output>/timeline_check``): the timeline's files, ``joined.mp4``,
``ground_truth.csv`` and ``check.json``. Trailing ``KEY VALUE`` pairs override the config. Exit status 0 when
both targets are met (at least ``--min-accuracy`` of the windows right, at least ``--min-aligned`` of the
boundaries within the tolerance), 1 otherwise.
"""
from __future__ import annotations

import argparse
import csv
import json
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

import regionvit_video  # noqa: E402,F401  (pytorchvideo shim)


def _parse(argv):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--data", default="demo_data", help="the demo dataset (test.csv, classes.txt)")
    p.add_argument("--demo-output", default="demo_output", help="make demo's OUTPUT_DIR (its newest checkpoint)")
    p.add_argument("--checkpoint", default="", help="a checkpoint instead of the newest in --demo-output")
    p.add_argument("--cfg", default=str(REPO / "configs" / "demo.yaml"))
    p.add_argument("--output", default="", help="default: <demo-output>/timeline_check")
    p.add_argument("--clips-per-class", type=int, default=3)
    p.add_argument("--seed", type=int, default=0, help="order of the classes")
    p.add_argument("--window", type=float, default=0.0, help="TIMELINE.WINDOW_SECONDS (default: one clip)")
    p.add_argument("--stride", type=float, default=0.0, help="TIMELINE.STRIDE_SECONDS (default: window / 4)")
    p.add_argument("--tolerance", type=float, default=0.0,
                   help="boundary tolerance in seconds (default: window / 2 + stride / 2)")
    p.add_argument("--min-accuracy", type=float, default=0.5, help="share of windows right for 'most of the video'")
    p.add_argument("--min-aligned", type=float, default=0.5, help="share of boundaries within the tolerance")
    p.add_argument("--quiet", action="store_true", help="no per-window table")
    p.add_argument("opts", nargs=argparse.REMAINDER, help="KEY VALUE pairs overriding the config")
    return p.parse_args(argv)


def join_clips(data: Path, out: Path, clips_per_class: int, seed: int) -> dict:
    """``out/joined.mp4`` from ``clips_per_class`` test clips of each class in a seeded order; the ground-truth
    runs (``label, name, start_s, end_s``) in ``out/ground_truth.csv``."""
    from regionvit_video.data import read_frames
    from regionvit_video.data.datasets import load_class_names, read_kinetics_csv
    from regionvit_video.data.video_writer import write_video

    names = load_class_names(data / "classes.txt")
    records = read_kinetics_csv(data / "test.csv", num_classes=len(names), path_prefix=str(data))
    by_class: dict[int, list[str]] = {}
    for r in records:
        by_class.setdefault(r.label, []).append(r.path)
    order = [int(c) for c in np.random.default_rng(seed).permutation(sorted(by_class))]
    frames, runs, cuts, fps, t = [], [], [], None, 0
    for label in order:
        clips = by_class[label][:clips_per_class]
        start = t
        for path in clips:
            clip, _, reader = read_frames(path, lambda n, f: np.arange(n))
            if fps is None:
                fps, clip_frames = float(reader.fps), len(clip)
            elif abs(reader.fps - fps) > 1e-6:
                raise ValueError(f"{path}: {reader.fps} fps, the other clips have {fps}")
            frames.append(clip)
            if t:
                cuts.append(t)
            t += len(clip)
        runs.append({"label": label, "name": names[label], "start_frame": start, "end_frame": t,
                     "start_s": start / fps, "end_s": t / fps, "clips": len(clips)})
    out.mkdir(parents=True, exist_ok=True)
    video = out / "joined.mp4"
    write_video(video, np.concatenate(frames), fps=fps)
    with open(out / "ground_truth.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(runs[0]), lineterminator="\n")
        w.writeheader()
        w.writerows(runs)
    return {"video": video, "runs": runs, "cuts": cuts, "fps": fps, "clip_frames": clip_frames, "names": names,
            "seconds": t / fps}


def _truth_at(runs: list[dict], t: float) -> dict | None:
    for r in runs:
        if r["start_s"] <= t < r["end_s"]:
            return r
    return None


WINDOW_KINDS = ("clip", "cut", "change")  # inside one clip; across a cut inside one class; across a change of class


def evaluate(rows: list[dict], segments: list[dict], runs: list[dict], tolerance: float,
             cuts: list[float] = ()) -> dict:
    """Window accuracy (overall and per kind of window), time accuracy of the segments, boundary errors (see the
    module docstring). ``cuts``: the frames where one clip ends and the next begins (in frames, as the windows'
    ``start_frame``/``end_frame``, since the seconds in the CSV are rounded)."""
    windows = []
    for r in rows:
        s, e = float(r["start_s"]), float(r["end_s"])
        a, b = int(r["start_frame"]), int(r["end_frame"])
        truth = _truth_at(runs, (s + e) / 2)
        inside = [x for x in runs if x["start_frame"] <= a and b <= x["end_frame"]]
        kind = "change" if not inside else "cut" if any(a < c < b for c in cuts) else "clip"
        windows.append({"window": int(r["window"]), "start_s": s, "end_s": e, "truth": truth["name"] if truth else "",
                        "predicted": r["label"], "score": float(r["score"]), "pure": bool(inside), "kind": kind,
                        "correct": truth is not None and r["label"] == truth["name"]})
    pure = [w for w in windows if w["pure"]]
    by_kind = {k: [w["correct"] for w in windows if w["kind"] == k] for k in WINDOW_KINDS}
    # Time accuracy: the covered time on a 10 ms grid, segment label against the truth.
    covered = 0.0
    right = 0.0
    for seg in segments:
        a, b = float(seg["start_s"]), float(seg["end_s"])
        grid = np.arange(a, b, 0.01) + 0.005
        for t in grid:
            truth = _truth_at(runs, t)
            covered += 0.01
            right += 0.01 * (truth is not None and truth["name"] == seg["label"])
    true_b = [r["start_s"] for r in runs[1:]]
    pred_b = [float(segments[i]["start_s"]) for i in range(1, len(segments))
              if segments[i]["label"] != segments[i - 1]["label"]]
    last_end = windows[-1]["end_s"] if windows else 0.0
    boundaries = []
    for b in true_b:
        if b > last_end:
            continue  # after the last window: nothing predicts it
        near = min(pred_b, key=lambda p: abs(p - b)) if pred_b else None
        err = abs(near - b) if near is not None else None  # None: no predicted change of class at all
        boundaries.append({"true_s": b, "nearest_predicted_s": near, "error_s": err,
                           "aligned": err is not None and err <= tolerance})
    errors = [x["error_s"] for x in boundaries if x["error_s"] is not None]
    return {
        "windows": windows,
        "window_accuracy": float(np.mean([w["correct"] for w in windows])) if windows else 0.0,
        "pure_window_accuracy": float(np.mean([w["correct"] for w in pure])) if pure else 0.0,
        "num_windows": len(windows), "num_pure_windows": len(pure),
        "accuracy_by_kind": {k: float(np.mean(v)) if v else None for k, v in by_kind.items()},
        "windows_by_kind": {k: len(v) for k, v in by_kind.items()},
        "time_accuracy": right / covered if covered else 0.0,
        "boundaries": boundaries,
        "boundaries_aligned": float(np.mean([x["aligned"] for x in boundaries])) if boundaries else 0.0,
        "boundary_mean_error_s": float(np.mean(errors)) if errors else None,
        "boundary_max_error_s": float(np.max(errors)) if errors else None,
        "predicted_boundaries": len(pred_b), "true_boundaries": len(boundaries), "tolerance_s": tolerance,
    }


_KIND_NOTE = {"clip": "", "cut": "  (across a cut)", "change": "  (spans a change)"}


def main(argv=None) -> dict:
    args = _parse(argv)
    from regionvit_video.config.load import load_config
    from regionvit_video.engine import cleanup_distributed, init_distributed, setup_run
    from regionvit_video.engine.timeline import SEGMENTS_CSV, TIMELINE_CSV, timeline
    from regionvit_video.utils.checkpoint_files import latest_checkpoint

    data, demo_out = Path(args.data), Path(args.demo_output)
    out = Path(args.output) if args.output else demo_out / "timeline_check"
    ckpt = Path(args.checkpoint) if args.checkpoint else latest_checkpoint(demo_out)
    if ckpt is None or not Path(ckpt).is_file():
        raise SystemExit(f"no checkpoint: {demo_out}/checkpoints is empty (run `make demo`) and --checkpoint is not set")
    joined = join_clips(data, out, args.clips_per_class, args.seed)
    window = args.window or joined["clip_frames"] / joined["fps"]
    stride = args.stride or window / 4
    tolerance = args.tolerance or window / 2 + stride / 2
    print(f"joined {sum(r['clips'] for r in joined['runs'])} test clips of {data} into {joined['video']} "
          f"({joined['seconds']:.1f} s at {joined['fps']:g} fps): "
          + ", ".join(f"{r['name']} {r['start_s']:.2f}-{r['end_s']:.2f} s" for r in joined["runs"]), flush=True)

    cfg = load_config(args.cfg, [
        "DATA.PATH_TO_DATA_DIR", str(data), "DATA.PATH_PREFIX", str(data), "DATA.CLASS_NAMES", str(data / "classes.txt"),
        "OUTPUT_DIR", str(out), "TIMELINE.ENABLE", "True", "TIMELINE.INPUT", str(joined["video"]),
        "TIMELINE.WINDOW_SECONDS", repr(window), "TIMELINE.STRIDE_SECONDS", repr(stride),
        "TEST.CHECKPOINT_FILE_PATH", str(ckpt)] + list(args.opts))
    dist_info = init_distributed(cfg.DEVICE, cfg.DIST_BACKEND)
    setup_run(cfg, dist_info)
    try:
        summary = timeline(cfg, dist_info)
    finally:
        cleanup_distributed()
    with open(out / TIMELINE_CSV, newline="") as f:
        rows = list(csv.DictReader(f))
    with open(out / SEGMENTS_CSV, newline="") as f:
        segments = list(csv.DictReader(f))
    result = evaluate(rows, segments, joined["runs"], tolerance, joined["cuts"])

    if not args.quiet:
        print("\n  window    start-end (s)      truth (centre)            predicted                  prob  ok")
        for w in result["windows"]:
            print(f"  {w['window']:5d}  {w['start_s']:7.2f}-{w['end_s']:7.2f}  {w['truth']:<25} {w['predicted']:<25} "
                  f"{100 * w['score']:5.1f}%  {'yes' if w['correct'] else 'NO'}{_KIND_NOTE[w['kind']]}")
    print("\n  boundary (s)   nearest predicted (s)   error (s)")
    for b in result["boundaries"]:
        near = f"{b['nearest_predicted_s']:.2f}" if b["nearest_predicted_s"] is not None else "-"
        err = f"{b['error_s']:.2f}" if b["error_s"] is not None else "-"
        print(f"  {b['true_s']:11.2f}   {near:>21}   {err:>9}  {'ok' if b['aligned'] else 'OFF'}")
    clip_accuracy = result["accuracy_by_kind"]["clip"] or 0.0
    most = clip_accuracy >= args.min_accuracy
    kinds = result["accuracy_by_kind"], result["windows_by_kind"]
    aligned = result["boundaries_aligned"] >= args.min_aligned
    lines = [
        "",
        f"timeline check: {ckpt}",
        f"  windows right: {100 * result['window_accuracy']:.1f}% of {result['num_windows']} "
        f"({100 * result['pure_window_accuracy']:.1f}% of the {result['num_pure_windows']} inside one class); "
        f"time right: {100 * result['time_accuracy']:.1f}% of the covered time",
        "  by kind of window: " + "; ".join(
            f"{label} {100 * (kinds[0][k] or 0):.1f}% of {kinds[1][k]}" for k, label in
            (("clip", "inside one clip"), ("cut", "across a cut inside one class"), ("change", "across a change of class"))),
        f"  boundaries: {sum(b['aligned'] for b in result['boundaries'])} of {result['true_boundaries']} within "
        f"{tolerance:.2f} s; mean error {result['boundary_mean_error_s'] if result['boundary_mean_error_s'] is not None else float('nan'):.2f} s, "
        f"max {result['boundary_max_error_s'] if result['boundary_max_error_s'] is not None else float('nan'):.2f} s; "
        f"{result['predicted_boundaries']} predicted changes of class",
        f"  right class for most of the video (>= {100 * args.min_accuracy:.0f}% of the windows inside one clip): "
        f"{'OK' if most else 'NO'}",
        f"  times line up (>= {100 * args.min_aligned:.0f}% of the boundaries within the tolerance): "
        f"{'OK' if aligned else 'NO'}",
        f"  speed: {summary.get('video_seconds_per_second') or 0:.2f} s of video per second; files in {out}",
    ]
    print("\n".join(lines), flush=True)
    report = {k: v for k, v in result.items() if k != "windows"} | {
        "checkpoint": str(ckpt), "video": str(joined["video"]), "runs": joined["runs"], "window_seconds": window,
        "stride_seconds": stride, "most_right": most, "aligned": aligned, "ok": most and aligned,
        "video_seconds_per_second": summary.get("video_seconds_per_second")}
    (out / "check.json").write_text(json.dumps(report, indent=1, default=float) + "\n")
    return report | {"windows": result["windows"]}


if __name__ == "__main__":
    sys.exit(0 if main()["ok"] else 1)
