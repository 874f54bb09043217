"""Untrusted files: crafted checkpoints through every entry point that loads one, hostile YAML configs,
and a scan of the package for unsafe loading calls.

A crafted checkpoint is a ``torch.save`` file whose pickle calls ``os.system("touch MARKER")`` when
unpickled: refusing it is not enough, the marker must never appear (nothing ran).
"""
from __future__ import annotations

import ast
import os
import signal
from pathlib import Path

import pytest
import torch

from regionvit_video.config import ConfigError, load_config
from regionvit_video.engine import checkpoint as ck
from tiny_datasets import make_kinetics_folder

REPO = Path(__file__).resolve().parents[1]
PACKAGE = REPO / "regionvit_video"


class _RunsCommand:
    """Pickles to a call of ``os.system``: plain ``torch.load`` / ``pickle.load`` would run the command."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def _crafted_checkpoint(path: Path, marker: Path) -> Path:
    """Looks like a toolkit checkpoint (``model_state`` of tensors) with the payload hidden inside."""
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"model_state": {"head.weight": torch.zeros(2, 2), "head.bias": _RunsCommand(marker)},
                "epoch": 1, "epoch_complete": True, "global_step": 1}, path)
    return path


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return make_kinetics_folder(tmp_path_factory.mktemp("k_untrusted"), num_classes=2, videos_per_class=1,
                                size=(32, 40), frames=8, seed=7)


def _argv(data: dict, out: Path, *extra) -> list[str]:
    opts = [*data["cfg_opts"], "MODEL.ARCH", "regionvit_video_pico", "DATA.NUM_FRAMES", 4,
            "DATA.TRAIN_JITTER_SCALES", "[32, 40]", "DATA.TRAIN_CROP_SIZE", 32, "DATA.TEST_SCALE", 32,
            "DATA.TEST_CROP_SIZE", 32, "TRAIN.BATCH_SIZE", 1, "TEST.BATCH_SIZE", 1, "DATA_LOADER.NUM_WORKERS", 0,
            "SOLVER.MAX_EPOCH", 1, "TRAIN.EVAL_PERIOD", 0, "TEST.NUM_SPATIAL_CROPS", 1, "DEVICE", "cpu",
            "OUTPUT_DIR", out, *extra]
    return ["--cfg", str(REPO / "configs" / "demo.yaml"), *map(str, opts)]


# (entry point, where the crafted file goes, the config that makes the run load it)
ENTRY_POINTS = {
    "MODEL.PRETRAINED (train)": ("evil.pth", ["MODEL.PRETRAINED", "{ckpt}", "TEST.ENABLE", False]),
    "TRAIN.CHECKPOINT_FILE_PATH (train)": ("evil.pyth", ["TRAIN.CHECKPOINT_FILE_PATH", "{ckpt}", "TEST.ENABLE", False]),
    "TEST.CHECKPOINT_FILE_PATH (test)": ("evil.pyth", ["TRAIN.ENABLE", False, "TEST.CHECKPOINT_FILE_PATH", "{ckpt}"]),
    "auto-resume (train)": ("out/checkpoints/checkpoint_epoch_00001-iter_000001.pyth", ["SOLVER.MAX_EPOCH", 2]),
    "newest checkpoint (test)": ("out/checkpoints/checkpoint_epoch_00001.pyth", ["TRAIN.ENABLE", False]),
    "TEST.CHECKPOINT_FILE_PATH (features)": ("evil.pyth", ["TRAIN.ENABLE", False, "TEST.ENABLE", False,
                                                           "FEATURES.ENABLE", True, "FEATURES.INPUT", "{videos}",
                                                           "TEST.CHECKPOINT_FILE_PATH", "{ckpt}"]),
    "MODEL.PRETRAINED (features)": ("evil.pth", ["TRAIN.ENABLE", False, "TEST.ENABLE", False, "FEATURES.ENABLE", True,
                                                 "FEATURES.INPUT", "{videos}", "MODEL.PRETRAINED", "{ckpt}"]),
    "newest checkpoint (features)": ("out/checkpoints/checkpoint_epoch_00001.pyth",
                                     ["TRAIN.ENABLE", False, "TEST.ENABLE", False, "FEATURES.ENABLE", True,
                                      "FEATURES.INPUT", "{videos}"]),
    "newest checkpoint (demo)": ("out/checkpoints/checkpoint_epoch_00001.pyth",
                                 ["TRAIN.ENABLE", False, "TEST.ENABLE", False, "PREDICT.ENABLE", True,
                                  "PREDICT.INPUT", "{video}"]),
}


@pytest.mark.parametrize("entry", list(ENTRY_POINTS))
def test_crafted_checkpoint_is_refused_at_every_entry_point_and_runs_nothing(data, tmp_path, entry, run_net):
    where, extra = ENTRY_POINTS[entry]
    marker = tmp_path / "PWNED"
    ckpt = _crafted_checkpoint(tmp_path / where, marker)
    out = tmp_path / "out"
    fill = {"{ckpt}": str(ckpt), "{videos}": data["prefix"], "{video}": data["videos"][0][0]}
    extra = [fill.get(x, x) if isinstance(x, str) else x for x in extra]
    code = run_net.main(_argv(data, out, *extra))
    assert not marker.exists(), f"{entry}: the crafted pickle ran its command"
    assert code == 1
    errors = [line for line in (out / "stdout.log").read_text().splitlines() if "UnsafeCheckpointError" in line]
    assert errors, f"{entry}: no UnsafeCheckpointError logged"
    assert f"refused to load {ckpt}" in errors[0] and "Nothing from it was executed" in errors[0]
    assert "posix.system" in errors[0] or "os.system" in errors[0]  # names what the file wanted to call
    # Nothing was trained, tested or extracted from it.
    assert [p for p in ck.list_checkpoints(out) if p != ckpt] == []
    assert not (out / "test_results.json").exists() and not (out / "features" / "index.csv").exists()


# ---------------------------------------------------------------------------------------------- #
# Every load in the package is a safe one
# ---------------------------------------------------------------------------------------------- #
def _calls(tree: ast.AST):
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            yield node, ast.unparse(node.func)


def _sources() -> list[Path]:
    files = sorted(PACKAGE.rglob("*.py")) + [REPO / "run_net.py"] + sorted((REPO / "datasets").glob("*.py"))
    return [f for f in files if f.is_file()]


def test_only_utils_io_calls_torch_load_and_with_weights_only():
    io_py = PACKAGE / "utils" / "io.py"
    found = []
    for path in _sources():
        tree = ast.parse(path.read_text(), str(path))
        for node in ast.walk(tree):  # `from torch import load` would hide a bare load(...) call
            if isinstance(node, ast.ImportFrom) and node.module in ("torch", "torch.serialization"):
                assert "load" not in [a.name for a in node.names], f"{path}:{node.lineno} imports torch's load"
        for node, name in _calls(tree):
            if name in ("torch.load", "torch.serialization.load", "serialization.load"):
                found.append((path, node))
    assert found, "no torch.load at all: the scan is broken"
    for path, node in found:
        assert path == io_py, f"{path.relative_to(REPO)}:{node.lineno} calls torch.load; use utils.io.safe_torch_load"
        kw = {k.arg: k.value for k in node.keywords}
        assert isinstance(kw.get("weights_only"), ast.Constant) and kw["weights_only"].value is True, \
            f"{path}:{node.lineno}: torch.load without weights_only=True"


def test_no_unsafe_deserialisation_or_command_execution_in_the_package():
    forbidden = {"pickle.load", "pickle.loads", "torch.jit.load", "torch.hub.load",
                 "torch.hub.load_state_dict_from_url", "yaml.unsafe_load", "yaml.full_load", "yaml.load_all",
                 "eval", "exec", "os.system", "os.popen", "marshal.loads", "shelve.open", "dill.load", "joblib.load"}
    problems = []
    for path in _sources():
        tree = ast.parse(path.read_text(), str(path))
        rel = path.relative_to(REPO)
        for node, name in _calls(tree):
            kw = {k.arg: k.value for k in node.keywords}
            if name in forbidden:
                problems.append(f"{rel}:{node.lineno}: {name}(...)")
            elif name.endswith("np.load") or name == "numpy.load":
                v = kw.get("allow_pickle")
                if v is not None and not (isinstance(v, ast.Constant) and v.value is False):
                    problems.append(f"{rel}:{node.lineno}: np.load with allow_pickle")
            elif name == "yaml.load":
                loader = ast.unparse(kw["Loader"]) if "Loader" in kw else ""
                if loader in ("", "yaml.Loader", "yaml.FullLoader", "yaml.UnsafeLoader"):
                    problems.append(f"{rel}:{node.lineno}: yaml.load with Loader={loader or 'default'}")
            elif name.startswith("subprocess.") and "shell" in kw and not (
                    isinstance(kw["shell"], ast.Constant) and kw["shell"].value is False):
                problems.append(f"{rel}:{node.lineno}: {name}(shell=...)")
    assert not problems, "\n".join(problems)


# ---------------------------------------------------------------------------------------------- #
# Configs
# ---------------------------------------------------------------------------------------------- #
def test_yaml_object_tags_are_refused_and_run_nothing_in_the_file_or_its_base(tmp_path, capsys, run_net):
    marker = tmp_path / "PWNED"
    evil_base = tmp_path / "base" / "evil.yaml"
    evil_base.parent.mkdir()
    evil_base.write_text(f"SOLVER:\n  BASE_LR: 0.1\nOUTPUT_DIR: !!python/object/apply:os.system ['touch {marker}']\n")
    child = tmp_path / "child.yaml"
    child.write_text("_BASE_: base/evil.yaml\nTRAIN:\n  BATCH_SIZE: 2\n")
    direct = tmp_path / "direct.yaml"
    direct.write_text("MODEL:\n  ARCH: !!python/name:os.system\n"
                      f"RNG_SEED: !!python/object/new:os.system ['touch {marker}']\n")
    for cfg in (child, direct, evil_base):
        assert run_net.main(["--cfg", str(cfg), "TRAIN.ENABLE", "False"]) == 2
        err = capsys.readouterr().err
        assert marker.exists() is False, f"{cfg.name}: the YAML tag ran its command"
        assert "YAML tag refused by the safe loader" in err, err
    assert str(evil_base) in err  # the message names the file that holds the tag


def test_missing_base_config_is_named(tmp_path, capsys, run_net):
    child = tmp_path / "exp.yaml"
    child.write_text("TRAIN:\n  BATCH_SIZE: 2\n_BASE_: ../base/kinetics.yaml\n")
    assert run_net.main(["--cfg", str(child)]) == 2
    err = capsys.readouterr().err
    assert f"{child.resolve()}, line 3: _BASE_ file '../base/kinetics.yaml' not found" in err, err


def test_alias_bomb_config_is_refused_without_expanding(tmp_path):
    """A 'billion laughs' config (9 levels of 9 aliases, 9^9 leaves if expanded) is an error at once.
    A SIGALRM bound turns a regression into a failure instead of a hung test run."""
    levels = ["&a0 [0.5, 0.5, 0.5, 0.5, 0.5, 0.5, 0.5, 0.5, 0.5]"]
    levels += [f"&a{i} [" + ", ".join([f"*a{i - 1}"] * 9) + "]" for i in range(1, 9)]
    bomb = tmp_path / "bomb.yaml"
    bomb.write_text("DATA:\n  MEAN: [" + ", ".join(levels) + "]\n")  # anchors inside a real key
    top = tmp_path / "bomb_top.yaml"  # anchors as top-level keys of their own
    top.write_text("".join(f"L{i}: {level}\n" for i, level in enumerate(levels)) + "DATA:\n  STD: *a8\n")

    def _expired(signum, frame):
        raise TimeoutError("loading the alias bomb did not finish in 20 s")

    previous = signal.signal(signal.SIGALRM, _expired)
    signal.setitimer(signal.ITIMER_REAL, 20)
    try:
        with pytest.raises(ConfigError, match=r"bomb\.yaml, line 2: wrong type for DATA\.MEAN\[0\]"):
            load_config(bomb)
        with pytest.raises(ConfigError, match=r"bomb_top\.yaml, line 1: unknown config key L0"):
            load_config(top)
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def _damaged_files(tmp_path: Path) -> dict[str, bytes]:
    real = tmp_path / "real.pyth"
    ck.save_checkpoint(real, model_state={"w": torch.ones(64, 64)}, epoch=1, epoch_complete=True, global_step=1)
    data = real.read_bytes()
    not_a_dict = tmp_path / "tensor.pyth"
    torch.save(torch.ones(3), not_a_dict)
    return {"truncated": data[: len(data) // 3], "zero_bytes": b"", "random_bytes": os.urandom(4096),
            "not_a_checkpoint": not_a_dict.read_bytes()}


@pytest.mark.parametrize("case", ["truncated", "zero_bytes", "random_bytes", "not_a_checkpoint"])
def test_damaged_newest_checkpoint_stops_auto_resume_naming_the_file(data, tmp_path, case, run_net):
    """A damaged file planted as the newest checkpoint (a partial copy, a disk error): the run stops with
    an error naming that file instead of training over it or failing with a bare OSError."""
    out = tmp_path / "out"
    planted = ck.checkpoint_dir(out) / ck.checkpoint_name(1, 1)
    planted.parent.mkdir(parents=True)
    planted.write_bytes(_damaged_files(tmp_path)[case])
    try:
        code, message = run_net.main(_argv(data, out, "TEST.ENABLE", False, "SOLVER.MAX_EPOCH", 2)), ""
    except Exception as e:  # noqa: BLE001  (an error outside run_net's clean list still ends the run)
        code, message = None, f"{type(e).__name__}: {e}"
    if code is not None:
        assert code == 1
        message = [line for line in (out / "stdout.log").read_text().splitlines() if "[ERROR]" in line][-1]
    assert str(planted) in message, message
    assert ck.list_checkpoints(out) == [planted]
    stats = out / "json_stats.log"
    assert not stats.exists() or '"train_iter"' not in stats.read_text()
