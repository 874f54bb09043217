"""Write uint8 frame arrays to real video files with PyAV (tests, the demo dataset, benchmarks)."""
from __future__ import annotations

import os
from fractions import Fraction
from typing import Iterable

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
    frames: np.ndarray | Iterable[np.ndarray],
    fps: float = 25.0,
    codec: str = "libx264",
    pix_fmt: str | None = None,
    options: dict[str, str] | None = None,
    gop_size: int | None = None,
) -> None:
    """Encode ``frames`` (T, H, W, 3) uint8 RGB, or (T, H, W) grayscale, into ``path``.

    ``frames`` may also be an iterable of (H, W, 3) / (H, W) frames of one size, encoded as they come (a long
    video without holding it in memory).

    The container follows the file extension (.mp4, .mkv, .webm, .avi, .ts). H.264 and most codecs
    need even sizes with yuv420p; odd sizes are padded by one pixel row/column. yuv420p frames are
    converted by :func:`rgb_to_yuv420p` and handed to the encoder as they are, so the encoder's input
    is the same on every machine; other pixel formats are converted by FFmpeg.
    """
    if isinstance(frames, np.ndarray) or not isinstance(frames, Iterable):
        frames = np.asarray(frames)
        if frames.ndim not in (3, 4):
            raise ValueError(f"frames must be (T, H, W, 3) or (T, H, W), got {frames.shape}")
    if pix_fmt is None:
        pix_fmt = "yuv420p"
    rate = Fraction(fps).limit_denominator(1001)
    stream = None
    with av.open(str(path), mode="w") as container:
        for frame in frames:
            frame = _rgb_frame(frame)
            if stream is None:
                h, w = frame.shape[:2]
                if pix_fmt == "yuv420p":
                    h, w = h + h % 2, w + w % 2
                stream = container.add_stream(codec, rate=rate)
                stream.width, stream.height, stream.pix_fmt = w, h, pix_fmt
                if gop_size is not None:
                    stream.codec_context.gop_size = gop_size
                if options:
                    stream.options = options
            if pix_fmt == "yuv420p":
                fh, fw = frame.shape[:2]
                if fh % 2 or fw % 2:
                    frame = np.pad(frame, ((0, fh % 2), (0, fw % 2), (0, 0)), mode="edge")
                vf = av.VideoFrame.from_ndarray(rgb_to_yuv420p(frame), format="yuv420p")
            else:
                vf = av.VideoFrame.from_ndarray(np.ascontiguousarray(frame), format="rgb24")
            for packet in stream.encode(vf):
                container.mux(packet)
        if stream is None:
            raise ValueError("no frames to write")
        for packet in stream.encode():
            container.mux(packet)


def _rgb_frame(frame) -> np.ndarray:
    """One frame as (H, W, 3) uint8 (a grayscale (H, W) frame repeated over 3 channels)."""
    frame = np.asarray(frame)
    if frame.dtype != np.uint8:
        raise TypeError(f"frames must be uint8, got {frame.dtype}")
    if frame.ndim == 2:
        frame = np.repeat(frame[..., None], 3, axis=-1)
    if frame.ndim != 3 or frame.shape[-1] != 3:
        raise ValueError(f"frames must be (T, H, W, 3) or (T, H, W), got a frame of shape {frame.shape}")
    return frame
