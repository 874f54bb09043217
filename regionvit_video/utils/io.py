"""Safe checkpoint reading and atomic file writing, used by every part of the toolkit."""
from __future__ import annotations

import argparse
import contextlib
import errno
import hashlib
import os
import pickle
import secrets
import shutil
from pathlib import Path
from typing import Any, Callable

import torch


class UnsafeCheckpointError(RuntimeError):
    """A checkpoint file holds objects that ``weights_only`` loading refuses to build."""


class CheckpointReadError(RuntimeError):
    """A checkpoint file cannot be read at all: empty, truncated, or not a torch checkpoint file."""


# Errors of the storage rather than of the program: a full disk or quota, no permission, a read-only filesystem.
_STORAGE_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EACCES, errno.EPERM, errno.EROFS, errno.EFBIG}

# A torch checkpoint is a zip archive (torch >= 1.6) or a legacy pickle stream (protocol 2 to 5).
_ZIP_MAGIC = b"PK\x03\x04"
_PICKLE_PROTO = 0x80


def _looks_like_torch_file(path: Path) -> bool:
    """Whether ``path`` starts like a torch checkpoint (zip archive or pickle protocol 2-5)."""
    with open(path, "rb") as f:
        head = f.read(4)
    return head == _ZIP_MAGIC or (len(head) >= 2 and head[0] == _PICKLE_PROTO and 2 <= head[1] <= 5)


def safe_torch_load(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> Any:
    """``torch.load`` with ``weights_only=True``: tensors, containers and plain values only.

    Official RegionViT training files also hold an ``argparse.Namespace`` (their ``args``), the one
    extra class allowed. A file that needs anything else (e.g. a crafted pickle that would run
    code) is refused with :class:`UnsafeCheckpointError`; nothing in it is executed.

    Raises:
        FileNotFoundError: ``path`` is not a file.
        UnsafeCheckpointError: a real pickle that needs globals ``weights_only`` forbids.
        CheckpointReadError: (a ``RuntimeError``) the file is empty, truncated or not a torch
            checkpoint at all (neither a zip archive nor a pickle stream); the message names ``path``.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint file not found: {path}")
    if not _looks_like_torch_file(path):
        size = path.stat().st_size
        raise CheckpointReadError(
            f"could not read checkpoint {path}: not a torch checkpoint file (truncated or corrupted?); "
            f"{size} bytes, neither a zip archive nor a pickle stream")
    try:
        with torch.serialization.safe_globals([argparse.Namespace]):
            return torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as e:
        # Keep torch's diagnosis (e.g. "Unsupported global: GLOBAL posix.system"), drop its advice
        # to retry with weights_only=False, which is exactly what must not be done with such a file.
        # (torch >= 2.6 puts that advice first and the refused global on a later line.)
        lines = [ln.strip() for ln in str(e).split("WeightsUnpickler error:")[-1].splitlines() if ln.strip()]
        detail = next((ln for ln in lines if "GLOBAL" in ln or "nsupported" in ln),
                      "content that weights_only loading does not allow")
        raise UnsafeCheckpointError(
            f"refused to load {path}: it holds Python objects beyond tensors and plain containers, "
            f"and unpickling them could run arbitrary code ({detail}). Nothing from it was executed. "
            "Only load such a file if you trust its source and convert it to a plain state_dict."
        ) from e
    except (RuntimeError, EOFError, OSError, ValueError) as e:  # a truncated zip raises a bare OSError
        raise CheckpointReadError(f"could not read checkpoint {path} (truncated, or not a torch checkpoint "
                                  f"file): {type(e).__name__}: {e}") from e


class WriteError(OSError):
    """A file could not be written (full disk, quota, permission, read-only filesystem); the message names
    the file and what is left on its filesystem. Nothing was replaced: the previous file, if any, is intact."""


def _write_error(path: Path, error: OSError) -> WriteError:
    try:
        usage = shutil.disk_usage(path.parent)
        space = f"{usage.free / 2**20:.1f} MiB free of {usage.total / 2**20:.1f} MiB on that filesystem"
    except OSError:
        space = "free space unknown"
    reason = os.strerror(error.errno) if error.errno else str(error)
    return WriteError(error.errno, f"cannot write {path}: {reason} ({space}); nothing was replaced, the "
                                   f"previous files in {path.parent} are intact")


def atomic_write(path: str | os.PathLike, write_fn: Callable[[str], None]) -> None:
    """Write a file through ``write_fn(tmp_path)`` then rename it into place.

    A crash or kill during the write leaves the previous file (if any) intact; readers never see a
    partial file. A write that fails for lack of space, quota or permission removes its partial file
    and raises :class:`WriteError` naming the file and the free space left.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = str(path.parent / f".{path.name}.{secrets.token_hex(6)}.tmp")
    try:
        # Mode 0o666 less the umask, as open() gives (tempfile.mkstemp would make every output 0600).
        os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
        write_fn(tmp)
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as e:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        error = e if isinstance(e, OSError) else e.__cause__ or e.__context__
        if isinstance(error, OSError) and error.errno in _STORAGE_ERRNOS and not isinstance(e, WriteError):
            raise _write_error(path, error) from e
        raise


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    """``text`` (UTF-8) to ``path`` through :func:`atomic_write`."""
    atomic_write(path, lambda tmp: Path(tmp).write_text(text, encoding="utf-8"))


def atomic_torch_save(obj: Any, path: str | os.PathLike) -> None:
    """``torch.save`` through :func:`atomic_write`.

    Saved through a Python file object: torch's own path writer turns a failed write into a bare
    RuntimeError, which would lose the reason (e.g. ENOSPC).
    """
    def write(tmp: str) -> None:
        with open(tmp, "wb") as f:
            torch.save(obj, f)

    atomic_write(path, write)


def sha256_file(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    """Hex SHA-256 of a file's bytes, read in chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()
