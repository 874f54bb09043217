"""Run logging: ``stdout.log``, PySlowFast ``json_stats`` lines, TensorBoard scalars, curve plots.

Rank 0 writes everything; other ranks log warnings and errors to stderr only. Files in
``OUTPUT_DIR``:

- ``stdout.log``: the console log, including ``json_stats: {...}`` lines;
- ``json_stats.log``: the same JSON objects, one a line (``_type``: train_iter, train_epoch,
  val_epoch, test_final), appended across resumed runs;
- ``tensorboard/``: scalars for ``tensorboard --logdir OUTPUT_DIR/tensorboard``;
- ``training_curves.png``: loss, learning rate and single-view validation accuracy.
"""
from __future__ import annotations

import json
import logging
import math
import os
import sys
import threading
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

PACKAGE_LOGGER = "regionvit_video"
_HANDLER_TAG = "_regionvit_video_handler"
_fork_hook_registered = False


def _new_tqdm_lock() -> None:
    from tqdm import tqdm

    tqdm.set_lock(threading.RLock())


def use_process_local_tqdm_lock() -> None:
    """Give tqdm a write lock of this process only, here and in every process forked from it.

    tqdm's default lock includes a multiprocessing RLock, shared by every process forked after it
    exists: the DataLoader workers, whose log lines go through ``tqdm.write`` (see
    :func:`console_through_tqdm`), and any run forked from a process that has drawn a bar. A
    process killed while it holds that lock (SIGKILL, the OOM killer, the hard bound of
    ``DATA.DECODE_TIMEOUT`` ending a worker) leaves it held, and the next bar or log line of every
    other process waits forever. Bars are drawn by rank 0 only, so a per-process lock loses
    nothing. A fork hook gives each child a fresh lock (a copy of a lock another thread held at the
    fork would never be released).
    """
    global _fork_hook_registered
    _new_tqdm_lock()
    if not _fork_hook_registered and hasattr(os, "register_at_fork"):
        os.register_at_fork(after_in_child=_new_tqdm_lock)
        _fork_hook_registered = True


def setup_logging(output_dir: str | Path | None, *, rank: int = 0, level: int = logging.INFO) -> None:
    """Console (and ``OUTPUT_DIR/stdout.log`` on rank 0) handlers on the package logger.

    Calling it again replaces the handlers it added before (a second run in the same process
    writes to its own folder). Also makes tqdm's write lock process-local
    (:func:`use_process_local_tqdm_lock`).
    """
    use_process_local_tqdm_lock()
    root = logging.getLogger(PACKAGE_LOGGER)
    for h in list(root.handlers):
        if getattr(h, _HANDLER_TAG, False):
            root.removeHandler(h)
            h.close()
    root.propagate = False
    fmt = logging.Formatter("[%(asctime)s][%(levelname)s] %(name)s: %(message)s", "%m/%d %H:%M:%S")
    if rank == 0:
        root.setLevel(level)
        console = logging.StreamHandler(sys.stdout)
        handlers: list[logging.Handler] = [console]
        if output_dir is not None:
            Path(output_dir).mkdir(parents=True, exist_ok=True)
            handlers.append(logging.FileHandler(Path(output_dir) / "stdout.log", mode="a"))
    else:
        root.setLevel(logging.WARNING)
        fmt = logging.Formatter(f"[rank {rank}][%(levelname)s] %(name)s: %(message)s")
        handlers = [logging.StreamHandler(sys.stderr)]
    for h in handlers:
        h.setFormatter(fmt)
        setattr(h, _HANDLER_TAG, True)
        root.addHandler(h)


def console_through_tqdm():
    """Route the package's console log through ``tqdm.write`` so lines do not break progress bars."""
    from tqdm.contrib.logging import logging_redirect_tqdm

    return logging_redirect_tqdm(loggers=[logging.getLogger(PACKAGE_LOGGER)])


def _round(v: Any) -> Any:
    if isinstance(v, float):
        return v if not math.isfinite(v) else float(f"{v:.6g}")
    return v


class StatsLogger:
    """Writes ``json_stats`` lines (log and ``json_stats.log``) and TensorBoard scalars on rank 0."""

    def __init__(self, output_dir: str | Path, *, enabled: bool = True, tensorboard: bool = True,
                 job_id: str | None = None):
        self.enabled = enabled
        self.path = Path(output_dir) / "json_stats.log"
        self.job_id = job_id  # the cluster job's id (Slurm, submitit): in every record when known
        self._tb = None
        if enabled and tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter

                self._tb = SummaryWriter(log_dir=str(Path(output_dir) / "tensorboard"))
            except ImportError as e:  # pragma: no cover - tensorboard is a dependency
                logger.warning("TensorBoard disabled: %s", e)

    def log(self, stats: dict[str, Any], *, step: int | None = None, tb_prefix: str | None = None) -> None:
        """Log one record; numeric fields also go to TensorBoard as ``tb_prefix/field`` at ``step``."""
        if not self.enabled:
            return
        stats = {k: _round(v) for k, v in stats.items()}
        if self.job_id is not None:
            stats.setdefault("job_id", self.job_id)
        line = json.dumps(stats, sort_keys=True)
        logging.getLogger(PACKAGE_LOGGER).info("json_stats: %s", line)
        with open(self.path, "a") as f:
            f.write(line + "\n")
        if self._tb is not None and tb_prefix is not None and step is not None:
            for k, v in stats.items():
                if isinstance(v, (int, float)) and not isinstance(v, bool) and k not in ("epoch", "iter"):
                    self._tb.add_scalar(f"{tb_prefix}/{k}", v, step)

    def close(self) -> None:
        if self._tb is not None:
            self._tb.flush()
            self._tb.close()
            self._tb = None


def read_json_stats(path: str | Path) -> list[dict[str, Any]]:
    """Records of a ``json_stats.log``; for a resumed run, the last record per (type, epoch, iter)."""
    path = Path(path)
    if not path.is_file():
        return []
    records: dict[tuple, dict] = {}
    for line in path.read_text().splitlines():
        try:
            rec = json.loads(line)
        except json.JSONDecodeError:
            continue  # a line cut by a kill
        records[(rec.get("_type"), rec.get("epoch"), rec.get("iter"))] = rec
    return list(records.values())


def plot_training_curves(json_stats_path: str | Path, out_png: str | Path) -> Path | None:
    """Loss and learning rate per logged iteration, single-view val accuracy per epoch (Agg PNG)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    recs = read_json_stats(json_stats_path)
    train = sorted((r for r in recs if r.get("_type") == "train_iter"), key=lambda r: r["global_iter"])
    val = sorted((r for r in recs if r.get("_type") == "val_epoch"), key=lambda r: r["epoch"])
    if not train and not val:
        return None
    fig, axes = plt.subplots(1, 3, figsize=(15, 4))
    x = [r["global_iter"] for r in train]
    axes[0].plot(x, [r["loss"] for r in train])
    axes[0].set(title="training loss", xlabel="iteration", ylabel="loss")
    axes[1].plot(x, [r["lr"] for r in train])
    axes[1].set(title="learning rate", xlabel="iteration", ylabel="lr")
    if val:
        ep = [r["epoch"] for r in val]
        axes[2].plot(ep, [r["top1_acc"] for r in val], marker="o", label="top-1")
        axes[2].plot(ep, [r["top5_acc"] for r in val], marker="o", label="top-5")
        axes[2].legend()
    axes[2].set(title="val_single_view accuracy (%)", xlabel="epoch", ylabel="%")
    for ax in axes:
        ax.grid(alpha=0.3)
    fig.tight_layout()
    out_png = Path(out_png)
    fig.savefig(out_png, dpi=100)
    plt.close(fig)
    return out_png
