"""The multi-view test: the protocol behind the paper's numbers.

Every video of ``TEST.SPLIT`` is cut into ``TEST.NUM_ENSEMBLE_VIEWS`` temporal clips x
``TEST.NUM_SPATIAL_CROPS`` crops (the paper: 1 x 3, short side ``DATA.TEST_SCALE`` 256, crops of
``DATA.TEST_CROP_SIZE`` 224); the prediction is the softmax averaged over those views. Written to
``OUTPUT_DIR``:

- ``test_results.json``: top1, top5, mean_class_accuracy (percent), num_videos (decoded),
  num_failed, the checkpoint, the views, and the failed videos with path and reason;
- ``test_predictions.csv``: one row per video (sorted by list index): label, prediction, top-5,
  probability of the prediction;
- ``test_per_class_accuracy.csv`` and ``test_confusion_matrix.png``.

With several processes each video is predicted by one of them (DistributedSampler padding is
removed by de-duplicating on the list index), so the files equal those of a 1-process run.
"""
from __future__ import annotations

import contextlib
import csv
import io
import json
import logging
from pathlib import Path

import numpy as np
import torch
from einops import rearrange
from fvcore.common.config import CfgNode
from tqdm import tqdm

from regionvit_video.engine import checkpoint as ckpt_lib
from regionvit_video.engine.build import autocast, build_model, seed_everything
from regionvit_video.engine.distributed import DistInfo, barrier, resolve_device, shared_file
from regionvit_video.engine.log import StatsLogger, console_through_tqdm, setup_logging
from regionvit_video.engine.meters import MultiViewAggregator, ensemble_views
from regionvit_video.utils.io import atomic_write

logger = logging.getLogger(__name__)


class NoCheckpointError(FileNotFoundError):
    """Testing was asked for but there is no trained checkpoint to test."""


def resolve_test_checkpoint(cfg: CfgNode) -> Path:
    """``TEST.CHECKPOINT_FILE_PATH``, else the newest checkpoint in ``OUTPUT_DIR/checkpoints``.

    Raises:
        NoCheckpointError: the named file is missing, or none is named and none exists: a test of
            an untrained model is never run silently.
    """
    if cfg.TEST.CHECKPOINT_FILE_PATH:
        path = Path(cfg.TEST.CHECKPOINT_FILE_PATH)
        if not path.is_file():
            raise NoCheckpointError(f"TEST.CHECKPOINT_FILE_PATH: checkpoint {path} does not exist")
        return path
    latest = ckpt_lib.latest_checkpoint(cfg.OUTPUT_DIR)
    if latest is None:
        raise NoCheckpointError(
            f"TEST.CHECKPOINT_FILE_PATH is empty and {ckpt_lib.checkpoint_dir(cfg.OUTPUT_DIR)} holds no checkpoint: "
            "refusing to test an untrained model. Set TEST.CHECKPOINT_FILE_PATH or train first (TRAIN.ENABLE True)")
    return latest


def _write_text(path: Path, text: str) -> None:
    atomic_write(path, lambda tmp: Path(tmp).write_text(text))


def _plot_confusion(cm: np.ndarray, class_names: list[str], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    k = cm.shape[0]
    rows = cm.sum(1, keepdims=True)
    norm = np.divide(cm, rows, out=np.zeros(cm.shape, dtype=float), where=rows > 0)
    side = min(4 + 0.35 * k, 24) if k <= 40 else 16
    fig, ax = plt.subplots(figsize=(side, side))
    im = ax.imshow(norm, cmap="Blues", vmin=0, vmax=1, interpolation="nearest")
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04, label="fraction of the true class")
    ax.set(xlabel="predicted class", ylabel="true class", title=title)
    if k <= 40:
        ax.set_xticks(range(k), labels=class_names, rotation=90, fontsize=7)
        ax.set_yticks(range(k), labels=class_names, fontsize=7)
        if k <= 15:
            for i in range(k):
                for j in range(k):
                    if cm[i, j]:
                        ax.text(j, i, str(cm[i, j]), ha="center", va="center", fontsize=8,
                                color="white" if norm[i, j] > 0.5 else "black")
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    plt.close(fig)
    atomic_write(path, lambda tmp: Path(tmp).write_bytes(buf.getvalue()))


@torch.no_grad()
def test(cfg: CfgNode, dist_info: DistInfo | None = None, *, checkpoint: str | Path | None = None) -> dict:
    """Multi-view test of a trained checkpoint; writes the files listed in the module docstring.

    Args:
        cfg: a validated config.
        dist_info: this process's place in the job; None: one process on ``cfg.DEVICE``.
        checkpoint: overrides :func:`resolve_test_checkpoint`.

    Returns:
        The content of ``test_results.json`` (on every process).
    """
    from regionvit_video.data import build_loader, raise_hung_decode

    di = dist_info or DistInfo(device=resolve_device(cfg.DEVICE))
    device, main = di.device, di.is_main
    out = Path(cfg.OUTPUT_DIR)
    setup_logging(out if main else None, rank=di.rank)
    seed_everything(cfg.RNG_SEED + di.rank)
    ckpt_path = Path(checkpoint) if checkpoint is not None else resolve_test_checkpoint(cfg)
    ckpt_path = shared_file(ckpt_path)  # rank 0's choice (a run may still be writing new ones)

    model = build_model(cfg)
    ck = ckpt_lib.load_checkpoint(ckpt_path)
    ckpt_lib.load_model_state(model, ck["model_state"], source=str(ckpt_path))
    if not ck.get("epoch_complete", True):
        logger.warning("%s is a mid-epoch checkpoint (epoch %s, iteration %s)", ckpt_path, ck.get("epoch"),
                       ck.get("iteration"))
    del ck
    model.to(device).eval()

    loader = build_loader(cfg, "test", bad_videos_path=str(out / "bad_videos.txt"), distributed=di.distributed)
    dataset = loader.dataset
    class_names = list(getattr(dataset, "class_names", None) or [f"class_{i}" for i in range(cfg.MODEL.NUM_CLASSES)])
    n_views = cfg.TEST.NUM_ENSEMBLE_VIEWS * cfg.TEST.NUM_SPATIAL_CROPS
    logger.info("testing %s on %d videos of %s/%s: %d temporal x %d spatial = %d views per video", ckpt_path,
                len(dataset), cfg.TEST.DATASET, cfg.TEST.SPLIT, cfg.TEST.NUM_ENSEMBLE_VIEWS,
                cfg.TEST.NUM_SPATIAL_CROPS, n_views)
    loader.sampler.set_epoch(0)
    agg = MultiViewAggregator(cfg.MODEL.NUM_CLASSES)
    with console_through_tqdm() if main else contextlib.nullcontext():
        try:
            for batch in tqdm(loader, total=len(loader), desc="test", disable=not main, dynamic_ncols=True):
                agg.add_failed(batch.get("failed", []))
                if batch["video"] is None:  # every video of the batch failed to decode
                    continue
                video = batch["video"].to(device, non_blocking=True)  # B, V, C, T, H, W
                b, v = video.shape[:2]
                with autocast(device, cfg.TRAIN.MIXED_PRECISION):
                    logits = model(rearrange(video, "b v c t h w -> (b v) c t h w"))
                probs = ensemble_views(rearrange(logits.float(), "(b v) k -> b v k", b=b, v=v))  # B, K
                agg.add(batch["index"], probs, batch["label"], batch["path"])
        except RuntimeError as e:  # a DataLoader worker ended by the decode hard bound: name its video
            raise_hung_decode(e, out / "bad_videos.txt")
            raise
    agg = agg.gather()
    metrics = agg.metrics()
    failed = [agg.failed[i] for i in sorted(agg.failed)]
    results = {
        "top1": metrics["top1_acc"],
        "top5": metrics["top5_acc"],
        "mean_class_accuracy": metrics["mean_class_accuracy"],
        "num_videos": metrics["num_videos"],
        "num_failed": len(failed),
        "checkpoint": str(ckpt_path),
        "views": {"temporal": cfg.TEST.NUM_ENSEMBLE_VIEWS, "spatial_crops": cfg.TEST.NUM_SPATIAL_CROPS,
                  "per_video": n_views, "ensemble": "mean of softmax probabilities"},
        "dataset": cfg.TEST.DATASET,
        "split": cfg.TEST.SPLIT,
        "test_scale": cfg.DATA.TEST_SCALE,
        "crop_size": cfg.DATA.TEST_CROP_SIZE,
        "num_frames": cfg.DATA.NUM_FRAMES,
        "num_processes": di.world_size,
        "failed": failed,
    }
    if main:
        _write_outputs(out, agg, results, class_names)
        stats = StatsLogger(out, tensorboard=True)
        stats.log({"_type": "test_final", "top1_acc": results["top1"], "top5_acc": results["top5"],
                   "mean_class_accuracy": results["mean_class_accuracy"], "num_videos": results["num_videos"],
                   "num_failed": results["num_failed"], "views": n_views}, step=0, tb_prefix="test")
        stats.close()
        logger.info("multi-view test (%d views): top-1 %.2f%%, top-5 %.2f%%, mean class accuracy %.2f%% on %d "
                    "videos (%d failed to decode)", n_views, results["top1"], results["top5"],
                    results["mean_class_accuracy"], results["num_videos"], results["num_failed"])
        for f in failed:
            logger.warning("test video failed: %s: %s", f["path"], f["error"])
    barrier()
    return results


def _write_outputs(out: Path, agg: MultiViewAggregator, results: dict, class_names: list[str]) -> None:
    idx, scores, labels = agg.arrays()

    def name(c: int) -> str:
        return class_names[c] if 0 <= c < len(class_names) else f"class_{c}"

    _write_text(out / "test_results.json", json.dumps(results, indent=2) + "\n")
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["index", "path", "label", "label_name", "pred", "pred_name", "correct", "prob_pred", "top5"])
    k5 = min(5, scores.shape[1]) if len(scores) else 0
    for i, s, y in zip(idx, scores, labels):
        top = np.argsort(-s, kind="stable")[:k5]
        w.writerow([int(i), agg.paths[int(i)], int(y), name(int(y)), int(top[0]), name(int(top[0])),
                    int(top[0] == y), f"{s[top[0]]:.4f}", " ".join(str(int(c)) for c in top)])
    _write_text(out / "test_predictions.csv", buf.getvalue())

    cm = agg.confusion_matrix()
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["class_index", "class_name", "num_videos", "num_correct", "accuracy"])
    for c in range(cm.shape[0]):
        n = int(cm[c].sum())
        w.writerow([c, name(c), n, int(cm[c, c]), f"{100.0 * cm[c, c] / n:.2f}" if n else ""])
    _write_text(out / "test_per_class_accuracy.csv", buf.getvalue())
    _plot_confusion(cm, [name(c) for c in range(cm.shape[0])], out / "test_confusion_matrix.png",
                    f"multi-view test: top-1 {results['top1']:.2f}% on {results['num_videos']} videos")


test.__test__ = False  # not a pytest test, even when imported into a test module
