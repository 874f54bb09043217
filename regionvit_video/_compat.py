"""Compatibility shims for third-party packages. The only place the package patches imports."""
from __future__ import annotations

import sys
import warnings


def install_pytorchvideo_shim() -> None:
    """Let pytorchvideo 0.1.5 (the newest PyPI release) import with torchvision >= 0.17.

    pytorchvideo.transforms.augmentations imports ``torchvision.transforms.functional_tensor``,
    which torchvision renamed to ``_functional_tensor``. The signatures it uses are unchanged, so
    registering the new module under the old name is enough. Also silences the ``torch.jit.script_method``
    FutureWarning its import prints. Must run before pytorchvideo is imported; ``import regionvit_video``
    runs it.
    """
    try:
        import torchvision.transforms.functional_tensor  # noqa: F401
    except ModuleNotFoundError:
        import torchvision.transforms._functional_tensor as _ft

        sys.modules["torchvision.transforms.functional_tensor"] = _ft
    # pytorchvideo 0.1.5 decorates some transforms with torch.jit.script_method, which the pinned torch marks
    # deprecated: every import (so every run_net.py call) printed that FutureWarning. Only that one is silenced.
    warnings.filterwarnings("ignore", message=r"`torch\.jit\.script_method` is deprecated",
                            category=FutureWarning, module=r"torch\.jit\._script")

