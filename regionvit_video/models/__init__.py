"""Models: the registry API, RegionViT (image and video) and pretrained loading.

``create_model(name, num_classes=..., **overrides)``, ``list_models(pattern)``, ``load_pretrained(model, path)``.
"""
from regionvit_video.models.registry import create_model, is_model, list_models, register_model
from regionvit_video.models import regionvit, regionvit_video  # noqa: F401  (register the variants)
from regionvit_video.models import timesformer  # noqa: F401
from regionvit_video.models.checkpoint import LoadReport, load_pretrained
from regionvit_video.models.regionvit import RegionViT
from regionvit_video.models.regionvit_video import RegionViTVideo

__all__ = [
    "LoadReport",
    "RegionViT",
    "RegionViTVideo",
    "create_model",
    "is_model",
    "list_models",
    "load_pretrained",
    "register_model",
]
