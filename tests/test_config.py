"""Config loading: _BASE_ inheritance, overrides, safe YAML, validation errors, shipped configs."""
from __future__ import annotations

import glob
import logging
import os
from pathlib import Path

import pytest
import yaml
from fvcore.common.config import CfgNode

from regionvit_video.config import ConfigError, get_cfg, load_config, parse_args, save_config
from regionvit_video.config.load import load_yaml_with_base

REPO = Path(__file__).resolve().parents[1]
CONFIGS = sorted(glob.glob(str(REPO / "configs" / "*.yaml")))


def _write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def _no_jobs(*extra):
    """Overrides that disable the data-reading jobs (no paths needed)."""
    return ["TRAIN.ENABLE", "False", "TEST.ENABLE", "False", *extra]


def test_base_inheritance_is_relative_to_including_file_and_child_wins(tmp_path, monkeypatch):
    _write(tmp_path / "cfgs/base/solver.yaml", "SOLVER:\n  BASE_LR: 0.1\n  MAX_EPOCH: 7\n")
    _write(tmp_path / "cfgs/base/data.yaml", "DATA:\n  NUM_FRAMES: 16\nSOLVER:\n  MAX_EPOCH: 9\n")
    child = _write(tmp_path / "cfgs/child.yaml",
                   "_BASE_: [base/solver.yaml, base/data.yaml]\nSOLVER:\n  BASE_LR: 0.5\n")
    monkeypatch.chdir(tmp_path)  # relative to the file, not to the working directory
    cfg = load_config(str(child), _no_jobs("DATA.NUM_FRAMES", "4"))
    assert cfg.SOLVER.BASE_LR == 0.5          # child over base
    assert cfg.SOLVER.MAX_EPOCH == 9          # later base over earlier base
    assert cfg.DATA.NUM_FRAMES == 4           # command line over everything
    assert cfg.SOLVER.WEIGHT_DECAY == get_cfg().SOLVER.WEIGHT_DECAY
    assert cfg.is_frozen()


def test_missing_base_names_the_base_and_the_including_file(tmp_path):
    child = _write(tmp_path / "child.yaml", "DATA:\n  NUM_FRAMES: 4\n_BASE_: nope/missing.yaml\n")
    with pytest.raises(ConfigError, match=r"child\.yaml, line 3: _BASE_ file 'nope/missing\.yaml' not found"):
        load_config(str(child))


def test_base_cycle_is_an_error(tmp_path):
    _write(tmp_path / "a.yaml", "_BASE_: b.yaml\n")
    _write(tmp_path / "b.yaml", "_BASE_: a.yaml\n")
    with pytest.raises(ConfigError, match="cycle"):
        load_config(str(tmp_path / "a.yaml"))


def test_unknown_key_names_file_line_and_close_match(tmp_path):
    f = _write(tmp_path / "x.yaml", "TRAIN:\n  ENABLE: False\n  BATCH_SZE: 4\n")
    with pytest.raises(ConfigError,
                       match=r"x\.yaml, line 3: unknown config key TRAIN\.BATCH_SZE; did you mean TRAIN\.BATCH_SIZE"):
        load_config(str(f))
    # Right leaf, wrong section.
    with pytest.raises(ConfigError, match=r"unknown config key TRAIN\.NUM_FRAMES; did you mean .*DATA\.NUM_FRAMES"):
        load_config(None, ["TRAIN.NUM_FRAMES", "4"])


def test_wrong_types_are_errors_with_location(tmp_path):
    f = _write(tmp_path / "x.yaml", "TRAIN:\n  BATCH_SIZE: eight\n")
    with pytest.raises(ConfigError, match=r"x\.yaml, line 2: wrong type for TRAIN\.BATCH_SIZE: expected int"):
        load_config(str(f))
    with pytest.raises(ConfigError, match=r"wrong type for TRAIN\.ENABLE: expected bool"):
        load_config(None, ["TRAIN.ENABLE", "1"])
    with pytest.raises(ConfigError, match=r"DATA\.MEAN\[1\]"):
        load_config(None, _no_jobs("DATA.MEAN", "[0.5, 'a', 0.5]"))
    with pytest.raises(ConfigError, match="TRAIN is a section"):
        _write(tmp_path / "y.yaml", "TRAIN: 3\n")
        load_config(str(tmp_path / "y.yaml"))
    # Lossless conversions are accepted: int -> float, text for text keys.
    cfg = load_config(None, _no_jobs("SOLVER.BASE_LR", "1", "OUTPUT_DIR", "2024"))
    assert cfg.SOLVER.BASE_LR == 1.0 and isinstance(cfg.SOLVER.BASE_LR, float)
    assert cfg.OUTPUT_DIR == "2024"


def test_duplicate_yaml_key_is_an_error(tmp_path):
    f = _write(tmp_path / "x.yaml", "SOLVER:\n  BASE_LR: 0.1\n  BASE_LR: 0.2\n")
    with pytest.raises(ConfigError, match=r"line 3: key 'BASE_LR' appears twice .*first at .*line 2"):
        load_config(str(f))


def test_yaml_is_loaded_safely_no_object_construction(tmp_path):
    marker = tmp_path / "pwned"
    evil = _write(tmp_path / "evil.yaml",
                  f"OUTPUT_DIR: !!python/object/apply:os.system ['touch {marker}']\n")
    with pytest.raises(ConfigError, match="refused by the safe loader"):
        load_config(str(evil))
    assert not marker.exists()
    # fvcore's own loader (what PySlowFast uses) is safe by default too: yaml.safe_load, refuses the tag.
    with pytest.raises(yaml.constructor.ConstructorError):
        CfgNode.load_yaml_with_base(str(evil))
    assert not marker.exists()


def test_command_line_forms(tmp_path):
    args = parse_args(["--cfg", "c.yaml", "--init_method", "tcp://h:1", "--shard_id", "1", "--num_shards", "2",
                       "TRAIN.BATCH_SIZE", "4", "--opts", "SOLVER.BASE_LR", "0.1"])
    assert args.cfg_file == "c.yaml" and args.init_method == "tcp://h:1"
    assert (args.shard_id, args.num_shards) == (1, 2)
    assert args.opts == ["TRAIN.BATCH_SIZE", "4", "SOLVER.BASE_LR", "0.1"]
    assert parse_args(["--cfg", "c.yaml", "--opts", "A", "1"]).opts == ["A", "1"]
    assert parse_args(["--cfg", "c.yaml"]).opts == []
    with pytest.raises(ConfigError, match="KEY VALUE pairs.*odd"):
        load_config(None, ["TRAIN.BATCH_SIZE"])
    with pytest.raises(ConfigError, match="shard_id"):
        parse_args(["--cfg", "c.yaml", "--shard_id", "2", "--num_shards", "2"])


@pytest.mark.parametrize("opts, message", [
    (["TEST.NUM_SPATIAL_CROPS", "2"], r"TEST\.NUM_SPATIAL_CROPS: must be 1 \(centre\) or 3, got 2"),
    (["SOLVER.BASE_LR", "-0.1"], r"SOLVER\.BASE_LR: must be > 0"),
    (["MODEL.ARCH", "regionvit_video_smal"],
     r"MODEL\.ARCH: 'regionvit_video_smal' is not a registered model; did you mean regionvit_video_small"),
    (["MODEL.ARCH", "regionvit_small"], r"MODEL\.ARCH: 'regionvit_small' is an image model .*its video version "
                                        r"is regionvit_video_small; video models: regionvit_video_base, .*timesformer"),
    (["FEATURES.MODE", "clip"], r"FEATURES\.MODE: must be one of 'video', 'clips', got 'clip'"),
    (["FEATURES.DTYPE", "fp16"], r"FEATURES\.DTYPE: must be one of 'float32', 'float16'"),
    (["FEATURES.WINDOW", "0"], r"FEATURES\.WINDOW: must be >= 1"),
    (["FEATURES.STRIDE_UNIT", "minutes"], r"FEATURES\.STRIDE_UNIT: must be one of 'frames', 'seconds'"),
    (["MODEL.TEMPORAL_INIT", "mean"], r"MODEL\.TEMPORAL_INIT: must be one of 'zero', 'copy'"),
    (["MODEL.COMPILE", "True", "MODEL.COMPILE_SCOPE", "layers"],
     r"MODEL\.COMPILE_SCOPE: must be one of 'model', 'blocks', got 'layers'"),
    (["TRAIN.BATCH_SIZE", "0"], r"TRAIN\.BATCH_SIZE: must be >= 1"),
    (["TEST.BATCH_SIZE", "0"], r"TEST\.BATCH_SIZE: must be >= 1"),
    (["TRAIN.MIXED_PRECISION", "fp8"], r"TRAIN\.MIXED_PRECISION: must be one of 'none', 'bf16', 'fp16'"),
    (["SOLVER.OPTIMIZING_METHOD", "adamww"], r"not a timm optimizer; did you mean adamw"),
    (["DATA.TRAIN_JITTER_SCALES", "[320, 256]"], r"DATA\.TRAIN_JITTER_SCALES: must be \[min, max\]"),
    (["TRAIN.GRAD_ACCUM_STEPS", "2", "TRAIN.CHECKPOINT_ITER_PERIOD", "3"], r"multiple of TRAIN\.GRAD_ACCUM_STEPS"),
    (["MIXUP.LABEL_SMOOTHING", "1.0"], r"MIXUP\.LABEL_SMOOTHING: must be in \[0, 1\)"),
    (["SOLVER.LR_POLICY", "steps", "SOLVER.STEPS", "[0, 5]", "SOLVER.LRS", "[1, 0.1]"],
     r"SOLVER\.LR_POLICY: must be one of 'cosine', 'steps_with_relative_lrs'"),
    (["SOLVER.LR_POLICY", "steps_with_relative_lrs", "SOLVER.STEPS", "[2, 5]", "SOLVER.LRS", "[1, 0.1]"],
     r"SOLVER\.STEPS: must start at 0 and increase strictly below SOLVER\.MAX_EPOCH \(30\), got \[2, 5\]"),
    (["SOLVER.LR_POLICY", "steps_with_relative_lrs", "SOLVER.STEPS", "[0, 40]", "SOLVER.LRS", "[1, 0.1]"],
     r"SOLVER\.STEPS: must start at 0"),
    (["SOLVER.LR_POLICY", "steps_with_relative_lrs", "SOLVER.STEPS", "[0, 5, 9]", "SOLVER.LRS", "[1, 0.1]"],
     r"SOLVER\.LRS: must give one positive relative lr per SOLVER\.STEPS entry \(3\), got \[1, 0\.1\]"),
])
def test_impossible_values_are_rejected_naming_the_key(opts, message):
    with pytest.raises(ConfigError, match=message) as e:
        load_config(None, _no_jobs(*opts))
    assert "set at command line" in str(e.value)


def test_renamed_keys_name_their_new_name(tmp_path):
    with pytest.raises(ConfigError, match=r"command line \(DEMO\.ENABLE True\): config key DEMO\.ENABLE was renamed "
                                          r"PREDICT\.ENABLE"):
        load_config(None, ["DEMO.ENABLE", "True"])
    old = _write(tmp_path / "old.yaml", "DEMO:\n  TOP_K: 3\n")
    with pytest.raises(ConfigError, match=r"old\.yaml, line 1: config key DEMO was renamed PREDICT"):
        load_config(old)


def test_all_problems_reported_at_once():
    with pytest.raises(ConfigError) as e:
        load_config(None, _no_jobs("TRAIN.BATCH_SIZE", "0", "SOLVER.BASE_LR", "0"))
    assert "TRAIN.BATCH_SIZE" in str(e.value) and "SOLVER.BASE_LR" in str(e.value)


def test_large_crops_are_fine():
    cfg = load_config(None, _no_jobs("DATA.TEST_CROP_SIZE", "320", "DATA.TEST_SCALE", "256"))
    assert cfg.DATA.TEST_CROP_SIZE == 320


def test_missing_paths_are_errors_naming_the_key(tmp_path):
    with pytest.raises(ConfigError, match=r"DATA\.PATH_TO_DATA_DIR: is empty"):
        load_config(None, [])
    with pytest.raises(ConfigError, match=r"DATA\.PATH_TO_DATA_DIR: folder '.*nowhere' does not exist"):
        load_config(None, ["DATA.PATH_TO_DATA_DIR", str(tmp_path / "nowhere")])
    (tmp_path / "train.csv").write_text("a.mp4 0\n")
    with pytest.raises(ConfigError, match=r"the val list '.*val\.csv' does not exist") as e:
        load_config(None, ["DATA.PATH_TO_DATA_DIR", str(tmp_path), "TEST.ENABLE", "False"])
    assert "train.csv" not in str(e.value)
    for key in ("MODEL.PRETRAINED", "TRAIN.CHECKPOINT_FILE_PATH", "TEST.CHECKPOINT_FILE_PATH", "DATA.CLASS_NAMES"):
        with pytest.raises(ConfigError, match=rf"{key.replace('.', '[.]')}: file '.*missing\.pth' does not exist"):
            load_config(None, _no_jobs(key, str(tmp_path / "missing.pth")))


def test_ssv2_needs_its_json_files(tmp_path):
    (tmp_path / "something-something-v2-labels.json").write_text("{}")
    opts = ["TRAIN.DATASET", "ssv2", "TEST.DATASET", "ssv2", "DATA.PATH_TO_DATA_DIR", str(tmp_path)]
    with pytest.raises(ConfigError) as e:
        load_config(None, opts)
    msg = str(e.value)
    assert "something-something-v2-train.json' does not exist" in msg
    assert "something-something-v2-validation.json' does not exist" in msg
    assert "labels.json" not in msg


def test_test_only_without_checkpoint_is_an_error(tmp_path):
    (tmp_path / "test.csv").write_text("a.mp4 0\n")
    opts = ["DATA.PATH_TO_DATA_DIR", str(tmp_path), "TRAIN.ENABLE", "False", "OUTPUT_DIR", str(tmp_path / "out")]
    with pytest.raises(ConfigError, match="refusing to test an untrained model"):
        load_config(None, opts)
    ckpts = tmp_path / "out" / "checkpoints"
    ckpts.mkdir(parents=True)
    (ckpts / "checkpoint_epoch_00001.pyth").write_bytes(b"x")
    assert load_config(None, opts).TEST.ENABLE


@pytest.mark.parametrize("path", CONFIGS, ids=[os.path.basename(p) for p in CONFIGS])
def test_shipped_configs_load_and_validate(path):
    cfg = load_config(path, check_paths=False)
    assert cfg.MODEL.ARCH
    # GPU recipes train in bf16 (float32 on a CPU); the CPU demo stays float32. Fast backends by default.
    assert cfg.TRAIN.MIXED_PRECISION == ("none" if "demo" in path else "bf16") and cfg.TRAIN.DETERMINISTIC is False
    if "regionvit" in os.path.basename(path) and "demo" not in path:
        # The paper's recipe.
        assert (cfg.SOLVER.OPTIMIZING_METHOD, cfg.SOLVER.BASE_LR, cfg.SOLVER.WEIGHT_DECAY) == ("adamw", 2e-4, 1e-4)
        assert (cfg.MIXUP.ALPHA, cfg.MIXUP.CUTMIX_ALPHA, cfg.MIXUP.LABEL_SMOOTHING) == (0.8, 1.0, 0.1)
        assert (cfg.DATA.NUM_FRAMES, cfg.DATA.SAMPLING) == (8, "uniform")
        assert list(cfg.DATA.TRAIN_JITTER_SCALES) == [256, 320] and cfg.DATA.TRAIN_CROP_SIZE == 224
        assert (cfg.DATA.TEST_SCALE, cfg.DATA.TEST_CROP_SIZE, cfg.TEST.NUM_SPATIAL_CROPS,
                cfg.TEST.NUM_ENSEMBLE_VIEWS) == (256, 224, 3, 1)
        assert cfg.DATA.RANDOM_FLIP == ("ssv2" not in path)
        assert cfg.MODEL.PRETRAINED.endswith("RegionViT-S.pth" if "_s." in path else "RegionViT-M.pth")


def test_demo_config_points_at_demo_data():
    cfg = load_config(str(REPO / "configs" / "demo.yaml"), check_paths=False)
    from regionvit_video.models import list_models

    # a registered tiny video variant (the CPU demo model), pointed at the generated data
    assert cfg.MODEL.ARCH in list_models("regionvit_video_pico*")
    assert cfg.DATA.PATH_TO_DATA_DIR.rstrip("/") == "demo_data"


def test_saved_config_reloads_identically(tmp_path):
    cfg = load_config(str(REPO / "configs" / "k400_regionvit_s.yaml"), ["OUTPUT_DIR", str(tmp_path)],
                      check_paths=False)
    path = save_config(cfg)
    assert path == tmp_path / "config.yaml"
    again = load_config(str(path), check_paths=False)
    assert again == cfg
    assert load_yaml_with_base(path)["SOLVER"]["BASE_LR"] == 2e-4


def test_inference_jobs_turn_training_and_testing_off_unless_set_explicitly(tmp_path, caplog, monkeypatch):
    videos = tmp_path / "videos"
    videos.mkdir()
    feats = ["FEATURES.ENABLE", "True", "FEATURES.INPUT", str(videos)]
    notes: list[str] = []
    cfg = load_config(None, feats, notes=notes)  # no data dir needed: nothing trains or tests
    assert not cfg.TRAIN.ENABLE and not cfg.TEST.ENABLE and cfg.FEATURES.ENABLE
    assert len(notes) == 1 and "FEATURES.ENABLE is True: TRAIN.ENABLE and TEST.ENABLE set to False" in notes[0]
    monkeypatch.setattr(logging.getLogger("regionvit_video"), "propagate", True)  # setup_logging turns it off
    with caplog.at_level("INFO", logger="regionvit_video"):
        cfg = load_config(None, ["PREDICT.ENABLE", "True", "PREDICT.INPUT", str(REPO / "tests/data/realshort.mp4")])
    assert not cfg.TRAIN.ENABLE and not cfg.TEST.ENABLE
    assert "PREDICT.ENABLE is True: TRAIN.ENABLE and TEST.ENABLE set to False" in caplog.text

    # Set explicitly on the command line, or anywhere in the YAML chain: kept.
    cfg = load_config(None, [*feats, "TEST.ENABLE", "True"], check_paths=False, notes=notes)
    assert cfg.TEST.ENABLE and not cfg.TRAIN.ENABLE
    assert notes[-1].endswith("TRAIN.ENABLE True is set explicitly)")
    base = _write(tmp_path / "base.yaml", "TRAIN:\n  ENABLE: True\n")
    child = _write(tmp_path / "child.yaml", "_BASE_: base.yaml\nPREDICT:\n  ENABLE: True\n")
    cfg = load_config(child, check_paths=False)
    assert cfg.TRAIN.ENABLE and not cfg.TEST.ENABLE
    # Not an inference job: the defaults stand and nothing is noted.
    notes.clear()
    cfg = load_config(None, [], check_paths=False, notes=notes)
    assert cfg.TRAIN.ENABLE and cfg.TEST.ENABLE and notes == []
    # The saved config records the derived values.
    cfg = load_config(None, feats)
    save_config(cfg, tmp_path / "out")
    assert load_config(tmp_path / "out" / "config.yaml", check_paths=False).TRAIN.ENABLE is False
