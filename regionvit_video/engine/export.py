"""From a training run to a shippable model: a run's preprocessing, and a checkpoint turned into a pretrained folder.

:func:`preprocessing_from_cfg` says, from a run's config, what a user must reproduce to feed the model
(frames and their sampling, resize, crop, normalisation, the multi-view test protocol): it goes into the
pretrained folder's ``config.json`` and the ONNX file's metadata. :func:`checkpoint_to_pretrained` writes a
``.pyth`` checkpoint's weights as a pretrained folder (:func:`regionvit_video.models.save_pretrained`).

Which weights: the checkpoint's ``model_state`` by default. That is what ``TEST`` evaluates, and what the
test results of a run refer to (PySlowFast and TimeSformer checkpoints hold those weights too; timm's
``clean_checkpoint`` also takes the plain weights unless asked for the EMA). ``weights="ema"`` takes the
``ema_state`` (MODEL_EMA.ENABLE) instead, which the training log's "val ema" lines evaluate.
"""
from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any, Literal, Sequence

from fvcore.common.config import CfgNode

from regionvit_video.engine.build import build_model
from regionvit_video.utils.io import safe_torch_load

logger = logging.getLogger(__name__)


def preprocessing_from_cfg(cfg: CfgNode) -> dict[str, Any]:
    """The test-time input pipeline of a run, as plain values (``config.json``'s ``preprocessing``)."""
    d, t = cfg.DATA, cfg.TEST
    return {
        "input_layout": "B,C,T,H,W",
        "channel_order": "RGB",
        "num_frames": int(d.NUM_FRAMES),
        # uniform: NUM_FRAMES segments over the whole video, each segment's middle frame at test time;
        # dense: NUM_FRAMES frames SAMPLING_RATE apart at TARGET_FPS, the window centred (1 view) or
        # evenly spaced (several views).
        "sampling": d.SAMPLING,
        "sampling_rate": int(d.SAMPLING_RATE),
        "target_fps": float(d.TARGET_FPS),
        "test_scale": int(d.TEST_SCALE),
        "crop_size": int(d.TEST_CROP_SIZE),
        "resize": "short side to test_scale, bilinear (align_corners=False, no antialias), on uint8 frames",
        "normalize": "x / 255, then (x - mean) / std per channel",
        "mean": [float(v) for v in d.MEAN],
        "std": [float(v) for v in d.STD],
        "num_ensemble_views": int(t.NUM_ENSEMBLE_VIEWS),
        "num_spatial_crops": int(t.NUM_SPATIAL_CROPS),
        "spatial_crops": "centre" if t.NUM_SPATIAL_CROPS == 1 else "start, centre, end along the long side",
        "ensemble": "mean of the softmax probabilities over the views",
    }


def class_names_from_cfg(cfg: CfgNode) -> list[str] | None:
    """DATA.CLASS_NAMES, else the dataset's own list (Kinetics-400's; SSv2's labels json), else None."""
    from regionvit_video.data.datasets import DATASETS_DIR, load_class_names, read_ssv2_labels

    n = cfg.MODEL.NUM_CLASSES
    if cfg.DATA.CLASS_NAMES:
        return load_class_names(cfg.DATA.CLASS_NAMES, n)
    dataset = cfg.TEST.DATASET.lower()
    if dataset == "kinetics" and (DATASETS_DIR / "kinetics400_classes.txt").is_file():
        names = load_class_names(DATASETS_DIR / "kinetics400_classes.txt")
        return names if len(names) == n else None
    if dataset == "ssv2":
        try:
            by_id = {v: k for k, v in read_ssv2_labels(cfg.DATA.PATH_TO_DATA_DIR).items()}
        except (OSError, ValueError):
            return None
        return [by_id[i] for i in range(n)] if all(i in by_id for i in range(n)) else None
    return None


def checkpoint_to_pretrained(
    checkpoint: str | os.PathLike,
    cfg: CfgNode,
    folder: str | os.PathLike,
    *,
    weights: Literal["model", "ema"] = "model",
    class_names: Sequence[str] | None = None,
) -> Path:
    """Write a training checkpoint's weights as a pretrained folder (``model.safetensors`` + ``config.json``).

    Args:
        checkpoint: a ``.pyth`` file of this toolkit (read with ``weights_only``).
        cfg: the run's config (MODEL.ARCH, NUM_CLASSES, DATA.* and TEST.* say how to build and feed the model).
        folder: the output folder.
        weights: ``"model"`` (the checkpoint's ``model_state``: what TEST evaluates) or ``"ema"`` (its
            ``ema_state``).
        class_names: names of the classes; default :func:`class_names_from_cfg`.

    Returns:
        The folder.

    Raises:
        ValueError: not a toolkit checkpoint, no EMA weights in it, or weights that do not fit the config's model.
        FileNotFoundError, CheckpointReadError, UnsafeCheckpointError: from reading the file.
    """
    from regionvit_video.models import save_pretrained
    from regionvit_video.models.pretrained import load_state_dict_strict

    if weights not in ("model", "ema"):
        raise ValueError(f"weights must be 'model' or 'ema', got {weights!r}")
    ck = safe_torch_load(checkpoint)
    key = "model_state" if weights == "model" else "ema_state"
    if not isinstance(ck, dict) or "model_state" not in ck:
        raise ValueError(f"{checkpoint} is not a regionvit-video training checkpoint (no 'model_state')")
    state = ck.get(key)
    if not state:
        raise ValueError(f"{checkpoint} holds no EMA weights (the run had MODEL_EMA.ENABLE False): use weights='model'")
    state = {k[len("module."):] if k.startswith("module.") else k: v for k, v in state.items()}
    model = build_model(cfg)
    load_state_dict_strict(model, state, f"{checkpoint} ({key}; is MODEL.ARCH / MODEL.NUM_CLASSES the run's?)")
    names = list(class_names) if class_names is not None else class_names_from_cfg(cfg)
    source = {
        "checkpoint": Path(checkpoint).name,
        "weights": key,
        "epoch": ck.get("epoch"),
        "iteration": ck.get("iteration"),
        "epoch_complete": ck.get("epoch_complete"),
        "global_step": ck.get("global_step"),
    }
    folder = save_pretrained(model.eval(), folder, class_names=names, preprocessing=preprocessing_from_cfg(cfg),
                             source=source)
    logger.info("wrote %s from %s (%s, epoch %s)", folder, checkpoint, key, ck.get("epoch"))
    return folder
