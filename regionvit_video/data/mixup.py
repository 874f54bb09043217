"""Mixup / CutMix for video batches (B, C, T, H, W), mixing the spatial dimensions only.

timm's ``Mixup`` indexes ``x[:, :, y0:y1, x0:x1]``, which on a 5-D batch would cut along T and H.
:class:`VideoMixup` reuses timm's parameter sampling, box sampling and soft-target code and only
replaces the cut so the same box is pasted on every frame.
"""
from __future__ import annotations

import torch
from timm.data.mixup import Mixup, cutmix_bbox_and_lam, mixup_target


class VideoMixup(Mixup):
    """Batch-wise Mixup / CutMix with label smoothing for (B, C, T, H, W) clips.

    Each call draws one ``lam`` for the whole batch (timm's "batch" mode): with probability
    ``prob`` the batch is mixed with its reverse, by CutMix with probability ``switch_prob``
    (when both alphas are > 0), else by Mixup. Odd batch sizes are allowed (the middle clip is
    mixed with itself).

    Args:
        mixup_alpha: Beta(alpha, alpha) for mixup (0: off).
        cutmix_alpha: Beta(alpha, alpha) for cutmix (0: off).
        prob: probability of mixing a batch.
        switch_prob: probability of cutmix rather than mixup when both are on.
        label_smoothing: smoothing of the one-hot targets.
        num_classes: number of classes of the targets.
    """

    def __init__(self, mixup_alpha: float = 0.8, cutmix_alpha: float = 1.0, prob: float = 1.0,
                 switch_prob: float = 0.5, label_smoothing: float = 0.1, num_classes: int = 400):
        if mixup_alpha <= 0 and cutmix_alpha <= 0:
            raise ValueError("VideoMixup needs mixup_alpha > 0 or cutmix_alpha > 0")
        super().__init__(mixup_alpha=mixup_alpha, cutmix_alpha=cutmix_alpha, prob=prob, switch_prob=switch_prob,
                         mode="batch", correct_lam=True, label_smoothing=label_smoothing, num_classes=num_classes)

    def _mix_batch(self, x: torch.Tensor) -> float:
        lam, use_cutmix = self._params_per_batch()
        if lam == 1.0:
            return 1.0
        if use_cutmix:
            # The box is drawn on (H, W) = x.shape[-2:] and pasted on every frame.
            (yl, yh, xl, xh), lam = cutmix_bbox_and_lam(x.shape, lam, ratio_minmax=self.cutmix_minmax,
                                                        correct_lam=self.correct_lam)
            x[..., yl:yh, xl:xh] = x.flip(0)[..., yl:yh, xl:xh]
        else:
            x_flipped = x.flip(0).mul_(1.0 - lam)
            x.mul_(lam).add_(x_flipped)
        return lam

    def __call__(self, video: torch.Tensor, label: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Mix ``video`` (B, C, T, H, W) in place; return it with soft targets (B, num_classes)."""
        if video.ndim != 5:
            raise ValueError(f"VideoMixup expects (B, C, T, H, W), got {tuple(video.shape)}")
        if label.ndim != 1 or len(label) != len(video):
            raise ValueError(f"labels must be (B,) class indices, got {tuple(label.shape)}")
        lam = self._mix_batch(video)
        return video, mixup_target(label, self.num_classes, lam, self.label_smoothing)


def build_mixup(cfg) -> VideoMixup | None:
    """``VideoMixup`` from MIXUP.* and MODEL.NUM_CLASSES, or None when MIXUP.ENABLE is off or both alphas are 0."""
    m = cfg.MIXUP
    if not m.ENABLE or (m.ALPHA <= 0 and m.CUTMIX_ALPHA <= 0) or m.PROB <= 0:
        return None
    return VideoMixup(mixup_alpha=m.ALPHA, cutmix_alpha=m.CUTMIX_ALPHA, prob=m.PROB, switch_prob=m.SWITCH_PROB,
                      label_smoothing=m.LABEL_SMOOTHING, num_classes=cfg.MODEL.NUM_CLASSES)
