"""Shared fixtures. Tests run on CPU with tiny models and small generated videos."""
import os

import pytest
import torch

import regionvit_video  # noqa: F401  (installs the pytorchvideo shim before any test imports it)

SHARED_VIDEOS = os.path.join(os.path.dirname(__file__), "data")

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
