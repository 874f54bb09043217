"""Models: the registry API, RegionViT (image and video), TimeSformer, loading weights, pretrained folders,
ONNX export.

``create_model(name, num_classes=..., **overrides)``, ``list_models(pattern, kind=...)``, ``model_info(name)``,
``load_pretrained(model, path)``; ``save_pretrained(model, folder)`` / ``from_pretrained(folder_or_hub_id)``
(model.safetensors + config.json); ``export_onnx(model, path)`` / ``check_onnx_parity(model, path, clip)``.
What every registered model provides: :mod:`regionvit_video.models.base`.
"""
from regionvit_video.models.registry import (ModelInfo, check_video_model, create_model, is_model, list_models,
                                             model_info, register_model)
from regionvit_video.models import regionvit, regionvit_video  # noqa: F401  (register the variants)
from regionvit_video.models import timesformer  # noqa: F401
from regionvit_video.models.onnx_export import OnnxParity, check_onnx_parity, export_onnx
from regionvit_video.models.pretrained import (PretrainedFormatError, PretrainedNotFoundError, from_pretrained,
                                               read_pretrained_config, save_pretrained)
from regionvit_video.models.regionvit import RegionViT
from regionvit_video.models.regionvit_video import RegionViTVideo
from regionvit_video.models.timesformer import TimeSformer
from regionvit_video.models.weights import LoadReport, load_pretrained

__all__ = [
    "LoadReport",
    "ModelInfo",
    "OnnxParity",
    "PretrainedFormatError",
    "PretrainedNotFoundError",
    "RegionViT",
    "RegionViTVideo",
    "TimeSformer",
    "check_onnx_parity",
    "check_video_model",
    "create_model",
    "export_onnx",
    "from_pretrained",
    "is_model",
    "list_models",
    "load_pretrained",
    "model_info",
    "read_pretrained_config",
    "register_model",
    "save_pretrained",
]
