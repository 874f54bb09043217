"""The one model registry: ``register_model``, ``create_model``, ``list_models``, ``model_info``.

Every model the toolkit can build (image RegionViT variants, their video versions, the TimeSformer
baseline) registers a factory here by name, tagged with its kind:

- ``"video"``: takes clips ``(B, C, T, H, W)`` and accepts ``num_frames``, ``time_embed_init`` and
  ``temporal_fc_init``; the only kind ``run_net.py`` trains, tests and extracts features with;
- ``"image"``: takes images ``(B, C, H, W)``; the source of the video models' inflated weights.

A video model names its ``image_twin`` when this registry has it (``regionvit_video_small`` ->
``regionvit_small``). Tests loop over ``list_models()``.
"""
from __future__ import annotations

import difflib
import fnmatch
from dataclasses import dataclass
from typing import Callable, Literal

import torch.nn as nn

ModelKind = Literal["image", "video"]
MODEL_KINDS: tuple[str, ...] = ("image", "video")


@dataclass(frozen=True)
class ModelInfo:
    """What the registry knows about a model: its factory, its kind and (video) its image twin."""

    name: str
    kind: ModelKind
    entrypoint: Callable[..., nn.Module]
    image_twin: str | None = None


_MODELS: dict[str, ModelInfo] = {}


def register_model(fn: Callable[..., nn.Module] | None = None, *, kind: ModelKind,
                   image_twin: str | None = None):
    """Register a factory under its function name: ``@register_model(kind="video", image_twin=...)``,
    or ``register_model(fn, kind=...)`` as a call."""
    if kind not in MODEL_KINDS:
        raise ValueError(f"kind must be one of {MODEL_KINDS}, got {kind!r}")
    if image_twin is not None and kind != "video":
        raise ValueError("only a video model has an image twin")

    def register(f: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        name = f.__name__
        if name in _MODELS:
            raise ValueError(f"model {name!r} is registered twice")
        _MODELS[name] = ModelInfo(name, kind, f, image_twin)
        return f

    return register if fn is None else register(fn)


def list_models(pattern: str | None = None, *, kind: ModelKind | None = None) -> list[str]:
    """Sorted names of the registered models, optionally filtered by an fnmatch pattern and a kind."""
    names = sorted(n for n, info in _MODELS.items() if kind is None or info.kind == kind)
    if pattern:
        names = [n for n in names if fnmatch.fnmatch(n, pattern)]
    return names


def is_model(name: str) -> bool:
    return name in _MODELS


def _unknown(name: str) -> KeyError:
    close = difflib.get_close_matches(name, list(_MODELS), n=5)
    hint = f"; did you mean {', '.join(close)}?" if close else ""
    return KeyError(f"unknown model {name!r}{hint} (see regionvit_video.models.list_models())")


def model_info(name: str) -> ModelInfo:
    """The registry entry of ``name``.

    Raises:
        KeyError: the name is not registered (the message lists close matches).
    """
    if name not in _MODELS:
        raise _unknown(name)
    return _MODELS[name]


def check_video_model(name: str) -> None:
    """Raise ``ValueError`` (naming the video models) unless ``name`` is a registered video model.

    Raises:
        KeyError: the name is not registered.
        ValueError: it is an image model.
    """
    if model_info(name).kind == "video":
        return
    videos = list_models(kind="video")
    twins = [v for v in videos if _MODELS[v].image_twin == name]
    hint = f"its video version is {twins[0]}; " if twins else ""
    raise ValueError(f"{name!r} is an image model (B, C, H, W); clips need a video model ({hint}video models: "
                     f"{', '.join(videos)})")


def create_model(name: str, **kwargs) -> nn.Module:
    """Build a registered model; keyword arguments override the variant's defaults.

    The model records how it was built: ``model.pretrained_cfg["architecture"]`` (the name) and
    ``model.model_args`` (the keyword arguments), which is what ``save_pretrained`` writes.

    Raises:
        KeyError: the name is not registered (the message lists close matches).
    """
    model = model_info(name).entrypoint(**kwargs)
    # What rebuilds this model (save_pretrained writes it to config.json): the registered name, and the
    # arguments given here (the variant's own defaults come with the name, as in timm).
    model.pretrained_cfg = {**getattr(model, "pretrained_cfg", {}), "architecture": name}
    model.model_args = dict(kwargs)
    return model
