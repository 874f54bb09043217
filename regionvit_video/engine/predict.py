"""Single-video prediction: the top-k classes of one video with the test views of the test pipeline.

    python run_net.py --cfg configs/demo.yaml DEMO.ENABLE True DEMO.INPUT clip.mp4 \\
        TEST.CHECKPOINT_FILE_PATH demo_output/checkpoints/checkpoint_epoch_00010.pyth

The video goes through exactly the multi-view test protocol (TEST.NUM_ENSEMBLE_VIEWS temporal clips x
TEST.NUM_SPATIAL_CROPS crops, DATA.TEST_SCALE / TEST_CROP_SIZE, DATA.SAMPLING); the probabilities are
the softmax averaged over the views, as in ``engine.tester``. Class names come from DATA.CLASS_NAMES,
else ``classes.txt`` in DATA.PATH_TO_DATA_DIR, else the bundled Kinetics-400 names for a 400-class
model, else ``class_<i>``. The prediction is printed and written to OUTPUT_DIR/demo_prediction.json.
"""
from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any

import torch

from regionvit_video.data.datasets import DATASETS_DIR, VideoDataset, VideoRecord, load_class_names
from regionvit_video.data.decoder import DecodeError
from regionvit_video.utils.io import atomic_write

logger = logging.getLogger(__name__)


def resolve_class_names(cfg) -> list[str]:
    """Names of the model's classes (see the module docstring for the order of sources)."""
    n = cfg.MODEL.NUM_CLASSES
    if cfg.DATA.CLASS_NAMES:
        return load_class_names(cfg.DATA.CLASS_NAMES, n)
    candidates = [Path(cfg.DATA.PATH_TO_DATA_DIR) / "classes.txt"] if cfg.DATA.PATH_TO_DATA_DIR else []
    if n == 400:
        candidates.append(DATASETS_DIR / "kinetics400_classes.txt")
    for path in candidates:
        if path.is_file():
            names = load_class_names(path)
            if len(names) == n:
                return names
            logger.warning("%s has %d names but MODEL.NUM_CLASSES is %d: not used", path, len(names), n)
    return [f"class_{i}" for i in range(n)]


@torch.no_grad()
def predict_video(model: torch.nn.Module, dataset: VideoDataset, index: int = 0, *, top_k: int = 5,
                  device: torch.device | str = "cpu") -> list[tuple[int, float]]:
    """Top-k ``(class index, probability)`` of video ``index`` of a test-mode ``dataset``.

    Raises:
        DecodeError: the video cannot be decoded (with the reason).
    """
    from regionvit_video.engine.meters import ensemble_views

    item = dataset[index]
    if item["video"] is None:
        raise DecodeError(item["path"], item.get("error", "unknown error"))
    views = item["video"].to(device)  # V, C, T, H, W
    probs = ensemble_views(model(views).unsqueeze(0))[0]  # K
    p, i = probs.topk(min(top_k, probs.numel()))
    return [(int(c), float(q)) for c, q in zip(i.tolist(), p.tolist())]


def run_demo(cfg) -> dict[str, Any]:
    """Predict DEMO.INPUT with the checkpoint of the test (TEST.CHECKPOINT_FILE_PATH or the newest in
    OUTPUT_DIR/checkpoints); prints the DEMO.TOP_K classes and returns
    ``{"video", "checkpoint", "views", "top_k": [{"rank", "class", "index", "probability"}]}``.

    Raises:
        FileNotFoundError: DEMO.INPUT does not exist.
        NoCheckpointError: no checkpoint to predict with.
        DecodeError: the video cannot be decoded.
    """
    from regionvit_video.engine.build import build_model
    from regionvit_video.engine.checkpoint import load_checkpoint, load_model_state
    from regionvit_video.engine.distributed import resolve_device
    from regionvit_video.engine.tester import resolve_test_checkpoint

    path = str(cfg.DEMO.INPUT)
    if not path or not os.path.isfile(path):
        raise FileNotFoundError(f"DEMO.INPUT: video {path!r} does not exist")
    if cfg.DEMO.TOP_K < 1:
        raise ValueError(f"DEMO.TOP_K must be >= 1, got {cfg.DEMO.TOP_K}")
    device = resolve_device(cfg.DEVICE)
    ckpt = resolve_test_checkpoint(cfg)
    model = build_model(cfg)
    load_model_state(model, load_checkpoint(ckpt)["model_state"], source=str(ckpt))
    model.to(device).eval()
    names = resolve_class_names(cfg)
    d = cfg.DATA
    dataset = VideoDataset(
        [VideoRecord(path, 0)], mode="test", num_frames=d.NUM_FRAMES, sampling=d.SAMPLING,
        sampling_rate=d.SAMPLING_RATE, target_fps=d.TARGET_FPS, test_scale=d.TEST_SCALE,
        test_crop_size=d.TEST_CROP_SIZE, num_ensemble_views=cfg.TEST.NUM_ENSEMBLE_VIEWS,
        num_spatial_crops=cfg.TEST.NUM_SPATIAL_CROPS, mean=d.MEAN, std=d.STD, decoder=d.DECODER,
        decode_threads=d.DECODE_THREADS, decode_timeout=d.DECODE_TIMEOUT)
    top = predict_video(model, dataset, top_k=cfg.DEMO.TOP_K, device=device)
    result = {
        "video": path,
        "checkpoint": str(ckpt),
        "views": dataset.num_views,
        "top_k": [{"rank": r + 1, "class": names[c], "index": c, "probability": p} for r, (c, p) in enumerate(top)],
    }
    width = max(len(x["class"]) for x in result["top_k"])
    lines = [f"{path} ({dataset.num_views} views, {ckpt}):"]
    lines += [f"  {x['rank']}. {x['class']:<{width}}  {100 * x['probability']:6.2f}%" for x in result["top_k"]]
    print("\n".join(lines), flush=True)
    out = Path(cfg.OUTPUT_DIR) / "demo_prediction.json"
    try:
        text = json.dumps(result, indent=1) + "\n"
        atomic_write(out, lambda tmp: Path(tmp).write_text(text))
    except OSError as e:
        logger.warning("could not write %s: %s", out, e)
    return result
