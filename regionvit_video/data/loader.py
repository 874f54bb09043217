"""Dataset and DataLoader builders, the batch format, and the resumable sampler.

Contract with the engine:

- ``build_dataset(cfg, split)`` with split "train", "val" (per-epoch single view: middle frames,
  centre crop) or "test" (all views, on TEST.SPLIT's list). Sample format: see
  :mod:`regionvit_video.data.datasets`.
- ``build_eval_dataset(cfg, split, videos=None)``: the "val" / "test" dataset of the split's list, or of
  any list of videos (features, prediction); ``build_window_dataset(cfg, videos)``: their sliding-window
  views (:mod:`regionvit_video.data.sliding_window`); ``build_timeline_dataset(cfg, video)`` and
  ``build_live_windows(cfg, source)``: the timeline's windows over a file or a live source
  (:mod:`regionvit_video.data.long_video`, :mod:`regionvit_video.data.stream`). Every inference job reads its
  clips through these.
- ``build_loader(cfg, split, ...)`` returns a ``DataLoader`` whose ``loader.sampler`` is always a
  :class:`ResumableSampler` (a ``DistributedSampler``, also in single-process runs):

  * every epoch, call ``loader.sampler.set_epoch(epoch)`` before iterating (the order of a
    shuffled epoch and each clip's augmentation are functions of ``(RNG_SEED, epoch, index)``);
  * **resuming mid-epoch**: to restart epoch ``e`` at iteration ``i`` (i.e. after ``i`` batches
    were consumed), call ``loader.sampler.set_epoch(e)`` then ``loader.sampler.set_start_iter(i)``
    (or pass ``start_iter=i`` to ``build_loader``). The next iteration over the loader skips the
    first ``i * batch_size`` indices of this process's share of the epoch and yields exactly the
    batches ``i, i+1, ...`` the uninterrupted run would have produced, with identical contents.
    ``start_iter`` applies to one pass only (the next ``iter(loader)``) and is then reset to 0.
    ``len(loader)`` stays the full epoch length, so iterate with
    ``for it, batch in enumerate(loader, start=i)``.
  * Distributed (torch.distributed initialised, or ``distributed=True``): each process gets
    ``1/world_size`` of the list. Training shuffles (all processes share the permutation, seeded
    by RNG_SEED + epoch). val/test are not shuffled and are **padded** by repeating the first
    items so every process runs the same number of batches (no collective can hang); the engine
    removes the duplicates after gathering by keeping one prediction per ``batch["index"]``
    (every sample carries its position in the list). Nothing is lost: all items appear at least
    once.

- ``build_batch_transform(cfg)``: with ``DATA_LOADER.NORMALIZE_ON_DEVICE`` (the default) training
  clips leave the loading processes as augmented uint8; apply this to each training batch on its
  device (normalisation, random erasing) before mixup and the model. None otherwise.
- ``collate_videos(samples)``: see its docstring.
- ``raise_hung_decode(error, bad_videos_path)``: call it on any ``RuntimeError`` caught around the
  code that iterates a loader (torch raises a dead worker's error anywhere in the main thread,
  from its SIGCHLD handler): a worker ended by the decode hard bound becomes a
  :class:`~regionvit_video.data.decoder.DecodeTimeout` naming the video.
"""
from __future__ import annotations

import functools
import gc
import logging
import os
import random
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np
import torch
import torch.distributed as dist
from torch.utils.data import Dataset, DistributedSampler

from regionvit_video.data.datasets import (DATASETS, Split, VideoDataset, VideoFile, VideoRecord, append_bad_video,
                                           load_class_names)
from regionvit_video.data.decoder import hard_bound_timeout
from regionvit_video.data.sliding_window import SlidingWindowClips
from regionvit_video.data.stream import LiveWindows, realtime_for
from regionvit_video.data.transforms import BatchNormalize, TrainTransform
from regionvit_video.utils.device import device_type
from regionvit_video.utils.malloc import retain_freed_memory
from regionvit_video.utils.signals import ignore_preemption_signals

logger = logging.getLogger(__name__)


# ---------------------------------------------------------------------------------------------- #
# Datasets
# ---------------------------------------------------------------------------------------------- #
def dataset_name(cfg, split: Split) -> str:
    """TEST.DATASET for "test", else TRAIN.DATASET (lower case)."""
    return (cfg.TEST.DATASET if split == "test" else cfg.TRAIN.DATASET).lower()


def _layout(cfg, split: Split):
    if split not in ("train", "val", "test"):
        raise ValueError(f"split must be 'train', 'val' or 'test', got {split!r}")
    name = dataset_name(cfg, split)
    if name not in DATASETS:
        raise ValueError(f"unknown dataset {name!r} (TRAIN.DATASET / TEST.DATASET): use one of {sorted(DATASETS)}")
    return DATASETS[name]


def resolve_class_names(cfg, split: Split = "test", *, look_in_data_dir: bool = False) -> list[str]:
    """Names of the model's classes: DATA.CLASS_NAMES, else the dataset's own (:class:`DatasetLayout`:
    Kinetics-400's for a 400-class Kinetics model, SSv2's labels json), else ``class_<i>``.

    ``look_in_data_dir``: also the ``classes.txt`` in DATA.PATH_TO_DATA_DIR (what ``prepare_kinetics.py``
    writes next to the lists), before the dataset's own names: for a prediction, which has no dataset.
    """
    n = cfg.MODEL.NUM_CLASSES
    if cfg.DATA.CLASS_NAMES:
        return load_class_names(cfg.DATA.CLASS_NAMES, n)
    if look_in_data_dir and cfg.DATA.PATH_TO_DATA_DIR:
        path = Path(cfg.DATA.PATH_TO_DATA_DIR) / "classes.txt"
        if path.is_file():
            names = load_class_names(path)
            if len(names) == n:
                return names
            logger.warning("%s has %d names but MODEL.NUM_CLASSES is %d: not used", path, len(names), n)
    return _layout(cfg, split).class_names(cfg.DATA.PATH_TO_DATA_DIR, n)


def _read_split(cfg, split: Split) -> list[VideoRecord]:
    d = cfg.DATA
    return _layout(cfg, split).read(d.PATH_TO_DATA_DIR, split, cfg.TEST.SPLIT, num_classes=cfg.MODEL.NUM_CLASSES,
                                    path_prefix=d.PATH_PREFIX, separator=d.PATH_LABEL_SEPARATOR)


def _clip_kwargs(cfg) -> dict:
    """The VideoDataset arguments every split shares: sampling, test views, normalisation, decoding, failures."""
    d = cfg.DATA
    return dict(num_frames=d.NUM_FRAMES, sampling=d.SAMPLING, sampling_rate=d.SAMPLING_RATE, target_fps=d.TARGET_FPS,
                test_scale=d.TEST_SCALE, test_crop_size=d.TEST_CROP_SIZE,
                num_ensemble_views=cfg.TEST.NUM_ENSEMBLE_VIEWS, num_spatial_crops=cfg.TEST.NUM_SPATIAL_CROPS,
                mean=d.MEAN, std=d.STD, decoder=d.DECODER, decode_threads=d.DECODE_THREADS,
                decode_timeout=d.DECODE_TIMEOUT, num_retries=d.NUM_RETRIES, seed=cfg.RNG_SEED)


def _records(videos: Sequence[str | os.PathLike | VideoFile | VideoRecord]) -> list[VideoRecord]:
    """Records of paths / :class:`VideoFile` (label -1: unknown) or records as they are."""
    return [v if isinstance(v, VideoRecord) else VideoRecord(v.path if isinstance(v, VideoFile) else str(v), -1)
            for v in videos]


def build_dataset(cfg, split: Split, *, bad_videos_path: str | None = None) -> VideoDataset:
    """The dataset of ``split`` described by ``cfg`` (TRAIN.DATASET for train/val, TEST.DATASET for test).

    Kinetics layout: ``{PATH_TO_DATA_DIR}/{train,val}.csv``; test reads ``{TEST.SPLIT}.csv``.
    SSv2: the train json for "train", the validation json for "val", and for "test" the json
    named by TEST.SPLIT ("test"/"val"/"validation": validation json, whose labels are public;
    "train": train json). Which files each split reads: :data:`regionvit_video.data.datasets.DATASETS`.
    Lists are fully checked here (errors name file and line).
    """
    if split != "train":
        return build_eval_dataset(cfg, split, bad_videos_path=bad_videos_path)
    layout, d = _layout(cfg, split), cfg.DATA
    records = _read_split(cfg, split)
    random_flip = bool(d.RANDOM_FLIP)
    if random_flip and not layout.random_flip:
        logger.warning("%s: horizontal flip disabled for training (DATA.RANDOM_FLIP=True ignored: left/right is part "
                       "of the labels)", layout.name)
        random_flip = False
    on_device = cfg.DATA_LOADER.NORMALIZE_ON_DEVICE  # then build_batch_transform(cfg) finishes the clip
    train_transform = TrainTransform(
        jitter_scales=d.TRAIN_JITTER_SCALES, crop_size=d.TRAIN_CROP_SIZE, random_flip=random_flip,
        rand_augment=cfg.AUG.RAND_AUGMENT, ra_magnitude=cfg.AUG.RA_MAGNITUDE, ra_num_layers=cfg.AUG.RA_NUM_LAYERS,
        re_prob=0.0 if on_device else cfg.AUG.RE_PROB, mean=d.MEAN, std=d.STD, normalize=not on_device)
    dataset = VideoDataset(records, mode="train", train_transform=train_transform, bad_videos_path=bad_videos_path,
                           class_names=resolve_class_names(cfg, split), **_clip_kwargs(cfg))
    logger.info("%s train: %d videos", layout.name, len(dataset))
    return dataset


def build_eval_dataset(cfg, split: Split = "test", *,
                       videos: Sequence[str | os.PathLike | VideoFile | VideoRecord] | None = None,
                       bad_videos_path: str | None = None) -> VideoDataset:
    """The deterministic views of videos: "val" (one centre view of the middle frames) or "test" (the
    TEST.NUM_ENSEMBLE_VIEWS x TEST.NUM_SPATIAL_CROPS views), of the split's list or of ``videos``.

    Args:
        cfg: the config.
        split: "val" or "test".
        videos: paths, :class:`~regionvit_video.data.datasets.VideoFile` s (label -1) or records; None:
            the split's list (see :func:`build_dataset`).
        bad_videos_path: file that collects ``path\treason`` for every video that failed.
    """
    if split not in ("val", "test"):
        raise ValueError(f"an evaluation split is 'val' or 'test', got {split!r}")
    records = _read_split(cfg, split) if videos is None else _records(videos)
    dataset = VideoDataset(records, mode=split, bad_videos_path=bad_videos_path,
                           class_names=resolve_class_names(cfg, split, look_in_data_dir=videos is not None),
                           **_clip_kwargs(cfg))
    if videos is None:
        logger.info("%s %s: %d videos", dataset_name(cfg, split), split, len(dataset))
    return dataset


def build_window_dataset(cfg, videos: Sequence[str | os.PathLike | VideoFile | VideoRecord], *,
                         chunk_windows: int) -> SlidingWindowClips:
    """The sliding windows of FEATURES.WINDOW frames every FEATURES.STRIDE (FEATURES.STRIDE_UNIT) over each of
    ``videos``, with the test's crops, in items of at most ``chunk_windows`` windows."""
    d, f = cfg.DATA, cfg.FEATURES
    return SlidingWindowClips(_records(videos), window=f.WINDOW, stride=f.STRIDE, stride_unit=f.STRIDE_UNIT,
                              num_frames=d.NUM_FRAMES, chunk_windows=chunk_windows, test_scale=d.TEST_SCALE,
                              test_crop_size=d.TEST_CROP_SIZE, num_crops=cfg.TEST.NUM_SPATIAL_CROPS, mean=d.MEAN,
                              std=d.STD, decoder=d.DECODER, decode_threads=d.DECODE_THREADS,
                              decode_timeout=d.DECODE_TIMEOUT)


def build_timeline_dataset(cfg, video: str | os.PathLike) -> SlidingWindowClips:
    """The timeline's windows over one video file: TIMELINE.WINDOW_SECONDS every TIMELINE.STRIDE_SECONDS, each
    sampled as the test samples a whole video (DATA.SAMPLING, TEST.NUM_ENSEMBLE_VIEWS clips of DATA.NUM_FRAMES)
    with the test crops, in items of TIMELINE.BATCH_SIZE windows."""
    d, t = cfg.DATA, cfg.TIMELINE
    return SlidingWindowClips(_records([video]), window=t.WINDOW_SECONDS, window_unit="seconds",
                              stride=t.STRIDE_SECONDS, stride_unit="seconds", num_frames=d.NUM_FRAMES,
                              num_clips=cfg.TEST.NUM_ENSEMBLE_VIEWS, sampling=d.SAMPLING, sampling_rate=d.SAMPLING_RATE,
                              target_fps=d.TARGET_FPS, chunk_windows=t.BATCH_SIZE, test_scale=d.TEST_SCALE,
                              test_crop_size=d.TEST_CROP_SIZE, num_crops=cfg.TEST.NUM_SPATIAL_CROPS, mean=d.MEAN,
                              std=d.STD, decoder=t.DECODER, decode_threads=d.DECODE_THREADS,
                              decode_timeout=d.DECODE_TIMEOUT, window_key="TIMELINE.WINDOW_SECONDS",
                              stride_key="TIMELINE.STRIDE_SECONDS")


def build_live_windows(cfg, source: str, *, stdin_fd: int | None = None) -> LiveWindows:
    """The timeline's windows over a live source (``-``, a camera, a URL), with the same window geometry and
    sampling as :func:`build_timeline_dataset`; TIMELINE.STALL_SECONDS and TIMELINE.LIVE_MODE."""
    d, t = cfg.DATA, cfg.TIMELINE
    return LiveWindows(source, window_seconds=t.WINDOW_SECONDS, stride_seconds=t.STRIDE_SECONDS,
                       num_frames=d.NUM_FRAMES, num_clips=cfg.TEST.NUM_ENSEMBLE_VIEWS, sampling=d.SAMPLING,
                       sampling_rate=d.SAMPLING_RATE, target_fps=d.TARGET_FPS, stall_seconds=t.STALL_SECONDS,
                       realtime=realtime_for(source, t.LIVE_MODE), stdin_fd=stdin_fd)


def build_batch_transform(cfg) -> BatchNormalize | None:
    """What the engine applies to a training batch on its device before the model (and mixup):
    normalisation and random erasing when ``DATA_LOADER.NORMALIZE_ON_DEVICE`` (the training
    dataset then yields uint8 clips), else None (the dataset's clips are already normalised)."""
    if not cfg.DATA_LOADER.NORMALIZE_ON_DEVICE:
        return None
    return BatchNormalize(mean=cfg.DATA.MEAN, std=cfg.DATA.STD, re_prob=cfg.AUG.RE_PROB)


# ---------------------------------------------------------------------------------------------- #
# Batches
# ---------------------------------------------------------------------------------------------- #
def collate_videos(samples: list[dict]) -> dict:
    """Stack samples into a batch.

    train / val batches: ``video`` (B, C, T, H, W) float (train: uint8 with
    ``DATA_LOADER.NORMALIZE_ON_DEVICE``, see :func:`build_batch_transform`), ``label`` (B,) long,
    ``index`` (B,) long, ``path`` list[str], ``num_failures`` (B,) long, ``failed`` (see below; always
    empty for train, whose failed videos are replaced).

    test batches: ``video`` (B, V, C, T, H, W) float over the videos that decoded.

    In every batch ``label``, ``index``, ``path`` (and ``num_failures``) describe the videos that
    decoded and ``failed`` = list of ``{"index", "path", "error"}`` the ones that did not (val and
    test never substitute). When none decoded, ``video`` is None and ``label`` / ``index`` are empty.
    """
    if not samples:
        raise ValueError("collate_videos got an empty list")
    is_test = not any("num_failures" in s for s in samples)
    good = [s for s in samples if s.get("video") is not None]
    batch = {
        "video": torch.stack([s["video"] for s in good]) if good else None,
        "label": torch.tensor([int(s["label"]) for s in good], dtype=torch.long),
        "index": torch.tensor([int(s["index"]) for s in good], dtype=torch.long),
        "path": [s["path"] for s in good],
    }
    batch["failed"] = [{"index": int(s["index"]), "path": s["path"], "error": s.get("error", "unknown error")}
                       for s in samples if s.get("video") is None]
    if not is_test:
        batch["num_failures"] = torch.tensor([int(s["num_failures"]) for s in good], dtype=torch.long)
    return batch


# ---------------------------------------------------------------------------------------------- #
# Sampler and loader
# ---------------------------------------------------------------------------------------------- #
class ResumableSampler(DistributedSampler):
    """A ``DistributedSampler`` that yields ``(index, epoch)`` keys and can skip the first batches.

    Works without an initialised process group (``num_replicas=1, rank=0``). See the module
    docstring for the resume protocol.

    Args:
        dataset: the dataset.
        batch_size: per-process batch size (the unit of ``set_start_iter``).
        num_replicas: number of processes.
        rank: this process.
        shuffle: shuffle every epoch (seeded by ``seed + epoch``).
        seed: shuffling seed (identical on every process).
        start_iter: batches to skip in the first pass.
    """

    def __init__(self, dataset: Dataset, *, batch_size: int, num_replicas: int = 1, rank: int = 0,
                 shuffle: bool = True, seed: int = 0, start_iter: int = 0):
        super().__init__(dataset, num_replicas=num_replicas, rank=rank, shuffle=shuffle, seed=seed, drop_last=False)
        self.batch_size = int(batch_size)
        self._start_iter = int(start_iter)

    def set_start_iter(self, start_iter: int) -> None:
        """Skip the first ``start_iter`` batches of the next pass (one pass only)."""
        if start_iter < 0:
            raise ValueError(f"start_iter must be >= 0, got {start_iter}")
        self._start_iter = int(start_iter)

    def __iter__(self) -> Iterator[tuple[int, int]]:
        indices = list(super().__iter__())
        skip, self._start_iter = self._start_iter * self.batch_size, 0
        epoch = self.epoch
        return iter([(i, epoch) for i in indices[skip:]])


def worker_init_fn(worker_id: int, retain_memory: bool = False) -> None:
    """Seed numpy and ``random`` in each worker from torch's per-worker seed, ignore the preemption signals
    (:mod:`regionvit_video.utils.signals`); with ``retain_memory``, keep the worker's freed memory for the
    next clips (:func:`~regionvit_video.utils.malloc.retain_freed_memory`).

    Items reseed from ``(seed, epoch, index)`` themselves; this covers any other use of the
    global generators in a worker.
    """
    seed = torch.initial_seed() % 2**32
    np.random.seed(seed)
    random.seed(seed)
    ignore_preemption_signals()  # the main process saves and stops; Slurm signals every process of the job
    if retain_memory:
        retain_freed_memory()


class DataLoader(torch.utils.data.DataLoader):
    """torch's DataLoader, with a garbage collection in this process before it forks its workers.

    A forked worker inherits this process's unreachable objects; if one holds a decoder with threads (an FFmpeg
    codec context of a PyAV container dropped without ``close()``), collecting it in the worker, where those
    threads do not exist, waits forever in ``pthread_cond_destroy``: the worker hangs before its first clip.
    Collected here, it is freed where its threads live.
    """

    def __iter__(self):
        if self.num_workers > 0 and (self._iterator is None or not self.persistent_workers):
            gc.collect()
        return super().__iter__()


def build_loader(cfg, split: Split, *, bad_videos_path: str | None = None, distributed: bool | None = None,
                 shuffle: bool | None = None, start_iter: int = 0) -> DataLoader:
    """DataLoader for ``split``: batch TRAIN.BATCH_SIZE (train) or TEST.BATCH_SIZE (val/test) per process.

    Args:
        cfg: the config.
        split: "train", "val" or "test".
        bad_videos_path: file that collects ``path\\treason`` for every video that failed.
        distributed: shard over processes; None: when torch.distributed is initialised.
        shuffle: None: shuffle only "train".
        start_iter: batches of the first pass to skip (mid-epoch resume; see module docstring).
    """
    dataset = build_dataset(cfg, split, bad_videos_path=bad_videos_path)
    train = split == "train"
    initialised = dist.is_available() and dist.is_initialized()
    if distributed is None:
        distributed = initialised
    if distributed and not initialised:
        raise RuntimeError("build_loader(distributed=True) needs an initialised torch.distributed process group")
    num_replicas, rank = (dist.get_world_size(), dist.get_rank()) if distributed else (1, 0)
    batch_size = cfg.TRAIN.BATCH_SIZE if train else cfg.TEST.BATCH_SIZE
    sampler = ResumableSampler(dataset, batch_size=batch_size, num_replicas=num_replicas, rank=rank,
                               shuffle=train if shuffle is None else shuffle, seed=cfg.RNG_SEED,
                               start_iter=start_iter)
    workers = int(cfg.DATA_LOADER.NUM_WORKERS)
    return DataLoader(
        dataset, batch_size=batch_size, sampler=sampler, num_workers=workers,
        # pinned only for a CUDA run: DEVICE cpu on a GPU machine must not touch CUDA
        pin_memory=bool(cfg.DATA_LOADER.PIN_MEMORY) and device_type(cfg.DEVICE) == "cuda",
        collate_fn=collate_videos, drop_last=train,
        worker_init_fn=loading_worker_init(cfg, workers),
        # Training workers persist across epochs (no restart cost per epoch): the epoch reaches
        # them inside each sampler key, not through dataset state.
        persistent_workers=train and workers > 0, prefetch_factor=2 if workers > 0 else None)


def loading_worker_init(cfg, num_workers: int):
    """The ``worker_init_fn`` for a DataLoader of clips with ``num_workers`` workers: seeds, and
    ``DATA_LOADER.RETAIN_FREED_MEMORY`` in each worker; with no workers the calling process loads
    the clips itself, so the setting is applied to it now."""
    retain = bool(cfg.DATA_LOADER.RETAIN_FREED_MEMORY)
    if retain and num_workers == 0:
        retain_freed_memory()
    return functools.partial(worker_init_fn, retain_memory=retain)


def raise_hung_decode(error: BaseException, bad_videos_path: str | os.PathLike | None = None) -> None:
    """Raise the :class:`~regionvit_video.data.decoder.DecodeTimeout` naming the video if ``error`` is
    torch's "DataLoader worker ... exited unexpectedly" for a worker the decode hard bound ended.

    The video is first appended to ``bad_videos_path`` (reason "hard decode timeout") so a resumed
    run can see it; the DecodeTimeout is chained to ``error``. Returns for any other error (the
    caller re-raises it). See :mod:`regionvit_video.data.decoder`.
    """
    timeout = hard_bound_timeout(error)
    if timeout is None:
        return
    if bad_videos_path is not None:
        try:
            append_bad_video(bad_videos_path, timeout.path, "hard decode timeout")
        except OSError as e:
            logger.error("cannot append to %s: %s", bad_videos_path, e)
    raise timeout from error
