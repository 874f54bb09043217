"""Shared fixtures. Tests run on CPU with tiny models and small generated videos.

This is the CPU suite, on any machine: GPUs are hidden (``CUDA_VISIBLE_DEVICES=""``) before anything can
initialise CUDA, for this process and every process it starts. With GPUs visible, ``DEVICE auto`` (the
default) would put the tests on CUDA, the 2-process tests would ask for ``cuda:1`` on a one-GPU machine,
and the many tests that fork (DataLoader workers, 2-process gloo runs, killed runs) would fork a process
that may have initialised CUDA. The GPU path is checked by ``benchmarks/gpu_check.py`` (``make gpu-check``).
"""
import importlib.util
import os
from pathlib import Path

os.environ["CUDA_VISIBLE_DEVICES"] = ""

import pytest  # noqa: E402
import torch  # noqa: E402

import regionvit_video  # noqa: E402,F401  (installs the pytorchvideo shim before any test imports it)

SHARED_VIDEOS = os.path.join(os.path.dirname(__file__), "data")
REPO = Path(__file__).resolve().parents[1]

torch.set_num_threads(min(2, torch.get_num_threads()))


_MACHINE: list[str] = []


def pytest_sessionstart(session):
    from regionvit_video.utils.machine import describe

    _MACHINE[:] = describe()  # as the session starts (a test may change torch's threads later)


def pytest_report_header(config):
    """Name the machine in every report: float results depend on the CPU's kernels."""
    return _MACHINE


def pytest_terminal_summary(terminalreporter):
    """The same lines above the result line, where `-q` (which hides the header) still shows them."""
    terminalreporter.write_sep("-", "machine")
    for line in _MACHINE:
        terminalreporter.write_line(line)


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


@pytest.fixture(scope="module")
def one_thread():
    """One intra-op thread for a test module: forked children (which must not start OpenMP pools after
    fork) and the parent then compute with the same reduction order, and 2 shared cores are not
    oversubscribed."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def run_net():
    """The ``run_net.py`` module: ``run_net.main(argv)`` is ``python run_net.py ARGS`` in this process."""
    spec = importlib.util.spec_from_file_location("run_net", REPO / "run_net.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def corrupt_loss(monkeypatch):
    """``corrupt_loss(factor, call=3)``: from now on the training loss is multiplied by ``factor`` (nan, inf)
    at its ``call``-th evaluation in a run (the engine's loss builder is patched)."""
    import regionvit_video.engine.trainer as trainer_mod

    real = trainer_mod.build_train_loss

    def corrupt(factor: float, call: int = 3) -> None:
        def build(cfg, mixup_enabled):
            criterion, calls = real(cfg, mixup_enabled), []

            def loss(logits, target):
                calls.append(1)
                value = criterion(logits, target)
                return value * factor if len(calls) == call else value
            return loss

        monkeypatch.setattr(trainer_mod, "build_train_loss", build)

    return corrupt


@pytest.fixture
def check_cpu_autocast():
    """``check_cpu_autocast(model, x, dtype=torch.bfloat16)``: the eval-mode forward under CPU autocast gives
    finite logits of ``dtype`` within 0.1 of the float32 forward."""

    def check(model, x, dtype=torch.bfloat16):
        with torch.no_grad():
            ref = model(x)
            with torch.autocast("cpu", dtype=dtype):
                out = model(x)
        assert out.dtype == dtype and torch.isfinite(out).all()
        torch.testing.assert_close(out.float(), ref, rtol=0.1, atol=0.1)

    return check

