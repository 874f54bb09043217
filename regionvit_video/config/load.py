"""Loading, overriding and validating configs: YAML files with ``_BASE_`` inheritance, then
``KEY VALUE`` pairs from the command line, then a validation pass before any work starts.

The YAML is parsed with PyYAML's ``SafeLoader`` only (no Python objects are ever built from tags:
``!!python/object/apply:os.system`` is an error, not a call), line numbers are kept so every error
names the file and line of the offending key, and duplicate keys in one mapping are an error rather
than a silent "last one wins". Typical use::

    cfg = load_config("configs/k400_regionvit_m.yaml", ["TRAIN.BATCH_SIZE", "4"])

``load_config`` returns a frozen fvcore ``CfgNode``; it never creates directories or files
(``save_config`` writes ``OUTPUT_DIR/config.yaml``; ``engine.build.setup_run`` calls it on rank 0).

Validation states no rule of its own about what the lower layers own: the dataset names and the files
each split needs come from :data:`regionvit_video.data.DATASETS`, the sampling, decoder, crop and stride
choices from the data modules, the temporal init choices from :mod:`regionvit_video.layers.time_embed`,
the model names and kinds from the model registry, the checkpoint names from
:mod:`regionvit_video.utils.checkpoint_files`.
"""
from __future__ import annotations

import argparse
import ast
import difflib
import logging
import math
import os
from pathlib import Path
from typing import Any, Iterable, Sequence

import yaml
from fvcore.common.config import CfgNode

from regionvit_video.config.defaults import get_cfg
from regionvit_video.data.datasets import DATASETS
from regionvit_video.data.decoder import BACKENDS
from regionvit_video.data.sampling import SAMPLINGS, STRIDE_UNITS
from regionvit_video.data.stream import LIVE_MODES, is_live_source
from regionvit_video.data.transforms import SPATIAL_CROPS
from regionvit_video.layers.time_embed import TEMPORAL_FC_INITS, TEMPORAL_INITS, TIME_EMBED_INITS
from regionvit_video.models.base import COMPILE_SCOPES
from regionvit_video.models.onnx_export import MIN_OPSET as MIN_ONNX_OPSET
from regionvit_video.models.pretrained import is_pretrained_source
from regionvit_video.utils.checkpoint_files import checkpoint_dir, latest_checkpoint

logger = logging.getLogger(__name__)

BASE_KEY = "_BASE_"
# Keys (or whole sections) that were renamed: using the old name is an error that names the new one.
RENAMED_KEYS = {"DEMO": "PREDICT"}

__all__ = [
    "ConfigError",
    "load_config",
    "load_yaml_with_base",
    "merge_overrides",
    "derive_config",
    "validate_config",
    "save_config",
    "build_arg_parser",
    "parse_args",
    "config_from_args",
]


class ConfigError(ValueError):
    """A config file or override is malformed, names an unknown key, or holds an impossible value."""


# ------------------------------------------------------------------------------------------------ #
# YAML with line numbers
# ------------------------------------------------------------------------------------------------ #
class _LinedDict(dict):
    """A dict from YAML that remembers the file and line of each of its keys."""

    def __init__(self, *args, where: dict[str, str] | None = None, **kwargs):
        super().__init__(*args, **kwargs)
        self.where: dict[str, str] = where or {}


def _make_loader(filename: str) -> type:
    class _Loader(yaml.SafeLoader):
        """SafeLoader (no Python object construction) recording where each mapping key is."""

    def construct_mapping(loader, node, deep=False):
        if not isinstance(node, yaml.MappingNode):
            raise yaml.constructor.ConstructorError(
                None, None, f"expected a mapping, found {node.id}", node.start_mark
            )
        loader.flatten_mapping(node)  # resolves YAML merge keys ("<<")
        out = _LinedDict()
        for key_node, value_node in node.value:
            key = loader.construct_object(key_node, deep=True)
            line = key_node.start_mark.line + 1
            if not isinstance(key, str):
                raise ConfigError(f"{filename}, line {line}: config keys must be strings, got {key!r}")
            if key in out:
                raise ConfigError(
                    f"{filename}, line {line}: key {key!r} appears twice in the same mapping "
                    f"(first at {out.where[key]}); YAML would silently keep only the last one"
                )
            out[key] = loader.construct_object(value_node, deep=True)
            out.where[key] = f"{filename}, line {line}"
        return out

    _Loader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, construct_mapping)
    return _Loader


def _read_yaml(path: Path) -> _LinedDict:
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise ConfigError(f"config file not found: {path}") from None
    try:
        data = yaml.load(text, Loader=_make_loader(str(path)))  # noqa: S506  (a SafeLoader subclass)
    except yaml.constructor.ConstructorError as e:
        raise ConfigError(
            f"{path}: YAML tag refused by the safe loader (configs may hold only plain values; "
            f"no Python objects are constructed): {e}"
        ) from None
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: invalid YAML: {e}") from None
    if data is None:
        return _LinedDict()
    if not isinstance(data, _LinedDict):
        raise ConfigError(f"{path}: the top level of a config file must be a mapping of keys")
    return data


def _merge_dicts(src: _LinedDict, dst: _LinedDict) -> None:
    """Merge ``src`` into ``dst`` in place (values of ``src`` win), keeping key locations."""
    for k, v in src.items():
        if isinstance(v, dict) and isinstance(dst.get(k), dict):
            _merge_dicts(v, dst[k])
        else:
            dst[k] = v
        dst.where[k] = src.where.get(k, "")


def load_yaml_with_base(path: str | os.PathLike, _stack: tuple[Path, ...] = ()) -> _LinedDict:
    """Read a YAML config and the ``_BASE_`` files it inherits from, merged (child wins).

    ``_BASE_`` is a path or a list of paths, relative to the including file (``~`` expanded).
    Cycles and missing bases are errors naming the including file and line.
    """
    path = Path(path).expanduser().resolve()
    if path in _stack:
        chain = " -> ".join(str(p) for p in (*_stack, path))
        raise ConfigError(f"_BASE_ inheritance cycle: {chain}")
    data = _read_yaml(path)
    if BASE_KEY not in data:
        return data
    bases = data.pop(BASE_KEY)
    where = data.where.pop(BASE_KEY)
    if isinstance(bases, str):
        bases = [bases]
    if not isinstance(bases, list) or not all(isinstance(b, str) for b in bases):
        raise ConfigError(f"{where}: _BASE_ must be a path or a list of paths, got {bases!r}")
    merged = _LinedDict()
    for base in bases:
        base_path = Path(base).expanduser()
        if not base_path.is_absolute():
            base_path = path.parent / base_path
        if not base_path.is_file():
            raise ConfigError(f"{where}: _BASE_ file {base!r} not found (looked for {base_path})")
        _merge_dicts(load_yaml_with_base(base_path, (*_stack, path)), merged)
    _merge_dicts(data, merged)
    return merged


# ------------------------------------------------------------------------------------------------ #
# Merging into the defaults, with type checks
# ------------------------------------------------------------------------------------------------ #
def _all_keys(node: CfgNode, prefix: str = "") -> list[str]:
    keys = []
    for k, v in node.items():
        full = f"{prefix}{k}"
        keys.append(full)
        if isinstance(v, CfgNode):
            keys.extend(_all_keys(v, full + "."))
    return keys


def _unknown_key_message(full_key: str, root: CfgNode) -> str:
    for old, new in RENAMED_KEYS.items():
        if full_key == old or full_key.startswith(old + "."):
            return f"config key {full_key} was renamed {new + full_key[len(old):]}"
    known = _all_keys(root)
    close = difflib.get_close_matches(full_key, known, n=3, cutoff=0.6)
    # Also catch a right name in the wrong section (TRAIN.NUM_FRAMES -> DATA.NUM_FRAMES).
    leaf = full_key.rsplit(".", 1)[-1]
    close += [k for k in known if k.rsplit(".", 1)[-1] == leaf and k not in close]
    hint = f"; did you mean {' or '.join(close[:4])}?" if close else ""
    return f"unknown config key {full_key}{hint}"


def _type_name(v: Any) -> str:
    return type(v).__name__


def _coerce(value: Any, default: Any, full_key: str, where: str) -> Any:
    """Check ``value`` against the type of the default value, converting only lossless cases."""

    def fail(detail: str = "") -> ConfigError:
        return ConfigError(
            f"{where}: wrong type for {full_key}: expected {_type_name(default)} like {default!r}, "
            f"got {_type_name(value)} {value!r}{detail}"
        )

    if isinstance(default, bool):
        if isinstance(value, bool):
            return value
        raise fail(" (write True or False)")
    if isinstance(default, int):
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        raise fail()
    if isinstance(default, float):
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        raise fail()
    if isinstance(default, str):
        if isinstance(value, str):
            return value
        raise fail(" (quote it if it is meant as text)")
    if isinstance(default, (list, tuple)):
        if not isinstance(value, (list, tuple)):
            raise fail()
        if default:
            proto = default[0]
            value = [_coerce(v, proto, f"{full_key}[{i}]", where) for i, v in enumerate(value)]
        return type(default)(value)
    if default is None:
        return value
    if type(value) is not type(default):
        raise fail()
    return value


def _merge_into(node: CfgNode, data: dict, prefix: str, root: CfgNode, sources: dict[str, str]):
    where_map = getattr(data, "where", {})
    for key, value in data.items():
        full = f"{prefix}{key}"
        where = where_map.get(key, "")
        if key == BASE_KEY:
            raise ConfigError(f"{where}: _BASE_ is only allowed at the top level of a file")
        if key not in node:
            raise ConfigError(f"{where}: {_unknown_key_message(full, root)}")
        default = node[key]
        if isinstance(default, CfgNode):
            if not isinstance(value, dict):
                raise ConfigError(
                    f"{where}: {full} is a section (keys {', '.join(list(default)[:4])}, ...); "
                    f"got the value {value!r}"
                )
            _merge_into(default, value, full + ".", root, sources)
            continue
        if isinstance(value, dict):
            raise ConfigError(f"{where}: {full} is a value ({default!r}), not a section")
        node[key] = _coerce(value, default, full, where)
        sources[full] = where


def _decode_cli_value(raw: str, default: Any) -> Any:
    """A command-line value as a Python literal (yacs' rule), kept as text for text keys."""
    if not isinstance(raw, str):  # programmatic overrides may pass values already typed
        return raw
    if isinstance(default, str):
        return raw
    try:
        return ast.literal_eval(raw)
    except (ValueError, SyntaxError):
        return raw


def merge_overrides(cfg: CfgNode, opts: Sequence[str], sources: dict[str, str] | None = None) -> None:
    """Apply ``KEY VALUE`` pairs (PySlowFast's trailing overrides or ``--opts``) to ``cfg``."""
    sources = {} if sources is None else sources
    opts = list(opts or [])
    if len(opts) % 2:
        raise ConfigError(
            f"command-line overrides must be KEY VALUE pairs; got an odd number ({len(opts)}): "
            f"{' '.join(opts)} (the last key {opts[-1]!r} has no value)"
        )
    for key, raw in zip(opts[0::2], opts[1::2]):
        key = str(key)
        where = f"command line ({key} {raw})"
        if key == BASE_KEY:
            raise ConfigError(f"{where}: _BASE_ can only be used in files")
        node = cfg
        parts = key.split(".")
        for i, part in enumerate(parts[:-1]):
            sub = node.get(part) if isinstance(node, CfgNode) else None
            if not isinstance(sub, CfgNode):
                raise ConfigError(f"{where}: {_unknown_key_message(key, cfg)}")
            node = sub
        leaf = parts[-1]
        if leaf not in node:
            raise ConfigError(f"{where}: {_unknown_key_message(key, cfg)}")
        if isinstance(node[leaf], CfgNode):
            raise ConfigError(f"{where}: {key} is a section, not a value")
        node[leaf] = _coerce(_decode_cli_value(raw, node[leaf]), node[leaf], key, where)
        sources[key] = where


# ------------------------------------------------------------------------------------------------ #
# Derived settings
# ------------------------------------------------------------------------------------------------ #
def derive_config(cfg: CfgNode, sources: dict[str, str]) -> list[str]:
    """Settings implied by other settings; applied after merging, before validation.

    Rule: an inference job (``FEATURES.ENABLE``, ``PREDICT.ENABLE``, ``EXPORT.ENABLE`` or ``TIMELINE.ENABLE``
    True) does not train or test unless asked to: ``TRAIN.ENABLE`` and ``TEST.ENABLE`` (True by default) become
    False unless they were set explicitly, in the YAML chain or on the command line.

    Args:
        cfg: the merged (not frozen) config, changed in place.
        sources: where each explicitly set key was set (``{"TRAIN.ENABLE": "a.yaml, line 3"}``);
            keys derived here are recorded as ``"derived: ..."``.

    Returns:
        One message per derivation made (for the log).
    """
    notes: list[str] = []
    jobs = [k for k in INFERENCE_JOBS if cfg[k.split(".")[0]].ENABLE]
    if jobs:
        off = [k for k in ("TRAIN.ENABLE", "TEST.ENABLE") if k not in sources and cfg[k.split(".")[0]].ENABLE]
        for key in off:
            cfg[key.split(".")[0]].ENABLE = False
            sources[key] = f"derived: False because {' and '.join(jobs)} is True"
        if off:
            notes.append(f"{' and '.join(jobs)} is True: {' and '.join(off)} set to False (an inference job "
                         f"does not train or test unless {' / '.join(f'{k} True' for k in off)} is set explicitly)")
    return notes


def load_config(
    cfg_file: str | os.PathLike | None = None,
    opts: Sequence[str] | None = None,
    *,
    validate: bool = True,
    check_paths: bool = True,
    notes: list[str] | None = None,
) -> CfgNode:
    """Defaults, then ``cfg_file`` (with its ``_BASE_`` chain), then ``opts``, then the derived
    settings (:func:`derive_config`); validated, frozen.

    Args:
        cfg_file: YAML config; None keeps the defaults.
        opts: ``KEY VALUE`` pairs, e.g. ``["TRAIN.BATCH_SIZE", "4"]``.
        validate: run :func:`validate_config`.
        check_paths: let validation check that the data, checkpoint and pretrained paths exist.
        notes: if given, the messages of :func:`derive_config` are appended to it (for a caller that
            sets up logging later); otherwise they are logged here at INFO level.

    Raises:
        ConfigError: naming the key and the file and line (or the command-line pair) it came from.
    """
    cfg = get_cfg()
    sources: dict[str, str] = {}
    if cfg_file is not None:
        data = load_yaml_with_base(cfg_file)
        _merge_into(cfg, data, "", cfg, sources)
    merge_overrides(cfg, opts or [], sources)
    derived = derive_config(cfg, sources)
    if notes is not None:
        notes.extend(derived)
    else:
        for note in derived:
            logger.info("%s", note)
    if validate:
        validate_config(cfg, check_paths=check_paths, sources=sources)
    cfg.freeze()
    return cfg


# ------------------------------------------------------------------------------------------------ #
# Validation
# ------------------------------------------------------------------------------------------------ #
MIXED_PRECISION_CHOICES = ("none", "bf16", "fp16")
LR_POLICY_CHOICES = ("cosine", "steps_with_relative_lrs")
# Jobs that only run a trained model: enabling one turns TRAIN/TEST off unless they are set (derive_config).
INFERENCE_JOBS = ("FEATURES.ENABLE", "PREDICT.ENABLE", "EXPORT.ENABLE", "TIMELINE.ENABLE")
EXPORT_FORMATS = ("pretrained", "onnx")
EXPORT_WEIGHTS = ("model", "ema")
LR_SCALING_CHOICES = ("none", "linear")  # engine.optim.lr_scale applies them
DEVICE_CHOICES = ("auto", "cuda", "cpu")
BACKEND_CHOICES = ("auto", "nccl", "gloo")
FEATURE_MODES = ("video", "clips")
FEATURE_DTYPES = ("float32", "float16")


class _Checker:
    """Collects one line per problem, each naming the key and where it was set."""

    def __init__(self, cfg: CfgNode, sources: dict[str, str]):
        self.cfg, self.sources, self.errors = cfg, sources, []

    def err(self, key: str, msg: str) -> None:
        src = self.sources.get(key)
        self.errors.append(f"{key}: {msg}" + (f" (set at {src})" if src else ""))

    def get(self, key: str) -> Any:
        node: Any = self.cfg
        for part in key.split("."):
            node = node[part]
        return node

    def check(self, key: str, ok: bool, msg: str) -> None:
        if not ok:
            self.err(key, f"{msg}, got {self.get(key)!r}")

    def choice(self, key: str, choices: Iterable) -> None:
        choices = tuple(choices)
        self.check(key, self.get(key) in choices, f"must be one of {', '.join(map(repr, choices))}")

    def at_least(self, key: str, low: float) -> None:
        v = self.get(key)
        self.check(key, isinstance(v, (int, float)) and math.isfinite(v) and v >= low, f"must be >= {low}")

    def in_unit(self, key: str, closed_high: bool = True) -> None:
        v = self.get(key)
        ok = 0.0 <= v <= 1.0 if closed_high else 0.0 <= v < 1.0
        self.check(key, ok, f"must be in [0, 1{']' if closed_high else ')'}")


def _check_run(c: _Checker) -> None:
    cfg = c.cfg
    c.choice("DEVICE", DEVICE_CHOICES)
    c.choice("DIST_BACKEND", BACKEND_CHOICES)
    c.at_least("LOG_PERIOD", 1)
    c.check("RNG_SEED", 0 <= cfg.RNG_SEED < 2**31, "must be in [0, 2**31)")
    c.check("OUTPUT_DIR", bool(cfg.OUTPUT_DIR.strip()), "must not be empty")
    if cfg.DEVICE == "cuda":
        import torch

        if not torch.cuda.is_available():
            c.err("DEVICE", "'cuda' was requested but torch.cuda.is_available() is False")


def _check_train(c: _Checker) -> None:
    cfg = c.cfg
    c.choice("TRAIN.DATASET", DATASETS)
    for key in ("TRAIN.BATCH_SIZE", "TRAIN.GRAD_ACCUM_STEPS", "TRAIN.CHECKPOINT_PERIOD"):
        c.at_least(key, 1)
    for key in ("TRAIN.EVAL_PERIOD", "TRAIN.CHECKPOINT_ITER_PERIOD", "TRAIN.CHECKPOINT_KEEP"):
        c.at_least(key, 0)
    c.choice("TRAIN.MIXED_PRECISION", MIXED_PRECISION_CHOICES)
    c.in_unit("TRAIN.MAX_BAD_VIDEO_FRACTION")
    accum, period = cfg.TRAIN.GRAD_ACCUM_STEPS, cfg.TRAIN.CHECKPOINT_ITER_PERIOD
    if accum >= 1 and period > 0 and period % accum:
        c.err("TRAIN.CHECKPOINT_ITER_PERIOD", f"must be a multiple of TRAIN.GRAD_ACCUM_STEPS ({accum}) "
              f"so that mid-epoch checkpoints fall between optimizer steps, got {period}")


def _check_inference(c: _Checker) -> None:
    """TEST, FEATURES, PREDICT and EXPORT: the values; a typo here fails now, not after training."""
    c.choice("TEST.DATASET", DATASETS)
    for key in ("TEST.BATCH_SIZE", "TEST.NUM_ENSEMBLE_VIEWS", "FEATURES.BATCH_SIZE", "FEATURES.WINDOW",
                "PREDICT.TOP_K"):
        c.at_least(key, 1)
    c.check("TEST.NUM_SPATIAL_CROPS", c.cfg.TEST.NUM_SPATIAL_CROPS in SPATIAL_CROPS, "must be 1 (centre) or 3")
    c.check("TEST.SPLIT", bool(c.cfg.TEST.SPLIT), "must name a split such as 'test' or 'val'")
    c.choice("FEATURES.MODE", FEATURE_MODES)
    c.choice("FEATURES.DTYPE", FEATURE_DTYPES)
    c.choice("FEATURES.STRIDE_UNIT", STRIDE_UNITS)
    c.check("FEATURES.STRIDE", c.cfg.FEATURES.STRIDE > 0, "must be > 0")
    c.choice("EXPORT.FORMAT", EXPORT_FORMATS)
    c.choice("EXPORT.WEIGHTS", EXPORT_WEIGHTS)
    c.at_least("EXPORT.OPSET", MIN_ONNX_OPSET)  # the lowest opset the exporter writes a valid graph in


def _check_timeline(c: _Checker) -> None:
    """TIMELINE: the window, the thresholds, the live settings."""
    for key in ("TIMELINE.WINDOW_SECONDS", "TIMELINE.STRIDE_SECONDS", "TIMELINE.STALL_SECONDS"):
        v = c.get(key)
        c.check(key, isinstance(v, (int, float)) and math.isfinite(v) and v > 0, "must be a number of seconds > 0")
    c.in_unit("TIMELINE.SCORE_THRESHOLD")
    for key in ("TIMELINE.TOP_K", "TIMELINE.BATCH_SIZE"):
        c.at_least(key, 1)
    c.choice("TIMELINE.LIVE_MODE", LIVE_MODES)
    c.choice("TIMELINE.DECODER", BACKENDS)


def _check_data(c: _Checker) -> None:
    cfg = c.cfg
    c.at_least("DATA.NUM_FRAMES", 1)
    c.choice("DATA.SAMPLING", SAMPLINGS)
    c.at_least("DATA.SAMPLING_RATE", 1)
    c.check("DATA.TARGET_FPS", cfg.DATA.TARGET_FPS > 0, "must be > 0")
    js = cfg.DATA.TRAIN_JITTER_SCALES
    c.check("DATA.TRAIN_JITTER_SCALES", len(js) == 2 and 0 < js[0] <= js[1], "must be [min, max] with 0 < min <= max")
    for key in ("DATA.TRAIN_CROP_SIZE", "DATA.TEST_CROP_SIZE", "DATA.TEST_SCALE"):
        c.at_least(key, 1)
    c.check("DATA.MEAN", len(cfg.DATA.MEAN) == 3, "must have 3 values (R, G, B)")
    c.check("DATA.STD", len(cfg.DATA.STD) == 3 and all(s > 0 for s in cfg.DATA.STD),
            "must have 3 positive values (R, G, B)")
    c.choice("DATA.DECODER", BACKENDS)
    for key in ("DATA.DECODE_THREADS", "DATA.DECODE_TIMEOUT", "DATA.NUM_RETRIES", "DATA_LOADER.NUM_WORKERS"):
        c.at_least(key, 0)
    # Augmentation and mixup.
    c.at_least("AUG.RA_MAGNITUDE", 0)
    c.at_least("AUG.RA_NUM_LAYERS", 0)
    c.in_unit("AUG.RE_PROB")
    c.at_least("MIXUP.ALPHA", 0)
    c.at_least("MIXUP.CUTMIX_ALPHA", 0)
    c.in_unit("MIXUP.PROB")
    c.in_unit("MIXUP.SWITCH_PROB")
    c.in_unit("MIXUP.LABEL_SMOOTHING", closed_high=False)


def _check_model(c: _Checker) -> None:
    cfg = c.cfg
    c.at_least("MODEL.NUM_CLASSES", 1)
    c.choice("MODEL.TEMPORAL_INIT", TEMPORAL_INITS)
    c.choice("MODEL.TIME_EMBED_INIT", TIME_EMBED_INITS)
    c.choice("MODEL.TEMPORAL_FC_INIT", TEMPORAL_FC_INITS)
    c.in_unit("MODEL.DROP_PATH_RATE", closed_high=False)
    c.in_unit("MODEL.DROPOUT_RATE", closed_high=False)
    if cfg.MODEL.COMPILE:
        import torch._dynamo

        c.choice("MODEL.COMPILE_BACKEND", torch._dynamo.list_backends(exclude_tags=()))
        c.choice("MODEL.COMPILE_SCOPE", COMPILE_SCOPES)
    c.check("MODEL_EMA.DECAY", 0.0 < cfg.MODEL_EMA.DECAY < 1.0, "must be in (0, 1)")
    from regionvit_video.models import check_video_model, list_models

    models = list_models()
    if cfg.MODEL.ARCH not in models:
        close = difflib.get_close_matches(cfg.MODEL.ARCH, models, n=3)
        hint = f"; did you mean {' or '.join(close)}?" if close else f"; registered: {', '.join(models)}"
        c.err("MODEL.ARCH", f"{cfg.MODEL.ARCH!r} is not a registered model{hint}")
        return
    try:  # every job feeds clips: training, testing, features and prediction need a video model
        check_video_model(cfg.MODEL.ARCH)
    except ValueError as e:
        c.err("MODEL.ARCH", str(e))


def _check_solver(c: _Checker) -> None:
    cfg = c.cfg
    c.check("SOLVER.BASE_LR", cfg.SOLVER.BASE_LR > 0 and math.isfinite(cfg.SOLVER.BASE_LR), "must be > 0")
    for key in ("SOLVER.WEIGHT_DECAY", "SOLVER.WARMUP_EPOCHS", "SOLVER.WARMUP_START_LR",
                "SOLVER.COSINE_END_LR", "SOLVER.CLIP_GRAD_NORM"):
        c.at_least(key, 0)
    c.check("SOLVER.MOMENTUM", 0.0 <= cfg.SOLVER.MOMENTUM < 1.0, "must be in [0, 1)")
    c.at_least("SOLVER.MAX_EPOCH", 1)
    c.choice("SOLVER.LR_POLICY", LR_POLICY_CHOICES)
    c.choice("SOLVER.LR_SCALING", LR_SCALING_CHOICES)
    c.at_least("SOLVER.REFERENCE_BATCH_SIZE", 1)
    if cfg.SOLVER.LR_POLICY == "steps_with_relative_lrs":
        steps, lrs = list(cfg.SOLVER.STEPS), list(cfg.SOLVER.LRS)
        c.check("SOLVER.STEPS", bool(steps) and steps[0] == 0 and all(b > a for a, b in zip(steps, steps[1:]))
                and steps[-1] < cfg.SOLVER.MAX_EPOCH,
                f"must start at 0 and increase strictly below SOLVER.MAX_EPOCH ({cfg.SOLVER.MAX_EPOCH})")
        c.check("SOLVER.LRS", len(lrs) == len(steps) and all(r > 0 for r in lrs),
                f"must give one positive relative lr per SOLVER.STEPS entry ({len(steps)})")
    from timm.optim import list_optimizers

    opts = list_optimizers()
    if cfg.SOLVER.OPTIMIZING_METHOD.lower() not in opts:
        close = difflib.get_close_matches(cfg.SOLVER.OPTIMIZING_METHOD.lower(), opts, n=3)
        c.err("SOLVER.OPTIMIZING_METHOD", f"{cfg.SOLVER.OPTIMIZING_METHOD!r} is not a timm optimizer"
              + (f"; did you mean {' or '.join(close)}?" if close else ""))


def validate_config(
    cfg: CfgNode, *, check_paths: bool = True, sources: dict[str, str] | None = None
) -> None:
    """Check every value the toolkit reads before any work starts; all problems in one error.

    Raises:
        ConfigError: one line per problem, each naming the key and where it was set.
    """
    c = _Checker(cfg, sources or {})
    for section in (_check_run, _check_train, _check_inference, _check_timeline, _check_data, _check_model,
                    _check_solver):
        section(c)
    if check_paths:
        _check_paths(c)
    if c.errors:
        raise ConfigError("invalid config:\n  " + "\n  ".join(c.errors))


def _check_data_files(c: _Checker) -> None:
    """The files each split of the enabled jobs reads (:data:`regionvit_video.data.DATASETS`)."""
    cfg, data_dir = c.cfg, c.cfg.DATA.PATH_TO_DATA_DIR
    needed = []  # (dataset, split, why)
    if cfg.TRAIN.ENABLE:
        needed.append((cfg.TRAIN.DATASET, "train", "TRAIN.DATASET"))
        if cfg.TRAIN.EVAL_PERIOD > 0:
            needed.append((cfg.TRAIN.DATASET, "val", "TRAIN.EVAL_PERIOD"))
    if cfg.TEST.ENABLE:
        needed.append((cfg.TEST.DATASET, "test", "TEST.SPLIT"))
    missing = {}
    for name, split, why in needed:
        if name not in DATASETS:
            continue  # reported by the dataset key's check
        for file, what in DATASETS[name].split_files(split, cfg.TEST.SPLIT):
            path = os.path.join(data_dir, file)
            if not os.path.isfile(path):
                missing.setdefault(path, (what, why))
    for path, (what, why) in missing.items():
        c.err("DATA.PATH_TO_DATA_DIR", f"the {what} {path!r} does not exist (needed because of {why})")


def _check_paths(c: _Checker) -> None:
    """Paths that must exist for the requested jobs."""
    cfg = c.cfg
    needs_data = cfg.TRAIN.ENABLE or cfg.TEST.ENABLE
    data_dir = cfg.DATA.PATH_TO_DATA_DIR
    if needs_data:
        if not data_dir:
            c.err("DATA.PATH_TO_DATA_DIR", "is empty; set it to the folder of the dataset's split files")
        elif not os.path.isdir(data_dir):
            c.err("DATA.PATH_TO_DATA_DIR", f"folder {data_dir!r} does not exist")
        else:
            _check_data_files(c)
    if cfg.DATA.PATH_PREFIX and needs_data and not os.path.isdir(cfg.DATA.PATH_PREFIX):
        c.err("DATA.PATH_PREFIX", f"folder {cfg.DATA.PATH_PREFIX!r} does not exist")
    if cfg.DATA.CLASS_NAMES and not os.path.isfile(cfg.DATA.CLASS_NAMES):
        c.err("DATA.CLASS_NAMES", f"file {cfg.DATA.CLASS_NAMES!r} does not exist")
    for key in ("MODEL.PRETRAINED", "TRAIN.CHECKPOINT_FILE_PATH", "TEST.CHECKPOINT_FILE_PATH"):
        value = c.get(key)  # a checkpoint file, or a pretrained folder (models.save_pretrained); a Hub id: hf-hub:
        if value and not os.path.isfile(value) and not is_pretrained_source(value):
            c.err(key, f"{value!r} is neither a checkpoint file nor a pretrained folder (config.json + model.safetensors)"
                  if os.path.isdir(value) else f"file {value!r} does not exist")
    if cfg.EXPORT.ENABLE and cfg.EXPORT.INPUT and not os.path.isfile(cfg.EXPORT.INPUT):
        c.err("EXPORT.INPUT", f"video {cfg.EXPORT.INPUT!r} does not exist")
    if cfg.FEATURES.ENABLE:
        if not cfg.FEATURES.INPUT:
            c.err("FEATURES.INPUT", "is empty; set it to a folder of videos or a Kinetics-layout list")
        elif not os.path.exists(cfg.FEATURES.INPUT):
            c.err("FEATURES.INPUT", f"{cfg.FEATURES.INPUT!r} does not exist")
    if cfg.PREDICT.ENABLE and not os.path.isfile(cfg.PREDICT.INPUT):
        c.err("PREDICT.INPUT", f"video {cfg.PREDICT.INPUT!r} does not exist")
    if cfg.TIMELINE.ENABLE:
        source = cfg.TIMELINE.INPUT
        if not source:
            c.err("TIMELINE.INPUT", "is empty; set it to a video file, a camera (/dev/video0), a URL or - (stdin)")
        elif not os.path.isfile(source) and not is_live_source(source):
            c.err("TIMELINE.INPUT", f"video {source!r} does not exist (and is not a camera, a URL or -)")
        elif source.startswith("/dev/video") and not os.path.exists(source):
            c.err("TIMELINE.INPUT", f"camera {source!r} does not exist")
    if (cfg.TEST.ENABLE or cfg.EXPORT.ENABLE) and not cfg.TRAIN.ENABLE and not cfg.TEST.CHECKPOINT_FILE_PATH:
        if latest_checkpoint(cfg.OUTPUT_DIR) is None:
            c.err("TEST.CHECKPOINT_FILE_PATH", f"is empty and {checkpoint_dir(cfg.OUTPUT_DIR)} holds no checkpoint, "
                  "with TRAIN.ENABLE False: refusing to test an untrained model; set TEST.CHECKPOINT_FILE_PATH to "
                  "the checkpoint to test")


# ------------------------------------------------------------------------------------------------ #
# Saving and the command line
# ------------------------------------------------------------------------------------------------ #
def save_config(cfg: CfgNode, output_dir: str | os.PathLike | None = None) -> Path:
    """Write the resolved config to ``OUTPUT_DIR/config.yaml`` (atomically); returns the path."""
    from regionvit_video.utils.io import atomic_write_text

    path = Path(output_dir if output_dir is not None else cfg.OUTPUT_DIR) / "config.yaml"
    text = cfg.dump()
    atomic_write_text(path, text)
    return path


def build_arg_parser() -> argparse.ArgumentParser:
    """PySlowFast's command line: ``--cfg FILE [--init_method ...] [KEY VALUE ...]``."""
    p = argparse.ArgumentParser(
        description="Train, validate and test RegionViT video models (PySlowFast-style CLI). "
        "Launch multi-GPU / multi-node jobs with torchrun.",
        epilog="Examples:\n  python run_net.py --cfg configs/k400_regionvit_m.yaml "
        "DATA.PATH_TO_DATA_DIR /data/k400 OUTPUT_DIR runs/k400_m\n"
        "  torchrun --nproc_per_node 8 run_net.py --cfg configs/k400_regionvit_m.yaml",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--cfg", dest="cfg_file", required=True, help="YAML config file")
    p.add_argument("--init_method", default=None,
                   help="PySlowFast compatibility: rendezvous URL (tcp://host:port or file://path) used "
                   "only when not launched by torchrun and --num_shards > 1")
    p.add_argument("--shard_id", type=int, default=0, help="PySlowFast compatibility: this machine's index")
    p.add_argument("--num_shards", type=int, default=1, help="PySlowFast compatibility: number of machines")
    p.add_argument("--opts", dest="opts_flag", nargs=argparse.REMAINDER, default=None,
                   help="KEY VALUE pairs overriding the config (same as trailing pairs)")
    p.add_argument("opts", nargs=argparse.REMAINDER, default=None,
                   help="KEY VALUE pairs overriding the config, e.g. TRAIN.BATCH_SIZE 4")
    return p


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """Parse the command line; trailing pairs and ``--opts`` pairs are joined into ``args.opts``."""
    args = build_arg_parser().parse_args(argv)
    opts = list(args.opts or [])
    if opts and opts[0] == "--opts":  # "--opts" after a positional pair
        opts = opts[1:]
    opts = [o for o in opts if o != "--opts"]
    args.opts = opts + list(args.opts_flag or [])
    del args.opts_flag
    if args.num_shards < 1 or not 0 <= args.shard_id < args.num_shards:
        raise ConfigError(f"--shard_id {args.shard_id} must be in [0, --num_shards {args.num_shards})")
    return args


def config_from_args(args: argparse.Namespace, *, check_paths: bool = True,
                     notes: list[str] | None = None) -> CfgNode:
    """The validated config for parsed command-line arguments (``notes``: see :func:`load_config`)."""
    return load_config(args.cfg_file, args.opts, check_paths=check_paths, notes=notes)
