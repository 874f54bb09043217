"""regionvit_video.utils.io: safe checkpoint reading (weights_only) and atomic writes."""
import argparse
import os
import pickle

import pytest
import torch

from regionvit_video.utils.io import UnsafeCheckpointError, atomic_torch_save, atomic_write, safe_torch_load


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
