#!/usr/bin/env python
"""Train, validate, test and extract features with one command (PySlowFast's ``tools/run_net.py``).

    python run_net.py --cfg configs/k400_regionvit_m.yaml DATA.PATH_TO_DATA_DIR /data/k400 OUTPUT_DIR runs/m
    torchrun --nproc_per_node 8 run_net.py --cfg configs/k400_regionvit_m.yaml ...          # 8 GPUs
    torchrun --nnodes 2 --node_rank 0 --nproc_per_node 8 --rdzv_backend c10d \\
        --rdzv_endpoint HOST0:29500 run_net.py --cfg ...                                    # 2 machines

Jobs run in order when enabled: TRAIN (with per-epoch single-view validation), TEST (multi-view,
the reportable number), FEATURES (feature extraction), PREDICT (top-k classes of one video), EXPORT
(a pretrained folder or ONNX file with a parity report), TIMELINE (the actions of a long video or a live
stream over time); each is a function of ``(cfg, dist_info)`` in :mod:`regionvit_video.engine`.
TRAIN.ENABLE and TEST.ENABLE default to True, except in an inference job: with FEATURES.ENABLE,
PREDICT.ENABLE, EXPORT.ENABLE or TIMELINE.ENABLE True they are off unless set explicitly (in the YAML
chain or on the command line), so

    python run_net.py --cfg configs/k400_regionvit_m.yaml FEATURES.ENABLE True FEATURES.INPUT videos/ \
        TEST.CHECKPOINT_FILE_PATH ck.pyth
    python run_net.py --cfg configs/k400_regionvit_m.yaml PREDICT.ENABLE True PREDICT.INPUT v.mp4 \
        TEST.CHECKPOINT_FILE_PATH ck.pyth
    python run_net.py --cfg configs/k400_regionvit_m.yaml TIMELINE.ENABLE True TIMELINE.INPUT long.mp4 \
        TEST.CHECKPOINT_FILE_PATH ck.pyth

only extract features / predict (add ``TEST.ENABLE True`` to also test); the log says so.
``KEY VALUE`` pairs after the flags (or after ``--opts``) override the config; the config is
validated before any work starts and written to OUTPUT_DIR/config.yaml.

Exit status: 0 done; 1 a run that failed with a clear error (in the log; a stalled live stream too); 2 a
config error; 75 (EX_TEMPFAIL) preempted by SIGTERM/SIGUSR1/SIGUSR2 after writing a checkpoint: the same command
resumes (``run_with_submitit.py`` requeues the job itself).
"""
from __future__ import annotations

import logging
import sys

import regionvit_video  # noqa: F401  (installs the pytorchvideo import shim first)
from regionvit_video.config.load import ConfigError, config_from_args, parse_args
from regionvit_video.data import (DatasetFormatError, DecodeError, StreamError, StreamStalled,
                                  build_eval_dataset)
from regionvit_video.engine import (PREEMPTED_EXIT_CODE, CheckpointWriteError, NoCheckpointError, Preempted,
                                    TooManyBadVideosError, TrainingDivergedError, cleanup_distributed, init_distributed,
                                    multiview_test, setup_run, train)
from regionvit_video.engine.checkpoint import CheckpointFormatError
from regionvit_video.engine.export import export
from regionvit_video.engine.features import extract_features
from regionvit_video.engine.predict import predict
from regionvit_video.models import PretrainedFormatError, PretrainedNotFoundError
from regionvit_video.engine.timeline import timeline
from regionvit_video.utils.io import CheckpointReadError, UnsafeCheckpointError

logger = logging.getLogger("regionvit_video.run_net")
# Errors whose message says everything: no traceback.
_CLEAN_ERRORS = (ConfigError, NoCheckpointError, TrainingDivergedError, TooManyBadVideosError, CheckpointWriteError,
                 DatasetFormatError, CheckpointFormatError, UnsafeCheckpointError, CheckpointReadError, DecodeError,
                 StreamStalled, StreamError, PretrainedFormatError, PretrainedNotFoundError)


def main(argv: list[str] | None = None) -> int:
    notes: list[str] = []  # derived settings, logged once logging is set up
    try:
        args = parse_args(argv)
        cfg = config_from_args(args, notes=notes)
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    dist_info = init_distributed(cfg.DEVICE, cfg.DIST_BACKEND, init_method=args.init_method,
                                 shard_id=args.shard_id, num_shards=args.num_shards)
    setup_run(cfg, dist_info)  # logging, and the resolved config of this invocation: OUTPUT_DIR/config.yaml
    logger.info("%s on %s, process %d of %d", args.cfg_file, dist_info.device, dist_info.rank, dist_info.world_size)
    for note in notes:
        logger.info("%s", note)
    try:
        if cfg.TRAIN.ENABLE and cfg.TEST.ENABLE:
            build_eval_dataset(cfg, "test")  # a bad line in the test list stops the run now, not after training
        if cfg.TRAIN.ENABLE:
            train(cfg, dist_info)
        if cfg.TEST.ENABLE:
            multiview_test(cfg, dist_info)
        if cfg.FEATURES.ENABLE:
            extract_features(cfg, dist_info)
        if cfg.PREDICT.ENABLE:
            predict(cfg, dist_info)
        if cfg.EXPORT.ENABLE:
            export(cfg, dist_info)
        if cfg.TIMELINE.ENABLE:
            timeline(cfg, dist_info)
    except Preempted as e:  # the checkpoint is written: the same command (or a requeued job) resumes
        logger.warning("preempted: %s; exit status %d", e, PREEMPTED_EXIT_CODE)
        return PREEMPTED_EXIT_CODE
    except _CLEAN_ERRORS as e:
        logger.error("%s: %s", type(e).__name__, e)
        return 1
    finally:
        cleanup_distributed()
    return 0


if __name__ == "__main__":
    sys.exit(main())
