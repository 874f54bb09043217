"""Feature extraction: stored features equal forward_features, windows, resume after a kill, bad files."""
import csv
import json
import os
import shutil

import numpy as np
import pytest
import torch

from regionvit_video.config.load import load_config
from regionvit_video.data import list_videos
from regionvit_video.data.decoder import read_frames
from regionvit_video.data.sampling import uniform_indices
from regionvit_video.data.transforms import eval_views
from regionvit_video.demo.synthetic_actions import make_synthetic_actions
from regionvit_video.engine import features as F
from regionvit_video.engine.build import build_model

DATA = os.path.join(os.path.dirname(__file__), "data")
REALSHORT = os.path.join(DATA, "realshort.mp4")  # 320x240, 36 frames, 45000/1499 fps
SIZE, T = 32, 4


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("feat")
    info = make_synthetic_actions(root / "videos", num_train=4, num_val=0, num_test=0, size=SIZE, num_frames=12,
                                  seed=1, workers=0, progress=False)
    torch.manual_seed(0)
    cfg = _cfg(root, root / "unused")
    model = build_model(cfg).eval()
    with torch.no_grad():  # zero at init, which would make the model blind to frame order
        for name, p in model.named_parameters():
            if "temporal_fc" in name or "time_embed" in name:
                p.normal_(0, 0.5)
    ckpt = root / "ckpt.pyth"
    torch.save({"model_state": model.state_dict()}, ckpt)
    return {"root": root, "videos": os.path.join(info["root"], "train"), "ckpt": str(ckpt), "model": model}


def _cfg(root, out, *opts, inp=None, ckpt=""):
    base = ["MODEL.ARCH", "regionvit_video_pico", "MODEL.NUM_CLASSES", "8", "DATA.NUM_FRAMES", str(T),
            "DATA.TEST_SCALE", str(SIZE), "DATA.TEST_CROP_SIZE", str(SIZE), "DATA_LOADER.NUM_WORKERS", "0",
            "TRAIN.ENABLE", "False", "TEST.ENABLE", "False", "OUTPUT_DIR", str(out), "TEST.CHECKPOINT_FILE_PATH", ckpt,
            "FEATURES.INPUT", str(inp or root), "FEATURES.ENABLE", "True"]
    return load_config(None, base + list(opts), check_paths=False)


def _expected_views(model, path, *, num_clips, crops):
    """forward_features of the test views, computed from the decoder and transforms directly."""
    def indices_fn(n, fps):
        return np.concatenate([uniform_indices(n, T, train=False, clip_idx=k, num_clips=num_clips)
                               for k in range(num_clips)])

    frames, _, _ = read_frames(path, indices_fn)
    frames = torch.from_numpy(frames)
    views = torch.cat([eval_views(frames[k * T:(k + 1) * T], scale=SIZE, crop_size=SIZE, num_crops=crops,
                                  mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225)) for k in range(num_clips)])
    with torch.no_grad():
        return model.forward_features(views).numpy()


def _read_csv(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_video_mode_features_equal_forward_features(setup, tmp_path):
    out = tmp_path / "out"
    cfg = _cfg(setup["root"], out, "TEST.NUM_ENSEMBLE_VIEWS", "2", "TEST.NUM_SPATIAL_CROPS", "3",
               "FEATURES.KEEP_VIEWS", "True", inp=setup["videos"], ckpt=setup["ckpt"])
    res = F.extract_features(cfg)
    assert res["num_extracted"] == 4 and res["num_failed"] == 0
    index = _read_csv(out / "features" / "index.csv")
    assert len(index) == 4
    for row in index:
        stored = np.load(out / "features" / row["feature"])
        assert stored.dtype == np.float32 and stored.shape == (6, 256) and row["shape"] == "6x256"
        assert row["views"] == "6" and row["mode"] == "video"
        assert row["checkpoint_sha256"] == F.sha256_file(setup["ckpt"])
        expected = _expected_views(setup["model"], row["video"], num_clips=2, crops=3)
        np.testing.assert_allclose(stored, expected, rtol=1e-4, atol=1e-5)
    # Layout: the input's relative path with .npy
    rel = os.path.relpath(index[0]["video"], setup["videos"])
    assert index[0]["feature"] == os.path.splitext(rel)[0] + ".npy"

    # Same folder, other settings: old files are replaced, views averaged, float16, stage features.
    cfg = _cfg(setup["root"], out, "TEST.NUM_ENSEMBLE_VIEWS", "2", "TEST.NUM_SPATIAL_CROPS", "3",
               "FEATURES.DTYPE", "float16", "FEATURES.STAGE_FEATURES", "True", inp=setup["videos"],
               ckpt=setup["ckpt"])
    res = F.extract_features(cfg)
    assert res["num_extracted"] == 4 and res["num_skipped"] == 0
    row = _read_csv(out / "features" / "index.csv")[0]
    stored = np.load(out / "features" / row["feature"])
    assert stored.dtype == np.float16 and stored.shape == (256,)
    expected = _expected_views(setup["model"], row["video"], num_clips=2, crops=3).mean(0)
    np.testing.assert_allclose(stored.astype(np.float32), expected, rtol=1e-2, atol=1e-2)
    stages = np.load(str(out / "features" / row["feature"]).replace(".npy", ".stages.npz"))
    assert [stages[f"stage{i}"].shape for i in range(4)] == [(32,), (64,), (128,), (256,)]
    assert json.loads((out / "features" / "extraction.json").read_text())["dtype"] == "float16"


@pytest.mark.parametrize("stride,unit,expected_k,stride_frames", [("5", "frames", 6, 5), ("0.5", "seconds", 2, 15)])
def test_clips_mode_windows_follow_length_and_stride(setup, tmp_path, stride, unit, expected_k, stride_frames):
    folder = tmp_path / "in"
    folder.mkdir()
    shutil.copy(REALSHORT, folder / "clip.mp4")
    out = tmp_path / "out"
    cfg = _cfg(setup["root"], out, "FEATURES.MODE", "clips", "FEATURES.WINDOW", "8", "FEATURES.STRIDE", stride,
               "FEATURES.STRIDE_UNIT", unit, "TEST.NUM_SPATIAL_CROPS", "3", "FEATURES.BATCH_SIZE", "4",
               inp=folder, ckpt=setup["ckpt"])
    F.extract_features(cfg)
    stored = np.load(out / "features" / "clip.npy")
    assert stored.shape == (expected_k, 256)  # 1 + (36 - 8) // stride windows
    windows = _read_csv(out / "features" / "clip.windows.csv")
    assert [int(w["start_frame"]) for w in windows] == [k * stride_frames for k in range(expected_k)]
    fps = 45000 / 1499
    assert float(windows[1]["start_sec"]) == pytest.approx(stride_frames / fps, abs=1e-4)
    assert float(windows[0]["end_sec"]) == pytest.approx(8 / fps, abs=1e-4)
    # The last window's feature is forward_features of its frames, crops averaged.
    k = expected_k - 1
    frames, _, _ = read_frames(REALSHORT, lambda n, f: uniform_indices(8, T, train=False) + k * stride_frames)
    views = eval_views(torch.from_numpy(frames), scale=SIZE, crop_size=SIZE, num_crops=3,
                       mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225))
    with torch.no_grad():
        expected = setup["model"].forward_features(views).mean(0).numpy()
    np.testing.assert_allclose(stored[k], expected, rtol=1e-4, atol=1e-5)
    assert _read_csv(out / "features" / "index.csv")[0]["windows"] == str(expected_k)


def test_killed_run_resumes_without_recomputing(setup, tmp_path, monkeypatch):
    out = tmp_path / "out"
    cfg = _cfg(setup["root"], out, inp=setup["videos"], ckpt=setup["ckpt"])
    reference = tmp_path / "ref"
    F.extract_features(_cfg(setup["root"], reference, inp=setup["videos"], ckpt=setup["ckpt"]))

    real_save, calls = F._save_npy, []

    def dying_save(path, array):
        calls.append(path)
        if len(calls) == 3:
            raise KeyboardInterrupt("killed while writing")  # mid-write: atomic_write must leave nothing
        real_save(path, array)

    monkeypatch.setattr(F, "_save_npy", dying_save)
    with pytest.raises(KeyboardInterrupt):
        F.extract_features(cfg)
    monkeypatch.setattr(F, "_save_npy", real_save)
    feats = out / "features"
    done = sorted(p for p in feats.rglob("*.npy"))
    assert len(done) == 2 and not list(feats.rglob(".*.tmp"))
    # A SIGKILL would also leave atomic_write's temporary behind.
    stray = done[0].parent / f".{done[0].name}.abc123.tmp"
    stray.write_bytes(b"partial")
    stamps = {p: os.stat(p).st_mtime_ns for p in done}

    res = F.extract_features(cfg)
    assert res["num_skipped"] == 2 and res["num_extracted"] == 2
    assert all(os.stat(p).st_mtime_ns == t for p, t in stamps.items())  # complete ones untouched
    assert not stray.exists()
    got = sorted(p.relative_to(feats) for p in feats.rglob("*.npy"))
    want = sorted(p.relative_to(reference / "features") for p in (reference / "features").rglob("*.npy"))
    assert got == want and len(got) == 4
    for rel in got:
        np.testing.assert_array_equal(np.load(feats / rel), np.load(reference / "features" / rel))
    assert len(_read_csv(feats / "index.csv")) == 4
    # A third run has nothing to do.
    assert F.extract_features(cfg)["num_extracted"] == 0


def test_folder_with_broken_files_completes(setup, tmp_path):
    folder = tmp_path / "in"
    shutil.copytree(setup["videos"], folder / "good")
    (folder / "bad").mkdir()
    (folder / "bad" / "empty.mp4").write_bytes(b"")
    (folder / "bad" / "noise.avi").write_bytes(np.random.default_rng(0).bytes(5000))
    (folder / "notes.txt").write_text("not a video")
    out = tmp_path / "out"
    for mode in ("video", "clips"):
        cfg = _cfg(setup["root"], out / mode, "FEATURES.MODE", mode, "FEATURES.WINDOW", "8", "FEATURES.STRIDE", "4",
                   inp=folder, ckpt=setup["ckpt"])
        res = F.extract_features(cfg)
        assert res["num_videos"] == 6 and res["num_extracted"] == 4 and res["num_failed"] == 2
        failures = _read_csv(out / mode / "features" / "failures.csv")
        assert sorted(os.path.basename(r["video"]) for r in failures) == ["empty.mp4", "noise.avi"]
        assert all(r["reason"] for r in failures)
        assert len(_read_csv(out / mode / "features" / "index.csv")) == 4
        assert not list((out / mode / "features").rglob("empty.*"))


def test_input_lists_and_errors(tmp_path):
    def list_feature_inputs(source, **kwargs):  # what extract_features reads FEATURES.INPUT with
        return list_videos(source, source_key="FEATURES.INPUT", **kwargs)

    lst = tmp_path / "list.csv"
    lst.write_text("a/x.mp4 3\n\nb/y.webm\na/x.mp4 3\n")
    items = list_feature_inputs(lst, path_prefix="/data")
    assert [(i.path, i.rel) for i in items] == [("/data/a/x.mp4", "a/x.mp4"), ("/data/b/y.webm", "b/y.webm")]
    assert F.feature_file("/o", "b/y.webm") == F.Path("/o/b/y.npy")
    lst.write_text("a.mp4 1\nb.mp4 1 extra\n")
    with pytest.raises(ValueError, match=r"list.csv:2"):
        list_feature_inputs(lst)
    with pytest.raises(FileNotFoundError, match="FEATURES.INPUT"):
        list_feature_inputs(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="no video files"):
        list_feature_inputs(tmp_path / "empty")


def test_stage_features_of_timesformer_base(tmp_path):
    """FEATURES.STAGE_FEATURES with timesformer_base: one array per block (forward_intermediates), each the block's
    patch tokens averaged over time and space, next to the pooled cls feature."""
    folder = tmp_path / "in"
    folder.mkdir()
    shutil.copy(REALSHORT, folder / "clip.mp4")
    opts = ["MODEL.ARCH", "timesformer_base", "TEST.NUM_SPATIAL_CROPS", "1", "FEATURES.STAGE_FEATURES", "True"]
    cfg = _cfg(tmp_path, tmp_path / "out", *opts, inp=folder)
    with torch.device("meta"):  # 121M parameters: skip the slow random init, fill them cheaply instead
        model = build_model(cfg)
    model = model.to_empty(device="cpu").eval()
    with torch.no_grad():
        for p in model.parameters():
            p.uniform_(-0.05, 0.05)
    torch.save({"model_state": model.state_dict()}, tmp_path / "ck.pyth")
    res = F.extract_features(_cfg(tmp_path, tmp_path / "out", *opts, inp=folder, ckpt=str(tmp_path / "ck.pyth")))
    assert res["num_extracted"] == 1
    stages = np.load(tmp_path / "out" / "features" / "clip.stages.npz")
    assert sorted(stages, key=lambda k: int(k[5:])) == [f"stage{i}" for i in range(12)]
    frames, _, _ = read_frames(REALSHORT, lambda n, fps: uniform_indices(n, T, train=False))
    views = eval_views(torch.from_numpy(frames), scale=SIZE, crop_size=SIZE, num_crops=1,
                       mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225))
    with torch.no_grad():
        feats, maps = model.forward_intermediates(views)
    np.testing.assert_allclose(np.load(tmp_path / "out" / "features" / "clip.npy"), feats[0].numpy(), rtol=1e-4,
                               atol=1e-5)
    for i, m in enumerate(maps):
        assert m.shape == (1, 768, T, SIZE // 16, SIZE // 16)
        np.testing.assert_allclose(stages[f"stage{i}"], m.mean(dim=(2, 3, 4))[0].numpy(), rtol=1e-4, atol=1e-5)


def test_no_weights_is_an_error(setup, tmp_path):
    from regionvit_video.engine import NoCheckpointError

    cfg = _cfg(setup["root"], tmp_path / "out", inp=setup["videos"])
    with pytest.raises(NoCheckpointError, match="MODEL.PRETRAINED"):
        F.extract_features(cfg)


@pytest.mark.parametrize("mode,workers", [("video", 0), ("clips", 0), ("video", 1)])
def test_feature_loaders_apply_retain_freed_memory(setup, tmp_path, monkeypatch, mode, workers):
    """DATA_LOADER.RETAIN_FREED_MEMORY reaches the processes that load feature clips: the main
    process with no workers, each worker otherwise (through the loader's worker_init_fn)."""
    import regionvit_video.data.loader as loader_mod

    calls = []
    monkeypatch.setattr(loader_mod, "retain_freed_memory", lambda: calls.append(os.getpid()) or True)
    folder = tmp_path / "in"
    folder.mkdir()
    shutil.copy(REALSHORT, folder / "clip.mp4")
    inits = []
    real_init = loader_mod.loading_worker_init
    monkeypatch.setattr(F, "loading_worker_init", lambda cfg, n: inits.append(n) or real_init(cfg, n))
    cfg = _cfg(setup["root"], tmp_path / "out", "FEATURES.MODE", mode, "FEATURES.WINDOW", "8",
               "DATA_LOADER.NUM_WORKERS", str(workers), inp=folder, ckpt=setup["ckpt"])
    assert F.extract_features(cfg)["num_extracted"] == 1
    assert inits == [workers]
    # With a worker, the call happens in the worker, on its own copy of `calls`; without, here.
    assert calls == ([os.getpid()] if workers == 0 else [])


def test_device_and_precision_are_recorded_and_a_change_reextracts(setup, tmp_path):
    """extraction.json names the device and the precision the features were computed in; a folder made on
    another device or at another precision is not resumed into (its features are replaced)."""
    out = tmp_path / "out"
    cfg = _cfg(setup["root"], out, inp=setup["videos"], ckpt=setup["ckpt"])
    assert F.extract_features(cfg)["num_extracted"] == 4
    manifest = out / "features" / "extraction.json"
    settings = json.loads(manifest.read_text())
    assert settings["device"] == "cpu" and settings["precision"] == "float32"
    assert F.extract_features(cfg)["num_extracted"] == 0  # same settings: resumed, nothing to do
    manifest.write_text(json.dumps({**settings, "device": "cuda", "precision": "bf16"}))  # as made on a GPU
    assert F.extract_features(cfg)["num_extracted"] == 4
    assert json.loads(manifest.read_text())["precision"] == "float32"


def _wait_past_the_default_timeout(rank: int, port: int, result) -> None:
    import datetime
    import time

    import torch.distributed as dist

    from regionvit_video.engine import distributed as du

    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=2,
                            timeout=datetime.timedelta(seconds=3))
    try:
        group = du.gloo_group(timeout=datetime.timedelta(hours=24))  # what extract_features agrees on
        if rank == 0:
            time.sleep(6)  # rank 0 writing the index of a large corpus, past the default group's timeout
        du.barrier(group)
        result.put((rank, "ok"))
    except Exception as e:  # noqa: BLE001
        result.put((rank, f"{type(e).__name__}: {e}"))
    finally:
        dist.destroy_process_group()


def test_long_writes_on_rank_0_do_not_time_out_the_other_processes():
    import multiprocessing as mp

    from runs import free_port

    ctx, port = mp.get_context("fork"), free_port()
    result = ctx.Queue()
    procs = [ctx.Process(target=_wait_past_the_default_timeout, args=(r, port, result)) for r in range(2)]
    for p in procs:
        p.start()
    outcomes = dict(result.get(timeout=60) for _ in procs)
    for p in procs:
        p.join(timeout=30)
    assert outcomes == {0: "ok", 1: "ok"}, outcomes
