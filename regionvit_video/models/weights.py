"""Loading weights into a model: official RegionViT / timm ViT files, this toolkit's checkpoints, inflation.

``load_pretrained(model, path)`` reads the file safely (``weights_only``, or safetensors for a pretrained
folder written by ``save_pretrained``), unwraps it, lets the model adapt it (its ``filter_pretrained``,
timm's ``checkpoint_filter_fn``: RegionViT's aliases, det_norm keys and window-size changes, the video
models' inflation), re-initialises a classifier of another size, refuses any other shape mismatch, loads,
and returns a :class:`LoadReport`. Missing and unexpected keys are always logged. What is specific to a
model lives in the model's file; this module knows only state dicts.
"""
from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from typing import Any, Literal, Mapping

import torch
import torch.nn as nn

from regionvit_video.models.base import init_weights
from regionvit_video.utils.io import safe_torch_load

_logger = logging.getLogger(__name__)


@dataclass
class LoadReport:
    """What :func:`load_pretrained` did.

    Attributes:
        path: the file read.
        loaded: number of model tensors set from the file (including tensors the model's
            ``filter_pretrained`` derived from it).
        missing: model keys the file did not provide (left at their current values).
        unexpected: file keys the model does not have (ignored).
        reinitialised: keys re-initialised instead of loaded (classifier of another size).
        created: keys created by the model's ``filter_pretrained`` (e.g. inflated temporal weights).
        resized: keys the model's ``filter_pretrained`` interpolated to its shape (relative-position tables,
            the regional tokenizer, position and time embeddings).
    """

    path: str
    loaded: int = 0
    missing: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)
    reinitialised: list[str] = field(default_factory=list)
    created: list[str] = field(default_factory=list)
    resized: list[str] = field(default_factory=list)

    def __str__(self) -> str:
        lines = [f"loaded {self.loaded} tensors from {self.path}"]
        for name in ("created", "resized", "reinitialised", "missing", "unexpected"):
            keys = getattr(self, name)
            if keys:
                shown = ", ".join(keys[:8]) + (f", ... (+{len(keys) - 8})" if len(keys) > 8 else "")
                lines.append(f"  {name} ({len(keys)}): {shown}")
        return "\n".join(lines)


def unwrap_state_dict(ck: Any, path: str = "<checkpoint>") -> dict[str, torch.Tensor]:
    """``ck['model']`` (official/DeiT), else ``ck['model_state']`` (this toolkit), else a bare state_dict.

    Strips a ``module.`` prefix (DataParallel / DDP).
    """
    if isinstance(ck, Mapping) and isinstance(ck.get("model"), Mapping):
        sd = ck["model"]
    elif isinstance(ck, Mapping) and isinstance(ck.get("model_state"), Mapping):
        sd = ck["model_state"]
    else:
        sd = ck
    if not isinstance(sd, Mapping) or not sd:
        raise ValueError(
            f"{path}: no state_dict found (expected a 'model' or 'model_state' entry or a bare state_dict)"
        )
    bad = [k for k, v in sd.items() if not isinstance(v, torch.Tensor)]
    if bad:
        raise ValueError(f"{path}: state_dict entries that are not tensors: {bad[:5]}")
    return {(k[len("module.") :] if k.startswith("module.") else k): v for k, v in sd.items()}


def _tied_keys(model: nn.Module, keys: list[str], loaded: set[str]) -> set[str]:
    """Those of ``keys`` whose tensor is the same as a loaded key's (tied weights: one module under two
    names, as RegionViT's ``proj`` / ``proj_cls``): they were loaded through their twin."""
    own = dict(model.named_parameters(remove_duplicate=False))
    own.update(model.named_buffers(remove_duplicate=False))
    loaded_ids = {id(own[k]) for k in loaded if k in own}
    return {k for k in keys if k in own and id(own[k]) in loaded_ids}


def _read_checkpoint(path: str) -> Any:
    """A pretrained folder or ``hf-hub:`` id (its model.safetensors, checked against config.json), a .safetensors
    file, or a torch file read with ``weights_only``."""
    from regionvit_video.models import pretrained

    if os.path.isdir(path) or pretrained.is_pretrained_source(path):  # a folder, or a Hub id in the local cache
        return pretrained.read_pretrained_weights(pretrained.resolve_pretrained(path))[0]
    if path.endswith(".safetensors"):
        return pretrained.read_safetensors(path)
    return safe_torch_load(path)


def _classifier_name(model: nn.Module) -> str:
    cfg = getattr(model, "pretrained_cfg", None) or {}
    return cfg.get("classifier", "head")


def load_pretrained(
    model: nn.Module,
    path: str | os.PathLike,
    *,
    temporal_init: Literal["zero", "copy"] = "zero",
    strict_shapes: bool = True,
) -> LoadReport:
    """Load a checkpoint file into ``model`` and say what happened.

    Steps: read the file (a pretrained folder's ``model.safetensors``, checked against its config.json; a
    ``.safetensors`` file; else :func:`~regionvit_video.utils.io.safe_torch_load`); take ``ck['model']``, else
    ``ck['model_state']``, else the bare state_dict; strip ``module.``; let the model adapt it
    (``model.filter_pretrained(sd, temporal_init=...)``: for RegionViT the ``proj_cls`` aliases, the
    ``norm0..3`` det_norm keys it lacks and window-size changes; for video models also the inflation);
    re-initialise the classifier if its shape differs; load.

    Args:
        model: the model to fill (in place).
        path: checkpoint file, ``.safetensors`` file, or pretrained folder (save_pretrained).
        temporal_init: for video models loading image weights: ``"zero"`` (fresh temporal weights) or
            ``"copy"`` (from the spatial attention / norm1); ``temporal_fc`` is zero either way.
        strict_shapes: a shape mismatch outside the classifier raises ``ValueError``; with ``False`` it is
            skipped, logged and listed under ``reinitialised`` (left at the model's init).

    Returns:
        A :class:`LoadReport`.

    Raises:
        FileNotFoundError, UnsafeCheckpointError, PretrainedFormatError: from reading the file.
        ValueError: no state_dict in the file, or a shape mismatch (naming the key and both shapes).
    """
    path = str(path)
    report = LoadReport(path=path)
    sd = unwrap_state_dict(_read_checkpoint(path), path)
    own = model.state_dict()
    if hasattr(model, "filter_pretrained"):  # every registered model has it; a plain nn.Module loads as it is
        before = {k: tuple(v.shape) for k, v in sd.items()}
        sd = model.filter_pretrained(sd, temporal_init=temporal_init)
        report.created = sorted(set(sd) - set(before))
        report.resized = [k for k, v in sd.items() if k in before and tuple(v.shape) != before[k]]

    head = _classifier_name(model)
    for key in list(sd):
        target = own.get(key)
        if target is None or target.shape == sd[key].shape:
            continue
        if key.startswith(head + "."):
            report.reinitialised.append(key)
        elif strict_shapes:
            raise ValueError(
                f"{path}: shape mismatch for {key!r}: checkpoint {tuple(sd[key].shape)} vs model {tuple(target.shape)}"
            )
        else:
            _logger.warning("skipping %s: checkpoint %s vs model %s", key, tuple(sd[key].shape), tuple(target.shape))
            report.reinitialised.append(key)
        del sd[key]
    if any(k.startswith(head + ".") for k in report.reinitialised):
        module = model.get_submodule(head)
        module.apply(init_weights)
        _logger.info("classifier %r re-initialised (class count differs from the checkpoint)", head)

    result = model.load_state_dict(sd, strict=False)
    tied = _tied_keys(model, list(result.missing_keys), set(sd))  # filled through their twins: not missing
    report.missing = [k for k in result.missing_keys if k not in tied and k not in report.reinitialised]
    report.unexpected = list(result.unexpected_keys)
    report.loaded = len([k for k in sd if k in own])
    if report.missing:
        _logger.warning("%s: %d model keys not in the checkpoint: %s", path, len(report.missing), report.missing)
    if report.unexpected:
        _logger.warning("%s: %d checkpoint keys not used: %s", path, len(report.unexpected), report.unexpected)
    _logger.info("%s", report)
    return report
