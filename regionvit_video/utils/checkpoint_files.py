"""Where training checkpoints live and what they are called: PySlowFast's layout.

``OUTPUT_DIR/checkpoints/`` (epochs counted from 1; lexical order is chronological)::

    checkpoint_epoch_00002.pyth              end of epoch 2
    checkpoint_epoch_00003-iter_000120.pyth  epoch 3 after 120 of its iterations
    checkpoint_epoch_00003.pyth              end of epoch 3

('-' sorts before '.', so a mid-epoch state of epoch 3 lists between the ends of epochs 2 and 3; the
lexically last file, which is what PySlowFast's ``get_last_checkpoint`` picks, is the newest.)

The engine writes and reads them (:mod:`regionvit_video.engine.checkpoint`); the config validation asks
:func:`latest_checkpoint` whether a test-only run has one.
"""
from __future__ import annotations

import re
from pathlib import Path

CHECKPOINT_SUBDIR = "checkpoints"
_NAME_RE = re.compile(r"^checkpoint_epoch_(\d{5})(?:-iter_(\d{6}))?\.pyth$")


def checkpoint_dir(output_dir: str | Path) -> Path:
    return Path(output_dir) / CHECKPOINT_SUBDIR


def checkpoint_name(epoch: int, iteration: int | None = None) -> str:
    """``checkpoint_epoch_{epoch:05d}.pyth``, or the mid-epoch ``...-iter_{iteration:06d}.pyth``."""
    if iteration is None:
        return f"checkpoint_epoch_{epoch:05d}.pyth"
    return f"checkpoint_epoch_{epoch:05d}-iter_{iteration:06d}.pyth"


def list_checkpoints(output_dir: str | Path) -> list[Path]:
    """Checkpoints in ``OUTPUT_DIR/checkpoints``, oldest first (temporary files of writes are ignored)."""
    d = checkpoint_dir(output_dir)
    if not d.is_dir():
        return []
    return sorted(p for p in d.iterdir() if _NAME_RE.match(p.name))


def latest_checkpoint(output_dir: str | Path) -> Path | None:
    ckpts = list_checkpoints(output_dir)
    return ckpts[-1] if ckpts else None
