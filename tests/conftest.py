"""Shared fixtures. Tests run on CPU with tiny models and small generated videos.

This is the CPU suite, on any machine: GPUs are hidden (``CUDA_VISIBLE_DEVICES=""``) before anything can
initialise CUDA, for this process and every process it starts. With GPUs visible, ``DEVICE auto`` (the
default) would put the tests on CUDA, the 2-process tests would ask for ``cuda:1`` on a one-GPU machine,
and the many tests that fork (DataLoader workers, 2-process gloo runs, killed runs) would fork a process
that may have initialised CUDA. The GPU path is checked by ``benchmarks/gpu_check.py`` (``make gpu-check``).
"""
import os

os.environ["CUDA_VISIBLE_DEVICES"] = ""

import pytest  # noqa: E402
import torch  # noqa: E402

import regionvit_video  # noqa: E402,F401  (installs the pytorchvideo shim before any test imports it)

SHARED_VIDEOS = os.path.join(os.path.dirname(__file__), "data")

torch.set_num_threads(min(2, torch.get_num_threads()))


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
