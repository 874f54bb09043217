"""Interrupted runs: SIGKILL at a random iteration then the same command again, a kill in the middle of a
checkpoint write, a process killed while it holds the progress-bar lock, and a diverging run.

Every run here is ``run_net.main(argv)`` (the ``python run_net.py ARGS`` entry point) in a process forked
from the test (a fork, not a fresh interpreter, to spare the 6 s of imports per run), killed from outside
with SIGKILL: no cleanup code runs, as when a cluster job is preempted or the machine loses power. The
checkpoint-write kill hits a process inside the engine's ``save_checkpoint``.
"""
from __future__ import annotations

import io
import multiprocessing
import os
import random
import re
import signal
import time
from pathlib import Path

import pytest
import torch

from regionvit_video.engine import checkpoint as ck
from regionvit_video.engine.log import setup_logging
from runs import assert_same_final_weights, fork, train_iters_logged, wait
from tiny_datasets import make_kinetics_folder

REPO = Path(__file__).resolve().parents[1]
TOTAL_ITERS = 8  # 2 epochs x 4 iterations (4 videos, batch 1)


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return make_kinetics_folder(tmp_path_factory.mktemp("k_int"), num_classes=2, videos_per_class=2, size=(32, 40),
                                frames=8, seed=3)


def _command(data: dict, out: Path, *extra: str) -> list[str]:
    """The training command: mixup, RandAugment, random erasing, drop path and EMA on, a checkpoint every
    iteration (every source of randomness an exact resume must restore)."""
    opts = [*map(str, data["cfg_opts"]),
            "MODEL.ARCH", "regionvit_video_pico", "DATA.NUM_FRAMES", "4", "DATA.TRAIN_JITTER_SCALES", "[32, 40]",
            "DATA.TRAIN_CROP_SIZE", "32", "DATA.TEST_SCALE", "32", "DATA.TEST_CROP_SIZE", "32",
            "TRAIN.BATCH_SIZE", "1", "DATA_LOADER.NUM_WORKERS", "0", "SOLVER.MAX_EPOCH", "2",
            "SOLVER.WARMUP_EPOCHS", "0.5", "SOLVER.BASE_LR", "0.002", "MODEL.DROP_PATH_RATE", "0.1",
            "AUG.RAND_AUGMENT", "True", "AUG.RE_PROB", "0.5", "MIXUP.ENABLE", "True",
            "MODEL_EMA.ENABLE", "True", "MODEL_EMA.DECAY", "0.9", "TRAIN.EVAL_PERIOD", "0", "TEST.ENABLE", "False",
            "TRAIN.CHECKPOINT_ITER_PERIOD", "1", "TRAIN.CHECKPOINT_KEEP", "2", "LOG_PERIOD", "1",
            "DEVICE", "cpu", "OUTPUT_DIR", str(out), *extra]
    return ["--cfg", str(REPO / "configs" / "demo.yaml"), *opts]


def _run(run_net, argv: list[str], why: str = "") -> int:
    return wait(fork(run_net.main, argv), why=why)


def _final(out: Path) -> dict:
    return ck.load_checkpoint(ck.checkpoint_dir(out) / ck.checkpoint_name(2))


def _killed_holding_the_bar_lock_then_draw_a_bar() -> int:
    """In a process of its own: one child is killed while it holds tqdm's write lock, then another draws a bar."""
    from tqdm import tqdm
    from tqdm.std import TqdmDefaultWriteLock

    # This process has drawn bars with tqdm's default lock (its cross-process part new, not shared with the
    # test session, which a failure here would otherwise leave locked), then starts a run.
    TqdmDefaultWriteLock.mp_lock = multiprocessing.RLock()
    tqdm.set_lock(TqdmDefaultWriteLock())
    setup_logging(None)  # what every run does first (run_net, train, test, the demo)

    def die_holding_the_lock() -> int:  # as if killed in the middle of a bar update or a log line
        tqdm.get_lock().acquire()
        os.kill(os.getpid(), signal.SIGKILL)
        return 0

    def draw_a_bar() -> int:
        with tqdm(total=1, file=io.StringIO()) as bar:
            bar.update()
        tqdm.write("a log line", file=io.StringIO())
        return 0

    assert wait(fork(die_holding_the_lock)) == -signal.SIGKILL
    return wait(fork(draw_a_bar), timeout=30)


def test_a_process_killed_holding_the_progress_bar_lock_does_not_block_the_next_bar():
    # A killed run, or a DataLoader worker ended by the decode timeout's hard bound while it logged a line,
    # once left tqdm's cross-process lock held: the next run forked from the same process hung in its first bar.
    assert wait(fork(_killed_holding_the_bar_lock_then_draw_a_bar), timeout=120) == 0


def test_sigkill_at_a_random_iteration_then_same_command_resumes_to_identical_weights(data, tmp_path, run_net):
    seed = int(os.environ.get("RELIABILITY_KILL_SEED", time.time_ns() % 2**32))
    kill_after = random.Random(seed).randint(1, TOTAL_ITERS - 2)  # >= 2 iterations left: the kill lands first
    why = f"(kill after iteration {kill_after} of {TOTAL_ITERS}; rerun with RELIABILITY_KILL_SEED={seed})"

    ref_out = tmp_path / "uninterrupted"
    assert _run(run_net, _command(data, ref_out)) == 0

    out = tmp_path / "killed"
    cmd = _command(data, out)
    pid = fork(run_net.main, cmd)
    try:
        deadline = time.monotonic() + 300
        while train_iters_logged(out) < kill_after and time.monotonic() < deadline:
            if os.waitpid(pid, os.WNOHANG)[0]:
                raise AssertionError(f"the run ended by itself before the kill {why}")
            time.sleep(0.005)
    finally:
        os.kill(pid, signal.SIGKILL)
    assert wait(pid, why=why) == -signal.SIGKILL, why
    # The kill may land before the first checkpoint is written (then the rerun starts over) or anywhere after.
    before = ck.latest_checkpoint(out)
    assert before is None or before.name != ck.checkpoint_name(2), f"{before} {why}"

    assert _run(run_net, cmd, why) == 0, why  # the very same command
    log = (out / "stdout.log").read_text()
    if before is not None:
        assert f"resumed from {before}" in log, why
    else:
        assert "resumed from" not in log, why

    a, b = _final(ref_out), _final(out)
    assert a["global_step"] == TOTAL_ITERS, why
    assert_same_final_weights(a, b, why)


BIG_BYTES = 2 * 4096 * 4096 * 4


def _write_big_checkpoint(path: Path) -> int:
    # 128 MB of weights: torch.save needs about a second to stream them, and the kill lands in the middle.
    big = {f"blocks.{i}.weight": torch.full((4096, 4096), float(i)) for i in range(2)}
    ck.save_checkpoint(path, model_state=big, epoch=2, iteration=4, epoch_complete=True, global_step=8)
    return 0


def test_kill_during_checkpoint_write_leaves_previous_checkpoints_intact(tmp_path):
    out = tmp_path / "run"
    ckdir = ck.checkpoint_dir(out)
    prev_state = {"w": torch.arange(12.0).reshape(3, 4), "b": torch.ones(3)}
    first = ck.save_checkpoint(ckdir / ck.checkpoint_name(1), model_state=prev_state, epoch=1, iteration=4,
                               epoch_complete=True, global_step=4)
    # The engine overwrites a name when a run restarts without AUTO_RESUME: the worst case is a kill while
    # replacing an existing checkpoint, so the killed write targets a file that already exists.
    target = ckdir / ck.checkpoint_name(2)
    ck.save_checkpoint(target, model_state={"w": torch.zeros(2)}, epoch=2, iteration=4, epoch_complete=True,
                       global_step=8)
    before = {p.name: p.read_bytes() for p in ck.list_checkpoints(out)}

    pid = fork(_write_big_checkpoint, target)
    partial = None
    try:
        deadline = time.monotonic() + 120
        while partial is None and time.monotonic() < deadline and not os.waitpid(pid, os.WNOHANG)[0]:
            tmps = [p for p in ckdir.iterdir() if p.name.endswith(".tmp")]
            if tmps and tmps[0].stat().st_size > 1 << 20:  # mid-write: some data out, not all
                partial = tmps[0]
            time.sleep(0.001)
    finally:
        os.kill(pid, signal.SIGKILL)
    code = wait(pid)
    assert partial is not None, f"the write was not caught in progress (exit {code})"
    assert code == -signal.SIGKILL

    # The partial file is only ever the temporary: every checkpoint name still holds its previous content.
    assert {p.name: p.read_bytes() for p in ck.list_checkpoints(out)} == before
    assert ck.latest_checkpoint(out) == target  # the temporary is never taken for a checkpoint
    old = ck.load_checkpoint(target)
    assert torch.equal(old["model_state"]["w"], torch.zeros(2)) and old["global_step"] == 8
    prev = ck.load_checkpoint(first)
    for k, v in prev_state.items():
        assert torch.equal(prev["model_state"][k], v)
    # The killed write left its temporary behind, never renamed (usually cut short; at worst killed during
    # the fsync after the last byte).
    leftover = [p for p in ckdir.iterdir() if p.name.endswith(".tmp")]
    assert leftover == [partial] and 1 << 20 < partial.stat().st_size <= BIG_BYTES + (1 << 20)


def test_diverging_run_stops_naming_the_iteration_and_keeps_only_finite_checkpoints(data, tmp_path, run_net):
    """SOLVER.BASE_LR 1e3: iteration 2 still has a finite loss, but its step turns the weights NaN (iteration
    3's loss is NaN). The command exits 1 naming the iteration; the checkpoint it calls the last good one
    exists, is the newest kept, and holds finite weights: no NaN state is ever saved for a resume to pick up."""
    out = tmp_path / "diverge"
    code = run_net.main(_command(data, out, "SOLVER.BASE_LR", "1e3", "SOLVER.WARMUP_EPOCHS", "0.0",
                                 "MIXUP.ENABLE", "False", "MODEL_EMA.ENABLE", "False"))
    assert code == 1
    log = (out / "stdout.log").read_text()
    msg = [line for line in log.splitlines() if "TrainingDivergedError" in line]
    assert msg, log[-3000:]
    m = re.search(r"(loss is (nan|inf|-inf) at|weights became non-finite .*by) epoch (\d+), iteration (\d+)/4 ",
                  msg[0])
    assert m, msg[0]
    failed_at = 4 * (int(m.group(3)) - 1) + int(m.group(4))
    logged = sum('"train_iter"' in line for line in (out / "json_stats.log").read_text().splitlines())
    assert logged <= failed_at < TOTAL_ITERS  # nothing trained after the failure
    ckpts = ck.list_checkpoints(out)
    assert ckpts, "no checkpoint kept although an iteration before the failure completed"
    assert f"Last good checkpoint: {ckpts[-1]}." in msg[0]
    for path in ckpts:
        state = ck.load_checkpoint(path)
        bad = [k for k, v in state["model_state"].items() if v.is_floating_point() and not torch.isfinite(v).all()]
        assert not bad, f"{path.name} holds non-finite weights: {bad[:3]}"


@pytest.mark.parametrize("bad", [float("inf"), float("-inf")])
def test_infinite_loss_stops_naming_the_iteration_and_keeps_the_last_checkpoint(data, tmp_path, run_net,
                                                                               corrupt_loss, bad):
    """The engine's own test covers a NaN loss; here the loss of global iteration 3 is +-Inf."""
    corrupt_loss(bad, call=3)
    out = tmp_path / "inf"
    assert run_net.main(_command(data, out)) == 1
    errors = [line for line in (out / "stdout.log").read_text().splitlines() if "TrainingDivergedError" in line]
    last = ck.checkpoint_dir(out) / "checkpoint_epoch_00001-iter_000002.pyth"
    assert errors and f"loss is {bad} at epoch 1, iteration 3/4 (global iteration 3" in errors[0], errors
    assert f"Last good checkpoint: {last}." in errors[0]
    assert ck.latest_checkpoint(out) == last
    state = ck.load_checkpoint(last)
    assert state["global_step"] == 2
    assert all(torch.isfinite(v).all() for v in state["model_state"].values() if v.is_floating_point())


def test_atomic_writes_keep_the_usual_file_permissions(tmp_path):
    """Checkpoints and results written through the atomic temporary get the mode a plain open() gives
    (0o666 less the umask), not mkstemp's owner-only 0o600: a lab's shared runs stay readable."""
    umask = os.umask(0o022)
    try:
        path = ck.save_checkpoint(tmp_path / "checkpoints" / ck.checkpoint_name(1), model_state={"w": torch.ones(1)})
    finally:
        os.umask(umask)
    assert path.stat().st_mode & 0o777 == 0o644
    assert not [p for p in path.parent.iterdir() if p.name.endswith(".tmp")]
