"""A corpus of hostile inputs, generated on the fly: the broken files real video collections hold.

``make_hostile_videos(root)`` writes one file per case and returns {case: path}; the good cases are
still valid videos (and must give valid clips), the bad ones must fail cleanly with a reason.
"""
from __future__ import annotations

import os
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

from regionvit_video.data.video_writer import write_video

# Cases that are real, decodable videos: the loaders must turn each into a valid clip.
GOOD_CASES = ("one_frame", "short_3_frames", "tiny_16x16", "portrait", "grayscale", "variable_frame_rate")
# Cases that cannot give a clip: each must be reported with a reason, never crash or hang.
BAD_CASES = ("zero_bytes", "random_bytes", "truncated", "audio_only", "missing")
# Decodable up to a point: corrupt packets in the middle. Decoders may conceal the damage or fail;
# either way the loader must not crash or hang.
DAMAGED_CASES = ("corrupt_middle",)


def _moving_frames(t: int, h: int, w: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    base = rng.integers(0, 255, (h, w, 3), dtype=np.uint8)
    return np.stack([np.roll(base, 2 * i, axis=1) for i in range(t)])


def _write_audio_only(path: Path) -> None:
    with av.open(str(path), "w") as c:
        s = c.add_stream("aac", rate=16000)
        for i in range(8):
            fr = av.AudioFrame.from_ndarray(np.zeros((1, 1024), np.float32), format="fltp", layout="mono")
            fr.sample_rate, fr.pts = 16000, i * 1024
            for p in s.encode(fr):
                c.mux(p)
        for p in s.encode():
            c.mux(p)


def _write_vfr(path: Path, t: int = 24, h: int = 48, w: int = 64) -> None:
    frames = _moving_frames(t, h, w, seed=3)
    with av.open(str(path), "w") as c:
        s = c.add_stream("libx264", rate=30)
        s.width, s.height, s.pix_fmt = w, h, "yuv420p"
        s.codec_context.time_base = Fraction(1, 1000)
        pts = 0
        for i, f in enumerate(frames):
            vf = av.VideoFrame.from_ndarray(f, format="rgb24")
            vf.pts, vf.time_base = pts, Fraction(1, 1000)
            pts += 15 if i % 3 else 90  # gaps of 15 and 90 ms
            for p in s.encode(vf):
                c.mux(p)
        for p in s.encode():
            c.mux(p)


def make_hostile_videos(root: str | os.PathLike) -> dict[str, Path]:
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    out: dict[str, Path] = {}

    good = root / "good.mp4"
    write_video(good, _moving_frames(40, 64, 80), fps=25, gop_size=8)
    data = good.read_bytes()

    out["one_frame"] = root / "one_frame.mp4"
    write_video(out["one_frame"], _moving_frames(1, 64, 80), fps=25)
    out["short_3_frames"] = root / "short.mp4"
    write_video(out["short_3_frames"], _moving_frames(3, 64, 80), fps=25)
    out["tiny_16x16"] = root / "tiny.mp4"
    write_video(out["tiny_16x16"], _moving_frames(12, 16, 16), fps=25)
    out["portrait"] = root / "portrait.mp4"
    write_video(out["portrait"], _moving_frames(12, 96, 48), fps=25)
    out["grayscale"] = root / "gray.mkv"
    gray = _moving_frames(12, 48, 64)[..., 0]
    write_video(out["grayscale"], gray, fps=25, codec="ffv1", pix_fmt="gray")
    out["variable_frame_rate"] = root / "vfr.mp4"
    _write_vfr(out["variable_frame_rate"])

    out["zero_bytes"] = root / "zero.mp4"
    out["zero_bytes"].write_bytes(b"")
    out["random_bytes"] = root / "random.mp4"
    out["random_bytes"].write_bytes(np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8).tobytes())
    out["truncated"] = root / "truncated.mp4"
    out["truncated"].write_bytes(data[: len(data) // 3])
    out["audio_only"] = root / "audio_only.mp4"
    _write_audio_only(out["audio_only"])
    out["missing"] = root / "does_not_exist.mp4"

    out["corrupt_middle"] = root / "corrupt_middle.mp4"
    damaged = bytearray(data)
    mid = len(damaged) // 2
    damaged[mid : mid + 2048] = np.random.default_rng(1).integers(0, 256, 2048, dtype=np.uint8).tobytes()
    out["corrupt_middle"].write_bytes(bytes(damaged))
    good.unlink()
    return out


# ---------------------------------------------------------------------------------------------- #
# Hostile list files
# ---------------------------------------------------------------------------------------------- #
# Lines of a Kinetics-layout list (``path label``, space-separated, MODEL.NUM_CLASSES 2) that must stop
# a run before training, with what the error must say after "<list file>:<line number>: ".
BAD_CSV_LINES = {
    "label_out_of_range": (b"clip.mp4 7", "label 7 out of range for MODEL.NUM_CLASSES=2"),
    "label_not_integer": (b"clip.mp4 seven", "label 'seven' is not an integer"),
    "extra_column": (b"clip.mp4 1 extra", "expected 2 columns"),
    "non_utf8_byte": (b"caf\xe9.mp4 1", "not valid UTF-8"),
}
# An SSv2 template that is not in something-something-v2-labels.json.
UNKNOWN_SSV2_TEMPLATE = "Juggling [something] on a unicycle"


def shell_metachar_paths(marker_dir: str | os.PathLike) -> dict[str, tuple[str, Path]]:
    """List paths that would run a command if a shell ever saw them: {case: (path, marker it would create)}.

    They hold spaces, so they go in lists with another DATA.PATH_LABEL_SEPARATOR (e.g. ",").
    """
    m = Path(marker_dir)
    return {
        "dollar_paren": (f"$(touch {m / 'pwned_dollar'}).mp4", m / "pwned_dollar"),
        "backticks": (f"`touch {m / 'pwned_backtick'}`.mp4", m / "pwned_backtick"),
        "semicolon": (f"x.mp4; touch {m / 'pwned_semicolon'}", m / "pwned_semicolon"),
        "pipe": (f"x.mp4 | touch {m / 'pwned_pipe'}", m / "pwned_pipe"),
        "ampersand": (f"x.mp4 && touch {m / 'pwned_amp'} #", m / "pwned_amp"),
    }
