"""From a training run to a shippable model: the export job, a run's preprocessing, a checkpoint as a folder.

    python run_net.py --cfg configs/demo.yaml EXPORT.ENABLE True EXPORT.FORMAT pretrained \
        TEST.CHECKPOINT_FILE_PATH demo_output/checkpoints/checkpoint_epoch_00030.pyth OUTPUT_DIR out
    python run_net.py --cfg configs/demo.yaml EXPORT.ENABLE True EXPORT.FORMAT onnx ...

:func:`export` (``EXPORT.ENABLE``) takes the weights the test would use (checkpoint resolution as for
testing: :func:`~regionvit_video.engine.checkpoint.resolve_inference_weights`) and writes ``OUTPUT_DIR/export/``:
a pretrained folder (``model.safetensors`` + ``config.json``) or ``model.onnx``, and ``export_report.json``
(format, opset, input shape, the largest absolute difference between the exported model and PyTorch on the
test views of a real clip, and for ONNX the ONNX Runtime and PyTorch CPU latencies).

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

import json
import logging
import os
from pathlib import Path
from typing import Any, Literal, Sequence

from fvcore.common.config import CfgNode

from regionvit_video.config.load import EXPORT_WEIGHTS
from regionvit_video.data import build_eval_dataset, resolve_class_names
from regionvit_video.engine.build import build_model
from regionvit_video.engine.checkpoint import load_checkpoint, load_inference_model, strip_prefix
from regionvit_video.engine.distributed import DistInfo, resolve_device
from regionvit_video.utils.io import atomic_write_text, safe_torch_load

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
        class_names: names of the classes; default :func:`regionvit_video.data.resolve_class_names`.

    Returns:
        The folder.

    Raises:
        ValueError: not a toolkit checkpoint, no EMA weights in it, or weights that do not fit the config's model.
        FileNotFoundError, CheckpointReadError, UnsafeCheckpointError: from reading the file.
    """
    from regionvit_video.models import save_pretrained
    from regionvit_video.models.pretrained import load_state_dict_strict

    if weights not in EXPORT_WEIGHTS:
        raise ValueError(f"weights must be 'model' or 'ema', got {weights!r}")
    ck = safe_torch_load(checkpoint)
    key = "model_state" if weights == "model" else "ema_state"
    if not isinstance(ck, dict) or "model_state" not in ck:
        raise ValueError(f"{checkpoint} is not a regionvit-video training checkpoint (no 'model_state')")
    state = ck.get(key)
    if not state:
        raise ValueError(f"{checkpoint} holds no EMA weights (the run had MODEL_EMA.ENABLE False): use weights='model'")
    state = strip_prefix(state)
    model = build_model(cfg, compile=False)
    load_state_dict_strict(model, state, f"{checkpoint} ({key}; is MODEL.ARCH / MODEL.NUM_CLASSES the run's?)")
    names = list(class_names) if class_names is not None else resolve_class_names(cfg, look_in_data_dir=True)
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


EXPORT_SUBDIR = "export"
REPORT_NAME = "export_report.json"


def _parity_clip(cfg: CfgNode) -> tuple[str, "torch.Tensor"]:
    """The test views of EXPORT.INPUT, else of the first video of the test list: (path, (V, C, T, H, W))."""
    dataset = build_eval_dataset(cfg, "test", videos=[cfg.EXPORT.INPUT] if cfg.EXPORT.INPUT else None)
    for i in range(len(dataset)):
        item = dataset[i]
        if item["video"] is not None:
            return item["path"], item["video"]
        logger.warning("export: %s does not decode (%s); trying the next test video", item["path"], item.get("error"))
    raise RuntimeError("export: no test video decodes; set EXPORT.INPUT to a video for the parity check")


def export(cfg: CfgNode, dist_info: DistInfo | None = None) -> dict[str, Any] | None:
    """EXPORT.ENABLE: the test's weights as a pretrained folder or an ONNX file, with a parity report.

    Rank 0 exports; the other processes of a job return None at once. Returns the report (also written to
    ``OUTPUT_DIR/export/export_report.json``).
    """
    import torch

    from regionvit_video.models import check_onnx_parity, export_onnx, from_pretrained, save_pretrained

    di = dist_info or DistInfo(device=resolve_device(cfg.DEVICE))
    if not di.is_main:
        return None
    e = cfg.EXPORT
    model, weights = load_inference_model(cfg, DistInfo(device=torch.device("cpu")), job="export", compile=False)
    if e.WEIGHTS == "ema":
        ck = load_checkpoint(weights.path) if weights.kind == "checkpoint" else {}
        if not ck.get("ema_state"):
            raise ValueError(f"EXPORT.WEIGHTS ema: {weights.path} holds no EMA weights (MODEL_EMA.ENABLE was False)")
        model.load_state_dict(strip_prefix(ck["ema_state"]))
    names, preprocessing = resolve_class_names(cfg, look_in_data_dir=True), preprocessing_from_cfg(cfg)
    # what a user needs besides the weights: in config.json, or in the ONNX file's metadata
    model.pretrained_cfg = {**getattr(model, "pretrained_cfg", {}), "label_names": names, "preprocessing": preprocessing}
    out = Path(cfg.OUTPUT_DIR) / EXPORT_SUBDIR
    out.mkdir(parents=True, exist_ok=True)
    video, clip = _parity_clip(cfg)
    report: dict[str, Any] = {"format": e.FORMAT, "source": str(weights.path), "weights": e.WEIGHTS,
                              "architecture": cfg.MODEL.ARCH, "parity_video": video, "input_shape": list(clip.shape)}
    if e.FORMAT == "pretrained":
        folder = save_pretrained(model, out, class_names=names, preprocessing=preprocessing,
                                 source={"checkpoint": str(weights.path), "weights": e.WEIGHTS})
        rebuilt = from_pretrained(folder)
        with torch.inference_mode():
            diff = (rebuilt(clip) - model(clip)).abs().max().item()
        report.update(files=[str(folder / "config.json"), str(folder / "model.safetensors")], max_abs_diff=diff,
                      opset=None)
        logger.info("export: %s (from_pretrained gives the same logits: max |diff| %.3g)", folder, diff)
    else:
        path = export_onnx(model, out / "model.onnx", input_shape=(2, *clip.shape[1:]), opset=e.OPSET,
                           dynamic_batch=True)
        parity = check_onnx_parity(model, path, clip)
        report.update(files=[str(path)], opset=e.OPSET, dynamic_batch=True, **parity.as_dict())
        logger.info("export: %s; %s", path, parity)
    text = json.dumps(report, indent=1) + "\n"
    atomic_write_text(out / REPORT_NAME, text)
    print(f"export: {', '.join(report['files'])}; max |exported - PyTorch| {report['max_abs_diff']:.3g} on "
          f"{video} ({tuple(clip.shape)}); report {out / REPORT_NAME}", flush=True)
    return report
