"""Write uint8 frame arrays to real video files with PyAV (tests, the demo dataset, benchmarks)."""
from __future__ import annotations

import os
from fractions import Fraction

import av
import numpy as np


def rgb_to_yuv420p(frame: np.ndarray) -> np.ndarray:
    """(H, W, 3) uint8 RGB, H and W even -> (3H/2, W) uint8: the Y, U and V planes of yuv420p, flat.

    BT.601 limited range (the colour space decoders assume for untagged video), in integer arithmetic:
    the 8-bit fixed-point form of the BT.601 matrix, chroma from the sum of each 2x2 block. Every machine
    gives the same bytes. (FFmpeg's swscale, which PyAV uses for rgb24 input, runs SIMD code chosen by
    the CPU; on an AVX-512 CPU two same-seed generations of the demo dataset in one process gave
    different files, and this conversion was the one step of the encoding outside numpy and
    single-threaded x264.)
    """
    h, w, _ = frame.shape
    rgb = frame.astype(np.int32)
    r, g, b = rgb[..., 0], rgb[..., 1], rgb[..., 2]
    y = ((66 * r + 129 * g + 25 * b + 128) >> 8) + 16
    s = rgb.reshape(h // 2, 2, w // 2, 2, 3).sum(axis=(1, 3))  # H/2, W/2, 3: sums of 4 pixels
    sr, sg, sb = s[..., 0], s[..., 1], s[..., 2]
    u = ((-38 * sr - 74 * sg + 112 * sb + 512) >> 10) + 128
    v = ((112 * sr - 94 * sg - 18 * sb + 512) >> 10) + 128
    planes = np.concatenate([y.ravel(), u.ravel(), v.ravel()])
    return planes.astype(np.uint8).reshape(h * 3 // 2, w)


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
    need even sizes with yuv420p; odd sizes are padded by one pixel row/column. yuv420p frames are
    converted by :func:`rgb_to_yuv420p` and handed to the encoder as they are, so the encoder's input
    is the same on every machine; other pixel formats are converted by FFmpeg.
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
            if pix_fmt == "yuv420p":
                vf = av.VideoFrame.from_ndarray(rgb_to_yuv420p(frame), format="yuv420p")
            else:
                vf = av.VideoFrame.from_ndarray(np.ascontiguousarray(frame), format="rgb24")
            for packet in stream.encode(vf):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
