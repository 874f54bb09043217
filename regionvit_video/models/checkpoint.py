"""Loading pretrained weights: official RegionViT files, this toolkit's checkpoints, inflation to video.

``load_pretrained(model, path)`` reads the file safely (``weights_only``, or safetensors for a pretrained
folder written by ``save_pretrained``), unwraps it, adapts it to the model (aliases, det_norm keys,
window-size changes, the model's own ``filter_pretrained`` e.g. video inflation), re-initialises a
classifier of another size, refuses any other shape mismatch, loads, and returns a :class:`LoadReport`.
Missing and unexpected keys are always logged.
"""
from __future__ import annotations

import logging
import os
import re
from dataclasses import dataclass, field
from typing import Any, Literal, Mapping

import torch
import torch.nn as nn
import torch.nn.functional as F
from timm.layers import trunc_normal_

from regionvit_video.utils.io import safe_torch_load

_logger = logging.getLogger(__name__)

_DET_NORM_KEY = re.compile(r"^norm[0-9]+\.(weight|bias)$")


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
        resized: keys interpolated to the model's shape (relative-position tables, regional tokenizer).
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


# Shape adaptation ----------------------------------------------------------------------------------
def resize_rel_pos_table(table: torch.Tensor, new_window: int) -> torch.Tensor:
    """Resize RegionViT relative-position tables (heads, (2ws-1)^2) to another window size, bicubic.

    The official layout is wrapped (entry for offset d sits at (d + ws//2) mod (2ws-1), see
    :func:`regionvit_video.layers.rel_pos_index`), so the table is first rolled into geometric order
    (offset -(ws-1) .. ws-1), resized as a 2-D image, then rolled back into the new window's wrap.
    (The official ``convert_cls_model_to_diff_ws.py`` resizes the wrapped table directly, which mixes
    unrelated offsets.)
    """
    heads, n = table.shape
    size = int(round(n**0.5))
    if size * size != n or size % 2 == 0:
        raise ValueError(f"relative-position table of {n} entries is not (2ws-1)^2")
    old_ws, new_size = (size + 1) // 2, 2 * new_window - 1
    shift_old = old_ws - 1 - old_ws // 2
    shift_new = new_window - 1 - new_window // 2
    geo = torch.roll(table.view(heads, size, size), shifts=(shift_old, shift_old), dims=(1, 2))
    geo = F.interpolate(geo[None].float(), size=(new_size, new_size), mode="bicubic", align_corners=False)[0]
    wrapped = torch.roll(geo, shifts=(-shift_new, -shift_new), dims=(1, 2))
    return wrapped.reshape(heads, new_size * new_size).to(table.dtype)


def resize_patch_kernel(weight: torch.Tensor, new_size: tuple[int, int]) -> torch.Tensor:
    """Bicubic resize of a patch-embedding kernel (C, 3, P, P) -> (C, 3, P', P') (as the official tool)."""
    return F.interpolate(weight.float(), size=new_size, mode="bicubic", align_corners=False).to(weight.dtype)


def _adapt(sd: dict[str, torch.Tensor], own: dict[str, torch.Tensor], report: LoadReport) -> dict[str, torch.Tensor]:
    """Official aliases and det_norm keys, and window-size changes."""
    out = dict(sd)
    # proj_cls is the same module as proj: fill whichever name is absent, load through proj.
    for key in list(out):
        if ".proj_cls." in key:
            twin = key.replace(".proj_cls.", ".proj.")
            if twin not in out:
                out[twin] = out[key]
            elif not torch.equal(out[twin], out[key]):
                _logger.warning("%s differs from its alias %s; using %s", key, twin, twin)
            del out[key]
    # det_norm LayerNorm2d keys (norm0..3): dropped when the model has no det_norm (official rule).
    for key in list(out):
        if _DET_NORM_KEY.match(key) and key not in own:
            del out[key]
    for key, value in list(out.items()):
        target = own.get(key)
        if target is None or target.shape == value.shape:
            continue
        if key.endswith("attn.rel_pos") and value.ndim == 2 and value.shape[0] == target.shape[0]:
            out[key] = resize_rel_pos_table(value, (int(round(target.shape[1] ** 0.5)) + 1) // 2)
            report.resized.append(key)
        elif key == "cls_token.proj.weight" and value.shape[:2] == target.shape[:2]:
            out[key] = resize_patch_kernel(value, tuple(target.shape[-2:]))
            report.resized.append(key)
    return out


def _read_checkpoint(path: str) -> Any:
    """A pretrained folder (its model.safetensors, checked against config.json), a .safetensors file, or a
    torch file read with ``weights_only``."""
    from regionvit_video.models import pretrained

    if os.path.isdir(path):
        config = pretrained.read_pretrained_config(path)
        weights = config.get("weights") or {}
        return pretrained.read_safetensors(os.path.join(path, weights.get("file", pretrained.WEIGHTS_NAME)),
                                           sha256=weights.get("sha256"))
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
    ``ck['model_state']``, else the bare state_dict; strip ``module.``; map ``proj_cls`` aliases; drop
    ``norm0..3`` det_norm keys the model lacks; interpolate relative-position tables and the regional
    tokenizer kernel to the model's window size; call ``model.filter_pretrained(sd,
    temporal_init=...)`` if the model has it (video inflation); re-initialise the classifier if its
    shape differs; load.

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
    sd = _adapt(sd, own, report)
    if hasattr(model, "filter_pretrained"):
        before = set(sd)
        sd = model.filter_pretrained(sd, temporal_init=temporal_init)
        report.created = sorted(set(sd) - before)

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
        if isinstance(module, nn.Linear):
            trunc_normal_(module.weight, std=0.02)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        _logger.info("classifier %r re-initialised (class count differs from the checkpoint)", head)

    result = model.load_state_dict(sd, strict=False)
    # Alias keys (proj_cls) are filled through their twins; do not report them as missing.
    aliases = {k for k in result.missing_keys if ".proj_cls." in k and k.replace(".proj_cls.", ".proj.") in sd}
    report.missing = [k for k in result.missing_keys if k not in aliases and k not in report.reinitialised]
    report.unexpected = list(result.unexpected_keys)
    report.loaded = len([k for k in sd if k in own])
    if report.missing:
        _logger.warning("%s: %d model keys not in the checkpoint: %s", path, len(report.missing), report.missing)
    if report.unexpected:
        _logger.warning("%s: %d checkpoint keys not used: %s", path, len(report.unexpected), report.unexpected)
    _logger.info("%s", report)
    return report
