"""Compatibility shims for third-party packages. The only place the package patches imports."""
from __future__ import annotations

import sys


def install_pytorchvideo_shim() -> None:
    """Let pytorchvideo 0.1.5 (the newest PyPI release) import with torchvision >= 0.17.

    pytorchvideo.transforms.augmentations imports ``torchvision.transforms.functional_tensor``,
    which torchvision renamed to ``_functional_tensor``. The signatures it uses are unchanged, so
    registering the new module under the old name is enough. Must run before pytorchvideo is
    imported; ``import regionvit_video`` runs it.
    """
    try:
        import torchvision.transforms.functional_tensor  # noqa: F401
    except ModuleNotFoundError:
        import torchvision.transforms._functional_tensor as _ft

        sys.modules["torchvision.transforms.functional_tensor"] = _ft
