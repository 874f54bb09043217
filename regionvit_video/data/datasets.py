"""Kinetics (CSV layout, also any custom dataset) and Something-Something-V2 (official json layout), the
lists of videos to run inference on, and the dataset itself.

List files are read and checked completely when the dataset is built, so a bad line stops the
run before training starts, with the file and line (or entry) named. :data:`DATASETS` says, for each
dataset name, which files a split needs and how they are read: the builder
(:func:`regionvit_video.data.loader.build_dataset`) and the config validation both use it.

Sample contract (the engine codes against it):

- train: ``{"video": (C, T, H, W), "label": int, "index": int, "path": str,
  "num_failures": int}``; the video is the augmented uint8 clip with
  ``DATA_LOADER.NORMALIZE_ON_DEVICE`` (the engine normalises and erases the batch on its device:
  :func:`regionvit_video.data.loader.build_batch_transform`), else the normalised float clip.
  ``index`` and ``path`` are those of the video actually returned (a replacement if the asked-for
  video failed); ``num_failures`` counts the videos that failed and were replaced before this one.
- val: the same keys (``num_failures`` always 0), but a video that cannot be decoded (after
  ``num_retries`` attempts) is never replaced: it gives ``{"video": None, ..., "error": reason}``
  as in test, so validation accuracy is over the videos that decoded and the failures are counted.
- test: ``{"video": (V, C, T, H, W) float, "label", "index", "path"}`` with
  ``V = NUM_ENSEMBLE_VIEWS * NUM_SPATIAL_CROPS`` ordered temporal-major (view ``v`` is temporal
  clip ``v // crops``, crop ``v % crops``). A video that cannot be decoded gives
  ``{"video": None, "label", "index", "path", "error": reason}``; testing never raises and never
  substitutes.

Randomness: a dataset item is a pure function of ``(seed, epoch, index)``. The sampler of
:func:`regionvit_video.data.loader.build_loader` yields ``(index, epoch)`` keys; the item seeds
numpy, torch's CPU RNG and python's ``random`` from them (restoring the caller's RNG states
afterwards), so results do not depend on the number of workers, on their order, or on where a
resumed run restarts.
"""
from __future__ import annotations

import fcntl
import json
import logging
import os
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Literal, Sequence

import numpy as np
import torch
from torch.utils.data import Dataset

from regionvit_video.data.decoder import BACKENDS, DecodeError, read_frames
from regionvit_video.data.sampling import SAMPLINGS, clip_indices
from regionvit_video.data.transforms import SPATIAL_CROPS, TrainTransform, eval_views

logger = logging.getLogger(__name__)

Split = Literal["train", "val", "test"]  # also the mode of a VideoDataset
DATASETS_DIR = Path(__file__).resolve().parents[2] / "datasets"
SSV2_LABELS = "something-something-v2-labels.json"
SSV2_SPLITS = {"train": "something-something-v2-train.json", "validation": "something-something-v2-validation.json"}
# Consecutive replacement videos that may fail before a training item gives up.
MAX_REPLACEMENTS = 50
# What a folder of videos is searched for (list_videos).
VIDEO_EXTENSIONS = (".mp4", ".avi", ".mkv", ".webm", ".mov", ".m4v", ".mpg", ".mpeg", ".ogv", ".flv",
                    ".wmv", ".3gp", ".ts")


class DatasetFormatError(ValueError):
    """A list file (CSV / json) has a malformed line or entry; the message names file and line."""


@dataclass(frozen=True)
class VideoRecord:
    path: str
    label: int


# ---------------------------------------------------------------------------------------------- #
# List files
# ---------------------------------------------------------------------------------------------- #
def _list_lines(path: str) -> Iterator[tuple[int, str]]:
    """``(line number, stripped line)`` of a UTF-8 list file, blank lines skipped; bytes that are not
    UTF-8 raise :class:`DatasetFormatError` naming the file and line."""
    with open(path, "rb") as f:
        raw_lines = f.read().splitlines()
    for lineno, raw in enumerate(raw_lines, start=1):
        try:
            line = raw.decode("utf-8").strip()
        except UnicodeDecodeError as e:
            raise DatasetFormatError(f"{path}:{lineno}: not valid UTF-8 ({e.reason} at byte {e.start})") from None
        if line:
            yield lineno, line


def read_kinetics_csv(csv_path: str | os.PathLike, *, num_classes: int, path_prefix: str = "",
                      separator: str = " ") -> list[VideoRecord]:
    """Read a PySlowFast-layout list: one ``path<separator>label`` a line, no header.

    Blank lines are skipped. Raises :class:`DatasetFormatError` naming the file and line for a
    wrong column count, a non-integer label, a label outside ``[0, num_classes)`` or bytes that
    are not UTF-8; ``FileNotFoundError`` when the file is missing.
    """
    csv_path = str(csv_path)
    if not os.path.isfile(csv_path):
        raise FileNotFoundError(f"list file not found: {csv_path} (DATA.PATH_TO_DATA_DIR)")
    if not separator:
        raise ValueError("DATA.PATH_LABEL_SEPARATOR must not be empty")
    records = []
    for lineno, line in _list_lines(csv_path):
        fields = line.split(separator)
        if len(fields) != 2:
            raise DatasetFormatError(
                f"{csv_path}:{lineno}: expected 2 columns 'path{separator!r}label' separated by "
                f"DATA.PATH_LABEL_SEPARATOR={separator!r}, got {len(fields)}: {line!r}")
        path, label_text = fields[0].strip(), fields[1].strip()
        try:
            label = int(label_text)
        except ValueError:
            raise DatasetFormatError(f"{csv_path}:{lineno}: label {label_text!r} is not an integer") from None
        if not 0 <= label < num_classes:
            raise DatasetFormatError(
                f"{csv_path}:{lineno}: label {label} out of range for MODEL.NUM_CLASSES={num_classes}")
        if not path:
            raise DatasetFormatError(f"{csv_path}:{lineno}: empty path")
        records.append(VideoRecord(os.path.join(path_prefix, path), label))
    if not records:
        raise DatasetFormatError(f"{csv_path}: no videos listed")
    return records


@dataclass(frozen=True)
class VideoFile:
    """A video to run inference on: its file and its key, the path relative to the folder (or as listed),
    '/'-separated, with its extension (outputs are named after it)."""

    path: str
    rel: str


def list_videos(source: str | os.PathLike, *, path_prefix: str = "", separator: str = " ",
                source_key: str = "the video list") -> list[VideoFile]:
    """The videos of a folder (recursive, sorted, :data:`VIDEO_EXTENSIONS`) or of a list file in the Kinetics
    CSV layout, where a line is ``path`` or ``path<separator>label`` (the label is not used).

    Blank lines are skipped; a path listed twice is kept once. Paths in a list are joined to
    ``path_prefix`` and keyed as listed (an absolute path is keyed without its leading '/', and a '..'
    part is keyed as '__', so no key leads out of an output folder named after it).

    Args:
        source: the folder or list file.
        path_prefix: DATA.PATH_PREFIX.
        separator: DATA.PATH_LABEL_SEPARATOR.
        source_key: the config key ``source`` came from, for the error messages.

    Raises:
        FileNotFoundError: ``source`` does not exist.
        DatasetFormatError: a list line has more than two columns (file and line named), or nothing is found.
    """
    source = str(source)
    if not source:
        raise ValueError(f"{source_key} is empty: give a folder of videos or a CSV list")
    if os.path.isdir(source):
        items = []
        for dirpath, dirnames, filenames in os.walk(source):
            dirnames.sort()
            for name in sorted(filenames):
                if name.lower().endswith(VIDEO_EXTENSIONS) and not name.startswith("."):
                    full = os.path.join(dirpath, name)
                    items.append(VideoFile(full, Path(os.path.relpath(full, source)).as_posix()))
        if not items:
            raise DatasetFormatError(f"{source_key} {source}: no video files ({', '.join(VIDEO_EXTENSIONS)}) found")
        return items
    if not os.path.isfile(source):
        raise FileNotFoundError(f"{source_key} {source}: no such file or folder")
    listed: dict[str, VideoFile] = {}
    for lineno, line in _list_lines(source):
        fields = line.split(separator) if separator else [line]
        if len(fields) > 2:
            raise DatasetFormatError(f"{source}:{lineno}: expected 'path' or 'path{separator}label', got {line!r} "
                                     f"(DATA.PATH_LABEL_SEPARATOR={separator!r})")
        path = fields[0].strip()
        # Never '..' in a key: "../../x.mp4" would name OUTPUT_DIR/features/../../x.npy.
        rel = "/".join("__" if part == ".." else part for part in Path(path).parts if part not in ("/", "."))
        listed.setdefault(rel, VideoFile(os.path.join(path_prefix, path), rel))
    if not listed:
        raise DatasetFormatError(f"{source}: no videos listed")
    return list(listed.values())


def _read_json(path: str):
    if not os.path.isfile(path):
        raise FileNotFoundError(f"SSv2 file not found: {path} (DATA.PATH_TO_DATA_DIR)")
    try:
        with open(path, "rb") as f:
            return json.loads(f.read().decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise DatasetFormatError(f"{path}: not valid UTF-8 JSON: {e}") from None


def read_ssv2_labels(data_dir: str | os.PathLike) -> dict[str, int]:
    """``something-something-v2-labels.json``: template text (no brackets) -> class id."""
    path = os.path.join(str(data_dir), SSV2_LABELS)
    labels = _read_json(path)
    if not isinstance(labels, dict):
        raise DatasetFormatError(f"{path}: expected an object mapping template -> id")
    out = {}
    for name, value in labels.items():
        try:
            out[name] = int(value)
        except (TypeError, ValueError):
            raise DatasetFormatError(f"{path}: entry {name!r} has a non-integer id {value!r}") from None
    return out


def read_ssv2_split(data_dir: str | os.PathLike, split: Literal["train", "validation"], *, path_prefix: str = "",
                    num_classes: int = 174, extension: str = ".webm") -> list[VideoRecord]:
    """Read an official SSv2 split json; videos are ``<path_prefix>/<id>.webm``.

    The ``[something]`` brackets of each entry's template are removed to find its label in the
    labels json. An entry without ``id`` / ``template``, or whose template is not in the labels
    json, raises :class:`DatasetFormatError` naming the file and the entry.
    """
    labels = read_ssv2_labels(data_dir)
    path = os.path.join(str(data_dir), SSV2_SPLITS[split])
    entries = _read_json(path)
    if not isinstance(entries, list):
        raise DatasetFormatError(f"{path}: expected a list of entries")
    records = []
    for n, entry in enumerate(entries):
        if not isinstance(entry, dict) or "id" not in entry or "template" not in entry:
            raise DatasetFormatError(f"{path}: entry #{n} needs 'id' and 'template': {str(entry)[:200]}")
        template = str(entry["template"]).replace("[", "").replace("]", "")
        if template not in labels:
            raise DatasetFormatError(
                f"{path}: entry #{n} (id {entry['id']}) has template {entry['template']!r}, which is not in "
                f"{SSV2_LABELS}")
        label = labels[template]
        if not 0 <= label < num_classes:
            raise DatasetFormatError(f"{path}: entry #{n} (id {entry['id']}): label {label} out of range for "
                                     f"MODEL.NUM_CLASSES={num_classes}")
        records.append(VideoRecord(os.path.join(path_prefix, f"{entry['id']}{extension}"), label))
    if not records:
        raise DatasetFormatError(f"{path}: no videos listed")
    return records


def load_class_names(path: str | os.PathLike, num_classes: int | None = None) -> list[str]:
    """Class names, one a line (line i: class i); checks the count against ``num_classes``."""
    with open(path, encoding="utf-8") as f:
        names = [line.rstrip("\r\n") for line in f if line.strip()]
    if num_classes is not None and len(names) != num_classes:
        raise ValueError(f"{path}: {len(names)} class names, but MODEL.NUM_CLASSES is {num_classes}")
    return names


# ---------------------------------------------------------------------------------------------- #
# The datasets: files, readers and class names by name
# ---------------------------------------------------------------------------------------------- #
@dataclass(frozen=True)
class DatasetLayout:
    """How a dataset name (TRAIN.DATASET / TEST.DATASET) maps to files in DATA.PATH_TO_DATA_DIR and to records.

    ``split`` is "train", "val" or "test"; the test split reads the list ``test_split`` (TEST.SPLIT) names.
    """

    name: str
    random_flip: bool = True  # False: left/right is part of the labels, so training never flips

    def split_files(self, split: Split, test_split: str) -> list[tuple[str, str]]:
        """``(file name, what it is)`` of every file ``split`` reads."""
        raise NotImplementedError

    def read(self, data_dir: str, split: Split, test_split: str, *, num_classes: int, path_prefix: str = "",
             separator: str = " ") -> list[VideoRecord]:
        """The records of ``split`` (every line or entry checked: :class:`DatasetFormatError` names it)."""
        raise NotImplementedError

    def class_names(self, data_dir: str, num_classes: int) -> list[str]:
        """The dataset's own class names (``class_<i>`` where it has none)."""
        return [f"class_{i}" for i in range(num_classes)]


class KineticsLayout(DatasetLayout):
    """PySlowFast's CSV layout (Kinetics and any custom dataset): ``{train,val,<TEST.SPLIT>}.csv``."""

    def split_files(self, split: Split, test_split: str) -> list[tuple[str, str]]:
        name = test_split if split == "test" else split
        return [(f"{name}.csv", f"{name} list")]

    def read(self, data_dir, split, test_split, *, num_classes, path_prefix="", separator=" "):
        (csv_name, _), = self.split_files(split, test_split)
        return read_kinetics_csv(os.path.join(data_dir, csv_name), num_classes=num_classes, path_prefix=path_prefix,
                                 separator=separator)

    def class_names(self, data_dir, num_classes):
        """``datasets/kinetics400_classes.txt`` for a 400-class model."""
        path = DATASETS_DIR / "kinetics400_classes.txt"
        if num_classes == 400 and path.is_file():
            return load_class_names(path, num_classes)
        return super().class_names(data_dir, num_classes)


class SSv2Layout(DatasetLayout):
    """The official Something-Something-V2 jsons; "test" reads the validation json (its labels are public)
    unless TEST.SPLIT is "train"."""

    def _json_split(self, split: Split, test_split: str) -> Literal["train", "validation"]:
        return "train" if (test_split if split == "test" else split) == "train" else "validation"

    def split_files(self, split: Split, test_split: str) -> list[tuple[str, str]]:
        return [(SSV2_LABELS, "SSv2 file"), (SSV2_SPLITS[self._json_split(split, test_split)], "SSv2 file")]

    def read(self, data_dir, split, test_split, *, num_classes, path_prefix="", separator=" "):
        return read_ssv2_split(data_dir, self._json_split(split, test_split), path_prefix=path_prefix,
                               num_classes=num_classes)

    def class_names(self, data_dir, num_classes):
        """The labels json, in id order (``class_<i>`` without it)."""
        if not os.path.isfile(os.path.join(str(data_dir), SSV2_LABELS)):
            return super().class_names(data_dir, num_classes)
        by_id = {v: k for k, v in read_ssv2_labels(data_dir).items()}
        return [by_id.get(i, f"class_{i}") for i in range(num_classes)]


DATASETS: dict[str, DatasetLayout] = {
    "kinetics": KineticsLayout("kinetics"),
    "ssv2": SSv2Layout("ssv2", random_flip=False),  # left/right is in its labels ("... from left to right")
}


# ---------------------------------------------------------------------------------------------- #
# Bad-video log
# ---------------------------------------------------------------------------------------------- #
def append_bad_video(log_path: str | os.PathLike, video_path: str, reason: str) -> None:
    """Append ``path\\treason`` as one line; safe with many workers / processes appending.

    The line is written with one ``write`` on an ``O_APPEND`` descriptor under an exclusive
    ``flock``, so concurrent lines never interleave.
    """
    reason = " ".join(str(reason).split())
    line = f"{video_path}\t{reason}\n".encode("utf-8", "replace")
    fd = os.open(str(log_path), os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        try:
            os.write(fd, line)
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)


# ---------------------------------------------------------------------------------------------- #
# Dataset
# ---------------------------------------------------------------------------------------------- #
class _SeededRNG:
    """Seed numpy (returned generator), torch CPU and python ``random``; restore them on exit."""

    def __init__(self, *entropy: int):
        self.seed = int(np.random.SeedSequence([int(e) & 0xFFFFFFFF for e in entropy]).generate_state(1)[0])

    def __enter__(self) -> np.random.Generator:
        self._torch_state = torch.get_rng_state()
        self._py_state = random.getstate()
        # The CPU generator only: torch.manual_seed would also reseed every CUDA device (and pay
        # for a lazy-call stack capture per accelerator type on each sample).
        torch.random.default_generator.manual_seed(self.seed)
        random.seed(self.seed)
        return np.random.default_rng(self.seed)

    def __exit__(self, *exc) -> None:
        torch.set_rng_state(self._torch_state)
        random.setstate(self._py_state)


class VideoDataset(Dataset):
    """Clips from a list of (path, label) records: decoding, sampling, transforms, failure policy.

    Args:
        records: the videos and labels.
        mode: "train" (random clip and augmentation), "val" (one deterministic view) or "test"
            (all views of each video).
        num_frames: frames per clip.
        sampling: "uniform" or "dense" (see :mod:`regionvit_video.data.sampling`).
        sampling_rate: frame stride of dense sampling.
        target_fps: frame rate ``sampling_rate`` refers to (dense sampling).
        train_transform: the training augmentation (mode "train").
        test_scale: short side of the val/test views.
        test_crop_size: side of the val/test crops.
        num_ensemble_views: temporal clips per video (test).
        num_spatial_crops: crops per clip (test; val always uses 1 centre crop).
        mean: normalisation mean (val/test).
        std: normalisation std (val/test).
        decoder: "decord" or "pyav" (decord falls back to PyAV per file).
        decode_threads: decoder threads per reader.
        decode_timeout: seconds per item decode (0: no bound).
        num_retries: attempts per video before it is replaced (train/val).
        seed: base seed of the per-item RNG.
        bad_videos_path: file that gets one ``path\\treason`` line per failed video (or None).
        class_names: names of the classes (for logs and predictions).
    """

    def __init__(self, records: Sequence[VideoRecord], *, mode: Split, num_frames: int = 8,
                 sampling: str = "uniform", sampling_rate: int = 8, target_fps: float = 30.0,
                 train_transform: TrainTransform | None = None, test_scale: int = 256, test_crop_size: int = 224,
                 num_ensemble_views: int = 1, num_spatial_crops: int = 3,
                 mean: Sequence[float] = (0.485, 0.456, 0.406), std: Sequence[float] = (0.229, 0.224, 0.225),
                 decoder: str = "decord", decode_threads: int = 1, decode_timeout: float = 60.0,
                 num_retries: int = 2, seed: int = 0, bad_videos_path: str | None = None,
                 class_names: Sequence[str] | None = None):
        if mode not in ("train", "val", "test"):
            raise ValueError(f"mode must be 'train', 'val' or 'test', got {mode!r}")
        if mode == "train" and train_transform is None:
            raise ValueError("mode 'train' needs a train_transform")
        if sampling not in SAMPLINGS:
            raise ValueError(f"DATA.SAMPLING must be one of {SAMPLINGS}, got {sampling!r}")
        if decoder not in BACKENDS:
            raise ValueError(f"DATA.DECODER must be one of {BACKENDS}, got {decoder!r}")
        if num_ensemble_views < 1 or num_spatial_crops not in SPATIAL_CROPS:
            raise ValueError(f"TEST.NUM_ENSEMBLE_VIEWS must be >= 1 and TEST.NUM_SPATIAL_CROPS one of {SPATIAL_CROPS}")
        self.records = list(records)
        self.mode = mode
        self.num_frames, self.sampling, self.sampling_rate, self.target_fps = num_frames, sampling, sampling_rate, target_fps
        self.train_transform = train_transform
        self.test_scale, self.test_crop_size = test_scale, test_crop_size
        self.num_ensemble_views, self.num_spatial_crops = num_ensemble_views, num_spatial_crops
        self.mean, self.std = tuple(mean), tuple(std)
        self.decoder, self.decode_threads, self.decode_timeout = decoder, decode_threads, decode_timeout
        self.num_retries = max(1, int(num_retries))
        self.seed = seed
        self.bad_videos_path = bad_videos_path
        self.class_names = list(class_names) if class_names is not None else None
        self.epoch = 0

    def __len__(self) -> int:
        return len(self.records)

    @property
    def num_views(self) -> int:
        """Views per test item (temporal clips x spatial crops)."""
        return self.num_ensemble_views * self.num_spatial_crops

    def set_epoch(self, epoch: int) -> None:
        """Epoch used for integer keys (the loader's sampler passes the epoch with each index)."""
        self.epoch = int(epoch)

    # ------------------------------------------------------------------------------------------ #
    def _decode(self, path: str, indices_fn) -> np.ndarray:
        frames, _, _ = read_frames(path, indices_fn, self.decoder, num_threads=self.decode_threads,
                                   timeout=self.decode_timeout)
        return frames

    def _train_clip(self, record: VideoRecord, rng: np.random.Generator) -> torch.Tensor:
        def indices_fn(n, fps):
            return clip_indices(self.sampling, n, self.num_frames, train=True, rng=rng,
                                sampling_rate=self.sampling_rate, fps=fps, target_fps=self.target_fps)

        frames = torch.from_numpy(self._decode(record.path, indices_fn))
        return self.train_transform(frames)

    def _eval_views(self, record: VideoRecord, num_clips: int, num_crops: int) -> torch.Tensor:
        """(num_clips * num_crops, C, T, H, W), temporal-major; all clips decoded in one pass."""
        t = self.num_frames

        def indices_fn(n, fps):
            return np.concatenate([
                clip_indices(self.sampling, n, t, train=False, clip_idx=k, num_clips=num_clips,
                             sampling_rate=self.sampling_rate, fps=fps, target_fps=self.target_fps)
                for k in range(num_clips)])

        frames = torch.from_numpy(self._decode(record.path, indices_fn))  # K*T, H, W, 3
        views = [eval_views(frames[k * t:(k + 1) * t], scale=self.test_scale, crop_size=self.test_crop_size,
                            num_crops=num_crops, mean=self.mean, std=self.std) for k in range(num_clips)]
        return torch.cat(views)

    def _log_failure(self, path: str, reason: str) -> None:
        logger.warning("failed to decode %s: %s", path, reason)
        if self.bad_videos_path:
            try:
                append_bad_video(self.bad_videos_path, path, reason)
            except OSError as e:
                logger.error("cannot append to %s: %s", self.bad_videos_path, e)

    def __getitem__(self, key) -> dict:
        index, epoch = key if isinstance(key, tuple) else (key, self.epoch)
        index = int(index)
        if self.mode == "test":
            return self._test_item(index)
        return self._train_val_item(index, int(epoch))

    def _test_item(self, index: int) -> dict:
        record = self.records[index]
        out = {"label": record.label, "index": index, "path": record.path}
        try:
            out["video"] = self._eval_views(record, self.num_ensemble_views, self.num_spatial_crops)
        except DecodeError as e:
            self._log_failure(record.path, e.reason)
            out.update(video=None, error=e.reason)
        except Exception as e:  # anything else about this file must not kill a test run either
            reason = f"{type(e).__name__}: {e}"
            self._log_failure(record.path, reason)
            out.update(video=None, error=reason)
        return out

    def _train_val_item(self, index: int, epoch: int) -> dict:
        train = self.mode == "train"
        failures, last_error = 0, ""
        for replacement in range(MAX_REPLACEMENTS + 1):
            record = self.records[index]
            reason = ""
            for attempt in range(self.num_retries):
                # val is the same every epoch; train varies with the epoch.
                with _SeededRNG(self.seed, epoch if train else 0, index, attempt, int(train)) as rng:
                    try:
                        video = self._train_clip(record, rng) if train else self._eval_views(record, 1, 1)[0]
                    except DecodeError as e:
                        reason = e.reason
                        continue
                    except (RuntimeError, ValueError, OSError) as e:
                        reason = f"{type(e).__name__}: {e}"
                        continue
                return {"video": video, "label": record.label, "index": index, "path": record.path,
                        "num_failures": failures}
            failures += 1
            last_error = f"{record.path}: {reason}"
            self._log_failure(record.path, reason)
            if not train:  # val: no substitute (it would hide the failure and skew the accuracy)
                return {"video": None, "label": record.label, "index": index, "path": record.path,
                        "num_failures": 0, "error": reason or "unknown error"}
            # Deterministic replacement: a function of (seed, epoch, original index, replacement).
            with _SeededRNG(self.seed, epoch if train else 0, index, replacement, 7919) as rng:
                index = int(rng.integers(len(self.records)))
        raise RuntimeError(f"{MAX_REPLACEMENTS + 1} videos in a row failed to decode; last: {last_error}")
