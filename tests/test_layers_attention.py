"""Attention with relative position bias, the official index map and the window mask."""
from __future__ import annotations

import pytest
import torch

import regionvit_video.layers.attention as attention_module
from regionvit_video.layers import RelPosAttention, from_windows, rel_pos_index, to_windows, window_mask


def official_index_loop(ws: int) -> torch.Tensor:
    """Slow reference, written as the official constructor loops (negative Python indices wrap)."""
    size = 2 * ws - 1
    table = [[r * size + c for c in range(size)] for r in range(size)]
    out = []
    for y in range(ws):
        for x in range(ws):
            for dy in range(ws):
                for dx in range(ws):
                    out.append(table[dy - y + ws // 2][dx - x + ws // 2])
    return torch.tensor(out).view(ws * ws, ws * ws)


@pytest.mark.parametrize("ws", [3, 7, 14])
def test_rel_pos_index_matches_official_loop(ws):
    idx = rel_pos_index(ws)
    assert torch.equal(idx, official_index_loop(ws))
    assert idx[0, 1].item() == ws // 2 * (2 * ws - 1) + ws // 2 + 1  # key one to the right: offset (0, +1)


def official_mask(nh: int, nw: int, ws: int, p_b: int, p_r: int) -> torch.Tensor:
    """Slow reference of the official mask construction (right / bottom / bottom_right assignments)."""
    n = 1 + ws * ws
    right = torch.zeros(n, n)
    tmp = torch.zeros(ws, ws)
    tmp[: ws - p_r, : ws - p_r] = 1
    right[1:, 1:] = tmp.repeat(ws, ws)
    right[0, 0] = 1
    right[0, 1:] = torch.tensor([1.0] * (ws - p_r) + [0.0] * p_r).repeat(ws)
    right[1:, 0] = torch.tensor([1.0] * (ws - p_r) + [0.0] * p_r).repeat(ws)
    bottom = torch.zeros(n, n)
    bottom[: ws * (ws - p_b) + 1, : ws * (ws - p_b) + 1] = 1
    bottom_right = right.clone()
    bottom_right[: ws * (ws - p_b) + 1, : ws * (ws - p_b) + 1] = 1
    mask = torch.ones(nh * nw, n, n)
    mask[nw - 1 : (nh - 1) * nw : nw] = right
    mask[(nh - 1) * nw :] = bottom
    mask[-1] = bottom_right
    return mask.bool()


@pytest.mark.parametrize("nh,nw,ws,p_b,p_r", [(3, 4, 7, 2, 5), (1, 3, 7, 0, 3), (2, 1, 5, 5, 0), (2, 2, 4, 1, 4)])
def test_window_mask_matches_official_union_quirk(nh, nw, ws, p_b, p_r):
    assert torch.equal(window_mask((nh, nw), ws, p_b, p_r), official_mask(nh, nw, ws, p_b, p_r))


def test_window_layout_round_trip_and_order():
    regional = torch.randn(2, 4, 2, 3)
    local = torch.randn(2, 4, 9, 17)  # padded bottom/right to 2*6 x 3*6
    x, layout = to_windows(regional, local, ws=6)
    assert x.shape == (2 * 6, 1 + 36, 4) and layout.mask is not None
    # window (b=1, row 0, col 2) holds local[1, :, 0:6, 12:18] row-major after its regional token
    torch.testing.assert_close(x[6 + 2, 0], regional[1, :, 0, 2])
    torch.testing.assert_close(x[6 + 2, 1 + 1 * 6 + 4], local[1, :, 1, 16])
    r2, l2 = from_windows(x, layout)
    torch.testing.assert_close(r2, regional)
    torch.testing.assert_close(l2, local)
    with pytest.raises(ValueError, match="larger"):
        to_windows(regional, torch.randn(2, 4, 13, 17), ws=6)


# Two attention paths compared in float64: they are the same arithmetic in another order, so they differ
# by rounding alone (~1e-15 here, on any CPU), and any difference in the computation shows above 1e-12.
F64 = dict(rtol=0, atol=1e-12)


def _attn(ws=4, dim=64, heads=2, dtype=torch.float32):
    attn = RelPosAttention(dim, num_heads=heads, window_size=ws).eval().to(dtype)
    with torch.no_grad():
        attn.rel_pos.normal_(0, 1.0)  # large bias so that a wrong layout would show
    return attn


@pytest.mark.numerics
@pytest.mark.parametrize("padded", [False, True])
def test_sdpa_equals_explicit_softmax(padded, monkeypatch):
    monkeypatch.setattr(attention_module, "CPU_SDPA_MIN_TOKENS", 0)  # SDPA for every length when fused
    ws, nh, nw = 4, 2, 3
    attn = _attn(ws, dtype=torch.float64)
    mask = window_mask((nh, nw), ws, 1, 3) if padded else None
    x = torch.randn(2 * nh * nw, 1 + ws * ws, 64, dtype=torch.float64)
    with torch.no_grad():
        fused = attn(x, rel_pos=True, mask=mask, num_windows=nh * nw)
        attn.fused_attn = False
        plain = attn(x, rel_pos=True, mask=mask, num_windows=nh * nw)
        # regional attention path: no bias, no mask
        r = torch.randn(2, 6, 64, dtype=torch.float64)
        plain_r = attn(r)
        attn.fused_attn = True
        fused_r = attn(r)
    torch.testing.assert_close(fused, plain, **F64)
    torch.testing.assert_close(fused_r, plain_r, **F64)


@pytest.mark.numerics
def test_short_cpu_sequences_take_the_explicit_path_with_sdpa_results(monkeypatch):
    """On CPU, sequences of <= CPU_SDPA_MIN_TOKENS tokens (the temporal attention) skip SDPA: same outputs
    and gradients as SDPA, which runs when the threshold is lowered."""
    torch.manual_seed(0)
    attn = RelPosAttention(64, num_heads=2).eval().double()
    assert attention_module.CPU_SDPA_MIN_TOKENS >= 8
    x = torch.randn(5, 8, 64, dtype=torch.float64)
    calls = []
    real_sdpa = attention_module.F.scaled_dot_product_attention

    def counting_sdpa(*args, **kwargs):
        calls.append(1)
        return real_sdpa(*args, **kwargs)

    monkeypatch.setattr(attention_module.F, "scaled_dot_product_attention", counting_sdpa)
    results = []
    for threshold in (attention_module.CPU_SDPA_MIN_TOKENS, 0):
        monkeypatch.setattr(attention_module, "CPU_SDPA_MIN_TOKENS", threshold)
        xi = x.clone().requires_grad_(True)
        out = attn(xi)
        out.square().sum().backward()
        results.append((out.detach(), xi.grad))
    assert len(calls) == 1  # only the lowered threshold went through SDPA
    torch.testing.assert_close(results[0][0], results[1][0], **F64)
    torch.testing.assert_close(results[0][1], results[1][1], **F64)


@pytest.mark.numerics
def test_explicit_path_is_official_formula():
    """The explicit path is q k^T * scale + bias on the local block, masked entries replaced, softmax."""
    ws = 3
    attn = _attn(ws, dim=32, heads=1, dtype=torch.float64)
    attn.fused_attn = False
    x = torch.randn(1, 1 + ws * ws, 32, dtype=torch.float64)
    q, k, v = attn.qkv(x).chunk(3, dim=-1)
    scores = q @ k.transpose(-2, -1) * 32**-0.5
    bias = attn.rel_pos[0][official_index_loop(ws)]
    scores[:, 1:, 1:] += bias
    expected = attn.proj(scores.softmax(-1) @ v)
    torch.testing.assert_close(attn(x, rel_pos=True), expected, **F64)


@pytest.mark.numerics
def test_fully_masked_rows_are_finite_under_bf16_autocast():
    ws = 4
    attn = _attn(ws)
    mask = window_mask((2, 2), ws, 4, 4)  # whole padded row/column of windows: fully masked queries
    x = torch.randn(4, 1 + ws * ws, 64)
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        out = attn(x, rel_pos=True, mask=mask, num_windows=4)
    assert out.dtype == torch.bfloat16 and torch.isfinite(out).all()
    with torch.no_grad():
        ref = attn(x, rel_pos=True, mask=mask, num_windows=4)
    torch.testing.assert_close(out.float(), ref, rtol=0.05, atol=0.05)


def test_wrong_token_count_is_a_clear_error():
    attn = _attn(4)
    with pytest.raises(ValueError, match="1 \\+ ws\\^2"):
        attn(torch.randn(2, 10, 64), rel_pos=True)


# -------------------------------------------------------------------------------------------------- #
# Fully masked rows (padding queries) and the chunked attention batch
# -------------------------------------------------------------------------------------------------- #
def test_open_fully_masked_rows_adds_key_zero_only_where_no_key_is_allowed():
    official = window_mask((2, 3), 4, 3, 2)
    opened = attention_module.open_fully_masked_rows(official)
    has_key = official.any(-1)  # nW, N
    assert (~has_key).any()  # the case exists: padding queries of the padded windows
    assert opened.any(-1).all()
    assert torch.equal(opened[has_key], official[has_key])
    empty_rows = opened[~has_key]
    assert empty_rows[:, 0].all() and not empty_rows[:, 1:].any()


def _padded_case(ws=4, nh=2, nw=3, images=2, dim=64):
    mask = window_mask((nh, nw), ws, 3, 2)
    x = torch.randn(images * nh * nw, 1 + ws * ws, dim)
    real = mask.any(-1).repeat(images, 1)  # B', N: queries with at least one key in the official mask
    return x, mask, nh * nw, real


@pytest.mark.parametrize("fused", [True, False])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_real_tokens_are_unchanged_by_opening_fully_masked_rows(fused, dtype, monkeypatch):
    """Real queries: bit for bit what the official mask gives (both paths, fp32 and under bf16 autocast);
    padding queries: finite."""
    monkeypatch.setattr(attention_module, "CPU_SDPA_MIN_TOKENS", 0)
    attn = _attn(4)
    attn.fused_attn = fused
    x, mask, nW, real = _padded_case()
    autocast = torch.autocast("cpu", dtype=torch.bfloat16, enabled=dtype == torch.bfloat16)
    with torch.no_grad(), autocast:
        new = attn(x, rel_pos=True, mask=mask, num_windows=nW)
        with monkeypatch.context() as m:  # the behaviour before: fully masked rows given to the kernel
            m.setattr(attention_module, "open_fully_masked_rows", lambda mask: mask)
            old = attn(x, rel_pos=True, mask=mask, num_windows=nW)
    assert new.dtype == dtype and torch.isfinite(new).all()
    assert torch.equal(new[real], old[real])


def _strict_sdpa(q, k, v, attn_mask=None, dropout_p=0.0, scale=None, **kwargs):
    """SDPA as fused kernels treat masked keys: an additive ``finfo.min`` entry is -inf, so a row with every
    key masked has no finite score and its softmax is NaN (what pytorch#110213 saw on CUDA)."""
    scores = (q @ k.transpose(-2, -1)) * scale
    if attn_mask is not None:
        scores = scores + attn_mask.masked_fill(attn_mask == torch.finfo(attn_mask.dtype).min, float("-inf"))
    return scores.softmax(-1) @ v


def test_a_kernel_that_gives_nan_on_fully_masked_rows_no_longer_poisons_the_model(monkeypatch):
    """With such a kernel the padding queries' NaN reached the logits (0 x NaN in the next block's attention);
    with the rows opened, the logits are finite and equal the normal ones."""
    from regionvit_video.models import create_model

    monkeypatch.setattr(attention_module, "CPU_SDPA_MIN_TOKENS", 0)
    model = create_model("regionvit_video_pico", num_classes=3, num_frames=2, depths=(2, 2, 2, 2)).eval()
    x = torch.randn(1, 3, 2, 60, 76)  # local maps padded in every stage
    with torch.no_grad():
        expected = model(x)
        monkeypatch.setattr(attention_module.F, "scaled_dot_product_attention", _strict_sdpa)
        fixed = model(x)
        monkeypatch.setattr(attention_module, "open_fully_masked_rows", lambda mask: mask)
        before = model(x)
    assert torch.isnan(before).all()
    torch.testing.assert_close(fixed, expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("fused", [True, False])
@pytest.mark.parametrize("masked", [True, False])
def test_chunked_attention_batch_equals_the_whole_batch(fused, masked, monkeypatch):
    """The attention core in chunks of ATTENTION_BATCH_CHUNK sequences (whole images with a mask): same
    outputs and gradients as one call over the batch."""
    monkeypatch.setattr(attention_module, "CPU_SDPA_MIN_TOKENS", 0)
    attn = _attn(4)
    attn.fused_attn = fused
    x, mask, nW, _ = _padded_case(images=3)  # 18 windows of 17 tokens
    kwargs = dict(rel_pos=True, mask=mask, num_windows=nW) if masked else {}
    calls = []
    real_sdpa = attention_module.F.scaled_dot_product_attention
    real_einsum = attention_module.torch.einsum

    def count(fn):
        def wrapped(*args, **kw):
            calls.append(1)
            return fn(*args, **kw)
        return wrapped

    results = []
    for chunk in (10**9, 5):
        monkeypatch.setattr(attention_module, "ATTENTION_BATCH_CHUNK", chunk)
        monkeypatch.setattr(attention_module.F, "scaled_dot_product_attention", count(real_sdpa))
        monkeypatch.setattr(attention_module.torch, "einsum", count(real_einsum))
        calls.clear()
        attn.zero_grad()
        xi = x.clone().requires_grad_(True)
        out = attn(xi, **kwargs)
        out.square().sum().backward()
        grads = {n: p.grad.clone() for n, p in attn.named_parameters() if p.grad is not None}
        results.append((out.detach(), xi.grad, grads, len(calls)))
    whole, chunked = results
    per_call = 1 if fused else 2
    assert whole[3] == per_call
    assert chunked[3] == per_call * (3 if masked else 4)  # masked: whole images of 6 windows; else ceil(18 / 5)
    torch.testing.assert_close(chunked[0], whole[0], rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(chunked[1], whole[1], rtol=1e-6, atol=1e-6)
    for name, grad in whole[2].items():
        torch.testing.assert_close(chunked[2][name], grad, rtol=1e-6, atol=1e-6, msg=lambda m: f"{name}: {m}")
