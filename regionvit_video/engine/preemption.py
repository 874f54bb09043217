"""Preemption without lost work: a signal asks training to stop at the next iteration boundary.

Slurm warns a job before its time limit (``--signal=USR1@120``, or submitit's USR2) and a preempting
scheduler sends SIGTERM before SIGKILL. While training runs, :class:`PreemptionHandler` catches SIGTERM,
SIGUSR1 and SIGUSR2 (:func:`~regionvit_video.utils.signals.preemption_signals`) and only records the request: the
iteration in progress finishes, then :meth:`PreemptionHandler.agreed` tells every rank whether any rank
was signalled (an all-reduce on a gloo group, so no GPU synchronisation), rank 0 writes the mid-epoch
checkpoint (the same ``-iter_`` file as ``TRAIN.CHECKPOINT_ITER_PERIOD``) atomically, all ranks meet at a
barrier and :class:`Preempted` ends the run; ``run_net.py`` exits with :data:`PREEMPTED_EXIT_CODE`. The
same command resumes it (TRAIN.AUTO_RESUME). Under ``run_with_submitit.py`` the job requeues itself
(:func:`requeue_with_submitit`).

A second signal while the checkpoint is written only records the request again: the write is atomic and
finishes. DataLoader workers ignore these signals (:mod:`regionvit_video.utils.signals`).
"""
from __future__ import annotations

import logging
import os
import signal
import sys
import threading

import torch
import torch.distributed as dist

from regionvit_video.utils.signals import preemption_signals

logger = logging.getLogger(__name__)

# EX_TEMPFAIL (sysexits.h): "a temporary failure; the same command later will succeed". Distinct from a
# failed run (1), a config error (2) and a signal's death (128 + n).
PREEMPTED_EXIT_CODE = 75


class Preempted(Exception):
    """Training stopped on a preemption signal after saving ``checkpoint``; the same command resumes it."""

    def __init__(self, signal_name: str, checkpoint: str | None):
        super().__init__(f"stopped by {signal_name} after writing {checkpoint}; the same command resumes from it"
                         if checkpoint else f"stopped by {signal_name}")
        self.signal_name = signal_name
        self.checkpoint = checkpoint


class PreemptionHandler:
    """Records preemption signals while training runs (a context manager; main thread only).

    Args:
        group: the process group to agree on (:func:`~regionvit_video.engine.distributed.gloo_group`; None: the
            default group). Unused in a single process.
    """

    def __init__(self, group=None):
        self.group = group
        self.signum: int | None = None
        self._previous: dict[int, object] = {}

    def __enter__(self) -> "PreemptionHandler":
        if threading.current_thread() is threading.main_thread():
            for sig in preemption_signals():
                self._previous[sig] = signal.signal(sig, self._on_signal)
        return self

    def __exit__(self, *exc) -> None:
        for sig, previous in self._previous.items():
            signal.signal(sig, previous)
        self._previous.clear()

    def _on_signal(self, signum, frame) -> None:
        first = self.signum is None
        self.signum = signum
        # No logging here (its locks may be held by the interrupted code); a raw write is safe.
        note = (f"\nregionvit_video: {signal.Signals(signum).name} received: stopping after this iteration "
                f"with a checkpoint\n" if first else f"\nregionvit_video: {signal.Signals(signum).name} "
                                                     "received again: the checkpoint is being written\n")
        try:
            os.write(sys.stderr.fileno(), note.encode())
        except (OSError, ValueError):
            pass

    @property
    def signal_name(self) -> str:
        return signal.Signals(self.signum).name if self.signum else "a signal on another process"

    def agreed(self) -> bool:
        """Whether any process was signalled; every process must call it at the same iteration."""
        if not (dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1):
            return self.signum is not None
        flag = torch.tensor([1 if self.signum is not None else 0], dtype=torch.int32)
        dist.all_reduce(flag, op=dist.ReduceOp.MAX, group=self.group)
        return bool(flag.item())


def requeue_with_submitit() -> None:
    """After a :class:`Preempted` run inside a submitit job: let submitit's own handler requeue the job.

    submitit installs ``checkpoint_and_try_requeue`` for its preemption signal when a job starts; training
    replaced it while it ran and put it back. Called here, on global rank 0 it calls the submitted
    callable's ``checkpoint()``, requeues the job (``scontrol requeue``; the local executor restarts the
    tasks) and exits; on other ranks it returns.
    """
    from submitit.core.job_environment import JobEnvironment

    sig = JobEnvironment._usr_sig()
    handler = signal.getsignal(sig)
    if not callable(handler):
        raise RuntimeError(f"no submitit handler for {signal.Signals(sig).name}: is this a submitit job?")
    logger.info("requeueing the job through submitit")
    handler(sig, None)
