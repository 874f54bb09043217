"""ONNX export: ONNX Runtime's logits equal PyTorch's within 1e-4 (the demo model at batch 1 and 2 from one
file, an image model, opset 20, regionvit_video_small and timesformer_base at 8x224), the graph's inputs,
outputs and metadata. Each test prints its parity figures and latencies (pytest -s shows them)."""
from __future__ import annotations

import json
import time
from pathlib import Path

import onnx
import onnxruntime as ort
import pytest
import torch

from regionvit_video.config import load_config
from regionvit_video.engine.build import build_model
from regionvit_video.engine.export import preprocessing_from_cfg
from regionvit_video.models import (check_onnx_parity, create_model, export_onnx, from_pretrained,
                                    save_pretrained)

DEMO_CFG = Path(__file__).resolve().parents[1] / "configs" / "demo.yaml"
TOL = 1e-4


def _randomise(model, scale=0.05):
    """Non-trivial values everywhere (zero-initialised temporal_fc and time_embed included)."""
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * scale)
    return model.eval()


def _check(model, path, clip, what, repeats=1):
    result = check_onnx_parity(model, path, clip, repeats=repeats)
    print(f"\n{what}: {result}")
    assert result.max_abs_diff < TOL, result
    assert result.same_topk, result
    return result


@pytest.fixture(scope="module")
def demo_export(tmp_path_factory):
    """The demo model (configs/demo.yaml) saved, loaded with from_pretrained and exported once (batch dynamic)."""
    cfg = load_config(DEMO_CFG, check_paths=False)
    tmp = tmp_path_factory.mktemp("onnx")
    names = [f"action {i}" for i in range(cfg.MODEL.NUM_CLASSES)]
    save_pretrained(_randomise(build_model(cfg)), tmp / "pretrained", class_names=names,
                    preprocessing=preprocessing_from_cfg(cfg))
    model = from_pretrained(tmp / "pretrained")
    t = time.perf_counter()
    path = export_onnx(model, tmp / "model.onnx", (1, 3, cfg.DATA.NUM_FRAMES, 64, 64))
    print(f"\nexport of {cfg.MODEL.ARCH} (4x64x64, dynamic batch, opset 18): {time.perf_counter() - t:.1f} s")
    return model, path


@pytest.mark.parametrize("batch", [1, 2])
def test_demo_model_matches_pytorch(demo_export, batch):
    model, path = demo_export
    _check(model, path, torch.randn(batch, 3, 4, 64, 64), f"regionvit_video_pico_w4 batch {batch}")


def test_demo_model_graph_and_metadata(demo_export):
    model, path = demo_export
    proto = onnx.load(str(path))
    onnx.checker.check_model(proto)
    assert {o.domain: o.version for o in proto.opset_import}[""] == 18
    (inp,), (out,) = proto.graph.input, proto.graph.output
    dims = [d.dim_param or d.dim_value for d in inp.type.tensor_type.shape.dim]
    assert inp.name == "video" and dims == ["batch", 3, 4, 64, 64]
    assert out.name == "logits" and [d.dim_param or d.dim_value for d in out.type.tensor_type.shape.dim] == ["batch", 8]
    meta = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).get_modelmeta().custom_metadata_map
    assert meta["architecture"] == "regionvit_video_pico_w4"
    assert json.loads(meta["label_names"])[3] == "action 3"
    assert json.loads(meta["preprocessing"])["num_spatial_crops"] == 3
    assert not model.training


@pytest.mark.parametrize("name, kwargs, shape, opset", [
    # another opset than the exporter's own, a dynamic batch traced at 2 and run at 3
    ("timesformer_tiny", dict(num_classes=5, num_frames=4, img_size=64), (2, 3, 4, 64, 64), 20),
    # an image model whose window (7) pads a 64 px input: the attention mask in every stage
    ("regionvit_pico", dict(num_classes=5), (2, 3, 64, 64), 18),
])
def test_small_models_match_pytorch(tmp_path, name, kwargs, shape, opset):
    model = _randomise(create_model(name, **kwargs))
    path = export_onnx(model, tmp_path / "m.onnx", shape, opset=opset)
    assert {o.domain: o.version for o in onnx.load(str(path)).opset_import}[""] == opset
    _check(model, path, torch.randn(3, *shape[1:]), f"{name} opset {opset} batch 3")


def test_export_arguments(tmp_path):
    model = create_model("timesformer_tiny", num_classes=2, num_frames=2, img_size=32)
    with pytest.raises(ValueError, match="opset must be at least 18"):
        export_onnx(model, tmp_path / "m.onnx", opset=17)
    with pytest.raises(ValueError, match="input_shape must be"):
        export_onnx(model, tmp_path / "m.onnx", (3, 2, 32, 32, 1, 1))
    with pytest.raises(ValueError, match="repeats must be at least 0"):
        check_onnx_parity(model, tmp_path / "m.onnx", torch.randn(1, 3, 2, 32, 32), repeats=-1)


@pytest.mark.slow
@pytest.mark.parametrize("name", ["regionvit_video_small", "timesformer_base"])
def test_8x224_models_match_pytorch(tmp_path, name):
    """The paper's video models at 8x224 (random weights, temporal branch active), exported as users get them."""
    model = _randomise(create_model(name, num_classes=400, num_frames=8, time_embed_init="normal",
                                    temporal_fc_init="trunc_normal"), scale=0.01)
    t = time.perf_counter()
    path = export_onnx(model, tmp_path / "model.onnx", (1, 3, 8, 224, 224))
    print(f"\nexport of {name} (8x224, dynamic batch, opset 18): {time.perf_counter() - t:.1f} s")
    # one run of each (these take seconds on 2 cores); benchmarks/bench_export.py times warm runs
    _check(model, path, torch.randn(1, 3, 8, 224, 224), f"{name} 8x224 batch 1", repeats=0)
