"""The timeline job: parity with the multi-view test, its files, segments, features on the same time axis,
live input from stdin (in this process, and through `python run_net.py` with a stalled writer), config."""
import csv
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from regionvit_video.config.load import ConfigError, load_config
from regionvit_video.data import StreamStalled
from regionvit_video.data.video_writer import write_video
from regionvit_video.engine import features as F
from regionvit_video.engine import tester
from regionvit_video.engine import timeline as TL
from regionvit_video.engine.build import build_model

REPO = Path(__file__).resolve().parents[1]
REALSHORT = REPO / "tests" / "data" / "realshort.mp4"  # 320x240, 36 frames, 45000/1499 fps
NAMES = ["move_left", "move_right", "move_up", "move_down", "grow", "shrink", "rotate_cw", "rotate_ccw"]
SIZE, T = 32, 4


def _frames(t, seed=0, h=48, w=64):
    """A clip whose first and second halves move differently (so windows differ)."""
    rng = np.random.default_rng(seed)
    base = rng.integers(0, 255, (h, w, 3), dtype=np.uint8)
    return np.stack([np.roll(base, (3 if i < t // 2 else -5) * i, axis=1 if i < t // 2 else 0) for i in range(t)])


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("timeline")
    data = root / "data"
    data.mkdir()
    (data / "classes.txt").write_text("\n".join(NAMES) + "\n")
    cfg = _cfg(root, root / "unused")
    torch.manual_seed(0)
    model = build_model(cfg).eval()
    with torch.no_grad():  # temporal weights and head non-zero: windows with other frames get other logits
        for name, p in model.named_parameters():
            if "temporal_fc" in name or "time_embed" in name or name.startswith("head."):
                p.normal_(0, 0.5)
    torch.save({"model_state": model.state_dict()}, root / "ckpt.pyth")
    write_video(root / "long.mp4", _frames(45), fps=15)
    write_video(root / "long.ts", _frames(45), fps=15)
    return root


def _cfg(root, out, *opts):
    base = ["MODEL.ARCH", "regionvit_video_pico", "MODEL.NUM_CLASSES", "8", "DATA.NUM_FRAMES", str(T),
            "DATA.TEST_SCALE", str(SIZE), "DATA.TEST_CROP_SIZE", str(SIZE), "DATA_LOADER.NUM_WORKERS", "0",
            "DATA.PATH_TO_DATA_DIR", str(root / "data"), "OUTPUT_DIR", str(out),
            "TEST.CHECKPOINT_FILE_PATH", str(root / "ckpt.pyth"), "TIMELINE.ENABLE", "True",
            "TIMELINE.INPUT", str(root / "long.mp4"), "TIMELINE.WINDOW_SECONDS", "1", "TIMELINE.STRIDE_SECONDS", "0.5"]
    return load_config(None, base + [str(o) for o in opts], check_paths=False)


def _csv(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def _capture_logits(monkeypatch, module):
    """Record every forward output of the model ``module`` builds with load_inference_model."""
    seen = []
    real = module.load_inference_model

    def load(*args, **kwargs):
        model, weights = real(*args, **kwargs)
        model.register_forward_hook(lambda m, i, o: seen.append(o.detach().clone()))
        return model, weights

    monkeypatch.setattr(module, "load_inference_model", load)
    return seen


@pytest.mark.parametrize("sampling", ["uniform", "dense"])
def test_a_window_over_a_whole_clip_gives_the_multiview_test_logits(setup, tmp_path, monkeypatch, sampling):
    """Same frames, same crops: the window covering the whole clip is the test's views of the clip, through the
    tester's own path (multiview_test on a one-video list), 2 temporal x 3 spatial views."""
    (tmp_path / "test.csv").write_text(f"{REALSHORT.name} 3\n")
    fps = 45000 / 1499
    opts = ["TEST.NUM_ENSEMBLE_VIEWS", "2", "TEST.NUM_SPATIAL_CROPS", "3", "TEST.BATCH_SIZE", "1",
            "DATA.SAMPLING", sampling, "DATA.SAMPLING_RATE", "2", "DATA.PATH_TO_DATA_DIR", str(tmp_path),
            "DATA.PATH_PREFIX", str(REALSHORT.parent), "DATA.CLASS_NAMES", str(setup / "data" / "classes.txt"),
            "TIMELINE.INPUT", str(REALSHORT), "TIMELINE.WINDOW_SECONDS", repr(36 / fps), "TIMELINE.STRIDE_SECONDS", "1"]
    test_logits = _capture_logits(monkeypatch, tester)
    results = tester.multiview_test(_cfg(setup, tmp_path / "test", *opts))
    window_logits = _capture_logits(monkeypatch, TL)
    summary = TL.timeline(_cfg(setup, tmp_path / "timeline", *opts))
    assert summary["num_windows"] == 1 and summary["window"]["window_frames"] == 36
    assert len(test_logits) == len(window_logits) == 1 and test_logits[0].shape == (6, 8)
    torch.testing.assert_close(window_logits[0], test_logits[0], rtol=1e-5, atol=1e-5)
    row = _csv(tmp_path / "timeline" / "timeline.csv")[0]
    predicted = _csv(tmp_path / "test" / "test_predictions.csv")[0]
    assert row["label"] == predicted["pred_name"] and float(row["score"]) == pytest.approx(float(predicted["prob_pred"]),
                                                                                           abs=1e-4)
    assert results["num_videos"] == 1


def test_timeline_files_and_summary(setup, tmp_path, capsys):
    out = tmp_path / "out"
    summary = TL.timeline(_cfg(setup, out, "TIMELINE.TOP_K", "3", "TIMELINE.BATCH_SIZE", "2",
                               "TIMELINE.SCORE_THRESHOLD", "0.3"))
    rows = _csv(out / "timeline.csv")
    # 45 frames at 15 fps, windows of 15 frames every 8: 1 + (45 - 15) // 8 = 4
    assert len(rows) == 4 and list(rows[0]) == ["window", "start_s", "end_s", "start_frame", "end_frame", "label",
                                                "score", "label_2", "score_2", "label_3", "score_3"]
    assert [int(r["start_frame"]) for r in rows] == [0, 8, 16, 24]
    assert [float(r["start_s"]) for r in rows] == pytest.approx([0, 8 / 15, 16 / 15, 24 / 15], abs=1e-3)
    assert all(r["label"] in NAMES for r in rows)  # classes.txt next to DATA.PATH_TO_DATA_DIR
    assert all(1 >= float(r["score"]) >= float(r["score_2"]) >= float(r["score_3"]) >= 0 for r in rows)
    scores = np.load(out / "timeline_scores.npy")
    assert scores.shape == (4, 8) and scores.dtype == np.float32
    np.testing.assert_allclose(scores.sum(1), 1, atol=1e-5)
    np.testing.assert_allclose(scores.max(1), [float(r["score"]) for r in rows], atol=1e-4)
    segs = _csv(out / "timeline_segments.csv")
    expected = TL.merge_segments(list(range(4)), [(float(r["start_s"]), float(r["end_s"])) for r in rows],
                                 list(scores.argmax(1)), list(scores.max(1)), stride_s=8 / 15, threshold=0.3)
    assert len(segs) == len(expected) == summary["num_segments"]
    assert (out / "timeline.png").read_bytes()[:4] == b"\x89PNG"
    saved = json.loads((out / "timeline.json").read_text())
    assert saved["window"] == summary["window"] and saved["window"]["window_frames"] == 15
    assert saved["window"]["stride_frames"] == 8 and saved["fps"] == 15 and saved["end"] == "complete"
    assert saved["decoding"]["frames_sampled"] == 4 * T and saved["video_seconds_per_second"] > 0
    assert saved["peak_rss_mb"] > 0 and saved["num_windows"] == 4
    printed = capsys.readouterr().out
    assert "segments:" in printed and "s of video per second" in printed and "timeline.csv" in printed


def test_segments_merge_runs_and_tile_time():
    bounds = [(k * 0.5, k * 0.5 + 1.0) for k in range(8)]
    labels = [0, 0, 0, 1, 1, 0, 0, 0]
    scores = [0.9, 0.8, 0.2, 0.9, 0.7, 0.9, 0.9, 0.9]
    segs = TL.merge_segments(list(range(8)), bounds, labels, scores, stride_s=0.5, threshold=0.5)
    assert [(s["label"], s["first_window"], s["last_window"]) for s in segs] == [(0, 0, 1), (1, 3, 4), (0, 5, 7)]
    # window k stands for [centre - 0.25, centre + 0.25]; the first from 0, the last to its end
    assert [(s["start_s"], s["end_s"]) for s in segs] == [(0.0, 1.25), (1.75, 2.75), (2.75, 4.5)]
    assert segs[0]["mean_score"] == pytest.approx(0.85)
    # A skipped window (live, realtime) ends a run; the window after it starts at its own start.
    segs = TL.merge_segments([0, 1, 3], bounds[:2] + [bounds[3]], [0, 0, 0], [1, 1, 1], stride_s=0.5)
    assert [(s["start_s"], s["end_s"]) for s in segs] == [(0.0, 1.5), (1.5, 2.5)]


def test_features_windows_line_up_with_the_timelines(setup, tmp_path):
    """FEATURES.MODE clips with the timeline's window and stride gives the timeline's windows, and records the time
    axis (fps, window and stride in frames and seconds) in index.csv and extraction.json (ActionFormer's keys)."""
    TL.timeline(_cfg(setup, tmp_path / "tl"))
    folder = tmp_path / "videos"
    folder.mkdir()
    (folder / "long.mp4").write_bytes((setup / "long.mp4").read_bytes())
    cfg = _cfg(setup, tmp_path / "feat", "TIMELINE.ENABLE", "False", "FEATURES.ENABLE", "True", "FEATURES.INPUT", folder,
               "FEATURES.MODE", "clips", "FEATURES.WINDOW", "15", "FEATURES.STRIDE", "0.5",
               "FEATURES.STRIDE_UNIT", "seconds", "TEST.NUM_SPATIAL_CROPS", "1")
    F.extract_features(cfg)
    timeline_rows = _csv(tmp_path / "tl" / "timeline.csv")
    windows = _csv(tmp_path / "feat" / "features" / "long.windows.csv")
    assert [(w["start_frame"], w["end_frame"]) for w in windows] == [(r["start_frame"], r["end_frame"])
                                                                      for r in timeline_rows]
    np.testing.assert_allclose([[float(w["start_sec"]), float(w["end_sec"])] for w in windows],
                               [[float(r["start_s"]), float(r["end_s"])] for r in timeline_rows], atol=1e-3)
    assert np.load(tmp_path / "feat" / "features" / "long.npy").shape == (len(timeline_rows), 256)
    index = _csv(tmp_path / "feat" / "features" / "index.csv")[0]
    assert float(index["fps"]) == 15 and index["window_frames"] == "15" and index["stride_frames"] == "8"
    assert float(index["window_seconds"]) == 1 and float(index["stride_seconds"]) == pytest.approx(8 / 15)
    assert float(index["feature_fps"]) == pytest.approx(15 / 8)
    temporal = json.loads((tmp_path / "feat" / "features" / "extraction.json").read_text())["temporal"]
    assert temporal["actionformer"] == {"feat_stride": 8, "num_frames": 15, "default_fps": 15.0, "input_dim": 256}
    # ActionFormer / TriDet place feature k at frame k * feat_stride + num_frames / 2: the timeline window's centre.
    centres = [(k * 8 + 15 / 2) / 15 for k in range(len(windows))]
    np.testing.assert_allclose(centres, [(float(r["start_s"]) + float(r["end_s"])) / 2 for r in timeline_rows],
                               atol=1e-3)
    assert F.extract_features(cfg)["num_extracted"] == 0  # the run's "temporal" block does not count as a change


def test_stdin_stream_gives_the_files_timeline(setup, tmp_path, capsys):
    """An MPEG-TS written by PyAV through a pipe as stdin: the same windows and probabilities as the file; each
    window printed with its latency; the end of the stream ends the job."""
    file_summary = TL.timeline(_cfg(setup, tmp_path / "file", "TIMELINE.INPUT", setup / "long.ts"))
    r, w = os.pipe()

    def write():
        os.write(w, (setup / "long.ts").read_bytes())
        os.close(w)

    threading.Thread(target=write, daemon=True).start()
    summary = TL.timeline(_cfg(setup, tmp_path / "live", "TIMELINE.INPUT", "-", "TIMELINE.STALL_SECONDS", "30"),
                          stdin_fd=r)
    os.close(r)
    assert summary["end"] == "end of stream" and summary["live"] and summary["skipped_windows"] == 0
    file_rows, live_rows = _csv(tmp_path / "file" / "timeline.csv"), _csv(tmp_path / "live" / "timeline.csv")
    assert len(live_rows) == len(file_rows) == file_summary["num_windows"] == 4
    for a, b in zip(file_rows, live_rows):
        assert (a["start_frame"], a["end_frame"], a["label"]) == (b["start_frame"], b["end_frame"], b["label"])
        assert float(a["start_s"]) == pytest.approx(float(b["start_s"]), abs=1e-3)
        assert float(a["score"]) == pytest.approx(float(b["score"]), abs=1e-4)
    printed = capsys.readouterr().out
    assert printed.count("latency") >= 4 and summary["latency_ms"]["max"] >= 0
    assert (tmp_path / "live" / "timeline.png").is_file()


def test_run_net_reports_a_stalled_stdin_within_the_timeout(setup, tmp_path):
    """`python run_net.py ... TIMELINE.INPUT -` with an MPEG-TS writer that stops writing without closing: the
    windows it sent are predicted and printed, then the stall is reported and the job ends (exit status 1) with
    its files written, while the writer still holds the pipe open."""
    cfg_file = tmp_path / "tiny.yaml"
    cfg_file.write_text("MODEL:\n  ARCH: regionvit_video_pico\n  NUM_CLASSES: 8\nDATA:\n  NUM_FRAMES: 4\n"
                        "  TEST_SCALE: 32\n  TEST_CROP_SIZE: 32\n")
    out = tmp_path / "out"
    cmd = [sys.executable, str(REPO / "run_net.py"), "--cfg", str(cfg_file), "TIMELINE.ENABLE", "True",
           "TIMELINE.INPUT", "-", "TIMELINE.STALL_SECONDS", "3", "TIMELINE.WINDOW_SECONDS", "1",
           "TIMELINE.STRIDE_SECONDS", "1", "DATA.PATH_TO_DATA_DIR", str(setup / "data"),
           "TEST.CHECKPOINT_FILE_PATH", str(setup / "ckpt.pyth"), "OUTPUT_DIR", str(out), "DEVICE", "cpu"]
    env = {**os.environ, "PYTHONPATH": str(REPO), "CUDA_VISIBLE_DEVICES": "", "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env,
                            cwd=tmp_path)
    lines, stamps = [], []

    def read():
        for line in proc.stdout:
            lines.append(line.decode(errors="replace"))
            stamps.append(time.monotonic())

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    try:
        proc.stdin.write((setup / "long.ts").read_bytes())  # 3 s of video, then silence; the pipe stays open
        proc.stdin.flush()
        code = proc.wait(timeout=180)
    except subprocess.TimeoutExpired:
        proc.kill()
        raise AssertionError("run_net.py hung on a stalled stdin:\n" + "".join(lines))
    finally:
        reader.join(10)
        proc.stdin.close()
    text = "".join(lines)
    assert code == 1, text
    windows = [i for i, line in enumerate(lines) if "latency" in line and line.startswith("[")]
    assert len(windows) >= 2, text  # the frames the decoder could finish: 2 of the 3 windows at least
    assert "StreamStalled: stdin: no frame for 3." in text and "TIMELINE.STALL_SECONDS=3" in text, text
    stall_line = next(i for i, line in enumerate(lines) if "StreamStalled" in line)
    assert stamps[stall_line] - stamps[windows[-1]] < 3 + 15, text  # reported at the timeout, not hung on
    saved = json.loads((out / "timeline.json").read_text())
    assert saved["end"] == "stalled" and saved["num_windows"] == len(windows)
    assert len(_csv(out / "timeline.csv")) == len(windows)


def test_config_timeline_keys(setup, tmp_path):
    cfg = load_config(None, ["TIMELINE.ENABLE", "True", "TIMELINE.INPUT", "-"], check_paths=False)
    assert not cfg.TRAIN.ENABLE and not cfg.TEST.ENABLE  # an inference job
    cfg = load_config(None, ["TIMELINE.ENABLE", "True", "TIMELINE.INPUT", "-", "TEST.ENABLE", "True"],
                      check_paths=False)
    assert cfg.TEST.ENABLE
    with pytest.raises(ConfigError) as e:
        load_config(None, ["TIMELINE.ENABLE", "True", "TIMELINE.INPUT", str(tmp_path / "nope.mp4"),
                           "TIMELINE.WINDOW_SECONDS", "0", "TIMELINE.SCORE_THRESHOLD", "1.5", "TIMELINE.TOP_K", "0",
                           "TIMELINE.LIVE_MODE", "fast", "TIMELINE.STALL_SECONDS", "-1"])
    msg = str(e.value)
    for key in ("TIMELINE.WINDOW_SECONDS", "TIMELINE.SCORE_THRESHOLD", "TIMELINE.TOP_K", "TIMELINE.LIVE_MODE",
                "TIMELINE.STALL_SECONDS", "TIMELINE.INPUT"):
        assert key in msg
    with pytest.raises(ConfigError, match="TIMELINE.INPUT: is empty"):
        load_config(None, ["TIMELINE.ENABLE", "True"])


def test_errors_keep_what_was_done(setup, tmp_path):
    broken = tmp_path / "broken.mp4"
    broken.write_bytes(b"\x00" * 2000)
    from regionvit_video.data import DecodeError

    with pytest.raises(DecodeError, match="broken.mp4"):
        TL.timeline(_cfg(setup, tmp_path / "out", "TIMELINE.INPUT", broken))
    with pytest.raises(FileNotFoundError, match="TIMELINE.INPUT"):
        TL.timeline(_cfg(setup, tmp_path / "out", "TIMELINE.INPUT", tmp_path / "missing.mp4"))
    # A stall before the first frame: reported, the (empty) files written.
    r, w = os.pipe()
    with pytest.raises(StreamStalled, match="before its first frame"):
        TL.timeline(_cfg(setup, tmp_path / "stall", "TIMELINE.INPUT", "-", "TIMELINE.STALL_SECONDS", "1"),
                    stdin_fd=r)
    os.close(w)  # the reading thread sees the end and finishes
    time.sleep(0.2)
    os.close(r)
    assert json.loads((tmp_path / "stall" / "timeline.json").read_text())["end"] == "stalled"
