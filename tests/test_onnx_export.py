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
def demo_run(tmp_path_factory):
    """A checkpoint of the demo model (configs/demo.yaml, random weights) and a small demo test list."""
    from regionvit_video.demo.synthetic_actions import make_synthetic_actions

    root = tmp_path_factory.mktemp("export_cli")
    data = make_synthetic_actions(root / "data", num_train=0, num_val=0, num_test=8, size=64, num_frames=16,
                                  workers=0, progress=False)
    opts = ["DATA.PATH_TO_DATA_DIR", data["root"], "DATA.PATH_PREFIX", data["root"], "DATA.CLASS_NAMES", data["classes_file"],
            "DATA_LOADER.NUM_WORKERS", "0", "DEVICE", "cpu"]
    model = _randomise(build_model(load_config(DEMO_CFG, opts, check_paths=False)))
    ckpt = root / "checkpoint_epoch_00030.pyth"
    torch.save({"model_state": model.state_dict(), "epoch": 30, "epoch_complete": True}, ckpt)
    return dict(model=model, ckpt=ckpt, opts=opts, root=root, data=data)


@pytest.fixture(scope="module")
def demo_export(demo_run, run_net):
    """``run_net.py ... EXPORT.ENABLE True EXPORT.FORMAT onnx`` on the demo checkpoint (one export, batch dynamic)."""
    out = demo_run["root"] / "onnx_out"
    t = time.perf_counter()
    assert run_net.main(["--cfg", str(DEMO_CFG), *demo_run["opts"], "EXPORT.ENABLE", "True",
                                "EXPORT.FORMAT", "onnx", "TEST.CHECKPOINT_FILE_PATH", str(demo_run["ckpt"]),
                                "OUTPUT_DIR", str(out)]) == 0
    print(f"\nrun_net.py EXPORT.FORMAT onnx of regionvit_video_pico_w4 (4x64x64, dynamic batch, opset 18): "
          f"{time.perf_counter() - t:.1f} s")
    return demo_run["model"].eval(), out / "export" / "model.onnx"


def test_cli_export_report(demo_export):
    """export_report.json: format, opset, the test views of a real clip as input, parity and both latencies."""
    _, path = demo_export
    report = json.loads((path.parent / "export_report.json").read_text())
    print(f"\nexport_report.json: {report}")
    assert report["format"] == "onnx" and report["opset"] == 18 and report["dynamic_batch"]
    assert report["input_shape"] == [3, 3, 4, 64, 64]  # 3 test crops of 4 frames of a demo test video
    assert report["parity_video"].endswith(".mp4") and report["max_abs_diff"] < TOL and report["same_topk"]
    assert report["onnx_latency_ms"] > 0 and report["torch_latency_ms"] > 0


@pytest.mark.parametrize("batch", [1, 2])
def test_demo_model_matches_pytorch(demo_export, batch):
    model, path = demo_export
    _check(model, path, torch.randn(batch, 3, 4, 64, 64), f"regionvit_video_pico_w4 batch {batch}")


def test_demo_model_graph_and_metadata(demo_export):
    _, path = demo_export
    proto = onnx.load(str(path))
    onnx.checker.check_model(proto)
    assert {o.domain: o.version for o in proto.opset_import}[""] == 18
    (inp,), (out,) = proto.graph.input, proto.graph.output
    dims = [d.dim_param or d.dim_value for d in inp.type.tensor_type.shape.dim]
    assert inp.name == "video" and dims == ["batch", 3, 4, 64, 64]
    assert out.name == "logits" and [d.dim_param or d.dim_value for d in out.type.tensor_type.shape.dim] == ["batch", 8]
    meta = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).get_modelmeta().custom_metadata_map
    assert meta["architecture"] == "regionvit_video_pico_w4"
    assert json.loads(meta["label_names"])[3] == "move_down"  # DATA.CLASS_NAMES of the run
    assert json.loads(meta["preprocessing"])["num_spatial_crops"] == 3


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


def test_cli_pretrained_folder_loads_in_a_fresh_python_and_serves_as_the_test_checkpoint(demo_run, run_net, tmp_path):
    """``EXPORT.FORMAT pretrained``: a folder that a fresh Python rebuilds with from_pretrained alone (same logits),
    and that TEST.CHECKPOINT_FILE_PATH takes for a prediction (same top-5 as the .pyth)."""
    import subprocess
    import sys

    base = ["--cfg", str(DEMO_CFG), *demo_run["opts"]]
    out = tmp_path / "out"
    assert run_net.main([*base, "EXPORT.ENABLE", "True", "TEST.CHECKPOINT_FILE_PATH", str(demo_run["ckpt"]),
                         "OUTPUT_DIR", str(out)]) == 0
    folder = out / "export"
    report = json.loads((folder / "export_report.json").read_text())
    assert report["format"] == "pretrained" and report["max_abs_diff"] == 0.0
    assert sorted(p.name for p in folder.iterdir()) == ["config.json", "export_report.json", "model.safetensors"]
    clip = torch.randn(2, 3, 4, 64, 64)
    torch.save(clip, tmp_path / "clip.pt")
    code = (f"import sys, torch; torch.set_num_threads({torch.get_num_threads()}); "  # this process's summation order
            "from regionvit_video.models import from_pretrained; "
            f"m = from_pretrained({str(folder)!r}); "
            f"torch.set_grad_enabled(False); torch.save(m(torch.load({str(tmp_path / 'clip.pt')!r})), "
            f"{str(tmp_path / 'logits.pt')!r}); "
            "print(m.pretrained_cfg['label_names'][0], m.pretrained_cfg['preprocessing']['num_spatial_crops'])")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.split()[-2:] == ["move_left", "3"]
    with torch.no_grad():
        assert torch.equal(torch.load(tmp_path / "logits.pt"), demo_run["model"].eval()(clip))
    video = str(next(Path(demo_run["data"]["root"]).rglob("*.mp4")))
    tops = []
    for weights in (demo_run["ckpt"], folder):
        assert run_net.main([*base, "PREDICT.ENABLE", "True", "PREDICT.INPUT", video, "TEST.CHECKPOINT_FILE_PATH",
                             str(weights), "OUTPUT_DIR", str(tmp_path / "predict")]) == 0
        tops.append(json.loads((tmp_path / "predict" / "prediction.json").read_text())["top_k"])
    assert tops[0] == tops[1]
