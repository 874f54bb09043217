"""Training, single-view validation, multi-view testing, checkpoints and distributed helpers."""
from regionvit_video.engine.build import build_model, seed_everything
from regionvit_video.engine.checkpoint import (checkpoint_name, latest_checkpoint, list_checkpoints,
                                               load_checkpoint, save_checkpoint)
from regionvit_video.engine.distributed import DistInfo, cleanup_distributed, init_distributed
from regionvit_video.engine.meters import MultiViewAggregator, ensemble_views, topk_correct
from regionvit_video.engine.tester import NoCheckpointError, resolve_test_checkpoint, test
from regionvit_video.engine.trainer import (TooManyBadVideosError, TrainingDivergedError, TrainResult, train,
                                            validate)

__all__ = [
    "DistInfo", "MultiViewAggregator", "NoCheckpointError", "TooManyBadVideosError", "TrainResult",
    "TrainingDivergedError", "build_model", "checkpoint_name", "cleanup_distributed", "ensemble_views",
    "init_distributed", "latest_checkpoint", "list_checkpoints", "load_checkpoint", "resolve_test_checkpoint",
    "save_checkpoint", "seed_everything", "test", "topk_correct", "train", "validate",
]
