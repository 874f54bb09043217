"""The multi-view test (:func:`multiview_test`): the protocol behind the paper's numbers.

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

The weights and the model come from :func:`regionvit_video.engine.checkpoint.load_inference_model`,
the precision from :func:`regionvit_video.engine.build.inference_autocast`, as in every inference job.
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

from regionvit_video.engine.build import inference_autocast
from regionvit_video.engine.checkpoint import load_inference_model
from regionvit_video.engine.distributed import DistInfo, barrier, resolve_device
from regionvit_video.engine.log import StatsLogger, console_through_tqdm
from regionvit_video.engine.meters import MultiViewAggregator, ensemble_views
from regionvit_video.utils.io import atomic_write, atomic_write_text

logger = logging.getLogger(__name__)


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
def _predict_views(cfg: CfgNode, model: torch.nn.Module, loader, di: DistInfo, out: Path) -> MultiViewAggregator:
    """The view-averaged softmax of every video of ``loader``, gathered over the processes."""
    from regionvit_video.data import raise_hung_decode

    loader.sampler.set_epoch(0)
    agg = MultiViewAggregator(cfg.MODEL.NUM_CLASSES)
    with console_through_tqdm() if di.is_main else contextlib.nullcontext():
        try:
            for batch in tqdm(loader, total=len(loader), desc="test", disable=not di.is_main, dynamic_ncols=True):
                agg.add_failed(batch.get("failed", []))
                if batch["video"] is None:  # every video of the batch failed to decode
                    continue
                video = batch["video"].to(di.device, non_blocking=True)  # B, V, C, T, H, W
                b, v = video.shape[:2]
                with inference_autocast(cfg, di.device):
                    logits = model(rearrange(video, "b v c t h w -> (b v) c t h w"))
                probs = ensemble_views(rearrange(logits.float(), "(b v) k -> b v k", b=b, v=v))  # B, K
                agg.add(batch["index"], probs, batch["label"], batch["path"])
        except RuntimeError as e:  # a DataLoader worker ended by the decode hard bound: name its video
            raise_hung_decode(e, out / "bad_videos.txt")
            raise
    return agg.gather()


def _results(cfg: CfgNode, agg: MultiViewAggregator, checkpoint: Path, world_size: int) -> dict:
    """The content of ``test_results.json``."""
    metrics = agg.metrics()
    failed = [agg.failed[i] for i in sorted(agg.failed)]
    return {
        "top1": metrics["top1_acc"],
        "top5": metrics["top5_acc"],
        "mean_class_accuracy": metrics["mean_class_accuracy"],
        "num_videos": metrics["num_videos"],
        "num_failed": len(failed),
        "checkpoint": str(checkpoint),
        "views": {"temporal": cfg.TEST.NUM_ENSEMBLE_VIEWS, "spatial_crops": cfg.TEST.NUM_SPATIAL_CROPS,
                  "per_video": cfg.TEST.NUM_ENSEMBLE_VIEWS * cfg.TEST.NUM_SPATIAL_CROPS,
                  "ensemble": "mean of softmax probabilities"},
        "dataset": cfg.TEST.DATASET,
        "split": cfg.TEST.SPLIT,
        "test_scale": cfg.DATA.TEST_SCALE,
        "crop_size": cfg.DATA.TEST_CROP_SIZE,
        "num_frames": cfg.DATA.NUM_FRAMES,
        "num_processes": world_size,
        "failed": failed,
    }


def multiview_test(cfg: CfgNode, dist_info: DistInfo | None = None, *,
                   checkpoint: str | Path | None = None) -> dict:
    """Multi-view test of a trained checkpoint; writes the files listed in the module docstring.

    Args:
        cfg: a validated config.
        dist_info: this process's place in the job; None: one process on ``cfg.DEVICE``.
        checkpoint: overrides :func:`~regionvit_video.engine.checkpoint.resolve_inference_weights`.

    Returns:
        The content of ``test_results.json`` (on every process).

    Raises:
        NoCheckpointError: no checkpoint to test.
    """
    from regionvit_video.data import build_loader

    di = dist_info or DistInfo(device=resolve_device(cfg.DEVICE))
    out = Path(cfg.OUTPUT_DIR)
    model, weights = load_inference_model(cfg, di, checkpoint=checkpoint)
    loader = build_loader(cfg, "test", bad_videos_path=str(out / "bad_videos.txt"), distributed=di.distributed)
    dataset = loader.dataset
    class_names = list(getattr(dataset, "class_names", None) or [f"class_{i}" for i in range(cfg.MODEL.NUM_CLASSES)])
    n_views = cfg.TEST.NUM_ENSEMBLE_VIEWS * cfg.TEST.NUM_SPATIAL_CROPS
    logger.info("testing %s on %d videos of %s/%s: %d temporal x %d spatial = %d views per video", weights.path,
                len(dataset), cfg.TEST.DATASET, cfg.TEST.SPLIT, cfg.TEST.NUM_ENSEMBLE_VIEWS,
                cfg.TEST.NUM_SPATIAL_CROPS, n_views)
    agg = _predict_views(cfg, model, loader, di, out)
    results = _results(cfg, agg, weights.path, di.world_size)
    if di.is_main:
        _write_outputs(out, agg, results, class_names)
        stats = StatsLogger(out, tensorboard=True)
        stats.log({"_type": "test_final", "top1_acc": results["top1"], "top5_acc": results["top5"],
                   "mean_class_accuracy": results["mean_class_accuracy"], "num_videos": results["num_videos"],
                   "num_failed": results["num_failed"], "views": n_views}, step=0, tb_prefix="test")
        stats.close()
        logger.info("multi-view test (%d views): top-1 %.2f%%, top-5 %.2f%%, mean class accuracy %.2f%% on %d "
                    "videos (%d failed to decode)", n_views, results["top1"], results["top5"],
                    results["mean_class_accuracy"], results["num_videos"], results["num_failed"])
        for f in results["failed"]:
            logger.warning("test video failed: %s: %s", f["path"], f["error"])
    barrier()
    return results


def _write_outputs(out: Path, agg: MultiViewAggregator, results: dict, class_names: list[str]) -> None:
    idx, scores, labels = agg.arrays()

    def name(c: int) -> str:
        return class_names[c] if 0 <= c < len(class_names) else f"class_{c}"

    atomic_write_text(out / "test_results.json", json.dumps(results, indent=2) + "\n")
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["index", "path", "label", "label_name", "pred", "pred_name", "correct", "prob_pred", "top5"])
    k5 = min(5, scores.shape[1]) if len(scores) else 0
    for i, s, y in zip(idx, scores, labels):
        top = np.argsort(-s, kind="stable")[:k5]
        w.writerow([int(i), agg.paths[int(i)], int(y), name(int(y)), int(top[0]), name(int(top[0])),
                    int(top[0] == y), f"{s[top[0]]:.4f}", " ".join(str(int(c)) for c in top)])
    atomic_write_text(out / "test_predictions.csv", buf.getvalue())

    cm = agg.confusion_matrix()
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["class_index", "class_name", "num_videos", "num_correct", "accuracy"])
    for c in range(cm.shape[0]):
        n = int(cm[c].sum())
        w.writerow([c, name(c), n, int(cm[c, c]), f"{100.0 * cm[c, c] / n:.2f}" if n else ""])
    atomic_write_text(out / "test_per_class_accuracy.csv", buf.getvalue())
    _plot_confusion(cm, [name(c) for c in range(cm.shape[0])], out / "test_confusion_matrix.png",
                    f"multi-view test: top-1 {results['top1']:.2f}% on {results['num_videos']} videos")
