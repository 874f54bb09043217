"""Training, single-view validation, multi-view testing, features, prediction, checkpoints, distributed helpers.

Every job is a function of ``(cfg, dist_info)``: :func:`train`, :func:`multiview_test`,
:func:`~regionvit_video.engine.features.extract_features`, :func:`~regionvit_video.engine.predict.predict`,
:func:`~regionvit_video.engine.timeline.timeline`;
:func:`setup_run` comes first (logging, ``OUTPUT_DIR/config.yaml``). Inference jobs build their model with
:func:`load_inference_model` and run it under :func:`inference_autocast`.
"""
from regionvit_video.engine.build import build_model, inference_autocast, seed_everything, setup_run
from regionvit_video.engine.checkpoint import (NoCheckpointError, checkpoint_name, latest_checkpoint, list_checkpoints,
                                               load_checkpoint, load_inference_model, resolve_inference_weights,
                                               save_checkpoint)
from regionvit_video.engine.distributed import DistInfo, cleanup_distributed, init_distributed
from regionvit_video.engine.meters import MultiViewAggregator, ensemble_views, topk_correct
from regionvit_video.engine.tester import multiview_test
from regionvit_video.engine.preemption import PREEMPTED_EXIT_CODE, Preempted
from regionvit_video.engine.trainer import (CheckpointWriteError, TooManyBadVideosError, TrainingDivergedError,
                                            TrainResult, train, validate)

__all__ = [
    "CheckpointWriteError", "DistInfo", "MultiViewAggregator", "NoCheckpointError", "PREEMPTED_EXIT_CODE", "Preempted", "TooManyBadVideosError", "TrainResult",
    "TrainingDivergedError", "build_model", "checkpoint_name", "cleanup_distributed", "ensemble_views",
    "inference_autocast", "init_distributed", "latest_checkpoint", "list_checkpoints", "load_checkpoint",
    "load_inference_model", "multiview_test", "resolve_inference_weights", "save_checkpoint", "seed_everything",
    "setup_run", "topk_correct", "train", "validate",
]
