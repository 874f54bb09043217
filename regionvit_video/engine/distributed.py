"""torch.distributed setup and the few collectives the engine needs.

The supported launcher is ``torchrun`` (one process per GPU, one machine or many): it sets RANK,
WORLD_SIZE, LOCAL_RANK, MASTER_ADDR and MASTER_PORT, and :func:`init_distributed` joins the group
with ``init_method="env://"``. NCCL is used on CUDA and gloo on CPU. For PySlowFast users,
``--init_method/--shard_id/--num_shards`` without torchrun start one process per machine.
Every helper works unchanged in a single process (no process group).
"""
from __future__ import annotations

import datetime
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist

from regionvit_video.utils.device import device_type

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class DistInfo:
    """Where this process sits in the job."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")
    backend: str | None = None

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def resolve_device(device: str, local_rank: int = 0) -> torch.device:
    """``"auto"``: CUDA (this process's LOCAL_RANK GPU) when available, else CPU. Selects that GPU."""
    if device_type(device) == "cpu":
        return torch.device("cpu")
    if not torch.cuda.is_available():
        raise RuntimeError("DEVICE is 'cuda' but torch.cuda.is_available() is False")
    count = torch.cuda.device_count()
    if local_rank >= count:
        raise RuntimeError(
            f"LOCAL_RANK {local_rank} needs GPU {local_rank} but {count} GPU(s) are visible: start at most one "
            f"process per GPU (torchrun --nproc_per_node {count}), or set DEVICE cpu for a CPU run")
    torch.cuda.set_device(local_rank)
    return torch.device("cuda", local_rank)


def init_distributed(
    device: str = "auto",
    backend: str = "auto",
    *,
    init_method: str | None = None,
    shard_id: int = 0,
    num_shards: int = 1,
    timeout_minutes: float = 30.0,
) -> DistInfo:
    """Join the process group described by torchrun's environment (or the PySlowFast flags).

    Args:
        device: ``cfg.DEVICE`` ("auto", "cuda" or "cpu").
        backend: ``cfg.DIST_BACKEND`` ("auto": nccl on CUDA, gloo on CPU).
        init_method, shard_id, num_shards: PySlowFast flags, used only without torchrun.
    """
    env = os.environ
    if "RANK" in env and "WORLD_SIZE" in env:
        rank, world = int(env["RANK"]), int(env["WORLD_SIZE"])
        local_rank = int(env.get("LOCAL_RANK", 0))
        method = "env://"
        if init_method or num_shards > 1:
            logger.warning("launched by torchrun: ignoring --init_method/--shard_id/--num_shards")
    elif num_shards > 1:
        if not init_method:
            raise ValueError("--num_shards > 1 without torchrun needs --init_method tcp://HOST:PORT")
        rank, world, local_rank, method = shard_id, num_shards, 0, init_method
        logger.warning("one process per machine via --init_method; torchrun is the supported launcher")
    else:
        rank, world, local_rank, method = 0, 1, 0, None
    dev = resolve_device(device, local_rank)
    if world <= 1:
        return DistInfo(0, 1, local_rank, dev, None)
    if backend == "auto":
        backend = "nccl" if dev.type == "cuda" else "gloo"
    if not dist.is_initialized():
        timeout = datetime.timedelta(minutes=timeout_minutes)
        store = elastic_attempt_store(timeout) if method == "env://" else None
        if store is not None:
            dist.init_process_group(backend=backend, store=store, rank=rank, world_size=world, timeout=timeout)
        else:
            dist.init_process_group(backend=backend, init_method=method, rank=rank, world_size=world,
                                    timeout=timeout)
    return DistInfo(rank, world, local_rank, dev, backend)


def elastic_attempt_store(timeout: datetime.timedelta):
    """The store for this restart of a torchrun worker group, or None to let ``env://`` make one.

    torchrun's c10d rendezvous hands its workers one TCPStore server for the whole job
    (``TORCHELASTIC_USE_AGENT_STORE=True``), and torch 2.14's ``env://`` no longer scopes it per restart. After
    ``--max-restarts`` restarts a group, its processes can read the previous group's addresses (gloo's
    ``connectFullMesh``: "Connection refused"; NCCL: the previous unique id) and fail or hang (PyTorch issue
    #135712). With one agent (one machine) ``TORCHELASTIC_RESTART_COUNT`` numbers the groups consistently, so
    each group gets its own key prefix. With several machines the agents count restarts separately; there the
    fix is torch's own switch, ``TORCH_DISABLE_SHARE_RDZV_TCP_STORE=1`` in torchrun's environment (a fresh store
    per group), and this function says so.
    """
    env = os.environ
    if env.get("TORCHELASTIC_USE_AGENT_STORE") != "True" or int(env.get("TORCHELASTIC_MAX_RESTARTS", "0")) == 0:
        return None
    if int(env.get("GROUP_WORLD_SIZE", "1")) > 1:
        if int(env.get("RANK", "0")) == 0:
            logger.warning("torchrun --max-restarts on %s machines shares one rendezvous store between restarts; "
                           "set TORCH_DISABLE_SHARE_RDZV_TCP_STORE=1 for torchrun so a restarted group cannot read "
                           "the previous group's addresses", env["GROUP_WORLD_SIZE"])
        return None
    store, _, _ = next(dist.rendezvous("env://", timeout=timeout))  # torch's own env:// client of the agent's store
    return dist.PrefixStore(f"regionvit_video/restart_{env.get('TORCHELASTIC_RESTART_COUNT', '0')}", store)


def cluster_job_id() -> str | None:
    """The cluster job this process belongs to: Slurm's job id (``<array job>_<task>`` for array jobs), else
    submitit's local job id, else None."""
    env = os.environ
    if env.get("SLURM_ARRAY_JOB_ID") and env.get("SLURM_ARRAY_TASK_ID"):
        return f"{env['SLURM_ARRAY_JOB_ID']}_{env['SLURM_ARRAY_TASK_ID']}"
    return env.get("SLURM_JOB_ID") or env.get("SUBMITIT_LOCAL_JOB_ID") or None


def cleanup_distributed() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def is_dist() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def get_rank() -> int:
    return dist.get_rank() if is_dist() else 0


def get_world_size() -> int:
    return dist.get_world_size() if is_dist() else 1


def is_main_process() -> bool:
    return get_rank() == 0


def barrier(group=None) -> None:
    """Wait for every process (of ``group``; None: the default group)."""
    if is_dist():
        dist.barrier(group=group)


def gloo_group(timeout: datetime.timedelta | None = None):
    """A gloo process group of all processes, for CPU-side agreements that must not go through NCCL: a flag
    all-reduced every iteration (no GPU synchronisation), or a barrier that may wait longer than the default
    group's timeout while rank 0 writes files. None in a single process. Collective: every process calls it.
    """
    if not is_dist():
        return None
    if dist.get_backend() == "gloo" and timeout is None:
        return None  # the default group is one
    return dist.new_group(backend="gloo", timeout=timeout)


def all_reduce_sum(t: torch.Tensor) -> torch.Tensor:
    """Sum of ``t`` over all processes (a new tensor; ``t`` is untouched)."""
    t = t.detach().clone()
    if is_dist():
        if dist.get_backend() == "nccl" and t.device.type != "cuda":
            t = t.cuda()
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t


def all_gather_object(obj: Any, group=None) -> list[Any]:
    """``[obj of rank 0, obj of rank 1, ...]`` (pickled; for small per-process results)."""
    if not is_dist():
        return [obj]
    out: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(out, obj, group=group)
    return out


def broadcast_object(obj: Any, src: int = 0) -> Any:
    """Rank ``src``'s ``obj`` on every process."""
    if not is_dist():
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=src)
    return box[0]


def shared_file(path: str | os.PathLike | None) -> Path | None:
    """Rank 0's ``path`` on every process, each of which must be able to read it.

    Checkpoint choices (newest file, resume point) are made by rank 0 so that all processes agree
    even while files appear; a multi-node job therefore needs OUTPUT_DIR on a shared filesystem.
    """
    chosen = broadcast_object(str(path) if path else None)
    if chosen is not None:
        check_visible(chosen)
    return Path(chosen) if chosen else None


def check_visible(path: str | os.PathLike) -> None:
    """Raise if this process cannot see the file ``path`` that process 0 chose."""
    if not Path(path).is_file():
        raise FileNotFoundError(
            f"process {get_rank()} cannot see {path}, which process 0 uses: OUTPUT_DIR must be on a "
            "filesystem shared by every machine of a multi-node job")
