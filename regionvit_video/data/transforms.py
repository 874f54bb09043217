"""Spatial transforms for clips: training augmentation, the single val view and the test views.

Input is what the decoder gives, ``(T, H, W, 3)`` uint8 RGB; outputs are normalised float
``(C, T, H, W)`` clips, or, for training with ``DATA_LOADER.NORMALIZE_ON_DEVICE``, augmented uint8
clips that :class:`BatchNormalize` normalises and erases batch by batch on the training device.
Resizing, cropping, flipping and RandAugment run on uint8 (torch's uint8 bilinear kernel is several
times faster than float, and only the final crop is converted), so the transforms stay cheap next to
decoding (benchmarks/bench_loader.py). All randomness uses the global torch / python RNGs, which the
dataset seeds per sample (so a clip is a function of seed, epoch and index only).

Test crops (``TEST.NUM_SPATIAL_CROPS`` 3): the short side is scaled to ``DATA.TEST_SCALE`` (256,
the paper's) and three ``TEST_CROP_SIZE`` squares are cut along the *long* side: start, centre,
end (left/centre/right for landscape, top/centre/bottom for portrait), centred on the short side.
This is pytorchvideo's / PySlowFast's ``uniform_crop``. It differs from PySlowFast's test in one
respect: PySlowFast scales the short side to the crop size (224), so its crops are full-height;
with 256 the crops lose 16 px at top and bottom. The papers' "top-left, centre, bottom-right"
wording would move the first and last crop 16 px up/down; we keep them vertically centred, which
is what the reference code's crops amount to.
"""
from __future__ import annotations

import functools
import math
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from einops import rearrange
from pytorchvideo.transforms.functional import uniform_crop
from timm.data.random_erasing import RandomErasing

from .rand_augment import VideoRandAugment

SPATIAL_CROPS: tuple[int, ...] = (1, 3)  # TEST.NUM_SPATIAL_CROPS: centre, or start / centre / end


@functools.lru_cache(maxsize=32)
def _scaled_mean_std(mean: tuple[float, ...], std: tuple[float, ...], dtype: torch.dtype,
                     device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """``mean * 255`` and ``std * 255`` as (C, 1, 1, 1) tensors on ``device``, made once per (values, dtype,
    device): on CUDA a new tensor would be a host-to-device copy, and a synchronisation, every batch."""
    m = torch.as_tensor(mean, dtype=dtype, device=device).view(-1, 1, 1, 1) * 255.0
    s = torch.as_tensor(std, dtype=dtype, device=device).view(-1, 1, 1, 1) * 255.0
    return m, s


def _normalize_uint8_scale_(video: torch.Tensor, mean: Sequence[float], std: Sequence[float]) -> torch.Tensor:
    """In place on float (..., C, T, H, W) holding 0-255 values: ``(x / 255 - mean) / std`` per channel."""
    m, s = _scaled_mean_std(tuple(mean), tuple(std), video.dtype, video.device)
    return video.sub_(m).div_(s)


def _resize_uint8(clip: torch.Tensor, size: tuple[int, int], flip: bool = False) -> torch.Tensor:
    """Bilinear (align_corners=False, no antialias) resize of (T, C, H, W) uint8, as on floats,
    then a horizontal flip if ``flip``.

    ``clip`` is normally a channels-last view of decoded (T, H, W, C) frames: torch's uint8
    bilinear kernel is fastest in that layout. The result is returned contiguous (T, C, H, W),
    copied (and flipped) by numpy in one pass: its strided uint8 copy is about 3x faster than
    torch's on CPU.
    """
    if tuple(clip.shape[-2:]) != tuple(size):
        clip = F.interpolate(clip, size=size, mode="bilinear", align_corners=False, antialias=False)
    if clip.device.type != "cpu":
        return (clip.flip(-1) if flip else clip).contiguous()
    array = clip.numpy()
    return torch.from_numpy(np.ascontiguousarray(array[..., ::-1] if flip else array))


def short_side_size(height: int, width: int, size: int) -> tuple[int, int]:
    """Output (H, W) with the short side ``size``; pytorchvideo's ``short_side_scale`` rounding."""
    if width < height:
        return int(math.floor(height / width * size)), size
    return size, int(math.floor(width / height * size))


class TrainTransform:
    """Training augmentation of one clip, the same parameters on every frame.

    Short side scaled to a random size in ``jitter_scales``, random ``crop_size`` square crop
    (computed as the equivalent crop of the source frame, then resized: see ``__call__``),
    horizontal flip (p=0.5, if ``random_flip``), RandAugment (pytorchvideo, applied to the whole
    clip at once so all frames get the same ops and magnitudes), normalisation, then random
    erasing with one rectangle shared by all frames (timm's ``RandomErasing`` on the clip viewed as
    a (C*T, H, W) image: same box, per-pixel noise).

    Args:
        jitter_scales: (min, max) short-side sizes, both >= crop_size.
        crop_size: output height and width.
        random_flip: horizontal flip with probability 0.5.
        rand_augment: apply RandAugment.
        ra_magnitude: RandAugment magnitude (m).
        ra_num_layers: RandAugment ops per clip (n).
        re_prob: random erasing probability (0: off).
        mean: per-channel mean.
        std: per-channel std.
        normalize: True: return the normalised (and erased) float clip. False: return the augmented
            uint8 clip, (C, T, H, W), and leave normalisation and random erasing to
            :class:`BatchNormalize` on the training device (then ``re_prob`` must be 0 here).
    """

    def __init__(self, *, jitter_scales: Sequence[int] = (256, 320), crop_size: int = 224, random_flip: bool = True,
                 rand_augment: bool = True, ra_magnitude: int = 9, ra_num_layers: int = 2, re_prob: float = 0.25,
                 mean: Sequence[float] = (0.485, 0.456, 0.406), std: Sequence[float] = (0.229, 0.224, 0.225),
                 normalize: bool = True):
        lo, hi = int(jitter_scales[0]), int(jitter_scales[1])
        if not crop_size <= lo <= hi:
            raise ValueError(f"DATA.TRAIN_JITTER_SCALES {list(jitter_scales)} must satisfy "
                             f"TRAIN_CROP_SIZE ({crop_size}) <= min <= max")
        if not normalize and re_prob > 0:
            raise ValueError("random erasing works on the normalised clip: with normalize=False pass re_prob=0 "
                             "and give it to BatchNormalize")
        self.jitter_scales = (lo, hi)
        self.crop_size = int(crop_size)
        self.random_flip = random_flip
        # pytorchvideo's RandAugment policy on uint8 clips (data/rand_augment.py): fill (128, 128, 128)
        # is pytorchvideo's default fill 0.5 of float clips.
        self.rand_augment = (VideoRandAugment(magnitude=ra_magnitude, num_layers=ra_num_layers,
                                              fill=(128, 128, 128)) if rand_augment else None)
        # normalize=False: the same step runs later, batch by batch, on the training device.
        self.finish = BatchNormalize(mean, std, re_prob) if normalize else None

    def __call__(self, frames: torch.Tensor) -> torch.Tensor:
        if frames.ndim != 4 or frames.shape[-1] != 3:
            raise ValueError(f"expected frames (T, H, W, 3), got {tuple(frames.shape)}")
        _, h, w, _ = frames.shape
        # Scale jitter + random crop, done as crop-then-resize: scaling the short side to `size`
        # and cutting a crop_size square equals cutting a crop_size * short / size square of the
        # source and resizing it to crop_size (same sampling positions up to integer rounding of
        # the box), and only the crop gets resized.
        size = int(torch.randint(self.jitter_scales[0], self.jitter_scales[1] + 1, (1,)))
        box = max(1, round(self.crop_size * min(h, w) / size))
        bh, bw = min(box, h), min(box, w)
        y = int(torch.randint(0, h - bh + 1, (1,)))
        x = int(torch.randint(0, w - bw + 1, (1,)))
        clip = rearrange(frames[:, y:y + bh, x:x + bw], "t h w c -> t c h w")  # channels-last view, no copy
        flip = self.random_flip and float(torch.rand(1)) < 0.5
        clip = _resize_uint8(clip, (self.crop_size, self.crop_size), flip)  # T, C, S, S uint8, contiguous
        if self.rand_augment is not None:
            # (T, C, H, W): one draw of ops and magnitudes per clip.
            clip = self.rand_augment(clip)
        clip = rearrange(clip, "t c h w -> c t h w")  # C, T, S, S uint8 view
        if self.finish is None:
            return clip.contiguous()
        return self.finish(clip[None])[0]  # normalised, erased float


class BatchNormalize:
    """Normalisation and random erasing of a batch of uint8 training clips, on the batch's device.

    The second half of :class:`TrainTransform` when ``DATA_LOADER.NORMALIZE_ON_DEVICE`` is on (timm's
    ``PrefetchLoader`` splits image training the same way): the loading processes send augmented
    uint8 clips, a quarter of the bytes of float ones through worker shared memory, pinned memory
    and the host-to-device copy, and skip the two most memory-bound steps of the transform; the
    batch is normalised and erased where the model runs. ``TrainTransform(normalize=True)`` ends
    with this same step, on its one clip: ``(x / 255 - mean) / std`` per channel, then timm's
    ``RandomErasing`` (pixel mode) with one rectangle per clip shared by all its frames. Erasing
    draws from the training process's python and torch generators (saved in checkpoints, like
    those mixup draws from), not from the per-clip seeds of the loading processes.

    Args:
        mean: per-channel mean.
        std: per-channel std.
        re_prob: random erasing probability per clip (0: off).
    """

    def __init__(self, mean: Sequence[float] = (0.485, 0.456, 0.406), std: Sequence[float] = (0.229, 0.224, 0.225),
                 re_prob: float = 0.25):
        self.mean, self.std = tuple(mean), tuple(std)
        self.re_prob = float(re_prob)
        self._erasing: dict[str, RandomErasing] = {}  # per device: timm draws the noise on its own device

    def __call__(self, video: torch.Tensor) -> torch.Tensor:
        """(B, C, T, H, W) uint8 -> normalised, erased (B, C, T, H, W) float32 on the same device."""
        if video.dtype != torch.uint8 or video.ndim != 5:
            raise ValueError(f"expected a (B, C, T, H, W) uint8 batch, got {tuple(video.shape)} {video.dtype}")
        # The float copy is contiguous whatever the input's layout (a permuted view becomes (B, C, T, H, W)
        # in the same pass).
        x = _normalize_uint8_scale_(video.to(torch.float32, memory_format=torch.contiguous_format),
                                    self.mean, self.std)
        if self.re_prob > 0:
            key = str(video.device)
            if key not in self._erasing:
                self._erasing[key] = RandomErasing(probability=self.re_prob, mode="pixel", max_count=1, device=key)
            b, c, t, h, w = x.shape
            self._erasing[key](x.view(b, c * t, h, w))  # each clip a (C*T, H, W) image: one box for all frames
        return x


def eval_views(frames: torch.Tensor, *, scale: int, crop_size: int, num_crops: int,
               mean: Sequence[float], std: Sequence[float]) -> torch.Tensor:
    """The deterministic views of one clip: short side ``scale``, then 1 (centre) or 3 crops.

    Args:
        frames: (T, H, W, 3) uint8.

    Returns:
        (num_crops, C, T, crop_size, crop_size) float, crops ordered start, centre, end.
    """
    if num_crops not in SPATIAL_CROPS:
        raise ValueError(f"TEST.NUM_SPATIAL_CROPS must be one of {SPATIAL_CROPS}, got {num_crops}")
    if scale < crop_size:
        raise ValueError(f"DATA.TEST_SCALE ({scale}) must be >= DATA.TEST_CROP_SIZE ({crop_size})")
    if frames.ndim != 4 or frames.shape[-1] != 3:
        raise ValueError(f"expected frames (T, H, W, 3), got {tuple(frames.shape)}")
    # Short-side scaling on uint8 (pytorchvideo's output size and bilinear sampling; converting
    # whole 720p frames to float first would cost more than decoding them).
    clip = rearrange(frames, "t h w c -> t c h w")
    clip = _resize_uint8(clip, short_side_size(clip.shape[-2], clip.shape[-1], scale))
    video = rearrange(clip, "t c h w -> c t h w")  # C, T, H, W uint8
    spatial = (1,) if num_crops == 1 else (0, 1, 2)
    crops = torch.stack([uniform_crop(video, crop_size, i) for i in spatial])  # V, C, T, S, S uint8
    return _normalize_uint8_scale_(crops.float(), mean, std)
