"""VideoRandAugment against pytorchvideo's RandAugment: same ops, same draws, same pixels.

The uint8 kernels must reproduce pytorchvideo's (torchvision's) results: bit for bit for the
pointwise and histogram ops, within 1 on a small fraction of pixels for the resampling ops (whose
weights are computed differently, so exact .5 ties can round the other way).
"""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

import regionvit_video  # noqa: F401  (pytorchvideo import shim)
from pytorchvideo.transforms import RandAugment
from pytorchvideo.transforms.augmentations import _NAME_TO_TRANSFORM_FUNC

from regionvit_video.data.rand_augment import UINT8_OPS, VideoRandAugment

FILL = (128, 100, 50)
RESAMPLING = {"Rotate", "ShearX", "ShearY", "TranslateX", "TranslateY"}
# A factor range per op that covers both signs and pytorchvideo's magnitudes (m up to 10).
FACTORS = {
    "AdjustBrightness": (0.1, 1.9), "AdjustContrast": (0.1, 1.9), "AdjustSaturation": (0.1, 1.9),
    "AdjustSharpness": (0.1, 1.9), "Rotate": (-30.0, 30.0), "Posterize": (0, 8), "Solarize": (0.0, 1.0),
    "ShearX": (-0.3, 0.3), "ShearY": (-0.3, 0.3), "TranslateX": (-0.45, 0.45), "TranslateY": (-0.45, 0.45),
}


def smooth_clip(shape: tuple[int, int, int, int], seed: int) -> torch.Tensor:
    """A (T, 3, H, W) uint8 clip with image-like structure, one constant plane and saturated pixels."""
    t, c, h, w = shape
    g = torch.Generator().manual_seed(seed)
    coarse = torch.rand(t, c, max(2, h // 8), max(2, w // 8), generator=g) * 300 - 20
    clip = F.interpolate(coarse, size=(h, w), mode="bilinear", align_corners=False).clamp(0, 255).round()
    clip = clip.to(torch.uint8)
    clip[0, 1] = 77  # a constant plane: autocontrast and equalize leave it unchanged
    return clip.contiguous()


@pytest.mark.parametrize("name", sorted(UINT8_OPS))
@pytest.mark.parametrize("shape", [(4, 3, 48, 64), (3, 3, 37, 29)])
def test_op_matches_pytorchvideo(name, shape):
    clip = smooth_clip(shape, seed=10 * sorted(UINT8_OPS).index(name) + shape[2])
    g = torch.Generator().manual_seed(1)
    lo, hi = FACTORS.get(name, (0.0, 0.0))
    differing, total = 0, 0
    for _ in range(6):
        args = ()
        if name in FACTORS:
            f = lo + (hi - lo) * float(torch.rand(1, generator=g))
            args = (int(round(f)),) if name == "Posterize" else (f,)
        ref = _NAME_TO_TRANSFORM_FUNC[name](clip, *args, fill=FILL)
        out = UINT8_OPS[name](clip, *args, fill=FILL)
        assert out.dtype == torch.uint8 and out.shape == clip.shape
        diff = (ref.int() - out.int()).abs()
        if name in RESAMPLING:
            assert int(diff.max()) <= 1, f"{name}{args}: max difference {int(diff.max())}"
            differing += int((diff > 0).sum())
            total += diff.numel()
        else:
            assert torch.equal(ref, out), f"{name}{args}: {int((diff > 0).sum())} pixels differ"
    if name in RESAMPLING:
        assert differing / total < 0.01, f"{name}: {differing} of {total} pixels differ by 1"


def test_identity_magnitudes_and_channels_last_input():
    clip = smooth_clip((2, 3, 40, 40), seed=3)
    assert torch.equal(UINT8_OPS["AdjustBrightness"](clip, 1.0), clip)
    assert torch.equal(UINT8_OPS["TranslateX"](clip, 0.0, fill=FILL), clip)
    assert torch.equal(UINT8_OPS["ShearX"](clip, 0.0, fill=FILL), clip)
    # Clips may arrive channels-last (a view of decoded (T, H, W, C) frames), or as the (T, C, H, W)
    # view of a (C, T, H, W) clip (what TrainTransform passes): same results from every op.
    cl = clip.contiguous(memory_format=torch.channels_last)
    ct = clip.transpose(0, 1).contiguous().transpose(0, 1)
    args = {"Rotate": (12.0,), "Posterize": (3,), "Solarize": (0.4,)}
    for name, op in UINT8_OPS.items():
        a = args.get(name, ()) if name in args or name in ("Equalize", "AutoContrast", "Invert") else (0.7,)
        want = op(clip, *a, fill=FILL)
        for layout, view in (("channels-last", cl), ("(C, T)", ct)):
            assert torch.equal(op(view, *a, fill=FILL), want), f"{name} on a {layout} clip"


def test_translation_beyond_the_frame_is_all_fill():
    clip = smooth_clip((2, 3, 20, 30), seed=4)
    out = UINT8_OPS["TranslateX"](clip, 1.5, fill=FILL)
    assert torch.equal(out, torch.tensor(FILL, dtype=torch.uint8).view(1, 3, 1, 1).expand_as(clip))


def test_policy_draws_what_pytorchvideo_draws():
    """Same seed, same ops and magnitudes: the clips agree to within 1 (resampling ties)."""
    clip = smooth_clip((4, 3, 48, 64), seed=5)
    ours = VideoRandAugment(magnitude=9, num_layers=2, fill=(128, 128, 128))
    ref = RandAugment(magnitude=9, num_layers=2, transform_hparas={"fill": (128, 128, 128)})
    changed, differing, total = 0, 0, 0
    for seed in range(60):
        torch.manual_seed(seed)
        a = ref(clip)
        state_after_ref = torch.get_rng_state()
        torch.manual_seed(seed)
        b = ours(clip)
        assert torch.equal(torch.get_rng_state(), state_after_ref), f"seed {seed}: different random draws"
        diff = (a.int() - b.int()).abs()
        assert int(diff.max()) <= 1, f"seed {seed}: max difference {int(diff.max())}"
        assert float((diff > 0).float().mean()) < 0.05, f"seed {seed}"  # ties of two chained ops
        differing, total = differing + int((diff > 0).sum()), total + diff.numel()
        changed += int(not torch.equal(b, clip))
    assert differing / total < 0.01
    assert changed > 20  # the policy does act (each of 2 ops applies with p 0.5)


def test_rejects_float_or_non_rgb_clips():
    with pytest.raises(ValueError, match="uint8"):
        UINT8_OPS["AdjustBrightness"](torch.rand(2, 3, 8, 8), 1.2)
    with pytest.raises(ValueError, match=r"\(T, 3, H, W\)"):
        UINT8_OPS["Rotate"](torch.zeros(2, 1, 8, 8, dtype=torch.uint8), 10.0, fill=FILL)
