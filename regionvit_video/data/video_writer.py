"""Write uint8 frame arrays to real video files with PyAV (tests, the demo dataset, benchmarks)."""
from __future__ import annotations

import os
from fractions import Fraction

import av
import numpy as np


def write_video(
    path: str | os.PathLike,
    frames: np.ndarray,
    fps: float = 25.0,
    codec: str = "libx264",
    pix_fmt: str | None = None,
    options: dict[str, str] | None = None,
    gop_size: int | None = None,
) -> None:
    """Encode ``frames`` (T, H, W, 3) uint8 RGB, or (T, H, W) grayscale, into ``path``.

    The container follows the file extension (.mp4, .mkv, .webm, .avi). H.264 and most codecs
    need even sizes with yuv420p; odd sizes are padded by one pixel row/column.
    """
    frames = np.asarray(frames)
    if frames.dtype != np.uint8:
        raise TypeError(f"frames must be uint8, got {frames.dtype}")
    if frames.ndim == 3:
        frames = np.repeat(frames[..., None], 3, axis=-1)
    if frames.ndim != 4 or frames.shape[-1] != 3:
        raise ValueError(f"frames must be (T, H, W, 3) or (T, H, W), got {frames.shape}")
    if pix_fmt is None:
        pix_fmt = "yuv420p"
    t, h, w, _ = frames.shape
    if pix_fmt == "yuv420p" and (h % 2 or w % 2):
        frames = np.pad(frames, ((0, 0), (0, h % 2), (0, w % 2), (0, 0)), mode="edge")
        h, w = frames.shape[1:3]
    rate = Fraction(fps).limit_denominator(1001)
    with av.open(str(path), mode="w") as container:
        stream = container.add_stream(codec, rate=rate)
        stream.width, stream.height, stream.pix_fmt = w, h, pix_fmt
        if gop_size is not None:
            stream.codec_context.gop_size = gop_size
        if options:
            stream.options = options
        for frame in frames:
            vf = av.VideoFrame.from_ndarray(np.ascontiguousarray(frame), format="rgb24")
            for packet in stream.encode(vf):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
