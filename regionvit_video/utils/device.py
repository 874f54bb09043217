"""What ``cfg.DEVICE`` means on this machine: the one rule, shared by the engine and the data loaders."""
from __future__ import annotations

import torch


def device_type(device: str) -> str:
    """``"cuda"`` or ``"cpu"`` for ``cfg.DEVICE`` (``"auto"``: CUDA when available). No side effects
    (:func:`regionvit_video.engine.distributed.resolve_device` also selects the process's GPU)."""
    if device == "cpu" or (device == "auto" and not torch.cuda.is_available()):
        return "cpu"
    return "cuda"
