"""The model contract, over every registered video model (as timm's tests loop over ``list_models``).

Each model goes through ``engine.build_model``, ``forward``, ``forward_features``, ``forward_intermediates``,
inflation from its image twin (``build_image_twin``) and a training step with the engine's optimizer and
loss. Models of under 5M parameters (the pico / tiny test variants) run for real on small clips and their
values are checked; the others run on the meta device, which checks every shape, key and code path
without computing (and keeps the whole file at about half a minute on 2 cores).
"""
from __future__ import annotations

import pytest
import torch

from regionvit_video.config import load_config
from regionvit_video.engine.build import build_model
from regionvit_video.engine.optim import build_optimizer, build_train_loss
from regionvit_video.models import check_video_model, create_model, list_models, load_pretrained, model_info
from regionvit_video.models.weights import _tied_keys

VIDEO_MODELS = list_models(kind="video")
REAL_BELOW = 5_000_000  # parameters
B, T, SIZE, CLASSES = 2, 2, 32, 5


def _cfg(name: str):
    return load_config(None, ["MODEL.ARCH", name, "MODEL.NUM_CLASSES", str(CLASSES), "DATA.NUM_FRAMES", str(T),
                              "MODEL.DROP_PATH_RATE", "0.1"], check_paths=False)


def _build(cfg) -> tuple[torch.nn.Module, bool]:
    """The model of ``cfg`` through engine.build_model, for real when it is small, else on the meta device."""
    with torch.device("meta"):
        model = build_model(cfg)
    if sum(p.numel() for p in model.parameters()) < REAL_BELOW:
        return build_model(cfg), True
    return model, False


def _randomise(model):
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    return model


def test_every_model_is_tagged_and_video_models_have_image_twins_or_build_them():
    assert set(list_models()) == set(VIDEO_MODELS) | set(list_models(kind="image"))
    assert "timesformer_base" in VIDEO_MODELS and "regionvit_small" not in VIDEO_MODELS
    for name in VIDEO_MODELS:
        twin = model_info(name).image_twin
        assert twin is None or model_info(twin).kind == "image"
    with pytest.raises(ValueError, match=r"'regionvit_small' is an image model.*its video version is "
                                         r"regionvit_video_small.*timesformer_base"):
        check_video_model("regionvit_small")
    with pytest.raises(ValueError, match="its video version is regionvit_video_small"):
        build_model(load_config(None, ["MODEL.ARCH", "regionvit_small"], validate=False))


def test_create_model_unknown_name_suggests_close_matches():
    with pytest.raises(KeyError, match="unknown model 'no_such_model'"):
        create_model("no_such_model")


def test_list_models_pattern_filters():
    names = list_models()
    assert names == sorted(names)
    assert list_models("zzz_nothing_*") == []


@pytest.mark.parametrize("name", VIDEO_MODELS)
def test_video_model_contract(name, tmp_path):
    cfg = _cfg(name)
    model, real = _build(cfg)
    device = "cpu" if real else "meta"
    assert model.num_classes == CLASSES and model.num_frames == T
    x = torch.randn(B, 3, T, SIZE, SIZE, device=device)

    # forward, forward_features, forward_intermediates
    model.eval()
    with torch.no_grad():
        final, maps = model.forward_intermediates(x)
        first = model.forward_intermediates(x, indices=[0], stop_early=True, intermediates_only=True)
    assert final.shape == (B, model.num_features) and model.forward_head(final).shape == (B, CLASSES)
    assert len(maps) == len(model.feature_info) and len(first) == 1 and first[0].shape == maps[0].shape
    for m, info in zip(maps, model.feature_info):
        assert m.ndim == 5 and m.shape[:3] == (B, info["num_chs"], T), (m.shape, info)
        assert SIZE // info["reduction"] <= m.shape[-1] <= -(-SIZE // info["reduction"])
    with pytest.raises(ValueError, match="output_fmt"):
        model.forward_intermediates(x, output_fmt="NHWC")
    if real:
        with torch.no_grad():
            torch.testing.assert_close(model.forward_head(final), model(x))
        torch.testing.assert_close(first[0], maps[0])

    # inflation from the image twin: every key found, temporal weights created, and forward_features of a static
    # clip equals the image model's pooled features
    with torch.device(device):
        image = model.build_image_twin()
    if real:
        image = _randomise(image).eval()
        torch.save({"model": image.state_dict()}, tmp_path / "image.pth")
        report = load_pretrained(model, tmp_path / "image.pth", temporal_init="copy")
        assert report.missing == [] and report.unexpected == [] and report.reinitialised == []
        assert "time_embed" in report.created
        img = torch.randn(1, 3, SIZE, SIZE)
        with torch.no_grad():
            expected = image.forward_head(image.forward_features(img), pre_logits=True)
            got = model.forward_features(img[:, :, None].expand(-1, -1, T, -1, -1))
        torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-4)
    else:
        sd = model.filter_pretrained(image.state_dict(), temporal_init="copy")
        own = model.state_dict()
        missing = set(own) - set(sd)
        assert missing == _tied_keys(model, sorted(missing), set(sd)), sorted(missing)[:5]
        assert "time_embed" in sd and not set(sd) - set(own) - set(image.state_dict())
        assert all(sd[k].shape == v.shape for k, v in own.items() if k in sd)

    # a training step with the engine's optimizer and loss: forward (= forward_head(forward_features(x))), every
    # parameter gets a gradient
    model.train()
    optimizer = build_optimizer(cfg, model)
    criterion = build_train_loss(cfg, mixup_enabled=False)
    before = {n: p.detach().clone() for n, p in model.named_parameters()} if real else {}
    logits = model(x)
    assert logits.shape == (B, CLASSES)
    loss = criterion(logits.float(), torch.arange(B, device=device) % CLASSES)
    loss.backward()
    assert [n for n, p in model.named_parameters() if p.grad is None] == []
    assert sum(len(g["params"]) for g in optimizer.param_groups) == len(list(model.parameters()))
    if real:  # (on the meta device the update itself would only cost time)
        optimizer.step()
        assert torch.isfinite(loss)
        changed = [n for n, p in model.named_parameters() if not torch.equal(p, before[n])]
        assert "head.weight" in changed and len(changed) > len(before) // 2



@pytest.mark.parametrize("name", ["regionvit_pico", "regionvit_video_pico", "timesformer_tiny"])
def test_compile_repeated_blocks_compiles_every_block_and_nothing_else(name):
    """Regional compilation (MODEL.COMPILE_SCOPE blocks) on each model family: every block is compiled in place
    (compiling is lazy: nothing is traced here) and nothing else; the state_dict keys stay the same."""
    from regionvit_video.models.regionvit import R2LBlock
    from regionvit_video.models.timesformer import DividedSpaceTimeBlock

    model = create_model(name, num_classes=CLASSES)
    keys = list(model.state_dict())
    blocks = {m for m in model.modules() if isinstance(m, (R2LBlock, DividedSpaceTimeBlock))}
    assert model.compile_repeated_blocks(backend="eager") == len(blocks) > 0
    assert {m for m in model.modules() if getattr(m, "_compiled_call_impl", None) is not None} == blocks
    assert list(model.state_dict()) == keys


@pytest.mark.slow  # dynamo traces the pico model's four block shapes: about 18 s on 2 cores
def test_a_model_compiled_block_by_block_computes_the_eager_outputs():
    """MODEL.COMPILE with MODEL.COMPILE_SCOPE blocks through engine.build_model, dynamo's ``eager`` backend (the
    traced graphs run the same aten ops, so the logits are bit for bit the eager model's); the state_dict loads
    strictly both ways. The inductor speed: benchmarks/bench_models.py --compile blocks."""
    cfg = _cfg("regionvit_video_pico")
    torch.manual_seed(0)
    eager = _randomise(build_model(cfg)).eval()
    cfg.defrost()
    cfg.MODEL.COMPILE, cfg.MODEL.COMPILE_SCOPE, cfg.MODEL.COMPILE_BACKEND = True, "blocks", "eager"
    model = build_model(cfg).eval()
    model.load_state_dict(eager.state_dict())  # strict: the same keys
    eager.load_state_dict(model.state_dict())
    x = torch.randn(B, 3, T, SIZE, SIZE)
    with torch.no_grad():
        assert torch.equal(model(x), eager(x))
