"""Frame sampling rules (clips and sliding windows), training augmentation, test views and video mixup, and the
pytorchvideo import shim they rely on."""
import subprocess
import sys

import numpy as np
import pytest
import torch

from regionvit_video.config.defaults import get_cfg
from regionvit_video.data.mixup import VideoMixup, build_mixup
from regionvit_video.data.sampling import (clip_indices, dense_indices, sliding_windows, stride_in_frames,
                                            uniform_indices)
from regionvit_video.data.transforms import BatchNormalize, TrainTransform, eval_views

MEAN, STD = (0.0, 0.0, 0.0), (1.0, 1.0, 1.0)


# ---------------------------------------------------------------------------------------------- #
# Sampling
# ---------------------------------------------------------------------------------------------- #
def test_uniform_test_takes_segment_midpoints_pyslowfast_rule():
    # L = 33, T = 8: seg = 4, segment i spans [4i, 4i+4], midpoint 4i+2.
    np.testing.assert_array_equal(uniform_indices(33, 8, train=False), 4 * np.arange(8) + 2)
    # Non-integer segments: seg = 299/8 = 37.375.
    seg = 299 / 8
    starts = np.round(seg * np.arange(8)).astype(int)
    ends = np.round(seg * np.arange(1, 9)).astype(int)
    np.testing.assert_array_equal(uniform_indices(300, 8, train=False), (starts + ends) // 2)


def test_uniform_train_picks_one_frame_inside_each_segment():
    rng = np.random.default_rng(0)
    seen = set()
    for _ in range(200):
        idx = uniform_indices(33, 8, train=True, rng=rng)
        assert np.all(idx >= 4 * np.arange(8)) and np.all(idx <= 4 * np.arange(8) + 4)
        seen.update(idx.tolist())
    assert seen == set(range(33))  # both ends of every (inclusive) segment are reachable


def test_uniform_multi_clip_uses_mmaction2_offsets():
    seg = 299 / 8
    for k in range(3):
        expected = np.round(seg * np.arange(8)).astype(int) + int(seg / 4 * (k + 1))
        np.testing.assert_array_equal(uniform_indices(300, 8, train=False, clip_idx=k, num_clips=3), expected)


@pytest.mark.parametrize("frames", [1, 3, 7])
def test_short_videos_repeat_frames(frames):
    for train in (True, False):
        idx = uniform_indices(frames, 8, train=train, rng=np.random.default_rng(0))
        assert len(idx) == 8 and idx.min() >= 0 and idx.max() <= frames - 1 and np.all(np.diff(idx) >= 0)
        d = dense_indices(frames, 8, 8, train=train, rng=np.random.default_rng(0))
        assert len(d) == 8 and d.max() <= frames - 1


def test_dense_window_positions():
    # 8 x 8 at 30 fps = 64-frame window in a 300-frame video.
    centre = dense_indices(300, 8, 8, train=False)
    np.testing.assert_array_equal(centre, np.linspace(118, 181, 8).astype(int))
    first = dense_indices(300, 8, 8, train=False, clip_idx=0, num_clips=3)
    last = dense_indices(300, 8, 8, train=False, clip_idx=2, num_clips=3)
    assert first[0] == 0 and last[-1] == 299
    # 60 fps video: the window covers twice as many frames.
    fast = dense_indices(600, 8, 8, train=False, fps=60, target_fps=30)
    assert fast[-1] - fast[0] == 127
    rng = np.random.default_rng(1)
    starts = {dense_indices(300, 8, 8, train=True, rng=rng)[0] for _ in range(50)}
    assert len(starts) > 10 and max(starts) <= 300 - 64


def test_clip_indices_rejects_unknown_sampling():
    with pytest.raises(ValueError, match="DATA.SAMPLING"):
        clip_indices("random", 10, 8, train=False)


def test_sliding_window_counts():
    for length in range(1, 40):
        idx, bounds = sliding_windows(length, window=8, stride=3, num_frames=4)
        expected = 1 if length < 8 else 1 + (length - 8) // 3
        assert len(idx) == len(bounds) == expected
        assert idx.min() >= 0 and idx.max() < length
        assert (bounds[:, 1] <= length).all() and (np.diff(bounds[:, 0]) == 3).all()
        assert (idx >= bounds[:, :1]).all() and (idx < bounds[:, 1:]).all()
    assert stride_in_frames(0.5, "seconds", 30.0) == 15
    with pytest.raises(ValueError, match="STRIDE_UNIT"):
        stride_in_frames(1, "minutes", 30.0)


# ---------------------------------------------------------------------------------------------- #
# Transforms
# ---------------------------------------------------------------------------------------------- #
def test_pytorchvideo_transforms_import_with_shim():
    import pytorchvideo.transforms as T

    assert "torchvision.transforms.functional_tensor" in sys.modules
    video = torch.rand(3, 4, 32, 48)
    out = T.ShortSideScale(16)(video)
    assert out.shape == (3, 4, 16, 24)


def test_importing_pytorchvideo_prints_no_script_method_warning():
    """The shim silences exactly pytorchvideo's torch.jit.script_method FutureWarning (every run_net.py call
    printed it); other FutureWarnings still show."""
    code = ("import warnings, regionvit_video, pytorchvideo.transforms\n"
            "warnings.warn('another FutureWarning', FutureWarning)")
    err = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stderr
    assert "script_method" not in err and "another FutureWarning" in err


def _coord_video(t, h, w):
    """uint8 (T, H, W, 3): channel 0 = column, channel 1 = row, channel 2 = frame."""
    ys, xs = np.meshgrid(np.arange(h), np.arange(w), indexing="ij")
    frame = np.stack([xs % 256, ys % 256, np.zeros_like(xs)], -1).astype(np.uint8)
    video = np.repeat(frame[None], t, 0)
    video[..., 2] = (np.arange(t) * 10)[:, None, None]
    return torch.from_numpy(video)


def test_train_transform_shape_and_same_augmentation_on_all_frames():
    torch.manual_seed(0)
    frames = torch.from_numpy(np.random.default_rng(0).integers(0, 255, (1, 40, 60, 3), dtype=np.uint8))
    frames = frames.repeat(6, 1, 1, 1)  # six identical frames
    tf = TrainTransform(jitter_scales=(36, 44), crop_size=32, random_flip=True, rand_augment=True, re_prob=0.0,
                        mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25))
    for _ in range(10):
        out = tf(frames)
        assert out.shape == (3, 6, 32, 32) and out.dtype == torch.float32
        # Identical input frames stay identical: crop, flip and RandAugment ops are shared by the clip.
        torch.testing.assert_close(out, out[:, :1].expand_as(out))


def test_random_erasing_uses_one_box_for_all_frames():
    torch.manual_seed(3)
    frames = torch.full((5, 32, 32, 3), 128, dtype=torch.uint8)
    tf = TrainTransform(jitter_scales=(32, 32), crop_size=32, random_flip=False, rand_augment=False, re_prob=1.0,
                        mean=(128 / 255,) * 3, std=(1.0, 1.0, 1.0))  # normalised clip is exactly 0
    out = tf(frames)
    changed = (out != 0).any(0)  # T, H, W: pixels the eraser overwrote
    assert changed.any() and not changed.all()
    for t in range(1, 5):
        assert torch.equal(changed[t], changed[0])


def test_train_transform_without_normalisation_gives_the_uint8_clip():
    frames = torch.from_numpy(np.random.default_rng(1).integers(0, 255, (4, 40, 60, 3), dtype=np.uint8))
    kw = dict(jitter_scales=(36, 44), crop_size=32, rand_augment=True, re_prob=0.0, mean=MEAN, std=STD)
    torch.manual_seed(5)
    raw = TrainTransform(normalize=False, **kw)(frames)
    assert raw.shape == (3, 4, 32, 32) and raw.dtype == torch.uint8 and raw.is_contiguous()
    torch.manual_seed(5)
    ref = TrainTransform(**kw)(frames)  # the same draws, normalised in the transform
    assert torch.equal(BatchNormalize(MEAN, STD, re_prob=0.0)(raw[None])[0], ref)
    with pytest.raises(ValueError, match="re_prob=0"):
        TrainTransform(normalize=False, jitter_scales=(36, 44), crop_size=32, re_prob=0.25)


def test_train_transform_flip_and_jitter_scales():
    torch.manual_seed(0)
    video = _coord_video(2, 40, 80)
    tf = TrainTransform(jitter_scales=(40, 40), crop_size=40, random_flip=True, rand_augment=False, re_prob=0.0,
                        mean=MEAN, std=STD)
    directions = set()
    for _ in range(20):
        cols = tf(video)[0, 0, 0] * 255
        directions.add(bool(cols[1] > cols[0]))
    assert directions == {True, False}
    with pytest.raises(ValueError, match="TRAIN_JITTER_SCALES"):
        TrainTransform(jitter_scales=(200, 256), crop_size=224)


def test_three_test_crops_are_start_centre_end_along_the_long_side():
    # Landscape 60x100 -> short side 40: 40x66; crops of 32 at x = 0, 17, 34 (original columns
    # about 0, 26, 52), centred vertically (y = 4, original row about 6).
    views = eval_views(_coord_video(3, 60, 100), scale=40, crop_size=32, num_crops=3, mean=MEAN, std=STD)
    assert views.shape == (3, 3, 3, 32, 32)
    x_left = [float(v[0, 0, 16, 0]) * 255 for v in views]  # original column of each crop's left edge
    assert x_left[0] < 2 and 24 < x_left[1] < 28 and 50 < x_left[2] < 54
    y_top = [float(v[1, 0, 0, 16]) * 255 for v in views]
    assert all(abs(y - y_top[0]) < 1e-3 for y in y_top) and 4 < y_top[0] < 9
    # Portrait: crops go top, centre, bottom.
    views = eval_views(_coord_video(3, 100, 60), scale=40, crop_size=32, num_crops=3, mean=MEAN, std=STD)
    y = [float(v[1, 0, 0, 16]) for v in views]
    assert y[0] < y[1] < y[2]
    # One crop: the centre one.
    single = eval_views(_coord_video(3, 60, 100), scale=40, crop_size=32, num_crops=1, mean=MEAN, std=STD)
    torch.testing.assert_close(single[0], eval_views(_coord_video(3, 60, 100), scale=40, crop_size=32,
                                                     num_crops=3, mean=MEAN, std=STD)[1])


def test_tiny_and_grayscale_like_frames_are_upscaled_to_full_crops():
    tiny = torch.randint(0, 255, (4, 12, 16, 3), dtype=torch.uint8)
    assert eval_views(tiny, scale=40, crop_size=32, num_crops=3, mean=MEAN, std=STD).shape == (3, 3, 4, 32, 32)
    tf = TrainTransform(jitter_scales=(40, 48), crop_size=32, re_prob=0.0)
    assert tf(tiny).shape == (3, 4, 32, 32)


# ---------------------------------------------------------------------------------------------- #
# Mixup / CutMix
# ---------------------------------------------------------------------------------------------- #
def test_cutmix_pastes_the_same_box_on_every_frame_and_labels_match_area():
    mix = VideoMixup(mixup_alpha=0.0, cutmix_alpha=1.0, prob=1.0, label_smoothing=0.0, num_classes=4)
    np.random.seed(0)
    for _ in range(5):
        video = torch.stack([torch.zeros(3, 4, 16, 20), torch.ones(3, 4, 16, 20)])
        mixed, target = mix(video.clone(), torch.tensor([0, 1]))
        pasted = mixed[0] == 1  # C, T, H, W
        for t in range(1, 4):
            assert torch.equal(pasted[:, t], pasted[:, 0])
        assert torch.equal(pasted[0], pasted[2])
        area = pasted[0, 0].float().mean()
        torch.testing.assert_close(target[0], torch.tensor([1 - area, area, 0, 0]))
        torch.testing.assert_close(target.sum(1), torch.ones(2))


def test_mixup_blends_whole_clips_with_label_smoothing():
    mix = VideoMixup(mixup_alpha=0.8, cutmix_alpha=0.0, prob=1.0, label_smoothing=0.1, num_classes=3)
    np.random.seed(1)
    video = torch.stack([torch.zeros(3, 2, 8, 8), torch.ones(3, 2, 8, 8), torch.full((3, 2, 8, 8), 2.0)])
    mixed, target = mix(video.clone(), torch.tensor([0, 1, 2]))
    lam = 1 - float(mixed[0].flatten()[0]) / 2.0  # clip 0 mixed with clip 2 (value 2)
    assert 0 <= lam <= 1
    assert torch.allclose(mixed[0], torch.full_like(mixed[0], 2 * (1 - lam)))
    assert torch.allclose(mixed[1], torch.ones_like(mixed[1]))  # odd batch: middle clip mixes with itself
    off = 0.1 / 3
    expected0 = lam * torch.tensor([1 - 0.1 + off, off, off]) + (1 - lam) * torch.tensor([off, off, 1 - 0.1 + off])
    torch.testing.assert_close(target[0], expected0)


def test_mixup_rejects_image_batches_and_build_mixup_reads_config():
    mix = VideoMixup(num_classes=5)
    with pytest.raises(ValueError, match="B, C, T, H, W"):
        mix(torch.zeros(2, 3, 8, 8), torch.tensor([0, 1]))
    cfg = get_cfg()
    cfg.MODEL.NUM_CLASSES = 7
    built = build_mixup(cfg)
    assert isinstance(built, VideoMixup) and built.num_classes == 7
    assert built.mixup_alpha == 0.8 and built.cutmix_alpha == 1.0 and built.label_smoothing == 0.1
    cfg.MIXUP.ENABLE = False
    assert build_mixup(cfg) is None
