"""GPU-readiness that a CPU can check: per-device CUDA RNG state, backend flags, mixed precision on CPU,
pinned memory keyed on the run's device, mean/std kept on the device, and the CPU-only suite itself."""
from __future__ import annotations

import logging
import os

import pytest
import torch

from regionvit_video.config import load_config
from regionvit_video.engine import build
from regionvit_video.engine import checkpoint as ck
from regionvit_video.engine.distributed import resolve_device


# ------------------------------------------------------------------------------------------------ #
# CUDA RNG state: the current device's only
# ------------------------------------------------------------------------------------------------ #
class FakeCuda:
    """torch.cuda's generator functions for a 4-GPU machine whose current device is 2, recording calls."""

    def __init__(self, monkeypatch, current=2, count=4, initialized=True):
        self.current, self.count, self.initialized = current, count, initialized
        self.states = {d: torch.full((8,), d, dtype=torch.uint8) for d in range(count)}
        self.calls: list[tuple] = []
        for name in ("is_available", "is_initialized", "current_device", "device_count", "get_rng_state",
                     "set_rng_state", "get_rng_state_all", "set_rng_state_all"):
            monkeypatch.setattr(torch.cuda, name, getattr(self, name))

    def is_available(self):
        return True

    def is_initialized(self):
        return self.initialized

    def current_device(self):
        return self.current

    def device_count(self):
        return self.count

    def get_rng_state(self, device="cuda"):
        self.calls.append(("get", device))
        return self.states[device].clone()

    def set_rng_state(self, state, device="cuda"):
        self.calls.append(("set", device))
        self.states[device] = state.clone()

    def get_rng_state_all(self):
        raise AssertionError("every device's state was read")

    def set_rng_state_all(self, states):
        raise AssertionError("every device's state was written")


def test_rng_state_saves_and_restores_the_current_cuda_device_only(monkeypatch):
    fake = FakeCuda(monkeypatch)
    state = ck.get_rng_state()
    assert fake.calls == [("get", 2)] and torch.equal(state["cuda"], torch.full((8,), 2, dtype=torch.uint8))
    fake.states[2] = torch.zeros(8, dtype=torch.uint8)  # the generator moved on
    ck.set_rng_state(state)
    assert fake.calls[1:] == [("set", 2)] and torch.equal(fake.states[2], state["cuda"])
    # a rank on another device (one process per GPU, every GPU visible) restores onto its own device
    fake.current = 3
    ck.set_rng_state(state)
    assert fake.calls[-1] == ("set", 3) and torch.equal(fake.states[3], state["cuda"])


def test_rng_state_does_not_initialise_cuda(monkeypatch):
    fake = FakeCuda(monkeypatch, initialized=False)
    state = ck.get_rng_state()
    assert state["cuda"] is None and fake.calls == []
    ck.set_rng_state(state)
    assert fake.calls == []


@pytest.mark.parametrize("count,current,restored", [(4, 2, 2), (1, 0, 0), (1, 1, 0)])
def test_old_checkpoints_with_every_devices_state_still_restore(monkeypatch, count, current, restored):
    """Before: a list of every visible device's state. Its entry for the current device is restored (or its
    only entry: one visible GPU per process), whatever the machine's device count now."""
    fake = FakeCuda(monkeypatch, current=current, count=max(count, current + 1))
    old = ck.get_rng_state()
    old["cuda"] = [torch.full((8,), 10 + d, dtype=torch.uint8) for d in range(count)]
    ck.set_rng_state(old)
    assert fake.calls[-1] == ("set", current)
    assert torch.equal(fake.states[current], old["cuda"][restored])


def test_old_checkpoint_without_the_current_devices_state_warns(monkeypatch, caplog):
    fake = FakeCuda(monkeypatch, current=3, count=4)
    old = ck.get_rng_state()
    old["cuda"] = [torch.zeros(8, dtype=torch.uint8)] * 2
    monkeypatch.setattr(logging.getLogger("regionvit_video"), "propagate", True)
    with caplog.at_level("WARNING"):
        ck.set_rng_state(old)
    assert ("set", 3) not in fake.calls and "none for the current device 3" in caplog.text


def test_rng_state_round_trip_on_cpu():
    state = ck.get_rng_state()
    assert state["cuda"] is None  # CUDA is hidden from this suite (conftest)
    a = torch.rand(3)
    ck.set_rng_state(state)
    assert torch.equal(torch.rand(3), a)


# ------------------------------------------------------------------------------------------------ #
# Backend flags
# ------------------------------------------------------------------------------------------------ #
@pytest.fixture
def restore_backends():
    """The process-wide flags configure_backends sets, restored after the test."""
    matmul, conv = torch.backends.cuda.matmul, torch.backends.cudnn.conv
    saved = (torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled(),
             torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark, matmul.fp32_precision,
             conv.fp32_precision, os.environ.get("CUBLAS_WORKSPACE_CONFIG"))
    yield
    torch.use_deterministic_algorithms(saved[0], warn_only=saved[1])
    torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = saved[2], saved[3]
    matmul.fp32_precision, conv.fp32_precision = saved[4], saved[5]
    if saved[6] is None:
        os.environ.pop("CUBLAS_WORKSPACE_CONFIG", None)
    else:
        os.environ["CUBLAS_WORKSPACE_CONFIG"] = saved[6]


def _cfg(*opts):
    return load_config(None, [str(o) for o in opts], check_paths=False)


def test_default_backends_on_cuda_are_tf32_and_benchmark(restore_backends, monkeypatch):
    monkeypatch.delenv("CUBLAS_WORKSPACE_CONFIG", raising=False)
    torch.backends.cudnn.benchmark = False
    build._set_tf32(False)
    done = build.configure_backends(_cfg(), torch.device("cuda", 0))
    assert done == {"deterministic": False, "tf32": True, "cudnn_benchmark": True}
    assert build.tf32_enabled() and torch.backends.cudnn.conv.fp32_precision == "tf32"
    assert torch.backends.cudnn.benchmark and not torch.are_deterministic_algorithms_enabled()
    assert "CUBLAS_WORKSPACE_CONFIG" not in os.environ


def test_default_backends_on_cpu_leave_the_cuda_flags(restore_backends):
    before = (torch.backends.cudnn.benchmark, torch.backends.cuda.matmul.fp32_precision)
    assert build.configure_backends(_cfg(), torch.device("cpu")) == {"deterministic": False}
    assert (torch.backends.cudnn.benchmark, torch.backends.cuda.matmul.fp32_precision) == before
    assert not torch.are_deterministic_algorithms_enabled()


@pytest.mark.parametrize("device", ["cuda", "cpu"])
def test_the_default_mode_undoes_a_deterministic_one(restore_backends, device):
    """The config decides: a later non-deterministic run in the same process gets torch's default again."""
    build.configure_backends(_cfg("TRAIN.DETERMINISTIC", True), torch.device(device))
    build.configure_backends(_cfg(), torch.device(device))
    assert not torch.are_deterministic_algorithms_enabled() and not torch.backends.cudnn.deterministic
    assert build.tf32_enabled() is (device == "cuda") and torch.backends.cudnn.benchmark is (device == "cuda")


@pytest.mark.parametrize("device", ["cuda", "cpu"])
def test_deterministic_mode(restore_backends, monkeypatch, device):
    monkeypatch.delenv("CUBLAS_WORKSPACE_CONFIG", raising=False)
    build.configure_backends(_cfg(), torch.device("cuda", 0))  # start from the fast flags
    done = build.configure_backends(_cfg("TRAIN.DETERMINISTIC", True), torch.device(device))
    assert done == {"deterministic": True, "cublas_workspace_config": ":4096:8", "tf32": False,
                    "cudnn_benchmark": False}
    assert torch.are_deterministic_algorithms_enabled() and torch.is_deterministic_algorithms_warn_only_enabled()
    assert torch.backends.cudnn.deterministic and not torch.backends.cudnn.benchmark
    assert not build.tf32_enabled() and torch.backends.cudnn.conv.fp32_precision == "ieee"
    assert os.environ["CUBLAS_WORKSPACE_CONFIG"] == ":4096:8"


def test_deterministic_mode_keeps_a_workspace_config_set_by_the_user(restore_backends, monkeypatch):
    monkeypatch.setenv("CUBLAS_WORKSPACE_CONFIG", ":16:8")
    done = build.configure_backends(_cfg("TRAIN.DETERMINISTIC", True), torch.device("cpu"))
    assert done["cublas_workspace_config"] == ":16:8" == os.environ["CUBLAS_WORKSPACE_CONFIG"]


def test_bf16_recipes_run_float32_on_cpu(caplog, monkeypatch):
    """The GPU recipes' bf16 is a no-op on CPU (warned once per run): same float32 model as before."""
    from pathlib import Path

    cfg = load_config(str(Path(__file__).resolve().parents[1] / "configs" / "k400_regionvit_s.yaml"),
                      check_paths=False)
    assert cfg.TRAIN.MIXED_PRECISION == "bf16"
    monkeypatch.setattr(logging.getLogger("regionvit_video"), "propagate", True)
    with caplog.at_level("WARNING"):
        assert build.amp_enabled(torch.device("cpu"), cfg.TRAIN.MIXED_PRECISION) is False
    assert "applies on CUDA only; running in float32 on cpu" in caplog.text
    with build.autocast(torch.device("cpu"), cfg.TRAIN.MIXED_PRECISION):
        assert torch.nn.Linear(4, 4)(torch.randn(2, 4)).dtype == torch.float32


# ------------------------------------------------------------------------------------------------ #
# The run's device, not the machine's, decides pinning; GPU selection errors
# ------------------------------------------------------------------------------------------------ #
@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory):
    from tiny_datasets import make_kinetics_folder

    return make_kinetics_folder(tmp_path_factory.mktemp("pin"), num_classes=2, videos_per_class=1, size=32, frames=4)


@pytest.mark.parametrize("device,pinned", [("cpu", False), ("auto", True), ("cuda", True)])
def test_loader_pins_memory_only_for_a_cuda_run(tiny_data, monkeypatch, device, pinned):
    from regionvit_video.data import build_loader

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)  # a GPU machine
    cfg = load_config(None, [*map(str, tiny_data["cfg_opts"]), "DEVICE", device, "DATA_LOADER.NUM_WORKERS", "0",
                             "TRAIN.BATCH_SIZE", "1"], check_paths=False, validate=False)
    assert build_loader(cfg, "train").pin_memory is pinned
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert build_loader(cfg, "train").pin_memory is (pinned and device == "cuda")  # auto: CPU here now


def test_a_rank_without_its_gpu_is_a_clear_error(monkeypatch):
    """Two processes on a one-GPU machine (what DEVICE auto did in this suite before it hid the GPUs)."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    monkeypatch.setattr(torch.cuda, "set_device", lambda d: pytest.fail("set_device was called"))
    with pytest.raises(RuntimeError, match=r"LOCAL_RANK 1 needs GPU 1 but 1 GPU\(s\) are visible.*DEVICE cpu"):
        resolve_device("auto", local_rank=1)
    assert resolve_device("cpu", local_rank=1) == torch.device("cpu")


def test_the_suite_runs_with_gpus_hidden():
    assert os.environ["CUDA_VISIBLE_DEVICES"] == "" and not torch.cuda.is_available()


# ------------------------------------------------------------------------------------------------ #
# Mean and std made once per device and dtype
# ------------------------------------------------------------------------------------------------ #
def test_batch_normalize_makes_mean_and_std_once(monkeypatch):
    from regionvit_video.data import transforms

    transforms._scaled_mean_std.cache_clear()
    made = []
    real = torch.as_tensor
    monkeypatch.setattr(transforms.torch, "as_tensor", lambda *a, **k: made.append(k.get("device")) or real(*a, **k))
    norm = transforms.BatchNormalize(mean=(0.4, 0.5, 0.6), std=(0.2, 0.25, 0.3), re_prob=0.0)
    video = torch.randint(0, 256, (2, 3, 2, 4, 4), dtype=torch.uint8)
    outs = [norm(video) for _ in range(3)]
    assert len(made) == 2  # mean and std, on the first call only
    expected = (video.float() / 255 - torch.tensor([0.4, 0.5, 0.6]).view(3, 1, 1, 1)) / torch.tensor(
        [0.2, 0.25, 0.3]).view(3, 1, 1, 1)
    for out in outs:
        torch.testing.assert_close(out, expected, rtol=1e-5, atol=1e-5)
    transforms.BatchNormalize(mean=(0.4, 0.5, 0.6), std=(0.2, 0.25, 0.3), re_prob=0.0)(video)
    assert len(made) == 2  # another instance with the same values reuses them
    out = transforms.BatchNormalize(mean=(0.5,) * 3, std=(0.5,) * 3, re_prob=0.0)(video)
    assert len(made) == 4 and torch.allclose(out, video.float() / 127.5 - 1, atol=1e-5)
