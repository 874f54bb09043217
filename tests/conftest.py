"""Shared fixtures. Tests run on CPU with tiny models and small generated videos."""
import os

import pytest
import torch

import regionvit_video  # noqa: F401  (installs the pytorchvideo shim before any test imports it)

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
