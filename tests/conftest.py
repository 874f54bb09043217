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
