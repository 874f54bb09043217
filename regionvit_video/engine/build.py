"""The one place the config becomes a model, and the shared run setup (output folder, seeds, backend flags,
autocast)."""
from __future__ import annotations

import contextlib
import logging
import os
import random
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
from fvcore.common.config import CfgNode

from regionvit_video.config.load import save_config
from regionvit_video.engine.distributed import DistInfo, cluster_job_id
from regionvit_video.engine.log import setup_logging

logger = logging.getLogger(__name__)

_AMP_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


def setup_run(cfg: CfgNode, dist_info: DistInfo | None = None) -> None:
    """What comes before any job of a run (``run_net.py`` calls it once): logging to the console and, on
    rank 0, to ``OUTPUT_DIR/stdout.log`` (with the cluster job id when there is one); the resolved config in
    ``OUTPUT_DIR/config.yaml``; the backend flags (:func:`configure_backends`).

    The jobs (``train``, ``test``, ``extract_features``, ``predict``) log through it and do not set it up
    again; a script calling them directly calls this first. ``dist_info`` None: a single process.
    """
    dist_info = dist_info or DistInfo()
    out = Path(cfg.OUTPUT_DIR)
    setup_logging(out if dist_info.is_main else None, rank=dist_info.rank)
    job = cluster_job_id()
    if job:
        logger.info("cluster job %s", job)
    if dist_info.is_main:
        save_config(cfg, out)
        logger.info("config written to %s", out / "config.yaml")
    configure_backends(cfg, dist_info.device)


def build_model(cfg: CfgNode, *, compile: bool | None = None) -> nn.Module:
    """``create_model(MODEL.ARCH, ...)`` with the config's class count, frames and regularisation, compiled
    in place with ``MODEL.COMPILE`` (``nn.Module.compile``: the state_dict keys stay the same, so checkpoints
    are interchangeable with eager runs), as one graph or block by block (``MODEL.COMPILE_SCOPE``).
    ``compile``: override MODEL.COMPILE (export builds eager models).

    Raises:
        ValueError: MODEL.ARCH is an image model (the message names the video models).
    """
    from regionvit_video.models import check_video_model, create_model

    check_video_model(cfg.MODEL.ARCH)
    model = create_model(
        cfg.MODEL.ARCH,
        num_classes=cfg.MODEL.NUM_CLASSES,
        num_frames=cfg.DATA.NUM_FRAMES,
        drop_path_rate=cfg.MODEL.DROP_PATH_RATE,
        drop_rate=cfg.MODEL.DROPOUT_RATE,
        act_checkpoint=cfg.MODEL.ACT_CHECKPOINT,
        time_embed_init=cfg.MODEL.TIME_EMBED_INIT,
        temporal_fc_init=cfg.MODEL.TEMPORAL_FC_INIT,
    )
    if cfg.MODEL.COMPILE if compile is None else compile:
        backend, scope = cfg.MODEL.COMPILE_BACKEND, cfg.MODEL.COMPILE_SCOPE
        if scope == "blocks":
            what = f"its {model.compile_repeated_blocks(backend=backend)} blocks are"
        else:
            model.compile(backend=backend)
            what = "the whole model is"
        logger.info("MODEL.COMPILE: %s: %s compiled with torch.compile (backend %s; the first iterations compile)",
                    cfg.MODEL.ARCH, what, backend)
    return model


def seed_everything(seed: int) -> None:
    """Seed python, numpy and torch (CPU and CUDA)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


# cuBLAS needs a fixed workspace configuration for deterministic results (CUDA >= 10.2; NVIDIA's cuBLAS docs).
CUBLAS_WORKSPACE_CONFIG = ":4096:8"


def configure_backends(cfg: CfgNode, device: torch.device) -> dict:
    """Set the process-wide CUDA backend flags for a run on ``device``; returns what was set (for the log).

    Default (``TRAIN.DETERMINISTIC`` False): deterministic algorithms off (torch's default), and on CUDA
    TF32 for float32 matmuls and convolutions (float32 operands rounded to a 10-bit mantissa on the
    tensor cores: several times faster, differences of the order of bfloat16 autocast's) and
    ``cudnn.benchmark`` (each conv shape picks its fastest algorithm once). On CPU the TF32 and cuDNN
    flags are left as they are.

    ``TRAIN.DETERMINISTIC`` True, on any device: ``torch.use_deterministic_algorithms(True,
    warn_only=True)`` (an op without a deterministic implementation warns instead of failing),
    ``cudnn.deterministic``, no benchmark, no TF32, and ``CUBLAS_WORKSPACE_CONFIG=:4096:8`` unless the
    environment sets it (it must be set before the first cuBLAS call: call this before building the
    model). Only this mode makes a resumed CUDA run bitwise equal to an uninterrupted one.
    """
    deterministic = bool(cfg.TRAIN.DETERMINISTIC)
    cuda = device.type == "cuda"
    done: dict = {"deterministic": deterministic}
    if deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", CUBLAS_WORKSPACE_CONFIG)
        torch.use_deterministic_algorithms(True, warn_only=True)
        torch.backends.cudnn.deterministic = True
        torch.backends.cudnn.benchmark = False
        done["cublas_workspace_config"] = os.environ["CUBLAS_WORKSPACE_CONFIG"]
        _set_tf32(False)
        done.update(tf32=False, cudnn_benchmark=False)
    else:
        torch.use_deterministic_algorithms(False)
        torch.backends.cudnn.deterministic = False
        if cuda:
            torch.backends.cudnn.benchmark = True
            _set_tf32(True)
            done.update(tf32=True, cudnn_benchmark=True)
    logger.info("backend flags for %s: %s", device, done)
    return done


def _set_tf32(enabled: bool) -> None:
    """TF32 for CUDA float32 matmuls and cuDNN convolutions, through torch's fp32_precision API where it
    exists (torch >= 2.9, which warns about mixing it with the older allow_tf32 flags), else allow_tf32."""
    matmul, conv = torch.backends.cuda.matmul, getattr(torch.backends.cudnn, "conv", None)
    if hasattr(matmul, "fp32_precision") and conv is not None and hasattr(conv, "fp32_precision"):
        matmul.fp32_precision = conv.fp32_precision = "tf32" if enabled else "ieee"
    else:  # pragma: no cover - torch < 2.9
        matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = enabled


def tf32_enabled() -> bool:
    """Whether CUDA float32 matmuls may use TF32 (either API)."""
    matmul = torch.backends.cuda.matmul
    if hasattr(matmul, "fp32_precision"):
        return matmul.fp32_precision == "tf32"
    return bool(matmul.allow_tf32)  # pragma: no cover - torch < 2.9


def autocast(device: torch.device, precision: str) -> contextlib.AbstractContextManager:
    """``torch.autocast`` on CUDA for "bf16" / "fp16"; a no-op on CPU or for "none"."""
    if precision == "none" or device.type != "cuda":
        return contextlib.nullcontext()
    return torch.autocast("cuda", dtype=_AMP_DTYPES[precision])


def inference_autocast(cfg: CfgNode, device: torch.device) -> contextlib.AbstractContextManager:
    """The one precision rule of every forward pass: validation, test, features and prediction run at
    ``TRAIN.MIXED_PRECISION``, the precision the model trains at (autocast on CUDA; fp32 on CPU or
    with "none"); :func:`inference_precision` names it."""
    return autocast(device, cfg.TRAIN.MIXED_PRECISION)


def inference_precision(cfg: CfgNode, device: torch.device) -> str:
    """What :func:`inference_autocast` computes in on ``device``: "bf16", "fp16" or "float32"."""
    return cfg.TRAIN.MIXED_PRECISION if device.type == "cuda" and cfg.TRAIN.MIXED_PRECISION != "none" else "float32"


def amp_enabled(device: torch.device, precision: str) -> bool:
    if precision != "none" and device.type != "cuda":
        logger.warning("TRAIN.MIXED_PRECISION=%s applies on CUDA only; running in float32 on %s",
                       precision, device)
    return precision != "none" and device.type == "cuda"


def memory_mb(device: torch.device) -> float:
    """Peak CUDA memory (MB) on CUDA, else this process's resident memory."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    import psutil

    return psutil.Process().memory_info().rss / 2**20
