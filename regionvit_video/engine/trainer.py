"""Training with per-epoch single-view validation, checkpoints and exact resume.

:func:`train` runs ``SOLVER.MAX_EPOCH`` epochs of ``TRAIN.DATASET`` (one process per GPU under
torchrun; DDP), validates every ``TRAIN.EVAL_PERIOD`` epochs on the val list with one view per video
(logged as ``val_single_view``; this is *not* the paper's number, which is the multi-view test of
:mod:`regionvit_video.engine.tester`) and writes checkpoints to ``OUTPUT_DIR/checkpoints``. A val
video that fails to decode is not replaced: the accuracy is over the videos that decoded, the
``val_epoch`` stats count the others (``num_failed``) and ``OUTPUT_DIR/bad_videos.txt`` lists them.

Exact resume: with ``TRAIN.AUTO_RESUME`` a rerun of the same command continues from the newest
checkpoint that loads (a damaged newer one is skipped with a warning; one refused as unsafe stops the
run), mid-epoch included, and ends with the same weights as an uninterrupted run. This holds
because every source of randomness is either restored or a function of the position in the run:

- model, optimizer, GradScaler, EMA and the step count come from the checkpoint; the learning rate
  is recomputed from the step count;
- the python / numpy / torch / CUDA generator states (which drive mixup, cutmix and drop path)
  are saved per rank and restored;
- the data order and each clip's augmentation are functions of (RNG_SEED, epoch, index) (see
  :mod:`regionvit_video.data.loader`), and the loader restarts at the saved iteration;
- creating a DataLoader iterator and validating do not advance the global generators here
  (both run inside a saved-and-restored RNG scope), so where a run stops cannot change them.

Preemption (SIGTERM, SIGUSR1, SIGUSR2) loses no work: the iteration in progress finishes, the mid-epoch
checkpoint after it is written and :class:`~regionvit_video.engine.preemption.Preempted` ends the run;
the same command resumes it exactly (:mod:`regionvit_video.engine.preemption`). A checkpoint that cannot
be written (full disk, permission) stops every process with :class:`CheckpointWriteError`, earlier ones
intact.

No step waits for the device: losses and accuracy counts stay on it and are read back, all-reduced and
checked for NaN/Inf every LOG_PERIOD iterations, before every checkpoint and at the end of an epoch.

The steps, each a function a later feature can call: :func:`setup_training` (model, start weights,
loaders, optimizer, scaler), :func:`restore` (the resume point), :func:`build_ema` (after the DDP wrap),
:func:`train_one_epoch` (with :func:`train_step`), :func:`end_of_epoch` (stats, checkpoint, validation)
and :func:`save_training_checkpoint`, which writes the :class:`TrainState`. Logging, backend flags and
``OUTPUT_DIR/config.yaml`` are set up by the caller (:func:`regionvit_video.engine.build.setup_run`).
"""
from __future__ import annotations

import contextlib
import logging
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch
import torch.nn as nn
from fvcore.common.config import CfgNode
from tqdm import tqdm

from regionvit_video.engine import checkpoint as ckpt_lib
from regionvit_video.engine.build import (amp_enabled, autocast, build_model, inference_autocast, memory_mb,
                                          seed_everything)
from regionvit_video.engine.distributed import (DistInfo, all_gather_object, all_reduce_sum, broadcast_object,
                                                cluster_job_id, gloo_group, resolve_device, shared_file)
from regionvit_video.engine.log import StatsLogger, console_through_tqdm, plot_training_curves
from regionvit_video.engine.meters import MultiViewAggregator
from regionvit_video.engine.optim import build_optimizer, build_scheduler, build_train_loss, updates_per_epoch
from regionvit_video.engine.preemption import Preempted, PreemptionHandler
from regionvit_video.utils.io import CheckpointReadError, UnsafeCheckpointError, WriteError

logger = logging.getLogger(__name__)


class TrainingDivergedError(RuntimeError):
    """The loss became NaN or Inf."""


class TooManyBadVideosError(RuntimeError):
    """More than ``TRAIN.MAX_BAD_VIDEO_FRACTION`` of an epoch's samples failed to decode."""


class CheckpointWriteError(RuntimeError):
    """A training checkpoint could not be written (full disk, quota, permission); the run stops, earlier
    checkpoints are intact and auto-resume continues from the newest of them."""


@dataclass
class TrainResult:
    """What :func:`train` produced."""

    last_checkpoint: Path | None
    epochs_run: int
    val_stats: dict | None


@dataclass
class TrainState:
    """What a training checkpoint saves (besides the RNG states and meters), and where the run is."""

    model: nn.Module  # the bare model (not DDP-wrapped)
    optimizer: torch.optim.Optimizer
    scheduler: Any  # a timm Scheduler, stepped per optimizer update
    scaler: torch.amp.GradScaler | None
    ema: nn.Module | None  # timm's ModelEmaV3
    iters_per_epoch: int
    global_step: int = 0  # optimizer updates so far
    last_checkpoint: Path | None = None  # the newest checkpoint this run wrote or resumed from


@dataclass
class TrainRun:
    """Everything :func:`setup_training` builds once for a run."""

    cfg: CfgNode
    dist_info: DistInfo
    output_dir: Path
    state: TrainState
    loader: Any  # DataLoader with a ResumableSampler
    val_loader: Any | None
    batch_transform: Callable[[torch.Tensor], torch.Tensor] | None
    mixup: Callable | None
    criterion: nn.Module
    stats: StatsLogger
    ddp_model: nn.Module | None = None  # the model forward and backward run through (DDP-wrapped when distributed)
    preemption: PreemptionHandler | None = None  # asks the epoch loop to save and stop (engine.preemption)


@dataclass
class ResumePoint:
    """Where the epoch loop starts: 0-based ``epoch``, ``iteration`` within it, the partial epoch's meter and
    this process's RNG state (restored once that epoch's data iterator exists)."""

    epoch: int = 0
    iteration: int = 0
    meter: dict | None = None
    rng_state: dict | None = None


@contextlib.contextmanager
def preserved_rng():
    """Run a block without advancing the global python / numpy / torch / CUDA generators."""
    state = ckpt_lib.get_rng_state()
    try:
        yield
    finally:
        ckpt_lib.set_rng_state(state)


def _loader_iter(loader, epoch: int, start_iter: int):
    """An iterator over ``loader`` for ``epoch`` starting at batch ``start_iter`` (RNG untouched)."""
    loader.sampler.set_epoch(epoch)
    if start_iter:
        loader.sampler.set_start_iter(start_iter)
    with preserved_rng():  # DataLoader draws its worker base seed from the global torch RNG
        return iter(loader)


def _resume_point(cfg: CfgNode, out: Path, main: bool) -> tuple[Path | None, dict | None]:
    """The checkpoint auto-resume continues from, and its content (None, None: start fresh).

    Rank 0 picks the newest checkpoint that loads, skipping damaged ones with a warning
    (:func:`~regionvit_video.engine.checkpoint.load_newest_checkpoint`); an unsafe file, or no
    loadable file at all, stops every process with the same error (none is left waiting).
    """
    if not cfg.TRAIN.AUTO_RESUME:
        return None, None
    path, ck, error = None, None, None
    if main:
        try:
            path, ck = ckpt_lib.load_newest_checkpoint(out)
        except Exception as e:  # noqa: BLE001  (re-raised below, after the other processes are told)
            error = e
    failure = broadcast_object(None if error is None else (type(error).__name__, str(error)))
    if error is not None:
        raise error
    if failure is not None:
        known = {c.__name__: c for c in (CheckpointReadError, UnsafeCheckpointError, ckpt_lib.CheckpointFormatError)}
        raise known.get(failure[0], RuntimeError)(failure[1])
    path = shared_file(path)
    if path is not None and ck is None:
        ck = ckpt_lib.load_checkpoint(path)
    return path, ck


@torch.no_grad()
def validate(cfg: CfgNode, model: nn.Module, loader, device: torch.device, *, desc: str = "val",
             show_progress: bool = True, bad_videos_path: str | Path | None = None) -> dict:
    """Single-view accuracy and loss on ``loader`` (each video counted once across processes).

    Videos that fail to decode are not replaced: metrics are over the videos that decoded, and
    ``num_failed`` counts the others (one line each, ``path<TAB>reason``, is appended to
    ``bad_videos_path`` when given; pass it on one process only).
    """
    from regionvit_video.data.datasets import append_bad_video

    model.eval()
    agg = MultiViewAggregator(cfg.MODEL.NUM_CLASSES)
    with preserved_rng():
        it = iter(loader)
        for batch in tqdm(it, total=len(loader), desc=desc, disable=not show_progress, leave=False,
                          dynamic_ncols=True):
            agg.add_failed(batch.get("failed", []))
            if batch["video"] is None:  # every video of the batch failed to decode
                continue
            video = batch["video"].to(device, non_blocking=True)  # B, C, T, H, W
            with inference_autocast(cfg, device):
                logits = model(video)
            agg.add(batch["index"], logits.float().softmax(-1), batch["label"], batch["path"])
    agg = agg.gather()
    metrics = agg.metrics()
    metrics["num_failed"] = len(agg.failed)
    if bad_videos_path is not None:
        for i in sorted(agg.failed):
            try:
                append_bad_video(bad_videos_path, agg.failed[i]["path"], agg.failed[i]["error"])
            except OSError as e:
                logger.error("cannot append to %s: %s", bad_videos_path, e)
                break
    _, scores, labels = agg.arrays()
    if len(labels):
        p = torch.from_numpy(scores)[torch.arange(len(labels)), torch.from_numpy(labels)]
        metrics["loss"] = float(-(p.clamp_min(1e-12).log()).mean())
    return metrics


# ---------------------------------------------------------------------------------------------- #
# Setup and restore
# ---------------------------------------------------------------------------------------------- #
def _load_start_weights(cfg: CfgNode, model: nn.Module, resume_path: Path | None) -> None:
    """TRAIN.CHECKPOINT_FILE_PATH (fine-tuning), else MODEL.PRETRAINED (inflation), unless resuming."""
    from regionvit_video.models import load_pretrained

    if resume_path is not None:
        if cfg.TRAIN.CHECKPOINT_FILE_PATH or cfg.MODEL.PRETRAINED:
            logger.info("auto-resume from %s: TRAIN.CHECKPOINT_FILE_PATH / MODEL.PRETRAINED not loaded", resume_path)
        return
    if cfg.TRAIN.CHECKPOINT_FILE_PATH:
        logger.info("fine-tuning from %s (weights only)", cfg.TRAIN.CHECKPOINT_FILE_PATH)
        path = cfg.TRAIN.CHECKPOINT_FILE_PATH
    elif cfg.MODEL.PRETRAINED:
        logger.info("inflating image checkpoint %s (temporal init %s)", cfg.MODEL.PRETRAINED, cfg.MODEL.TEMPORAL_INIT)
        path = cfg.MODEL.PRETRAINED
    else:
        logger.warning("training from random initialisation (MODEL.PRETRAINED is empty)")
        return
    logger.info("pretrained weights: %s", load_pretrained(model, path, temporal_init=cfg.MODEL.TEMPORAL_INIT))


def _build_loaders(cfg: CfgNode, di: DistInfo, out: Path) -> tuple[Any, Any | None]:
    from regionvit_video.data import build_loader

    loader = build_loader(cfg, "train", bad_videos_path=str(out / "bad_videos.txt"), distributed=di.distributed)
    val_loader = None
    if cfg.TRAIN.EVAL_PERIOD > 0:  # read the val list now: a bad line stops the run before training
        with preserved_rng():
            val_loader = build_loader(cfg, "val", distributed=di.distributed)
    if len(loader) == 0:
        raise ValueError(f"the training list has fewer videos than TRAIN.BATCH_SIZE ({cfg.TRAIN.BATCH_SIZE}) x "
                         f"{di.world_size} processes: no full batch per epoch")
    return loader, val_loader


def _log_batch_setup(cfg: CfgNode, di: DistInfo, iters: int, upe: int) -> None:
    accum = cfg.TRAIN.GRAD_ACCUM_STEPS
    eff = cfg.TRAIN.BATCH_SIZE * di.world_size * accum
    if accum > 1:
        logger.warning("GRADIENT ACCUMULATION IS ON: %d iterations per optimizer step; effective batch %d = "
                       "%d clips x %d processes x %d (the optimizer line gives the lr used for it)",
                       accum, eff, cfg.TRAIN.BATCH_SIZE, di.world_size, accum)
    logger.info("%d iterations per epoch, %d optimizer steps per epoch, global batch %d, %d epochs",
                iters, upe, eff, cfg.SOLVER.MAX_EPOCH)


def setup_training(cfg: CfgNode, di: DistInfo, model: nn.Module, resume_path: Path | None) -> TrainRun:
    """The start weights of ``model`` (unless resuming), the loaders, optimizer, schedule, loss, scaler and EMA.

    ``model`` is :func:`~regionvit_video.engine.build.build_model`'s, built right after seeding (the order of
    random draws here is part of what makes runs reproducible).
    """
    from regionvit_video.data import build_batch_transform, build_mixup

    out = Path(cfg.OUTPUT_DIR)
    if not cfg.TRAIN.AUTO_RESUME and ckpt_lib.list_checkpoints(out):
        logger.warning("TRAIN.AUTO_RESUME is False: training starts over and overwrites the checkpoints in %s",
                       ckpt_lib.checkpoint_dir(out))
    _load_start_weights(cfg, model, resume_path)
    model.to(di.device)
    logger.info("model %s: %.2fM parameters", cfg.MODEL.ARCH, sum(p.numel() for p in model.parameters()) / 1e6)
    loader, val_loader = _build_loaders(cfg, di, out)
    iters = len(loader)
    upe = updates_per_epoch(iters, cfg.TRAIN.GRAD_ACCUM_STEPS)
    optimizer = build_optimizer(cfg, model, world_size=di.world_size)
    scheduler = build_scheduler(cfg, optimizer, upe, world_size=di.world_size)
    batch_transform = build_batch_transform(cfg)  # None when the workers already normalise
    mixup = build_mixup(cfg)
    criterion = build_train_loss(cfg, mixup is not None)
    use_amp = amp_enabled(di.device, cfg.TRAIN.MIXED_PRECISION)
    scaler = torch.amp.GradScaler("cuda") if use_amp and cfg.TRAIN.MIXED_PRECISION == "fp16" else None
    _log_batch_setup(cfg, di, iters, upe)
    state = TrainState(model, optimizer, scheduler, scaler, None, iters_per_epoch=iters)  # EMA: build_ema
    return TrainRun(cfg, di, out, state, loader, val_loader, batch_transform, mixup, criterion,
                    StatsLogger(out, enabled=di.is_main, job_id=cluster_job_id()))


def restore(run: TrainRun, path: Path | None, ck: dict | None) -> ResumePoint:
    """Load the checkpoint ``ck`` (from ``path``; None: a fresh start) into the run's state; the resume point."""
    state, di, iters = run.state, run.dist_info, run.state.iters_per_epoch
    point = ResumePoint()
    if path is not None:
        ckpt_lib.load_model_state(state.model, ck["model_state"], source=str(path))
        state.optimizer.load_state_dict(ck["optimizer_state"])
        if state.scaler is not None and ck.get("scaler_state"):
            state.scaler.load_state_dict(ck["scaler_state"])
        state.global_step, state.last_checkpoint = int(ck["global_step"]), path
        if ck["epoch_complete"]:
            point.epoch = int(ck["epoch"])
        else:
            point.epoch, point.iteration = int(ck["epoch"]) - 1, int(ck["iteration"])
            meters = ck.get("meters") or []
            point.meter = meters[di.rank] if len(meters) == di.world_size else None
        if int(ck.get("iters_per_epoch", iters)) != iters:
            logger.warning("the checkpoint was written with %s iterations per epoch, this run has %d (data list, "
                           "batch size or process count changed): the resume is not exact",
                           ck.get("iters_per_epoch"), iters)
            point.iteration = min(point.iteration, iters)
        states = ck.get("rng_states") or []
        if len(states) == di.world_size:
            point.rng_state = states[di.rank]
        else:
            logger.warning("checkpoint has RNG states of %d processes, this run has %d: RNG not restored exactly",
                           len(states), di.world_size)
        logger.info("resumed from %s: epoch %d, iteration %d of %d, optimizer step %d", path, point.epoch + 1,
                    point.iteration, iters, state.global_step)
    state.scheduler.step_update(state.global_step)
    if point.epoch >= run.cfg.SOLVER.MAX_EPOCH:
        logger.info("training already finished (%d epochs) according to %s", run.cfg.SOLVER.MAX_EPOCH, path)
    return point


def build_ema(cfg: CfgNode, model: nn.Module, ema_state: dict | None, source: Path | None) -> nn.Module | None:
    """The EMA of ``model``'s weights (MODEL_EMA), or None when off.

    Built once the weights are final on every rank: after the checkpoint is restored and after the DDP
    wrap, whose constructor broadcasts rank 0's weights (each rank seeds with RNG_SEED + rank, so fresh
    temporal weights or a re-initialised head differ between ranks before it). ``ema_state`` (from the
    checkpoint resumed) is then loaded; without one the EMA starts from the resumed weights.
    """
    if not cfg.MODEL_EMA.ENABLE:
        return None
    from timm.utils import ModelEmaV3

    ema = ModelEmaV3(model, decay=cfg.MODEL_EMA.DECAY)
    if ema_state:
        ema.module.load_state_dict(ema_state)
    elif source is not None:
        logger.warning("%s has no EMA state: the EMA restarts from its weights", source)
    return ema


# ---------------------------------------------------------------------------------------------- #
# Checkpoints
# ---------------------------------------------------------------------------------------------- #
def save_training_checkpoint(state: TrainState, *, cfg: CfgNode, dist_info: DistInfo, output_dir: Path, epoch: int,
                             iteration: int | None, meter: dict | None) -> Path | None:
    """Checkpoint after ``iteration`` iterations of 1-based ``epoch`` (None: the epoch is complete).

    Collective: every process calls it (it gathers the per-rank RNG states and meters); rank 0 writes
    ``OUTPUT_DIR/checkpoints/<name>`` atomically, prunes to TRAIN.CHECKPOINT_KEEP and records the path in
    ``state.last_checkpoint``. Returns the path on rank 0, None elsewhere.

    Raises:
        TrainingDivergedError: a weight is NaN/Inf (never saved as a "good" checkpoint; same weights on
            every rank, so every rank raises here, before any collective).
        CheckpointWriteError: on every rank, when rank 0 could not write the file (full disk, quota,
            permission): the partial file is removed and the earlier checkpoints are intact.
    """
    iters = state.iters_per_epoch
    bad = [n for n, p in state.model.named_parameters() if not torch.isfinite(p).all()]
    if bad:
        raise TrainingDivergedError(
            f"weights became non-finite ({len(bad)} tensors, e.g. {bad[0]}) by epoch {epoch}, iteration "
            f"{iters if iteration is None else iteration}/{iters} (optimizer step {state.global_step}); stopping "
            f"without saving. Last good checkpoint: {state.last_checkpoint or 'none written yet'}. Lower "
            "SOLVER.BASE_LR or set SOLVER.CLIP_GRAD_NORM")
    gathered = all_gather_object((ckpt_lib.get_rng_state(), meter))
    path, error = None, None
    if dist_info.is_main:
        path = ckpt_lib.checkpoint_dir(output_dir) / ckpt_lib.checkpoint_name(epoch, iteration)
        try:
            _write(state, cfg, dist_info, path, epoch, iteration, gathered, meter is not None)
        except WriteError as e:  # full disk, quota, permission: told to every rank below, none left waiting
            error = e
    failure = broadcast_object(None if error is None else str(error))  # also the barrier after the write
    if failure is not None:
        raise CheckpointWriteError(
            f"{failure}. Training stopped. The last good checkpoint is {state.last_checkpoint or 'none yet'}; "
            "free space (or fix the permission) and run the same command: auto-resume continues from it")
    if dist_info.is_main:
        removed = ckpt_lib.prune_checkpoints(output_dir, cfg.TRAIN.CHECKPOINT_KEEP)
        logger.info("saved %s%s", path, f" (removed {len(removed)} old)" if removed else "")
        state.last_checkpoint = path
    return path


def _write(state: TrainState, cfg: CfgNode, dist_info: DistInfo, path: Path, epoch: int, iteration: int | None,
           gathered: list, with_meters: bool) -> None:
    iters = state.iters_per_epoch
    ckpt_lib.save_checkpoint(
        path,
        model_state=state.model.state_dict(),
        optimizer_state=state.optimizer.state_dict(),
        scheduler_state=state.scheduler.state_dict(),
        scaler_state=state.scaler.state_dict() if state.scaler is not None else None,
        ema_state=state.ema.module.state_dict() if state.ema is not None else None,
        rng_states=[g[0] for g in gathered],
        epoch=epoch,
        iteration=iters if iteration is None else iteration,
        epoch_complete=iteration is None,
        global_step=state.global_step,
        iters_per_epoch=iters,
        world_size=dist_info.world_size,
        meters=[g[1] for g in gathered] if with_meters else None,
        cfg=cfg.dump(),
    )


def _save(run: TrainRun, epoch: int, iteration: int | None, meter: dict | None) -> Path | None:
    return save_training_checkpoint(run.state, cfg=run.cfg, dist_info=run.dist_info, output_dir=run.output_dir,
                                    epoch=epoch, iteration=iteration, meter=meter)


# ---------------------------------------------------------------------------------------------- #
# One iteration, one epoch
# ---------------------------------------------------------------------------------------------- #
def _optimizer_step(run: TrainRun) -> None:
    """Clip, step (through the GradScaler with fp16), zero the gradients, advance the schedule and the EMA."""
    state, cfg = run.state, run.cfg
    if cfg.SOLVER.CLIP_GRAD_NORM > 0:
        if state.scaler is not None:
            state.scaler.unscale_(state.optimizer)
        nn.utils.clip_grad_norm_(state.model.parameters(), cfg.SOLVER.CLIP_GRAD_NORM)
    if state.scaler is not None:
        state.scaler.step(state.optimizer)
        state.scaler.update()
    else:
        state.optimizer.step()
    state.optimizer.zero_grad(set_to_none=True)
    state.global_step += 1
    state.scheduler.step_update(state.global_step)
    if state.ema is not None:
        state.ema.update(state.model, step=state.global_step)


def train_step(run: TrainRun, batch: dict, epoch: int, it: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Forward and backward of iteration ``it`` of ``epoch``, and the optimizer step that ends its gradient
    accumulation group.

    Returns this process's loss and correct top-1 count (0 with mixup) as device tensors: nothing here waits
    for the device. They are read back, checked and all-reduced once per log period (:func:`_flush`).
    """
    cfg, di, state, iters = run.cfg, run.dist_info, run.state, run.state.iters_per_epoch
    video = batch["video"].to(di.device, non_blocking=True)
    if run.batch_transform is not None:
        video = run.batch_transform(video)  # uint8 -> normalised, erased float; B, C, T, H, W
    label = target = batch["label"].to(di.device, non_blocking=True)
    if run.mixup is not None:
        video, target = run.mixup(video, label)
    accum = cfg.TRAIN.GRAD_ACCUM_STEPS
    group_start = (it // accum) * accum
    group_len = min(accum, iters - group_start)
    step_now = it + 1 == group_start + group_len
    sync = run.ddp_model.no_sync() if (di.distributed and not step_now) else contextlib.nullcontext()
    with sync:
        with autocast(di.device, cfg.TRAIN.MIXED_PRECISION):
            logits = run.ddp_model(video)
        loss = run.criterion(logits.float(), target)
        scaled = loss / group_len
        (state.scaler.scale(scaled) if state.scaler is not None else scaled).backward()
    if step_now:
        _optimizer_step(run)
    correct = (logits.detach().argmax(-1) == label).sum() if run.mixup is None else torch.zeros((), device=di.device)
    return loss.detach(), correct


@dataclass
class _Pending:
    """An iteration whose loss has not been read back yet."""

    it: int
    global_step: int  # optimizer updates before it
    samples: int
    loss: torch.Tensor  # this process's loss (device)
    correct: torch.Tensor  # this process's correct top-1 count (device)


@dataclass
class _Window:
    """Iterations not read back yet, running sums since the last log line, and the epoch's timing."""

    start_iter: int
    pending: list[_Pending] = field(default_factory=list)
    loss_sum: float = 0.0
    samples: int = 0
    correct: int = 0
    data_time: float = 0.0  # since the epoch (or the resumed part of it) started
    t0: float = field(default_factory=time.perf_counter)  # the epoch's start
    t_last: float = field(default_factory=time.perf_counter)  # the last log line


def _flush(run: TrainRun, epoch: int, w: _Window, meter: dict) -> None:
    """Read back the pending iterations' losses: one all-reduce and one wait for the device for all of them.

    Each loss becomes the mean over processes, as every process sees it; a NaN/Inf one stops the run on every
    process, naming the first such iteration. Called every LOG_PERIOD iterations, before every checkpoint and
    at the end of the epoch, so no checkpoint follows a non-finite loss unnoticed.
    """
    if not w.pending:
        return
    di, state, iters = run.dist_info, run.state, run.state.iters_per_epoch
    losses = (all_reduce_sum(torch.stack([p.loss.float() for p in w.pending])) / di.world_size).tolist()
    correct = torch.stack([p.correct for p in w.pending]).tolist()
    for p, loss, c in zip(w.pending, losses, correct):
        if not math.isfinite(loss):
            raise TrainingDivergedError(
                f"loss is {loss} at epoch {epoch + 1}, iteration {p.it + 1}/{iters} (global iteration "
                f"{epoch * iters + p.it + 1}, optimizer step {p.global_step}); stopping. Last good checkpoint: "
                f"{state.last_checkpoint or 'none written yet'}. Lower SOLVER.BASE_LR, set SOLVER.CLIP_GRAD_NORM, "
                "or use TRAIN.MIXED_PRECISION bf16 instead of fp16")
        meter["loss_sum"] += loss * p.samples
        meter["correct"] += int(c)
        w.loss_sum, w.correct = w.loss_sum + loss * p.samples, w.correct + int(c)
    w.pending.clear()


def _log_iteration(run: TrainRun, epoch: int, it: int, w: _Window, bar) -> None:
    cfg, iters, max_epoch = run.cfg, run.state.iters_per_epoch, run.cfg.SOLVER.MAX_EPOCH
    red = all_reduce_sum(torch.tensor([w.correct, w.samples], dtype=torch.float64))
    now = time.perf_counter()
    n_it = max(it + 1 - w.start_iter, 1)
    dt = (now - w.t0) / n_it
    lr = run.state.optimizer.param_groups[0]["lr"]
    gi = epoch * iters + it + 1
    rec = {"_type": "train_iter", "epoch": f"{epoch + 1}/{max_epoch}", "iter": f"{it + 1}/{iters}",
           "global_iter": gi, "loss": w.loss_sum / max(w.samples, 1), "lr": lr, "dt": dt, "dt_data": w.data_time / n_it,
           "eta": _fmt_eta(dt * ((max_epoch - epoch) * iters - it - 1)),
           "samples_per_s": float(red[1]) / max(now - w.t_last, 1e-9), "mem_mb": memory_mb(run.dist_info.device)}
    if run.mixup is None:
        rec["top1_err"] = 100.0 * (1 - float(red[0]) / max(float(red[1]), 1))
    run.stats.log(rec, step=gi, tb_prefix="train")
    bar.set_postfix(loss=f"{rec['loss']:.4f}", lr=f"{lr:.2e}")
    w.loss_sum, w.samples, w.correct, w.t_last = 0.0, 0, 0, now


def train_one_epoch(run: TrainRun, epoch: int, resume: ResumePoint | None = None,
                    iteration_hook: Callable[[int, int, int], None] | None = None) -> tuple[dict, float]:
    """Iterations of 0-based ``epoch`` (from ``resume.iteration`` when resuming into it), with the mid-epoch
    checkpoints; returns the epoch's meter (local sums of loss * samples, samples, decode failures, correct
    top-1) and its seconds.

    Raises:
        Preempted: a preemption signal reached a process (``run.preemption``): every process finished the
            iteration it was in, and the mid-epoch checkpoint after it was written.
    """
    cfg, iters = run.cfg, run.state.iters_per_epoch
    start = resume.iteration if resume is not None else 0
    data_iter = _loader_iter(run.loader, epoch, start)
    if resume is not None and resume.rng_state is not None:
        ckpt_lib.set_rng_state(resume.rng_state)
    run.ddp_model.train()
    meter = {"loss_sum": 0.0, "samples": 0, "failures": 0, "correct": 0}
    if resume is not None and resume.meter is not None and start:
        meter.update(resume.meter)
    w = _Window(start)
    bar = tqdm(total=iters, initial=start, desc=f"epoch {epoch + 1}/{cfg.SOLVER.MAX_EPOCH}",
               disable=not run.dist_info.is_main, dynamic_ncols=True, leave=False)
    t_data = time.perf_counter()
    for it, batch in enumerate(data_iter, start=start):
        w.data_time += time.perf_counter() - t_data
        global_step = run.state.global_step
        loss, correct = train_step(run, batch, epoch, it)
        bsz = len(batch["label"])
        w.pending.append(_Pending(it, global_step, bsz, loss, correct))
        meter["samples"] += bsz
        meter["failures"] += int(batch["num_failures"].sum())
        w.samples += bsz
        bar.update(1)
        if (it + 1) % cfg.LOG_PERIOD == 0 or it + 1 == iters:
            _flush(run, epoch, w, meter)
            _log_iteration(run, epoch, it, w, bar)
            _check_bad_videos(cfg, meter, epoch, iters, run.dist_info, final=False, out=run.output_dir)
        period = cfg.TRAIN.CHECKPOINT_ITER_PERIOD
        saved = period > 0 and (it + 1) % period == 0 and it + 1 < iters
        if saved:
            _flush(run, epoch, w, meter)
            _save(run, epoch + 1, it + 1, dict(meter))
        if iteration_hook is not None:
            iteration_hook(epoch, it, epoch * iters + it + 1)
        if run.preemption is not None and run.preemption.agreed():
            _flush(run, epoch, w, meter)
            path = run.state.last_checkpoint if saved else _save(run, epoch + 1, it + 1, dict(meter))
            bar.close()
            raise Preempted(run.preemption.signal_name, str(path) if path else None)
        t_data = time.perf_counter()
    bar.close()
    _flush(run, epoch, w, meter)
    return meter, time.perf_counter() - w.t0


# ---------------------------------------------------------------------------------------------- #
# End of epoch
# ---------------------------------------------------------------------------------------------- #
def _validate_epoch(run: TrainRun, epoch: int) -> dict:
    """The single-view validation after 0-based ``epoch``, logged (with the EMA weights' when on)."""
    di, out, state = run.dist_info, run.output_dir, run.state
    # The bare model: same weights on every rank, and no DDP collectives in its forward.
    val_stats = validate(run.cfg, state.model, run.val_loader, di.device, desc=f"val {epoch + 1}",
                         show_progress=di.is_main, bad_videos_path=out / "bad_videos.txt" if di.is_main else None)
    vrec = {"_type": "val_epoch", "split": "val_single_view", "epoch": epoch + 1, **val_stats}
    if state.ema is not None:
        ema_stats = validate(run.cfg, state.ema.module, run.val_loader, di.device, desc="val ema",
                             show_progress=di.is_main)
        vrec.update({f"ema_{k}": v for k, v in ema_stats.items() if k not in ("num_videos", "num_failed")})
    run.stats.log(vrec, step=epoch + 1, tb_prefix="val_single_view")
    logger.info("val_single_view after epoch %d: top-1 %.2f%%, top-5 %.2f%% on %d videos "
                "(one view per video; the multi-view test gives the reportable number)%s",
                epoch + 1, val_stats["top1_acc"], val_stats["top5_acc"], val_stats["num_videos"],
                f"; {val_stats['num_failed']} failed to decode (listed in {out / 'bad_videos.txt'})"
                if val_stats["num_failed"] else "")
    return val_stats


def end_of_epoch(run: TrainRun, epoch: int, meter: dict, seconds: float) -> dict | None:
    """After 0-based ``epoch``: the reduced epoch stats, the bad-video check, the epoch checkpoint (every
    TRAIN.CHECKPOINT_PERIOD epochs and the last) and the validation (every TRAIN.EVAL_PERIOD epochs and the
    last). Returns the validation stats when it ran."""
    cfg, di, max_epoch = run.cfg, run.dist_info, run.cfg.SOLVER.MAX_EPOCH
    iters = run.state.iters_per_epoch
    red = all_reduce_sum(torch.tensor([meter["loss_sum"], meter["samples"], meter["failures"], meter["correct"]],
                                      dtype=torch.float64)).tolist()
    rec = {"_type": "train_epoch", "epoch": f"{epoch + 1}/{max_epoch}", "epoch_num": epoch + 1,
           "global_iter": (epoch + 1) * iters, "loss": red[0] / max(red[1], 1),
           "lr": run.state.optimizer.param_groups[0]["lr"], "num_samples": int(red[1]),
           "decode_failures": int(red[2]), "time_s": seconds, "mem_mb": memory_mb(di.device)}
    if run.mixup is None:
        rec["top1_err"] = 100.0 * (1 - red[3] / max(red[1], 1))
    run.stats.log(rec, step=epoch + 1, tb_prefix="train_epoch")
    _check_bad_videos(cfg, meter, epoch, iters, di, final=True, out=run.output_dir)
    if (epoch + 1) % cfg.TRAIN.CHECKPOINT_PERIOD == 0 or epoch + 1 == max_epoch:
        _save(run, epoch + 1, None, None)
    ev = cfg.TRAIN.EVAL_PERIOD
    if ev > 0 and ((epoch + 1) % ev == 0 or epoch + 1 == max_epoch):
        return _validate_epoch(run, epoch)
    return None


# ---------------------------------------------------------------------------------------------- #
# The run
# ---------------------------------------------------------------------------------------------- #
def train(
    cfg: CfgNode,
    dist_info: DistInfo | None = None,
    *,
    iteration_hook: Callable[[int, int, int], None] | None = None,
) -> TrainResult:
    """Train ``cfg.MODEL.ARCH`` as configured; see the module docstring.

    Args:
        cfg: a validated config (:func:`regionvit_video.config.load.load_config`).
        dist_info: this process's place in the job (:func:`~regionvit_video.engine.distributed.init_distributed`);
            None: a single process on ``cfg.DEVICE``.
        iteration_hook: called as ``hook(epoch, iteration, global_iteration)`` after every
            iteration, once its checkpoint (if any) is written (fault injection in tests, profiling).

    Raises:
        TrainingDivergedError: the loss became NaN/Inf (the last good checkpoint is kept).
        Preempted: SIGTERM, SIGUSR1 or SIGUSR2 arrived: the mid-epoch checkpoint is written, and the same
            command resumes from it (:mod:`regionvit_video.engine.preemption`).
        CheckpointWriteError: a checkpoint could not be written (full disk, permission); earlier ones are intact.
        TooManyBadVideosError: too many videos of an epoch failed to decode.
        DecodeTimeout: a DataLoader worker was ended by the decode hard bound (the video is named and
            appended to ``OUTPUT_DIR/bad_videos.txt``; see :mod:`regionvit_video.data.decoder`).
    """
    from regionvit_video.data import raise_hung_decode

    di = dist_info or DistInfo(device=resolve_device(cfg.DEVICE))
    out = Path(cfg.OUTPUT_DIR)
    if di.is_main:
        out.mkdir(parents=True, exist_ok=True)
        # nothing of this run writes checkpoints yet: a .tmp file is left over from a killed write
        ckpt_lib.remove_stale_temporary_files(out)
    seed_everything(cfg.RNG_SEED + di.rank)
    model = build_model(cfg)
    resume_path, resume_ck = _resume_point(cfg, out, di.is_main)
    run = setup_training(cfg, di, model, resume_path)
    point = restore(run, resume_path, resume_ck)
    run.ddp_model = model
    if di.distributed:  # DDP's constructor broadcasts rank 0's weights
        run.ddp_model = nn.parallel.DistributedDataParallel(
            model, device_ids=[di.device.index] if di.device.type == "cuda" else None)
    run.state.ema = build_ema(cfg, model, (resume_ck or {}).get("ema_state"), resume_path)
    del resume_ck
    epochs_run, val_stats = 0, None
    try:
        with (console_through_tqdm() if di.is_main else contextlib.nullcontext(),  # log lines above the bar
              PreemptionHandler(gloo_group()) as run.preemption):  # a CPU flag, agreed on every iteration
            for epoch in range(point.epoch, cfg.SOLVER.MAX_EPOCH):
                meter, seconds = train_one_epoch(run, epoch, point if epoch == point.epoch else None, iteration_hook)
                epochs_run += 1
                val_stats = end_of_epoch(run, epoch, meter, seconds) or val_stats
    except RuntimeError as e:  # a DataLoader worker ended by the decode hard bound: name its video
        raise_hung_decode(e, out / "bad_videos.txt")
        raise
    finally:
        run.stats.close()
    if di.is_main:
        png = plot_training_curves(out / "json_stats.log", out / "training_curves.png")
        if png:
            logger.info("training curves: %s", png)
    # Every rank reports rank 0's checkpoint path.
    last = all_gather_object(str(run.state.last_checkpoint) if run.state.last_checkpoint else None)[0]
    return TrainResult(Path(last) if last else None, epochs_run, val_stats)


def _check_bad_videos(cfg: CfgNode, meter: dict, epoch: int, iters: int, di: DistInfo, *, final: bool,
                      out: Path) -> None:
    """Stop when decode failures exceed TRAIN.MAX_BAD_VIDEO_FRACTION of the epoch's samples."""
    failures, samples = all_reduce_sum(torch.tensor([meter["failures"], meter["samples"]],
                                                    dtype=torch.float64)).tolist()
    epoch_samples = iters * cfg.TRAIN.BATCH_SIZE * di.world_size
    limit = cfg.TRAIN.MAX_BAD_VIDEO_FRACTION
    # Failed attempts over all attempts; once over the limit for the whole epoch it cannot recover.
    denom = (samples if final else epoch_samples) + failures
    if denom > 0 and failures / denom > limit:
        raise TooManyBadVideosError(
            f"{int(failures)} of {int(denom)} video reads failed to decode in epoch {epoch + 1} "
            f"({100 * failures / denom:.1f}% > TRAIN.MAX_BAD_VIDEO_FRACTION {100 * limit:.1f}%); the failed "
            f"files and reasons are listed in {out / 'bad_videos.txt'}. Fix or remove them from the list "
            "(re-encode with ffmpeg), or raise TRAIN.MAX_BAD_VIDEO_FRACTION")


def _fmt_eta(seconds: float) -> str:
    seconds = int(max(seconds, 0))
    return f"{seconds // 3600:d}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


__all__ = ["CheckpointWriteError", "ResumePoint", "TooManyBadVideosError", "TrainResult", "TrainRun", "TrainState",
           "TrainingDivergedError", "build_ema", "end_of_epoch", "preserved_rng", "restore", "save_training_checkpoint",
           "setup_training", "train", "train_one_epoch", "train_step", "validate"]
