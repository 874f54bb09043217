"""Which frames a clip uses: uniform (segment) sampling, the paper's, PySlowFast dense sampling, and the
sliding windows of long-video inference.

All functions return int64 frame indices in [0, video_frames - 1], in temporal order; videos with
fewer frames than the clip needs repeat frames.
"""
from __future__ import annotations

from typing import Literal

import numpy as np

Sampling = Literal["uniform", "dense"]
SAMPLINGS: tuple[str, ...] = ("uniform", "dense")  # DATA.SAMPLING
STRIDE_UNITS: tuple[str, ...] = ("frames", "seconds")  # FEATURES.STRIDE_UNIT


def uniform_indices(video_frames: int, num_frames: int, *, train: bool, rng: np.random.Generator | None = None,
                    clip_idx: int = 0, num_clips: int = 1) -> np.ndarray:
    """Segment sampling over the whole video (PySlowFast SSv2 rule; mmaction2 ``UniformSample``).

    The video is split into ``num_frames`` segments of ``seg = (L - 1) / T`` frames; segment ``i``
    spans ``[round(seg*i), round(seg*(i+1))]``.

    - training: a uniformly random frame of each segment (inclusive bounds);
    - testing with one clip: the segment midpoint ``(start + end) // 2``;
    - testing with ``num_clips > 1``: mmaction2's offsets, clip ``k`` takes
      ``round(seg*i) + int(seg / (num_clips + 1) * (k + 1))``.
    """
    _check(video_frames, num_frames)
    seg = (video_frames - 1) / num_frames
    i = np.arange(num_frames)
    start = np.round(seg * i).astype(np.int64)
    end = np.round(seg * (i + 1)).astype(np.int64)
    if train:
        if rng is None:
            raise ValueError("training sampling needs an rng")
        idx = rng.integers(start, end + 1)
    elif num_clips <= 1:
        idx = (start + end) // 2
    else:
        if not 0 <= clip_idx < num_clips:
            raise ValueError(f"clip_idx {clip_idx} out of range for {num_clips} clips")
        idx = start + int(seg / (num_clips + 1) * (clip_idx + 1))
    return np.clip(idx, 0, video_frames - 1).astype(np.int64)


def dense_indices(video_frames: int, num_frames: int, sampling_rate: int, *, train: bool,
                  rng: np.random.Generator | None = None, clip_idx: int = 0, num_clips: int = 1,
                  fps: float = 30.0, target_fps: float = 30.0) -> np.ndarray:
    """PySlowFast dense sampling: ``num_frames`` frames ``sampling_rate`` apart (at ``target_fps``).

    The window spans ``num_frames * sampling_rate * fps / target_fps`` frames of the video.
    Training puts it at a uniformly random start; testing with one clip centres it; testing with
    ``num_clips`` clips spaces them evenly from the first to the last possible start (current
    PySlowFast ``USE_OFFSET_SAMPLING``). Indices come from ``linspace`` over the window, clamped
    and truncated as in PySlowFast, so short videos repeat frames.
    """
    _check(video_frames, num_frames)
    if sampling_rate < 1:
        raise ValueError(f"DATA.SAMPLING_RATE must be >= 1, got {sampling_rate}")
    scale = (fps / target_fps) if (fps and fps > 0 and target_fps > 0) else 1.0
    window = num_frames * sampling_rate * scale
    delta = max(video_frames - window, 0.0)
    if train:
        if rng is None:
            raise ValueError("training sampling needs an rng")
        start = rng.uniform(0, delta)
    elif num_clips <= 1:
        start = delta / 2
    else:
        if not 0 <= clip_idx < num_clips:
            raise ValueError(f"clip_idx {clip_idx} out of range for {num_clips} clips")
        start = delta * clip_idx / (num_clips - 1)
    idx = np.linspace(start, start + window - 1, num_frames)
    return np.clip(idx, 0, video_frames - 1).astype(np.int64)


def clip_indices(sampling: Sampling, video_frames: int, num_frames: int, *, train: bool,
                 rng: np.random.Generator | None = None, clip_idx: int = 0, num_clips: int = 1,
                 sampling_rate: int = 8, fps: float = 30.0, target_fps: float = 30.0) -> np.ndarray:
    """Dispatch on DATA.SAMPLING ("uniform" or "dense")."""
    if sampling == "uniform":
        return uniform_indices(video_frames, num_frames, train=train, rng=rng, clip_idx=clip_idx,
                               num_clips=num_clips)
    if sampling == "dense":
        return dense_indices(video_frames, num_frames, sampling_rate, train=train, rng=rng, clip_idx=clip_idx,
                             num_clips=num_clips, fps=fps, target_fps=target_fps)
    raise ValueError(f"DATA.SAMPLING must be one of {SAMPLINGS}, got {sampling!r}")


def sliding_windows(video_frames: int, *, window: int, stride: int, num_frames: int) -> tuple[np.ndarray, np.ndarray]:
    """Frame indices and bounds of the sliding windows over a video.

    Window ``k`` starts at frame ``k * stride`` and spans ``window`` frames, in which ``num_frames`` are
    sampled uniformly (segment midpoints, the test rule). Windows start while they fit (the tail after
    the last full window is not covered, as in mmaction2's untrimmed sampler); a video shorter than a
    window gives one window over all its frames.

    Args:
        video_frames: frames in the video (L).
        window: window length in frames (W).
        stride: frames between window starts (>= 1).
        num_frames: frames sampled per window.

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


def stride_in_frames(stride: float, unit: str, fps: float, *, key: str = "FEATURES.STRIDE_UNIT") -> int:
    """A window stride (or length) in frames: as given ("frames") or ``round(stride * fps)`` ("seconds");
    at least 1. ``key`` names the setting in the error messages."""
    if unit == "frames":
        frames = int(round(stride))
    elif unit == "seconds":
        if not fps or fps <= 0:
            raise ValueError(f"{key}: a length in seconds needs the video's frame rate, which is unknown")
        frames = int(round(stride * fps))
    else:
        raise ValueError(f"{key} must be one of {STRIDE_UNITS}, got {unit!r}")
    return max(1, frames)


def _check(video_frames: int, num_frames: int) -> None:
    if video_frames < 1:
        raise ValueError(f"video has {video_frames} frames")
    if num_frames < 1:
        raise ValueError(f"DATA.NUM_FRAMES must be >= 1, got {num_frames}")
