"""Per-video work of the dataset preparation scripts in ``datasets/`` (decode check, pre-resize).

Kept in the package so ``ProcessPoolExecutor`` workers can import it.
"""
from __future__ import annotations

import os
import shutil
from concurrent.futures import ProcessPoolExecutor
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
from tqdm import tqdm

from regionvit_video.data.decoder import DecodeError, read_frames


def check_video(path: str, timeout: float = 120.0) -> str | None:
    """None if 8 frames spread over the whole video decode (decord, PyAV fallback), else the reason."""
    try:
        frames, _, _ = read_frames(path, lambda n, fps: np.linspace(0, n - 1, 8).round().astype(int), "decord",
                                   timeout=timeout)
    except DecodeError as e:
        return e.reason
    except Exception as e:  # report, never crash the scan
        return f"{type(e).__name__}: {e}"
    if frames.shape[0] != 8:
        return f"decoded {frames.shape[0]} of 8 frames"
    return None


def resize_video(src: str, dst: str, short_side: int = 320, crf: int = 23) -> str:
    """Re-encode ``src`` to H.264 with the short side scaled to ``short_side``; returns the output path.

    The output is ``dst`` with the extension ``.mp4`` (H.264 does not go in .webm / .avi); a video
    whose short side is already at most ``short_side`` is copied to ``dst`` unchanged.
    """
    Path(dst).parent.mkdir(parents=True, exist_ok=True)
    with av.open(src) as inp:
        if not inp.streams.video:
            raise ValueError("no video stream")
        stream = inp.streams.video[0]
        w, h = stream.codec_context.width, stream.codec_context.height
        if min(w, h) <= short_side:
            shutil.copyfile(src, dst)
            return str(dst)
        scale = short_side / min(w, h)
        nw, nh = (int(round(w * scale / 2)) * 2, int(round(h * scale / 2)) * 2)
        rate = stream.average_rate or stream.guessed_rate or Fraction(30)
        dst = str(Path(dst).with_suffix(".mp4"))
        tmp = dst + ".part.mp4"
        with av.open(tmp, "w") as out:
            enc = out.add_stream("libx264", rate=Fraction(rate).limit_denominator(1001))
            enc.width, enc.height, enc.pix_fmt = nw, nh, "yuv420p"
            enc.options = {"crf": str(crf), "preset": "veryfast"}
            for frame in inp.decode(stream):
                small = frame.reformat(width=nw, height=nh, format="yuv420p", interpolation="BILINEAR")
                small.pts = None  # every input frame is kept, re-timed at the average rate
                for packet in enc.encode(small):
                    out.mux(packet)
            for packet in enc.encode():
                out.mux(packet)
        os.replace(tmp, dst)
    return dst


def resize_job(args) -> tuple[str, str | None, str | None]:
    """``(src, output path or None, error or None)``."""
    src, dst, short_side = args
    try:
        return src, resize_video(src, dst, short_side), None
    except Exception as e:
        return src, None, f"resize failed: {type(e).__name__}: {e}"


def check_job(path: str) -> tuple[str, str | None]:
    """``(path, reason or None)``."""
    return path, check_video(path)


def parallel_map(fn, items, workers: int, desc: str) -> list:
    """``[fn(x) for x in items]`` over ``workers`` processes, in order, with a tqdm bar."""
    if workers <= 1:
        return [fn(x) for x in tqdm(items, desc=desc, unit="video")]
    with ProcessPoolExecutor(max_workers=workers) as pool:
        return list(tqdm(pool.map(fn, items, chunksize=4), total=len(items), desc=desc, unit="video"))
