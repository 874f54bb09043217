"""RegionViT image models: official parity, state_dict layout, parameter and FLOP counts, API."""
from __future__ import annotations

import copy
import math
import os
import zlib

import pytest
import torch

from regionvit_video.layers import LayerNorm2d, RelPosAttention, rel_pos_index
from regionvit_video.models import RegionViT, create_model, list_models
from regionvit_video.utils.flops import count_flops
from regionvit_video.utils.io import safe_torch_load

DATA = os.path.join(os.path.dirname(__file__), "data")
FIXTURE = os.path.join(DATA, "regionvit_parity.pt")

# Parity cases: official config + overrides, our model + overrides, input sizes (H, W).
# "tiny" covers 3conv/w7 without padding (224), padding in both dims (256x320) and the full-patch quirk
# (200x168); the second covers 1conv, window 14 (stage 4 padded even at 224), PEG and det_norm.
PARITY_CASES = {
    "tiny": (
        "tiny", dict(num_classes=10), ("regionvit_tiny", dict(num_classes=10)), [(224, 224), (256, 320), (200, 168)]
    ),
    "pico_1conv_w14_peg_det": (
        "small_w14_peg",
        dict(num_classes=10, patch_conv_type="1conv", embed_dim=[32, 32, 64, 128, 256], num_heads=[1, 2, 4, 8],
             depth=[1, 1, 2, 1], det_norm=True),
        ("regionvit_pico", dict(num_classes=10, patch_conv_type="1conv", window_size=14, peg=True, det_norm=True)),
        [(224, 224), (200, 168)],
    ),
}


def formula_state_dict(reference: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Deterministic, RNG-free weights for every key of ``reference`` (same values for proj/proj_cls aliases).

    Norm weights 1 + 0.2 sin, biases 0.05 sin, rel_pos tables 0.5 sin, other weights sin / sqrt(fan_in);
    the phase of each tensor comes from a CRC of its key, so values do not depend on the torch version.
    """
    out = {}
    for key, ref in reference.items():
        name = key.replace(".proj_cls.", ".proj.")
        t = torch.arange(ref.numel(), dtype=torch.float64)
        base = torch.sin(t * 0.7 + (zlib.crc32(name.encode()) % 1000) / 100.0)
        is_norm_weight = key.endswith("weight") and ("norm" in key or (ref.ndim == 4 and ref.shape[0] == 1))
        if key.endswith("rel_pos"):
            val = 0.5 * base
        elif is_norm_weight:
            val = 1.0 + 0.2 * base
        elif key.endswith("bias"):
            val = 0.05 * base
        else:
            val = base / math.sqrt(ref[0].numel())
        out[key] = val.reshape(ref.shape).to(torch.float32)
    return out


def parity_input(height: int, width: int) -> torch.Tensor:
    """A batch of 2 smooth RNG-free images (2, 3, H, W)."""
    h = torch.arange(height, dtype=torch.float64)[:, None]
    w = torch.arange(width, dtype=torch.float64)[None, :]
    imgs = []
    for b in range(2):
        chans = [torch.sin(0.11 * h + 0.07 * w * (c + 1) + c + b) * torch.cos(0.05 * w - 0.03 * h * (c + 1 + b))
                 for c in range(3)]
        imgs.append(torch.stack(chans))
    return torch.stack(imgs).to(torch.float32)


def sample_features(f: torch.Tensor) -> torch.Tensor:
    """Every 4th channel, row and column of a (B, C, H, W) map (keeps the fixture small)."""
    return f[:, ::4, ::4, ::4].contiguous().clone()


# --- how close two implementations of the same arithmetic must be -----------------------------------
def reduction_path_lengths(model: RegionViT, hw: tuple[int, int]) -> dict[str, int]:
    """For each parity output of ``model`` at input size ``hw``, the summed length of every reduction it depends on.

    Counted once per application: every conv (in_channels / groups * kh * kw), Linear (in_features) and
    LayerNorm (channels) of both tokenizers and of the stages up to the output, and in each attention the
    q.k products (head_dim), the softmax sum and the attention-weighted sum (as many terms as keys: 1 + ws^2
    in a window, the stage's number of regions in the regional attention). The logits add the final norm,
    the mean over the regions and the head. Region counts come from a forward on the meta device.
    """
    meta = copy.deepcopy(model).to("meta")
    grids: list[tuple[int, int]] = []
    for stage in meta.layers:
        stage.register_forward_hook(lambda m, i, o: grids.append(tuple(o[0].shape[-2:])))
    with torch.no_grad():
        meta(torch.empty(1, 3, *hw, device="meta", dtype=meta.norm.weight.dtype))

    def reductions(module: torch.nn.Module) -> int:
        total = 0
        for m in module.modules():
            if isinstance(m, torch.nn.Conv2d):
                total += m.in_channels // m.groups * m.kernel_size[0] * m.kernel_size[1]
            elif isinstance(m, torch.nn.Linear):
                total += m.in_features
            elif isinstance(m, torch.nn.LayerNorm):
                total += m.normalized_shape[0]
            elif isinstance(m, LayerNorm2d):
                total += m.channels
        return total

    path = reductions(model.patch_embed) + reductions(model.cls_token)
    out = {}
    for s, stage in enumerate(model.layers):
        n_regions = grids[s][0] * grids[s][1]
        path += reductions(stage.block[0])  # downsampling
        for blk in stage.block[1:]:
            attn = blk.attn  # qkv and proj run twice (regional, then local attention)
            path += reductions(blk) + attn.qkv.in_features + attn.proj.in_features
            path += 2 * attn.head_dim + 2 * n_regions + 2 * (1 + attn.window_size**2)
        if stage.peg is not None:
            path += reductions(stage.peg)
        if model.det_norm:
            path += model.get_submodule(f"norm{s}").channels
        out[f"stage{s}"] = path
    out["logits"] = path + model.norm.normalized_shape[0] + n_regions + model.head.in_features
    return out


def rounding_tolerance(reference: torch.Tensor, path_length: int, dtype: torch.dtype) -> float:
    """The largest difference two correct implementations of the same arithmetic may show in ``dtype``.

    A sum of K terms computed in floating point is off by at most about K * u times the magnitudes
    involved (u = eps / 2, the unit roundoff: 2^-24 in float32, 2^-53 in float64), whatever order the
    kernel adds in. Summed over every reduction the output depends on (:func:`reduction_path_lengths`),
    that gives u * path_length * max|reference| to first order: a worst-case bound derived from the
    arithmetic, not fitted to one machine's summation order.
    """
    return torch.finfo(dtype).eps / 2 * path_length * reference.abs().max().item()


def parity_outputs(model: RegionViT, x: torch.Tensor) -> dict[str, torch.Tensor]:
    """Logits and the sampled per-stage local maps (what the fixture stores), from one forward.

    The maps are ``forward_intermediates``' (the official ``forward_features(x, detection=True)``): each
    stage's local tokens, after ``norm{s}`` with det_norm.
    """
    with torch.no_grad():
        features, maps = model.forward_intermediates(x)
        out = {"logits": model.forward_head(features)}
    out.update({f"stage{s}": sample_features(f) for s, f in enumerate(maps)})
    return out


def formula_model(case: str) -> RegionViT:
    """This toolkit's model of a parity case, with the formula weights."""
    _, _, (name, overrides), _ = PARITY_CASES[case]
    model = cheap_model(name, **overrides).eval()  # no random init: every tensor is set below
    model.load_state_dict(formula_state_dict(model.state_dict()), strict=True)
    return model


# --- parity with the official code ------------------------------------------------------------------
@pytest.mark.numerics
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=["float64", "float32"])
@pytest.mark.parametrize("case", list(PARITY_CASES))
def test_matches_official_outputs(case, dtype):
    """Logits and per-stage local maps equal the official code's float64 outputs (regionvit_parity_make.py).

    Both tolerances come from :func:`rounding_tolerance`. In float64 it is about 1e-12 and the outputs
    agree to about 1e-14: any difference in the computation itself shows (a LayerNorm eps of 1e-5 where
    the official code has 1e-6 moves the outputs by up to 1e-2). In float32 it is 1e-3 to 6e-3, 7-10x above
    what float32 kernels give on the stage maps (1e-4 here and on AVX-512 CPUs), whatever their summation
    order; the official code's own float32 outputs stay inside it too (regionvit_parity_make.py checks).
    """
    ref = safe_torch_load(FIXTURE)
    model = formula_model(case)
    for hw in PARITY_CASES[case][3]:
        paths = reduction_path_lengths(model, hw)
        got = parity_outputs(model.to(dtype), parity_input(*hw).to(dtype))
        tag = f"{case}/{hw[0]}x{hw[1]}"
        for name, value in got.items():
            expected = ref[f"{tag}/{name}"]
            assert expected.dtype == torch.float64
            tol = rounding_tolerance(expected, paths[name], dtype)
            torch.testing.assert_close(value.double(), expected, rtol=0, atol=tol,
                                       msg=lambda m: f"{tag} {name} in {dtype} (tolerance {tol:.2e}): {m}")


# --- state_dict layout, parameter and FLOP counts ---------------------------------------------------
def _spec_small_keys() -> list[tuple[str, tuple[int, ...]]]:
    """regionvit_small state_dict keys and shapes, written out from the spec's listing rules (§3.1/3.2)."""
    keys = [("patch_embed.proj.0.weight", (24, 3, 3, 3)), ("patch_embed.proj.0.bias", (24,)),
            ("patch_embed.proj.1.weight", (1, 24, 1, 1)), ("patch_embed.proj.1.bias", (1, 24, 1, 1)),
            ("patch_embed.proj.3.weight", (48, 24, 3, 3)), ("patch_embed.proj.3.bias", (48,)),
            ("patch_embed.proj.4.weight", (1, 48, 1, 1)), ("patch_embed.proj.4.bias", (1, 48, 1, 1)),
            ("patch_embed.proj.6.weight", (96, 48, 3, 3)), ("patch_embed.proj.6.bias", (96,)),
            ("cls_token.proj.weight", (96, 3, 28, 28)), ("cls_token.proj.bias", (96,))]
    dims, depths = (96, 192, 384, 768), (2, 2, 8, 2)
    for s, (c, d) in enumerate(zip(dims, depths)):
        if s > 0:
            for alias in ("proj", "proj_cls"):
                keys += [(f"layers.{s}.block.0.{alias}.0.weight", (1, c // 2, 1, 1)),
                         (f"layers.{s}.block.0.{alias}.0.bias", (1, c // 2, 1, 1)),
                         (f"layers.{s}.block.0.{alias}.2.weight", (c, 1, 3, 3)),
                         (f"layers.{s}.block.0.{alias}.2.bias", (c,))]
        for i in range(1, d + 1):
            p = f"layers.{s}.block.{i}."
            keys += [(p + "norm0.weight", (c,)), (p + "norm0.bias", (c,)), (p + "norm1.weight", (c,)),
                     (p + "norm1.bias", (c,)), (p + "attn.rel_pos", (c // 32, 169)),
                     (p + "attn.qkv.weight", (3 * c, c)),
                     (p + "attn.qkv.bias", (3 * c,)), (p + "attn.proj.weight", (c, c)), (p + "attn.proj.bias", (c,)),
                     (p + "norm2.weight", (c,)), (p + "norm2.bias", (c,)), (p + "mlp.fc1.weight", (4 * c, c)),
                     (p + "mlp.fc1.bias", (4 * c,)), (p + "mlp.fc2.weight", (c, 4 * c)), (p + "mlp.fc2.bias", (c,))]
    keys += [("norm.weight", (768,)), ("norm.bias", (768,)), ("head.weight", (1000, 768)), ("head.bias", (1000,))]
    return keys


def test_state_dict_matches_official_listing():
    with torch.device("meta"):
        model = create_model("regionvit_small")
    sd = model.state_dict()
    assert [(k, tuple(v.shape)) for k, v in sd.items()] == _spec_small_keys()
    assert len(sd) == 250
    assert sum(v.numel() for v in sd.values()) == 30_601_402  # proj_cls aliases counted twice
    assert model.layers[1].block[0].proj_cls is model.layers[1].block[0].proj


OFFICIAL_PARAMS = {
    "regionvit_tiny": 13_842_676, "regionvit_small": 30_586_618, "regionvit_medium": 41_215_906,
    "regionvit_base": 72_747_232, "regionvit_small_w14": 31_354_714, "regionvit_small_w14_peg": 31_367_674,
    "regionvit_base_w14": 73_825_120, "regionvit_base_w14_peg": 73_842_400,
}


@pytest.mark.parametrize("name", sorted(OFFICIAL_PARAMS))
def test_param_count_equals_official(name):
    with torch.device("meta"):
        model = create_model(name, num_classes=1000)
    assert sum(p.numel() for p in model.parameters()) == OFFICIAL_PARAMS[name]
    n_keys = len(model.state_dict())
    assert n_keys == (250 if "small" in name or "tiny" in name else 332) + (4 if "peg" in name else 0)


def test_medium_keys_differ_from_small_as_spec():
    with torch.device("meta"):
        small, medium = create_model("regionvit_small").state_dict(), create_model("regionvit_medium").state_dict()
    assert tuple(medium["patch_embed.proj.weight"].shape) == (96, 3, 8, 8)
    extra = set(medium) - set(small)
    assert extra == {"patch_embed.proj.weight", "patch_embed.proj.bias"} | {
        k for k in medium if any(k.startswith(f"layers.2.block.{i}.") for i in range(9, 15))}


@pytest.mark.parametrize("name,gflops", [("regionvit_tiny", 2.426), ("regionvit_small", 5.355),
                                         ("regionvit_medium", 7.431), ("regionvit_base", 13.074)])
def test_flops_at_224_match_official(name, gflops):
    model = cheap_model(name)
    flops = count_flops(model, torch.randn(1, 3, 224, 224))
    assert abs(flops / 1e9 - gflops) / gflops < 0.01, flops
    if name == "regionvit_small":  # the paper's numbers do not count LayerNorm: 5.339G -> "5.3G"
        no_ln = count_flops(model, torch.randn(1, 3, 224, 224), count_layer_norm=False)
        assert abs(no_ln / 1e9 - 5.339) < 0.001, no_ln


def cheap_model(name: str, **kwargs) -> torch.nn.Module:
    """A model with zero weights, built without the (slow) random init: for FLOP counting only."""
    with torch.device("meta"):
        model = create_model(name, **kwargs)
    model = model.to_empty(device="cpu")
    for t in list(model.parameters()) + list(model.buffers()):
        t.data.zero_()
    for m in model.modules():
        if isinstance(m, RelPosAttention) and m.window_size is not None:
            m.rel_pos_index = rel_pos_index(m.window_size)
    return model


# --- API and robustness ----------------------------------------------------------------------------
def test_registry_lists_all_variants():
    names = set(list_models("regionvit_*"))
    for v in ("tiny", "small", "medium", "base", "small_w14", "small_w14_peg", "base_w14", "base_w14_peg", "pico"):
        assert f"regionvit_{v}" in names and f"regionvit_video_{v}" in names


@pytest.mark.parametrize("name", ["regionvit_tiny", "regionvit_medium", "regionvit_small_w14_peg", "regionvit_pico"])
def test_forward_shapes_variants(name):
    """3conv/1conv, w7/w14, PEG: the right logits and per-stage shapes at a size that needs padding.

    Zero weights built without the random init (shapes only); values are checked elsewhere.
    """
    model = cheap_model(name, num_classes=3).eval()
    x = torch.randn(2, 3, 60, 92)
    with torch.no_grad():
        assert model(x).shape == (2, 3)
        maps = model.forward_intermediates(x, intermediates_only=True)
    # local maps: stride 4 (3conv: ceil twice; 1conv: floor((H-2)/4)+1), then ceil halves
    h, w = (15, 23)
    expected = [(h, w), (8, 12), (4, 6), (2, 3)]
    dims = model.embed_dim[1:]
    assert [tuple(m.shape) for m in maps] == [(2, c, *hw) for c, hw in zip(dims, expected)]


def test_pico_api_grads_and_features():
    model = create_model("regionvit_pico", num_classes=5, drop_path_rate=0.1, drop_rate=0.1)
    x = torch.randn(2, 3, 84, 112)
    feats = model.forward_features(x)
    assert feats.shape == (2, model.num_features) == (2, 256)
    torch.testing.assert_close(model.forward_head(feats, pre_logits=True), feats)
    out = model.forward_head(feats)
    assert out.shape == (2, 5)
    out.sum().backward()
    no_grad = [n for n, p in model.named_parameters() if p.grad is None]
    assert not no_grad, no_grad
    maps = model.forward_intermediates(x, intermediates_only=True)
    assert [tuple(m.shape) for m in maps] == [(2, 32, 21, 28), (2, 64, 11, 14), (2, 128, 6, 7), (2, 256, 3, 4)]
    assert [(f["num_chs"], f["reduction"]) for f in model.feature_info] == [(32, 4), (64, 8), (128, 16), (256, 32)]
    model.reset_classifier(7)
    assert model(x).shape == (2, 7) and model.get_classifier().out_features == 7
    model.reset_classifier(0)
    assert model(x).shape == (2, 256)
    assert model.no_weight_decay() == set()


def test_grad_checkpointing_matches_plain():
    torch.manual_seed(0)
    model = create_model("regionvit_pico", num_classes=4, peg=True)
    x = torch.randn(2, 3, 70, 98)
    out_plain = model(x)
    out_plain.square().sum().backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters()}
    model.zero_grad()
    model.set_grad_checkpointing(True)
    out_ckpt = model(x)
    out_ckpt.square().sum().backward()
    torch.testing.assert_close(out_ckpt, out_plain)
    for n, p in model.named_parameters():
        torch.testing.assert_close(p.grad, grads[n], msg=lambda m: f"{n}: {m}")
    assert create_model("regionvit_pico", act_checkpoint=True).layers[0].grad_checkpointing


@pytest.mark.numerics
def test_autocast_bf16_close_to_fp32(check_cpu_autocast):
    model = create_model("regionvit_pico", num_classes=4).eval()
    check_cpu_autocast(model, torch.randn(1, 3, 88, 60))  # padded: the mask path runs in bf16


@pytest.mark.parametrize("name", ["regionvit_pico", "regionvit_video_pico"])
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_residual_stream_is_float32_in_every_stage_under_autocast(name, dtype):
    """Under autocast the stride-2 convs between stages return low precision; every block (stages 1-4)
    still receives, and adds its residuals to, a float32 stream, and every stage returns float32 maps."""
    from regionvit_video.models.regionvit import R2LBlock, RegionViTStage

    model = create_model(name, num_classes=4, **({"num_frames": 2} if "video" in name else {})).eval()
    seen = []
    for n, m in model.named_modules():
        if isinstance(m, R2LBlock):
            m.register_forward_pre_hook(lambda m, args, n=n: seen.append((n, args[0].dtype)))
            m.register_forward_hook(lambda m, args, out, n=n: seen.append((f"{n} out", out.dtype)))
        elif isinstance(m, RegionViTStage):
            m.register_forward_hook(lambda m, args, out, n=n: seen.extend((f"{n} out", o.dtype) for o in out))
    x = torch.randn(1, 3, 2, 60, 76) if "video" in name else torch.randn(1, 3, 60, 76)
    with torch.no_grad(), torch.autocast("cpu", dtype=dtype):
        out = model(x)
    assert out.dtype == dtype and torch.isfinite(out).all()
    assert len(seen) == 2 * 5 + 2 * 4 and {d for _, d in seen} == {torch.float32}, seen


def test_layer_norm_2d_statistics_in_float32_for_half_inputs():
    """A channel variance over 65,504 overflows float16: the statistics are taken in float32 and the result
    returned in the input dtype, equal to the float32 norm rounded once."""
    norm = LayerNorm2d(8)
    with torch.no_grad():
        norm.weight.normal_(), norm.bias.normal_()
    x = torch.randn(2, 8, 3, 5) * 400
    ref = norm(x)
    for dtype in (torch.float16, torch.bfloat16):
        out = norm(x.to(dtype))
        assert out.dtype == dtype and torch.isfinite(out).all()
        torch.testing.assert_close(out.float(), ref, rtol=0.02, atol=0.02)
        with torch.autocast("cpu", dtype=dtype):
            torch.testing.assert_close(norm(x.to(dtype)).float(), ref, rtol=0.02, atol=0.02)
    # the float32 path traces only mean / var / sqrt / elementwise ops: fvcore counts nothing for it
    assert count_flops(norm, x) == 0


def test_bad_config_raises():
    with pytest.raises(ValueError, match="embed_dim"):
        RegionViT(embed_dim=(32, 32, 64), depths=(1, 1, 1, 1))
    with pytest.raises(ValueError, match="num_heads"):
        RegionViT(embed_dim=(64, 64, 128, 256, 512), depths=(1, 1, 1, 1), num_heads=(2, 4))
    with pytest.raises(ValueError, match="regionvit_video"):
        create_model("regionvit_pico")(torch.randn(1, 3, 2, 32, 32))
    with pytest.raises(KeyError, match="regionvit_small"):
        create_model("regionvit_smal")
