"""Loading, overriding and validating configs: YAML files with ``_BASE_`` inheritance, then
``KEY VALUE`` pairs from the command line, then a validation pass before any work starts.

The YAML is parsed with PyYAML's ``SafeLoader`` only (no Python objects are ever built from tags:
``!!python/object/apply:os.system`` is an error, not a call), line numbers are kept so every error
names the file and line of the offending key, and duplicate keys in one mapping are an error rather
than a silent "last one wins". Typical use::

    cfg = load_config("configs/k400_regionvit_m.yaml", ["TRAIN.BATCH_SIZE", "4"])

``load_config`` returns a frozen fvcore ``CfgNode``; it never creates directories or files
(``save_config`` writes ``OUTPUT_DIR/config.yaml``; the engine calls it on rank 0).
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

logger = logging.getLogger(__name__)

BASE_KEY = "_BASE_"
CHECKPOINT_SUBDIR = "checkpoints"

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

    Rule: an inference job (``FEATURES.ENABLE`` or ``DEMO.ENABLE`` True) does not train or test
    unless asked to: ``TRAIN.ENABLE`` and ``TEST.ENABLE`` (True by default) become False unless
    they were set explicitly, in the YAML chain or on the command line.

    Args:
        cfg: the merged (not frozen) config, changed in place.
        sources: where each explicitly set key was set (``{"TRAIN.ENABLE": "a.yaml, line 3"}``);
            keys derived here are recorded as ``"derived: ..."``.

    Returns:
        One message per derivation made (for the log).
    """
    notes: list[str] = []
    jobs = [k for k in ("FEATURES.ENABLE", "DEMO.ENABLE") if cfg[k.split(".")[0]].ENABLE]
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
DATASET_CHOICES = ("kinetics", "ssv2")
SAMPLING_CHOICES = ("uniform", "dense")
DECODER_CHOICES = ("decord", "pyav")
LR_POLICY_CHOICES = ("cosine", "steps_with_relative_lrs")
DEVICE_CHOICES = ("auto", "cuda", "cpu")
BACKEND_CHOICES = ("auto", "nccl", "gloo")
TEMPORAL_INIT_CHOICES = ("zero", "copy")
TIME_EMBED_INIT_CHOICES = ("zeros", "trunc_normal", "normal")
TEMPORAL_FC_INIT_CHOICES = ("zeros", "trunc_normal")


def _registered_models() -> list[str] | None:
    """Names in the model registry, or None when the models package cannot be imported."""
    try:
        import regionvit_video.models  # noqa: F401  (registers the variants)
    except ImportError:
        return None
    from regionvit_video.models.registry import list_models

    return list_models() or None  # an empty registry: the models package is not in place yet


def validate_config(
    cfg: CfgNode, *, check_paths: bool = True, sources: dict[str, str] | None = None
) -> None:
    """Check every value the toolkit reads before any work starts; all problems in one error.

    Raises:
        ConfigError: one line per problem, each naming the key and where it was set.
    """
    sources = sources or {}
    errors: list[str] = []

    def err(key: str, msg: str) -> None:
        src = sources.get(key)
        errors.append(f"{key}: {msg}" + (f" (set at {src})" if src else ""))

    def get(key: str) -> Any:
        node: Any = cfg
        for part in key.split("."):
            node = node[part]
        return node

    def check(key: str, ok: bool, msg: str) -> None:
        if not ok:
            err(key, f"{msg}, got {get(key)!r}")

    def choice(key: str, choices: Iterable[str]) -> None:
        choices = tuple(choices)
        check(key, get(key) in choices, f"must be one of {', '.join(map(repr, choices))}")

    def at_least(key: str, low: float) -> None:
        v = get(key)
        check(key, isinstance(v, (int, float)) and math.isfinite(v) and v >= low, f"must be >= {low}")

    def in_unit(key: str, closed_high: bool = True) -> None:
        v = get(key)
        ok = 0.0 <= v <= 1.0 if closed_high else 0.0 <= v < 1.0
        check(key, ok, f"must be in [0, 1{']' if closed_high else ')'}")

    # Top level and devices.
    choice("DEVICE", DEVICE_CHOICES)
    choice("DIST_BACKEND", BACKEND_CHOICES)
    at_least("LOG_PERIOD", 1)
    check("RNG_SEED", 0 <= cfg.RNG_SEED < 2**31, "must be in [0, 2**31)")
    check("OUTPUT_DIR", bool(cfg.OUTPUT_DIR.strip()), "must not be empty")
    if cfg.DEVICE == "cuda":
        import torch

        if not torch.cuda.is_available():
            err("DEVICE", "'cuda' was requested but torch.cuda.is_available() is False")

    # Training.
    choice("TRAIN.DATASET", DATASET_CHOICES)
    choice("TEST.DATASET", DATASET_CHOICES)
    for key in ("TRAIN.BATCH_SIZE", "TEST.BATCH_SIZE", "FEATURES.BATCH_SIZE", "TRAIN.GRAD_ACCUM_STEPS",
                "TRAIN.CHECKPOINT_PERIOD", "TEST.NUM_ENSEMBLE_VIEWS"):
        at_least(key, 1)
    for key in ("TRAIN.EVAL_PERIOD", "TRAIN.CHECKPOINT_ITER_PERIOD", "TRAIN.CHECKPOINT_KEEP"):
        at_least(key, 0)
    choice("TRAIN.MIXED_PRECISION", MIXED_PRECISION_CHOICES)
    in_unit("TRAIN.MAX_BAD_VIDEO_FRACTION")
    accum, period = cfg.TRAIN.GRAD_ACCUM_STEPS, cfg.TRAIN.CHECKPOINT_ITER_PERIOD
    if accum >= 1 and period > 0 and period % accum:
        err("TRAIN.CHECKPOINT_ITER_PERIOD", f"must be a multiple of TRAIN.GRAD_ACCUM_STEPS ({accum}) "
            f"so that mid-epoch checkpoints fall between optimizer steps, got {period}")

    # Testing.
    check("TEST.NUM_SPATIAL_CROPS", cfg.TEST.NUM_SPATIAL_CROPS in (1, 3), "must be 1 (centre) or 3")
    check("TEST.SPLIT", bool(cfg.TEST.SPLIT), "must name a split such as 'test' or 'val'")

    # Data.
    at_least("DATA.NUM_FRAMES", 1)
    choice("DATA.SAMPLING", SAMPLING_CHOICES)
    at_least("DATA.SAMPLING_RATE", 1)
    check("DATA.TARGET_FPS", cfg.DATA.TARGET_FPS > 0, "must be > 0")
    js = cfg.DATA.TRAIN_JITTER_SCALES
    check("DATA.TRAIN_JITTER_SCALES", len(js) == 2 and 0 < js[0] <= js[1],
          "must be [min, max] with 0 < min <= max")
    for key in ("DATA.TRAIN_CROP_SIZE", "DATA.TEST_CROP_SIZE", "DATA.TEST_SCALE"):
        at_least(key, 1)
    check("DATA.MEAN", len(cfg.DATA.MEAN) == 3, "must have 3 values (R, G, B)")
    check("DATA.STD", len(cfg.DATA.STD) == 3 and all(s > 0 for s in cfg.DATA.STD),
          "must have 3 positive values (R, G, B)")
    choice("DATA.DECODER", DECODER_CHOICES)
    at_least("DATA.DECODE_THREADS", 0)
    at_least("DATA.DECODE_TIMEOUT", 0)
    at_least("DATA.NUM_RETRIES", 0)
    at_least("DATA_LOADER.NUM_WORKERS", 0)
    at_least("DEMO.TOP_K", 1)

    # Augmentation and mixup.
    at_least("AUG.RA_MAGNITUDE", 0)
    at_least("AUG.RA_NUM_LAYERS", 0)
    in_unit("AUG.RE_PROB")
    at_least("MIXUP.ALPHA", 0)
    at_least("MIXUP.CUTMIX_ALPHA", 0)
    in_unit("MIXUP.PROB")
    in_unit("MIXUP.SWITCH_PROB")
    in_unit("MIXUP.LABEL_SMOOTHING", closed_high=False)

    # Model.
    at_least("MODEL.NUM_CLASSES", 1)
    choice("MODEL.TEMPORAL_INIT", TEMPORAL_INIT_CHOICES)
    choice("MODEL.TIME_EMBED_INIT", TIME_EMBED_INIT_CHOICES)
    choice("MODEL.TEMPORAL_FC_INIT", TEMPORAL_FC_INIT_CHOICES)
    in_unit("MODEL.DROP_PATH_RATE", closed_high=False)
    in_unit("MODEL.DROPOUT_RATE", closed_high=False)
    models = _registered_models()
    if models is not None and cfg.MODEL.ARCH not in models:
        close = difflib.get_close_matches(cfg.MODEL.ARCH, models, n=3)
        hint = f"; did you mean {' or '.join(close)}?" if close else f"; registered: {', '.join(models)}"
        err("MODEL.ARCH", f"{cfg.MODEL.ARCH!r} is not a registered model{hint}")
    check("MODEL_EMA.DECAY", 0.0 < cfg.MODEL_EMA.DECAY < 1.0, "must be in (0, 1)")

    # Solver.
    check("SOLVER.BASE_LR", cfg.SOLVER.BASE_LR > 0 and math.isfinite(cfg.SOLVER.BASE_LR), "must be > 0")
    for key in ("SOLVER.WEIGHT_DECAY", "SOLVER.WARMUP_EPOCHS", "SOLVER.WARMUP_START_LR",
                "SOLVER.COSINE_END_LR", "SOLVER.CLIP_GRAD_NORM"):
        at_least(key, 0)
    check("SOLVER.MOMENTUM", 0.0 <= cfg.SOLVER.MOMENTUM < 1.0, "must be in [0, 1)")
    at_least("SOLVER.MAX_EPOCH", 1)
    choice("SOLVER.LR_POLICY", LR_POLICY_CHOICES)
    if cfg.SOLVER.LR_POLICY == "steps_with_relative_lrs":
        steps, lrs = list(cfg.SOLVER.STEPS), list(cfg.SOLVER.LRS)
        check("SOLVER.STEPS", bool(steps) and steps[0] == 0 and all(b > a for a, b in zip(steps, steps[1:]))
              and steps[-1] < cfg.SOLVER.MAX_EPOCH,
              f"must start at 0 and increase strictly below SOLVER.MAX_EPOCH ({cfg.SOLVER.MAX_EPOCH})")
        check("SOLVER.LRS", len(lrs) == len(steps) and all(r > 0 for r in lrs),
              f"must give one positive relative lr per SOLVER.STEPS entry ({len(steps)})")
    try:
        from timm.optim import list_optimizers

        opts = list_optimizers()
        if cfg.SOLVER.OPTIMIZING_METHOD.lower() not in opts:
            close = difflib.get_close_matches(cfg.SOLVER.OPTIMIZING_METHOD.lower(), opts, n=3)
            err("SOLVER.OPTIMIZING_METHOD", f"{cfg.SOLVER.OPTIMIZING_METHOD!r} is not a timm optimizer"
                + (f"; did you mean {' or '.join(close)}?" if close else ""))
    except ImportError:  # pragma: no cover - timm is a hard dependency
        pass

    if check_paths:
        _check_paths(cfg, err)

    if errors:
        raise ConfigError("invalid config:\n  " + "\n  ".join(errors))


def _check_paths(cfg: CfgNode, err) -> None:
    """Paths that must exist for the requested jobs."""
    needs_data = cfg.TRAIN.ENABLE or cfg.TEST.ENABLE
    data_dir = cfg.DATA.PATH_TO_DATA_DIR
    if needs_data:
        if not data_dir:
            err("DATA.PATH_TO_DATA_DIR", "is empty; set it to the folder of the dataset's split files")
        elif not os.path.isdir(data_dir):
            err("DATA.PATH_TO_DATA_DIR", f"folder {data_dir!r} does not exist")
        else:
            lists = []
            if cfg.TRAIN.ENABLE and cfg.TRAIN.DATASET == "kinetics":
                lists.append(("TRAIN.DATASET", "train"))
                if cfg.TRAIN.EVAL_PERIOD > 0:
                    lists.append(("TRAIN.EVAL_PERIOD", "val"))
            if cfg.TEST.ENABLE and cfg.TEST.DATASET == "kinetics":
                lists.append(("TEST.SPLIT", cfg.TEST.SPLIT))
            ssv2 = []
            if cfg.TRAIN.ENABLE and cfg.TRAIN.DATASET == "ssv2":
                ssv2 += ["something-something-v2-labels.json", "something-something-v2-train.json"]
                if cfg.TRAIN.EVAL_PERIOD > 0:
                    ssv2.append("something-something-v2-validation.json")
            if cfg.TEST.ENABLE and cfg.TEST.DATASET == "ssv2":
                ssv2 += ["something-something-v2-labels.json", "something-something-v2-train.json"
                         if cfg.TEST.SPLIT == "train" else "something-something-v2-validation.json"]
            for name in dict.fromkeys(ssv2):
                if not os.path.isfile(os.path.join(data_dir, name)):
                    err("DATA.PATH_TO_DATA_DIR", f"the SSv2 file {os.path.join(data_dir, name)!r} does not exist")
            for why, split in lists:
                csv = os.path.join(data_dir, f"{split}.csv")
                if not os.path.isfile(csv):
                    err("DATA.PATH_TO_DATA_DIR", f"the {split} list {csv!r} does not exist "
                        f"(needed because of {why})")
    if cfg.DATA.PATH_PREFIX and needs_data and not os.path.isdir(cfg.DATA.PATH_PREFIX):
        err("DATA.PATH_PREFIX", f"folder {cfg.DATA.PATH_PREFIX!r} does not exist")
    for key in ("DATA.CLASS_NAMES", "MODEL.PRETRAINED", "TRAIN.CHECKPOINT_FILE_PATH",
                "TEST.CHECKPOINT_FILE_PATH"):
        section, name = key.split(".")
        value = cfg[section][name]
        if value and not os.path.isfile(value):
            err(key, f"file {value!r} does not exist")
    if cfg.FEATURES.ENABLE:
        if not cfg.FEATURES.INPUT:
            err("FEATURES.INPUT", "is empty; set it to a folder of videos or a Kinetics-layout list")
        elif not os.path.exists(cfg.FEATURES.INPUT):
            err("FEATURES.INPUT", f"{cfg.FEATURES.INPUT!r} does not exist")
    if cfg.DEMO.ENABLE and not os.path.isfile(cfg.DEMO.INPUT):
        err("DEMO.INPUT", f"video {cfg.DEMO.INPUT!r} does not exist")
    if cfg.TEST.ENABLE and not cfg.TRAIN.ENABLE and not cfg.TEST.CHECKPOINT_FILE_PATH:
        ckpt_dir = Path(cfg.OUTPUT_DIR) / CHECKPOINT_SUBDIR
        has_ckpt = ckpt_dir.is_dir() and any(
            p.name.startswith("checkpoint_") and p.suffix == ".pyth" for p in ckpt_dir.iterdir()
        )
        if not has_ckpt:
            err("TEST.CHECKPOINT_FILE_PATH", f"is empty and {ckpt_dir} holds no checkpoint, with "
                "TRAIN.ENABLE False: refusing to test an untrained model; set "
                "TEST.CHECKPOINT_FILE_PATH to the checkpoint to test")


# ------------------------------------------------------------------------------------------------ #
# Saving and the command line
# ------------------------------------------------------------------------------------------------ #
def save_config(cfg: CfgNode, output_dir: str | os.PathLike | None = None) -> Path:
    """Write the resolved config to ``OUTPUT_DIR/config.yaml`` (atomically); returns the path."""
    from regionvit_video.utils.io import atomic_write

    path = Path(output_dir if output_dir is not None else cfg.OUTPUT_DIR) / "config.yaml"
    text = cfg.dump()
    atomic_write(path, lambda tmp: Path(tmp).write_text(text))
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
