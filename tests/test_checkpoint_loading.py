"""load_pretrained: official files, this toolkit's files, classifier re-init, inflation, resizing."""
from __future__ import annotations

import argparse
import collections
import logging

import pytest
import torch

from regionvit_video.layers import rel_pos_index
from regionvit_video.models import create_model, load_pretrained
from regionvit_video.models.regionvit import resize_rel_pos_table
from regionvit_video.utils.io import UnsafeCheckpointError


def _randomise(model):
    """Non-trivial values everywhere (LayerNorm affine and temporal_fc included)."""
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    return model


def test_official_format_loads_strictly_and_runs(tmp_path):
    src = _randomise(create_model("regionvit_tiny")).eval()
    sd = src.state_dict()
    ck = {"model": sd, "optimizer": {"state": {}, "param_groups": []}, "lr_scheduler": {}, "epoch": 299,
          "args": argparse.Namespace(model="regionvit_tiny_224", drop_path=0.1), "scaler": {}, "max_accuracy": 80.4}
    path = tmp_path / "regionvit_tiny.pth"
    torch.save(ck, path)
    dst = create_model("regionvit_tiny").eval()
    report = load_pretrained(dst, path)
    assert report.missing == [] and report.unexpected == [] and report.reinitialised == []
    assert report.loaded == len([k for k in sd if ".proj_cls." not in k])
    assert "loaded" in str(report)
    for k, v in sd.items():
        assert torch.equal(dst.state_dict()[k], v), k
    dst.load_state_dict(sd, strict=True)
    for hw in [(224, 224), (256, 320), (200, 168)]:
        with torch.no_grad():
            out = dst(torch.randn(1, 3, *hw))
        assert out.shape == (1, 1000) and torch.isfinite(out).all()


@pytest.mark.parametrize("wrap", ["bare", "model_state", "module_prefix", "proj_cls_only", "extra_det_norm", "legacy"])
def test_wrappers_prefixes_and_aliases(tmp_path, wrap):
    src = _randomise(create_model("regionvit_pico", num_classes=4))
    sd = src.state_dict()
    if wrap == "module_prefix":
        sd = {"module." + k: v for k, v in sd.items()}
    elif wrap == "proj_cls_only":
        sd = {k: v for k, v in sd.items() if ".block.0.proj." not in k}
    elif wrap == "extra_det_norm":
        sd = {**sd, **{f"norm{i}.{w}": torch.ones(1, 8, 1, 1) for i in range(4) for w in ("weight", "bias")}}
    ck = {"model_state": sd, "epoch": 3} if wrap == "model_state" else sd
    if wrap == "legacy":  # the official convert tools write the pre-zip format
        torch.save({"model": sd}, tmp_path / "ck.pth", _use_new_zipfile_serialization=False)
    else:
        torch.save(ck, tmp_path / "ck.pth")
    dst = create_model("regionvit_pico", num_classes=4)
    report = load_pretrained(dst, tmp_path / "ck.pth")
    assert report.missing == [] and report.unexpected == []
    for k, v in src.state_dict().items():
        torch.testing.assert_close(dst.state_dict()[k], v, msg=lambda m: f"{k}: {m}")


def test_det_norm_model_reports_absent_norms(tmp_path, caplog):
    torch.save({"model": create_model("regionvit_pico").state_dict()}, tmp_path / "ck.pth")
    dst = create_model("regionvit_pico", det_norm=True)
    with caplog.at_level(logging.WARNING):
        report = load_pretrained(dst, tmp_path / "ck.pth")
    assert sorted(report.missing) == sorted(f"norm{i}.{w}" for i in range(4) for w in ("weight", "bias"))
    assert "norm0.weight" in caplog.text  # never silent
    assert (dst.norm0.weight == 1).all()


def test_head_reinitialised_other_mismatch_refused(tmp_path):
    src = _randomise(create_model("regionvit_pico", num_classes=10))
    torch.save({"model": src.state_dict()}, tmp_path / "ck.pth")
    dst = create_model("regionvit_pico", num_classes=5)
    report = load_pretrained(dst, tmp_path / "ck.pth")
    assert sorted(report.reinitialised) == ["head.bias", "head.weight"] and report.missing == []
    assert "reinitialised" in str(report)
    torch.testing.assert_close(dst.norm.weight, src.norm.weight)
    assert (dst.head.bias == 0).all() and dst.head.weight.std() < 0.05

    bad = dict(src.state_dict())
    bad["norm.weight"] = torch.ones(7)
    torch.save(bad, tmp_path / "bad.pth")
    with pytest.raises(ValueError, match=r"'norm.weight'.*\(7,\).*\(256,\)"):
        load_pretrained(create_model("regionvit_pico", num_classes=10), tmp_path / "bad.pth")
    report = load_pretrained(create_model("regionvit_pico", num_classes=10), tmp_path / "bad.pth", strict_shapes=False)
    assert report.reinitialised == ["norm.weight"]


class _Evil(collections.OrderedDict):
    pass


def test_unsafe_file_refused(tmp_path):
    torch.save(_Evil(a=torch.zeros(1)), tmp_path / "evil.pth")
    with pytest.raises(UnsafeCheckpointError):
        load_pretrained(create_model("regionvit_pico"), tmp_path / "evil.pth")
    torch.save({"model": {}}, tmp_path / "empty.pth")
    with pytest.raises(ValueError, match="empty.pth"):
        load_pretrained(create_model("regionvit_pico"), tmp_path / "empty.pth")


# --- inflation ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("name,size,frames,init,scratch_init", [
    ("tiny", (224, 224), 2, "zero", False),
    ("pico", (200, 168), 3, "copy", False),
    ("pico", (56, 56), 4, "zero", True),  # a model built with the from-scratch init still inflates to zeros
])
@pytest.mark.numerics
def test_inflated_static_clip_equals_image_model(tmp_path, name, size, frames, init, scratch_init):
    image = _randomise(create_model(f"regionvit_{name}", num_classes=1000)).eval()
    torch.save({"model": image.state_dict()}, tmp_path / "img.pth")
    kwargs = dict(time_embed_init="normal", temporal_fc_init="trunc_normal") if scratch_init else {}
    video = create_model(f"regionvit_video_{name}", num_classes=1000, num_frames=frames, **kwargs).eval()
    report = load_pretrained(video, tmp_path / "img.pth", temporal_init=init)
    assert report.missing == [] and report.unexpected == [] and report.reinitialised == []
    assert "time_embed" in report.created and any(".temporal_attn.qkv.weight" in k for k in report.created)
    # float64: the two models compute the same function in another order (frames batched, zero temporal
    # residuals added), so they may differ by rounding alone: ~1e-15 here, on any CPU.
    img = torch.randn(1, 3, *size, dtype=torch.float64)
    clip = img[:, :, None].expand(-1, -1, frames, -1, -1)
    with torch.no_grad():
        diff = (video.double()(clip) - image.double()(img)).abs().max().item()
    assert diff <= 1e-10, diff


def test_inflation_copy_and_zero_rules(tmp_path):
    image = _randomise(create_model("regionvit_pico", num_classes=7))
    torch.save({"model": image.state_dict()}, tmp_path / "img.pth")
    blk = "layers.2.block.2."
    for init in ("zero", "copy"):
        video = create_model("regionvit_video_pico", num_classes=7, num_frames=4)
        load_pretrained(video, tmp_path / "img.pth", temporal_init=init)
        sd, isd = video.state_dict(), image.state_dict()
        assert (sd[blk + "temporal_fc.weight"] == 0).all() and (sd[blk + "temporal_fc.bias"] == 0).all()
        same = torch.equal(sd[blk + "temporal_attn.qkv.weight"], isd[blk + "attn.qkv.weight"])
        assert same == (init == "copy")
        if init == "copy":
            assert torch.equal(sd[blk + "temporal_norm.weight"], isd[blk + "norm1.weight"])
            assert torch.equal(sd[blk + "temporal_attn.proj.bias"], isd[blk + "attn.proj.bias"])
    with pytest.raises(ValueError, match="temporal_init"):
        load_pretrained(video, tmp_path / "img.pth", temporal_init="mean")


def test_video_checkpoint_round_trip_and_time_embed_resampling(tmp_path):
    src = _randomise(create_model("regionvit_video_pico", num_classes=3, num_frames=8))
    torch.save({"model_state": src.state_dict(), "epoch": 1}, tmp_path / "v.pth")
    same = create_model("regionvit_video_pico", num_classes=3, num_frames=8)
    report = load_pretrained(same, tmp_path / "v.pth")
    assert report.created == [] and report.missing == [] and report.unexpected == []
    torch.testing.assert_close(same.time_embed, src.time_embed)
    torch.testing.assert_close(same.layers[1].block[1].temporal_fc.weight, src.layers[1].block[1].temporal_fc.weight)
    fewer = create_model("regionvit_video_pico", num_classes=3, num_frames=4)
    load_pretrained(fewer, tmp_path / "v.pth")
    expected = torch.nn.functional.interpolate(src.time_embed.detach().transpose(1, 2), size=4, mode="linear")
    torch.testing.assert_close(fewer.time_embed.detach(), expected.transpose(1, 2))


# --- window-size change: relative-position tables and regional tokenizer -----------------------------
def test_rel_pos_resize_keeps_geometry():
    """A bias peaked at offset (0, 0) stays peaked at offset (0, 0) after 7 -> 14 and 14 -> 7 resizing."""
    for old, new in [(7, 14), (14, 7), (7, 7)]:
        size = 2 * old - 1
        d = torch.arange(size) - (old - 1)  # geometric offsets
        geo = torch.exp(-(d[:, None] ** 2 + 0.5 * d[None, :] ** 2) / 4.0)
        # into the official wrapped layout: offset o lives at (o + ws//2) mod (2ws-1)
        wrapped = torch.empty(size, size)
        pos = (d + old // 2) % size
        wrapped[pos[:, None], pos[None, :]] = geo
        table = wrapped.reshape(1, -1)
        resized = resize_rel_pos_table(table, new)
        assert resized.shape == (1, (2 * new - 1) ** 2)
        bias = resized[0][rel_pos_index(new)]  # (query, key)
        # the diagonal (offset 0) is every query's maximum
        assert torch.equal(bias.argmax(dim=1), torch.arange(new * new))
        if old == new:
            torch.testing.assert_close(resized, table)


def test_window_size_change_resizes_on_load(tmp_path):
    src = _randomise(create_model("regionvit_pico", num_classes=4))
    torch.save({"model": src.state_dict()}, tmp_path / "w7.pth")
    dst = create_model("regionvit_pico", num_classes=4, window_size=14)
    report = load_pretrained(dst, tmp_path / "w7.pth")
    assert "cls_token.proj.weight" in report.resized
    assert sum(k.endswith("attn.rel_pos") for k in report.resized) == 5
    assert dst.cls_token.proj.weight.shape == (32, 3, 56, 56) and report.missing == []
    with torch.no_grad():
        assert torch.isfinite(dst(torch.randn(1, 3, 112, 112))).all()
