"""Single-video prediction: the top-k classes of one video with the test views of the test pipeline.

    python run_net.py --cfg configs/demo.yaml PREDICT.ENABLE True PREDICT.INPUT clip.mp4 \\
        TEST.CHECKPOINT_FILE_PATH demo_output/checkpoints/checkpoint_epoch_00010.pyth

The video goes through exactly the multi-view test protocol (TEST.NUM_ENSEMBLE_VIEWS temporal clips x
TEST.NUM_SPATIAL_CROPS crops, DATA.TEST_SCALE / TEST_CROP_SIZE, DATA.SAMPLING: the dataset of
:func:`regionvit_video.data.build_eval_dataset`); the probabilities are the softmax averaged over the
views, as in ``engine.tester``, with the test's weights and precision
(:func:`regionvit_video.engine.checkpoint.load_inference_model`). Class names come from DATA.CLASS_NAMES,
else ``classes.txt`` in DATA.PATH_TO_DATA_DIR, else the dataset's own (the bundled Kinetics-400 names for
a 400-class model), else ``class_<i>`` (:func:`regionvit_video.data.resolve_class_names`). The prediction
is printed and written to OUTPUT_DIR/prediction.json.
"""
from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any

import torch
from fvcore.common.config import CfgNode

from regionvit_video.data import build_eval_dataset
from regionvit_video.data.datasets import VideoDataset
from regionvit_video.data.decoder import DecodeError
from regionvit_video.engine.build import inference_autocast
from regionvit_video.engine.checkpoint import load_inference_model
from regionvit_video.engine.distributed import DistInfo, resolve_device
from regionvit_video.engine.meters import ensemble_views
from regionvit_video.utils.io import atomic_write_text

logger = logging.getLogger(__name__)

PREDICTION_FILE = "prediction.json"


@torch.no_grad()
def predict_video(model: torch.nn.Module, dataset: VideoDataset, index: int = 0, *, top_k: int = 5,
                  device: torch.device | str = "cpu") -> list[tuple[int, float]]:
    """Top-k ``(class index, probability)`` of video ``index`` of a test-mode ``dataset``.

    Raises:
        DecodeError: the video cannot be decoded (with the reason).
    """
    item = dataset[index]
    if item["video"] is None:
        raise DecodeError(item["path"], item.get("error", "unknown error"))
    views = item["video"].to(device)  # V, C, T, H, W
    probs = ensemble_views(model(views).float().unsqueeze(0))[0]  # K
    p, i = probs.topk(min(top_k, probs.numel()))
    return [(int(c), float(q)) for c, q in zip(i.tolist(), p.tolist())]


def predict(cfg: CfgNode, dist_info: DistInfo | None = None) -> dict[str, Any] | None:
    """Predict PREDICT.INPUT with the checkpoint of the test (TEST.CHECKPOINT_FILE_PATH or the newest in
    OUTPUT_DIR/checkpoints); prints the PREDICT.TOP_K classes and returns
    ``{"video", "checkpoint", "views", "top_k": [{"rank", "class", "index", "probability"}]}``.

    One video is predicted by rank 0 alone: the other processes of a job return None at once.

    Raises:
        FileNotFoundError: PREDICT.INPUT does not exist.
        NoCheckpointError: no checkpoint to predict with.
        DecodeError: the video cannot be decoded.
    """
    di = dist_info or DistInfo(device=resolve_device(cfg.DEVICE))
    if not di.is_main:
        return None
    path = str(cfg.PREDICT.INPUT)
    if not path or not os.path.isfile(path):
        raise FileNotFoundError(f"PREDICT.INPUT: video {path!r} does not exist")
    model, weights = load_inference_model(cfg, DistInfo(device=di.device), job="predict with")  # this process only
    dataset = build_eval_dataset(cfg, "test", videos=[path])
    with inference_autocast(cfg, di.device):
        top = predict_video(model, dataset, top_k=cfg.PREDICT.TOP_K, device=di.device)
    names = dataset.class_names
    result = {
        "video": path,
        "checkpoint": str(weights.path),
        "views": dataset.num_views,
        "top_k": [{"rank": r + 1, "class": names[c], "index": c, "probability": p} for r, (c, p) in enumerate(top)],
    }
    width = max(len(x["class"]) for x in result["top_k"])
    lines = [f"{path} ({dataset.num_views} views, {weights.path}):"]
    lines += [f"  {x['rank']}. {x['class']:<{width}}  {100 * x['probability']:6.2f}%" for x in result["top_k"]]
    print("\n".join(lines), flush=True)
    out = Path(cfg.OUTPUT_DIR) / PREDICTION_FILE
    try:
        text = json.dumps(result, indent=1) + "\n"
        atomic_write_text(out, text)
    except OSError as e:
        logger.warning("could not write %s: %s", out, e)
    return result
