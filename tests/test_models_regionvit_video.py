"""RegionViT video models: sizes against the paper, divided space-time attention, API and GPU readiness."""
from __future__ import annotations

import pytest
import torch

from regionvit_video.models import RegionViTVideo, create_model, list_models
from regionvit_video.utils.flops import count_flops
from test_models_regionvit import cheap_model


def _temporal_params(model) -> int:
    return sum(p.numel() for n, p in model.named_parameters() if ".temporal_" in n or n == "time_embed")


@pytest.mark.parametrize("variant", [n.replace("regionvit_video_", "") for n in list_models("regionvit_video_*")])
def test_video_params_are_image_params_plus_temporal(variant):
    """Spatial weights are exactly the image model's; temporal ones are 5C^2+7C per block plus T*C0."""
    with torch.device("meta"):
        video = create_model(f"regionvit_video_{variant}", num_classes=400, num_frames=8)
        image = create_model(f"regionvit_{variant}", num_classes=400)
    image_keys = {k: tuple(v.shape) for k, v in image.state_dict().items()}
    video_spatial = {
        k: tuple(v.shape) for k, v in video.state_dict().items() if ".temporal_" not in k and k != "time_embed"
    }
    assert video_spatial == image_keys
    expected = sum(5 * c * c + 7 * c for c, d in zip(image.embed_dim[1:], [len(s.block) - 1 for s in image.layers])
                   for _ in range(d)) + 8 * image.embed_dim[0]
    assert _temporal_params(video) == expected


def test_sizes_match_paper_table7():
    """8x224x224, 400 classes: params within 1.5% and fvcore FLOPs within 3% of the paper (Table 7)."""
    x = torch.randn(1, 3, 8, 224, 224)
    for name, params_m, gflops in [("regionvit_video_small", 42.9, 59.4), ("regionvit_video_medium", 57.5, 83.1)]:
        model = cheap_model(name, num_classes=400, num_frames=8)
        n = sum(p.numel() for p in model.parameters()) / 1e6
        assert abs(n - params_m) / params_m < 0.015, (name, n)
        f = count_flops(model, x) / 1e9
        assert abs(f - gflops) / gflops < 0.03, (name, f)


def test_pico_shapes_grads_and_features():
    model = create_model("regionvit_video_pico", num_classes=6, num_frames=4, drop_path_rate=0.1)
    with torch.no_grad():  # temporal_fc starts at zero; make it non-zero so its inputs get gradients too
        for m in model.modules():
            if hasattr(m, "temporal_fc"):
                m.temporal_fc.weight.normal_(0, 0.02)
    x = torch.randn(2, 3, 4, 56, 84)
    feats = model.forward_features(x)
    assert feats.shape == (2, 256)
    out = model.forward_head(feats)
    assert out.shape == (2, 6) and torch.isfinite(out).all()
    out.sum().backward()
    assert not [n for n, p in model.named_parameters() if p.grad is None]
    # Only the regional tokens reach the head, and the regional token's row carries no relative bias, so
    # the last block's rel_pos gets no gradient from a classification loss (true of the official model too).
    zero = [n for n, p in model.named_parameters() if not p.grad.abs().sum() > 0]
    assert zero == ["layers.3.block.1.attn.rel_pos"], zero
    maps = model.forward_intermediates(x, intermediates_only=True)
    expected = [(2, 32, 4, 14, 21), (2, 64, 4, 7, 11), (2, 128, 4, 4, 6), (2, 256, 4, 2, 3)]
    assert [tuple(m.shape) for m in maps] == expected
    assert model.no_weight_decay() == {"time_embed"}
    # another clip length: time_embed is resampled
    assert model(torch.randn(1, 3, 6, 56, 56)).shape == (1, 6)
    with pytest.raises(ValueError, match="B, C, T, H, W"):
        model(torch.randn(1, 3, 56, 56))


def test_temporal_attention_mixes_frames_only_when_enabled():
    """Zero temporal_fc: frames are independent. Non-zero: changing frame 0 changes frame 1's features."""
    model = create_model("regionvit_video_pico", num_classes=2, num_frames=3).eval()
    x = torch.randn(1, 3, 3, 56, 56)
    x2 = x.clone()
    x2[:, :, 0] = torch.randn(1, 3, 56, 56)

    def frame1_stage2(inp):
        with torch.no_grad():
            return model.forward_intermediates(inp, intermediates_only=True)[1][:, :, 1]

    torch.testing.assert_close(frame1_stage2(x), frame1_stage2(x2))
    with torch.no_grad():
        for m in model.modules():
            if hasattr(m, "temporal_fc"):
                m.temporal_fc.weight.normal_(0, 0.1)
    assert (frame1_stage2(x) - frame1_stage2(x2)).abs().max() > 1e-3


@pytest.mark.numerics
@pytest.mark.parametrize("name", ["regionvit_video_pico", "timesformer_tiny"])
def test_zero_temporal_init_is_order_invariant_scratch_init_is_not(name):
    """zeros/zeros (TimeSformer's init) cannot tell a clip from its time reversal; the from-scratch init can."""
    torch.manual_seed(0)
    kwargs = {"img_size": 32} if name.startswith("timesformer") else {}
    x = torch.randn(2, 3, 4, 32 if kwargs else 56, 32 if kwargs else 56)
    reverse = x.flip(2)
    zero = create_model(name, num_classes=5, num_frames=4, **kwargs).eval()
    assert torch.count_nonzero(zero.time_embed) == 0
    scratch = create_model(name, num_classes=5, num_frames=4, time_embed_init="normal",
                           temporal_fc_init="trunc_normal", **kwargs).eval()
    assert 0.5 < scratch.time_embed.std().item() < 2.0
    fc = [m.temporal_fc for m in scratch.modules() if hasattr(m, "temporal_fc")]
    assert fc and all(torch.count_nonzero(f.weight) > 0 and torch.count_nonzero(f.bias) == 0 for f in fc)
    with torch.no_grad():  # float64: time reversal may change the result by rounding alone (~1e-16)
        torch.testing.assert_close(zero.double()(x.double()), zero(reverse.double()), atol=1e-12, rtol=0)
        assert (scratch(x) - scratch(reverse)).abs().max() > 1e-3
    with pytest.raises(ValueError, match="time_embed_init"):
        create_model(name, num_classes=5, num_frames=4, time_embed_init="sincos", **kwargs)
    with pytest.raises(ValueError, match="temporal_fc_init"):
        create_model(name, num_classes=5, num_frames=4, temporal_fc_init="normal", **kwargs)


def test_grad_checkpointing_matches_plain():
    torch.manual_seed(0)
    model = create_model("regionvit_video_pico", num_classes=3, num_frames=2, peg=True)
    with torch.no_grad():
        for m in model.modules():
            if hasattr(m, "temporal_fc"):
                m.temporal_fc.weight.normal_(0, 0.05)
    x = torch.randn(1, 3, 2, 60, 76)
    out_plain = model(x)
    out_plain.square().sum().backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters()}
    model.zero_grad()
    model.set_grad_checkpointing()
    out_ckpt = model(x)
    out_ckpt.square().sum().backward()
    torch.testing.assert_close(out_ckpt, out_plain)
    for n, p in model.named_parameters():
        torch.testing.assert_close(p.grad, grads[n], msg=lambda m: f"{n}: {m}")


@pytest.mark.numerics
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_autocast(dtype, check_cpu_autocast):
    """Padded sizes (mask path) under autocast: the additive mask follows q's dtype; no inf/NaN."""
    model = create_model("regionvit_video_pico", num_classes=3, num_frames=2).eval()
    check_cpu_autocast(model, torch.randn(1, 3, 2, 60, 76), dtype)


def test_temporal_attention_in_chunks_equals_one_batch(monkeypatch):
    """The temporal attention's batch (B x windows x (1 + ws^2) sequences) split in chunks of 31, the window
    attention in whole images: logits and every gradient as with one call (what keeps a CUDA kernel's
    batch under its 65,535 grid limit for large batches)."""
    import regionvit_video.layers.attention as attention_module
    from regionvit_video.models.regionvit_video import DividedR2LBlock

    model = create_model("regionvit_video_pico", num_classes=3, num_frames=4, temporal_fc_init="trunc_normal",
                         time_embed_init="trunc_normal")
    batches = []
    for m in model.modules():
        if isinstance(m, DividedR2LBlock):
            m.temporal_attn.register_forward_pre_hook(lambda m, args: batches.append(args[0].shape[0]))
    x = torch.randn(1, 3, 4, 60, 76)
    results = []
    for chunk in (10**9, 31):
        monkeypatch.setattr(attention_module, "ATTENTION_BATCH_CHUNK", chunk)
        model.zero_grad()
        out = model(x)
        out.square().sum().backward()
        results.append((out.detach(), {n: p.grad.clone() for n, p in model.named_parameters()}))
    assert min(batches) > 31  # every temporal attention was chunked
    torch.testing.assert_close(results[1][0], results[0][0], rtol=1e-5, atol=1e-6)
    for name, grad in results[0][1].items():
        torch.testing.assert_close(results[1][1][name], grad, rtol=1e-4, atol=1e-6, msg=lambda m: f"{name}: {m}")


def test_constructor_checks():
    with pytest.raises(ValueError, match="block_layer"):
        RegionViTVideo(block_layer=torch.nn.Identity)
    model = create_model("regionvit_video_pico", act_checkpoint=True, num_frames=16)
    assert model.time_embed.shape == (1, 16, 32) and model.layers[0].grad_checkpointing
    assert all((m.temporal_fc.weight == 0).all() for m in model.modules() if hasattr(m, "temporal_fc"))
