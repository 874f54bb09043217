"""RandAugment for uint8 clips: pytorchvideo's policy with kernels that treat the clip as one image.

``VideoRandAugment`` is pytorchvideo's ``RandAugment``: the same 14 ops, magnitude mapping,
gaussian magnitude sampling and op sampler (it is built from pytorchvideo's own
``AugmentTransform`` and ``OpSampler``, so it draws the same random numbers and applies the same
ops with the same arguments). Only the per-op functions differ. pytorchvideo calls torchvision's
per-image functions, which on a ``(T, C, H, W)`` uint8 clip convert to float and back in several
temporaries per op, run equalize as a Python loop over the T x C planes, and resample every frame
with its own copy of the grid and a fill-mask channel. The kernels here compute the same formulas
on the whole clip at once (one grid and one fill mask for all frames, one batched histogram,
in-place float arithmetic, translations and shears as 1-D interpolation instead of
grid_sample; on CPU, numpy for the uint8 <-> float casts and comparisons, where torch's are several
times slower). That matters because RandAugment is the largest cost of the training transform after
decoding: benchmarks/bench_rand_augment.py and bench_loader.py measure both, and benchmarks/README.md
holds the figures.

Outputs equal pytorchvideo's bit for bit, except for ShearX, ShearY, TranslateX and TranslateY: their
interpolation weights are computed differently from grid_sample's, so a value that lands exactly
on .5 can round the other way: a difference of 1, on under 1% of the pixels at the continuous
magnitudes the policy draws (shifts of exact quarter pixels make ties, and such differences, common).
tests/test_rand_augment.py checks every op and the whole policy against pytorchvideo.
"""
from __future__ import annotations

import math
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from pytorchvideo.transforms.augmentations import _NAME_TO_TRANSFORM_FUNC, AugmentTransform
from pytorchvideo.transforms.rand_augment import _TRANSFORM_RANDAUG_MAX_PARAMS, SAMPLING_RANDAUG_DEFAULT_HPARAS
from pytorchvideo.transforms.transforms import OpSampler

__all__ = ["VideoRandAugment", "UINT8_OPS"]


def _check(video: torch.Tensor) -> None:
    if video.dtype != torch.uint8 or video.ndim != 4 or video.shape[1] != 3:
        raise ValueError(f"expected a (T, 3, H, W) uint8 clip, got {tuple(video.shape)} {video.dtype}")


def _truncate(x: torch.Tensor) -> torch.Tensor:
    """Float holding values in [0, 255] -> uint8, truncated (torchvision's cast).

    On CPU numpy's cast: the same truncation, about twice as fast as torch's float -> int32 ->
    uint8 and several times faster than its direct float -> uint8.
    """
    if x.device.type != "cpu":
        return x.to(torch.uint8)
    return torch.from_numpy(x.numpy().astype(np.uint8))


def _to_uint8(x: torch.Tensor) -> torch.Tensor:
    """Clamp float to [0, 255] and truncate to uint8 (torchvision's ``_blend`` cast)."""
    return _truncate(x.clamp_(0, 255))


def _float(video: torch.Tensor) -> torch.Tensor:
    """uint8 -> contiguous float32 in one pass (clips may arrive channels-last from the resize)."""
    if video.device.type != "cpu":
        return video.to(torch.float32, memory_format=torch.contiguous_format)
    return torch.from_numpy(video.numpy().astype(np.float32, order="C"))  # numpy's cast: faster on CPU


def _grayscale(video: torch.Tensor) -> torch.Tensor:
    """torchvision's ``rgb_to_grayscale`` on uint8: (T, 3, H, W) -> (T, 1, H, W) uint8, truncated."""
    r, g, b = video.unbind(1)
    return _truncate(0.2989 * r + 0.587 * g + 0.114 * b).unsqueeze(1)


def _blend_with(video: torch.Tensor, other: torch.Tensor | None, ratio: float) -> torch.Tensor:
    """``ratio * video + (1 - ratio) * other`` (``other`` None: black), clamped and truncated to uint8
    (torchvision's ``_blend``)."""
    x = _float(video).mul_(ratio)
    if other is not None:
        x.add_(other.float().mul_(1.0 - ratio))
    return _to_uint8(x)


def adjust_brightness(video: torch.Tensor, factor: float, **kwargs) -> torch.Tensor:
    _check(video)
    return _blend_with(video, None, factor)  # blend with black


def adjust_contrast(video: torch.Tensor, factor: float, **kwargs) -> torch.Tensor:
    _check(video)
    # One mean per frame, over the truncated grayscale image (torchvision's per-image mean).
    mean = torch.mean(_grayscale(video).float(), dim=(-3, -2, -1), keepdim=True)  # T, 1, 1, 1
    return _blend_with(video, mean, factor)


def adjust_saturation(video: torch.Tensor, factor: float, **kwargs) -> torch.Tensor:
    _check(video)
    return _blend_with(video, _grayscale(video), factor)


def adjust_sharpness(video: torch.Tensor, factor: float, **kwargs) -> torch.Tensor:
    """Blend with torchvision's "degenerate" image: a 3x3 [[1,1,1],[1,5,1],[1,1,1]]/13 blur of the
    interior, rounded, with the 1-pixel border left as is."""
    _check(video)
    t, c, h, w = video.shape
    if h <= 2 or w <= 2:
        return video
    # 3x3 box sum + 4 x centre = the [[1,1,1],[1,5,1],[1,1,1]] kernel, as shifted sums (the
    # depthwise conv2d torchvision runs, and avg_pool2d, are far slower on CPU), in int16 (at most
    # 13 * 255: exact, and half the bytes of float). A multiple of 1/13 is never within float
    # error of .5, so the rounded blur equals torchvision's.
    i = video.to(torch.int16)
    rows = i[..., :-2] + i[..., 1:-1]
    rows += i[..., 2:]  # T, C, H, W-2
    box = rows[..., :-2, :] + rows[..., 1:-1, :]
    box += rows[..., 2:, :]  # T, C, H-2, W-2
    blur = box.add_(i[..., 1:-1, 1:-1], alpha=4).float().div_(13.0).round_()
    x = _float(video)
    # factor * x + (1 - factor) * degenerate, where degenerate is the blur inside and x on the
    # 1-pixel border: both products rounded before the sum, as torchvision's _blend.
    out = x * factor
    out[..., 1:-1, 1:-1] += blur.mul_(1.0 - factor)
    out[..., 0, :] += x[..., 0, :] * (1.0 - factor)
    out[..., -1, :] += x[..., -1, :] * (1.0 - factor)
    out[..., 1:-1, 0] += x[..., 1:-1, 0] * (1.0 - factor)
    out[..., 1:-1, -1] += x[..., 1:-1, -1] * (1.0 - factor)
    return _to_uint8(out)


def autocontrast(video: torch.Tensor, **kwargs) -> torch.Tensor:
    _check(video)
    lo = video.amin(dim=(-2, -1), keepdim=True).float()  # T, C, 1, 1: per frame and channel
    hi = video.amax(dim=(-2, -1), keepdim=True).float()
    scale = 255.0 / (hi - lo)
    flat = ~torch.isfinite(scale)  # constant planes are left unchanged
    lo[flat], scale[flat] = 0.0, 1.0
    return _to_uint8(_float(video).sub_(lo).mul_(scale))


def equalize(video: torch.Tensor, **kwargs) -> torch.Tensor:
    """Histogram equalisation of each frame's each channel (torchvision's per-plane LUT), batched."""
    _check(video)
    t, c, h, w = video.shape
    planes = video.reshape(t * c, h * w)  # P, N
    hist = torch.stack([torch.bincount(p, minlength=256) for p in planes])  # P, 256 (fastest on uint8)
    # torchvision: step = (sum of the non-zero bins but the last) // 255, i.e. all pixels but those
    # of the highest value present.
    last = 255 - (hist.flip(1) != 0).long().argmax(1, keepdim=True)  # P, 1: highest value present
    step = torch.div(h * w - hist.gather(1, last), 255, rounding_mode="floor")  # P, 1
    safe = step.clamp(min=1)
    lut = torch.div(hist.cumsum(1) + torch.div(safe, 2, rounding_mode="floor"), safe, rounding_mode="floor")
    lut = F.pad(lut, [1, 0])[:, :-1].clamp_(0, 255)
    # step 0: the plane is left unchanged (identity LUT)
    lut = torch.where(step == 0, torch.arange(256, device=lut.device), lut).to(torch.uint8)
    out = lut.gather(1, planes.long())
    return out.view(t, c, h, w)


def solarize(video: torch.Tensor, factor: float, **kwargs) -> torch.Tensor:
    _check(video)
    # torchvision: where(video >= threshold, 255 - video, video); for uint8, 255 - v == v ^ 255.
    threshold = int(factor * 255.0)
    if video.device.type != "cpu":
        return video ^ (video >= threshold).view(torch.uint8).mul_(255)
    # numpy: torch's uint8 comparison (and torch.where) is about 10x slower on CPU.
    v = video.numpy()
    mask = (v >= threshold).view(np.uint8)  # 0 / 1
    np.negative(mask, out=mask)  # 0 / 255
    return torch.from_numpy(np.bitwise_xor(v, mask, out=mask))


def _fill_blend(img: torch.Tensor, mask: torch.Tensor, fill: Sequence[float]) -> torch.Tensor:
    """torchvision's fill of resampled pixels, ``img * mask + (1 - mask) * fill``, rounded to uint8.

    ``img`` is the zero-padded bilinear resampling of the clip, ``mask`` that of an all-ones image
    (anything that broadcasts to (H, W)).
    """
    mask = mask.expand(img.shape[-2:]).contiguous()  # broadcast strides make addcmul slow
    fill_t = torch.as_tensor(list(fill), dtype=torch.float32, device=img.device).view(-1, 1, 1)
    # One pass for product and sum (addcmul rounds the product before adding, as torchvision's
    # two ops do); a convex blend of 0-255 values needs no clamp before the cast.
    img = torch.addcmul((1.0 - mask) * fill_t, img, mask, out=img)
    return _truncate(img.round_())


def _affine(video: torch.Tensor, matrix: Sequence[float], fill: Sequence[float]) -> torch.Tensor:
    """torchvision's bilinear ``affine`` with an inverse matrix on the centred pixel grid.

    One output grid and one fill mask (sampled once, as one channel) serve all frames.
    """
    t, c, h, w = video.shape
    dev = video.device
    # torchvision's _gen_affine_grid: pixel centres in centred coordinates, mapped by the matrix and
    # normalised to [-1, 1] (align_corners=False); an outer sum instead of its (H*W, 3) x (3, 2) bmm.
    half = torch.tensor([0.5 * w, 0.5 * h], device=dev)
    rescaled = torch.tensor(matrix, dtype=torch.float32, device=dev).view(2, 3).T / half  # 3, 2
    xs = torch.linspace(-w * 0.5 + 0.5, w * 0.5 - 0.5, steps=w, device=dev).view(1, w, 1)
    ys = torch.linspace(-h * 0.5 + 0.5, h * 0.5 - 0.5, steps=h, device=dev).view(h, 1, 1)
    grid = (xs * rescaled[0] + ys * rescaled[1] + rescaled[2]).unsqueeze(0)  # 1, H, W, 2
    # Frames as the batch (a (1, T*C) layout reads T*C scattered planes per pixel: 2x slower).
    img = F.grid_sample(_float(video), grid.expand(t, h, w, 2), mode="bilinear", padding_mode="zeros",
                        align_corners=False)  # T, C, H, W
    mask = F.grid_sample(torch.ones(1, 1, h, w, device=dev), grid, mode="bilinear", padding_mode="zeros",
                         align_corners=False).view(h, w)
    return _fill_blend(img, mask, fill)


def _translate(video: torch.Tensor, shift: float, dim: int, fill: Sequence[float]) -> torch.Tensor:
    """The bilinear affine of a pure translation: output pixel j along ``dim`` (-1: x, -2: y) reads
    source position ``j + shift``, zero outside. Two weighted slices instead of a grid_sample;
    equal to it up to float rounding of the weights."""
    x = _float(video)
    n = x.shape[dim]
    k = math.floor(shift)
    frac = shift - k
    img = torch.zeros_like(x)
    mask = torch.zeros(n, device=x.device)
    for offset, weight in ((k, 1.0 - frac), (k + 1, frac)):
        lo, hi = max(0, -offset), min(n, n - offset)  # outputs whose source j + offset is inside
        if weight == 0.0 or lo >= hi:
            continue
        img.narrow(dim, lo, hi - lo).add_(x.narrow(dim, lo + offset, hi - lo), alpha=weight)
        mask[lo:hi] += weight
    return _fill_blend(img, mask.view(n) if dim == -1 else mask.view(n, 1), fill)


def _transpose_hw(video: torch.Tensor) -> torch.Tensor:
    """(T, C, H, W) -> contiguous (T, C, W, H): numpy's strided uint8 copy is several times faster than
    torch's on CPU."""
    if video.device.type != "cpu":
        return video.transpose(-1, -2).contiguous()
    return torch.from_numpy(video.numpy().transpose(0, 1, 3, 2).copy())


def _shift_rows(video: torch.Tensor, shifts: torch.Tensor, fill: Sequence[float]) -> torch.Tensor:
    """The bilinear affine of a horizontal shear: in row i, output pixel j reads source position
    ``j + shifts[i]``, zero outside. Equal to grid_sample up to float rounding of the weights.

    Within a row both taps have fixed offsets (``floor(shifts[i])`` and one more) and fixed weights,
    so the taps of every row of every frame are one ``index_select`` of W + 1 contiguous bytes from
    a zero-padded copy of the clip (an overlapping strided view whose rows start at every byte),
    then one weighted sum. An extra all-ones plane goes through the same gather and gives the fill
    mask, as torchvision resamples a ones channel.
    """
    t, c, h, w = video.shape
    planes = t * c
    k = shifts.to(torch.float64).floor()
    w1 = (shifts - k).to(torch.float32).view(h, 1)  # weight of the right tap, per row
    k = k.clamp(-w - 1, w).long()  # beyond the row on either side: every tap reads padding
    pad = int(k.abs().max()) + 1
    wp = w + 2 * pad
    # P + 1, H, W + 2 pad uint8: the clip and a ones plane, zero-padded left and right.
    buf = video.new_zeros(planes + 1, h, wp)
    buf[:planes, :, pad:pad + w] = video.reshape(planes, h, w)
    buf[planes, :, pad:pad + w] = 1
    # Row r of `starts_view` is the W + 1 bytes from flat offset r; the last tap of the last row
    # reads at most byte (P + 1) * H * wp - 1 because |k| < pad.
    flat = buf.view(-1)
    starts_view = flat.as_strided((flat.numel() - w, w + 1), (1, 1))
    first = (torch.arange(planes + 1, device=video.device).view(-1, 1) * (h * wp)
             + torch.arange(h, device=video.device).view(1, -1) * wp + pad + k.to(video.device).view(1, -1))
    taps = _float(starts_view.index_select(0, first.view(-1)).view(planes + 1, h, w + 1))
    w1 = w1.to(video.device)
    out = taps[..., :w] * (1.0 - w1)  # P + 1, H, W
    out.addcmul_(taps[..., 1:], w1)
    img, mask = out[:planes].view(t, c, h, w), out[planes]
    return _fill_blend(img, mask, fill)


def rotate(video: torch.Tensor, factor: float, fill: Sequence[float] = (0, 0, 0), **kwargs) -> torch.Tensor:
    """Counter-clockwise rotation by ``factor`` degrees about the centre, no expansion."""
    _check(video)
    a = math.radians(-factor)  # torchvision's inverse matrix for rotate(angle)
    return _affine(video, [math.cos(a), math.sin(a), 0.0, -math.sin(a), math.cos(a), 0.0], fill)


def shear_x(video: torch.Tensor, factor: float, fill: Sequence[float] = (0, 0, 0), **kwargs) -> torch.Tensor:
    """pytorchvideo's matrix [1, factor, H * factor / 2, 0, 1, 0]: row i moves by factor * (i + 0.5)."""
    _check(video)
    h = video.size(-2)
    return _shift_rows(video, factor * (torch.arange(h, dtype=torch.float64, device=video.device) + 0.5), fill)


def shear_y(video: torch.Tensor, factor: float, fill: Sequence[float] = (0, 0, 0), **kwargs) -> torch.Tensor:
    """pytorchvideo's matrix [1, 0, 0, factor, 1, W * factor / 2]: column j moves by factor * (j + 0.5),
    i.e. ShearX of the transposed clip."""
    _check(video)
    w = video.size(-1)
    shifts = factor * (torch.arange(w, dtype=torch.float64, device=video.device) + 0.5)
    return _transpose_hw(_shift_rows(_transpose_hw(video), shifts, fill))


def translate_x(video: torch.Tensor, factor: float, fill: Sequence[float] = (0, 0, 0), **kwargs) -> torch.Tensor:
    """pytorchvideo's matrix [1, 0, factor * W, 0, 1, 0]."""
    _check(video)
    return _translate(video, factor * video.size(-1), -1, fill)


def translate_y(video: torch.Tensor, factor: float, fill: Sequence[float] = (0, 0, 0), **kwargs) -> torch.Tensor:
    """pytorchvideo's matrix [1, 0, 0, 0, 1, factor * H]."""
    _check(video)
    return _translate(video, factor * video.size(-2), -2, fill)


# pytorchvideo's op names -> uint8 clip kernels (Invert and Posterize are already a single
# integer op in pytorchvideo/torchvision and are used as they are).
UINT8_OPS = {
    "AdjustBrightness": adjust_brightness,
    "AdjustContrast": adjust_contrast,
    "AdjustSaturation": adjust_saturation,
    "AdjustSharpness": adjust_sharpness,
    "AutoContrast": autocontrast,
    "Equalize": equalize,
    "Invert": _NAME_TO_TRANSFORM_FUNC["Invert"],
    "Rotate": rotate,
    "Posterize": _NAME_TO_TRANSFORM_FUNC["Posterize"],
    "Solarize": solarize,
    "ShearX": shear_x,
    "ShearY": shear_y,
    "TranslateX": translate_x,
    "TranslateY": translate_y,
}


class VideoRandAugment:
    """pytorchvideo's ``RandAugment(magnitude, num_layers, prob)`` on (T, 3, H, W) uint8 clips.

    Same ops, magnitudes and random draws as pytorchvideo's class (built from its
    ``AugmentTransform`` and ``OpSampler``); one draw per clip, so every frame gets the same ops.

    Args:
        magnitude: RandAugment magnitude m (pytorchvideo's scale, max 10).
        num_layers: ops per clip (n).
        prob: probability of applying each drawn op.
        fill: uint8 RGB value of pixels that the geometric ops move in from outside.
    """

    def __init__(self, magnitude: int = 9, num_layers: int = 2, prob: float = 0.5,
                 fill: Sequence[int] = (128, 128, 128)):
        ops = [AugmentTransform(name, magnitude, prob=prob, name_to_transform_func=UINT8_OPS,
                                transform_max_paras=_TRANSFORM_RANDAUG_MAX_PARAMS,
                                transform_hparas={"fill": tuple(fill)}, sampling_type="gaussian",
                                sampling_hparas=SAMPLING_RANDAUG_DEFAULT_HPARAS)
               for name in _TRANSFORM_RANDAUG_MAX_PARAMS]
        self.sampler = OpSampler(ops, num_sample_op=num_layers)

    def __call__(self, video: torch.Tensor) -> torch.Tensor:
        return self.sampler(video)
