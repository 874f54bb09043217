"""A full or unwritable disk: a failed write replaces nothing, leaves no partial file and says why."""
import errno
import os
import subprocess

import pytest
import torch

from regionvit_video.utils.io import WriteError, atomic_torch_save, safe_torch_load


def _tmpfs(mount_point, options: str):
    mount_point.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(mount_point)], capture_output=True)
    if done.returncode:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.decode().strip()} (the simulated ENOSPC test still runs)")
    return mount_point


@pytest.fixture
def small_filesystem(tmp_path):
    """A 2 MiB tmpfs where the machine lets us mount one (root, as in CI), else skip."""
    try:
        yield _tmpfs(tmp_path / "small_fs", "size=2m")
    finally:
        subprocess.run(["umount", "-l", str(tmp_path / "small_fs")], capture_output=True, check=False)


def test_full_disk_keeps_the_earlier_checkpoint_and_leaves_no_partial_file(small_filesystem):
    good = small_filesystem / "checkpoint_epoch_00001.pyth"
    atomic_torch_save({"w": torch.arange(10.0)}, good)
    with pytest.raises(WriteError) as info:
        atomic_torch_save({"w": torch.zeros(1_000_000)}, small_filesystem / "checkpoint_epoch_00002.pyth")
    message = str(info.value)
    assert info.value.errno == errno.ENOSPC
    assert "checkpoint_epoch_00002.pyth" in message and "No space left on device" in message
    assert "MiB free of 2.0 MiB" in message
    assert sorted(os.listdir(small_filesystem)) == ["checkpoint_epoch_00001.pyth"]  # no partial file
    assert torch.equal(safe_torch_load(good)["w"], torch.arange(10.0))


def test_write_failing_at_a_chosen_byte_behaves_the_same(tmp_path, monkeypatch):
    """The same guarantees where no small filesystem can be mounted: the disk fills after 4 KiB."""
    import builtins

    real_open = builtins.open

    class FillingFile:
        def __init__(self, f):
            self._f, self._written = f, 0

        def write(self, data):
            self._written += len(data)
            if self._written > 4096:
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
            return self._f.write(data)

        def __getattr__(self, name):
            return getattr(self._f, name)

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self._f.close()

    def filling_open(file, mode="r", *args, **kwargs):
        f = real_open(file, mode, *args, **kwargs)
        return FillingFile(f) if "w" in mode and str(file).endswith(".tmp") else f

    good = tmp_path / "checkpoint_epoch_00001.pyth"
    atomic_torch_save({"w": torch.arange(10.0)}, good)
    monkeypatch.setattr(builtins, "open", filling_open)
    with pytest.raises(WriteError, match="No space left on device") as info:
        atomic_torch_save({"w": torch.zeros(100_000)}, tmp_path / "checkpoint_epoch_00002.pyth")
    monkeypatch.undo()
    assert "checkpoint_epoch_00002.pyth" in str(info.value) and "free of" in str(info.value)
    assert sorted(os.listdir(tmp_path)) == ["checkpoint_epoch_00001.pyth"]
    assert torch.equal(safe_torch_load(good)["w"], torch.arange(10.0))


def test_unwritable_folder_is_a_clear_error(tmp_path):
    """No permission (as a user) or a read-only filesystem (as root, whom permissions do not stop)."""
    folder = tmp_path / "read_only"
    if os.geteuid() == 0:
        _tmpfs(folder, "ro,size=1m")
        expected = "Read-only file system"
    else:
        folder.mkdir()
        folder.chmod(0o500)
        expected = "Permission denied"
    try:
        with pytest.raises(WriteError, match=expected) as info:
            atomic_torch_save({"w": torch.zeros(2)}, folder / "x.pyth")
        assert str(folder / "x.pyth") in str(info.value)
    finally:
        if os.geteuid() == 0:
            subprocess.run(["umount", "-l", str(folder)], capture_output=True, check=False)
        else:
            folder.chmod(0o700)
