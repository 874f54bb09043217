"""Tiny on-disk datasets for the tests (test fixtures, outside the package).

``make_kinetics_folder`` writes a few short real videos in a class-per-folder tree with the
Kinetics CSV lists next to it; ``make_ssv2_folder`` does the same in SSv2's official layout. Each
class has its own colour and motion direction, so a model can actually fit them.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

from regionvit_video.data.video_writer import write_video


def class_clip(label: int, frames: int, height: int, width: int, rng: np.random.Generator) -> np.ndarray:
    """A (T, H, W, 3) uint8 clip for class ``label``: a class-coloured bar moving in a class direction."""
    colour = np.array([(label * 97) % 256, (label * 57 + 80) % 256, (label * 151 + 160) % 256], np.uint8)
    clip = rng.integers(0, 40, (frames, height, width, 3), dtype=np.uint8)
    bar = max(2, width // 6)
    direction = 1 if label % 2 == 0 else -1
    speed = 1 + (label // 2) % 3
    start = int(rng.integers(0, width))
    for t in range(frames):
        x = (start + direction * speed * t * max(1, width // 32)) % width
        clip[t, :, x:x + bar] = colour
    return clip


def _size(size) -> tuple[int, int]:
    if isinstance(size, int):
        return size, size
    h, w = size
    return int(h), int(w)


def make_kinetics_folder(root: str | os.PathLike, num_classes: int = 3, videos_per_class: int = 2,
                         size: int | tuple[int, int] = (48, 64), frames: int = 16, seed: int = 0,
                         ext: str = ".mp4", codec: str = "libx264", fps: float = 25.0) -> dict:
    """Write a Kinetics-layout dataset: ``root/videos/<class>/<name><ext>`` and ``root/{train,val,test}.csv``.

    Every video is listed in all three CSVs (``relative/path label``, space-separated, paths
    relative to ``root/videos``), and ``root/classes.txt`` holds the class names.

    Args:
        root: output folder (created).
        num_classes: number of classes.
        videos_per_class: videos per class.
        size: (height, width) of the videos, or one int for square videos.
        frames: frames per video.
        seed: seed of the pixel content.
        ext: container extension (".mp4", ".mkv", ".avi", ".webm").
        codec: PyAV encoder name matching the container.
        fps: frame rate.

    Returns:
        ``{"data_dir", "prefix", "class_names_file", "class_names", "num_classes", "videos": [(path, label)],
        "csv": {split: path}, "cfg_opts": [KEY, VALUE, ...]}``; ``cfg_opts`` points a config at the
        folder with ``cfg.merge_from_list(info["cfg_opts"])``.
    """
    root = Path(root)
    videos_dir = root / "videos"
    h, w = _size(size)
    rng = np.random.default_rng(seed)
    class_names = [f"class {i:02d}" for i in range(num_classes)]
    lines, videos = [], []
    for label, name in enumerate(class_names):
        folder = videos_dir / name.replace(" ", "_")
        folder.mkdir(parents=True, exist_ok=True)
        for j in range(videos_per_class):
            path = folder / f"video_{j:03d}{ext}"
            write_video(path, class_clip(label, frames, h, w, rng), fps=fps, codec=codec)
            rel = path.relative_to(videos_dir).as_posix()
            lines.append(f"{rel} {label}")
            videos.append((str(path), label))
    csv = {}
    for split in ("train", "val", "test"):
        csv[split] = str(root / f"{split}.csv")
        Path(csv[split]).write_text("\n".join(lines) + "\n", encoding="utf-8")
    names_file = root / "classes.txt"
    names_file.write_text("\n".join(class_names) + "\n", encoding="utf-8")
    return {
        "data_dir": str(root), "prefix": str(videos_dir), "class_names_file": str(names_file),
        "class_names": class_names, "num_classes": num_classes, "videos": videos, "csv": csv,
        "cfg_opts": ["TRAIN.DATASET", "kinetics", "TEST.DATASET", "kinetics", "DATA.PATH_TO_DATA_DIR", str(root),
                     "DATA.PATH_PREFIX", str(videos_dir), "DATA.CLASS_NAMES", str(names_file),
                     "MODEL.NUM_CLASSES", num_classes],
    }


def make_ssv2_folder(root: str | os.PathLike, templates: list[str] | None = None, videos_per_class: int = 1,
                     size: int | tuple[int, int] = (48, 64), frames: int = 12, seed: int = 0) -> dict:
    """Write a tiny dataset in SSv2's official layout: the three jsons and ``videos/<id>.webm`` (VP9).

    ``templates`` are label templates with ``[something]`` placeholders (default: three real
    SSv2 ones). The labels json holds the bracket-free names, as the official file does. Every
    video appears in both the train and the validation json.
    """
    root = Path(root)
    videos_dir = root / "videos"
    videos_dir.mkdir(parents=True, exist_ok=True)
    templates = templates or ["Pushing [something] from left to right", "Pushing [something] from right to left",
                              "Putting [something] on a surface"]
    names = [t.replace("[", "").replace("]", "") for t in templates]
    labels = {name: str(i) for i, name in enumerate(sorted(names))}
    h, w = _size(size)
    rng = np.random.default_rng(seed)
    entries, vid = [], 1000
    for template, name in zip(templates, names):
        label = int(labels[name])
        for _ in range(videos_per_class):
            vid += 1
            write_video(videos_dir / f"{vid}.webm", class_clip(label, frames, h, w, rng), fps=12, codec="libvpx-vp9")
            entries.append({"id": str(vid), "label": name.lower(), "template": template, "placeholders": ["thing"]})
    (root / "something-something-v2-labels.json").write_text(json.dumps(labels, indent=1), encoding="utf-8")
    for split in ("train", "validation"):
        (root / f"something-something-v2-{split}.json").write_text(json.dumps(entries), encoding="utf-8")
    return {
        "data_dir": str(root), "prefix": str(videos_dir), "num_classes": len(names), "entries": entries,
        "labels": labels,
        "cfg_opts": ["TRAIN.DATASET", "ssv2", "TEST.DATASET", "ssv2", "DATA.PATH_TO_DATA_DIR", str(root),
                     "DATA.PATH_PREFIX", str(videos_dir), "MODEL.NUM_CLASSES", len(names)],
    }
