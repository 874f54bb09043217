"""Long videos: windows in seconds or frames, the frames each window samples, their views, and a frame
source that decodes each frame once however much the windows overlap.

Where the windows are is :func:`regionvit_video.data.sampling.sliding_windows`'s rule (window ``k`` starts at
frame ``k * stride``; windows start while they fit), the one rule of feature extraction's ``clips`` mode and of
the timeline (``TIMELINE.*``), so their window times agree for the same settings. Inside a window the frames
are the test's: the window is sampled as if it were the whole video (``DATA.SAMPLING``,
``TEST.NUM_ENSEMBLE_VIEWS`` temporal clips, :func:`window_offsets`), and each clip gets the test crops
(:func:`window_views`), so a window covering a whole short video gives exactly that video's multi-view test.

:class:`WindowFrames` serves the frames of consecutive windows from one open reader: a frame sampled by
several overlapping windows is decoded once, frames are asked of the reader in increasing order (decord seeks
to the keyframe before a frame that is far ahead; the PyAV reader continues where it stopped and, with
``allow_seek``, seeks the same way), and only the frames later windows still use are kept, so memory is bounded
by the frames of one chunk of windows whatever the video's length.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch

from regionvit_video.data.decoder import VideoReader, decode_frames
from regionvit_video.data.sampling import clip_indices, sliding_windows, stride_in_frames
from regionvit_video.data.transforms import eval_views


def window_offsets(window: int, num_frames: int, *, num_clips: int = 1, sampling: str = "uniform",
                   sampling_rate: int = 8, fps: float = 30.0, target_fps: float = 30.0) -> np.ndarray:
    """The frames a window of ``window`` frames samples, relative to its first frame: the test's sampling of a
    video of that length (``num_clips`` temporal clips of ``num_frames`` frames, clip-major).

    Returns:
        ``(num_clips * num_frames,)`` int64 offsets in ``[0, window - 1]``.
    """
    return np.concatenate([
        clip_indices(sampling, window, num_frames, train=False, clip_idx=k, num_clips=num_clips,
                     sampling_rate=sampling_rate, fps=fps, target_fps=target_fps)
        for k in range(num_clips)]).astype(np.int64)


@dataclass(frozen=True)
class WindowPlan:
    """The windows over one video: ``bounds (K, 2)`` as ``[start, end)`` frames and ``indices (K, N*T)``,
    the frames each samples (absolute), at ``fps`` frames per second."""

    fps: float
    window: int  # frames
    stride: int  # frames
    bounds: np.ndarray
    indices: np.ndarray

    @property
    def num_windows(self) -> int:
        return len(self.bounds)

    def seconds(self) -> np.ndarray:
        """``(K, 2)`` window bounds in seconds (frame / fps; NaN when the frame rate is unknown)."""
        return self.bounds / self.fps if self.fps > 0 else np.full(self.bounds.shape, np.nan)

    def describe(self) -> dict:
        """The window geometry in frames and seconds (for the json files)."""
        sec = (lambda f: f / self.fps) if self.fps > 0 else (lambda f: None)
        return {"fps": self.fps, "window_frames": self.window, "stride_frames": self.stride,
                "window_seconds": sec(self.window), "stride_seconds": sec(self.stride),
                "windows_per_second": self.fps / self.stride if self.fps > 0 else None,
                "num_windows": self.num_windows}


def window_frames(window: float, unit: str, fps: float, *, key: str = "window") -> int:
    """A window length in frames: as given ("frames") or ``round(window * fps)`` ("seconds"); at least 1."""
    return stride_in_frames(window, unit, fps, key=key)


def plan_windows(video_frames: int, fps: float, *, window: float, stride: float, num_frames: int,
                 window_unit: str = "frames", stride_unit: str = "frames", num_clips: int = 1,
                 sampling: str = "uniform", sampling_rate: int = 8, target_fps: float = 30.0,
                 window_key: str = "FEATURES.WINDOW", stride_key: str = "FEATURES.STRIDE_UNIT") -> WindowPlan:
    """The sliding windows over a video of ``video_frames`` frames at ``fps``.

    Window and stride are converted to frames (``round(seconds * fps)``, at least 1); the windows are those of
    :func:`~regionvit_video.data.sampling.sliding_windows` (a video shorter than a window gives one window over
    all its frames) and each samples :func:`window_offsets` of its length.

    Raises:
        ValueError: a length in seconds with an unknown frame rate (the message names ``window_key`` /
            ``stride_key``).
    """
    w = window_frames(window, window_unit, fps, key=window_key)
    s = stride_in_frames(stride, stride_unit, fps, key=stride_key)
    _, bounds = sliding_windows(video_frames, window=w, stride=s, num_frames=num_frames)
    length = int(bounds[0, 1] - bounds[0, 0])  # w, or the whole video when it is shorter
    offsets = window_offsets(length, num_frames, num_clips=num_clips, sampling=sampling,
                             sampling_rate=sampling_rate, fps=fps, target_fps=target_fps)
    return WindowPlan(fps=float(fps), window=w, stride=s, bounds=bounds, indices=bounds[:, :1] + offsets[None, :])


def window_views(frames: torch.Tensor, *, num_frames: int, num_clips: int, scale: int, crop_size: int,
                 num_crops: int, mean: Sequence[float], std: Sequence[float]) -> torch.Tensor:
    """The test views of ``k`` windows: ``(k * N * T, H, W, 3)`` uint8 frames (window-major, then clip-major, as
    :func:`window_offsets` orders them) -> ``(k * N * crops, C, T, S, S)`` float, window-major, then clips,
    then crops (the order of :class:`~regionvit_video.data.datasets.VideoDataset`'s test views)."""
    t = num_frames
    return torch.cat([eval_views(frames[j * t:(j + 1) * t], scale=scale, crop_size=crop_size, num_crops=num_crops,
                                 mean=mean, std=std)
                      for j in range(len(frames) // t)])


@dataclass
class DecodeStats:
    """What a :class:`WindowFrames` did: frames the windows sampled (a frame sampled by two windows counts
    twice), frames decoded for them (each once), the difference (served without decoding again), the most
    frames kept at once (the memory bound)."""

    frames_sampled: int = 0
    frames_decoded: int = 0
    frames_shared: int = 0
    max_frames_kept: int = 0
    reader_frames_decoded: int | None = None  # frames the PyAV decoder produced, including skipped ones
    backend: str = ""

    def as_dict(self) -> dict:
        d = {"frames_sampled": self.frames_sampled, "frames_decoded": self.frames_decoded,
             "frames_shared": self.frames_shared, "max_frames_kept": self.max_frames_kept, "backend": self.backend}
        if self.reader_frames_decoded is not None:
            d["pyav_frames_through_decoder"] = self.reader_frames_decoded
        return d


class WindowFrames:
    """Frames of consecutive windows of one open video, each decoded once.

    Args:
        reader: an open reader (:func:`regionvit_video.data.decoder.open_video`); this object owns it from now on
            (it may become the PyAV reader after a decord failure: :func:`~regionvit_video.data.decoder.decode_frames`).
        num_threads: decoder threads (for a PyAV fallback).
    """

    def __init__(self, reader: VideoReader, *, num_threads: int = 1):
        self.reader = reader
        self.num_threads = num_threads
        self._kept: dict[int, np.ndarray] = {}
        self.stats = DecodeStats(backend=reader.backend)
        self._allow_seek()

    def _allow_seek(self) -> None:
        if hasattr(self.reader, "allow_seek"):  # PyAV: seek to keyframes instead of decoding up to them
            self.reader.allow_seek = True

    def get(self, indices: np.ndarray, keep_from: int | None = None) -> np.ndarray:
        """Frames at ``indices`` (any shape, increasing from call to call), flattened: ``(indices.size, H, W, 3)``.

        Args:
            indices: frame indices of the windows asked for.
            keep_from: the first frame a later call can ask for: frames before it are dropped after this call
                (None: no later call, all are dropped).
        """
        flat = np.asarray(indices, dtype=np.int64).reshape(-1)
        need = np.unique(flat)
        missing = [int(i) for i in need if int(i) not in self._kept]
        if missing:
            frames, self.reader = decode_frames(self.reader, missing, num_threads=self.num_threads)
            self._allow_seek()
            self._kept.update(zip(missing, frames))
        self.stats.frames_sampled += flat.size
        self.stats.frames_decoded += len(missing)
        self.stats.frames_shared += flat.size - len(missing)
        self.stats.max_frames_kept = max(self.stats.max_frames_kept, len(self._kept))
        out = np.stack([self._kept[int(i)] for i in flat])
        for i in [i for i in self._kept if keep_from is None or i < keep_from]:
            del self._kept[i]
        self.stats.backend = self.reader.backend
        if hasattr(self.reader, "frames_decoded"):
            self.stats.reader_frames_decoded = int(self.reader.frames_decoded)
        return out

    def close(self) -> None:
        self._kept.clear()
        self.reader.close()
