"""The sliding-window views of whole videos (long-video inference: ``FEATURES.MODE clips`` and the timeline).

Window ``k`` of a video starts at frame ``k * stride`` and spans ``window`` frames (both given in frames or
seconds), in which the test's frames are sampled (:func:`regionvit_video.data.long_video.plan_windows`); each
window gets the test views (:func:`regionvit_video.data.long_video.window_views`). Frames come from a
:class:`~regionvit_video.data.long_video.WindowFrames`: each decoded once, memory bounded by a chunk.
"""
from __future__ import annotations

from typing import Iterator, Sequence

import torch
from torch.utils.data import IterableDataset, get_worker_info

from regionvit_video.data.datasets import VideoRecord
from regionvit_video.data.decoder import DecodeError, open_video, time_limit
from regionvit_video.data.long_video import WindowFrames, plan_windows, window_views


class SlidingWindowClips(IterableDataset):
    """Yields the sliding-window views of each video in chunks of at most ``chunk_windows`` windows.

    The video is opened once and each chunk decodes only the frames its windows use that earlier chunks did not,
    so memory stays bounded for long videos. Items: ``{"index", "path", "video": (k*V, C, T, H, W), "bounds":
    (k, 2), "fps", "window", "stride" (frames), "num_windows", "last": bool}`` (views window-major, ``V =
    num_clips * num_crops``; the last item also carries ``"decode_stats"``), or ``{"index", "path", "error"}``
    when the video cannot be decoded (possibly after some chunks; the consumer drops those). DataLoader workers
    take every ``num_workers``-th video.

    Args:
        records: videos (``index`` refers to this list).
        window: window length (FEATURES.WINDOW frames; TIMELINE.WINDOW_SECONDS).
        stride: window stride (FEATURES.STRIDE; TIMELINE.STRIDE_SECONDS).
        stride_unit: "frames" or "seconds" (FEATURES.STRIDE_UNIT).
        num_frames: DATA.NUM_FRAMES sampled per clip.
        window_unit: "frames" or "seconds".
        num_clips: temporal clips per window (the timeline: TEST.NUM_ENSEMBLE_VIEWS; features: 1).
        sampling, sampling_rate, target_fps: how a clip samples its window (DATA.SAMPLING, ...).
        chunk_windows: windows per item.
        test_scale, test_crop_size, num_crops, mean, std: the test views (see ``eval_views``).
        decoder, decode_threads, decode_timeout: as DATA.DECODER / DECODE_THREADS / DECODE_TIMEOUT
            (the timeout bounds each chunk's decode).
        window_key, stride_key: the settings named in errors (a length in seconds without a frame rate).
    """

    def __init__(self, records: Sequence[VideoRecord], *, window: float, stride: float, stride_unit: str,
                 num_frames: int, window_unit: str = "frames", num_clips: int = 1, sampling: str = "uniform",
                 sampling_rate: int = 8, target_fps: float = 30.0, chunk_windows: int = 8, test_scale: int = 256,
                 test_crop_size: int = 224, num_crops: int = 3, mean: Sequence[float] = (0.485, 0.456, 0.406),
                 std: Sequence[float] = (0.229, 0.224, 0.225), decoder: str = "decord", decode_threads: int = 1,
                 decode_timeout: float = 60.0, window_key: str = "FEATURES.WINDOW",
                 stride_key: str = "FEATURES.STRIDE_UNIT"):
        self.records = list(records)
        self.window, self.window_unit = float(window), window_unit
        self.stride, self.stride_unit = float(stride), stride_unit
        self.num_frames, self.num_clips, self.chunk_windows = int(num_frames), int(num_clips), max(1, int(chunk_windows))
        self.sampling, self.sampling_rate, self.target_fps = sampling, sampling_rate, target_fps
        self.test_scale, self.test_crop_size, self.num_crops = test_scale, test_crop_size, num_crops
        self.mean, self.std = tuple(mean), tuple(std)
        self.decoder, self.decode_threads, self.decode_timeout = decoder, decode_threads, decode_timeout
        self.window_key, self.stride_key = window_key, stride_key

    @property
    def views_per_window(self) -> int:
        return self.num_clips * self.num_crops

    def plan(self, num_frames: int, fps: float):
        """The :class:`~regionvit_video.data.long_video.WindowPlan` of a video of ``num_frames`` frames at ``fps``."""
        return plan_windows(num_frames, fps, window=self.window, stride=self.stride, num_frames=self.num_frames,
                            window_unit=self.window_unit, stride_unit=self.stride_unit, num_clips=self.num_clips,
                            sampling=self.sampling, sampling_rate=self.sampling_rate, target_fps=self.target_fps,
                            window_key=self.window_key, stride_key=self.stride_key)

    def __iter__(self) -> Iterator[dict]:
        info = get_worker_info()
        start, step = (info.id, info.num_workers) if info is not None else (0, 1)
        for index in range(start, len(self.records), step):
            yield from self._video_items(index)

    def _views(self, frames: torch.Tensor) -> torch.Tensor:
        """(k*N*T, H, W, 3) uint8 frames of k windows -> (k*V, C, T, S, S), window-major."""
        return window_views(frames, num_frames=self.num_frames, num_clips=self.num_clips, scale=self.test_scale,
                            crop_size=self.test_crop_size, num_crops=self.num_crops, mean=self.mean, std=self.std)

    def _video_items(self, index: int) -> Iterator[dict]:
        path = self.records[index].path
        try:
            with time_limit(self.decode_timeout, path):
                reader = open_video(path, self.decoder, num_threads=self.decode_threads)
        except Exception as e:  # noqa: BLE001  (a bad file must never stop the run)
            yield {"index": index, "path": path, "error": e.reason if isinstance(e, DecodeError) else
                   f"{type(e).__name__}: {e}"}
            return
        source = WindowFrames(reader, num_threads=self.decode_threads)
        try:
            fps = float(reader.fps or 0.0)
            plan = self.plan(reader.num_frames, fps)
            indices, bounds = plan.indices, plan.bounds
            for c in range(0, len(indices), self.chunk_windows):
                idx = indices[c:c + self.chunk_windows]
                last = c + self.chunk_windows >= len(indices)
                keep_from = None if last else int(indices[c + self.chunk_windows].min())  # windows only move on
                with time_limit(self.decode_timeout, path):
                    raw = source.get(idx, keep_from=keep_from)
                item = {"index": index, "path": path, "video": self._views(torch.from_numpy(raw)),
                        "bounds": bounds[c:c + len(idx)], "fps": fps, "window": plan.window, "stride": plan.stride,
                        "num_windows": plan.num_windows, "last": last}
                if last:
                    item["decode_stats"] = source.stats.as_dict()
                yield item
        except Exception as e:  # noqa: BLE001
            yield {"index": index, "path": path, "error": e.reason if isinstance(e, DecodeError) else
                   f"{type(e).__name__}: {e}"}
        finally:
            source.close()
