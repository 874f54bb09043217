"""Checkpoints: PySlowFast names, atomic writes, safe loading, RNG states for exact resume, and the
weights of an inference job.

Layout in ``OUTPUT_DIR/checkpoints/``: :mod:`regionvit_video.utils.checkpoint_files` (PySlowFast's names,
``checkpoint_epoch_00003-iter_000120.pyth`` for a mid-epoch state; lexical order is chronological).

Inference (test, features, prediction) takes its weights from :func:`resolve_inference_weights` and
builds its model with :func:`load_inference_model`.

Auto-resume takes the newest file that loads (:func:`load_newest_checkpoint`: a damaged newest file
is skipped with a warning, an unsafe one stops the run), and training removes the ``.checkpoint_*.tmp``
files a killed write left behind (:func:`remove_stale_temporary_files`).

A checkpoint holds only tensors, plain containers and plain values, so it loads with
``weights_only=True`` (:func:`regionvit_video.utils.io.safe_torch_load`):

- ``model_state``: the model's state_dict without any DDP ``module.`` prefix;
- ``optimizer_state``, ``scheduler_state``, ``scaler_state`` (or None), ``ema_state`` (or None);
- ``rng_states``: one dict per rank (python, numpy, torch, and the rank's current CUDA device or None);
- ``epoch`` (1-based epoch the state belongs to), ``iteration`` (iterations of it done),
  ``epoch_complete``, ``global_step`` (optimizer updates so far), ``iters_per_epoch``;
- ``cfg``: the run's config as a YAML string; ``meters``: per-rank running sums of a partial epoch.
"""
from __future__ import annotations

import logging
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch

from regionvit_video.models.base import unwrap_model
from regionvit_video.utils.checkpoint_files import (CHECKPOINT_SUBDIR, checkpoint_dir, checkpoint_name,
                                                    latest_checkpoint, list_checkpoints)
from regionvit_video.utils.io import CheckpointReadError, atomic_torch_save, safe_torch_load

logger = logging.getLogger(__name__)

# Temporary files of atomic checkpoint writes (utils.io.atomic_write): ".checkpoint_....pyth.<hex>.tmp".
_TMP_GLOB = ".checkpoint_*.tmp"


class CheckpointFormatError(ValueError):
    """A file given as a toolkit checkpoint is something else (e.g. an official image checkpoint)."""


def remove_stale_temporary_files(output_dir: str | Path) -> list[Path]:
    """Delete the ``.checkpoint_*.tmp`` files a killed checkpoint write left in ``OUTPUT_DIR/checkpoints``.

    Each is as large as a checkpoint and never becomes one (the write renames it into place only
    when complete). Call it only when no checkpoint of this run is being written (rank 0, before
    training). Returns the removed paths; each removal is logged with its size.
    """
    d = checkpoint_dir(output_dir)
    if not d.is_dir():
        return []
    removed = []
    for p in sorted(d.glob(_TMP_GLOB)):
        if not p.is_file():
            continue
        try:
            size = p.stat().st_size
            p.unlink()
        except FileNotFoundError:
            continue
        except OSError as e:
            logger.warning("cannot remove stale temporary checkpoint file %s: %s", p, e)
            continue
        logger.info("removed %s (%.1f MB), left by a checkpoint write that did not finish", p, size / 2**20)
        removed.append(p)
    return removed


def prune_checkpoints(output_dir: str | Path, keep: int) -> list[Path]:
    """Delete all but the newest ``keep`` checkpoints (0: keep all); returns the deleted paths."""
    if keep <= 0:
        return []
    old = list_checkpoints(output_dir)[:-keep]
    for p in old:
        p.unlink(missing_ok=True)
    return old


def strip_prefix(state: dict[str, Any], prefix: str = "module.") -> dict[str, Any]:
    """State dict keys without a leading ``prefix`` (DDP's ``module.``)."""
    if state and all(k.startswith(prefix) for k in state):
        return {k[len(prefix):]: v for k, v in state.items()}
    return state


# ------------------------------------------------------------------------------------------------ #
# RNG states as tensors and plain values (numpy arrays are not allowed by weights_only loading)
# ------------------------------------------------------------------------------------------------ #
def get_rng_state() -> dict[str, Any]:
    """This process's python, numpy, torch and CUDA generator states, weights_only-loadable.

    ``"cuda"`` is the generator state of this process's current CUDA device only (one process per GPU:
    the only CUDA generator it draws from), or None when CUDA is not in use in this process (not
    available, or not initialised: its generators are then still as seeded, and reading them would
    initialise CUDA, which a process that forks DataLoader workers later should not do needlessly).
    """
    np_state = np.random.get_state()
    cuda = None
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        cuda = torch.cuda.get_rng_state(torch.cuda.current_device())
    return {
        "python": random.getstate(),
        "numpy": {
            "name": np_state[0],
            "keys": torch.from_numpy(np_state[1].astype(np.int64)),
            "pos": int(np_state[2]),
            "has_gauss": int(np_state[3]),
            "cached_gaussian": float(np_state[4]),
        },
        "torch": torch.get_rng_state(),
        "cuda": cuda,
    }


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore what :func:`get_rng_state` returned; the CUDA state goes to the current device.

    Checkpoints written before the CUDA state became one device's hold a list with every visible device's
    state: the entry of the current device index is restored (the device this rank used), or the only
    entry when the list has one (one GPU visible per process).
    """
    py = state["python"]
    random.setstate((py[0], tuple(py[1]), py[2]))
    n = state["numpy"]
    np.random.set_state((n["name"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"],
                         n["cached_gaussian"]))
    torch.set_rng_state(state["torch"])
    cuda = state.get("cuda")
    if cuda is None or (isinstance(cuda, (list, tuple)) and not cuda):
        return
    if not torch.cuda.is_available():
        logger.warning("checkpoint has a CUDA RNG state but CUDA is not available: CUDA RNG not restored")
        return
    device = torch.cuda.current_device()
    if isinstance(cuda, (list, tuple)):  # the old format: every visible device's state
        if len(cuda) == 1:
            cuda = cuda[0]
        elif device < len(cuda):
            cuda = cuda[device]
        else:
            logger.warning("checkpoint has CUDA RNG states for %d devices and none for the current device %d: "
                           "CUDA RNG not restored", len(cuda), device)
            return
    torch.cuda.set_rng_state(cuda, device)


# ------------------------------------------------------------------------------------------------ #
# Save and load
# ------------------------------------------------------------------------------------------------ #
def save_checkpoint(path: str | Path, **content: Any) -> Path:
    """Write ``content`` atomically (a kill during the write leaves the previous file intact)."""
    path = Path(path)
    atomic_torch_save(content, path)
    return path


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """Read a toolkit checkpoint safely (weights_only); checks it has a ``model_state``."""
    ckpt = safe_torch_load(path)
    if not isinstance(ckpt, dict) or "model_state" not in ckpt:
        keys = list(ckpt)[:8] if isinstance(ckpt, dict) else type(ckpt).__name__
        raise CheckpointFormatError(
            f"{path} is not a regionvit-video checkpoint (no 'model_state'; found {keys}). To start "
            "from an image checkpoint use MODEL.PRETRAINED; to fine-tune use TRAIN.CHECKPOINT_FILE_PATH"
        )
    return ckpt


def load_newest_checkpoint(output_dir: str | Path) -> tuple[Path | None, dict[str, Any] | None]:
    """The newest checkpoint in ``OUTPUT_DIR/checkpoints`` that loads, and its content (auto-resume).

    A damaged file (empty, truncated, unreadable, or without a ``model_state``) is skipped with a
    warning naming it, and kept on disk; the next older one is tried. A file refused as unsafe
    (:class:`~regionvit_video.utils.io.UnsafeCheckpointError`) is never skipped: the error propagates.

    Returns:
        ``(path, checkpoint)``, or ``(None, None)`` when the folder holds no checkpoint.

    Raises:
        CheckpointReadError: checkpoints exist but none of them loads (the message names each file).
        UnsafeCheckpointError: the newest file that is not damaged needs forbidden globals.
    """
    damaged: list[str] = []
    for path in reversed(list_checkpoints(output_dir)):
        try:
            return path, load_checkpoint(path)
        except (CheckpointReadError, CheckpointFormatError) as e:
            logger.warning("checkpoint %s is damaged and is skipped (left in place; a checkpoint of the same "
                           "name written later replaces it): %s", path, e)
            damaged.append(f"{path}: {e}")
    if damaged:
        raise CheckpointReadError(
            f"auto-resume: no checkpoint in {checkpoint_dir(output_dir)} loads ({'; '.join(damaged)}). Move the "
            "damaged files away to start over, or set TRAIN.AUTO_RESUME False")
    return None, None


def load_model_state(model: torch.nn.Module, state: dict[str, Any], *, source: str = "") -> None:
    """Strictly load a toolkit ``model_state`` into ``model`` (DDP wrapper or not)."""
    target = unwrap_model(model)
    state = strip_prefix(state)
    missing, unexpected = target.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise RuntimeError(
            f"checkpoint {source} does not match model {type(target).__name__}: "
            f"{len(missing)} missing keys {missing[:5]}, {len(unexpected)} unexpected keys "
            f"{unexpected[:5]} (is MODEL.ARCH / MODEL.NUM_CLASSES the one it was trained with?)"
        )


# ------------------------------------------------------------------------------------------------ #
# The weights of an inference job (test, features, prediction)
# ------------------------------------------------------------------------------------------------ #
class NoCheckpointError(FileNotFoundError):
    """An inference job was asked for but there are no trained weights to run it with."""


@dataclass(frozen=True)
class InferenceWeights:
    """Which file an inference job's weights come from: a toolkit ``"checkpoint"``, or (features only)
    the ``"pretrained"`` image checkpoint of MODEL.PRETRAINED, inflated."""

    path: Path
    kind: Literal["checkpoint", "pretrained"]


def resolve_inference_weights(cfg, *, allow_pretrained: bool = False, job: str = "test") -> InferenceWeights:
    """``TEST.CHECKPOINT_FILE_PATH`` (a training checkpoint, or a pretrained folder of
    :func:`regionvit_video.models.save_pretrained`), else the newest checkpoint in ``OUTPUT_DIR/checkpoints``,
    else (with ``allow_pretrained``: features of a backbone) ``MODEL.PRETRAINED``.

    Args:
        cfg: the config.
        allow_pretrained: fall back to MODEL.PRETRAINED.
        job: what the weights are for, in the error message ("test", "predict with", ...).

    Raises:
        NoCheckpointError: the named file is missing, or none is named and none exists: an untrained
            model is never run silently.
    """
    from regionvit_video.models.pretrained import is_pretrained_source

    if cfg.TEST.CHECKPOINT_FILE_PATH:
        path = Path(cfg.TEST.CHECKPOINT_FILE_PATH)
        if is_pretrained_source(cfg.TEST.CHECKPOINT_FILE_PATH):
            return InferenceWeights(path, "folder")
        if not path.is_file():
            raise NoCheckpointError(f"TEST.CHECKPOINT_FILE_PATH: checkpoint {path} does not exist")
        return InferenceWeights(path, "checkpoint")
    latest = latest_checkpoint(cfg.OUTPUT_DIR)
    if latest is not None:
        return InferenceWeights(latest, "checkpoint")
    if allow_pretrained and cfg.MODEL.PRETRAINED:
        if not (is_pretrained_source(cfg.MODEL.PRETRAINED) or Path(cfg.MODEL.PRETRAINED).exists()):
            raise NoCheckpointError(f"MODEL.PRETRAINED: {cfg.MODEL.PRETRAINED} does not exist")
        return InferenceWeights(Path(cfg.MODEL.PRETRAINED), "pretrained")
    raise NoCheckpointError(
        f"TEST.CHECKPOINT_FILE_PATH is empty and {checkpoint_dir(cfg.OUTPUT_DIR)} holds no checkpoint: refusing to "
        f"{job} an untrained model. Set TEST.CHECKPOINT_FILE_PATH or train first (TRAIN.ENABLE True)"
        + ("; or set MODEL.PRETRAINED to use image weights" if allow_pretrained else ""))


def load_inference_model(cfg, dist_info, *, checkpoint: str | Path | None = None, allow_pretrained: bool = False,
                         job: str = "test", compile: bool | None = None) -> tuple[torch.nn.Module, InferenceWeights]:
    """The model of ``cfg`` with its inference weights, in eval mode on ``dist_info.device``.

    The weights are ``checkpoint`` when given, else :func:`resolve_inference_weights`; with several
    processes every process must call this, and all use rank 0's choice (a run may still be writing
    new checkpoints). The model is built after seeding with ``RNG_SEED + rank``, as in training, and
    compiled with MODEL.COMPILE unless ``compile`` says otherwise.

    Returns:
        ``(model, weights)``.
    """
    from regionvit_video.engine.build import build_model, seed_everything
    from regionvit_video.engine.distributed import broadcast_object, check_visible
    from regionvit_video.models import load_pretrained

    weights = (InferenceWeights(Path(checkpoint), "checkpoint") if checkpoint is not None
               else resolve_inference_weights(cfg, allow_pretrained=allow_pretrained, job=job))
    if dist_info.distributed:  # rank 0's choice; a checkpoint file must be visible to every process
        path, kind = broadcast_object((str(weights.path), weights.kind))
        if kind == "checkpoint":
            check_visible(path)
        weights = InferenceWeights(Path(path), kind)  # a folder, Hub id or MODEL.PRETRAINED is resolved below
    seed_everything(cfg.RNG_SEED + dist_info.rank)
    model = build_model(cfg, compile=compile)
    if weights.kind == "checkpoint":
        ck = load_checkpoint(weights.path)
        load_model_state(model, ck["model_state"], source=str(weights.path))
        if not ck.get("epoch_complete", True):
            logger.warning("%s is a mid-epoch checkpoint (epoch %s, iteration %s)", weights.path, ck.get("epoch"),
                           ck.get("iteration"))
    elif weights.kind == "folder":  # every weight of the model, strictly, as from_pretrained loads them
        from regionvit_video.models.pretrained import load_pretrained_folder

        load_pretrained_folder(model, weights.path, expect_architecture=cfg.MODEL.ARCH)
    else:
        load_pretrained(model, weights.path, temporal_init=cfg.MODEL.TEMPORAL_INIT)
    logger.info("weights: %s (%s)", weights.path, weights.kind)
    return model.to(dist_info.device).eval(), weights


__all__ = [
    "CHECKPOINT_SUBDIR", "CheckpointFormatError", "InferenceWeights", "NoCheckpointError", "checkpoint_dir",
    "checkpoint_name", "get_rng_state", "latest_checkpoint", "list_checkpoints", "load_checkpoint",
    "load_inference_model", "load_model_state", "load_newest_checkpoint", "prune_checkpoints",
    "remove_stale_temporary_files", "resolve_inference_weights", "save_checkpoint", "set_rng_state", "strip_prefix",
    "unwrap_model",
]
