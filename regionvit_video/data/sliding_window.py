"""The sliding-window views of whole videos (long-video inference: ``FEATURES.MODE clips``).

Window ``k`` of a video starts at frame ``k * stride`` and spans ``window`` frames, of which
``num_frames`` are sampled uniformly (:func:`regionvit_video.data.sampling.sliding_windows`); each window
gets the test views (:func:`regionvit_video.data.transforms.eval_views`).
"""
from __future__ import annotations

from typing import Iterator, Sequence

import torch
from torch.utils.data import IterableDataset, get_worker_info

from regionvit_video.data.datasets import VideoRecord
from regionvit_video.data.decoder import DecodeError, decode_frames, open_video, time_limit
from regionvit_video.data.sampling import sliding_windows, stride_in_frames
from regionvit_video.data.transforms import eval_views


class SlidingWindowClips(IterableDataset):
    """Yields the sliding-window views of each video in chunks of at most ``chunk_windows`` windows.

    The video is opened once and each chunk decodes only the frames its windows use, so memory stays
    bounded for long videos. Items: ``{"index", "path", "video": (k*V, C, T, H, W), "bounds": (k, 2),
    "fps", "last": bool}`` (views window-major), or ``{"index", "path", "error"}`` when the video
    cannot be decoded (possibly after some chunks; the consumer drops those). DataLoader workers take
    every ``num_workers``-th video.

    Args:
        records: videos (``index`` refers to this list).
        window: window length in frames (FEATURES.WINDOW).
        stride: window stride (FEATURES.STRIDE).
        stride_unit: "frames" or "seconds" (FEATURES.STRIDE_UNIT).
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

    def _views(self, frames: torch.Tensor) -> torch.Tensor:
        """(k*T, H, W, 3) uint8 frames of k windows -> (k*V, C, T, S, S), window-major."""
        t = self.num_frames
        return torch.cat([eval_views(frames[k * t:(k + 1) * t], scale=self.test_scale, crop_size=self.test_crop_size,
                                     num_crops=self.num_crops, mean=self.mean, std=self.std)
                          for k in range(len(frames) // t)])

    def _video_items(self, index: int) -> Iterator[dict]:
        path = self.records[index].path
        try:
            with time_limit(self.decode_timeout, path):
                reader = open_video(path, self.decoder, num_threads=self.decode_threads)
        except Exception as e:  # noqa: BLE001  (a bad file must never stop the run)
            yield {"index": index, "path": path, "error": e.reason if isinstance(e, DecodeError) else
                   f"{type(e).__name__}: {e}"}
            return
        try:
            fps = float(reader.fps or 0.0)
            stride = stride_in_frames(self.stride, self.stride_unit, fps)
            indices, bounds = sliding_windows(reader.num_frames, window=self.window, stride=stride,
                                              num_frames=self.num_frames)
            for c in range(0, len(indices), self.chunk_windows):
                idx = indices[c:c + self.chunk_windows]
                with time_limit(self.decode_timeout, path):
                    raw, reader = decode_frames(reader, idx.reshape(-1), num_threads=self.decode_threads)
                yield {"index": index, "path": path, "video": self._views(torch.from_numpy(raw)),
                       "bounds": bounds[c:c + len(idx)], "fps": fps, "last": c + self.chunk_windows >= len(indices)}
        except Exception as e:  # noqa: BLE001
            yield {"index": index, "path": path, "error": e.reason if isinstance(e, DecodeError) else
                   f"{type(e).__name__}: {e}"}
        finally:
            reader.close()
