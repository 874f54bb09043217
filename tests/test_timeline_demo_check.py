"""benchmarks/timeline_demo_check.py runs end to end on a model trained for a few iterations: it joins test clips
of known classes, runs the timeline, and computes the per-window correctness and the boundary alignment (the
figures only; accuracy is what `make demo`'s checkpoint is checked for)."""
import importlib.util
import json
from pathlib import Path

import pytest

from regionvit_video.config.load import load_config
from regionvit_video.demo.synthetic_actions import CLASS_NAMES, make_synthetic_actions
from regionvit_video.engine import train
from regionvit_video.engine.checkpoint import latest_checkpoint

REPO = Path(__file__).resolve().parents[1]
SMALL = ["MODEL.ARCH", "regionvit_video_pico_w4", "DATA.TRAIN_JITTER_SCALES", "[32, 36]", "DATA.TRAIN_CROP_SIZE", "32",
         "DATA.TEST_SCALE", "32", "DATA.TEST_CROP_SIZE", "32", "DATA_LOADER.NUM_WORKERS", "0"]


def _check_module():
    spec = importlib.util.spec_from_file_location("timeline_demo_check", REPO / "benchmarks" / "timeline_demo_check.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_demo_check_computes_window_correctness_and_boundaries(tmp_path, capsys):
    data = Path(make_synthetic_actions(tmp_path / "demo_data", num_train=8, num_val=0, num_test=8, size=32,
                                       num_frames=8, workers=0, progress=False)["root"])
    out = tmp_path / "demo_output"
    cfg = load_config(REPO / "configs" / "demo.yaml", [
        "DATA.PATH_TO_DATA_DIR", str(data), "DATA.PATH_PREFIX", str(data), "DATA.CLASS_NAMES", str(data / "classes.txt"),
        "OUTPUT_DIR", str(out), "SOLVER.MAX_EPOCH", "1", "TRAIN.EVAL_PERIOD", "0", "TEST.ENABLE", "False", *SMALL])
    train(cfg)  # 1 iteration
    assert latest_checkpoint(out) is not None

    report = _check_module().main(["--data", str(data), "--demo-output", str(out), "--clips-per-class", "2",
                                   "--quiet", *SMALL])
    check = out / "timeline_check"
    runs = report["runs"]
    assert [r["name"] for r in runs] and sorted(r["name"] for r in runs) == sorted(CLASS_NAMES)
    assert runs[0]["start_s"] == 0 and all(a["end_s"] == pytest.approx(b["start_s"]) for a, b in zip(runs, runs[1:]))
    assert runs[-1]["end_s"] == pytest.approx(8 * 8 / 15)  # 8 classes x 1 clip (all the test list has) x 8 frames
    assert report["window_seconds"] == pytest.approx(8 / 15) and report["stride_seconds"] == pytest.approx(2 / 15)
    # 64 frames, windows of 8 frames every 2: 29 windows, each scored against the class at its centre
    windows = report["windows"]
    assert len(windows) == report["num_windows"] == 29
    assert all(w["truth"] in CLASS_NAMES and w["predicted"] in CLASS_NAMES for w in windows)
    assert report["window_accuracy"] == pytest.approx(sum(w["correct"] for w in windows) / 29)
    assert report["num_pure_windows"] == sum(w["pure"] for w in windows) > 0
    # one clip per class: every cut is a change of class; the 8 windows on a clip's frames are inside one clip
    assert report["windows_by_kind"] == {"clip": 8, "cut": 0, "change": 21}
    assert [w["start_s"] for w in windows if w["kind"] == "clip"] == pytest.approx([i * 8 / 15 for i in range(8)], abs=1e-3)
    assert 0 <= report["time_accuracy"] <= 1
    assert report["true_boundaries"] == 7 and len(report["boundaries"]) == 7
    assert all(b["error_s"] is None or b["error_s"] >= 0 for b in report["boundaries"])
    assert report["tolerance_s"] == pytest.approx(4 / 15 + 1 / 15)
    saved = json.loads((check / "check.json").read_text())
    assert saved["num_windows"] == 29 and saved["ok"] == (saved["most_right"] and saved["aligned"])
    for name in ("joined.mp4", "ground_truth.csv", "timeline.csv", "timeline_segments.csv", "timeline.png"):
        assert (check / name).is_file()
    printed = capsys.readouterr().out
    assert "windows right:" in printed and "boundary (s)" in printed and "boundaries:" in printed and "right class for most of the video" in printed
