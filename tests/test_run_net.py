"""run_net.py end to end: config errors, and a 2-process (gloo) train + test equal to a 1-process test.

The two processes are forked from the test process and join through torchrun's environment
variables (RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR, MASTER_PORT), exactly what torchrun sets.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch

from regionvit_video.engine import checkpoint as ck
from runs import fork, free_port, rank_env, wait
from tiny_datasets import make_kinetics_folder

REPO = Path(__file__).resolve().parents[1]


pytestmark = pytest.mark.usefixtures("one_thread")


def _argv(data: dict, out: Path, *extra: str) -> list[str]:
    opts = [*map(str, data["cfg_opts"]),
            "MODEL.ARCH", "regionvit_video_pico", "DATA.NUM_FRAMES", "4", "DATA.TRAIN_JITTER_SCALES", "[32, 40]",
            "DATA.TRAIN_CROP_SIZE", "32", "DATA.TEST_SCALE", "32", "DATA.TEST_CROP_SIZE", "32",
            "TRAIN.BATCH_SIZE", "2", "TEST.BATCH_SIZE", "2", "DATA_LOADER.NUM_WORKERS", "0",
            "SOLVER.MAX_EPOCH", "1", "TRAIN.EVAL_PERIOD", "1", "TEST.SPLIT", "test5", "TEST.NUM_SPATIAL_CROPS", "3",
            "DEVICE", "cpu", "OUTPUT_DIR", str(out), *extra]
    return ["--cfg", str(REPO / "configs" / "demo.yaml"), *opts]


def test_config_error_exits_with_message(tmp_path, capsys, run_net):
    bad = tmp_path / "bad.yaml"
    bad.write_text("TRAIN:\n  BATCH_SIZ: 2\n")
    assert run_net.main(["--cfg", str(bad)]) == 2
    err = capsys.readouterr().err
    assert "bad.yaml, line 2: unknown config key TRAIN.BATCH_SIZ; did you mean TRAIN.BATCH_SIZE" in err


def test_two_process_train_and_test_equal_one_process_test(tmp_path, run_net):
    data = make_kinetics_folder(tmp_path / "data", num_classes=3, videos_per_class=2, size=(32, 40), frames=8)
    (Path(data["prefix"]) / "broken.mp4").write_bytes(b"not a video")
    good = Path(data["csv"]["test"]).read_text().splitlines()
    # 5 entries: 2 processes pad the list to 6 (one video twice), which must not count twice.
    (tmp_path / "data" / "test5.csv").write_text("\n".join(good[:4] + ["broken.mp4 2"]) + "\n")
    out2 = tmp_path / "two_procs"
    port = free_port()  # two processes joined as torchrun joins them
    pids = [fork(run_net.main, _argv(data, out2), env=rank_env(rank, 2, port)) for rank in range(2)]
    codes = [wait(pid, timeout=400) for pid in pids]
    assert codes == [0, 0], f"exit codes {codes}"

    # Rank 0 wrote everything; 1 iteration per epoch (6 videos / 2 processes / batch 2).
    ckpt = ck.checkpoint_dir(out2) / "checkpoint_epoch_00001.pyth"
    assert ck.list_checkpoints(out2) == [ckpt]
    final = ck.load_checkpoint(ckpt)
    assert final["world_size"] == 2 and len(final["rng_states"]) == 2 and final["global_step"] == 1
    stats = [json.loads(line) for line in (out2 / "json_stats.log").read_text().splitlines()]
    train_epoch = [r for r in stats if r["_type"] == "train_epoch"]
    assert [r["num_samples"] for r in train_epoch] == [4]  # both processes' samples counted
    val = [r for r in stats if r["_type"] == "val_epoch"]
    assert [r["num_videos"] for r in val] == [6]
    res2 = json.loads((out2 / "test_results.json").read_text())
    assert res2["num_processes"] == 2 and res2["num_videos"] == 4 and res2["num_failed"] == 1

    # The same checkpoint tested by one process gives the same predictions file.
    out1 = tmp_path / "one_proc"
    assert run_net.main(_argv(data, out1, "TRAIN.ENABLE", "False", "TEST.CHECKPOINT_FILE_PATH", str(ckpt))) == 0
    res1 = json.loads((out1 / "test_results.json").read_text())
    assert (out1 / "test_predictions.csv").read_text() == (out2 / "test_predictions.csv").read_text()
    assert (out1 / "test_per_class_accuracy.csv").read_text() == (out2 / "test_per_class_accuracy.csv").read_text()
    for key in ("top1", "top5", "mean_class_accuracy", "num_videos", "num_failed", "failed", "checkpoint"):
        assert res1[key] == res2[key], key
    assert len((out1 / "test_predictions.csv").read_text().splitlines()) == 1 + 4


@pytest.mark.parametrize("damage", ["random_bytes", "truncated"])
def test_prediction_job_does_not_train_and_a_damaged_checkpoint_is_a_clean_error(tmp_path, capsys, damage, run_net):
    """``PREDICT.ENABLE True ... TEST.CHECKPOINT_FILE_PATH ck.pyth`` neither trains nor tests (the log says why);
    a damaged checkpoint ends the run with exit 1 and one error line naming the file, no traceback."""
    real = tmp_path / "real.pyth"
    ck.save_checkpoint(real, model_state={"w": torch.ones(64, 64)})
    damaged = tmp_path / "ck.pyth"
    damaged.write_bytes(os.urandom(2048) if damage == "random_bytes" else real.read_bytes()[:500])
    out = tmp_path / "out"
    argv = ["--cfg", str(REPO / "configs" / "demo.yaml"), "MODEL.ARCH", "regionvit_video_pico", "DEVICE", "cpu",
            "PREDICT.ENABLE", "True", "PREDICT.INPUT", str(REPO / "tests" / "data" / "realshort.mp4"),
            "TEST.CHECKPOINT_FILE_PATH", str(damaged), "DATA.CLASS_NAMES", "", "OUTPUT_DIR", str(out)]
    assert run_net.main(argv) == 1
    captured = capsys.readouterr()
    assert "Traceback" not in captured.out + captured.err
    log = (out / "stdout.log").read_text()
    assert "PREDICT.ENABLE is True: TRAIN.ENABLE and TEST.ENABLE set to False" in log
    errors = [line for line in log.splitlines() if "[ERROR]" in line]
    assert len(errors) == 1 and "CheckpointReadError" in errors[0] and str(damaged) in errors[0]
    if damage == "random_bytes":
        assert "not a torch checkpoint file (truncated or corrupted?)" in errors[0]
    assert not ck.checkpoint_dir(out).exists() and not (out / "json_stats.log").exists()
