"""Cluster jobs: preemption signals lose no work, elastic restarts, submitit, and a full disk.

A preempted run (SIGTERM, SIGUSR1 or SIGUSR2 after a random iteration) writes a mid-epoch checkpoint and
exits with status 75; the same command then ends with the weights of an uninterrupted run, bit for bit,
with 1 and 2 processes (gloo). Under torchrun --max-restarts a killed rank restarts the group from the
newest checkpoint; under submitit's local executor a signalled job requeues itself. A checkpoint that
does not fit on the disk stops the run with a message naming the file and the free space, and leaves the
earlier checkpoints loadable.
"""
from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from regionvit_video.engine import PREEMPTED_EXIT_CODE
from regionvit_video.engine import checkpoint as ck
from runs import (REPO, assert_same_final_weights, final_checkpoint, fork, free_port, rank_env, train_iters_logged,
                  wait, wait_for_iterations)
from tiny_datasets import make_kinetics_folder

pytestmark = pytest.mark.usefixtures("one_thread")

EPOCHS, VIDEOS = 2, 4


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return make_kinetics_folder(tmp_path_factory.mktemp("k_cluster"), num_classes=2, videos_per_class=2,
                                size=(32, 40), frames=8, seed=5)


def _command(data: dict, out: Path, *extra: str) -> list[str]:
    """Training with every source of randomness an exact resume must restore (mixup, RandAugment, random
    erasing, drop path, EMA); checkpoints at the end of each epoch only, so a mid-epoch checkpoint comes
    from the preemption."""
    opts = [*map(str, data["cfg_opts"]),
            "MODEL.ARCH", "regionvit_video_pico", "DATA.NUM_FRAMES", "4", "DATA.TRAIN_JITTER_SCALES", "[32, 40]",
            "DATA.TRAIN_CROP_SIZE", "32", "DATA.TEST_SCALE", "32", "DATA.TEST_CROP_SIZE", "32",
            "TRAIN.BATCH_SIZE", "1", "DATA_LOADER.NUM_WORKERS", "0", "SOLVER.MAX_EPOCH", str(EPOCHS),
            "SOLVER.WARMUP_EPOCHS", "0.5", "SOLVER.BASE_LR", "0.002", "MODEL.DROP_PATH_RATE", "0.1",
            "AUG.RAND_AUGMENT", "True", "AUG.RE_PROB", "0.5", "MIXUP.ENABLE", "True",
            "MODEL_EMA.ENABLE", "True", "MODEL_EMA.DECAY", "0.9", "TRAIN.EVAL_PERIOD", "0", "TEST.ENABLE", "False",
            "TRAIN.CHECKPOINT_ITER_PERIOD", "0", "TRAIN.CHECKPOINT_KEEP", "0", "LOG_PERIOD", "1",
            "DEVICE", "cpu", "OUTPUT_DIR", str(out), *extra]
    return ["--cfg", str(REPO / "configs" / "demo.yaml"), *opts]


def _run_ranks(run_net, argv: list[str], world: int, why: str = "") -> list[int]:
    """``run_net.main(argv)`` in ``world`` forked processes joined as torchrun joins them; their exit codes."""
    port = free_port()
    pids = [fork(run_net.main, argv, env=rank_env(r, world, port)) for r in range(world)]
    return [wait(pid, why=why) for pid in pids]


@pytest.fixture(scope="module")
def reference(data, tmp_path_factory, run_net):
    """Final checkpoints of uninterrupted runs with 1 and 2 processes (a dict keyed by the process count)."""
    root = tmp_path_factory.mktemp("reference")
    finals = {}
    for world in (1, 2):
        out = root / f"procs{world}"
        assert _run_ranks(run_net, _command(data, out), world) == [0] * world
        finals[world] = final_checkpoint(out, EPOCHS)
    return finals


def _signal_at_random_iteration(run_net, data, out: Path, world: int, sig: signal.Signals, *, seed_name: str,
                                extra: tuple = (), to_group: bool = False, twice: bool = False) -> str:
    """Start ``world`` processes, send ``sig`` to one of them (or its whole process group) after a random
    iteration, check the stop, rerun the same command to the end; returns the 'why' text of the draw."""
    seed = int(os.environ.get(seed_name, time.time_ns() % 2**32))
    iters = EPOCHS * VIDEOS // world
    at = random.Random(seed).randint(1, iters - 1)
    target = random.Random(seed + 1).randrange(world)
    why = f"({sig.name} after iteration {at} of {iters} to rank {target}; rerun with {seed_name}={seed})"
    argv = _command(data, out, *extra)
    port = free_port()
    pids = [fork(run_net.main, argv, own_group=to_group, env=rank_env(r, world, port) if world > 1 else None)
            for r in range(world)]
    try:
        wait_for_iterations(out, at, pids, why=why)
        if to_group:  # as Slurm signals every process of the job, DataLoader workers included
            os.killpg(pids[target], sig)
            if twice:  # a second signal while the first one's checkpoint is being written
                time.sleep(0.05)
                try:
                    os.killpg(pids[target], sig)
                except ProcessLookupError:  # already saved and gone
                    pass
        else:
            os.kill(pids[target], sig)
        codes = [wait(pid, why=why) for pid in pids]
    finally:
        for pid in pids:
            if psutil.pid_exists(pid):
                os.kill(pid, signal.SIGKILL)
    assert codes == [PREEMPTED_EXIT_CODE] * world, f"exit codes {codes} {why}"
    newest = ck.latest_checkpoint(out)
    assert newest is not None and "-iter_" in newest.name, f"{newest} {why}"  # the preemption's checkpoint
    assert not list(ck.checkpoint_dir(out).glob(".*.tmp")), f"a temporary file was left {why}"
    ck.load_checkpoint(newest)  # complete and loadable
    log = (out / "stdout.log").read_text()
    assert f"{sig.name} received" in log or "preempted" in log, why
    assert _run_ranks(run_net, argv, world, why) == [0] * world, why  # the very same command
    assert f"resumed from {newest}" in (out / "stdout.log").read_text(), why
    return why


def test_signal_in_one_process_saves_exits_75_and_the_same_command_resumes_exactly(data, tmp_path, run_net,
                                                                                    reference, capfd):
    """SIGUSR1 (Slurm's warning) sent twice to the process group of a run with 2 DataLoader workers: the
    workers ignore it, the run finishes its iteration, saves once and exits 75; the rerun ends bit for bit
    where an uninterrupted run ends."""
    out = tmp_path / "usr1"
    why = _signal_at_random_iteration(run_net, data, out, 1, signal.SIGUSR1, seed_name="PREEMPT_SEED_1",
                                      extra=("DATA_LOADER.NUM_WORKERS", "2"), to_group=True, twice=True)
    err = capfd.readouterr().err
    # Only the main process acted on it (the workers, forked with its handler, reset it to ignore).
    assert err.count("SIGUSR1 received: stopping after this iteration") == 1, why
    assert err.count("SIGUSR1 received again") <= 1, why
    assert_same_final_weights(reference[1], final_checkpoint(out, EPOCHS), why)


def test_sigterm_to_one_of_two_processes_stops_both_and_they_resume_exactly(data, tmp_path, run_net, reference):
    out = tmp_path / "term"
    why = _signal_at_random_iteration(run_net, data, out, 2, signal.SIGTERM, seed_name="PREEMPT_SEED_2")
    assert_same_final_weights(reference[2], final_checkpoint(out, EPOCHS), why)


def _rank_processes(parent: psutil.Process, rank: int) -> list[psutil.Process]:
    found = []
    for p in parent.children(recursive=True):
        try:
            if p.environ().get("RANK") == str(rank) and "run_net.py" in " ".join(p.cmdline()):
                found.append(p)
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
    return found


def test_torchrun_restarts_a_killed_rank_from_the_newest_checkpoint(data, tmp_path, reference):
    """torchrun --max-restarts 3 with 2 processes: rank 1 is SIGKILLed after the first checkpoint; the
    restarted group resumes from the newest checkpoint and ends identical to an uninterrupted run."""
    out = tmp_path / "elastic"
    argv = _command(data, out, "TRAIN.CHECKPOINT_ITER_PERIOD", "1")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
           "--max-restarts", "3", str(REPO / "run_net.py"), *argv]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    victims = []

    def rank_1_after_a_checkpoint() -> bool:
        victims[:] = _rank_processes(psutil.Process(proc.pid), 1) if ck.latest_checkpoint(out) else []
        return bool(victims)

    def kill() -> None:  # no cleanup runs, as when a node is lost
        for victim in victims:
            victim.kill()

    output = _act_when(proc, rank_1_after_a_checkpoint, kill, "torchrun ended before the kill")
    killed_after = ck.latest_checkpoint(out)
    assert proc.returncode == 0, output[-3000:]
    log = (out / "stdout.log").read_text()
    assert "resumed from" in log, log[-2000:]
    assert_same_final_weights(reference[2], final_checkpoint(out, EPOCHS), f"(killed after {killed_after.name})")


_RESTARTED_GROUP = """
import os, sys
import torch.distributed as dist
from regionvit_video.engine.distributed import init_distributed
init_distributed(device="cpu")
store, restart = dist.distributed_c10d._get_default_store(), os.environ["TORCHELASTIC_RESTART_COUNT"]
if restart == "0":
    store.set("left_by_the_first_group", "1")
    dist.barrier()
    sys.exit(3 if dist.get_rank() == 1 else 0)
assert not store.check(["left_by_the_first_group"]), "the restarted group reads the first group's keys"
dist.barrier()
"""


def test_a_group_restarted_by_torchrun_does_not_see_the_previous_groups_store_keys(tmp_path):
    """torch 2.14's torchrun shares one store across restarts (PyTorch #135712): without a per-restart prefix a
    restarted group reads its predecessor's gloo/NCCL addresses and fails or hangs, one run in a few."""
    script = tmp_path / "worker.py"
    script.write_text(_RESTARTED_GROUP)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
           "--max-restarts", "1", str(script)]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    result = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, (result.stdout + result.stderr)[-3000:]


def _act_when(proc: subprocess.Popen, ready, act, ended: str, timeout: float = 300) -> str:
    """Once ``ready()`` holds, ``act()`` on the running ``proc``; then its output when it ends."""
    try:
        deadline = time.monotonic() + timeout
        while not ready():
            assert proc.poll() is None and time.monotonic() < deadline, ended
            time.sleep(0.01)
        act()
        return proc.communicate(timeout=240)[0]
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def _submitit(data, out: Path, job_dir: Path, tasks: int) -> subprocess.Popen:
    cmd = [sys.executable, str(REPO / "run_with_submitit.py"), "--local", "--ngpus", str(tasks), "--timeout", "20",
           "--job_dir", str(job_dir), *_command(data, out)]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            cwd=str(job_dir.parent))


def test_submitit_local_job_with_one_task_trains_and_records_the_job_id(data, tmp_path, reference):
    out, job_dir = tmp_path / "out", tmp_path / "job"
    with _submitit(data, out, job_dir, 1) as proc:
        output, _ = proc.communicate(timeout=400)
    assert proc.returncode == 0, output[-3000:]
    job_id = output.split("submitted job ")[1].split(":")[0]
    assert f"finished: task statuses [0]" in output
    assert f"cluster job {job_id}" in (out / "stdout.log").read_text()
    assert f'"job_id": "{job_id}"' in (out / "json_stats.log").read_text()
    assert_same_final_weights(reference[1], final_checkpoint(out, EPOCHS))


def test_submitit_job_of_two_tasks_requeues_itself_on_its_preemption_signal(data, tmp_path, reference):
    """SIGUSR2 (submitit's signal) to task 0 after a random iteration: both tasks stop after a checkpoint,
    the job requeues itself (checkpoint()), the tasks start again, resume and finish exactly."""
    seed = int(os.environ.get("PREEMPT_SEED_3", time.time_ns() % 2**32))
    at = random.Random(seed).randint(1, EPOCHS * VIDEOS // 2 - 1)
    why = f"(SIGUSR2 after iteration {at}; rerun with PREEMPT_SEED_3={seed})"
    out, job_dir = tmp_path / "out", tmp_path / "job"
    proc = _submitit(data, out, job_dir, 2)

    def signal_task_0() -> None:
        task0 = [p for p in psutil.Process(proc.pid).children(recursive=True)
                 if p.environ().get("SUBMITIT_LOCAL_GLOBALID") == "0" and "_submit" in " ".join(p.cmdline())]
        assert task0, why
        task0[0].send_signal(signal.SIGUSR2)

    output = _act_when(proc, lambda: train_iters_logged(out) >= at, signal_task_0, f"the job ended before the signal {why}")
    assert proc.returncode == 0, output[-3000:]
    log = (out / "stdout.log").read_text()
    assert "preempted: stopped by SIGUSR2 after writing" in log and "resumed from" in log, why
    task_logs = "".join(p.read_text() for p in (job_dir / "submitit").glob("*_log.*"))
    assert "Requeued job" in task_logs, task_logs[-2000:]
    assert "finished: task statuses [0, 0]" in output, output[-2000:]
    assert_same_final_weights(reference[2], final_checkpoint(out, EPOCHS), why)


def _mount_tmpfs(path: Path, size: str) -> bool:
    path.mkdir(parents=True, exist_ok=True)
    return subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)],
                          capture_output=True).returncode == 0


def test_full_disk_stops_the_run_naming_the_file_and_auto_resume_continues_from_the_last_good_one(
        data, tmp_path, run_net, reference):
    """OUTPUT_DIR on a 72 MiB tmpfs that holds two checkpoints: the third write fails for lack of space. The run stops
    (exit 1) with a message naming the file and the free space, no partial file is left, the earlier
    checkpoints load; with room again, the same command resumes from the newest of them and ends exactly."""
    disk = tmp_path / "disk"
    if not _mount_tmpfs(disk, "72m"):  # two checkpoints of this run (28 MB each) fit, a third does not
        pytest.skip("cannot mount a tmpfs here (tests/test_reliability_storage.py fills a write at a chosen byte)")
    try:
        out = disk / "run"
        argv = _command(data, out, "TRAIN.CHECKPOINT_ITER_PERIOD", "1")
        code = wait(fork(run_net.main, argv))
        assert code == 1
        log = (out / "stdout.log").read_text()
        error = [line for line in log.splitlines() if "CheckpointWriteError" in line]
        assert error, log[-2000:]
        kept = ck.list_checkpoints(out)
        assert len(kept) >= 1
        assert "No space left on device" in error[0] and "MiB free of 72.0 MiB" in error[0]
        assert f"cannot write {ck.checkpoint_dir(out)}" in error[0] and f"The last good checkpoint is {kept[-1]}" in error[0]
        assert not list(ck.checkpoint_dir(out).glob(".*.tmp"))
        for path in kept:
            ck.load_checkpoint(path)
        for path in kept[:-1]:  # make room, as a user would, keeping the newest (and keep only the last from now)
            path.unlink()
        code = wait(fork(run_net.main, argv + ["TRAIN.CHECKPOINT_ITER_PERIOD", "0", "TRAIN.CHECKPOINT_KEEP", "1"]))
        assert code == 0, (out / "stdout.log").read_text()[-3000:]
        assert f"resumed from {kept[-1]}" in (out / "stdout.log").read_text()
        assert_same_final_weights(reference[1], final_checkpoint(out, EPOCHS))
    finally:
        subprocess.run(["umount", "-l", str(disk)], capture_output=True)
