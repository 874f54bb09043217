"""Feature extraction: the pooled pre-logit vector of ``forward_features`` for every video of a list.

Command line (PySlowFast style)::

    python run_net.py --cfg configs/k400_regionvit_m.yaml FEATURES.ENABLE True \\
        FEATURES.INPUT /data/videos OUTPUT_DIR runs/feats TEST.CHECKPOINT_FILE_PATH ckpt.pyth

Input (FEATURES.INPUT): a folder (searched recursively for video files) or a list file in the
Kinetics CSV layout (``path label`` a line; a label-less ``path`` line is accepted too; paths are
joined to DATA.PATH_PREFIX). Weights: TEST.CHECKPOINT_FILE_PATH, else the newest checkpoint in
OUTPUT_DIR/checkpoints, else MODEL.PRETRAINED (an image checkpoint, inflated); none is an error.

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
- ``<rel>.windows.csv`` (clips mode): ``window,start_frame,end_frame,start_sec,end_sec`` per row,
  ``end_frame`` exclusive; row ``k`` belongs to ``features[k]``.
- ``<rel>.stages.npz`` (FEATURES.STAGE_FEATURES): arrays ``stage0``..``stage3``, the local-token map
  of each stage averaged over time and space, with the leading shape of ``<rel>.npy``.
- ``index.csv``: ``feature,video,shape,mode,views,windows,dtype,checkpoint_sha256`` for every
  video with features (``shape`` like ``3x768``).
- ``failures.csv``: ``video,reason`` for the videos that could not be decoded (the run goes on).
- ``extraction.json``: the settings the features were made with.

Resuming: every file is written atomically and ``<rel>.npy`` last, so a video is complete exactly when
its ``.npy`` exists; a rerun with the same settings (extraction.json) skips complete videos and
retries failed ones. A rerun with other settings (mode, window, checkpoint, ...) deletes the old
feature files first, so a folder never mixes settings.

Under torchrun every process takes every ``world_size``-th pending video; rank 0 writes the index.
"""
from __future__ import annotations

import csv
import hashlib
import io
import json
import logging
import math
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np
import torch
import torch.nn as nn
from torch.utils.data import DataLoader, IterableDataset, Subset, get_worker_info
from tqdm import tqdm

from regionvit_video.data.datasets import VideoDataset, VideoRecord
from regionvit_video.data.decoder import DecodeError, DecodeTimeout, PyAVReader, open_video, time_limit
from regionvit_video.data.loader import collate_videos, loading_worker_init, raise_hung_decode
from regionvit_video.data.sampling import uniform_indices
from regionvit_video.data.transforms import eval_views
from regionvit_video.utils.io import atomic_write

logger = logging.getLogger(__name__)

VIDEO_EXTENSIONS = (".mp4", ".avi", ".mkv", ".webm", ".mov", ".m4v", ".mpg", ".mpeg", ".ogv", ".flv",
                    ".wmv", ".3gp", ".ts")
FEATURES_SUBDIR = "features"
INDEX_COLUMNS = ("feature", "video", "shape", "mode", "views", "windows", "dtype", "checkpoint_sha256")


# ---------------------------------------------------------------------------------------------- #
# Inputs and outputs
# ---------------------------------------------------------------------------------------------- #
@dataclass(frozen=True)
class FeatureInput:
    """One video to extract: its file and its key (relative path, '/'-separated, with extension)."""

    path: str
    rel: str


def list_feature_inputs(source: str | os.PathLike, *, path_prefix: str = "", separator: str = " ") -> list[FeatureInput]:
    """The videos of a folder (recursive, sorted) or of a Kinetics-layout list file.

    A list line is ``path`` or ``path<separator>label``; blank lines are skipped; a path listed twice
    is kept once. Paths in a list are joined to ``path_prefix`` and keyed as listed (an absolute path
    is keyed without its leading '/', and a '..' part is keyed as '__', so no key leads out of the
    features folder).

    Raises:
        FileNotFoundError: ``source`` does not exist.
        ValueError: a list line has more than two columns (file and line named), or nothing is found.
    """
    source = str(source)
    if not source:
        raise ValueError("FEATURES.INPUT is empty: give a folder of videos or a CSV list")
    items: list[FeatureInput] = []
    if os.path.isdir(source):
        for dirpath, dirnames, filenames in os.walk(source):
            dirnames.sort()
            for name in sorted(filenames):
                if name.lower().endswith(VIDEO_EXTENSIONS) and not name.startswith("."):
                    full = os.path.join(dirpath, name)
                    items.append(FeatureInput(full, Path(os.path.relpath(full, source)).as_posix()))
        if not items:
            raise ValueError(f"FEATURES.INPUT {source}: no video files ({', '.join(VIDEO_EXTENSIONS)}) found")
        return items
    if not os.path.isfile(source):
        raise FileNotFoundError(f"FEATURES.INPUT {source}: no such file or folder")
    seen = set()
    with open(source, encoding="utf-8") as f:
        for lineno, line in enumerate(f, start=1):
            line = line.strip()
            if not line:
                continue
            fields = line.split(separator) if separator else [line]
            if len(fields) > 2:
                raise ValueError(f"{source}:{lineno}: expected 'path' or 'path{separator}label', got {line!r} "
                                 f"(DATA.PATH_LABEL_SEPARATOR={separator!r})")
            listed = fields[0].strip()
            # Never '..' in a key: "../../x.mp4" would write OUTPUT_DIR/features/../../x.npy.
            rel = "/".join("__" if p == ".." else p for p in Path(listed).parts if p not in ("/", "."))
            if rel in seen:
                continue
            seen.add(rel)
            items.append(FeatureInput(os.path.join(path_prefix, listed), rel))
    if not items:
        raise ValueError(f"{source}: no videos listed")
    return items


def feature_file(features_dir: str | os.PathLike, rel: str, suffix: str = ".npy") -> Path:
    """``features_dir/<rel without extension><suffix>``."""
    stem = rel[: -len(Path(rel).suffix)] if Path(rel).suffix else rel
    return Path(features_dir) / f"{stem}{suffix}"


def sliding_windows(video_frames: int, *, window: int, stride: int, num_frames: int) -> tuple[np.ndarray, np.ndarray]:
    """Frame indices and bounds of the sliding windows over a video.

    Args:
        video_frames: frames in the video (L).
        window: window length in frames (W).
        stride: frames between window starts (>= 1).
        num_frames: frames sampled per window (uniform segment midpoints).

    Returns:
        ``indices (K, num_frames)`` and ``bounds (K, 2)`` as ``[start, end)`` frames, with
        ``K = 1 + (L - W) // stride`` when ``L >= W`` and one window over the whole video otherwise.
    """
    if video_frames < 1:
        raise ValueError(f"video has {video_frames} frames")
    if window < 1 or stride < 1:
        raise ValueError(f"FEATURES.WINDOW and the stride must be >= 1 frame, got {window} and {stride}")
    if video_frames < window:
        starts, length = np.array([0]), video_frames
    else:
        starts, length = np.arange(0, video_frames - window + 1, stride), window
    offsets = uniform_indices(length, num_frames, train=False)
    indices = starts[:, None] + offsets[None, :]
    bounds = np.stack([starts, starts + length], axis=1)
    return indices.astype(np.int64), bounds.astype(np.int64)


def stride_in_frames(stride: float, unit: str, fps: float) -> int:
    """FEATURES.STRIDE in frames: as given ("frames") or ``round(stride * fps)`` ("seconds")."""
    if unit == "frames":
        frames = int(round(stride))
    elif unit == "seconds":
        if not fps or fps <= 0:
            raise ValueError("FEATURES.STRIDE_UNIT 'seconds' needs the video's frame rate, which is unknown")
        frames = int(round(stride * fps))
    else:
        raise ValueError(f"FEATURES.STRIDE_UNIT must be 'frames' or 'seconds', got {unit!r}")
    return max(1, frames)


def sha256_file(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


# ---------------------------------------------------------------------------------------------- #
# Sliding-window clips
# ---------------------------------------------------------------------------------------------- #
class SlidingWindowClips(IterableDataset):
    """Yields the sliding-window views of each video in chunks of at most ``chunk_windows`` windows.

    The video is opened once and each chunk decodes only the frames its windows use, so memory stays
    bounded for long videos. Items: ``{"index", "path", "video": (k*V, C, T, H, W), "bounds": (k, 2),
    "fps", "last": bool}`` (views window-major), or ``{"index", "path", "error"}`` when the video
    cannot be decoded (possibly after some chunks; the consumer drops those). DataLoader workers take
    every ``num_workers``-th video.

    Args:
        records: videos (``index`` refers to this list).
        window: FEATURES.WINDOW.
        stride: FEATURES.STRIDE.
        stride_unit: "frames" or "seconds".
        num_frames: DATA.NUM_FRAMES sampled per window.
        chunk_windows: windows per item.
        test_scale, test_crop_size, num_crops, mean, std: the test views (see ``eval_views``).
        decoder, decode_threads, decode_timeout: as DATA.DECODER / DECODE_THREADS / DECODE_TIMEOUT
            (the timeout bounds each chunk's decode).
    """

    def __init__(self, records: Sequence[VideoRecord], *, window: int, stride: float, stride_unit: str,
                 num_frames: int, chunk_windows: int = 8, test_scale: int = 256, test_crop_size: int = 224,
                 num_crops: int = 3, mean: Sequence[float] = (0.485, 0.456, 0.406),
                 std: Sequence[float] = (0.229, 0.224, 0.225), decoder: str = "decord", decode_threads: int = 1,
                 decode_timeout: float = 60.0):
        self.records = list(records)
        self.window, self.stride, self.stride_unit = int(window), float(stride), stride_unit
        self.num_frames, self.chunk_windows = int(num_frames), max(1, int(chunk_windows))
        self.test_scale, self.test_crop_size, self.num_crops = test_scale, test_crop_size, num_crops
        self.mean, self.std = tuple(mean), tuple(std)
        self.decoder, self.decode_threads, self.decode_timeout = decoder, decode_threads, decode_timeout

    def __iter__(self) -> Iterator[dict]:
        info = get_worker_info()
        start, step = (info.id, info.num_workers) if info is not None else (0, 1)
        for index in range(start, len(self.records), step):
            yield from self._video_items(index)

    def _video_items(self, index: int) -> Iterator[dict]:
        path = self.records[index].path
        try:
            with time_limit(self.decode_timeout, path):
                reader = open_video(path, self.decoder, num_threads=self.decode_threads)
        except DecodeError as e:
            yield {"index": index, "path": path, "error": e.reason}
            return
        except Exception as e:  # noqa: BLE001  (a bad file must never stop the run)
            yield {"index": index, "path": path, "error": f"{type(e).__name__}: {e}"}
            return
        try:
            fps = float(reader.fps or 0.0)
            stride = stride_in_frames(self.stride, self.stride_unit, fps)
            indices, bounds = sliding_windows(reader.num_frames, window=self.window, stride=stride,
                                              num_frames=self.num_frames)
            t = self.num_frames
            for c in range(0, len(indices), self.chunk_windows):
                idx = indices[c:c + self.chunk_windows]
                with time_limit(self.decode_timeout, path):
                    try:
                        raw = reader.get_frames(idx.reshape(-1))
                    except DecodeTimeout:
                        raise
                    except DecodeError:
                        if reader.backend == "pyav":
                            raise
                        # decord opens some files it cannot decode (e.g. odd sizes): PyAV, as read_frames does.
                        reader.close()
                        reader = PyAVReader(path, num_threads=self.decode_threads)
                        raw = reader.get_frames(idx.reshape(-1))
                    frames = torch.from_numpy(raw)  # k*T, H, W, 3
                views = [eval_views(frames[k * t:(k + 1) * t], scale=self.test_scale, crop_size=self.test_crop_size,
                                    num_crops=self.num_crops, mean=self.mean, std=self.std)
                         for k in range(len(idx))]
                yield {"index": index, "path": path, "video": torch.cat(views), "bounds": bounds[c:c + len(idx)],
                       "fps": fps, "last": c + self.chunk_windows >= len(indices)}
        except DecodeError as e:
            yield {"index": index, "path": path, "error": e.reason}
        except Exception as e:  # noqa: BLE001
            yield {"index": index, "path": path, "error": f"{type(e).__name__}: {e}"}
        finally:
            reader.close()


# ---------------------------------------------------------------------------------------------- #
# The model side
# ---------------------------------------------------------------------------------------------- #
@torch.no_grad()
def clip_features(model: nn.Module, clips: torch.Tensor, *, stage_features: bool = False,
                  max_batch: int = 0) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """Pooled pre-logit features of clips, in batches of ``max_batch`` (0: all at once).

    Args:
        model: a video model with ``forward_features`` (``detection=True`` for the stage maps).
        clips: (N, C, T, H, W) on the model's device.
        stage_features: also return each stage's local-token map averaged over time and space.

    Returns:
        ``(N, D)`` float32 features and a list of ``(N, C_s)`` float32 stage features (empty unless asked).
    """
    feats, stages = [], []
    step = max_batch if max_batch > 0 else len(clips)
    for i in range(0, len(clips), step):
        x = clips[i:i + step]
        feats.append(model.forward_features(x).float())
        if stage_features:
            maps = model.forward_features(x, detection=True)  # per stage (B, C_s, T, H_s, W_s)
            stages.append([m.float().flatten(2).mean(-1) for m in maps])
    stage_out = [torch.cat([s[k] for s in stages]) for k in range(len(stages[0]))] if stages else []
    return torch.cat(feats), stage_out


def resolve_weights(cfg) -> tuple[str, str]:
    """Which file the weights come from and how: ``(path, "checkpoint" | "pretrained")``.

    The test's rule first (TEST.CHECKPOINT_FILE_PATH, else the newest checkpoint in
    OUTPUT_DIR/checkpoints), else MODEL.PRETRAINED (an image checkpoint, inflated).

    Raises:
        NoCheckpointError: none of them exists.
    """
    from regionvit_video.engine.tester import NoCheckpointError, resolve_test_checkpoint

    try:
        return str(resolve_test_checkpoint(cfg)), "checkpoint"
    except NoCheckpointError as e:
        if cfg.TEST.CHECKPOINT_FILE_PATH or not cfg.MODEL.PRETRAINED:
            raise NoCheckpointError(f"{e}; or set MODEL.PRETRAINED to use image weights") from None
    if not os.path.isfile(cfg.MODEL.PRETRAINED):
        raise NoCheckpointError(f"MODEL.PRETRAINED: {cfg.MODEL.PRETRAINED} does not exist")
    return str(cfg.MODEL.PRETRAINED), "pretrained"


def load_model_for_inference(cfg, device: torch.device) -> tuple[nn.Module, str]:
    """The model of ``cfg`` (``engine.build.build_model``) with the weights of :func:`resolve_weights`,
    in eval mode on ``device``; returns it and the weights file."""
    from regionvit_video.engine.build import build_model
    from regionvit_video.engine.checkpoint import load_checkpoint, load_model_state
    from regionvit_video.models.checkpoint import load_pretrained

    model = build_model(cfg)
    path, kind = resolve_weights(cfg)
    if kind == "checkpoint":
        load_model_state(model, load_checkpoint(path)["model_state"], source=path)
    else:
        load_pretrained(model, path, temporal_init=cfg.MODEL.TEMPORAL_INIT)
    logger.info("weights: %s (%s)", path, kind)
    return model.to(device).eval(), path


# ---------------------------------------------------------------------------------------------- #
# The run
# ---------------------------------------------------------------------------------------------- #
def _settings(cfg, checkpoint_sha: str) -> dict[str, Any]:
    f, d = cfg.FEATURES, cfg.DATA
    s = {"mode": f.MODE, "keep_views": bool(f.KEEP_VIEWS), "stage_features": bool(f.STAGE_FEATURES),
         "dtype": f.DTYPE, "arch": cfg.MODEL.ARCH, "checkpoint_sha256": checkpoint_sha,
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
    manifest = features_dir / "extraction.json"
    old = None
    if manifest.is_file():
        try:
            old = json.loads(manifest.read_text())
        except (OSError, ValueError):
            old = {}
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
    atomic_write(manifest, lambda tmp: Path(tmp).write_text(text))


def _save_npy(path: Path, array: np.ndarray) -> None:
    def write(tmp: str) -> None:
        with open(tmp, "wb") as f:
            np.save(f, array)

    atomic_write(path, write)


def _save_windows(path: Path, bounds: np.ndarray, fps: float) -> None:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["window", "start_frame", "end_frame", "start_sec", "end_sec"])
    for k, (s, e) in enumerate(bounds.tolist()):
        w.writerow([k, s, e, f"{s / fps:.6f}" if fps else "", f"{e / fps:.6f}" if fps else ""])
    atomic_write(path, lambda tmp: Path(tmp).write_text(buf.getvalue()))


def _write_csv(path: Path, header: Sequence[str], rows: list[Sequence[Any]]) -> None:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(header)
    w.writerows(rows)
    atomic_write(path, lambda tmp: Path(tmp).write_text(buf.getvalue()))


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


def _autocast(cfg, device: torch.device):
    """Autocast on CUDA: TRAIN.MIXED_PRECISION if set, else bf16 where supported, else fp16."""
    from regionvit_video.engine.build import autocast

    precision = cfg.TRAIN.MIXED_PRECISION
    if precision == "none" and device.type == "cuda":
        precision = "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    return autocast(device, precision)


def run_feature_extraction(cfg) -> dict[str, Any]:
    """Extract features for FEATURES.INPUT into OUTPUT_DIR/features (see the module docstring).

    Returns:
        ``{"features_dir", "index_csv", "failures_csv", "num_videos", "num_extracted", "num_skipped",
        "num_failed", "seconds", "videos_per_second", "checkpoint", "checkpoint_sha256"}`` (counts of
        this process's run; ``num_failed`` and the files cover all processes).
    """
    from regionvit_video.engine import distributed as du

    f = cfg.FEATURES
    if f.MODE not in ("video", "clips"):
        raise ValueError(f"FEATURES.MODE must be 'video' or 'clips', got {f.MODE!r}")
    if f.DTYPE not in ("float32", "float16"):
        raise ValueError(f"FEATURES.DTYPE must be 'float32' or 'float16', got {f.DTYPE!r}")
    if f.MODE == "clips":
        stride_in_frames(f.STRIDE, f.STRIDE_UNIT, 30.0)  # validates the unit
        if f.WINDOW < 1:
            raise ValueError(f"FEATURES.WINDOW must be >= 1, got {f.WINDOW}")
    if f.BATCH_SIZE < 1:
        raise ValueError(f"FEATURES.BATCH_SIZE must be >= 1, got {f.BATCH_SIZE}")
    t0 = time.perf_counter()
    rank, world = du.get_rank(), du.get_world_size()
    local_rank = int(os.environ.get("LOCAL_RANK", 0))
    device = du.resolve_device(cfg.DEVICE, local_rank)

    inputs = list_feature_inputs(f.INPUT, path_prefix=cfg.DATA.PATH_PREFIX, separator=cfg.DATA.PATH_LABEL_SEPARATOR)
    model, ckpt_path = load_model_for_inference(cfg, device)
    ckpt_sha = sha256_file(ckpt_path)
    features_dir = Path(cfg.OUTPUT_DIR) / FEATURES_SUBDIR
    settings = _settings(cfg, ckpt_sha)
    if rank == 0:
        features_dir.mkdir(parents=True, exist_ok=True)
        _prepare_dir(features_dir, settings)
    du.barrier()

    complete = [feature_file(features_dir, x.rel).is_file() for x in inputs]
    pending = [i for i, done in enumerate(complete) if not done][rank::world]
    num_skipped = sum(complete)
    crops = cfg.TEST.NUM_SPATIAL_CROPS
    views = crops * (cfg.TEST.NUM_ENSEMBLE_VIEWS if f.MODE == "video" else 1)
    writer = _Writer(features_dir, mode=f.MODE, views=views, keep_views=bool(f.KEEP_VIEWS),
                     dtype=np.dtype(f.DTYPE))
    records = [VideoRecord(x.path, -1) for x in inputs]
    d = cfg.DATA
    workers = int(cfg.DATA_LOADER.NUM_WORKERS)
    max_clips = f.BATCH_SIZE * views
    failures: list[tuple[str, str]] = []
    done = 0
    if rank == 0:
        logger.info("features: %d videos, %d complete, %d to extract (%d processes) -> %s", len(inputs),
                    num_skipped, len(pending) * world, world, features_dir)
    bar = tqdm(total=len(pending), desc=f"features ({f.MODE})", unit="video", disable=rank != 0 or not pending)

    def finish(index: int, feats: torch.Tensor, stages: list[torch.Tensor], bounds=None, fps=0.0) -> None:
        nonlocal done
        writer.write(inputs[index].rel, feats, stages, bounds, fps)
        done += 1
        bar.update()

    try:
        with torch.no_grad(), _autocast(cfg, device):
            if pending and f.MODE == "video":
                dataset = VideoDataset(
                    records, mode="test", num_frames=d.NUM_FRAMES, sampling=d.SAMPLING, sampling_rate=d.SAMPLING_RATE,
                    target_fps=d.TARGET_FPS, test_scale=d.TEST_SCALE, test_crop_size=d.TEST_CROP_SIZE,
                    num_ensemble_views=cfg.TEST.NUM_ENSEMBLE_VIEWS, num_spatial_crops=crops, mean=d.MEAN,
                    std=d.STD, decoder=d.DECODER, decode_threads=d.DECODE_THREADS, decode_timeout=d.DECODE_TIMEOUT)
                loader = DataLoader(Subset(dataset, pending), batch_size=f.BATCH_SIZE, num_workers=workers,
                                    collate_fn=collate_videos, pin_memory=device.type == "cuda",
                                    worker_init_fn=loading_worker_init(cfg, workers))
                for batch in loader:
                    failures += [(x["path"], x["error"]) for x in batch["failed"]]
                    bar.update(len(batch["failed"]))
                    if batch["video"] is None:
                        continue
                    clips = batch["video"].flatten(0, 1).to(device, non_blocking=True)  # B*V, C, T, H, W
                    feats, stages = clip_features(model, clips, stage_features=f.STAGE_FEATURES, max_batch=max_clips)
                    for j, index in enumerate(batch["index"].tolist()):
                        sl = slice(j * views, (j + 1) * views)
                        finish(index, feats[sl], [s[sl] for s in stages])
            elif pending:
                dataset = SlidingWindowClips(
                    [records[i] for i in pending], window=f.WINDOW, stride=f.STRIDE, stride_unit=f.STRIDE_UNIT,
                    num_frames=d.NUM_FRAMES, chunk_windows=f.BATCH_SIZE, test_scale=d.TEST_SCALE,
                    test_crop_size=d.TEST_CROP_SIZE, num_crops=crops, mean=d.MEAN, std=d.STD, decoder=d.DECODER,
                    decode_threads=d.DECODE_THREADS, decode_timeout=d.DECODE_TIMEOUT)
                n = min(workers, len(pending))
                loader = DataLoader(dataset, batch_size=None, num_workers=n, pin_memory=device.type == "cuda",
                                    worker_init_fn=loading_worker_init(cfg, n))
                partial: dict[int, dict] = {}  # per video being assembled from its chunks
                for item in loader:
                    index = pending[item["index"]]
                    if "error" in item:
                        partial.pop(index, None)
                        failures.append((item["path"], item["error"]))
                        bar.update()
                        continue
                    clips = item["video"].to(device, non_blocking=True)
                    feats, stages = clip_features(model, clips, stage_features=f.STAGE_FEATURES, max_batch=max_clips)
                    acc = partial.setdefault(index, {"feats": [], "stages": [], "bounds": []})
                    acc["feats"].append(feats.cpu())
                    acc["stages"].append([s.cpu() for s in stages])
                    acc["bounds"].append(item["bounds"])
                    if item["last"]:
                        acc = partial.pop(index)
                        st = [torch.cat([s[k] for s in acc["stages"]]) for k in range(len(acc["stages"][0]))]
                        finish(index, torch.cat(acc["feats"]), st, np.concatenate(acc["bounds"]), item["fps"])
    except RuntimeError as e:  # a DataLoader worker ended by the decode hard bound: name its video
        raise_hung_decode(e)  # features written so far stay (a rerun skips them)
        raise
    bar.close()

    # Index and failures over all processes (rank 0 writes them).
    all_failures = [x for part in du.all_gather_object(failures) for x in part]
    if rank == 0:
        rows = []
        for x in inputs:
            path = feature_file(features_dir, x.rel)
            if not path.is_file():
                continue
            shape = np.load(path, mmap_mode="r").shape
            windows = shape[0] if f.MODE == "clips" else 1
            rows.append([path.relative_to(features_dir).as_posix(), x.path, "x".join(map(str, shape)), f.MODE,
                         views, windows, f.DTYPE, ckpt_sha])
        _write_csv(features_dir / "index.csv", INDEX_COLUMNS, rows)
        _write_csv(features_dir / "failures.csv", ("video", "reason"), sorted(all_failures))
        for path, reason in sorted(all_failures):
            logger.warning("features: failed %s: %s", path, reason)
    du.barrier()
    seconds = time.perf_counter() - t0
    rate = done / seconds if seconds > 0 else math.nan
    if rank == 0:
        logger.info("features: %d extracted, %d already complete, %d failed in %.1f s (%.2f videos/s) -> %s",
                    done, num_skipped, len(all_failures), seconds, rate, features_dir)
    return {"features_dir": str(features_dir), "index_csv": str(features_dir / "index.csv"),
            "failures_csv": str(features_dir / "failures.csv"), "num_videos": len(inputs), "num_extracted": done,
            "num_skipped": num_skipped, "num_failed": len(all_failures), "seconds": seconds,
            "videos_per_second": rate, "checkpoint": ckpt_path, "checkpoint_sha256": ckpt_sha}
