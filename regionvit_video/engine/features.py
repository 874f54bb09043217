"""Feature extraction: the pooled pre-logit vector of ``forward_features`` for every video of a list.

Command line (PySlowFast style)::

    python run_net.py --cfg configs/k400_regionvit_m.yaml FEATURES.ENABLE True \\
        FEATURES.INPUT /data/videos OUTPUT_DIR runs/feats TEST.CHECKPOINT_FILE_PATH ckpt.pyth

Input (FEATURES.INPUT): a folder (searched recursively for video files) or a list file in the
Kinetics CSV layout (``path label`` a line; a label-less ``path`` line is accepted too; paths are
joined to DATA.PATH_PREFIX): :func:`regionvit_video.data.list_videos`. Weights: TEST.CHECKPOINT_FILE_PATH,
else the newest checkpoint in OUTPUT_DIR/checkpoints, else MODEL.PRETRAINED (an image checkpoint,
inflated); none is an error (:func:`regionvit_video.engine.checkpoint.load_inference_model`). Clips come
from the data package's builders (``build_eval_dataset``, ``build_window_dataset``); this module is the
orchestration: which videos are pending, batching, the model, the files.

Modes (FEATURES.MODE):

- ``video``: the test views of the test pipeline (TEST.NUM_ENSEMBLE_VIEWS x TEST.NUM_SPATIAL_CROPS,
  same sampling, scaling and crops, through :class:`regionvit_video.data.datasets.VideoDataset`),
  one vector per view; stored as their mean ``(D,)``, or ``(V, D)`` with FEATURES.KEEP_VIEWS.
- ``clips``: a sliding window over the whole video. Window ``k`` starts at frame ``k * stride``
  (FEATURES.STRIDE in frames, or in seconds with FEATURES.STRIDE_UNIT "seconds": ``round(STRIDE *
  fps)`` frames), spans FEATURES.WINDOW frames, and DATA.NUM_FRAMES frames are sampled uniformly in it
  (segment midpoints, the test rule). Windows start while they fit: ``K = 1 + (L - WINDOW) // stride``
  for a video of ``L >= WINDOW`` frames, and a shorter video gives one window over all its frames (the
  tail after the last full window is not covered, as in mmaction2's untrimmed sampler). Each window
  gets TEST.NUM_SPATIAL_CROPS crops; stored as ``(K, D)`` (crops averaged) or ``(K, V, D)``.

Files, under OUTPUT_DIR/features/ (``<rel>``: the video's path relative to the input folder, or as
listed in the CSV, without its extension):

- ``<rel>.npy``: the feature array, float32 (or float16 with FEATURES.DTYPE).
- ``<rel>.windows.csv`` (clips mode): ``window,start_frame,end_frame,start_sec,end_sec,fps`` per row,
  ``end_frame`` exclusive, ``fps`` the video's (the same on every row); row ``k`` belongs to ``features[k]``.
- ``<rel>.stages.npz`` (FEATURES.STAGE_FEATURES): arrays ``stage0``, ``stage1``, ..., one per entry of the
  model's ``feature_info`` (``forward_intermediates``: RegionViT's 4 stages, the local-token map after
  each; TimeSformer's blocks, the patch tokens after each of the 12), averaged over time and space, with
  the leading shape of ``<rel>.npy``.
- ``index.csv``: ``feature,video,shape,mode,views,windows,dtype,checkpoint_sha256`` for every
  video with features (``shape`` like ``3x768``), and in clips mode the time axis of its features:
  ``fps,window_frames,stride_frames,window_seconds,stride_seconds,feature_fps`` (``feature_fps``: features per
  second of video, ``fps / stride_frames``; feature ``k`` covers frames ``[k * stride_frames, k * stride_frames +
  window_frames)``, as the timeline's window ``k`` does for the same window and stride).
- ``failures.csv``: ``video,reason`` for the videos that could not be decoded (the run goes on).
- ``extraction.json``: the settings the features were made with; after a run, in clips mode, also
  ``temporal``: the window and stride in frames and seconds and the feature fps for each frame rate among the
  videos, and the matching ActionFormer / TriDet dataset settings (``feat_stride``, ``num_frames``,
  ``default_fps``) when every video has the same frame rate.

Resuming: every file is written atomically and ``<rel>.npy`` last, so a video is complete exactly when
its ``.npy`` exists; a rerun with the same settings (extraction.json) skips complete videos and
retries failed ones. A rerun with other settings (mode, window, checkpoint, ...) deletes the old
feature files first, so a folder never mixes settings.

Under torchrun every process takes every ``world_size``-th pending video; rank 0 writes the index.
"""
from __future__ import annotations

import csv
import datetime
import io
import json
import logging
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
import torch.nn as nn
from fvcore.common.config import CfgNode
from torch.utils.data import Subset
from tqdm import tqdm

from regionvit_video.data import build_eval_dataset, build_window_dataset, list_videos
from regionvit_video.data.datasets import VideoFile
from regionvit_video.data.loader import DataLoader, collate_videos, loading_worker_init, raise_hung_decode
from regionvit_video.data.sampling import stride_in_frames
from regionvit_video.engine import distributed as du
from regionvit_video.engine.build import inference_autocast, inference_precision
from regionvit_video.engine.checkpoint import load_inference_model
from regionvit_video.engine.distributed import DistInfo, resolve_device
from regionvit_video.utils.io import atomic_write, atomic_write_text, sha256_file

logger = logging.getLogger(__name__)

FEATURES_SUBDIR = "features"
# The time axis of a video's clips-mode features (index.csv; empty in video mode).
TIME_COLUMNS = ("fps", "window_frames", "stride_frames", "window_seconds", "stride_seconds", "feature_fps")
INDEX_COLUMNS = ("feature", "video", "shape", "mode", "views", "windows", "dtype", "checkpoint_sha256") + TIME_COLUMNS
MANIFEST = "extraction.json"
_RUN_KEYS = ("temporal",)  # what a run adds to the settings in extraction.json (not compared when resuming)


# ---------------------------------------------------------------------------------------------- #
# Outputs
# ---------------------------------------------------------------------------------------------- #
def feature_file(features_dir: str | os.PathLike, rel: str, suffix: str = ".npy") -> Path:
    """``features_dir/<rel without extension><suffix>``."""
    stem = rel[: -len(Path(rel).suffix)] if Path(rel).suffix else rel
    return Path(features_dir) / f"{stem}{suffix}"


# ---------------------------------------------------------------------------------------------- #
# The model side
# ---------------------------------------------------------------------------------------------- #
@torch.no_grad()
def clip_features(model: nn.Module, clips: torch.Tensor, *, stage_features: bool = False,
                  max_batch: int = 0) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """Pooled pre-logit features of clips, in batches of ``max_batch`` (0: all at once).

    Args:
        model: a registered video model.
        clips: (N, C, T, H, W) on the model's device.
        stage_features: also return the maps of ``forward_intermediates`` (one per ``feature_info`` entry),
            each averaged over time and space.

    Returns:
        ``(N, D)`` float32 features and a list of ``(N, C_s)`` float32 stage features (empty unless asked).
    """
    feats, stages = [], []
    step = max_batch if max_batch > 0 else len(clips)
    for i in range(0, len(clips), step):
        x = clips[i:i + step]
        if stage_features:
            f, maps = model.forward_intermediates(x)  # maps: (B, C_s, T, H_s, W_s)
            stages.append([m.float().flatten(2).mean(-1) for m in maps])
        else:
            f = model.forward_features(x)
        feats.append(f.float())
    stage_out = [torch.cat([s[k] for s in stages]) for k in range(len(stages[0]))] if stages else []
    return torch.cat(feats), stage_out


# ---------------------------------------------------------------------------------------------- #
# The run
# ---------------------------------------------------------------------------------------------- #
def _settings(cfg, checkpoint_sha: str, device: torch.device) -> dict[str, Any]:
    f, d = cfg.FEATURES, cfg.DATA
    s = {"mode": f.MODE, "keep_views": bool(f.KEEP_VIEWS), "stage_features": bool(f.STAGE_FEATURES),
         "dtype": f.DTYPE, "arch": cfg.MODEL.ARCH, "checkpoint_sha256": checkpoint_sha,
         # a folder resumed on another device or precision would mix features computed differently
         "device": device.type, "precision": inference_precision(cfg, device),
         "num_frames": d.NUM_FRAMES, "test_scale": d.TEST_SCALE, "test_crop_size": d.TEST_CROP_SIZE,
         "mean": list(d.MEAN), "std": list(d.STD), "spatial_crops": cfg.TEST.NUM_SPATIAL_CROPS}
    if f.MODE == "video":
        s.update(sampling=d.SAMPLING, sampling_rate=d.SAMPLING_RATE, target_fps=d.TARGET_FPS,
                 ensemble_views=cfg.TEST.NUM_ENSEMBLE_VIEWS)
    else:
        s.update(window=f.WINDOW, stride=f.STRIDE, stride_unit=f.STRIDE_UNIT)
    return s


def _is_ours(name: str) -> bool:
    return name.endswith((".npy", ".windows.csv", ".stages.npz")) or name in ("index.csv", "failures.csv")


def _prepare_dir(features_dir: Path, settings: dict) -> None:
    """Remove temporaries of killed runs; wipe features made with other settings; record these."""
    manifest = features_dir / MANIFEST
    old = None
    if manifest.is_file():
        try:
            old = json.loads(manifest.read_text())
        except (OSError, ValueError):
            old = {}
        old = {k: v for k, v in old.items() if k not in _RUN_KEYS} if isinstance(old, dict) else {}
    removed = 0
    for dirpath, _, filenames in os.walk(features_dir):
        for name in filenames:
            stale_tmp = name.startswith(".") and name.endswith(".tmp")  # from utils.io.atomic_write
            if stale_tmp or (old is not None and old != settings and _is_ours(name)):
                os.unlink(os.path.join(dirpath, name))
                removed += not stale_tmp
    if old is not None and old != settings:
        changed = sorted(k for k in set(old) | set(settings) if old.get(k) != settings.get(k))
        logger.warning("%s: settings changed (%s): removed %d old feature files, extracting again",
                       features_dir, ", ".join(changed), removed)
    text = json.dumps(settings, indent=1) + "\n"
    atomic_write_text(manifest, text)


def _save_npy(path: Path, array: np.ndarray) -> None:
    def write(tmp: str) -> None:
        with open(tmp, "wb") as f:
            np.save(f, array)

    atomic_write(path, write)


def _save_windows(path: Path, bounds: np.ndarray, fps: float) -> None:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["window", "start_frame", "end_frame", "start_sec", "end_sec", "fps"])
    for k, (s, e) in enumerate(bounds.tolist()):
        w.writerow([k, s, e, f"{s / fps:.6f}" if fps else "", f"{e / fps:.6f}" if fps else "", repr(float(fps))
                    if fps else ""])
    atomic_write_text(path, buf.getvalue())


def _time_axis(cfg: CfgNode, windows_csv: Path) -> dict[str, Any]:
    """The time axis of a video's clips-mode features, from its ``.windows.csv``: fps, window and stride in frames
    and seconds, features per second (empty values where the frame rate is unknown)."""
    empty = dict.fromkeys(TIME_COLUMNS, "")
    try:
        with open(windows_csv, newline="") as f:
            first = next(csv.DictReader(f))
        fps = float(first.get("fps") or 0.0)
        window = int(first["end_frame"]) - int(first["start_frame"])
    except (OSError, StopIteration, KeyError, ValueError):
        return empty
    if fps <= 0:
        return {**empty, "window_frames": window}
    stride = stride_in_frames(cfg.FEATURES.STRIDE, cfg.FEATURES.STRIDE_UNIT, fps)
    return {"fps": fps, "window_frames": window, "stride_frames": stride, "window_seconds": window / fps,
            "stride_seconds": stride / fps, "feature_fps": fps / stride}


def temporal_summary(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """extraction.json's ``temporal`` block from the index rows of a clips-mode run: one entry per frame rate (the
    window and stride in frames and seconds, features per second, videos), and ActionFormer / TriDet's dataset
    settings (``feat_stride``: the stride in frames, ``num_frames``: frames per feature, ``default_fps``) when every
    video has the same frame rate and window."""
    groups: dict[tuple, dict[str, Any]] = {}
    for r in rows:
        if r.get("fps") in ("", None):
            continue
        key = (r["fps"], r["window_frames"], r["stride_frames"])
        g = groups.setdefault(key, {k: r[k] for k in TIME_COLUMNS} | {"num_videos": 0})
        g["num_videos"] += 1
    out: dict[str, Any] = {
        "feature_k_covers": "frames [k * stride_frames, k * stride_frames + window_frames) of its video, "
                            "centre (k * stride_frames + window_frames / 2) / fps seconds",
        "by_fps": sorted(groups.values(), key=lambda g: -g["num_videos"]),
        "actionformer": None,
    }
    if len(groups) == 1:
        g = next(iter(groups.values()))
        out["actionformer"] = {"feat_stride": g["stride_frames"], "num_frames": g["window_frames"],
                               "default_fps": g["fps"], "input_dim": None}
    return out


def _write_csv(path: Path, header: Sequence[str], rows: list[Sequence[Any]]) -> None:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(header)
    w.writerows(rows)
    atomic_write_text(path, buf.getvalue())


class _Writer:
    """Turns per-clip features into the stored arrays of one video and writes its files."""

    def __init__(self, features_dir: Path, *, mode: str, views: int, keep_views: bool, dtype: np.dtype):
        self.dir, self.mode, self.views, self.keep_views, self.dtype = features_dir, mode, views, keep_views, dtype

    def _arrange(self, x: torch.Tensor) -> np.ndarray:
        x = x.reshape(-1, self.views, x.shape[-1])  # K (windows, or 1), V, D
        if not self.keep_views:
            x = x.mean(dim=1)  # K, D
        if self.mode == "video":
            x = x[0]  # (V, D) or (D,)
        return x.numpy().astype(self.dtype)

    def write(self, rel: str, feats: torch.Tensor, stages: list[torch.Tensor], bounds: np.ndarray | None = None,
              fps: float = 0.0) -> np.ndarray:
        array = self._arrange(feats.cpu())
        if bounds is not None:
            _save_windows(feature_file(self.dir, rel, ".windows.csv"), bounds, fps)
        if stages:
            arrays = {f"stage{k}": self._arrange(s.cpu()) for k, s in enumerate(stages)}

            def write_npz(tmp: str) -> None:
                with open(tmp, "wb") as f:
                    np.savez(f, **arrays)

            atomic_write(feature_file(self.dir, rel, ".stages.npz"), write_npz)
        _save_npy(feature_file(self.dir, rel), array)  # last: its presence marks the video complete
        return array


@dataclass
class _Extraction:
    """One process's share of a run: the videos, which of them it extracts, how, and what happened."""

    cfg: CfgNode
    dist_info: DistInfo
    model: nn.Module
    inputs: list[VideoFile]
    pending: list[int]  # indices into inputs
    writer: _Writer
    views: int  # stored views per video (video mode) or per window (clips mode)
    bar: Any
    failures: list[tuple[str, str]] = field(default_factory=list)
    done: int = 0

    @property
    def max_clips(self) -> int:
        return self.cfg.FEATURES.BATCH_SIZE * self.views

    def features(self, clips: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        clips = clips.to(self.dist_info.device, non_blocking=True)
        return clip_features(self.model, clips, stage_features=self.cfg.FEATURES.STAGE_FEATURES,
                             max_batch=self.max_clips)

    def fail(self, path: str, reason: str) -> None:
        self.failures.append((path, reason))
        self.bar.update()

    def finish(self, index: int, feats: torch.Tensor, stages: list[torch.Tensor], bounds=None, fps=0.0) -> None:
        self.writer.write(self.inputs[index].rel, feats, stages, bounds, fps)
        self.done += 1
        self.bar.update()


def _extract_videos(run: _Extraction) -> None:
    """FEATURES.MODE video: the test views of each pending video, through the test pipeline's dataset."""
    cfg, workers = run.cfg, int(run.cfg.DATA_LOADER.NUM_WORKERS)
    dataset = build_eval_dataset(cfg, "test", videos=run.inputs)
    loader = DataLoader(Subset(dataset, run.pending), batch_size=cfg.FEATURES.BATCH_SIZE, num_workers=workers,
                        collate_fn=collate_videos, pin_memory=run.dist_info.device.type == "cuda",
                        worker_init_fn=loading_worker_init(cfg, workers))
    for batch in loader:
        for x in batch["failed"]:
            run.fail(x["path"], x["error"])
        if batch["video"] is None:
            continue
        feats, stages = run.features(batch["video"].flatten(0, 1))  # B*V, C, T, H, W
        for j, index in enumerate(batch["index"].tolist()):
            sl = slice(j * run.views, (j + 1) * run.views)
            run.finish(index, feats[sl], [s[sl] for s in stages])


def _extract_windows(run: _Extraction) -> None:
    """FEATURES.MODE clips: the sliding windows of each pending video, assembled from chunks of windows."""
    cfg, pending = run.cfg, run.pending
    dataset = build_window_dataset(cfg, [run.inputs[i] for i in pending], chunk_windows=cfg.FEATURES.BATCH_SIZE)
    n = min(int(cfg.DATA_LOADER.NUM_WORKERS), len(pending))
    loader = DataLoader(dataset, batch_size=None, num_workers=n, pin_memory=run.dist_info.device.type == "cuda",
                        worker_init_fn=loading_worker_init(cfg, n))
    partial: dict[int, dict] = {}  # per video being assembled from its chunks
    for item in loader:
        index = pending[item["index"]]
        if "error" in item:
            partial.pop(index, None)
            run.fail(item["path"], item["error"])
            continue
        feats, stages = run.features(item["video"])
        acc = partial.setdefault(index, {"feats": [], "stages": [], "bounds": []})
        acc["feats"].append(feats.cpu())
        acc["stages"].append([s.cpu() for s in stages])
        acc["bounds"].append(item["bounds"])
        if item["last"]:
            acc = partial.pop(index)
            st = [torch.cat([s[k] for s in acc["stages"]]) for k in range(len(acc["stages"][0]))]
            run.finish(index, torch.cat(acc["feats"]), st, np.concatenate(acc["bounds"]), item["fps"])


def _write_index(cfg: CfgNode, features_dir: Path, inputs: list[VideoFile], views: int, sha: str,
                 failures: list[tuple[str, str]]) -> dict[str, Any] | None:
    """``index.csv`` over every complete video and ``failures.csv`` (rank 0, after all processes); returns
    extraction.json's ``temporal`` block in clips mode (None in video mode)."""
    rows = []
    for x in inputs:
        path = feature_file(features_dir, x.rel)
        if not path.is_file():
            continue
        shape = np.load(path, mmap_mode="r").shape
        clips = cfg.FEATURES.MODE == "clips"
        row = dict(zip(INDEX_COLUMNS, [path.relative_to(features_dir).as_posix(), x.path, "x".join(map(str, shape)),
                                            cfg.FEATURES.MODE, views, shape[0] if clips else 1, cfg.FEATURES.DTYPE, sha]))
        row.update(_time_axis(cfg, feature_file(features_dir, x.rel, ".windows.csv")) if clips else
                   dict.fromkeys(TIME_COLUMNS, ""))
        rows.append(row)
    _write_csv(features_dir / "index.csv", INDEX_COLUMNS, [[r[k] for k in INDEX_COLUMNS] for r in rows])
    _write_csv(features_dir / "failures.csv", ("video", "reason"), sorted(failures))
    for path, reason in sorted(failures):
        logger.warning("features: failed %s: %s", path, reason)
    if cfg.FEATURES.MODE != "clips":
        return None
    temporal = temporal_summary(rows)
    if temporal["actionformer"] is not None and rows:
        temporal["actionformer"]["input_dim"] = int(rows[0]["shape"].split("x")[-1])
    return temporal


def extract_features(cfg: CfgNode, dist_info: DistInfo | None = None) -> dict[str, Any]:
    """Extract features for FEATURES.INPUT into OUTPUT_DIR/features (see the module docstring).

    Args:
        cfg: a validated config.
        dist_info: this process's place in the job; None: one process on ``cfg.DEVICE``. Under torchrun
            every process takes every ``world_size``-th pending video; rank 0 writes the index.

    Returns:
        ``{"features_dir", "index_csv", "failures_csv", "num_videos", "num_extracted", "num_skipped",
        "num_failed", "seconds", "videos_per_second", "checkpoint", "checkpoint_sha256"}`` (counts of
        this process's run; ``num_failed`` and the files cover all processes).
    """
    f, t0 = cfg.FEATURES, time.perf_counter()
    di = dist_info or DistInfo(device=resolve_device(cfg.DEVICE))
    inputs = list_videos(f.INPUT, path_prefix=cfg.DATA.PATH_PREFIX, separator=cfg.DATA.PATH_LABEL_SEPARATOR,
                         source_key="FEATURES.INPUT")
    model, weights = load_inference_model(cfg, di, allow_pretrained=True, job="extract features with")
    sha = sha256_file(weights.path)
    features_dir = Path(cfg.OUTPUT_DIR) / FEATURES_SUBDIR
    # Agreements on a gloo group with a long timeout: under NCCL the other processes would otherwise wait in
    # a collective with NCCL's timeout while rank 0 prepares the folder or writes the index of a large corpus.
    group = du.gloo_group(timeout=datetime.timedelta(hours=24))
    if di.is_main:
        features_dir.mkdir(parents=True, exist_ok=True)
        _prepare_dir(features_dir, _settings(cfg, sha, di.device))
    du.barrier(group)

    complete = [feature_file(features_dir, x.rel).is_file() for x in inputs]
    pending = [i for i, done in enumerate(complete) if not done][di.rank::di.world_size]
    views = cfg.TEST.NUM_SPATIAL_CROPS * (cfg.TEST.NUM_ENSEMBLE_VIEWS if f.MODE == "video" else 1)
    writer = _Writer(features_dir, mode=f.MODE, views=views, keep_views=bool(f.KEEP_VIEWS), dtype=np.dtype(f.DTYPE))
    if di.is_main:
        logger.info("features: %d videos, %d complete, %d to extract (%d processes) -> %s", len(inputs),
                    sum(complete), len(pending) * di.world_size, di.world_size, features_dir)
    bar = tqdm(total=len(pending), desc=f"features ({f.MODE})", unit="video", disable=not di.is_main or not pending)
    run = _Extraction(cfg, di, model, inputs, pending, writer, views, bar)
    try:
        with torch.no_grad(), inference_autocast(cfg, di.device):
            if pending:
                (_extract_videos if f.MODE == "video" else _extract_windows)(run)
    except RuntimeError as e:  # a DataLoader worker ended by the decode hard bound: name its video
        raise_hung_decode(e)  # features written so far stay (a rerun skips them)
        raise
    bar.close()

    all_failures = [x for part in du.all_gather_object(run.failures, group) for x in part]
    if di.is_main:
        temporal = _write_index(cfg, features_dir, inputs, views, sha, all_failures)
        if temporal is not None:  # the settings, and the time axis of this folder's features
            text = json.dumps({**_settings(cfg, sha, di.device), "temporal": temporal}, indent=1) + "\n"
            atomic_write_text(features_dir / MANIFEST, text)
    du.barrier(group)
    seconds = time.perf_counter() - t0
    rate = run.done / seconds if seconds > 0 else math.nan
    if di.is_main:
        logger.info("features: %d extracted, %d already complete, %d failed in %.1f s (%.2f videos/s) -> %s",
                    run.done, sum(complete), len(all_failures), seconds, rate, features_dir)
    return {"features_dir": str(features_dir), "index_csv": str(features_dir / "index.csv"),
            "failures_csv": str(features_dir / "failures.csv"), "num_videos": len(inputs), "num_extracted": run.done,
            "num_skipped": sum(complete), "num_failed": len(all_failures), "seconds": seconds,
            "videos_per_second": rate, "checkpoint": str(weights.path), "checkpoint_sha256": sha}
