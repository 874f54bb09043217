"""The signals that ask a run to stop and save (preemption, time limits), in one place.

Slurm warns a job before its time limit with the signal named in ``--signal`` (USR1 in this toolkit's
examples, USR2 under submitit, whose ``SUBMITIT_PREEMPT_SIGNAL`` may name another) and preempts with SIGTERM
before SIGKILL. The training loop handles them (:mod:`regionvit_video.engine.preemption`); DataLoader workers
ignore them (:func:`ignore_preemption_signals`), because Slurm signals every process of a job and a worker
killed by the warning would end the run before the main process could save.
"""
from __future__ import annotations

import os
import signal


def preemption_signals() -> tuple[signal.Signals, ...]:
    """SIGTERM, SIGUSR1, SIGUSR2, and submitit's preemption signal when ``SUBMITIT_PREEMPT_SIGNAL`` names another."""
    sigs = [signal.SIGTERM, signal.SIGUSR1, signal.SIGUSR2]
    extra = getattr(signal, "SIG" + os.environ.get("SUBMITIT_PREEMPT_SIGNAL", "USR2"), None)
    if extra is not None and extra not in sigs:
        sigs.append(extra)
    return tuple(sigs)


def ignore_preemption_signals() -> None:
    """Ignore the preemption signals in this process (a DataLoader worker: its main process handles them)."""
    for sig in preemption_signals():
        signal.signal(sig, signal.SIG_IGN)
