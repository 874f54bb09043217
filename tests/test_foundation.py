"""The lead-owned foundation: import shim, registry errors, safe checkpoint I/O, video writing."""
import argparse
import os
import pickle
import sys

import numpy as np
import pytest
import torch

from regionvit_video.models.registry import create_model, list_models
from regionvit_video.utils.io import UnsafeCheckpointError, atomic_torch_save, atomic_write, safe_torch_load


def test_pytorchvideo_transforms_import_with_shim():
    import pytorchvideo.transforms as T

    assert "torchvision.transforms.functional_tensor" in sys.modules
    video = torch.rand(3, 4, 32, 48)
    out = T.ShortSideScale(16)(video)
    assert out.shape == (3, 4, 16, 24)


def test_create_model_unknown_name_suggests_close_matches():
    with pytest.raises(KeyError, match="unknown model 'no_such_model'"):
        create_model("no_such_model")


def test_list_models_pattern_filters():
    names = list_models()
    assert names == sorted(names)
    assert list_models("zzz_nothing_*") == []


class _Exploit:
    """Pickles to a call of os.system: loading it with plain pickle would run a command."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_crafted_pickle_is_refused_and_runs_nothing(tmp_path):
    marker = tmp_path / "pwned"
    bad = tmp_path / "evil.pth"
    with open(bad, "wb") as f:
        pickle.dump({"model": _Exploit(str(marker))}, f)
    with pytest.raises(UnsafeCheckpointError, match="evil.pth"):
        safe_torch_load(bad)
    assert not marker.exists()


def test_official_training_file_with_namespace_loads(tmp_path):
    path = tmp_path / "official.pth"
    torch.save({"model": {"w": torch.ones(2)}, "args": argparse.Namespace(lr=5e-4), "epoch": 299}, path)
    ck = safe_torch_load(path)
    assert ck["args"].lr == 5e-4
    torch.testing.assert_close(ck["model"]["w"], torch.ones(2))


def test_missing_checkpoint_names_the_path(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.pth"):
        safe_torch_load(tmp_path / "nope.pth")


def test_atomic_write_failure_keeps_previous_file(tmp_path):
    path = tmp_path / "ck.pyth"
    atomic_torch_save({"v": torch.tensor(1)}, path)

    def crash(tmp):
        with open(tmp, "wb") as f:
            f.write(b"partial")
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        atomic_write(path, crash)
    assert safe_torch_load(path)["v"].item() == 1
    assert [p.name for p in tmp_path.iterdir()] == ["ck.pyth"]


@pytest.mark.parametrize("name,codec", [("a.mp4", "libx264"), ("b.webm", "libvpx-vp9"), ("c.avi", "mpeg4")])
def test_write_video_round_trip(tmp_path, name, codec):
    import av

    rng = np.random.default_rng(0)
    frames = np.repeat(rng.integers(0, 255, (5, 1, 1, 3), dtype=np.uint8), 32, axis=1).repeat(48, axis=2)
    path = tmp_path / name
    from regionvit_video.data.video_writer import write_video

    write_video(path, frames, fps=10, codec=codec)
    with av.open(str(path)) as c:
        decoded = np.stack([f.to_ndarray(format="rgb24") for f in c.decode(video=0)])
    assert decoded.shape == (5, 32, 48, 3)
    # flat colour frames survive lossy coding within a few levels
    assert np.abs(decoded.astype(int) - frames.astype(int)).mean() < 6
