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
"""
from __future__ import annotations

import contextlib
import logging
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch
import torch.nn as nn
from fvcore.common.config import CfgNode
from tqdm import tqdm

from regionvit_video.config.load import save_config
from regionvit_video.engine import checkpoint as ckpt_lib
from regionvit_video.engine.build import amp_enabled, autocast, build_model, memory_mb, seed_everything
from regionvit_video.engine.distributed import (DistInfo, all_gather_object, all_reduce_sum, barrier,
                                                broadcast_object, resolve_device, shared_file)
from regionvit_video.engine.log import StatsLogger, console_through_tqdm, plot_training_curves, setup_logging
from regionvit_video.engine.meters import MultiViewAggregator
from regionvit_video.engine.optim import build_optimizer, build_scheduler, build_train_loss, updates_per_epoch
from regionvit_video.utils.io import CheckpointReadError, UnsafeCheckpointError

logger = logging.getLogger(__name__)


class TrainingDivergedError(RuntimeError):
    """The loss became NaN or Inf."""


class TooManyBadVideosError(RuntimeError):
    """More than ``TRAIN.MAX_BAD_VIDEO_FRACTION`` of an epoch's samples failed to decode."""


@dataclass
class TrainResult:
    """What :func:`train` produced."""

    last_checkpoint: Path | None
    epochs_run: int
    val_stats: dict | None


@contextlib.contextmanager
def preserved_rng():
    """Run a block without advancing the global python / numpy / torch / CUDA generators."""
    state = ckpt_lib.get_rng_state()
    try:
        yield
    finally:
        ckpt_lib.set_rng_state(state)


def _log_load_report(report) -> None:
    logger.info("pretrained weights: %s", report)


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
            with autocast(device, cfg.TRAIN.MIXED_PRECISION):
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
        TooManyBadVideosError: too many videos of an epoch failed to decode.
        DecodeTimeout: a DataLoader worker was ended by the decode hard bound (the video is named and
            appended to ``OUTPUT_DIR/bad_videos.txt``; see :mod:`regionvit_video.data.decoder`).
    """
    from regionvit_video.data import build_batch_transform, build_loader, build_mixup, raise_hung_decode
    from regionvit_video.models import load_pretrained

    di = dist_info or DistInfo(device=resolve_device(cfg.DEVICE))
    device, main = di.device, di.is_main
    out = Path(cfg.OUTPUT_DIR)
    setup_logging(out if main else None, rank=di.rank)
    if main:
        out.mkdir(parents=True, exist_ok=True)
        save_config(cfg, out)
        logger.info("config written to %s", out / "config.yaml")
    seed_everything(cfg.RNG_SEED + di.rank)

    # Model and where it starts.
    model = build_model(cfg)
    if main:  # nothing of this run writes checkpoints yet: a .tmp file is left over from a killed write
        ckpt_lib.remove_stale_temporary_files(out)
    resume_path, resume_ck = _resume_point(cfg, out, main)
    if resume_path is not None and (cfg.TRAIN.CHECKPOINT_FILE_PATH or cfg.MODEL.PRETRAINED):
        logger.info("auto-resume from %s: TRAIN.CHECKPOINT_FILE_PATH / MODEL.PRETRAINED not loaded", resume_path)
    if not cfg.TRAIN.AUTO_RESUME and ckpt_lib.list_checkpoints(out):
        logger.warning("TRAIN.AUTO_RESUME is False: training starts over and overwrites the checkpoints in %s",
                       ckpt_lib.checkpoint_dir(out))
    if resume_path is None:
        if cfg.TRAIN.CHECKPOINT_FILE_PATH:
            logger.info("fine-tuning from %s (weights only)", cfg.TRAIN.CHECKPOINT_FILE_PATH)
            _log_load_report(load_pretrained(model, cfg.TRAIN.CHECKPOINT_FILE_PATH,
                                             temporal_init=cfg.MODEL.TEMPORAL_INIT))
        elif cfg.MODEL.PRETRAINED:
            logger.info("inflating image checkpoint %s (temporal init %s)", cfg.MODEL.PRETRAINED,
                        cfg.MODEL.TEMPORAL_INIT)
            _log_load_report(load_pretrained(model, cfg.MODEL.PRETRAINED, temporal_init=cfg.MODEL.TEMPORAL_INIT))
        else:
            logger.warning("training from random initialisation (MODEL.PRETRAINED is empty)")
    model.to(device)
    n_params = sum(p.numel() for p in model.parameters())
    logger.info("model %s: %.2fM parameters", cfg.MODEL.ARCH, n_params / 1e6)

    # Data, optimisation.
    loader = build_loader(cfg, "train", bad_videos_path=str(out / "bad_videos.txt"), distributed=di.distributed)
    val_loader = None
    if cfg.TRAIN.EVAL_PERIOD > 0:  # read the val list now: a bad line stops the run before training
        with preserved_rng():
            val_loader = build_loader(cfg, "val", distributed=di.distributed)
    iters = len(loader)
    if iters == 0:
        raise ValueError(f"the training list has fewer videos than TRAIN.BATCH_SIZE ({cfg.TRAIN.BATCH_SIZE}) x "
                         f"{di.world_size} processes: no full batch per epoch")
    accum = cfg.TRAIN.GRAD_ACCUM_STEPS
    upe = updates_per_epoch(iters, accum)
    optimizer = build_optimizer(cfg, model)
    scheduler = build_scheduler(cfg, optimizer, upe)
    batch_transform = build_batch_transform(cfg)  # None when the workers already normalise
    mixup = build_mixup(cfg)
    criterion = build_train_loss(cfg, mixup is not None)
    use_amp = amp_enabled(device, cfg.TRAIN.MIXED_PRECISION)
    scaler = torch.amp.GradScaler("cuda") if use_amp and cfg.TRAIN.MIXED_PRECISION == "fp16" else None
    ema = None
    if cfg.MODEL_EMA.ENABLE:
        from timm.utils import ModelEmaV3

        ema = ModelEmaV3(model, decay=cfg.MODEL_EMA.DECAY)
    eff = cfg.TRAIN.BATCH_SIZE * di.world_size * accum
    if accum > 1:
        logger.warning("GRADIENT ACCUMULATION IS ON: %d iterations per optimizer step; effective batch %d = "
                       "%d clips x %d processes x %d (SOLVER.BASE_LR %g applies to this batch)",
                       accum, eff, cfg.TRAIN.BATCH_SIZE, di.world_size, accum, cfg.SOLVER.BASE_LR)
    logger.info("%d iterations per epoch, %d optimizer steps per epoch, global batch %d, %d epochs",
                iters, upe, eff, cfg.SOLVER.MAX_EPOCH)

    # Resume.
    start_epoch, start_iter, global_step, meter0 = 0, 0, 0, None
    rng_state = None
    if resume_path is not None:
        ck, resume_ck = resume_ck, None
        ckpt_lib.load_model_state(model, ck["model_state"], source=str(resume_path))
        optimizer.load_state_dict(ck["optimizer_state"])
        if scaler is not None and ck.get("scaler_state"):
            scaler.load_state_dict(ck["scaler_state"])
        if ema is not None:
            if ck.get("ema_state"):
                ema.module.load_state_dict(ck["ema_state"])
            else:
                logger.warning("%s has no EMA state: EMA restarts from the current weights", resume_path)
        global_step = int(ck["global_step"])
        if ck["epoch_complete"]:
            start_epoch, start_iter = int(ck["epoch"]), 0
        else:
            start_epoch, start_iter = int(ck["epoch"]) - 1, int(ck["iteration"])
            meters = ck.get("meters") or []
            meter0 = meters[di.rank] if len(meters) == di.world_size else None
        if int(ck.get("iters_per_epoch", iters)) != iters:
            logger.warning("the checkpoint was written with %s iterations per epoch, this run has %d (data list, "
                           "batch size or process count changed): the resume is not exact",
                           ck.get("iters_per_epoch"), iters)
            start_iter = min(start_iter, iters)
        states = ck.get("rng_states") or []
        if len(states) == di.world_size:
            rng_state = states[di.rank]
        else:
            logger.warning("checkpoint has RNG states of %d processes, this run has %d: RNG not restored exactly",
                           len(states), di.world_size)
        logger.info("resumed from %s: epoch %d, iteration %d of %d, optimizer step %d", resume_path,
                    start_epoch + 1, start_iter, iters, global_step)
        del ck
    scheduler.step_update(global_step)

    ddp_model: nn.Module = model
    if di.distributed:
        ddp_model = nn.parallel.DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None)

    stats = StatsLogger(out, enabled=main)
    last_ckpt = resume_path
    val_stats = None
    max_epoch = cfg.SOLVER.MAX_EPOCH
    if start_epoch >= max_epoch:
        logger.info("training already finished (%d epochs) according to %s", max_epoch, resume_path)
    epochs_run = 0

    def save(epoch1: int, iteration: int | None, meter: dict | None) -> Path | None:
        """Checkpoint after ``iteration`` iterations of 1-based ``epoch1`` (None: epoch complete)."""
        # A finite loss can still take a step to NaN/Inf weights: never save those as a "good" checkpoint.
        # (Same weights on every rank, so every rank raises here, before any collective.)
        bad = [n for n, p in model.named_parameters() if not torch.isfinite(p).all()]
        if bad:
            raise TrainingDivergedError(
                f"weights became non-finite ({len(bad)} tensors, e.g. {bad[0]}) by epoch {epoch1}, iteration "
                f"{iters if iteration is None else iteration}/{iters} (optimizer step {global_step}); stopping "
                f"without saving. Last good checkpoint: {last_ckpt or 'none written yet'}. Lower SOLVER.BASE_LR "
                "or set SOLVER.CLIP_GRAD_NORM")
        # Collective (every rank calls it): per-rank RNG states and partial-epoch meters.
        gathered = all_gather_object((ckpt_lib.get_rng_state(), meter))
        rng_all = [g[0] for g in gathered]
        meters_all = [g[1] for g in gathered]
        path = None
        if main:
            path = ckpt_lib.checkpoint_dir(out) / ckpt_lib.checkpoint_name(epoch1, iteration)
            ckpt_lib.save_checkpoint(
                path,
                model_state=model.state_dict(),
                optimizer_state=optimizer.state_dict(),
                scheduler_state=scheduler.state_dict(),
                scaler_state=scaler.state_dict() if scaler is not None else None,
                ema_state=ema.module.state_dict() if ema is not None else None,
                rng_states=rng_all,
                epoch=epoch1,
                iteration=iters if iteration is None else iteration,
                epoch_complete=iteration is None,
                global_step=global_step,
                iters_per_epoch=iters,
                world_size=di.world_size,
                meters=meters_all if meter is not None else None,
                cfg=cfg.dump(),
            )
            removed = ckpt_lib.prune_checkpoints(out, cfg.TRAIN.CHECKPOINT_KEEP)
            logger.info("saved %s%s", path, f" (removed {len(removed)} old)" if removed else "")
        barrier()
        return path

    console = console_through_tqdm() if main else contextlib.nullcontext()
    console.__enter__()  # log lines printed above the progress bar, not through it
    try:
        for epoch in range(start_epoch, max_epoch):
            si = start_iter if epoch == start_epoch else 0
            data_iter = _loader_iter(loader, epoch, si)
            if rng_state is not None:
                ckpt_lib.set_rng_state(rng_state)
                rng_state = None
            ddp_model.train()
            # Running sums of this epoch: loss * samples, samples, decode failures, correct top-1.
            meter = {"loss_sum": 0.0, "samples": 0, "failures": 0, "correct": 0}
            if meter0 is not None and si:
                meter.update(meter0)
            meter0 = None
            lr = optimizer.param_groups[0]["lr"]
            window = {"loss_sum": 0.0, "samples": 0, "correct": 0}
            t_last, data_time, t0 = time.perf_counter(), 0.0, time.perf_counter()
            bar = tqdm(total=iters, initial=si, desc=f"epoch {epoch + 1}/{max_epoch}", disable=not main,
                       dynamic_ncols=True, leave=False)
            t_data = time.perf_counter()
            for it, batch in enumerate(data_iter, start=si):
                data_time += time.perf_counter() - t_data
                video = batch["video"].to(device, non_blocking=True)
                if batch_transform is not None:
                    video = batch_transform(video)  # uint8 -> normalised, erased float; B, C, T, H, W
                label = batch["label"].to(device, non_blocking=True)
                bsz = label.shape[0]
                target = label
                if mixup is not None:
                    video, target = mixup(video, label)
                group_start = (it // accum) * accum
                group_len = min(accum, iters - group_start)
                step_now = it + 1 == group_start + group_len
                sync = ddp_model.no_sync() if (di.distributed and not step_now) else contextlib.nullcontext()
                with sync:
                    with autocast(device, cfg.TRAIN.MIXED_PRECISION):
                        logits = ddp_model(video)
                    loss = criterion(logits.float(), target)
                    loss_mean = float(all_reduce_sum(loss.detach()).item()) / di.world_size
                    if not math.isfinite(loss_mean):
                        raise TrainingDivergedError(
                            f"loss is {loss_mean} at epoch {epoch + 1}, iteration {it + 1}/{iters} (global "
                            f"iteration {epoch * iters + it + 1}, optimizer step {global_step}); stopping. "
                            f"Last good checkpoint: {last_ckpt or 'none written yet'}. Lower SOLVER.BASE_LR, "
                            "set SOLVER.CLIP_GRAD_NORM, or use TRAIN.MIXED_PRECISION bf16 instead of fp16")
                    scaled = loss / group_len
                    (scaler.scale(scaled) if scaler is not None else scaled).backward()
                if step_now:
                    if cfg.SOLVER.CLIP_GRAD_NORM > 0:
                        if scaler is not None:
                            scaler.unscale_(optimizer)
                        nn.utils.clip_grad_norm_(model.parameters(), cfg.SOLVER.CLIP_GRAD_NORM)
                    if scaler is not None:
                        scaler.step(optimizer)
                        scaler.update()
                    else:
                        optimizer.step()
                    optimizer.zero_grad(set_to_none=True)
                    global_step += 1
                    scheduler.step_update(global_step)
                    if ema is not None:
                        ema.update(model, step=global_step)

                # Meters (local sums; reduced when logged).
                meter["loss_sum"] += loss_mean * bsz
                meter["samples"] += bsz
                meter["failures"] += int(batch["num_failures"].sum())
                window["loss_sum"] += loss_mean * bsz
                window["samples"] += bsz
                if mixup is None:
                    c = int((logits.detach().argmax(-1) == label).sum())
                    meter["correct"] += c
                    window["correct"] += c
                lr = optimizer.param_groups[0]["lr"]
                bar.update(1)
                gi = epoch * iters + it + 1
                if (it + 1) % cfg.LOG_PERIOD == 0 or it + 1 == iters:
                    red = all_reduce_sum(torch.tensor([window["correct"], window["samples"]], dtype=torch.float64))
                    now = time.perf_counter()
                    n_it = it + 1 - si
                    dt = (now - t0) / max(n_it, 1)
                    rec = {
                        "_type": "train_iter", "epoch": f"{epoch + 1}/{max_epoch}", "iter": f"{it + 1}/{iters}",
                        "global_iter": gi, "loss": window["loss_sum"] / max(window["samples"], 1), "lr": lr,
                        "dt": dt, "dt_data": data_time / max(n_it, 1),
                        "eta": _fmt_eta(dt * ((max_epoch - epoch) * iters - it - 1)),
                        "samples_per_s": float(red[1]) / max(now - t_last, 1e-9), "mem_mb": memory_mb(device),
                    }
                    if mixup is None:
                        rec["top1_err"] = 100.0 * (1 - float(red[0]) / max(float(red[1]), 1))
                    stats.log(rec, step=gi, tb_prefix="train")
                    bar.set_postfix(loss=f"{rec['loss']:.4f}", lr=f"{lr:.2e}")
                    window = {"loss_sum": 0.0, "samples": 0, "correct": 0}
                    t_last = now
                    _check_bad_videos(cfg, meter, epoch, iters, di, final=False, out=out)

                period = cfg.TRAIN.CHECKPOINT_ITER_PERIOD
                if period > 0 and (it + 1) % period == 0 and it + 1 < iters:
                    last_ckpt = save(epoch + 1, it + 1, dict(meter)) or last_ckpt
                if iteration_hook is not None:
                    iteration_hook(epoch, it, gi)
                t_data = time.perf_counter()
            bar.close()

            # End of epoch: reduced stats, checkpoint, validation.
            red = all_reduce_sum(torch.tensor([meter["loss_sum"], meter["samples"], meter["failures"],
                                               meter["correct"]], dtype=torch.float64)).tolist()
            rec = {"_type": "train_epoch", "epoch": f"{epoch + 1}/{max_epoch}", "epoch_num": epoch + 1,
                   "global_iter": (epoch + 1) * iters, "loss": red[0] / max(red[1], 1), "lr": lr,
                   "num_samples": int(red[1]), "decode_failures": int(red[2]),
                   "time_s": time.perf_counter() - t0, "mem_mb": memory_mb(device)}
            if mixup is None:
                rec["top1_err"] = 100.0 * (1 - red[3] / max(red[1], 1))
            stats.log(rec, step=epoch + 1, tb_prefix="train_epoch")
            _check_bad_videos(cfg, meter, epoch, iters, di, final=True, out=out)
            epochs_run += 1
            if (epoch + 1) % cfg.TRAIN.CHECKPOINT_PERIOD == 0 or epoch + 1 == max_epoch:
                last_ckpt = save(epoch + 1, None, None) or last_ckpt
            ev = cfg.TRAIN.EVAL_PERIOD
            if ev > 0 and ((epoch + 1) % ev == 0 or epoch + 1 == max_epoch):
                if val_loader is None:
                    with preserved_rng():
                        val_loader = build_loader(cfg, "val", distributed=di.distributed)
                # The bare model: same weights on every rank, and no DDP collectives in its forward.
                val_stats = validate(cfg, model, val_loader, device, desc=f"val {epoch + 1}", show_progress=main,
                                     bad_videos_path=out / "bad_videos.txt" if main else None)
                vrec = {"_type": "val_epoch", "split": "val_single_view", "epoch": epoch + 1, **val_stats}
                if ema is not None:
                    ema_stats = validate(cfg, ema.module, val_loader, device, desc="val ema", show_progress=main)
                    vrec.update({f"ema_{k}": v for k, v in ema_stats.items() if k not in ("num_videos", "num_failed")})
                stats.log(vrec, step=epoch + 1, tb_prefix="val_single_view")
                logger.info("val_single_view after epoch %d: top-1 %.2f%%, top-5 %.2f%% on %d videos "
                            "(one view per video; the multi-view test gives the reportable number)%s",
                            epoch + 1, val_stats["top1_acc"], val_stats["top5_acc"], val_stats["num_videos"],
                            f"; {val_stats['num_failed']} failed to decode (listed in {out / 'bad_videos.txt'})"
                            if val_stats["num_failed"] else "")
    except RuntimeError as e:  # a DataLoader worker ended by the decode hard bound: name its video
        raise_hung_decode(e, out / "bad_videos.txt")
        raise
    finally:
        console.__exit__(None, None, None)
        stats.close()
    if main:
        png = plot_training_curves(out / "json_stats.log", out / "training_curves.png")
        if png:
            logger.info("training curves: %s", png)
    # Every rank reports rank 0's checkpoint path.
    last_ckpt = all_gather_object(str(last_ckpt) if last_ckpt else None)[0]
    return TrainResult(Path(last_ckpt) if last_ckpt else None, epochs_run, val_stats)


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


__all__ = ["train", "validate", "TrainResult", "TrainingDivergedError", "TooManyBadVideosError", "preserved_rng"]
