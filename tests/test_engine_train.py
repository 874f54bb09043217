"""Training, multi-view testing and exact resume on a tiny generated Kinetics-layout dataset.

The tiny config: regionvit_video_pico, 4 frames, 32 px crops, 6 real H.264 videos, batch 2, mixup,
RandAugment, drop path and EMA on (every source of randomness that resume must reproduce).
"""
from __future__ import annotations

import csv
import json
import os
import signal
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from regionvit_video.config import load_config
from regionvit_video.data import DecodeTimeout, VideoDataset
from regionvit_video.data import decoder as dec
from regionvit_video.engine import (NoCheckpointError, TooManyBadVideosError, TrainingDivergedError,
                                    multiview_test, resolve_inference_weights, setup_run)
from regionvit_video.engine import checkpoint as ck
from regionvit_video.engine import train as _train
from regionvit_video.utils.io import safe_torch_load
from tiny_datasets import make_kinetics_folder


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    root = tmp_path_factory.mktemp("k_tiny")
    info = make_kinetics_folder(root, num_classes=3, videos_per_class=2, size=(32, 40), frames=8, seed=0)
    broken = Path(info["prefix"]) / "broken.mp4"
    broken.write_bytes(b"\x00\x00\x00\x18ftypmp42" + os.urandom(300))  # a truncated, undecodable file
    good = Path(info["csv"]["test"]).read_text().splitlines()
    # 4 good videos + 1 broken: 5 entries (2 processes pad this list to 6).
    (root / "test5.csv").write_text("\n".join(good[:4] + ["broken.mp4 1"]) + "\n")
    bad = root / "bad"
    bad.mkdir()
    (bad / "train.csv").write_text("\n".join(good + ["broken.mp4 1"] * 2) + "\n")
    (bad / "val.csv").write_text("\n".join(good) + "\n")
    info["bad_dir"] = str(bad)
    return info


def tiny_cfg(dataset, out_dir, *extra):
    opts = [*dataset["cfg_opts"],
            "MODEL.ARCH", "regionvit_video_pico", "DATA.NUM_FRAMES", "4",
            "DATA.TRAIN_JITTER_SCALES", "[32, 40]", "DATA.TRAIN_CROP_SIZE", "32",
            "DATA.TEST_SCALE", "32", "DATA.TEST_CROP_SIZE", "32",
            "TRAIN.BATCH_SIZE", "2", "TEST.BATCH_SIZE", "2", "DATA_LOADER.NUM_WORKERS", "0",
            "SOLVER.MAX_EPOCH", "2", "SOLVER.WARMUP_EPOCHS", "0.5", "SOLVER.BASE_LR", "0.001",
            "MODEL_EMA.ENABLE", "True", "MODEL_EMA.DECAY", "0.9",
            "TRAIN.CHECKPOINT_ITER_PERIOD", "2", "TRAIN.CHECKPOINT_KEEP", "0", "LOG_PERIOD", "1",
            "TEST.SPLIT", "test5", "TEST.NUM_SPATIAL_CROPS", "3", "OUTPUT_DIR", str(out_dir), *extra]
    return load_config(None, [str(o) for o in opts])


def train(cfg, **kwargs):
    """Training as run_net.py runs it: logging and OUTPUT_DIR/config.yaml set up first."""
    setup_run(cfg)
    return _train(cfg, **kwargs)


def final_state(out_dir):
    ckpt = safe_torch_load(ck.checkpoint_dir(out_dir) / ck.checkpoint_name(2))
    return ckpt


def assert_same_final_weights(out_a, out_b):
    """Bit for bit: both runs are on this machine, and a resumed run repeats the same arithmetic."""
    a, b = final_state(out_a), final_state(out_b)
    assert a["global_step"] == b["global_step"] == 6
    for key in ("model_state", "ema_state"):
        assert a[key].keys() == b[key].keys()
        for name in a[key]:
            assert torch.equal(b[key][name], a[key][name]), f"{key}.{name}"
    exp_a = [s["exp_avg"] for s in a["optimizer_state"]["state"].values()]
    exp_b = [s["exp_avg"] for s in b["optimizer_state"]["state"].values()]
    for x, y in zip(exp_a, exp_b):
        assert torch.equal(y, x)


@pytest.fixture(scope="module")
def reference_run(dataset, tmp_path_factory):
    """An uninterrupted 2-epoch run (3 iterations per epoch)."""
    out = tmp_path_factory.mktemp("ref")
    result = train(tiny_cfg(dataset, out))
    return out, result


def test_training_writes_logs_checkpoints_and_curves(reference_run):
    out, result = reference_run
    assert result.epochs_run == 2
    assert result.last_checkpoint == ck.checkpoint_dir(out) / "checkpoint_epoch_00002.pyth"
    names = [p.name for p in ck.list_checkpoints(out)]
    assert names == ["checkpoint_epoch_00001-iter_000002.pyth", "checkpoint_epoch_00001.pyth",
                     "checkpoint_epoch_00002-iter_000002.pyth", "checkpoint_epoch_00002.pyth"]
    c = safe_torch_load(result.last_checkpoint)  # weights_only
    assert {"model_state", "optimizer_state", "scheduler_state", "scaler_state", "ema_state", "rng_states",
            "epoch", "iteration", "cfg", "global_step"} <= set(c)
    assert (c["epoch"], c["iteration"], c["epoch_complete"]) == (2, 3, True)
    assert not any(k.startswith("module.") for k in c["model_state"])
    assert "MODEL:" in c["cfg"] and "regionvit_video_pico" in c["cfg"]
    assert set(c["rng_states"][0]) == {"python", "numpy", "torch", "cuda"}

    assert (out / "config.yaml").is_file()
    records = [json.loads(line) for line in (out / "json_stats.log").read_text().splitlines()]
    types = [r["_type"] for r in records]
    assert types.count("train_iter") == 6 and types.count("train_epoch") == 2 and types.count("val_epoch") == 2
    val = [r for r in records if r["_type"] == "val_epoch"]
    assert all(r["split"] == "val_single_view" and 0 <= r["top1_acc"] <= 100 and r["num_videos"] == 6 for r in val)
    assert "ema_top1_acc" in val[0]
    it = next(r for r in records if r["_type"] == "train_iter")
    assert {"loss", "lr", "dt", "dt_data", "eta", "global_iter", "epoch", "iter"} <= set(it)
    assert np.isfinite(it["loss"]) and it["lr"] > 0
    assert "json_stats: {" in (out / "stdout.log").read_text()
    assert any((out / "tensorboard").iterdir())
    png = out / "training_curves.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_multiview_test_writes_results(reference_run, dataset):
    out, result = reference_run
    cfg = tiny_cfg(dataset, out, "TRAIN.ENABLE", "False")
    res = multiview_test(cfg)
    saved = json.loads((out / "test_results.json").read_text())
    assert saved == json.loads(json.dumps(res))
    assert saved["checkpoint"] == str(result.last_checkpoint)
    assert saved["views"]["per_video"] == 3 and saved["views"]["spatial_crops"] == 3
    assert saved["num_videos"] == 4 and saved["num_failed"] == 1
    assert saved["failed"][0]["path"].endswith("broken.mp4") and saved["failed"][0]["error"]
    for key in ("top1", "top5", "mean_class_accuracy"):
        assert 0.0 <= saved[key] <= 100.0
    assert saved["top5"] == 100.0  # 3 classes: the label is always in the top 5
    rows = list(csv.DictReader(open(out / "test_predictions.csv")))
    assert [int(r["index"]) for r in rows] == [0, 1, 2, 3]
    top1 = 100.0 * sum(int(r["correct"]) for r in rows) / len(rows)
    assert top1 == pytest.approx(saved["top1"])
    per_class = list(csv.DictReader(open(out / "test_per_class_accuracy.csv")))
    assert [r["class_name"] for r in per_class] == dataset["class_names"]
    assert sum(int(r["num_videos"]) for r in per_class) == 4
    assert (out / "test_confusion_matrix.png").read_bytes()[:4] == b"\x89PNG"
    assert any(json.loads(line)["_type"] == "test_final" for line in (out / "json_stats.log").read_text().splitlines())


def test_killed_twice_then_rerun_gives_identical_weights(reference_run, dataset, tmp_path):
    """SIGKILL right after an epoch checkpoint, rerun, stop again after a mid-epoch checkpoint, rerun:
    the final weights, EMA and optimizer moments equal the uninterrupted run's."""
    out = tmp_path / "killed"
    cfg = tiny_cfg(dataset, out)

    def kill_at_global_iteration_4(epoch, it, global_it):
        if global_it == 4:  # epoch 2, iteration 1: the newest checkpoint is the end of epoch 1
            os.kill(os.getpid(), signal.SIGKILL)

    pid = os.fork()
    if pid == 0:  # child: train until killed; never returns to pytest
        try:
            torch.set_num_threads(1)
            train(cfg, iteration_hook=kill_at_global_iteration_4)
        finally:
            os._exit(3)
    _, status = os.waitpid(pid, 0)
    assert os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL
    assert ck.latest_checkpoint(out).name == "checkpoint_epoch_00001.pyth"

    class Stop(Exception):
        pass

    def stop_at_global_iteration_5(epoch, it, global_it):
        if global_it == 5:  # epoch 2, after the mid-epoch checkpoint of its iteration 2
            raise Stop

    torch.manual_seed(1234), np.random.seed(1234)  # a fresh process would have other RNG states
    with pytest.raises(Stop):
        train(cfg, iteration_hook=stop_at_global_iteration_5)
    assert ck.latest_checkpoint(out).name == "checkpoint_epoch_00002-iter_000002.pyth"

    torch.manual_seed(99), np.random.seed(99)
    result = train(cfg)
    assert result.epochs_run == 1  # only the rest of epoch 2 was left
    assert_same_final_weights(reference_run[0], out)


def test_nan_loss_stops_naming_the_iteration_and_keeps_last_checkpoint(dataset, tmp_path, corrupt_loss):
    corrupt_loss(float("nan"), call=3)
    out = tmp_path / "nan"
    with pytest.raises(TrainingDivergedError, match=r"loss is nan at epoch 1, iteration 3/3 .*Last good checkpoint: "
                                                    r".*checkpoint_epoch_00001-iter_000002\.pyth"):
        train(tiny_cfg(dataset, out, "TRAIN.EVAL_PERIOD", "0"))
    last = ck.latest_checkpoint(out)
    assert last.name == "checkpoint_epoch_00001-iter_000002.pyth"
    state = ck.load_checkpoint(last)["model_state"]
    assert all(torch.isfinite(v).all() for v in state.values() if v.is_floating_point())


def test_too_many_bad_videos_stops_with_a_clear_message(dataset, tmp_path):
    out = tmp_path / "bad"
    cfg = tiny_cfg(dataset, out, "DATA.PATH_TO_DATA_DIR", dataset["bad_dir"], "TRAIN.MAX_BAD_VIDEO_FRACTION", "0.05",
                   "SOLVER.MAX_EPOCH", "1", "TRAIN.EVAL_PERIOD", "0", "DATA.NUM_RETRIES", "0",
                   "TEST.ENABLE", "False")
    with pytest.raises(TooManyBadVideosError,
                       match=r"failed to decode in epoch 1 .*MAX_BAD_VIDEO_FRACTION 5\.0%.*bad_videos\.txt"):
        train(cfg)
    assert "broken.mp4" in (out / "bad_videos.txt").read_text()


def test_worker_ended_by_the_decode_hard_bound_stops_training_naming_the_video(dataset, tmp_path, monkeypatch):
    """Epoch 2's first decode hangs where no signal reaches it (as decord #373 does in native code)."""
    import decord  # noqa: F401  (imported before the workers fork, not inside their first time bound)

    monkeypatch.setattr(dec, "HARD_TIMEOUT_GRACE", 0.5)  # hard bound 2 x 1 + 0.5 s
    epochs, getitem, decode = [], VideoDataset.__getitem__, VideoDataset._decode

    def hang(n, fps):
        signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGALRM})
        time.sleep(60)

    monkeypatch.setattr(VideoDataset, "__getitem__", lambda self, key: (epochs.append(key[1]), getitem(self, key))[1])
    monkeypatch.setattr(VideoDataset, "_decode",
                        lambda self, path, fn: decode(self, path, hang if epochs[-1] == 1 else fn))
    out = tmp_path / "hang"
    cfg = tiny_cfg(dataset, out, "DATA_LOADER.NUM_WORKERS", "1", "DATA.DECODE_TIMEOUT", "1", "TRAIN.EVAL_PERIOD", "0",
                   "MODEL_EMA.ENABLE", "False", "TRAIN.CHECKPOINT_ITER_PERIOD", "0")
    with pytest.raises(DecodeTimeout, match=r"decode did not return within 2\.5 s \(hard bound of "
                                            r"DATA\.DECODE_TIMEOUT=1 s\); the DataLoader worker \(pid \d+\) was ended"
                       ) as info:
        train(cfg)
    path = info.value.path
    assert str(info.value).startswith(f"{path}: ") and os.path.isfile(path)
    assert "exited unexpectedly" in str(info.value.__cause__)
    assert (out / "bad_videos.txt").read_text() == f"{path}\thard decode timeout\n"
    assert [p.name for p in ck.list_checkpoints(out)] == ["checkpoint_epoch_00001.pyth"]  # epoch 1 is kept
    assert ck.load_checkpoint(ck.latest_checkpoint(out))["epoch_complete"]
    assert '"train_epoch"' in (out / "json_stats.log").read_text()


def test_gradient_accumulation_clipping_and_pretrained_inflation(dataset, tmp_path):
    from regionvit_video.models import create_model

    image = create_model("regionvit_pico", num_classes=1000)
    pretrained = tmp_path / "RegionViT-pico.pth"
    torch.save({"model": image.state_dict(), "epoch": 299}, pretrained)  # official (DeiT-style) layout
    out = tmp_path / "accum"
    cfg = tiny_cfg(dataset, out, "TRAIN.GRAD_ACCUM_STEPS", "2", "MODEL.PRETRAINED", str(pretrained),
                   "SOLVER.MAX_EPOCH", "1", "TRAIN.EVAL_PERIOD", "0", "TEST.ENABLE", "False",
                   "TRAIN.CHECKPOINT_ITER_PERIOD", "0", "MODEL_EMA.ENABLE", "False", "SOLVER.CLIP_GRAD_NORM", "1.0")
    train(cfg)
    c = ck.load_checkpoint(ck.checkpoint_dir(out) / ck.checkpoint_name(1))
    assert c["global_step"] == 2  # 3 iterations, 2 per step: the last partial group also steps
    log = (out / "stdout.log").read_text()
    assert "GRADIENT ACCUMULATION IS ON: 2 iterations per optimizer step; effective batch 4" in log
    assert "pretrained weights: loaded" in log and str(pretrained) in log
    # The stem was inflated from the image model, then trained a little: still close to it.
    w0 = image.state_dict()["patch_embed.proj.0.weight"]
    assert (c["model_state"]["patch_embed.proj.0.weight"] - w0).abs().max() < 0.05


def test_test_without_any_checkpoint_is_an_error(dataset, tmp_path):
    cfg = load_config(None, [*map(str, dataset["cfg_opts"]), "TRAIN.ENABLE", "False", "OUTPUT_DIR", str(tmp_path)],
                      check_paths=False)
    with pytest.raises(NoCheckpointError, match="refusing to test an untrained model"):
        resolve_inference_weights(cfg)
    cfg2 = load_config(None, [*map(str, dataset["cfg_opts"]), "OUTPUT_DIR", str(tmp_path),
                              "TEST.CHECKPOINT_FILE_PATH", str(tmp_path / "gone.pyth")], check_paths=False)
    with pytest.raises(NoCheckpointError, match=r"TEST\.CHECKPOINT_FILE_PATH: checkpoint .*gone\.pyth does not exist"):
        multiview_test(cfg2)


def test_resume_skips_a_damaged_newest_checkpoint_cleans_tmp_files_and_validation_counts_failures(
        reference_run, dataset, tmp_path):
    """A truncated newest checkpoint and a stale .tmp file from a killed write: the rerun falls back to the
    newest checkpoint that loads (warning, damaged file kept until rewritten), removes the .tmp file, and ends
    with the reference weights. A val video that fails to decode is not substituted: it is counted in the
    val_epoch stats (num_failed) and listed in bad_videos.txt, accuracy over the videos that decoded."""
    import shutil

    ref_out = reference_run[0]
    out = tmp_path / "damaged"
    shutil.copytree(ck.checkpoint_dir(ref_out), ck.checkpoint_dir(out))
    newest = ck.checkpoint_dir(out) / "checkpoint_epoch_00002.pyth"
    newest.write_bytes(newest.read_bytes()[:1000])  # truncated
    stale = ck.checkpoint_dir(out) / ".checkpoint_epoch_00002.pyth.0a1b2c3d4e5f.tmp"
    stale.write_bytes(b"\0" * 4096)
    data = tmp_path / "valbad"
    data.mkdir()
    shutil.copy(dataset["csv"]["train"], data / "train.csv")
    val_lines = Path(dataset["csv"]["val"]).read_text().splitlines()
    (data / "val.csv").write_text("\n".join(val_lines + ["broken.mp4 1"]) + "\n")

    result = train(tiny_cfg(dataset, out, "DATA.PATH_TO_DATA_DIR", str(data), "TEST.ENABLE", "False"))
    assert result.epochs_run == 1  # resumed from the mid-epoch checkpoint of epoch 2
    assert not stale.exists()
    log = (out / "stdout.log").read_text()
    assert f"removed {stale}" in log
    assert f"checkpoint {newest} is damaged and is skipped" in log
    assert "resumed from " + str(ck.checkpoint_dir(out) / "checkpoint_epoch_00002-iter_000002.pyth") in log
    assert_same_final_weights(ref_out, out)  # the damaged file was rewritten by the resumed run

    val = [json.loads(line) for line in (out / "json_stats.log").read_text().splitlines()]
    val = [r for r in val if r["_type"] == "val_epoch"]
    assert len(val) == 1 and val[0]["num_videos"] == len(val_lines) and val[0]["num_failed"] == 1
    assert "ema_num_failed" not in val[0] and 0 <= val[0]["top1_acc"] <= 100
    bad = [line.split("\t") for line in (out / "bad_videos.txt").read_text().splitlines()]
    assert len(bad) == 1 and bad[0][0].endswith("broken.mp4") and bad[0][1]
    assert "1 failed to decode" in log


def test_validation_does_not_substitute_failed_videos(dataset, tmp_path):
    from regionvit_video.data import build_loader
    from regionvit_video.engine import build_model, validate

    data = tmp_path / "val_all_bad"
    data.mkdir()
    (data / "val.csv").write_text("broken.mp4 1\nbroken.mp4 0\nmissing.mp4 2\n")
    (data / "train.csv").write_text("broken.mp4 1\n")
    cfg = tiny_cfg(dataset, tmp_path / "o", "DATA.PATH_TO_DATA_DIR", str(data), "DATA.NUM_RETRIES", "1",
                   "TEST.ENABLE", "False")
    loader = build_loader(cfg, "val")
    batches = list(loader)
    assert batches[0]["video"] is None and [f["index"] for f in batches[0]["failed"]] == [0, 1]
    model = build_model(cfg)
    stats = validate(cfg, model, loader, torch.device("cpu"), show_progress=False,
                     bad_videos_path=tmp_path / "bad.txt")
    assert stats["num_videos"] == 0 and stats["num_failed"] == 3
    lines = (tmp_path / "bad.txt").read_text().splitlines()
    assert [line.split("\t")[0].rsplit("/", 1)[-1] for line in lines] == ["broken.mp4", "broken.mp4", "missing.mp4"]


@pytest.mark.slow
def test_model_compile_trains_and_tests_like_eager(dataset, tmp_path, reference_run):
    """MODEL.COMPILE (torch.compile; here the aot_eager backend, which traces the same aten operations without
    generating kernels: inductor takes minutes to compile on a 2-core CPU) trains to the eager run's weights
    within float32 rounding (atol 1e-5, on weights of magnitude ~0.1 after 6 AdamW steps), keeps the
    state_dict keys, and its checkpoint tests in an eager model with the eager run's accuracy."""
    out = tmp_path / "compiled"
    cfg = tiny_cfg(dataset, out, "MODEL.COMPILE", "True", "MODEL.COMPILE_BACKEND", "aot_eager",
                   "TRAIN.EVAL_PERIOD", "0")  # no eval-mode graph to compile (validation does not change the weights)
    train(cfg)
    eager, compiled = final_state(reference_run[0]), final_state(out)
    assert eager["model_state"].keys() == compiled["model_state"].keys()
    for key in ("model_state", "ema_state"):
        for name, value in eager[key].items():
            torch.testing.assert_close(compiled[key][name], value, rtol=0, atol=1e-5, msg=lambda m: f"{key}.{name}: {m}")
    tops = []
    for run in (reference_run[0], out):  # both checkpoints tested by an eager model
        tops.append(multiview_test(tiny_cfg(dataset, tmp_path / "test", "TEST.CHECKPOINT_FILE_PATH",
                                            str(ck.checkpoint_dir(run) / ck.checkpoint_name(2))))["top1"])
    assert tops[0] == tops[1]
