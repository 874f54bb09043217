"""Accuracy helpers and the multi-view aggregator shared by validation, testing and features.

:class:`MultiViewAggregator` keeps one prediction per video, keyed by the dataset ``index`` each
sample carries, so DistributedSampler padding (val/test lists are padded to a multiple of the
world size by repeating items) never counts a video twice.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from regionvit_video.engine.distributed import all_gather_object


def ensemble_views(logits: torch.Tensor) -> torch.Tensor:
    """Softmax probabilities averaged over views: (B, V, K) logits -> (B, K) probabilities."""
    if logits.ndim != 3:
        raise ValueError(f"expected (B, V, K) logits, got {tuple(logits.shape)}")
    return logits.float().softmax(dim=-1).mean(dim=1)


def topk_correct(scores: torch.Tensor, labels: torch.Tensor, ks: tuple[int, ...] = (1, 5)) -> dict[int, torch.Tensor]:
    """Per sample, whether the label is among the top-k scores: {k: (B,) bool}."""
    kmax = min(max(ks), scores.shape[-1])
    top = scores.topk(kmax, dim=-1).indices  # B, kmax
    hit = top == labels[:, None]
    return {k: hit[:, : min(k, kmax)].any(dim=-1) for k in ks}


@dataclass
class MultiViewAggregator:
    """Per-video scores (one row per dataset index) and the failures, gathered over processes."""

    num_classes: int
    scores: dict[int, np.ndarray] = field(default_factory=dict)
    labels: dict[int, int] = field(default_factory=dict)
    paths: dict[int, str] = field(default_factory=dict)
    failed: dict[int, dict] = field(default_factory=dict)

    def add(self, index: torch.Tensor, scores: torch.Tensor, labels: torch.Tensor, paths: list[str]) -> None:
        """Record (B,) indices with their (B, K) video-level scores (already ensembled over views)."""
        s = scores.detach().float().cpu().numpy()
        for i, idx in enumerate(index.tolist()):
            self.scores[idx] = s[i]
            self.labels[idx] = int(labels[i])
            self.paths[idx] = paths[i]

    def add_failed(self, failed: list[dict]) -> None:
        for f in failed:
            self.failed[int(f["index"])] = {"index": int(f["index"]), "path": f["path"], "error": str(f["error"])}

    def gather(self) -> "MultiViewAggregator":
        """Merge every process's records (de-duplicated by index); the result is the same everywhere."""
        parts = all_gather_object((self.scores, self.labels, self.paths, self.failed))
        out = MultiViewAggregator(self.num_classes)
        for scores, labels, paths, failed in parts:
            out.scores.update(scores)
            out.labels.update(labels)
            out.paths.update(paths)
            out.failed.update(failed)
        for idx in out.scores:  # a video that decoded on one process is not a failure
            out.failed.pop(idx, None)
        return out

    def arrays(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(indices, scores (N, K), labels) sorted by index."""
        idx = np.array(sorted(self.scores), dtype=np.int64)
        if len(idx) == 0:
            return idx, np.zeros((0, self.num_classes), np.float32), np.zeros((0,), np.int64)
        scores = np.stack([self.scores[i] for i in idx])
        labels = np.array([self.labels[i] for i in idx], dtype=np.int64)
        return idx, scores, labels

    def metrics(self) -> dict[str, float]:
        """top1 / top5 / mean class accuracy in percent over the videos that decoded."""
        _, scores, labels = self.arrays()
        n = len(labels)
        if n == 0:
            return {"top1_acc": float("nan"), "top5_acc": float("nan"), "mean_class_accuracy": float("nan"),
                    "num_videos": 0}
        hits = topk_correct(torch.from_numpy(scores), torch.from_numpy(labels))
        pred = scores.argmax(1)
        per_class = [float((pred[labels == c] == c).mean()) for c in np.unique(labels)]
        return {
            "top1_acc": 100.0 * float(hits[1].float().mean()),
            "top5_acc": 100.0 * float(hits[5].float().mean()),
            "mean_class_accuracy": 100.0 * float(np.mean(per_class)),
            "num_videos": n,
        }

    def confusion_matrix(self) -> np.ndarray:
        """(K, K) counts: row = true class, column = predicted class."""
        _, scores, labels = self.arrays()
        cm = np.zeros((self.num_classes, self.num_classes), dtype=np.int64)
        if len(labels):
            np.add.at(cm, (labels, scores.argmax(1)), 1)
        return cm
