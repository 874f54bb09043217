"""TimeSformer baseline (regionvit_video/models/timesformer.py): size, layout, inflation, checkpointing."""
import pytest
import timm
import torch
from einops import rearrange
from timm.models.vision_transformer import VisionTransformer

from regionvit_video.models import timesformer  # noqa: F401  (registers the variants)
from regionvit_video.models.registry import create_model, list_models

TINY = dict(num_classes=5, num_frames=4, img_size=32)  # 2x2 patches of 16
# What inflation leaves to the model's zero init (timesformer_tiny has 2 blocks).
ZERO_INIT_KEYS = {"time_embed", *(f"blocks.{i}.temporal_fc.{w}" for i in range(2) for w in ("weight", "bias"))}


def _tiny(**kw):
    return create_model("timesformer_tiny", **{**TINY, **kw})


def _tiny_vit(**kw):
    """timm image ViT with timesformer_tiny's shape: produces timm-layout weights."""
    args = dict(img_size=32, patch_size=16, embed_dim=64, depth=2, num_heads=2, num_classes=5)
    return VisionTransformer(**{**args, **kw})


def _randomize_temporal(model):
    """Give temporal_fc and time_embed non-zero values so the temporal path matters."""
    with torch.no_grad():
        for blk in model.blocks:
            blk.temporal_fc.weight.normal_(0, 0.2)
            blk.temporal_fc.bias.normal_(0, 0.2)
        model.time_embed.normal_(0, 0.5)


def test_registered():
    assert {"timesformer_base", "timesformer_tiny"} <= set(list_models("timesformer_*"))


def test_base_param_count_matches_paper_model():
    # TimeSformer 8x224 (reference code, divided_space_time): 85,798,656 (ViT-B) + 35,453,952 (temporal) + 6,144
    # (time) + 307,600 (head).
    model = create_model("timesformer_base", num_classes=400, num_frames=8, img_size=224)
    assert sum(p.numel() for p in model.parameters()) == 121_566_352
    assert model.num_features == 768
    assert len(model.blocks) == 12
    dpr = [blk.drop_path.drop_prob if hasattr(blk.drop_path, "drop_prob") else 0.0 for blk in model.blocks]
    torch.testing.assert_close(torch.tensor(dpr), torch.linspace(0, 0.1, 12))


def test_init_zero_temporal_fc_and_time_embed():
    model = _tiny()
    assert torch.count_nonzero(model.time_embed) == 0
    for blk in model.blocks:
        assert torch.count_nonzero(blk.temporal_fc.weight) == 0
        assert torch.count_nonzero(blk.temporal_fc.bias) == 0
    assert torch.count_nonzero(model.pos_embed) > 0 and torch.count_nonzero(model.cls_token) > 0
    assert model.no_weight_decay() == {"pos_embed", "cls_token", "time_embed"}


def test_shapes_and_api():
    model = _tiny().eval()
    x = torch.randn(2, 3, 4, 32, 32)
    feats = model.forward_features(x)
    assert feats.shape == (2, 64)
    logits = model.forward_head(feats)
    assert logits.shape == (2, 5)
    torch.testing.assert_close(model(x), logits)
    torch.testing.assert_close(model.forward_head(feats, pre_logits=True), feats)
    model.reset_classifier(7)
    assert model(x).shape == (2, 7) and model.get_classifier().out_features == 7
    model.reset_classifier(0)
    assert model(x).shape == (2, 64)
    with pytest.raises(ValueError, match=r"\(B, C, T, H, W\)"):
        model(torch.randn(2, 3, 32, 32))


def test_other_frame_count_and_size():
    model = _tiny().eval()
    assert model(torch.randn(1, 3, 6, 48, 64)).shape == (1, 5)  # T 4 -> 6 (nearest), grid 2x2 -> 3x4
    assert model(torch.randn(1, 3, 1, 32, 32)).shape == (1, 5)
    with pytest.raises(ValueError, match="divisible"):
        _tiny(img_size=40)


def _reference_forward(model, x):
    """Loop-based re-statement of the reference block (TimeSformer timesformer/models/vit.py), using the model's own
    submodules."""
    B, _, T, H, W = x.shape
    p = model.patch_embed.patch_size[0]
    N = (H // p) * (W // p)
    frames = [model.patch_embed(x[:, :, t]) + model.pos_embed[:, 1:] for t in range(T)]  # T x (B, N, C)
    # token 1 + n*T + t holds location n of frame t (space-major, time-minor)
    tokens = [frames[t][:, n] + model.time_embed[:, t] for n in range(N) for t in range(T)]
    cls = (model.cls_token + model.pos_embed[:, :1])[:, 0].expand(B, -1)
    z = torch.stack([cls] + tokens, dim=1)
    for blk in model.blocks:
        patches = z[:, 1:]
        xt = patches.clone()
        for n in range(N):  # temporal attention over the T tokens of location n
            seq = patches[:, n * T : (n + 1) * T]
            xt[:, n * T : (n + 1) * T] = seq + blk.temporal_fc(blk.temporal_attn(blk.temporal_norm1(seq)))
        new = torch.empty_like(z)
        cls_res = []
        for t in range(T):  # spatial attention in frame t with a copy of the cls token
            seq = torch.cat([z[:, :1], xt[:, t::T]], dim=1)
            res = blk.attn(blk.norm1(seq))
            cls_res.append(res[:, 0])
            new[:, 1 + t :: T] = xt[:, t::T] + res[:, 1:]
        new[:, 0] = z[:, 0] + torch.stack(cls_res).mean(0)
        z = new + blk.mlp(blk.norm2(new))
    return model.head(model.norm(z)[:, 0])


@pytest.mark.numerics
def test_matches_loop_reference_of_the_spec():
    model = _tiny(img_size=(32, 48)).eval().double()  # 2x3 grid: rows and columns distinguishable
    _randomize_temporal(model)
    x = torch.randn(2, 3, 3, 32, 48, dtype=torch.float64)
    with torch.no_grad():  # float64: the loop and the batched forward differ by rounding alone (~1e-16)
        torch.testing.assert_close(model(x), _reference_forward(model, x), rtol=0, atol=1e-12)


@pytest.mark.numerics
def test_temporal_path_mixes_frames_and_time_embed_orders_them():
    model = _tiny().eval().double()
    x = torch.randn(1, 3, 4, 32, 32, dtype=torch.float64)
    perm = torch.tensor([2, 0, 3, 1])
    with torch.no_grad():
        # time_embed = 0: divided attention is permutation-equivariant in time and the cls is averaged
        # (float64: a permutation changes the result by rounding alone).
        _randomize_temporal(model)
        model.time_embed.zero_()
        torch.testing.assert_close(model(x), model(x[:, :, perm]), rtol=0, atol=1e-12)
        model.time_embed.normal_(0, 0.5)
        assert not torch.allclose(model(x), model(x[:, :, perm]), atol=1e-4)
        # one frame's content changes the output through the temporal path
        y = x.clone()
        y[:, :, 1] = torch.randn_like(y[:, :, 1])
        assert not torch.allclose(model(x), model(y), atol=1e-4)


def test_every_parameter_gets_a_gradient():
    model = _tiny(drop_path_rate=0.1).train()
    model(torch.randn(2, 3, 4, 32, 32)).sum().backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None]
    assert not missing, missing
    # With the zero-init temporal_fc the temporal attention's gradient is exactly 0; once temporal_fc is
    # non-zero every parameter gets a non-zero gradient.
    model.zero_grad(set_to_none=True)
    _randomize_temporal(model)
    model(torch.randn(2, 3, 4, 32, 32)).sum().backward()
    zero = [n for n, p in model.named_parameters() if p.grad is None or torch.count_nonzero(p.grad) == 0]
    assert not zero, zero


def test_inflation_keys_exist_in_timm_vit_layout():
    vit = timm.create_model("vit_tiny_patch16_224", pretrained=False, num_classes=10)
    model = create_model("timesformer_tiny", num_classes=10, embed_dim=192, depth=12, num_heads=3, img_size=224)
    mapped = model.filter_pretrained(vit.state_dict(), temporal_init="copy")
    own = model.state_dict()
    assert set(mapped) <= set(own)
    assert all(mapped[k].shape == own[k].shape for k in mapped)
    zero_keys = {"time_embed"} | {f"blocks.{i}.temporal_fc.{w}" for i in range(12) for w in ("weight", "bias")}
    assert set(own) == set(mapped)  # temporal_fc and time_embed are created as zeros
    assert all(torch.count_nonzero(mapped[k]) == 0 for k in zero_keys)
    for i in (0, 11):
        torch.testing.assert_close(mapped[f"blocks.{i}.temporal_attn.qkv.weight"], vit.blocks[i].attn.qkv.weight)
        torch.testing.assert_close(mapped[f"blocks.{i}.temporal_norm1.bias"], vit.blocks[i].norm1.bias)
    zero = model.filter_pretrained(vit.state_dict(), temporal_init="zero")
    assert not any(".temporal_attn." in k or ".temporal_norm1." in k for k in zero)
    assert set(zero) == set(mapped) - {k for k in mapped if ".temporal_attn." in k or ".temporal_norm1." in k}


def test_copy_inflation_static_clip_equals_image_logits():
    vit = _tiny_vit().eval()
    model = _tiny().eval()
    result = model.load_state_dict(model.filter_pretrained(vit.state_dict(), temporal_init="copy"), strict=False)
    assert not result.unexpected_keys
    assert not result.missing_keys  # temporal_fc and time_embed come as zeros
    img = torch.randn(2, 3, 32, 32)
    clip = img[:, :, None].expand(-1, -1, 4, -1, -1).contiguous()  # all frames equal
    with torch.no_grad():
        # temporal_fc = 0 and time_embed = 0: every frame's spatial pass is the image pass and the cls
        # average over identical frames is the image cls, so the logits are the image model's.
        torch.testing.assert_close(model(clip), vit(img), rtol=1e-6, atol=1e-6)
        img_feats = vit.forward_head(vit.forward_features(img), pre_logits=True)
        torch.testing.assert_close(model.forward_features(clip), img_feats, rtol=1e-6, atol=1e-6)


def test_inflation_resizes_pos_embed_on_the_grid():
    vit = _tiny_vit().eval()  # 2x2 grid
    model = _tiny(img_size=64).eval()  # 4x4 grid
    mapped = model.filter_pretrained(vit.state_dict())
    assert mapped["pos_embed"].shape == model.pos_embed.shape
    torch.testing.assert_close(mapped["pos_embed"][:, :1], vit.pos_embed[:, :1])  # cls position kept
    model.load_state_dict(mapped, strict=False)
    assert model(torch.randn(1, 3, 2, 64, 64)).shape == (1, 5)
    with pytest.raises(ValueError, match="temporal_init"):
        model.filter_pretrained(vit.state_dict(), temporal_init="fresh")


def test_timesformer_checkpoint_round_trip_with_prefix_and_other_frames():
    src = _tiny().eval()
    _randomize_temporal(src)
    wrapped = {f"model.{k}": v for k, v in src.state_dict().items()}  # official TimeSformer layout
    dst = _tiny().eval()
    dst.load_state_dict(dst.filter_pretrained(wrapped), strict=True)
    x = torch.randn(1, 3, 4, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(dst(x), src(x))
    dst8 = _tiny(num_frames=8)
    mapped = dst8.filter_pretrained(wrapped)
    torch.testing.assert_close(mapped["time_embed"], src.time_embed.repeat_interleave(2, dim=1))
    dst8.load_state_dict(mapped, strict=True)


def test_activation_checkpointing_matches_plain():
    torch.manual_seed(1)
    plain = _tiny(drop_path_rate=0.2).train()
    _randomize_temporal(plain)
    ckpt = _tiny(drop_path_rate=0.2, act_checkpoint=True).train()
    ckpt.load_state_dict(plain.state_dict())
    assert ckpt.grad_checkpointing and not plain.grad_checkpointing
    x = torch.randn(2, 3, 4, 32, 32)
    outs, grads = [], []
    for model in (plain, ckpt):
        torch.manual_seed(2)  # same DropPath draws; non-reentrant checkpoint replays the RNG state
        out = model(x)
        out.square().sum().backward()
        outs.append(out.detach())
        grads.append({n: p.grad for n, p in model.named_parameters()})
    torch.testing.assert_close(outs[0], outs[1])
    for n in grads[0]:
        torch.testing.assert_close(grads[0][n], grads[1][n], msg=n)


def test_bf16_autocast_runs(check_cpu_autocast):
    model = _tiny().eval()
    _randomize_temporal(model)
    check_cpu_autocast(model, torch.randn(2, 3, 4, 32, 32))


def test_load_pretrained_inflates_a_timm_vit_file(tmp_path):
    from regionvit_video.models import load_pretrained

    vit = _tiny_vit(num_classes=3).eval()
    path = tmp_path / "vit.pth"
    torch.save({"model": vit.state_dict()}, path)
    model = _tiny().eval()  # 5 classes: the head is re-initialised
    report = load_pretrained(model, path, temporal_init="copy")
    assert set(report.reinitialised) == {"head.weight", "head.bias"}
    assert not report.unexpected
    assert not report.missing
    assert ZERO_INIT_KEYS <= set(report.created)
    torch.testing.assert_close(model.blocks[1].temporal_attn.proj.weight, vit.blocks[1].attn.proj.weight)
    img = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        feats = vit.forward_head(vit.forward_features(img), pre_logits=True)
        torch.testing.assert_close(model.forward_features(img[:, :, None].expand(-1, -1, 4, -1, -1)), feats)
