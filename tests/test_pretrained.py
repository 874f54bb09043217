"""Pretrained folders: save_pretrained / from_pretrained (safetensors + config.json), the Hub path offline,
damaged files, load_pretrained on a folder, and a training checkpoint turned into a folder."""
from __future__ import annotations

import json
import pickle
import socket
import threading
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from regionvit_video.config import load_config
from regionvit_video.engine.build import build_model
from regionvit_video.engine.export import checkpoint_to_pretrained, preprocessing_from_cfg
from regionvit_video.models import (PretrainedFormatError, PretrainedNotFoundError, create_model, from_pretrained,
                                    load_pretrained, read_pretrained_config, save_pretrained)

DEMO_CFG = Path(__file__).resolve().parents[1] / "configs" / "demo.yaml"


def _randomise(model):
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    return model.eval()


@pytest.fixture(scope="module")
def pico_folder(tmp_path_factory):
    """A saved regionvit_video_pico_w4 (8 classes, 4 frames) and the model it came from."""
    model = _randomise(create_model("regionvit_video_pico_w4", num_classes=8, num_frames=4))
    folder = tmp_path_factory.mktemp("pretrained") / "pico"
    prep = {"num_frames": 4, "crop_size": 64, "test_scale": 64, "mean": [0.5, 0.5, 0.5], "std": [0.25, 0.25, 0.25]}
    save_pretrained(model, folder, class_names=[f"action {i}" for i in range(8)], preprocessing=prep)
    return folder, model


def _copy(folder: Path, dst: Path) -> Path:
    dst.mkdir()
    for f in folder.iterdir():
        (dst / f.name).write_bytes(f.read_bytes())
    return dst


@pytest.mark.parametrize("name, kwargs, shape", [
    ("regionvit_video_pico_w4", dict(num_classes=8, num_frames=4, time_embed_init="normal"), (2, 3, 4, 64, 64)),
    ("regionvit_pico", dict(num_classes=5), (2, 3, 64, 64)),
    ("timesformer_tiny", dict(num_classes=3, num_frames=2, img_size=32, drop_path_rate=0.2), (2, 3, 2, 32, 32)),
])
def test_round_trip_rebuilds_the_same_model_without_pickle(tmp_path, monkeypatch, name, kwargs, shape):
    model = _randomise(create_model(name, **kwargs))
    save_pretrained(model, tmp_path / "m")
    assert sorted(p.name for p in (tmp_path / "m").iterdir()) == ["config.json", "model.safetensors"]
    config = json.loads((tmp_path / "m" / "config.json").read_text())
    assert config["architecture"] == name and config["model_args"] == json.loads(json.dumps(kwargs))

    def no_pickle(*a, **k):
        raise AssertionError("pickle used")

    monkeypatch.setattr(torch, "load", no_pickle)
    monkeypatch.setattr(pickle, "load", no_pickle)
    monkeypatch.setattr(pickle, "loads", no_pickle)
    loaded = from_pretrained(tmp_path / "m")
    assert not loaded.training and type(loaded) is type(model)
    x = torch.randn(shape)
    with torch.no_grad():
        assert torch.equal(loaded(x), model(x))
    for k, v in model.state_dict().items():
        assert torch.equal(loaded.state_dict()[k], v), k


def test_names_preprocessing_and_shared_tensors(pico_folder):
    folder, model = pico_folder
    loaded = from_pretrained(str(folder))
    cfg = loaded.pretrained_cfg
    assert cfg["architecture"] == "regionvit_video_pico_w4"
    assert cfg["label_names"] == [f"action {i}" for i in range(8)]
    assert cfg["preprocessing"]["crop_size"] == 64 and cfg["preprocessing"]["num_frames"] == 4
    # timm's keys follow the preprocessing
    assert list(cfg["input_size"]) == [3, 4, 64, 64] and list(cfg["mean"]) == [0.5, 0.5, 0.5]
    # proj_cls is proj (one module): stored once, shared again after loading
    keys = load_file(folder / "model.safetensors").keys()
    assert "layers.1.block.0.proj.0.weight" in keys and "layers.1.block.0.proj_cls.0.weight" not in keys
    assert loaded.layers[1].block[0].proj_cls is loaded.layers[1].block[0].proj
    # a loaded model saves again (create_model recorded its arguments)
    assert loaded.model_args == {"num_classes": 8, "num_frames": 4}
    assert read_pretrained_config(folder)["num_features"] == 256


def test_reset_classifier_and_wrappers(tmp_path):
    model = _randomise(create_model("regionvit_pico", num_classes=5))
    model.reset_classifier(3)
    compiled = torch.compile(model)  # a wrapper (compiles only when called); save_pretrained unwraps it
    save_pretrained(compiled, tmp_path / "m", class_names=["a", "b", "c"])
    loaded = from_pretrained(tmp_path / "m")
    assert loaded.num_classes == 3 and loaded.pretrained_cfg["label_names"] == ["a", "b", "c"]
    with pytest.raises(ValueError, match="2 class names for a model with 3 classes"):
        save_pretrained(model, tmp_path / "n", class_names=["a", "b"])


def test_model_not_built_by_create_model_is_refused(tmp_path):
    from regionvit_video.models import RegionViT

    with pytest.raises(ValueError, match="built by regionvit_video.models.create_model"):
        save_pretrained(RegionViT(num_classes=2, embed_dim=(32, 32, 64, 128, 256), depths=(1, 1, 1, 1)), tmp_path)


# ------------------------------------------------------------------------------------------------ #
# Damaged folders: clear errors that name the file
# ------------------------------------------------------------------------------------------------ #
def test_truncated_weights(pico_folder, tmp_path):
    folder = _copy(pico_folder[0], tmp_path / "f")
    w = folder / "model.safetensors"
    w.write_bytes(w.read_bytes()[: w.stat().st_size // 2])
    with pytest.raises(PretrainedFormatError, match=r"model\.safetensors: its sha256 differs"):
        from_pretrained(folder)
    # without the recorded digest, safetensors itself refuses the file
    config = json.loads((folder / "config.json").read_text())
    del config["weights"]["sha256"]
    (folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(PretrainedFormatError, match=r"model\.safetensors: not a readable safetensors file"):
        from_pretrained(folder)


def test_tampered_weights_and_header(pico_folder, tmp_path):
    folder = _copy(pico_folder[0], tmp_path / "f")
    w = folder / "model.safetensors"
    data = bytearray(w.read_bytes())
    data[-100] ^= 0xFF  # one byte of one weight
    w.write_bytes(bytes(data))
    with pytest.raises(PretrainedFormatError, match="modified or damaged"):
        from_pretrained(folder)
    with pytest.raises(PretrainedFormatError, match="modified or damaged"):
        load_pretrained(create_model("regionvit_video_pico_w4", num_classes=8, num_frames=4), folder)
    # a damaged header (its length field) is refused by safetensors, named
    data = bytearray((pico_folder[0] / "model.safetensors").read_bytes())
    data[0:8] = (len(data) * 4).to_bytes(8, "little")
    w.write_bytes(bytes(data))
    with pytest.raises(PretrainedFormatError, match="not a readable safetensors file"):
        load_pretrained(create_model("regionvit_video_pico_w4", num_classes=8, num_frames=4), w)


def _edit_config(folder: Path, **changes) -> None:
    config = json.loads((folder / "config.json").read_text())
    config.update(changes)
    (folder / "config.json").write_text(json.dumps(config))


def test_unknown_architecture_bad_json_wrong_format(pico_folder, tmp_path):
    folder = _copy(pico_folder[0], tmp_path / "f")
    _edit_config(folder, architecture="regionvit_video_pico_w5")
    with pytest.raises(PretrainedFormatError, match=r"config\.json: unknown architecture 'regionvit_video_pico_w5'.*"
                                                    r"did you mean regionvit_video_pico_w4"):
        from_pretrained(folder)
    (folder / "config.json").write_text('{"architecture": ')
    with pytest.raises(PretrainedFormatError, match=r"config\.json: not valid JSON"):
        from_pretrained(folder)
    (folder / "config.json").write_text(json.dumps({"architectures": ["VideoMAEForVideoClassification"]}))
    with pytest.raises(PretrainedFormatError, match="not written by save_pretrained"):
        from_pretrained(folder)
    (folder / "config.json").unlink()
    with pytest.raises(PretrainedNotFoundError, match=r"config\.json not found"):
        from_pretrained(folder)


def test_missing_keys_and_shape_mismatch(pico_folder, tmp_path):
    folder = _copy(pico_folder[0], tmp_path / "f")
    sd = load_file(folder / "model.safetensors")
    del sd["head.weight"]
    save_file(sd, folder / "model.safetensors")
    config = json.loads((folder / "config.json").read_text())
    del config["weights"]["sha256"]  # a folder edited by hand: no digest to check
    (folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(PretrainedFormatError, match=r"safetensors does not match.*1 missing keys \['head\.weight'\]"):
        from_pretrained(folder)
    folder = _copy(pico_folder[0], tmp_path / "g")
    config = json.loads((folder / "config.json").read_text())
    config["model_args"]["num_classes"] = 9
    config["label_names"] = None
    (folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(PretrainedFormatError, match=r"model\.safetensors: shape mismatch.*head\.weight"):
        from_pretrained(folder)


def test_missing_paths(tmp_path, pico_folder):
    with pytest.raises(PretrainedNotFoundError, match="pretrained folder not found"):
        from_pretrained(tmp_path / "nowhere")
    with pytest.raises(PretrainedNotFoundError, match="is a file"):
        from_pretrained(pico_folder[0] / "model.safetensors")


# ------------------------------------------------------------------------------------------------ #
# Hub ids: offline, unreachable, cached
# ------------------------------------------------------------------------------------------------ #
def test_hub_id_offline_fails_at_once(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    t = time.monotonic()
    with pytest.raises(PretrainedNotFoundError, match=r"'someone/regionvit-k400'.*HF_HUB_OFFLINE is set.*not in the "
                                                      r"local cache"):
        from_pretrained("someone/regionvit-k400", cache_dir=str(tmp_path / "cache"))
    assert time.monotonic() - t < 30  # no network attempt: far below any retry loop, far above a busy machine's noise


@pytest.fixture
def silent_server():
    """A local HTTP endpoint that accepts connections and never answers (a hung network path)."""
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(8)
    conns = []

    def accept():
        while True:
            try:
                conns.append(srv.accept()[0])
            except OSError:
                return

    threading.Thread(target=accept, daemon=True).start()
    yield f"http://127.0.0.1:{srv.getsockname()[1]}"
    srv.close()
    for c in conns:
        c.close()


def test_hub_id_unreachable_fails_fast(tmp_path, monkeypatch, silent_server):
    from huggingface_hub import constants

    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(constants, "ENDPOINT", silent_server)
    t = time.monotonic()
    with pytest.raises(PretrainedNotFoundError, match=r"did not answer.*not in the local cache"):
        from_pretrained("hf-hub:someone/regionvit-k400", cache_dir=str(tmp_path / "cache"), hub_timeout=1)
    # huggingface_hub alone retries a silent host for minutes; the probe gives up after its timeout (1 s; the
    # bound leaves room for a busy machine while still telling seconds from minutes)
    assert time.monotonic() - t < 60


def _cache_on_the_hub(folder: Path, cache: Path) -> None:
    """``folder`` as huggingface_hub's cache holds a download of someone/regionvit-k400 (its snapshot layout)."""
    commit = "0123456789abcdef0123456789abcdef01234567"
    repo = cache / "models--someone--regionvit-k400"
    (repo / "snapshots").mkdir(parents=True)
    _copy(folder, repo / "snapshots" / commit)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)


def test_hub_id_offline_loads_from_the_cache(tmp_path, monkeypatch, pico_folder):
    """A model downloaded once loads offline from huggingface_hub's cache (its snapshot layout)."""
    _cache_on_the_hub(pico_folder[0], tmp_path / "cache")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    loaded = from_pretrained("someone/regionvit-k400", cache_dir=str(tmp_path / "cache"))
    x = torch.randn(1, 3, 4, 64, 64)
    with torch.no_grad():
        assert torch.equal(loaded(x), pico_folder[1](x))



def test_an_hf_hub_id_is_a_weights_source_wherever_the_config_takes_one(tmp_path, monkeypatch, pico_folder):
    """``hf-hub:org/name`` in MODEL.PRETRAINED / TRAIN.CHECKPOINT_FILE_PATH / TEST.CHECKPOINT_FILE_PATH passes the
    config check and loads (here offline, from huggingface_hub's cache): through load_pretrained (what training
    starts from) and as inference weights."""
    from huggingface_hub import constants

    from regionvit_video.engine.checkpoint import load_inference_model
    from regionvit_video.engine.distributed import DistInfo

    _cache_on_the_hub(pico_folder[0], tmp_path / "cache")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "cache"))
    hub = "hf-hub:someone/regionvit-k400"
    model = pico_folder[1]
    fresh = create_model("regionvit_video_pico_w4", num_classes=8, num_frames=4).eval()
    report = load_pretrained(fresh, hub)
    assert report.missing == [] and report.unexpected == []
    x = torch.randn(1, 3, 4, 64, 64)
    with torch.no_grad():
        assert torch.equal(fresh(x), model(x))
    base = ["MODEL.ARCH", "regionvit_video_pico_w4", "MODEL.NUM_CLASSES", "8", "DATA.NUM_FRAMES", "4",
            "OUTPUT_DIR", str(tmp_path / "run")]
    for key in ("MODEL.PRETRAINED", "TRAIN.CHECKPOINT_FILE_PATH", "TEST.CHECKPOINT_FILE_PATH"):
        cfg = load_config(None, [*base, key, hub, "TRAIN.ENABLE", "False", "TEST.ENABLE", "False"])
        assert cfg[key.split(".")[0]][key.split(".")[1]] == hub
    cfg = load_config(None, [*base, "MODEL.PRETRAINED", hub], check_paths=False)
    loaded, weights = load_inference_model(cfg, DistInfo(), allow_pretrained=True, job="predict with")
    assert weights.kind == "pretrained"
    with torch.no_grad():
        assert torch.equal(loaded(x), model(x))

# ------------------------------------------------------------------------------------------------ #
# load_pretrained and checkpoints
# ------------------------------------------------------------------------------------------------ #
def test_load_pretrained_takes_a_folder(pico_folder, tmp_path):
    folder, model = pico_folder
    fresh = create_model("regionvit_video_pico_w4", num_classes=8, num_frames=4).eval()
    report = load_pretrained(fresh, folder)
    assert report.missing == [] and report.unexpected == [] and report.reinitialised == []
    x = torch.randn(1, 3, 4, 64, 64)
    with torch.no_grad():
        assert torch.equal(fresh(x), model(x))
    # an image model's folder inflates into the video model (MODEL.PRETRAINED), another head re-initialised
    image = _randomise(create_model("regionvit_pico_w4", num_classes=5))
    save_pretrained(image, tmp_path / "image")
    video = create_model("regionvit_video_pico_w4", num_classes=8, num_frames=4)
    report = load_pretrained(video, tmp_path / "image")
    assert report.created and all(".temporal_" in k or k == "time_embed" for k in report.created)
    assert sorted(report.reinitialised) == ["head.bias", "head.weight"]
    assert torch.equal(video.layers[2].block[1].attn.qkv.weight, image.layers[2].block[1].attn.qkv.weight)


@pytest.fixture(scope="module")
def demo_cfg(tmp_path_factory):
    names = tmp_path_factory.mktemp("names") / "classes.txt"
    names.write_text("".join(f"move {i}\n" for i in range(8)))
    return load_config(DEMO_CFG, ["DATA.CLASS_NAMES", str(names), "DATA_LOADER.NUM_WORKERS", "0"], check_paths=False)


def test_checkpoint_to_pretrained(tmp_path, demo_cfg):
    model = _randomise(build_model(demo_cfg))
    ema = _randomise(build_model(demo_cfg))
    ckpt = tmp_path / "checkpoint_epoch_00003.pyth"
    torch.save({"model_state": model.state_dict(), "ema_state": ema.state_dict(), "epoch": 3, "iteration": 0,
                "epoch_complete": True, "global_step": 42, "cfg": demo_cfg.dump()}, ckpt)
    x = torch.randn(2, 3, 4, 64, 64)
    for weights, ref in (("model", model), ("ema", ema)):
        folder = checkpoint_to_pretrained(ckpt, demo_cfg, tmp_path / weights, weights=weights)
        loaded = from_pretrained(folder)
        with torch.no_grad():
            assert torch.equal(loaded(x), ref(x))
        cfg = loaded.pretrained_cfg
        assert cfg["source"]["weights"] == f"{weights}_state" and cfg["source"]["epoch"] == 3
        assert cfg["label_names"] == [f"move {i}" for i in range(8)]
        assert cfg["preprocessing"] == preprocessing_from_cfg(demo_cfg)
    prep = cfg["preprocessing"]
    assert (prep["num_frames"], prep["test_scale"], prep["crop_size"], prep["sampling"]) == (4, 64, 64, "uniform")
    assert (prep["num_ensemble_views"], prep["num_spatial_crops"]) == (1, 3)
    assert list(cfg["input_size"]) == [3, 4, 64, 64]


def test_checkpoint_to_pretrained_errors(tmp_path, demo_cfg):
    model = build_model(demo_cfg)
    ckpt = tmp_path / "c.pyth"
    torch.save({"model_state": model.state_dict(), "ema_state": None, "epoch": 1}, ckpt)
    with pytest.raises(ValueError, match="holds no EMA weights"):
        checkpoint_to_pretrained(ckpt, demo_cfg, tmp_path / "out", weights="ema")
    other = load_config(DEMO_CFG, ["MODEL.NUM_CLASSES", "5"], check_paths=False)
    with pytest.raises(PretrainedFormatError, match=r"c\.pyth \(model_state.*shape mismatch.*head\.weight"):
        checkpoint_to_pretrained(ckpt, other, tmp_path / "out")
    torch.save(model.state_dict(), tmp_path / "bare.pth")
    with pytest.raises(ValueError, match="not a regionvit-video training checkpoint"):
        checkpoint_to_pretrained(tmp_path / "bare.pth", demo_cfg, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_every_process_of_a_job_loads_a_pretrained_folder_named_as_its_weights(pico_folder, tmp_path):
    """With several processes, rank 0's choice of weights is used everywhere, and only a checkpoint *file* must be
    visible to each process: a pretrained folder (TEST.CHECKPOINT_FILE_PATH) loads as in a one-process run.
    Outside a process group the broadcast returns its input, so one process stands in for each rank."""
    from regionvit_video.engine.checkpoint import load_inference_model
    from regionvit_video.engine.distributed import DistInfo

    folder, model = pico_folder
    cfg = load_config(None, ["MODEL.ARCH", "regionvit_video_pico_w4", "MODEL.NUM_CLASSES", "8", "DATA.NUM_FRAMES", "4",
                             "TEST.CHECKPOINT_FILE_PATH", str(folder), "OUTPUT_DIR", str(tmp_path)], check_paths=False)
    for rank in (0, 1):
        loaded, weights = load_inference_model(cfg, DistInfo(rank=rank, world_size=2))
        assert weights.kind == "folder" and weights.path == folder
        for key, value in model.state_dict().items():
            assert torch.equal(loaded.state_dict()[key], value), key
    cfg.defrost()
    cfg.TEST.CHECKPOINT_FILE_PATH = str(tmp_path / "gone.pyth")
    with pytest.raises(Exception, match="does not exist"):
        load_inference_model(cfg, DistInfo(rank=1, world_size=2))
