"""Models: the registry API, RegionViT (image and video), TimeSformer, and loading weights.

``create_model(name, num_classes=..., **overrides)``, ``list_models(pattern, kind=...)``, ``model_info(name)``,
``load_pretrained(model, path)``. What every registered model provides: :mod:`regionvit_video.models.base`.
"""
from regionvit_video.models.registry import (ModelInfo, check_video_model, create_model, is_model, list_models,
                                             model_info, register_model)
from regionvit_video.models import regionvit, regionvit_video  # noqa: F401  (register the variants)
from regionvit_video.models import timesformer  # noqa: F401
from regionvit_video.models.regionvit import RegionViT
from regionvit_video.models.regionvit_video import RegionViTVideo
from regionvit_video.models.timesformer import TimeSformer
from regionvit_video.models.weights import LoadReport, load_pretrained

__all__ = [
    "LoadReport",
    "ModelInfo",
    "RegionViT",
    "RegionViTVideo",
    "TimeSformer",
    "check_video_model",
    "create_model",
    "is_model",
    "list_models",
    "load_pretrained",
    "model_info",
    "register_model",
]
