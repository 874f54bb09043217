"""The timeline of a long video or a live stream: which action when.

    python run_net.py --cfg configs/demo.yaml TIMELINE.ENABLE True TIMELINE.INPUT long.mp4 \\
        TEST.CHECKPOINT_FILE_PATH demo_output/checkpoints/checkpoint_epoch_00030.pyth OUTPUT_DIR out
    ffmpeg -i rtsp://camera/stream -f mpegts - | python run_net.py --cfg ... TIMELINE.ENABLE True TIMELINE.INPUT -

A window of TIMELINE.WINDOW_SECONDS slides over the video every TIMELINE.STRIDE_SECONDS (windows start while
they fit: the tail after the last full window is not covered, as in feature extraction's ``clips`` mode, whose
windows are the same for the same settings). Each window is predicted exactly as the multi-view test predicts a
whole video: the same checkpoint (:func:`regionvit_video.engine.checkpoint.load_inference_model`), frames
(DATA.SAMPLING, TEST.NUM_ENSEMBLE_VIEWS clips of DATA.NUM_FRAMES), crops (TEST.NUM_SPATIAL_CROPS), precision
(:func:`regionvit_video.engine.build.inference_autocast`) and softmax averaged over the views
(:func:`regionvit_video.engine.meters.ensemble_views`); a window covering a whole short video gives that video's
test logits. Windows, frames and views come from the data package (:func:`regionvit_video.data.build_timeline_dataset`
for a file, :func:`regionvit_video.data.build_live_windows` for a camera, a URL or stdin).

Written to OUTPUT_DIR:

- ``timeline.csv``: one row per window, written as each is predicted: ``window, start_s, end_s, start_frame,
  end_frame, label, score`` (the top-1 class name and probability), then ``label_2, score_2, ...`` up to
  TIMELINE.TOP_K.
- ``timeline_segments.csv``: consecutive windows with the same top-1 merged: ``segment, start_s, end_s,
  duration_s, label, mean_score, max_score, first_window, last_window, num_windows``. Windows below
  TIMELINE.SCORE_THRESHOLD belong to no segment. Each window stands for the stride-long stretch around its centre
  (its first and last windows extend to its edges), so segments tile the covered time without overlapping.
- ``timeline.png``: top-1 as a coloured band over time, and its probability below.
- ``timeline.json``: the input, checkpoint, window geometry in seconds and frames, the segments, seconds per
  class, speed (seconds of video per second of compute), decoding counts, peak memory, latency (live), and how
  the input ended.
- ``timeline_scores.npy`` (a file): every window's class probabilities, float32 (K, classes).

A live source prints every window's prediction with its latency (from the arrival of the window's last frame to
the prediction); a stall (TIMELINE.STALL_SECONDS without a frame) writes the files and ends the job with
:class:`~regionvit_video.data.stream.StreamStalled` (exit status 1), the end of the stream ends it normally.
"""
from __future__ import annotations

import csv
import io
import json
import logging
import math
import os
import resource
import time
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from einops import rearrange
from fvcore.common.config import CfgNode
from tqdm import tqdm

from regionvit_video.data import (DecodeError, build_live_windows, build_timeline_dataset, is_live_source, open_video,
                                  raise_hung_decode, resolve_class_names, window_views)
from regionvit_video.data.decoder import time_limit
from regionvit_video.data.loader import DataLoader, loading_worker_init
from regionvit_video.data.stream import StreamError, StreamStalled, source_name
from regionvit_video.engine.build import inference_autocast, inference_precision
from regionvit_video.engine.checkpoint import load_inference_model
from regionvit_video.engine.distributed import DistInfo, resolve_device
from regionvit_video.engine.log import console_through_tqdm
from regionvit_video.engine.meters import ensemble_views
from regionvit_video.utils.io import atomic_write, atomic_write_text

logger = logging.getLogger(__name__)

TIMELINE_CSV = "timeline.csv"
SEGMENTS_CSV = "timeline_segments.csv"
TIMELINE_PNG = "timeline.png"
TIMELINE_JSON = "timeline.json"
SCORES_NPY = "timeline_scores.npy"


# ---------------------------------------------------------------------------------------------- #
# Rows, segments
# ---------------------------------------------------------------------------------------------- #
class _Rows:
    """The windows predicted so far: ``timeline.csv`` written row by row (a job that dies keeps what it did), and
    what the segments, the plot and the summary need."""

    def __init__(self, path: Path, class_names: Sequence[str], top_k: int, keep_scores: bool):
        self.names, self.k = list(class_names), max(1, min(int(top_k), len(class_names)))
        self.index: list[int] = []
        self.bounds: list[tuple[float, float]] = []
        self.label: list[int] = []
        self.score: list[float] = []
        self.scores: list[np.ndarray] | None = [] if keep_scores else None
        path.parent.mkdir(parents=True, exist_ok=True)
        self._file = open(path, "w", newline="", encoding="utf-8")
        self._csv = csv.writer(self._file, lineterminator="\n")
        header = ["window", "start_s", "end_s", "start_frame", "end_frame", "label", "score"]
        header += [f"{c}_{r}" for r in range(2, self.k + 1) for c in ("label", "score")]
        self._csv.writerow(header)
        self._file.flush()

    def name(self, c: int) -> str:
        return self.names[c] if 0 <= c < len(self.names) else f"class_{c}"

    def add(self, index: int, start_frame: int, end_frame: int, start_s: float, end_s: float,
            probs: np.ndarray) -> tuple[str, float]:
        top = np.argsort(-probs, kind="stable")[:self.k]
        row = [index, f"{start_s:.3f}", f"{end_s:.3f}", start_frame, end_frame]
        for c in top:
            row += [self.name(int(c)), f"{float(probs[c]):.4f}"]
        self._csv.writerow(row)
        self._file.flush()
        self.index.append(int(index))
        self.bounds.append((float(start_s), float(end_s)))
        self.label.append(int(top[0]))
        self.score.append(float(probs[top[0]]))
        if self.scores is not None:
            self.scores.append(probs.astype(np.float32))
        return self.name(int(top[0])), float(probs[top[0]])

    def close(self) -> None:
        self._file.close()

    def __len__(self) -> int:
        return len(self.index)


def owned_intervals(index: Sequence[int], bounds: Sequence[tuple[float, float]], stride_s: float) -> np.ndarray:
    """The stretch of time each window stands for: ``stride_s`` around its centre, within the window, from the
    start of the first window (and of a window after a skipped one) to the end of the last (and of a window before
    a skipped one). Windows ``k`` and ``k + 1`` then meet without overlapping when the stride is at most the window.

    Returns:
        ``(K, 2)`` start and end seconds.
    """
    b = np.asarray(bounds, dtype=np.float64).reshape(-1, 2)
    if not len(b):
        return b
    idx = np.asarray(index)
    centre = b.mean(1)
    lo = np.maximum(b[:, 0], centre - stride_s / 2)
    hi = np.minimum(b[:, 1], centre + stride_s / 2)
    first = np.r_[True, idx[1:] != idx[:-1] + 1]  # no predicted window just before
    last = np.r_[idx[1:] != idx[:-1] + 1, True]
    lo[first], hi[last] = b[first, 0], b[last, 1]
    return np.stack([lo, hi], axis=1)


def merge_segments(index: Sequence[int], bounds: Sequence[tuple[float, float]], labels: Sequence[int],
                   scores: Sequence[float], *, stride_s: float, threshold: float = 0.0) -> list[dict[str, Any]]:
    """Runs of consecutive windows (no skipped window between them) with the same top-1 and a score of at least
    ``threshold``, as ``{"start_s", "end_s", "label", "mean_score", "max_score", "first_window", "last_window",
    "num_windows"}`` (``label``: the class index) over :func:`owned_intervals`."""
    owned = owned_intervals(index, bounds, stride_s)
    segs: list[dict[str, Any]] = []
    run: list[int] = []

    def close() -> None:
        if run:
            s = [scores[j] for j in run]
            segs.append({"start_s": float(owned[run[0], 0]), "end_s": float(owned[run[-1], 1]), "label": labels[run[0]],
                         "mean_score": float(np.mean(s)), "max_score": float(np.max(s)),
                         "first_window": int(index[run[0]]), "last_window": int(index[run[-1]]), "num_windows": len(run)})
            run.clear()

    for j in range(len(index)):
        keep = scores[j] >= threshold
        if run and (not keep or labels[j] != labels[run[-1]] or index[j] != index[run[-1]] + 1):
            close()
        if keep:
            run.append(j)
    close()
    return segs


def _write_segments(path: Path, segs: list[dict], name) -> None:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["segment", "start_s", "end_s", "duration_s", "label", "mean_score", "max_score", "first_window",
                "last_window", "num_windows"])
    for i, s in enumerate(segs):
        w.writerow([i, f"{s['start_s']:.3f}", f"{s['end_s']:.3f}", f"{s['end_s'] - s['start_s']:.3f}", name(s["label"]),
                    f"{s['mean_score']:.4f}", f"{s['max_score']:.4f}", s["first_window"], s["last_window"],
                    s["num_windows"]])
    atomic_write_text(path, buf.getvalue())


# ---------------------------------------------------------------------------------------------- #
# The plot
# ---------------------------------------------------------------------------------------------- #
def _clock(seconds: float, _pos=None) -> str:
    seconds = max(0.0, float(seconds))
    h, rest = divmod(int(round(seconds)), 3600)
    m, s = divmod(rest, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"


def plot_timeline(path: Path, rows: _Rows, stride_s: float, threshold: float, title: str,
                  duration: float | None = None) -> None:
    """``timeline.png``: the top-1 class of each window as a coloured band over time (grey below the threshold,
    the class named on stretches wide enough), and its probability below, with the threshold; the time axis
    runs to ``duration`` when given (the end of the video: the tail no window covers stays blank)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Patch
    from matplotlib.ticker import FuncFormatter

    owned = owned_intervals(rows.index, rows.bounds, stride_s)
    labels, scores = np.asarray(rows.label), np.asarray(rows.score)
    keep = scores >= threshold
    time_per_class: dict[int, float] = {}
    for (lo, hi), c, k in zip(owned, labels, keep):
        if k:
            time_per_class[int(c)] = time_per_class.get(int(c), 0.0) + hi - lo
    shown = sorted(time_per_class, key=lambda c: -time_per_class[c])
    palette = plt.get_cmap("tab10" if len(shown) <= 10 else "tab20").colors
    shown = shown[:len(palette)]
    colour = {c: palette[i] for i, c in enumerate(shown)}
    other, below = (0.55, 0.55, 0.55), (0.88, 0.88, 0.88)

    fig, (band, line) = plt.subplots(2, 1, figsize=(13, 4.2), sharex=True, gridspec_kw={"height_ratios": [1, 1.6]})
    span = (float(owned[:, 0].min()), float(owned[:, 1].max())) if len(owned) else (0.0, 1.0)
    if duration and math.isfinite(duration) and duration > span[1]:
        span = (span[0], float(duration))
    width = max(span[1] - span[0], 1e-6)
    for (lo, hi), c, k in zip(owned, labels, keep):
        band.broken_barh([(lo, hi - lo)], (0, 1), facecolors=colour.get(int(c), other) if k else below,
                         edgecolor="none")
    for s in merge_segments(rows.index, rows.bounds, rows.label, rows.score, stride_s=stride_s, threshold=threshold):
        if (s["end_s"] - s["start_s"]) / width > 0.06:
            band.text((s["start_s"] + s["end_s"]) / 2, 0.5, rows.name(s["label"]), ha="center", va="center",
                      fontsize=8, clip_on=True)
    band.set(ylim=(0, 1), yticks=[], title=title)
    centres = owned.mean(1) if len(owned) else np.zeros(0)
    line.plot(centres, scores, color="0.3", linewidth=0.8, zorder=1)
    line.scatter(centres, scores, s=9, zorder=2, c=[colour.get(int(c), other) if k else below
                                                    for c, k in zip(labels, keep)])
    if threshold > 0:
        line.axhline(threshold, color="crimson", linestyle="--", linewidth=0.8, label=f"threshold {threshold:g}")
    line.set(ylim=(0, 1.02), ylabel="top-1 probability", xlim=span,
             xlabel="time (h:mm:ss)" if span[1] > 3600 else "time (m:ss)" if span[1] > 120 else "time (s)")
    if span[1] > 120:
        line.xaxis.set_major_formatter(FuncFormatter(_clock))
    line.grid(alpha=0.3)
    handles = [Patch(color=colour[c], label=f"{rows.name(c)} ({time_per_class[c]:.0f} s)") for c in shown]
    if len(time_per_class) > len(shown):
        handles.append(Patch(color=other, label="other classes"))
    if not keep.all():
        handles.append(Patch(color=below, label=f"below {threshold:g}"))
    fig.legend(handles=handles, loc="center left", bbox_to_anchor=(0.81, 0.5), fontsize=8, frameon=False)
    fig.tight_layout(rect=(0, 0, 0.8, 1))
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    plt.close(fig)
    atomic_write(path, lambda tmp: Path(tmp).write_bytes(buf.getvalue()))


# ---------------------------------------------------------------------------------------------- #
# Prediction
# ---------------------------------------------------------------------------------------------- #
@torch.no_grad()
def predict_windows(model: torch.nn.Module, views: torch.Tensor, views_per_window: int, cfg: CfgNode,
                    device: torch.device) -> np.ndarray:
    """``(k * V, C, T, H, W)`` views of k windows -> ``(k, classes)`` probabilities: the softmax averaged over each
    window's V views, at the inference precision (the multi-view test's rule)."""
    with inference_autocast(cfg, device):
        logits = model(views.to(device, non_blocking=True))
    probs = ensemble_views(rearrange(logits.float(), "(k v) n -> k v n", v=views_per_window))  # k, classes
    return probs.cpu().numpy()


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # KiB on Linux


def _run_file(cfg: CfgNode, di: DistInfo, model: torch.nn.Module, path: str, rows: _Rows) -> dict[str, Any]:
    """The windows of a video file, TIMELINE.BATCH_SIZE at a time, decoded in a loading process when
    DATA_LOADER.NUM_WORKERS > 0 (one: a video is read in order)."""
    dataset = build_timeline_dataset(cfg, path)
    with time_limit(cfg.DATA.DECODE_TIMEOUT, path):  # the geometry, for the bar and the summary
        reader = open_video(path, cfg.TIMELINE.DECODER, num_threads=cfg.DATA.DECODE_THREADS)
    num_frames, fps = reader.num_frames, float(reader.fps or 0.0)
    reader.close()
    plan = dataset.plan(num_frames, fps)
    info: dict[str, Any] = {"num_video_frames": num_frames, "fps": fps,
                            "duration_s": num_frames / fps if fps > 0 else None, **plan.describe(), "end": "complete"}
    workers = min(1, int(cfg.DATA_LOADER.NUM_WORKERS))
    loader = DataLoader(dataset, batch_size=None, num_workers=workers, pin_memory=di.device.type == "cuda",
                        worker_init_fn=loading_worker_init(cfg, workers))
    v = dataset.views_per_window
    bar = tqdm(total=plan.num_windows, desc="timeline", unit="window", dynamic_ncols=True)
    t0, covered = time.perf_counter(), 0.0
    try:
        with console_through_tqdm():
            for item in loader:
                if "error" in item:
                    info["end"] = f"decode error after {len(rows)} windows: {item['error']}"
                    info["error"] = item["error"]
                    break
                probs = predict_windows(model, item["video"], v, cfg, di.device)
                f = item["fps"]
                for (s, e), p in zip(item["bounds"].tolist(), probs):
                    rows.add(len(rows), s, e, s / f if f else math.nan, e / f if f else math.nan, p)
                    covered = e / f if f else math.nan
                info.update(fps=f, window_frames=item["window"], stride_frames=item["stride"],
                            num_windows=item["num_windows"])
                if "decode_stats" in item:
                    info["decoding"] = item["decode_stats"]
                bar.total = item["num_windows"]
                bar.update(len(probs))
                elapsed = time.perf_counter() - t0
                bar.set_postfix_str(f"{covered / elapsed:.1f} s of video/s")
    except RuntimeError as e:  # a loading process ended by the decode hard bound: name the video
        raise_hung_decode(e, Path(cfg.OUTPUT_DIR) / "bad_videos.txt")
        raise
    finally:
        bar.close()
    info["compute_seconds"] = time.perf_counter() - t0
    info["video_seconds"] = covered if len(rows) else 0.0
    return info


def _run_live(cfg: CfgNode, di: DistInfo, model: torch.nn.Module, source: str, rows: _Rows,
              stdin_fd: int | None) -> dict[str, Any]:
    """The windows of a live source as they complete, each printed with its latency."""
    windows = build_live_windows(cfg, source, stdin_fd=stdin_fd)
    d, test = cfg.DATA, cfg.TEST
    v = test.NUM_ENSEMBLE_VIEWS * test.NUM_SPATIAL_CROPS
    latencies: list[float] = []
    info: dict[str, Any] = {"live": True, "realtime": windows.realtime}
    print(f"timeline of {source_name(source)}: a window of {cfg.TIMELINE.WINDOW_SECONDS:g} s every "
          f"{cfg.TIMELINE.STRIDE_SECONDS:g} s ({'realtime: windows the model cannot keep up with are skipped' if windows.realtime else 'every window'}); "
          f"stall after {cfg.TIMELINE.STALL_SECONDS:g} s without a frame", flush=True)
    t0 = time.perf_counter()
    try:
        for win in windows:
            views = window_views(torch.from_numpy(win.frames), num_frames=d.NUM_FRAMES,
                                 num_clips=test.NUM_ENSEMBLE_VIEWS, scale=d.TEST_SCALE, crop_size=d.TEST_CROP_SIZE,
                                 num_crops=test.NUM_SPATIAL_CROPS, mean=d.MEAN, std=d.STD)
            probs = predict_windows(model, views, v, cfg, di.device)[0]
            label, score = rows.add(win.index, win.start_frame, win.end_frame, win.start_s, win.end_s, probs)
            latency = time.monotonic() - win.ready_at
            latencies.append(latency)
            skipped = f"  ({win.skipped} windows skipped)" if win.skipped else ""
            print(f"[{win.start_s:9.2f} - {win.end_s:9.2f} s]  {label:<24} {100 * score:5.1f}%  latency "
                  f"{1000 * latency:6.0f} ms{skipped}", flush=True)
        info["end"] = windows.end_reason or "end of stream"
    except StreamStalled as e:
        info["end"], info["error"] = "stalled", str(e)
    except StreamError as e:
        info["end"], info["error"] = windows.end_reason or "error", str(e)
    except KeyboardInterrupt:
        info["end"] = "interrupted"
    stats = windows.stats()
    info.update(fps=stats["fps"], window_frames=stats["window_frames"], stride_frames=stats["stride_frames"],
                window_seconds=stats["window_frames"] / stats["fps"] if stats["fps"] else None,
                stride_seconds=stats["stride_frames"] / stats["fps"] if stats["fps"] else None,
                num_windows=len(rows), skipped_windows=stats["skipped_windows"], frames_read=stats["frames_read"],
                duration_s=stats["stream_seconds"], compute_seconds=time.perf_counter() - t0,
                video_seconds=rows.bounds[-1][1] if len(rows) else 0.0)
    if latencies:
        ms = 1000 * np.asarray(latencies)
        info["latency_ms"] = {"mean": float(ms.mean()), "p50": float(np.percentile(ms, 50)),
                              "p95": float(np.percentile(ms, 95)), "max": float(ms.max())}
    return info


# ---------------------------------------------------------------------------------------------- #
# The job
# ---------------------------------------------------------------------------------------------- #
def timeline(cfg: CfgNode, dist_info: DistInfo | None = None, *, stdin_fd: int | None = None) -> dict[str, Any] | None:
    """The timeline of TIMELINE.INPUT (a video file, a camera, a URL or ``-``), written to OUTPUT_DIR (see the
    module docstring). One input is predicted by rank 0 alone: the other processes of a job return None at once.

    Args:
        cfg: a validated config.
        dist_info: this process's place in the job; None: one process on ``cfg.DEVICE``.
        stdin_fd: the descriptor ``-`` reads (default: this process's stdin).

    Returns:
        The content of ``timeline.json``.

    Raises:
        FileNotFoundError: TIMELINE.INPUT is neither a file nor a live source.
        NoCheckpointError: no checkpoint to predict with.
        DecodeError: the video cannot be decoded (after writing what was predicted before).
        StreamStalled: a live source stalled (after writing what was predicted).
        StreamError: a live source could not be opened or decoded (same).
    """
    di = dist_info or DistInfo(device=resolve_device(cfg.DEVICE))
    if not di.is_main:
        return None
    source, t = str(cfg.TIMELINE.INPUT), cfg.TIMELINE
    live = is_live_source(source)
    if not live and not os.path.isfile(source):
        raise FileNotFoundError(f"TIMELINE.INPUT: video {source!r} does not exist")
    model, weights = load_inference_model(cfg, DistInfo(device=di.device), job="run the timeline with")
    names = resolve_class_names(cfg, "test", look_in_data_dir=True)
    out = Path(cfg.OUTPUT_DIR)
    rows = _Rows(out / TIMELINE_CSV, names, t.TOP_K, keep_scores=not live)
    logger.info("timeline of %s: windows of %g s every %g s, %d x %d views each, with %s", source_name(source),
                t.WINDOW_SECONDS, t.STRIDE_SECONDS, cfg.TEST.NUM_ENSEMBLE_VIEWS, cfg.TEST.NUM_SPATIAL_CROPS,
                weights.path)
    try:
        info = _run_live(cfg, di, model, source, rows, stdin_fd) if live else _run_file(cfg, di, model, source, rows)
    finally:
        rows.close()
    summary = _finish(cfg, di, out, rows, info, source, live, str(weights.path))
    if "error" in info:
        if live:
            raise (StreamStalled if info["end"] == "stalled" else StreamError)(info["error"])
        raise DecodeError(source, info["error"])
    return summary


def _finish(cfg: CfgNode, di: DistInfo, out: Path, rows: _Rows, info: dict, source: str, live: bool,
            checkpoint: str) -> dict[str, Any]:
    """Segments, plot, summary json, printed summary."""
    t = cfg.TIMELINE
    stride_s = info.get("stride_seconds") or t.STRIDE_SECONDS
    segs = merge_segments(rows.index, rows.bounds, rows.label, rows.score, stride_s=stride_s, threshold=t.SCORE_THRESHOLD)
    _write_segments(out / SEGMENTS_CSV, segs, rows.name)
    owned = owned_intervals(rows.index, rows.bounds, stride_s)
    per_class: dict[str, float] = {}
    for (lo, hi), c, s in zip(owned, rows.label, rows.score):
        if s >= t.SCORE_THRESHOLD:
            per_class[rows.name(c)] = per_class.get(rows.name(c), 0.0) + float(hi - lo)
    compute = info.get("compute_seconds") or math.nan
    files = {"timeline_csv": str(out / TIMELINE_CSV), "segments_csv": str(out / SEGMENTS_CSV)}
    if len(rows):
        title = (f"{source_name(source) if live else Path(source).name}: {len(rows)} windows of "
                 f"{info.get('window_seconds') or t.WINDOW_SECONDS:.2f} s every {stride_s:.2f} s, {len(segs)} segments")
        try:
            plot_timeline(out / TIMELINE_PNG, rows, stride_s, t.SCORE_THRESHOLD, title, info.get("duration_s"))
            files["plot"] = str(out / TIMELINE_PNG)
        except Exception as e:  # noqa: BLE001  (a plot must not lose the results)
            logger.warning("could not plot %s: %s", out / TIMELINE_PNG, e)
    if rows.scores is not None and rows.scores:
        scores = np.stack(rows.scores)

        def write_npy(tmp: str) -> None:
            with open(tmp, "wb") as f:
                np.save(f, scores)

        atomic_write(out / SCORES_NPY, write_npy)
        files["scores_npy"] = str(out / SCORES_NPY)
    files["summary_json"] = str(out / TIMELINE_JSON)
    video_s = float(info.get("video_seconds") or 0.0)
    summary = {
        "input": source, "live": live, "checkpoint": checkpoint, "arch": cfg.MODEL.ARCH,
        "device": di.device.type, "precision": inference_precision(cfg, di.device),
        "fps": info.get("fps"), "duration_s": info.get("duration_s"), "num_video_frames": info.get("num_video_frames"),
        "window": {"window_seconds": info.get("window_seconds"), "window_frames": info.get("window_frames"),
                   "stride_seconds": info.get("stride_seconds"), "stride_frames": info.get("stride_frames"),
                   "requested_window_seconds": t.WINDOW_SECONDS, "requested_stride_seconds": t.STRIDE_SECONDS,
                   "num_frames": cfg.DATA.NUM_FRAMES, "sampling": cfg.DATA.SAMPLING,
                   "temporal_views": cfg.TEST.NUM_ENSEMBLE_VIEWS, "spatial_crops": cfg.TEST.NUM_SPATIAL_CROPS,
                   "test_scale": cfg.DATA.TEST_SCALE, "crop_size": cfg.DATA.TEST_CROP_SIZE},
        "num_windows": len(rows),
        "covered_s": [rows.bounds[0][0], rows.bounds[-1][1]] if len(rows) else None,
        "score_threshold": t.SCORE_THRESHOLD,
        "num_segments": len(segs),
        "segments": [{**s, "label": rows.name(s["label"])} for s in segs],
        "seconds_per_class": dict(sorted(per_class.items(), key=lambda kv: -kv[1])),
        "compute_seconds": compute,
        "video_seconds": video_s,
        "video_seconds_per_second": video_s / compute if compute and compute > 0 else None,
        "windows_per_second": len(rows) / compute if compute and compute > 0 else None,
        "peak_rss_mb": _peak_rss_mb(),
        "end": info.get("end"),
        "files": files,
    }
    for key in ("decoding", "latency_ms", "skipped_windows", "frames_read", "realtime", "error"):
        if key in info:
            summary[key] = info[key]
    atomic_write_text(out / TIMELINE_JSON, json.dumps(summary, indent=1, default=float) + "\n")
    _print_summary(summary, segs, rows)
    return summary


def _print_summary(s: dict, segs: list[dict], rows: _Rows) -> None:
    w = s["window"]
    fps = f"{s['fps']:.2f} fps" if s.get("fps") else "unknown fps"
    dur = f"{s['duration_s']:.1f} s" if s.get("duration_s") else "? s"
    lines = [f"timeline of {source_name(s['input'])}: {dur} at {fps}, {s['num_windows']} windows of "
             f"{w['window_seconds'] or 0:.2f} s ({w['window_frames']} frames) every {w['stride_seconds'] or 0:.2f} s "
             f"({w['stride_frames']} frames), {w['temporal_views'] * w['spatial_crops']} views each; {s['end']}"]
    lines.append(f"  segments: {len(segs)}" + (f" (windows with a top-1 probability >= {s['score_threshold']:g})"
                                               if s["score_threshold"] > 0 else ""))
    for seg in segs[:12]:
        lines.append(f"    {seg['start_s']:9.2f} - {seg['end_s']:9.2f} s  {rows.name(seg['label']):<24} "
                     f"mean {100 * seg['mean_score']:5.1f}%  ({seg['num_windows']} windows)")
    if len(segs) > 12:
        lines.append(f"    ... {len(segs) - 12} more in {s['files']['segments_csv']}")
    if s.get("video_seconds_per_second"):
        lines.append(f"  speed: {s['video_seconds']:.1f} s of video in {s['compute_seconds']:.1f} s: "
                     f"{s['video_seconds_per_second']:.2f} s of video per second ({s['windows_per_second']:.2f} "
                     f"windows/s) on {s['device']}, {s['precision']}")
    if "decoding" in s:
        d = s["decoding"]
        lines.append(f"  decoding: {d['frames_decoded']} frames decoded for {d['frames_sampled']} sampled "
                     f"({d['backend']}), at most {d['max_frames_kept']} kept")
    if "latency_ms" in s:
        lat = s["latency_ms"]
        lines.append(f"  latency: mean {lat['mean']:.0f} ms, p95 {lat['p95']:.0f} ms, max {lat['max']:.0f} ms; "
                     f"{s.get('skipped_windows', 0)} windows skipped")
    lines.append("  files: " + ", ".join(v for k, v in s["files"].items()))
    print("\n".join(lines), flush=True)
