"""Helpers for tests that run ``run_net.main`` in other processes and stop them from outside."""
from __future__ import annotations

import os
import signal
import socket
import time
from pathlib import Path

import torch

from regionvit_video.engine import checkpoint as ck

REPO = Path(__file__).resolve().parents[1]


def fork(fn, *args, own_group: bool = False, env: dict | None = None) -> int:
    """Run ``fn(*args)`` in a forked child whose exit code is its return value (70 if it raised); returns
    the pid. ``own_group``: the child leads a process group of its own (and its DataLoader workers join it),
    so ``os.killpg`` reaches all of them and nothing else, as Slurm signals every process of a job."""
    pid = os.fork()
    if pid == 0:
        code = 70
        try:
            if own_group:
                os.setpgid(0, 0)
            os.environ.update(env or {})
            torch.set_num_threads(1)
            code = int(fn(*args) or 0)
        finally:
            os._exit(code)
    return pid


def wait(pid: int, timeout: float = 300, why: str = "") -> int:
    """Exit code of ``pid`` (negative: killed by that signal); SIGKILLs it after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return os.waitstatus_to_exitcode(status)
        time.sleep(0.01)
    os.kill(pid, signal.SIGKILL)
    _, status = os.waitpid(pid, 0)
    raise AssertionError(f"process {pid} did not finish within {timeout} s {why}".rstrip())


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def rank_env(rank: int, world: int, port: int) -> dict:
    """What torchrun sets for a process of a one-machine job."""
    return dict(RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE=str(world), LOCAL_WORLD_SIZE=str(world),
                MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))


def train_iters_logged(out: Path) -> int:
    """``train_iter`` records in ``out/json_stats.log`` (LOG_PERIOD 1: iterations done)."""
    try:
        lines = (out / "json_stats.log").read_text().splitlines()
    except FileNotFoundError:
        return 0
    return sum('"_type": "train_iter"' in line for line in lines)


def wait_for_iterations(out: Path, n: int, pids: list[int], timeout: float = 300, why: str = "") -> None:
    """Until ``n`` iterations are logged; fails if one of ``pids`` ends first."""
    deadline = time.monotonic() + timeout
    while train_iters_logged(out) < n:
        if time.monotonic() > deadline:
            raise AssertionError(f"{n} iterations not logged within {timeout} s {why}")
        for pid in pids:
            if os.waitpid(pid, os.WNOHANG)[0]:
                raise AssertionError(f"process {pid} ended before iteration {n} {why}")
        time.sleep(0.005)


def final_checkpoint(out: Path, epoch: int) -> dict:
    return ck.load_checkpoint(ck.checkpoint_dir(out) / ck.checkpoint_name(epoch))


def assert_same_final_weights(a: dict, b: dict, why: str = "") -> None:
    """Model, EMA and AdamW state bit for bit (runs on one machine repeat the same arithmetic)."""
    assert a["global_step"] == b["global_step"], why
    for key in ("model_state", "ema_state"):
        if a.get(key) is None:
            continue
        assert a[key].keys() == b[key].keys(), why
        for name, value in a[key].items():
            assert torch.equal(value, b[key][name]), f"{key}.{name} differs {why}"
    for sa, sb in zip(a["optimizer_state"]["state"].values(), b["optimizer_state"]["state"].values()):
        assert torch.equal(sa["exp_avg"], sb["exp_avg"]) and torch.equal(sa["exp_avg_sq"], sb["exp_avg_sq"]), why
