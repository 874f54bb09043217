"""Pretrained folders: ``model.safetensors`` + ``config.json``, rebuilt without pickle (the Hugging Face layout).

``save_pretrained(model, folder, class_names=..., preprocessing=...)`` writes the two files;
``from_pretrained(folder_or_hub_id)`` rebuilds the model from them alone, in eval mode. ``config.json``
holds what rebuilding and using the model needs (timm's ``config.json`` keys where timm has one)::

    {
      "format": "regionvit-video-pretrained", "format_version": 1,
      "architecture": "regionvit_video_pico_w4",        # the registry name (create_model)
      "model_args": {"num_classes": 8, "num_frames": 4, ...},   # the create_model keyword arguments
      "num_classes": 8, "num_features": 256,
      "label_names": ["...", ...],                       # class i's name, or null
      "preprocessing": {"num_frames": 4, "sampling": "uniform", "test_scale": 64, "crop_size": 64,
                        "mean": [...], "std": [...], "num_ensemble_views": 1, "num_spatial_crops": 3, ...},
      "pretrained_cfg": {"input_size": [3, 4, 64, 64], "mean": [...], "std": [...], ...},
      "weights": {"file": "model.safetensors", "sha256": "...", "num_tensors": 151},
      "source": {...},                                   # optional: the checkpoint it came from
      "versions": {"regionvit_video": "0.1.0", "torch": "2.14.1"}
    }

The variant's own defaults come with its name, as in timm: ``model_args`` are the arguments given to
``create_model`` (recorded by the registry), so the rebuilt model is ``create_model(architecture,
**model_args)``; the weights then load strictly (every key, every shape), so a build that no longer
matches the file is an error, never a silent partial load. The sha256 recorded in ``config.json``
detects a weights file changed or damaged after it was written.

The returned model's ``pretrained_cfg`` carries ``architecture``, ``label_names`` and ``preprocessing``
(and ``source`` when recorded); :func:`read_pretrained_config` reads the whole ``config.json``.

Hub ids (``org/name``, or ``hf-hub:org/name``) are fetched with ``huggingface_hub`` into its cache. With
``HF_HUB_OFFLINE=1``, or when the Hub does not answer within ``hub_timeout`` seconds, only the local
cache is used: a model not in it fails at once with a message saying so (``huggingface_hub`` alone would
retry for minutes before giving up on a host that accepts connections but does not answer).
"""
from __future__ import annotations

import difflib
import json
import logging
import os
import re
from collections import defaultdict
from pathlib import Path
from typing import Any, Mapping, Sequence

import torch
import torch.nn as nn

from regionvit_video.models.base import unwrap_model
from regionvit_video.models.registry import create_model, is_model, list_models
from regionvit_video.utils.io import atomic_write, atomic_write_text, sha256_file

_logger = logging.getLogger(__name__)

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"
FORMAT_NAME = "regionvit-video-pretrained"
FORMAT_VERSION = 1
_HUB_PREFIX = "hf-hub:"
# org/name or name: letters, digits, '-', '_', '.'; no leading '.', no '..' (huggingface_hub's rule).
_HUB_ID = re.compile(r"^(?!\.)[\w.-]+(/(?!\.)[\w.-]+)?$")


class PretrainedFormatError(ValueError):
    """A pretrained folder's ``config.json`` or ``model.safetensors`` is invalid, damaged or inconsistent."""


class PretrainedNotFoundError(FileNotFoundError):
    """Neither a local pretrained folder nor a Hub model that can be had now (offline, not cached, unknown)."""


# ------------------------------------------------------------------------------------------------ #
# Saving
# ------------------------------------------------------------------------------------------------ #
def _jsonable(value: Any, where: str) -> Any:
    """``value`` with tuples as lists; a TypeError naming ``where`` for anything JSON cannot hold."""
    if isinstance(value, Mapping):
        out = {}
        for k, v in value.items():
            if not isinstance(k, str):
                raise TypeError(f"{where}: key {k!r} is not a string")
            out[k] = _jsonable(v, f"{where}.{k}")
        return out
    if isinstance(value, (list, tuple)):
        return [_jsonable(v, f"{where}[{i}]") for i, v in enumerate(value)]
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    raise TypeError(f"{where} = {value!r} ({type(value).__name__}) cannot be written to {CONFIG_NAME}")


def default_preprocessing(model: nn.Module) -> dict[str, Any]:
    """What the model's own ``pretrained_cfg`` says about its input (used when no preprocessing is given)."""
    cfg = getattr(model, "pretrained_cfg", None) or {}
    size = list(cfg.get("input_size", ()))
    out: dict[str, Any] = {}
    if len(size) == 4:  # C, T, H, W
        out.update(input_layout="B,C,T,H,W", num_frames=size[1], crop_size=size[-1])
    elif len(size) == 3:
        out.update(input_layout="B,C,H,W", crop_size=size[-1])
    for key in ("mean", "std"):
        if key in cfg:
            out[key] = list(cfg[key])
    return out


def save_pretrained(
    model: nn.Module,
    folder: str | os.PathLike,
    *,
    class_names: Sequence[str] | None = None,
    preprocessing: Mapping[str, Any] | None = None,
    source: Mapping[str, Any] | None = None,
) -> Path:
    """Write ``folder/model.safetensors`` and ``folder/config.json`` (see the module docstring).

    Args:
        model: a model built by :func:`~regionvit_video.models.create_model` (which records its
            architecture and arguments), bare or wrapped in DDP / ``torch.compile``. Its ``num_classes``
            is taken as it is now (after a ``reset_classifier``, too).
        folder: created if needed; other files in it are left alone, the two files are replaced
            atomically (a killed write leaves the previous ones intact).
        class_names: one name per class (``label_names``), or None.
        preprocessing: what a user must reproduce to feed the model: ``num_frames``, ``sampling``,
            ``test_scale``, ``crop_size``, ``mean``, ``std``, the test protocol (``num_ensemble_views``,
            ``num_spatial_crops``, ``ensemble``)... (:func:`regionvit_video.engine.export.preprocessing_from_cfg`
            builds it from a run's config). None: what the model's ``pretrained_cfg`` says (frames, crop
            size, mean, std). ``mean``, ``std`` and the input size also update ``pretrained_cfg``.
        source: where the weights come from (checkpoint, epoch, ...), written as it is.

    Returns:
        The folder.

    Raises:
        ValueError: the model was not built by ``create_model``, or ``class_names`` has the wrong length.
        TypeError: an argument or preprocessing value JSON cannot hold (names the key).
    """
    from safetensors.torch import save_model

    model = unwrap_model(model)
    cfg = dict(getattr(model, "pretrained_cfg", None) or {})
    arch, model_args = cfg.get("architecture"), getattr(model, "model_args", None)
    if not arch or model_args is None:
        raise ValueError(
            f"save_pretrained needs a model built by regionvit_video.models.create_model (which records its "
            f"architecture and arguments); this {type(model).__name__} was built directly"
        )
    num_classes = int(getattr(model, "num_classes", model_args.get("num_classes", 0)))
    model_args = _jsonable({**model_args, "num_classes": num_classes}, "model_args")
    if class_names is not None:
        class_names = [str(c) for c in class_names]
        if len(class_names) != num_classes:
            raise ValueError(f"{len(class_names)} class names for a model with {num_classes} classes")
    prep = _jsonable(dict(preprocessing) if preprocessing is not None else default_preprocessing(model),
                     "preprocessing")
    # pretrained_cfg (timm's keys) agrees with the preprocessing on normalisation and input size.
    for key in ("mean", "std"):
        if key in prep:
            cfg[key] = prep[key]
    size = list(cfg.get("input_size", ()))
    if "crop_size" in prep and size:
        size[-2:] = [prep["crop_size"]] * 2
    if "num_frames" in prep and len(size) == 4:
        size[1] = prep["num_frames"]
    if size:
        cfg["input_size"] = size
    cfg.pop("architecture", None)

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    digest: dict[str, str] = {}

    def write_weights(tmp: str) -> None:
        save_model(model, tmp, metadata={"format": "pt", "architecture": arch})
        digest["sha256"] = sha256_file(tmp)

    atomic_write(folder / WEIGHTS_NAME, write_weights)
    from regionvit_video import __version__

    config = {
        "format": FORMAT_NAME,
        "format_version": FORMAT_VERSION,
        "architecture": arch,
        "model_args": model_args,
        "num_classes": num_classes,
        "num_features": getattr(model, "num_features", None),
        "label_names": class_names,
        "preprocessing": prep,
        "pretrained_cfg": _jsonable(cfg, "pretrained_cfg"),
        "weights": {"file": WEIGHTS_NAME, "sha256": digest["sha256"]},
        "versions": {"regionvit_video": __version__, "torch": torch.__version__.split("+")[0]},
    }
    if source is not None:
        config["source"] = _jsonable(dict(source), "source")
    text = json.dumps(config, indent=2) + "\n"
    atomic_write_text(folder / CONFIG_NAME, text)
    _logger.info("wrote %s (%s, %d classes)", folder, arch, num_classes)
    return folder


# ------------------------------------------------------------------------------------------------ #
# Reading
# ------------------------------------------------------------------------------------------------ #
def _env_true(name: str) -> bool:
    return os.environ.get(name, "").strip().upper() in {"1", "ON", "YES", "TRUE"}


def _hub_download(repo_id: str, *, revision: str | None, cache_dir: str | None, timeout: float | None) -> Path:
    """config.json and model.safetensors of a Hub model in the local cache; their folder.

    A quick ``model_info`` call (one request, ``timeout`` seconds, no retries) decides whether the Hub
    answers; if not, or with ``HF_HUB_OFFLINE=1``, only the cache is used.
    """
    try:
        import huggingface_hub as hf
        from huggingface_hub import constants as hf_constants
        from huggingface_hub import errors as hf_errors
    except ImportError as e:  # pragma: no cover - a dependency of the project
        raise PretrainedNotFoundError(f"{repo_id!r} is not a local folder, and huggingface_hub is not installed") from e

    offline_reason = None
    if hf_constants.HF_HUB_OFFLINE or _env_true("HF_HUB_OFFLINE"):
        offline_reason = "HF_HUB_OFFLINE is set"
    else:
        timeout = float(hf_constants.HF_HUB_ETAG_TIMEOUT if timeout is None else timeout)
        try:
            hf.HfApi().model_info(repo_id, revision=revision, timeout=timeout)
        except (hf_errors.RepositoryNotFoundError, hf_errors.RevisionNotFoundError) as e:
            raise PretrainedNotFoundError(
                f"{repo_id!r} is not a local folder, and the Hugging Face Hub has no such model"
                f"{f' at revision {revision!r}' if revision else ''} (or it is private/gated: log in with "
                f"`hf auth login`): {e}"
            ) from e
        except Exception as e:  # no network, DNS failure, timeout, proxy, server error
            offline_reason = f"the Hugging Face Hub did not answer ({type(e).__name__}: {e})"
    paths = []
    for name in (CONFIG_NAME, WEIGHTS_NAME):
        try:
            paths.append(
                hf.hf_hub_download(
                    repo_id, name, revision=revision, cache_dir=cache_dir, local_files_only=offline_reason is not None
                )
            )
        except hf_errors.LocalEntryNotFoundError as e:
            cache = cache_dir or hf_constants.HF_HUB_CACHE
            raise PretrainedNotFoundError(
                f"{repo_id!r} is not a local folder, and it cannot be downloaded now: {offline_reason}, and its "
                f"{name} is not in the local cache ({cache}). Download it once with network access (unset "
                "HF_HUB_OFFLINE), or pass the path of a folder written by save_pretrained"
            ) from e
        except hf_errors.EntryNotFoundError as e:
            raise PretrainedNotFoundError(
                f"Hub model {repo_id!r} has no {name}: it is not a regionvit-video pretrained folder "
                f"({CONFIG_NAME} + {WEIGHTS_NAME}, written by save_pretrained)"
            ) from e
    return Path(paths[0]).parent


def resolve_pretrained(
    name_or_path: str | os.PathLike,
    *,
    revision: str | None = None,
    cache_dir: str | None = None,
    hub_timeout: float | None = None,
) -> Path:
    """The local folder for a folder path or a Hub id (downloaded into the huggingface_hub cache).

    An existing path is always local; ``hf-hub:org/name`` is always the Hub; any other string that is a
    valid Hub id (``org/name``) is looked up on the Hub, anything else is a missing local path.

    Raises:
        PretrainedNotFoundError: a missing folder, a file instead of a folder, or a Hub model that cannot
            be had now (the message says why: offline, not cached, not on the Hub).
    """
    s = os.fspath(name_or_path)
    if s.startswith(_HUB_PREFIX):
        return _hub_download(s[len(_HUB_PREFIX):], revision=revision, cache_dir=cache_dir, timeout=hub_timeout)
    path = Path(s).expanduser()
    if path.is_dir():
        return path
    if path.exists():
        raise PretrainedNotFoundError(
            f"{path} is a file; give the folder that holds {CONFIG_NAME} and {WEIGHTS_NAME} (save_pretrained)"
        )
    if _HUB_ID.match(s) and not s.startswith(("./", "../")):
        return _hub_download(s, revision=revision, cache_dir=cache_dir, timeout=hub_timeout)
    raise PretrainedNotFoundError(f"pretrained folder not found: {path}")


def is_pretrained_source(value: str | os.PathLike) -> bool:
    """Whether a weights setting names a pretrained model rather than a checkpoint file: an ``hf-hub:`` id or a
    pretrained folder (:func:`is_pretrained_folder`). Such a source is read with :func:`resolve_pretrained`."""
    return os.fspath(value).startswith(_HUB_PREFIX) or is_pretrained_folder(value)


def is_pretrained_folder(path: str | os.PathLike) -> bool:
    """Whether ``path`` is a folder holding a pretrained model's config.json (what :func:`save_pretrained`
    writes); its content is checked when it is read."""
    return os.path.isdir(path) and os.path.isfile(os.path.join(path, CONFIG_NAME))


def read_pretrained_config(folder: str | os.PathLike) -> dict[str, Any]:
    """The checked content of ``folder/config.json``.

    Raises:
        PretrainedNotFoundError: no config.json in the folder.
        PretrainedFormatError: not JSON, not this format, a missing key, or an unknown architecture
            (the message names the file).
    """
    path = Path(folder) / CONFIG_NAME
    if not path.is_file():
        raise PretrainedNotFoundError(
            f"{path} not found: a pretrained folder holds {CONFIG_NAME} and {WEIGHTS_NAME} (written by save_pretrained)"
        )
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise PretrainedFormatError(f"{path}: not valid JSON ({e})") from e
    if not isinstance(config, dict):
        raise PretrainedFormatError(f"{path}: expected a JSON object, got {type(config).__name__}")
    fmt, version = config.get("format"), config.get("format_version")
    if fmt != FORMAT_NAME:
        raise PretrainedFormatError(
            f"{path}: 'format' is {fmt!r}, not {FORMAT_NAME!r} (not written by save_pretrained)"
        )
    if not isinstance(version, int) or version > FORMAT_VERSION:
        raise PretrainedFormatError(
            f"{path}: format_version {version!r}; this regionvit-video reads up to {FORMAT_VERSION} (upgrade it)"
        )
    arch = config.get("architecture")
    if not isinstance(arch, str) or not arch:
        raise PretrainedFormatError(f"{path}: 'architecture' is missing")
    if not is_model(arch):
        close = difflib.get_close_matches(arch, list_models(), n=3)
        hint = f"; did you mean {', '.join(close)}?" if close else ""
        raise PretrainedFormatError(
            f"{path}: unknown architecture {arch!r} (not in regionvit_video.models.list_models(){hint}; "
            "written by another version of regionvit-video?)"
        )
    if not isinstance(config.get("model_args"), dict):
        raise PretrainedFormatError(f"{path}: 'model_args' is missing or not an object")
    names = config.get("label_names")
    if names is not None and (not isinstance(names, list) or len(names) != config["model_args"].get("num_classes")):
        raise PretrainedFormatError(f"{path}: 'label_names' does not list one name per class")
    return config


def read_safetensors(path: str | os.PathLike, *, sha256: str | None = None) -> dict[str, torch.Tensor]:
    """The tensors of a safetensors file, on CPU; errors name the file.

    Args:
        path: the file.
        sha256: expected digest (``config.json``'s ``weights.sha256``); a file that differs is refused.

    Raises:
        FileNotFoundError: no such file.
        PretrainedFormatError: the digest differs, or the file is not a readable safetensors file
            (truncated, or its header damaged).
    """
    from safetensors.torch import load_file

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"weights file not found: {path}")
    if sha256 is not None and sha256_file(path) != sha256:
        raise PretrainedFormatError(
            f"{path}: its sha256 differs from the one {CONFIG_NAME} records: the file was modified or damaged "
            f"after save_pretrained wrote it ({path.stat().st_size} bytes). Refusing to load it"
        )
    try:
        return load_file(path, device="cpu")
    except Exception as e:  # safetensors raises its own SafetensorError (header, offsets, truncation)
        raise PretrainedFormatError(
            f"{path}: not a readable safetensors file (truncated or damaged?): {type(e).__name__}: {e}"
        ) from e


def _aliases(model: nn.Module) -> dict[str, set[str]]:
    """state_dict keys that share their tensor with other keys (``proj_cls`` is ``proj``): key -> others."""
    groups: dict[tuple, set[str]] = defaultdict(set)
    for key, t in model.state_dict().items():
        if t.numel():
            groups[(t.device, t.untyped_storage().data_ptr(), t.storage_offset(), tuple(t.shape))].add(key)
    return {k: g - {k} for g in groups.values() if len(g) > 1 for k in g}


def load_state_dict_strict(model: nn.Module, state_dict: Mapping[str, torch.Tensor], source: str) -> None:
    """Load every key of ``model`` from ``state_dict`` (shared tensors through any of their names).

    Raises:
        PretrainedFormatError: missing keys, unexpected keys or a shape mismatch, naming ``source``.
    """
    own = model.state_dict()
    bad_shapes = [
        f"{k}: file {tuple(v.shape)} vs model {tuple(own[k].shape)}"
        for k, v in state_dict.items()
        if k in own and own[k].shape != v.shape
    ]
    if bad_shapes:
        raise PretrainedFormatError(f"{source}: shape mismatch for {len(bad_shapes)} tensors: {bad_shapes[:5]}")
    result = model.load_state_dict(dict(state_dict), strict=False)
    aliases = _aliases(model)
    missing = [k for k in result.missing_keys if not (aliases.get(k, set()) & state_dict.keys())]
    if missing or result.unexpected_keys:
        raise PretrainedFormatError(
            f"{source} does not match the model {type(model).__name__}: {len(missing)} missing keys "
            f"{missing[:5]}, {len(result.unexpected_keys)} unexpected keys {list(result.unexpected_keys)[:5]}"
        )


def load_pretrained_folder(model: nn.Module, name_or_path: str | os.PathLike, *,
                           expect_architecture: str | None = None, **resolve_kwargs: Any) -> dict[str, Any]:
    """Load a pretrained folder's (or Hub model's) weights into ``model`` strictly; returns its config.json.

    Raises:
        PretrainedFormatError: the folder is for another architecture than ``expect_architecture``, or its
            weights do not fit ``model`` (missing / unexpected keys, shapes), or a file is damaged.
        PretrainedNotFoundError: no such folder / Hub model.
    """
    folder = resolve_pretrained(name_or_path, **resolve_kwargs)
    config = read_pretrained_config(folder)
    if expect_architecture is not None and config["architecture"] != expect_architecture:
        raise PretrainedFormatError(f"{folder / CONFIG_NAME} holds a {config['architecture']}, not the "
                                    f"{expect_architecture} of MODEL.ARCH")
    state, path = read_pretrained_weights(folder, config)
    load_state_dict_strict(model, state, str(path))
    return config


def read_pretrained_weights(folder: str | os.PathLike, config: Mapping[str, Any] | None = None
                            ) -> tuple[dict[str, torch.Tensor], Path]:
    """A pretrained folder's state_dict (the weights file its config.json names, checked against the SHA-256 it
    records) and that file's path. ``config``: the folder's config.json if already read."""
    folder = Path(folder)
    weights = (config if config is not None else read_pretrained_config(folder)).get("weights") or {}
    path = folder / weights.get("file", WEIGHTS_NAME)
    return read_safetensors(path, sha256=weights.get("sha256")), path


def from_pretrained(
    name_or_path: str | os.PathLike,
    *,
    revision: str | None = None,
    cache_dir: str | None = None,
    device: str | torch.device = "cpu",
    hub_timeout: float | None = None,
) -> nn.Module:
    """Rebuild a model from a pretrained folder (or Hub id): ``config.json`` + ``model.safetensors``, no pickle.

    Args:
        name_or_path: a folder written by :func:`save_pretrained`, or a Hub id (``org/name`` or
            ``hf-hub:org/name``).
        revision: Hub branch, tag or commit.
        cache_dir: huggingface_hub cache folder (default: its own).
        device: where the model goes.
        hub_timeout: seconds to wait for the Hub before using the cache only (default: huggingface_hub's
            ``HF_HUB_ETAG_TIMEOUT``, 10 s).

    Returns:
        The model in eval mode. ``model.pretrained_cfg`` holds ``architecture``, ``label_names`` (class
        names or None), ``preprocessing`` (frames, sampling, test scale, crop size, mean/std, test views)
        and ``source``, with timm's ``input_size``, ``mean``, ``std``.

    Raises:
        PretrainedNotFoundError: no such folder / Hub model, or the Hub cannot be reached and the model
            is not cached.
        PretrainedFormatError: a damaged or inconsistent config.json or model.safetensors (named).
    """
    folder = resolve_pretrained(name_or_path, revision=revision, cache_dir=cache_dir, hub_timeout=hub_timeout)
    config = read_pretrained_config(folder)
    config_path = folder / CONFIG_NAME
    try:
        model = create_model(config["architecture"], **config["model_args"])
    except (TypeError, ValueError) as e:
        raise PretrainedFormatError(
            f"{config_path}: cannot build {config['architecture']} from its model_args: {e}"
        ) from e
    load_pretrained_folder(model, folder)
    model.pretrained_cfg = {
        **getattr(model, "pretrained_cfg", {}),
        **(config.get("pretrained_cfg") or {}),
        "architecture": config["architecture"],
        "label_names": config.get("label_names"),
        "preprocessing": config.get("preprocessing") or {},
        "source": config.get("source"),
    }
    return model.to(device).eval()
