"""The one model registry: ``register_model``, ``create_model``, ``list_models``.

Every model the toolkit can build (image RegionViT variants, their video versions, the TimeSformer
baseline) registers a factory here by name. Tests loop over ``list_models()``.
"""
from __future__ import annotations

import fnmatch
from typing import Callable

import torch.nn as nn

_MODEL_ENTRYPOINTS: dict[str, Callable[..., nn.Module]] = {}


def register_model(fn: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
    """Decorator: register a factory under its function name."""
    name = fn.__name__
    if name in _MODEL_ENTRYPOINTS:
        raise ValueError(f"model {name!r} is registered twice")
    _MODEL_ENTRYPOINTS[name] = fn
    return fn


def list_models(pattern: str | None = None) -> list[str]:
    """Sorted names of the registered models, optionally filtered by an fnmatch pattern."""
    names = sorted(_MODEL_ENTRYPOINTS)
    if pattern:
        names = [n for n in names if fnmatch.fnmatch(n, pattern)]
    return names


def is_model(name: str) -> bool:
    return name in _MODEL_ENTRYPOINTS


def create_model(name: str, **kwargs) -> nn.Module:
    """Build a registered model; keyword arguments override the variant's defaults.

    The model records how it was built: ``model.pretrained_cfg["architecture"]`` (the name) and
    ``model.model_args`` (the keyword arguments), which is what ``save_pretrained`` writes.

    Raises:
        KeyError: the name is not registered (the message lists close matches).
    """
    if name not in _MODEL_ENTRYPOINTS:
        import difflib

        close = difflib.get_close_matches(name, list(_MODEL_ENTRYPOINTS), n=5)
        hint = f"; did you mean {', '.join(close)}?" if close else ""
        raise KeyError(f"unknown model {name!r}{hint} (see regionvit_video.models.list_models())")
    model = _MODEL_ENTRYPOINTS[name](**kwargs)
    # What rebuilds this model (save_pretrained writes it to config.json): the registered name, and the
    # arguments given here (the variant's own defaults come with the name, as in timm).
    model.pretrained_cfg = {**getattr(model, "pretrained_cfg", {}), "architecture": name}
    model.model_args = dict(kwargs)
    return model
