"""Safe checkpoint reading and atomic file writing, used by every part of the toolkit."""
from __future__ import annotations

import argparse
import os
import pickle
import tempfile
from pathlib import Path
from typing import Any, Callable

import torch


class UnsafeCheckpointError(RuntimeError):
    """A checkpoint file holds objects that ``weights_only`` loading refuses to build."""


def safe_torch_load(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> Any:
    """``torch.load`` with ``weights_only=True``: tensors, containers and plain values only.

    Official RegionViT training files also hold an ``argparse.Namespace`` (their ``args``), the one
    extra class allowed. A file that needs anything else (e.g. a crafted pickle that would run
    code) is refused with :class:`UnsafeCheckpointError`; nothing in it is executed.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint file not found: {path}")
    try:
        with torch.serialization.safe_globals([argparse.Namespace]):
            return torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as e:
        # Keep torch's diagnosis (e.g. "Unsupported global: GLOBAL posix.system"), drop its advice
        # to retry with weights_only=False, which is exactly what must not be done with such a file.
        detail = str(e).split("WeightsUnpickler error:")[-1].strip().split("\n")[0].strip()
        raise UnsafeCheckpointError(
            f"refused to load {path}: it holds Python objects beyond tensors and plain containers, "
            f"and unpickling them could run arbitrary code ({detail}). Nothing from it was executed. "
            "Only load such a file if you trust its source and convert it to a plain state_dict."
        ) from e
    except (RuntimeError, EOFError) as e:
        raise RuntimeError(f"could not read checkpoint {path}: {e}") from e


def atomic_write(path: str | os.PathLike, write_fn: Callable[[str], None]) -> None:
    """Write a file through ``write_fn(tmp_path)`` then rename it into place.

    A crash or kill during the write leaves the previous file (if any) intact; readers never see a
    partial file.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        write_fn(tmp)
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def atomic_torch_save(obj: Any, path: str | os.PathLike) -> None:
    """``torch.save`` through :func:`atomic_write`."""
    atomic_write(path, lambda tmp: torch.save(obj, tmp))
