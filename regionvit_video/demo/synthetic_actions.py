"""A procedurally drawn action dataset in which the order of frames decides the class.

Kinetics and ImageNet weights cannot ship with the toolkit, so the demo generates its own data: small
real H.264 videos (PyAV/libx264 through :func:`regionvit_video.data.video_writer.write_video`) listed in
the Kinetics CSV layout, so they go through exactly the loader users use.

Eight classes in four direction pairs, each the time reversal of the other:

====  ==========================  ====  ==========================
  0   move_left                     1   move_right
  2   move_up                       3   move_down
  4   grow                          5   shrink
  6   rotate_clockwise              7   rotate_counterclockwise
====  ==========================  ====  ==========================

Every clip is a :class:`ClipSpec`: per-frame state arrays (the target shape's centre, radius and
angle; the background's scroll offset; the distractors' positions; per-frame noise seeds) plus
constant appearance (shape, colours, texture seed). :func:`render_clip` draws the state of frame ``t``
from the state arrays at index ``t`` alone, so ``render_clip(spec.reversed())`` is exactly
``render_clip(spec)[::-1]``, and ``spec.reversed()`` is a valid clip of the paired class. A model that
ignores frame order (averaging per-frame features) therefore cannot beat chance within a pair: that is
what the temporal-attention ablation (``benchmarks/bench_demo_ablation.py``) measures.

Nuisances, all independent of the label: textured backgrounds scrolling in a random direction, none to
two small distractor blobs drifting in random directions, random shape (five asymmetric shapes),
colours, size, speed, start and end of the motion within the clip, easing, and mild sensor noise.

Layout written by :func:`make_synthetic_actions` (paths in the CSVs are relative to ``root``)::

    root/classes.txt                      one class name per line (line i: label i)
    root/{train,val,test}.csv             "train/move_left/train_000008.mp4 0"
    root/{train,val,test}/<class>/<split>_<index>.mp4
    root/manifest.json                    the generation parameters (written last)

Sizes: decord2 3.4.0 cannot read H.264 files of some small widths, which ones depending on the CPU
(16, 24, 48, 72 on AVX2 CPUs; 32, 48, 96 on AVX-512 ones): the loader then reads them with PyAV (same
frames, slower). The demo's 64 pixels read with decord on both.

Reproducible: the same parameters give the same files byte for byte on a machine (whatever ``workers``
is): drawing uses only the clip's own generators, RGB -> YUV is integer arithmetic
(:func:`regionvit_video.data.video_writer.rgb_to_yuv420p`) and x264 runs single-threaded.
"""
from __future__ import annotations

import dataclasses
import json
import logging
import os
import time
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_all_start_methods, get_context
from pathlib import Path

import numpy as np
from tqdm import tqdm

from regionvit_video.data.video_writer import write_video

_logger = logging.getLogger(__name__)

# Bump whenever drawing or sampling changes: the manifest keys on it, so old folders regenerate.
GENERATOR_VERSION = 4

CLASS_NAMES: tuple[str, ...] = (
    "move_left",
    "move_right",
    "move_up",
    "move_down",
    "grow",
    "shrink",
    "rotate_clockwise",
    "rotate_counterclockwise",
)
# Label -> label of its time reversal.
PAIRED_CLASS: dict[int, int] = {0: 1, 1: 0, 2: 3, 3: 2, 4: 5, 5: 4, 6: 7, 7: 6}
SPLITS = ("train", "val", "test")

# Shapes in canonical coordinates (radius about 1, x right, y down). None is a mirror- or
# rotation-symmetric figure's trap: every shape has a single orientation and its centroid lies off
# the rotation centre, so rotation is visible in every frame pair.
_POLYGONS: dict[str, np.ndarray] = {
    "arrow": np.array([(-1, -0.3), (0.2, -0.3), (0.2, -0.75), (1, 0), (0.2, 0.75), (0.2, 0.3), (-1, 0.3)], float),
    "ell": np.array([(-0.8, -1), (-0.2, -1), (-0.2, 0.4), (0.8, 0.4), (0.8, 1), (-0.8, 1)], float),
    "tee": np.array([(-1, -1), (1, -1), (1, -0.45), (0.25, -0.45), (0.25, 1), (-0.25, 1), (-0.25, -0.45),
                     (-1, -0.45)], float),
    "wedge": np.array([(1, 0), (-0.8, 0.65), (-0.45, 0), (-0.8, -0.65)], float),
}
SHAPES: tuple[str, ...] = ("arrow", "ell", "tee", "wedge", "pacman")

# Thresholds that separate the classes' kinematics (the sampler keeps every class clear of them).
_MIN_ROTATION = np.deg2rad(60.0)  # rotation classes turn by 100-220 degrees, others not at all
_MIN_LOG_SCALE = np.log(1.4)  # scale classes change radius by 1.7-2.3x, others keep it


@dataclasses.dataclass(frozen=True)
class ClipSpec:
    """Everything needed to draw one clip; per-frame arrays have length ``num_frames``.

    Positions and radii are in pixels of a ``size`` x ``size`` frame; angles in radians, increasing
    clockwise on screen (y points down).
    """

    label: int
    size: int
    fps: float
    shape: str
    center_x: np.ndarray  # (T,)
    center_y: np.ndarray  # (T,)
    radius: np.ndarray  # (T,)
    angle: np.ndarray  # (T,)
    color: np.ndarray  # (3,) float in [0, 1]
    texture_seed: int
    texture_colors: np.ndarray  # (2, 3)
    bg_offset: np.ndarray  # (T, 2) texture scroll (x, y) in pixels
    distractor_xy: np.ndarray  # (K, T, 2)
    distractor_radius: np.ndarray  # (K,)
    distractor_color: np.ndarray  # (K, 3)
    distractor_square: np.ndarray  # (K,) bool: square blob instead of a disc
    noise_seeds: np.ndarray  # (T,) int64
    noise_std: float

    @property
    def num_frames(self) -> int:
        return len(self.center_x)

    def reversed(self) -> "ClipSpec":
        """The same clip played backwards: a clip of the paired class."""
        return dataclasses.replace(
            self,
            label=PAIRED_CLASS[self.label],
            center_x=self.center_x[::-1].copy(),
            center_y=self.center_y[::-1].copy(),
            radius=self.radius[::-1].copy(),
            angle=self.angle[::-1].copy(),
            bg_offset=self.bg_offset[::-1].copy(),
            distractor_xy=self.distractor_xy[:, ::-1].copy(),
            noise_seeds=self.noise_seeds[::-1].copy(),
        )


def motion_label(spec: ClipSpec) -> int:
    """The class the target's kinematics (first vs last frame) belong to."""
    turn = float(spec.angle[-1] - spec.angle[0])
    log_scale = float(np.log(spec.radius[-1] / spec.radius[0]))
    if abs(turn) >= _MIN_ROTATION:
        return 6 if turn > 0 else 7
    if abs(log_scale) >= _MIN_LOG_SCALE:
        return 4 if log_scale > 0 else 5
    dx = float(spec.center_x[-1] - spec.center_x[0])
    dy = float(spec.center_y[-1] - spec.center_y[0])
    if abs(dx) >= abs(dy):
        return 1 if dx > 0 else 0
    return 3 if dy > 0 else 2


def _hsv_to_rgb(h: float, s: float, v: float) -> np.ndarray:
    i = int(h * 6.0) % 6
    f = h * 6.0 - int(h * 6.0)
    p, q, t = v * (1 - s), v * (1 - s * f), v * (1 - s * (1 - f))
    return np.array([(v, t, p), (q, v, p), (p, v, t), (p, q, v), (t, p, v), (v, p, q)][i], np.float32)


def _profile(rng: np.random.Generator, t: int) -> np.ndarray:
    """Progress 0 -> 1 over the clip: motion starts and ends at random frames, linear or eased."""
    start = rng.uniform(0.0, 0.2) * (t - 1)
    end = (1.0 - rng.uniform(0.0, 0.2)) * (t - 1)
    p = np.clip((np.arange(t) - start) / (end - start), 0.0, 1.0)
    if rng.random() < 0.5:
        p = p * p * (3.0 - 2.0 * p)  # smoothstep: accelerate then decelerate
    return p


def sample_clip_spec(label: int, rng: np.random.Generator, *, size: int = 64, num_frames: int = 16,
                     fps: float = 15.0) -> ClipSpec:
    """Draw the parameters of one clip of class ``label``.

    Args:
        label: Class index into :data:`CLASS_NAMES`.
        rng: Source of randomness (the clip is a pure function of its state).
        size: Frame side in pixels.
        num_frames: Frames per clip.
        fps: Frame rate stored in the file.
    """
    if not 0 <= label < len(CLASS_NAMES):
        raise ValueError(f"label must be in [0, {len(CLASS_NAMES)}), got {label}")
    s, t = float(size), num_frames
    p = _profile(rng, t)
    angle0 = rng.uniform(0, 2 * np.pi)
    drift = rng.uniform(-0.06, 0.06, 2) * s  # small nuisance drift of the non-translation classes
    if label < 4:  # translation along one axis, a little wobble along the other
        radius = np.full(t, rng.uniform(0.14, 0.2) * s)
        dist = rng.uniform(0.35, 0.55) * s
        r = 1.1 * radius[0]  # the shapes reach out to ~1.05 radius: keep them whole in the frame
        mid_along = rng.uniform(r + dist / 2, s - r - dist / 2)
        mid_across = rng.uniform(r + 0.05 * s, s - r - 0.05 * s)
        sign = 1.0 if label in (1, 3) else -1.0
        along = mid_along + sign * dist * (p - 0.5)
        across = mid_across + rng.uniform(-0.05, 0.05) * s * (p - 0.5)
        cx, cy = (along, across) if label < 2 else (across, along)
        angle = np.full(t, angle0)
    else:
        if label in (4, 5):
            r_small = rng.uniform(0.1, 0.13) * s
            r_big = r_small * rng.uniform(1.8, 2.3)
            radius = r_small + (r_big - r_small) * (p if label == 4 else 1.0 - p)
            angle = np.full(t, angle0)
            margin = 1.1 * r_big + np.abs(drift).max() / 2
        else:
            radius = np.full(t, rng.uniform(0.16, 0.24) * s)
            turn = np.deg2rad(rng.uniform(100, 220)) * (1.0 if label == 6 else -1.0)
            angle = angle0 + turn * p
            margin = 1.1 * radius[0] + np.abs(drift).max() / 2
        mid = rng.uniform(margin, s - margin, 2)
        cx = mid[0] + drift[0] * (p - 0.5)
        cy = mid[1] + drift[1] * (p - 0.5)

    # Saturated target colour; muted, two-tone background texture; distractors as saturated as the target.
    color = _hsv_to_rgb(rng.random(), rng.uniform(0.7, 1.0), rng.uniform(0.85, 1.0))
    bg_hue, bg_val = rng.random(), rng.uniform(0.15, 0.45)
    texture_colors = np.stack([
        _hsv_to_rgb(bg_hue, rng.uniform(0.0, 0.3), bg_val),
        _hsv_to_rgb((bg_hue + rng.uniform(-0.15, 0.15)) % 1.0, rng.uniform(0.0, 0.3),
                    float(np.clip(bg_val + rng.uniform(-0.12, 0.12), 0.05, 0.6))),
    ])
    bg_velocity = rng.uniform(0.0, 0.4) * np.array([np.cos(th := rng.uniform(0, 2 * np.pi)), np.sin(th)])
    bg_offset = np.arange(t)[:, None] * bg_velocity[None] * s / 16.0

    k = int(rng.integers(0, 3))
    d_start = rng.uniform(0.05, 0.95, (k, 2)) * s
    d_dir = rng.uniform(0, 2 * np.pi, k)
    d_speed = rng.uniform(0.0, 0.3, k) * s / t
    d_vel = np.stack([np.cos(d_dir), np.sin(d_dir)], -1) * d_speed[:, None]
    distractor_xy = d_start[:, None, :] + np.arange(t)[None, :, None] * d_vel[:, None, :]
    distractor_xy = np.mod(distractor_xy, s)  # wrap around the frame
    distractor_radius = rng.uniform(0.03, 0.06, k) * s
    distractor_color = np.array([_hsv_to_rgb(rng.random(), rng.uniform(0.5, 1.0), rng.uniform(0.6, 1.0))
                                 for _ in range(k)], np.float32).reshape(k, 3)
    return ClipSpec(
        label=int(label), size=int(size), fps=float(fps), shape=SHAPES[int(rng.integers(len(SHAPES)))],
        center_x=np.asarray(cx, np.float64), center_y=np.asarray(cy, np.float64),
        radius=np.asarray(radius, np.float64), angle=np.asarray(angle, np.float64), color=color,
        texture_seed=int(rng.integers(2**31)), texture_colors=texture_colors, bg_offset=bg_offset,
        distractor_xy=distractor_xy, distractor_radius=distractor_radius, distractor_color=distractor_color,
        distractor_square=rng.random(k) < 0.5, noise_seeds=rng.integers(0, 2**31, t),
        noise_std=float(rng.uniform(0.0, 0.01)),
    )


def _inside_polygon(x: np.ndarray, y: np.ndarray, poly: np.ndarray) -> np.ndarray:
    """Even-odd rule, vectorised over the points."""
    inside = np.zeros(x.shape, bool)
    px, py = poly[:, 0], poly[:, 1]
    for i in range(len(poly)):
        x0, y0, x1, y1 = px[i - 1], py[i - 1], px[i], py[i]
        crosses = (y0 > y) != (y1 > y)
        with np.errstate(divide="ignore", invalid="ignore"):
            x_at = x0 + (y - y0) * (x1 - x0) / (y1 - y0)
        inside ^= crosses & (x < x_at)
    return inside


def _inside_shape(shape: str, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    if shape == "pacman":  # disc with a mouth opening to +x
        return (u * u + v * v <= 1.0) & ~((np.abs(v) < 0.55 * u) & (u > 0))
    return _inside_polygon(u, v, _POLYGONS[shape])


def _texture(seed: int, size: int) -> np.ndarray:
    """A tileable smooth noise field in [0, 1], (size, size)."""
    rng = np.random.default_rng(seed)
    f = np.fft.fftfreq(size)
    fr = np.sqrt(f[:, None] ** 2 + f[None, :] ** 2)
    cutoff = rng.uniform(0.04, 0.12)
    spectrum = np.fft.fft2(rng.standard_normal((size, size))) / (1.0 + (fr / cutoff) ** 3)
    field = np.real(np.fft.ifft2(spectrum))
    field -= field.min()
    return (field / max(field.max(), 1e-8)).astype(np.float32)


def _sample_wrapped(tex: np.ndarray, ox: float, oy: float) -> np.ndarray:
    """``tex`` shifted by a sub-pixel offset (bilinear, wrapping)."""
    n = tex.shape[0]
    ix, fx = int(np.floor(ox)), ox - np.floor(ox)
    iy, fy = int(np.floor(oy)), oy - np.floor(oy)
    a = np.roll(tex, (-iy, -ix), axis=(0, 1))
    b = np.roll(a, -1, axis=1)
    c = np.roll(a, -1, axis=0)
    d = np.roll(b, -1, axis=0)
    return (a * (1 - fx) + b * fx) * (1 - fy) + (c * (1 - fx) + d * fx) * fy


def render_clip(spec: ClipSpec, return_mask: bool = False, supersample: int = 2):
    """Draw a clip.

    Args:
        spec: The clip's parameters.
        return_mask: Also return the target's coverage per pixel.
        supersample: Anti-aliasing factor for the shapes' edges.

    Returns:
        (T, H, W, 3) uint8 frames, and with ``return_mask`` the (T, H, W) float32 coverage in [0, 1].
    """
    t, n, ss = spec.num_frames, spec.size, supersample
    tex = _texture(spec.texture_seed, n)
    grid = (np.arange(n * ss, dtype=np.float32) + 0.5) / ss
    gx, gy = grid[None, None, :], grid[None, :, None]  # 1, 1, W*ss  and  1, H*ss, 1

    # Target coverage for all frames at once: pixel -> canonical shape coordinates.
    f32 = lambda a: np.asarray(a, np.float32)[:, None, None]  # noqa: E731  (T,) -> T, 1, 1
    inv_r = 1.0 / f32(spec.radius)
    dx = (gx - f32(spec.center_x)) * inv_r  # T, 1, Ws
    dy = (gy - f32(spec.center_y)) * inv_r  # T, Hs, 1
    cos, sin = f32(np.cos(spec.angle)), f32(np.sin(spec.angle))
    u, v = cos * dx + sin * dy, cos * dy - sin * dx  # T, Hs, Ws
    mask = _inside_shape(spec.shape, u, v).astype(np.float32)
    mask = mask.reshape(t, n, ss, n, ss).mean(axis=(2, 4))  # T, H, W

    # Distractors: discs or squares, drawn under the target.
    k = len(spec.distractor_radius)
    dmask = np.empty((k, t, n, n), np.float32)
    for j in range(k):
        ddx = np.abs(gx - f32(spec.distractor_xy[j, :, 0]))  # T, 1, Ws
        ddy = np.abs(gy - f32(spec.distractor_xy[j, :, 1]))  # T, Hs, 1
        rad = float(spec.distractor_radius[j])
        if spec.distractor_square[j]:
            inside = (ddx <= rad * 0.85) & (ddy <= rad * 0.85)
        else:
            inside = ddx * ddx + ddy * ddy <= rad * rad
        dmask[j] = inside.astype(np.float32).reshape(t, n, ss, n, ss).mean(axis=(2, 4))

    frames = np.empty((t, n, n, 3), np.float32)
    c0, c1 = spec.texture_colors
    for i in range(t):
        field = _sample_wrapped(tex, *spec.bg_offset[i])[..., None]
        img = c0 + (c1 - c0) * field
        for j in range(k):
            m = dmask[j, i][..., None]
            img = img * (1 - m) + spec.distractor_color[j] * m
        m = mask[i][..., None]
        img = img * (1 - m) + spec.color * m
        if spec.noise_std > 0:
            img = img + np.random.default_rng(int(spec.noise_seeds[i])).normal(0, spec.noise_std, img.shape)
        frames[i] = img
    frames = np.clip(np.rint(frames * 255.0), 0, 255).astype(np.uint8)
    return (frames, mask) if return_mask else frames


# x264 settings: single-threaded (bit-identical files from run to run), near-lossless quality. (The
# frames reach x264 already in yuv420p, see write_video, not through swscale's CPU-dependent SIMD code.)
_X264_OPTIONS = {"crf": "16", "preset": "veryfast", "threads": "1"}


def _clip_seed(seed: int, split: str, index: int) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence([seed, SPLITS.index(split), index]))


def generate_clip(seed: int, split: str, index: int, size: int, num_frames: int, fps: float) -> ClipSpec:
    """The spec of video ``index`` of ``split``: labels cycle through the classes (balanced splits)."""
    return sample_clip_spec(index % len(CLASS_NAMES), _clip_seed(seed, split, index), size=size,
                            num_frames=num_frames, fps=fps)


def _relative_path(split: str, index: int, label: int) -> str:
    return f"{split}/{CLASS_NAMES[label]}/{split}_{index:06d}.mp4"


def _write_one(job: tuple) -> str:
    root, seed, split, index, size, num_frames, fps = job
    spec = generate_clip(seed, split, index, size, num_frames, fps)
    rel = _relative_path(split, index, spec.label)
    path = Path(root) / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    # Written under a temporary name with the same extension (PyAV picks the container from it), then
    # renamed: a killed run never leaves a truncated video under a listed name.
    tmp = path.with_name(f".{path.stem}.partial{path.suffix}")
    write_video(tmp, render_clip(spec), fps=fps, options=_X264_OPTIONS)
    os.replace(tmp, path)
    return rel


def _manifest(num_train, num_val, num_test, size, num_frames, fps, seed) -> dict:
    return {
        "generator": "regionvit_video.demo.synthetic_actions",
        "generator_version": GENERATOR_VERSION,
        "classes": list(CLASS_NAMES),
        "num_train": num_train, "num_val": num_val, "num_test": num_test,
        "size": size, "num_frames": num_frames, "fps": fps, "seed": seed,
    }


def _is_complete(root: Path, manifest: dict) -> bool:
    try:
        if json.loads((root / "manifest.json").read_text()) != manifest:
            return False
        for split in SPLITS:
            lines = (root / f"{split}.csv").read_text().splitlines()
            if len(lines) != manifest[f"num_{split}"]:
                return False
            for line in lines:
                p = root / line.rsplit(" ", 1)[0]
                if not p.is_file() or p.stat().st_size == 0:
                    return False
        return (root / "classes.txt").read_text().splitlines() == list(CLASS_NAMES)
    except (OSError, ValueError):
        return False


def make_synthetic_actions(
    root: str | os.PathLike,
    *,
    num_train: int = 480,
    num_val: int = 96,
    num_test: int = 96,
    size: int = 64,
    num_frames: int = 16,
    fps: float = 15.0,
    seed: int = 0,
    workers: int | None = None,
    progress: bool = True,
) -> dict:
    """Generate (or find complete) the synthetic direction-paired action dataset under ``root``.

    Idempotent: when ``root/manifest.json`` holds the same parameters and every listed file exists,
    nothing is written. Otherwise every video is (re)written; the manifest is written last, so an
    interrupted run is detected as incomplete and redone. Labels cycle through the classes, so every
    split is balanced (exactly, when its size is a multiple of 8). The output is a pure function of the
    parameters: the same seed gives the same files whatever ``workers`` is.

    Args:
        root: Output folder (created).
        num_train: Training videos.
        num_val: Validation videos.
        num_test: Test videos.
        size: Frame side in pixels (square frames).
        num_frames: Frames per video.
        fps: Frame rate of the files.
        seed: Seed of the whole dataset.
        workers: Encoding processes (default: up to 2, the CPUs available); 0 or 1 encode in-process.
        progress: Show a tqdm bar.

    Returns:
        ``{"root", "classes_file", "train_csv", "val_csv", "test_csv", "num_train", "num_val",
        "num_test", "num_classes", "class_names", "generated", "seconds"}``; ``generated`` is False
        when the folder was already complete.
    """
    for name, value in (("num_train", num_train), ("num_val", num_val), ("num_test", num_test)):
        if value < 0:
            raise ValueError(f"{name} must be >= 0, got {value}")
    if size < 16 or num_frames < 2:
        raise ValueError(f"size must be >= 16 and num_frames >= 2, got size={size}, num_frames={num_frames}")
    root = Path(root)
    t0 = time.perf_counter()
    manifest = _manifest(num_train, num_val, num_test, size, num_frames, fps, seed)
    result = {
        "root": str(root), "classes_file": str(root / "classes.txt"),
        **{f"{s}_csv": str(root / f"{s}.csv") for s in SPLITS},
        "num_train": num_train, "num_val": num_val, "num_test": num_test,
        "num_classes": len(CLASS_NAMES), "class_names": list(CLASS_NAMES),
    }
    if _is_complete(root, manifest):
        return {**result, "generated": False, "seconds": time.perf_counter() - t0}

    root.mkdir(parents=True, exist_ok=True)
    (root / "manifest.json").unlink(missing_ok=True)
    counts = {"train": num_train, "val": num_val, "test": num_test}
    jobs = [(str(root), seed, split, i, size, num_frames, fps) for split in SPLITS for i in range(counts[split])]
    if workers is None:
        workers = min(2, len(os.sched_getaffinity(0)))
    bar = tqdm(total=len(jobs), desc=f"generating {root}", unit="video", disable=not progress)
    rels: list[str] = []
    if workers <= 1:
        for job in jobs:
            rels.append(_write_one(job))
            bar.update()
    else:
        # fork (as DataLoader workers do): the workers only run numpy and PyAV, never torch, so the
        # parent's thread pools do not matter, and they skip spawn's seconds of re-importing torch.
        ctx = get_context("fork" if "fork" in get_all_start_methods() else "spawn")
        with ProcessPoolExecutor(workers, mp_context=ctx) as pool:
            for rel in pool.map(_write_one, jobs, chunksize=16):
                rels.append(rel)
                bar.update()
    bar.close()

    start = 0
    for split in SPLITS:
        lines = [f"{rel} {i % len(CLASS_NAMES)}" for i, rel in enumerate(rels[start:start + counts[split]])]
        start += counts[split]
        (root / f"{split}.csv").write_text("".join(line + "\n" for line in lines))
    (root / "classes.txt").write_text("".join(name + "\n" for name in CLASS_NAMES))
    (root / "manifest.json").write_text(json.dumps(manifest, indent=1) + "\n")
    seconds = time.perf_counter() - t0
    _logger.info("wrote %d videos to %s in %.1f s", len(jobs), root, seconds)
    return {**result, "generated": True, "seconds": seconds}
