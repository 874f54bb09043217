#!/usr/bin/env python
"""GPU check: proves the CUDA path and measures what users compare, in one run of under 8 minutes.

Run it first on a machine with one NVIDIA GPU (H100 class)::

    make gpu-check                                 # = python benchmarks/gpu_check.py
    python benchmarks/gpu_check.py --wheels wheels/            # a machine without the data packages
    python benchmarks/gpu_check.py --sections correctness --quick
    python benchmarks/gpu_check.py --device cpu --quick        # CPU smoke run (what the test suite runs)

Without CUDA (and without ``--device cpu``) it stops at once with a message and exit status 2. Exit status
1: a check failed; 0: every check that ran passed. It prints one line per check as it goes and the tables
at the end, and writes everything to ``--out`` (default ``gpu_check_output/``): ``gpu_check.json`` (device,
driver, CUDA, torch, commit, date, every check's status, time and numbers; rewritten after every check, so
a killed run keeps what it measured), ``gpu_check.txt`` (the tables) and the runs' logs under ``work/``.

Sections (``--sections``, default all; each has a time budget, ``--budget SECTION=SECONDS``: a check that
would not fit in what is left is recorded as skipped; every check catches its own failure, out-of-memory
included, records it and the run goes on):

1. ``correctness``: fully masked attention rows (padding queries) and the chunked temporal attention batch
   (70,000 sequences, over CUDA's 65,535 grid limit) on the device in fp32 / bf16 / fp16, forward and
   backward, finite and close to CPU fp32 (and the unfixed code paths, to show whether this GPU needed
   the fixes); SDPA against the explicit attention with each backend forced
   (``torch.nn.attention.sdpa_kernel``: math, flash, efficient, cuDNN; "unsupported" where a backend
   refuses a case); every registered video model in bf16, forward and backward, with and without
   activation checkpointing; DDP on a world-size-1 NCCL group; ``train()`` then ``test()`` on generated
   videos in bf16 and in fp16 (GradScaler) with device normalisation, mixup, EMA, gradient accumulation
   and 2 pinned workers; a run killed (SIGKILL) after a mid-epoch checkpoint and resumed, against an
   uninterrupted run (max weight difference), with and without ``TRAIN.DETERMINISTIC``.
2. ``throughput``: regionvit_video_small, regionvit_video_medium and timesformer_base at 8x224 in bf16:
   inference clips/s at batch 32, training clips/s at batch 8 (forward, backward, AdamW), peak memory, the
   largest training batch that fits (a linear memory estimate, then probes, out-of-memory caught), each eager, with
   activation checkpointing, with torch.compile (regional: every block compiled, identical blocks share
   the compiled code) and with both; medium's speed-up over timesformer_base next to the FLOP ratio
   (2.37x: 196.7 / 83.1 GFLOPs, the RegionViT paper's Table 7).
3. ``feeding``: one training epoch of regionvit_video_small (recipe configs/k400_regionvit_s.yaml) on
   generated 340x256 10 s H.264 clips with 16 workers: ``dt_data / dt``, and the loader's clips/s alone
   against the model's training clips/s (above 1: the loader keeps up).

``--quick`` shrinks every section (two models, fewer steps, one resume mode, no memory search).
``--device cpu`` runs what makes sense on a CPU as a smoke test of the script itself: tiny models and
inputs, fp32 and bf16 autocast for the kernel checks, float32 for training and speed (as train() on a
CPU), gloo instead of NCCL, no compile, no out-of-memory search, budgets only against a hang.

What the GPU machine needs: Python 3.12 with torch, timm, einops (and numpy, PyYAML, tqdm, Pillow,
torchvision, which come with them), this repository, and for the sections that load videos (train/test,
resume, feeding) the data packages, carried as wheels because the machine has no internet. Make them on
a machine that has (the sdist-only packages are built into pure-Python wheels)::

    pip download --no-deps --only-binary=:all: --python-version 3.12 --platform manylinux_2_28_x86_64 \\
        av==18.1.0 decord2==3.4.0 -d wheels/
    pip wheel --no-deps fvcore==0.1.5.post20221221 iopath==0.1.10 yacs==0.1.8 pytorchvideo==0.1.5 \\
        portalocker termcolor tabulate parameterized -w wheels/
    # only if the machine lacks them (train() and test() draw their plots with matplotlib; psutil only
    # for --device cpu):
    pip download --no-deps --only-binary=:all: --python-version 3.12 --platform manylinux_2_28_x86_64 \\
        matplotlib contourpy kiwisolver fonttools cycler pyparsing python-dateutil six psutil -d wheels/

(av 36 MB and decord2 27 MB; the others about 0.5 MB together.) Then ``python benchmarks/gpu_check.py
--wheels wheels/`` unpacks them into ``wheels/_site`` (once; no pip, no network, the machine's Python
untouched) and puts that folder on the path of the check and of the processes it starts. Without them the
sections that need them are recorded as skipped, naming the missing modules; the kernel, model, DDP and
speed checks need none of them. Wheels are never committed (``wheels/`` is in .gitignore).
"""
from __future__ import annotations

import argparse
import contextlib
import copy
import datetime
import gc
import importlib.util
import json
import math
import os
import platform
import shutil
import signal
import subprocess
import sys
import time
import traceback
import warnings
from pathlib import Path
from typing import Any, Callable

REPO = Path(__file__).resolve().parents[1]
SECTIONS = ("correctness", "throughput", "feeding")
# Seconds per section on one H100 (sum 430: with start-up and a last check running over, under 8 minutes).
BUDGET_S = {"correctness": 160, "throughput": 210, "feeding": 60}
QUICK_BUDGET_S = {"correctness": 60, "throughput": 40, "feeding": 40}
# The CPU smoke run is for running every check, not for timing: budgets only against a hang.
CPU_BUDGET_S = {"correctness": 600, "throughput": 300, "feeding": 300}
THROUGHPUT_MODELS = ("regionvit_video_small", "regionvit_video_medium", "timesformer_base")
FLOP_RATIO = 196.7 / 83.1  # timesformer_base / regionvit_video_medium GFLOPs at 8x224 (RegionViT paper, Table 7)
# What a training run imports beyond torch, timm and einops (decord is optional: PyAV decodes without it).
DATA_MODULES = ("fvcore", "iopath", "yacs", "pytorchvideo", "av", "matplotlib")


def run_modules(device) -> tuple[str, ...]:
    """What a training run on ``device`` imports beyond torch, timm, einops: on a CPU also psutil (the
    memory column of the logs; on CUDA it is torch.cuda's peak)."""
    return DATA_MODULES + (("psutil",) if device.type == "cpu" else ())
# Largest error relative to the reference's largest magnitude, per dtype: outputs / gradients.
TOLERANCE = {"fp32": (1e-4, 1e-3), "bf16": (3e-2, 6e-2), "fp16": (4e-3, 1e-2)}


# ================================================================================================== #
# Bookkeeping: one Report, a Section per section, every check run through Section.run
# ================================================================================================== #
class Report:
    """Everything measured, written to ``out/gpu_check.json`` after every check."""

    def __init__(self, out: Path, meta: dict) -> None:
        self.out = out
        self.data: dict[str, Any] = {"meta": meta, "sections": {}}
        out.mkdir(parents=True, exist_ok=True)

    def write(self) -> None:
        tmp = self.out / "gpu_check.json.tmp"
        tmp.write_text(json.dumps(self.data, indent=1, default=str) + "\n")
        os.replace(tmp, self.out / "gpu_check.json")

    def checks(self):
        for section, entry in self.data["sections"].items():
            for name, check in entry["checks"].items():
                yield section, name, check


class Section:
    """Runs checks against a time budget; a check's exception is recorded, never propagated."""

    def __init__(self, name: str, budget_s: float, report: Report, deadline: float) -> None:
        self.name, self.budget_s, self.report = name, budget_s, report
        self.start = time.perf_counter()
        self.deadline = min(self.start + budget_s, deadline)
        self.entry = report.data["sections"].setdefault(name, {"budget_s": budget_s, "checks": {}})

    def left(self) -> float:
        return self.deadline - time.perf_counter()

    def run(self, name: str, fn: Callable[[], dict | None], *, needs: tuple[str, ...] = (), est_s: float = 0.0,
            ) -> dict:
        """Run ``fn`` (returns its numbers; ``"pass": False`` among them marks a failed criterion)."""
        rec: dict[str, Any] = {}
        missing = [m for m in needs if importlib.util.find_spec(m) is None]
        if missing:
            rec = {"status": "skipped", "reason": f"missing modules {missing} (see --wheels)"}
        elif self.left() < est_s:
            rec = {"status": "skipped", "reason": f"time budget: {max(self.left(), 0):.0f} s left of "
                                                  f"{self.budget_s:.0f}, needs ~{est_s:.0f} s"}
        else:
            t0 = time.perf_counter()
            try:
                rec = dict(fn() or {})
                passed = rec.pop("pass", True)
                rec = {"status": "ok" if passed else "failed", **rec}
            except Exception as e:  # noqa: BLE001  (recorded; the next check runs)
                rec = {"status": "failed", "error": f"{type(e).__name__}: {e}"[:2000],
                       "traceback": traceback.format_exc(limit=6)[-3000:]}
            finally:
                _free_memory()
            rec["time_s"] = round(time.perf_counter() - t0, 2)
        self.entry["checks"][name] = rec
        self.entry["time_s"] = round(time.perf_counter() - self.start, 1)
        self.report.write()
        detail = rec.get("reason") or rec.get("error") or _short(rec)
        print(f"[{self.name}] {name}: {rec['status']} ({rec.get('time_s', 0):.1f} s) {detail}"[:400], flush=True)
        return rec


def _short(rec: dict) -> str:
    keys = [k for k in rec if k not in ("status", "time_s") and not isinstance(rec[k], (dict, list))]
    return ", ".join(f"{k}={_fmt(rec[k])}" for k in keys[:8])


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.3g}"
    return str(v)


def _free_memory() -> None:
    import torch

    gc.collect()
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        torch.cuda.empty_cache()


# ================================================================================================== #
# Helpers
# ================================================================================================== #
def _amp(device) -> str:
    """The precision of the speed measurements and of DDP: bf16 on CUDA; float32 on CPU, as train() runs
    there whatever TRAIN.MIXED_PRECISION says."""
    return "bf16" if device.type == "cuda" else "fp32"


def _dtype(name: str):
    import torch

    return {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}[name]


def _autocast(device, dtype_name: str):
    import torch

    if dtype_name == "fp32":
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=_dtype(dtype_name))


def _rel_err(a, b) -> float:
    """max |a - b| / max |b| (float64 on CPU)."""
    a, b = a.detach().double().cpu(), b.detach().double().cpu()
    return float((a - b).abs().max() / b.abs().max().clamp_min(1e-12))


def _finite(*tensors) -> bool:
    import torch

    return all(bool(torch.isfinite(t).all()) for t in tensors if t is not None)


def _sync(device) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _set_tf32(enabled: bool) -> None:
    """TF32 on or off for CUDA float32 matmuls and convolutions. (Set here, not through
    regionvit_video.engine.build, whose package needs the data packages: the kernel, model and speed
    checks must run without them.)"""
    import torch

    matmul, conv = torch.backends.cuda.matmul, getattr(torch.backends.cudnn, "conv", None)
    if hasattr(matmul, "fp32_precision") and conv is not None and hasattr(conv, "fp32_precision"):
        matmul.fp32_precision = conv.fp32_precision = "tf32" if enabled else "ieee"
    else:
        matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = enabled


def _exact_fp32() -> None:
    """Full float32 matmuls for the comparisons against CPU float32 (a previous run may have enabled TF32)."""
    _set_tf32(False)


def _default_backends(device) -> dict:
    """The backend flags of a default training run (configure_backends), or, without the data packages that
    importing the engine needs, the same flags set here."""
    import torch

    try:
        from regionvit_video.config.defaults import get_cfg
        from regionvit_video.engine.build import configure_backends
    except ImportError as e:
        torch.use_deterministic_algorithms(False)
        torch.backends.cudnn.deterministic = False
        if device.type != "cuda":
            return {"deterministic": False, "set_here": str(e)}
        torch.backends.cudnn.benchmark = True
        _set_tf32(True)
        return {"deterministic": False, "tf32": True, "cudnn_benchmark": True, "set_here": str(e)}
    return configure_backends(get_cfg(), device)


def _is_oom(e: BaseException) -> bool:
    import torch

    return isinstance(e, torch.OutOfMemoryError) or "out of memory" in str(e).lower()


@contextlib.contextmanager
def _quiet_run(log: Path):
    """stdout / stderr of a training run (its log lines, its progress bars) into ``log``; the package
    logger's handlers on that file are removed afterwards (the file is closed)."""
    import logging

    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "a") as f:
        try:
            with contextlib.redirect_stdout(f), contextlib.redirect_stderr(f):
                yield
        finally:
            package = logging.getLogger("regionvit_video")
            for h in list(package.handlers):
                if getattr(h, "stream", None) is f:
                    package.removeHandler(h)


@contextlib.contextmanager
def _patched(obj, name: str, value):
    old = getattr(obj, name)
    setattr(obj, name, value)
    try:
        yield
    finally:
        setattr(obj, name, old)


# ================================================================================================== #
# 1. Correctness
# ================================================================================================== #
def _attention_case(*, ws=7, grid=(3, 3), pad=(5, 4), images=2, dim=96, heads=3, seed=0):
    """A window attention whose padded windows hold fully masked rows, its inputs and a loss weighting
    on real tokens only (padding outputs are cropped by the model)."""
    import torch

    from regionvit_video.layers import RelPosAttention, window_mask

    g = torch.Generator().manual_seed(seed)
    attn = RelPosAttention(dim, num_heads=heads, window_size=ws)
    with torch.no_grad():
        attn.rel_pos.normal_(0, 1, generator=g)
    mask = window_mask(grid, ws, *pad)
    nW = grid[0] * grid[1]
    real = mask.any(-1).repeat(images, 1)  # B', N
    x = torch.randn(images * nW, 1 + ws * ws, dim, generator=g)
    w = torch.randn(x.shape, generator=g) * real[..., None]
    return attn, dict(rel_pos=True, mask=mask, num_windows=nW), x, w, real


def _attend(attn, x, w, kwargs: dict, device, dtype_name: str, *, fused: bool, backend=None):
    """Forward (under autocast for bf16/fp16) and backward of ``attn`` on ``device``: output, gradients."""
    import torch

    attn = copy.deepcopy(attn).to(device)
    attn.fused_attn = fused
    kwargs = {k: (v.to(device) if torch.is_tensor(v) else v) for k, v in kwargs.items()}
    xi = x.to(device).requires_grad_(True)
    ctx = contextlib.nullcontext()
    if backend is not None:
        from torch.nn.attention import sdpa_kernel

        ctx = sdpa_kernel([backend])
    with ctx, _autocast(device, dtype_name):
        out = attn(xi, **kwargs)
    (out.float() * w.to(device)).sum().backward()
    grads = {"x": xi.grad, **{n: p.grad for n, p in attn.named_parameters() if p.grad is not None}}
    return out.detach().float().cpu(), {k: v.detach().float().cpu() for k, v in grads.items()}


def _compare(out, grads, ref_out, ref_grads, dtype_name: str, rows=None) -> dict:
    tol_out, tol_grad = TOLERANCE[dtype_name]
    o, r = (out[rows], ref_out[rows]) if rows is not None else (out, ref_out)
    out_err = _rel_err(o, r)
    grad_err = max(_rel_err(grads[k], ref_grads[k]) for k in ref_grads)
    finite = _finite(out, *grads.values())
    return {"finite": finite, "out_err": out_err, "grad_err": grad_err,
            "pass": finite and out_err <= tol_out and grad_err <= tol_grad}


def check_masked_rows(device, dtypes) -> dict:
    """Padding queries with every key masked: finite and close to CPU fp32 on real tokens, both paths; and
    whether the unfixed code (fully masked rows given to the kernel) gives NaN on this device."""
    import regionvit_video.layers.attention as attention_module

    _exact_fp32()
    attn, kwargs, x, w, real = _attention_case()
    results, ok = {}, True
    for fused in (True, False):
        ref_out, ref_grads = _attend(attn, x, w, kwargs, _cpu(), "fp32", fused=fused)
        for dt in dtypes:
            out, grads = _attend(attn, x, w, kwargs, device, dt, fused=fused)
            r = _compare(out, grads, ref_out, ref_grads, dt, rows=real)
            with _patched(attention_module, "open_fully_masked_rows", lambda m: m):
                old_out, _ = _attend(attn, x, w, kwargs, device, dt, fused=fused)
            r["nan_without_fix"] = not _finite(old_out)
            results[f"{'sdpa' if fused else 'explicit'}_{dt}"] = r
            ok &= r["pass"]
    return {"pass": ok, "cases": results,
            "nan_without_fix_any": any(r["nan_without_fix"] for r in results.values())}


def _cpu():
    import torch

    return torch.device("cpu")


def check_temporal_chunking(device, dtypes, *, batch: int, chunk: int | None) -> dict:
    """The temporal attention over ``batch`` sequences of 8 frames (70,000 on CUDA: over the 65,535 grid
    limit) in chunks, forward and backward, against CPU fp32; ``chunk`` None keeps the module's size."""
    import torch

    import regionvit_video.layers.attention as attention_module
    from regionvit_video.layers import RelPosAttention

    _exact_fp32()
    g = torch.Generator().manual_seed(1)
    attn = RelPosAttention(96, num_heads=3)
    x = torch.randn(batch, 8, 96, generator=g)
    w = torch.randn(x.shape, generator=g)
    size = chunk or attention_module.ATTENTION_BATCH_CHUNK
    results, ok = {}, True
    with _patched(attention_module, "ATTENTION_BATCH_CHUNK", size), \
            _patched(attention_module, "CPU_SDPA_MIN_TOKENS", 0):  # the SDPA path on CPU too
        ref_out, ref_grads = _attend(attn, x, w, {}, _cpu(), "fp32", fused=False)
        for dt in dtypes:
            out, grads = _attend(attn, x, w, {}, device, dt, fused=True)
            results[dt] = _compare(out, grads, ref_out, ref_grads, dt)
            ok &= results[dt]["pass"]
    rec = {"pass": ok, "batch": batch, "chunk": size, "chunks": math.ceil(batch / size), "cases": results}
    if device.type == "cuda":
        rec["unchunked"] = _child_json({"kind": "unchunked", "batch": batch}, timeout=120)
    return rec


def probe_unchunked(batch: int) -> dict:
    """(In a child process: a failed launch must not disturb the check.) One SDPA call over ``batch``
    sequences, chunking off: does this GPU / torch run it?"""
    import torch

    import regionvit_video.layers.attention as attention_module
    from regionvit_video.layers import RelPosAttention

    device = torch.device("cuda")
    attn = RelPosAttention(96, num_heads=3).to(device)
    x = torch.randn(batch, 8, 96, device=device, requires_grad=True)
    out = {}
    with _patched(attention_module, "ATTENTION_BATCH_CHUNK", 10**9):
        for dt in ("bf16", "fp32"):
            try:
                with _autocast(device, dt):
                    y = attn(x)
                y.float().sum().backward()
                torch.cuda.synchronize()
                out[dt] = "ran" if _finite(y, x.grad) else "non-finite"
            except Exception as e:  # noqa: BLE001
                out[dt] = f"{type(e).__name__}: {str(e).splitlines()[0][:200]}"
            x.grad = None
    return out


def check_sdpa_backends(device, dtypes) -> dict:
    """Each SDPA backend forced on the three attention shapes of the model (local windows with bias and
    mask, temporal over 8 frames, regional without bias) against the explicit path in fp32."""
    import torch
    from torch.nn.attention import SDPBackend

    import regionvit_video.layers.attention as attention_module
    from regionvit_video.layers import RelPosAttention

    _exact_fp32()
    backends = [SDPBackend.MATH, SDPBackend.FLASH_ATTENTION]
    if device.type == "cuda":
        backends += [SDPBackend.EFFICIENT_ATTENTION, SDPBackend.CUDNN_ATTENTION]
    g = torch.Generator().manual_seed(2)
    n_temporal = 4000 if device.type == "cuda" else 256
    local, local_kwargs, xl, wl, real = _attention_case(seed=2)
    cases = {
        "local_bias_mask": (local, local_kwargs, xl, wl, real),
        "temporal_t8": (RelPosAttention(96, num_heads=3), {}, torch.randn(n_temporal, 8, 96, generator=g),
                        torch.randn(n_temporal, 8, 96, generator=g), None),
        "regional_64": (RelPosAttention(96, num_heads=3), {}, torch.randn(16, 64, 96, generator=g),
                        torch.randn(16, 64, 96, generator=g), None),
    }
    table, ok = {}, True
    with _patched(attention_module, "CPU_SDPA_MIN_TOKENS", 0), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # each refusing backend warns why; recorded as "unsupported"
        for case, (attn, kwargs, x, w, rows) in cases.items():
            ref_out, ref_grads = _attend(attn, x, w, kwargs, device, "fp32", fused=False)
            for backend in backends:
                for dt in dtypes:
                    key = f"{case}/{backend.name.lower()}/{dt}"
                    try:
                        out, grads = _attend(attn, x, w, kwargs, device, dt, fused=True, backend=backend)
                    except RuntimeError as e:
                        if "No available kernel" not in str(e):
                            raise
                        table[key] = "unsupported"
                        continue
                    r = _compare(out, grads, ref_out, ref_grads, dt, rows=rows)
                    table[key] = r
                    ok &= r["pass"]
    ran = [k for k, v in table.items() if v != "unsupported"]
    return {"pass": ok, "ran": len(ran), "unsupported": len(table) - len(ran), "cases": table}


def video_model_names() -> list[str]:
    from regionvit_video.models import list_models

    return list_models(kind="video")


def check_video_model(name: str, device, *, frames: int, size: int) -> dict:
    """bf16 forward and backward with and without activation checkpointing (eval mode: no drop path, so
    both compute the same): finite, logits close to the device's fp32 forward, equal gradients."""
    import torch

    from regionvit_video.models import create_model

    _exact_fp32()
    with torch.device(device):
        model = create_model(name, num_classes=10, num_frames=frames).eval()
    x = torch.randn(1, 3, frames, size, size, device=device)
    with torch.no_grad():
        ref = model(x).float()
    rec: dict[str, Any] = {}
    grads = {}
    for ckpt in (False, True):
        model.set_grad_checkpointing(ckpt)
        model.zero_grad(set_to_none=True)
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        with torch.autocast(device.type, dtype=torch.bfloat16):
            logits = model(x)
        logits.float().logsumexp(-1).mean().backward()
        grads[ckpt] = {n: p.grad.float() for n, p in model.named_parameters() if p.grad is not None}
        tag = "ckpt" if ckpt else "plain"
        rec[f"{tag}_finite"] = _finite(logits, *grads[ckpt].values())
        rec[f"{tag}_logit_err"] = _rel_err(logits.float(), ref)
        if device.type == "cuda":
            rec[f"{tag}_peak_mb"] = round(torch.cuda.max_memory_allocated(device) / 2**20)
    rec["ckpt_vs_plain_grad_err"] = max(_rel_err(grads[True][n], g) for n, g in grads[False].items())
    rec["pass"] = (rec["plain_finite"] and rec["ckpt_finite"] and rec["plain_logit_err"] < 0.1
                   and rec["ckpt_logit_err"] < 0.1 and rec["ckpt_vs_plain_grad_err"] < 0.05)
    return rec


def init_process_group(device, workdir: Path) -> str:
    """A world-size-1 group (NCCL on CUDA, gloo on CPU) through a file store, as torchrun's one process."""
    import datetime as dt

    import torch.distributed as dist

    backend = "nccl" if device.type == "cuda" else "gloo"
    if not dist.is_initialized():
        store = workdir / "process_group_store"
        store.unlink(missing_ok=True)
        kwargs = {"device_id": device} if device.type == "cuda" else {}
        dist.init_process_group(backend, init_method=f"file://{store}", rank=0, world_size=1,
                                timeout=dt.timedelta(minutes=5), **kwargs)
    return dist.get_backend()


def check_ddp(device, workdir: Path) -> dict:
    """DDP over the world-size-1 group: bf16 forward/backward (gradients all-reduced by NCCL), a tensor
    all-reduce and an object all-gather."""
    import torch
    import torch.distributed as dist
    import torch.nn as nn

    from regionvit_video.models import create_model

    backend = init_process_group(device, workdir)
    model = create_model("regionvit_video_pico", num_classes=4, num_frames=4).to(device)
    ddp = nn.parallel.DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
    x = torch.randn(2, 3, 4, 64, 64, device=device)
    with _autocast(device, _amp(device)):
        loss = ddp(x).float().logsumexp(-1).mean()
    loss.backward()
    t = torch.ones(3, device=device)
    dist.all_reduce(t)
    gathered = [None]
    dist.all_gather_object(gathered, {"rank": 0})
    finite = _finite(*(p.grad for p in model.parameters() if p.grad is not None))
    return {"pass": finite and bool((t == 1).all()) and gathered == [{"rank": 0}], "backend": backend,
            "grads_finite": finite}


def _decoder() -> str:
    """decord (the toolkit's default) when installed, else PyAV (its per-file fallback)."""
    return "decord" if importlib.util.find_spec("decord") is not None else "pyav"


def make_small_videos(root: Path, device) -> dict:
    """12 videos (4 classes; 6 iterations per epoch at batch 2), 6 on CPU (3 iterations)."""
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))  # the suite's video generator
    from tiny_datasets import make_kinetics_folder

    if (root / "train.csv").is_file():
        return json.loads((root / "info.json").read_text())
    classes = 4 if device.type == "cuda" else 2
    info = make_kinetics_folder(root, num_classes=classes, videos_per_class=3, size=(64, 80), frames=16, seed=0)
    (root / "info.json").write_text(json.dumps(info))
    return info


def small_run_opts(info: dict, out: Path, device, precision: str, *extra) -> list[str]:
    """A tiny training job with every GPU-side feature on: autocast, device normalisation (the default),
    mixup, EMA, gradient accumulation, 2 pinned workers, RandAugment, random erasing. 2 epochs on CUDA,
    1 on CPU (the smoke run)."""
    opts = [*info["cfg_opts"], "MODEL.ARCH", "regionvit_video_pico_w4", "DATA.NUM_FRAMES", "4",
            "DATA.TRAIN_JITTER_SCALES", "[64, 72]", "DATA.TRAIN_CROP_SIZE", "64", "DATA.TEST_SCALE", "64",
            "DATA.TEST_CROP_SIZE", "64", "TRAIN.BATCH_SIZE", "2", "TEST.BATCH_SIZE", "4",
            "TRAIN.MIXED_PRECISION", precision, "TRAIN.GRAD_ACCUM_STEPS", "2", "MIXUP.ENABLE", "True",
            "MODEL_EMA.ENABLE", "True", "MODEL_EMA.DECAY", "0.9", "AUG.RAND_AUGMENT", "True", "AUG.RE_PROB", "0.25",
            "DATA_LOADER.NUM_WORKERS", "2", "DATA_LOADER.PIN_MEMORY", "True", "DATA_LOADER.NORMALIZE_ON_DEVICE",
            "True", "SOLVER.MAX_EPOCH", str(_small_epochs(device)), "SOLVER.WARMUP_EPOCHS", "0.5",
            "SOLVER.BASE_LR", "0.001",
            "TRAIN.EVAL_PERIOD", "1", "TRAIN.CHECKPOINT_KEEP", "0", "LOG_PERIOD", "1", "TEST.NUM_SPATIAL_CROPS", "3",
            "DATA.DECODER", _decoder(), "DEVICE", device.type, "OUTPUT_DIR", str(out), *extra]
    return [str(o) for o in opts]


def _small_epochs(device) -> int:
    return 2 if device.type == "cuda" else 1


def check_train_test(device, workdir: Path, precision: str) -> dict:
    """train() then test() in this process, with the world-size-1 group as the job's process group."""
    from regionvit_video.config import load_config
    from regionvit_video.data import build_loader
    from regionvit_video.engine import multiview_test, train
    from regionvit_video.engine.build import configure_backends
    from regionvit_video.engine.distributed import DistInfo
    from regionvit_video.engine.log import read_json_stats

    info = make_small_videos(workdir / "small_videos", device)
    out = workdir / f"train_test_{precision}"
    shutil.rmtree(out, ignore_errors=True)
    cfg = load_config(None, small_run_opts(info, out, device, precision))
    configure_backends(cfg, device)
    backend = init_process_group(device, workdir)
    di = DistInfo(0, 1, 0, device, backend)
    with _quiet_run(workdir / f"train_test_{precision}.log"):
        pinned = build_loader(cfg, "train").pin_memory
        result = train(cfg, di)
        results = multiview_test(cfg, di)
    recs = read_json_stats(out / "json_stats.log")
    losses = [r["loss"] for r in recs if r.get("_type") == "train_iter"]
    val = [r for r in recs if r.get("_type") == "val_epoch"]
    finite = bool(losses) and all(isinstance(v, (int, float)) and math.isfinite(v) for v in losses)
    ok = (finite and result.epochs_run == _small_epochs(device) and results["num_videos"] == len(info["videos"])
          and pinned == (device.type == "cuda"))
    return {"pass": ok,
            "losses_finite": finite, "first_loss": losses[0] if losses else None,
            "last_loss": losses[-1] if losses else None, "val_top1": val[-1].get("top1_acc") if val else None,
            "val_ema_top1": val[-1].get("ema_top1_acc") if val else None, "test_top1": results["top1"],
            "test_videos": results["num_videos"], "pinned": pinned, "decoder": cfg.DATA.DECODER,
            "amp": precision if device.type == "cuda" else "none (float32 on CPU)"}


def check_resume(device, workdir: Path, deterministic: bool) -> dict:
    """An uninterrupted run against one SIGKILLed after its mid-epoch checkpoint and resumed: the max
    weight difference of the final checkpoints (model, EMA). Every run in a fresh process (the backend
    flags and cuBLAS workspace are per process)."""
    from regionvit_video.engine import checkpoint as ck
    from regionvit_video.utils.io import safe_torch_load

    info = make_small_videos(workdir / "small_videos", device)
    tag = "deterministic" if deterministic else "default"
    ref_out, killed_out = workdir / f"resume_{tag}_reference", workdir / f"resume_{tag}_killed"
    for d in (ref_out, killed_out):
        shutil.rmtree(d, ignore_errors=True)
    extra = ["TRAIN.DETERMINISTIC", str(deterministic), "TRAIN.CHECKPOINT_ITER_PERIOD", "2", "TRAIN.EVAL_PERIOD", "0"]
    precision = "bf16"
    ref_opts = small_run_opts(info, ref_out, device, precision, *extra)
    killed_opts = small_run_opts(info, killed_out, device, precision, *extra)
    # Killed in the last epoch right after its iteration-2 checkpoint (the hook runs once it is written).
    epochs, iters = _small_epochs(device), len(info["videos"]) // 2
    killed = _child_json({"kind": "train", "jobs": [{"opts": killed_opts, "kill_at": (epochs - 1) * iters + 2}]},
                         timeout=300, expect_kill=True)
    newest = ck.latest_checkpoint(killed_out)
    resumed, reference = _child_json({"kind": "train", "jobs": [{"opts": killed_opts}, {"opts": ref_opts}]},
                                     timeout=400)["runs"]
    a = safe_torch_load(ck.checkpoint_dir(ref_out) / ck.checkpoint_name(epochs))
    b = safe_torch_load(ck.checkpoint_dir(killed_out) / ck.checkpoint_name(epochs))
    diffs = {}
    for key in ("model_state", "ema_state"):
        diffs[key] = max(float((a[key][n].double() - b[key][n].double()).abs().max())
                         for n in a[key] if a[key][n].is_floating_point())
    finite = all(math.isfinite(v) for v in diffs.values())
    return {"pass": finite and (diffs["model_state"] == 0.0 == diffs["ema_state"] if deterministic else True),
            "killed_by": killed.get("signal"), "resumed_from": newest.name if newest else None,
            "max_weight_diff": diffs["model_state"], "max_ema_diff": diffs["ema_state"],
            "epochs_run_after_resume": resumed.get("epochs_run"), "reference_epochs": reference.get("epochs_run"),
            "nondeterministic_ops_warned": sorted(set(resumed.get("nondeterministic", [])
                                                      + reference.get("nondeterministic", [])))[:10]}


def run_correctness(sec: Section, device, args, workdir: Path) -> None:
    quick, cuda = args.quick, device.type == "cuda"
    dtypes = ("fp32", "bf16", "fp16") if cuda else ("fp32", "bf16")  # CPU: a smoke run (bf16 is slow there)
    sec.run("masked_rows", lambda: check_masked_rows(device, dtypes), est_s=2)
    batch, chunk = (70_000, None) if cuda else (600, 256)
    sec.run("temporal_chunking", lambda: check_temporal_chunking(device, dtypes, batch=batch, chunk=chunk), est_s=5)
    sec.run("sdpa_backends", lambda: check_sdpa_backends(device, dtypes if cuda else ("fp32",)), est_s=3)
    names = video_model_names()
    if not cuda:
        names = ["regionvit_video_pico_w4"]
    elif quick:
        names = ["regionvit_video_small_w14", "timesformer_tiny"]
    frames, size = (4, 224) if cuda else (2, 32)
    for name in names:
        sec.run(f"model/{name}", lambda n=name: check_video_model(n, device, frames=frames, size=size), est_s=3)
    sec.run("ddp_world_size_1", lambda: check_ddp(device, workdir), est_s=3)
    for precision in (("bf16", "fp16") if cuda else ("bf16",)):
        sec.run(f"train_test/{precision}", lambda p=precision: check_train_test(device, workdir, p),
                needs=run_modules(device), est_s=20)
    for det in ((False, True) if cuda and not quick else (True,)):
        sec.run(f"resume_after_kill/{'deterministic' if det else 'default'}",
                lambda d=det: check_resume(device, workdir, d), needs=run_modules(device), est_s=30)
    with contextlib.suppress(Exception):
        import torch.distributed as dist

        if dist.is_initialized():
            dist.destroy_process_group()


# ================================================================================================== #
# 2. Throughput
# ================================================================================================== #
def _build_for_speed(name: str, device, frames: int, size: int, *, compiled: bool, ckpt: bool):
    import torch

    from regionvit_video.models import create_model

    with torch.device(device):
        model = create_model(name, num_classes=400, num_frames=frames)
    model.set_grad_checkpointing(ckpt)
    if compiled:
        model.compile_repeated_blocks()  # regional: blocks of one class and shape share the compiled code
    return model


def _timed(fn: Callable[[], None], device, *, warmup: int, steps: int) -> tuple[float, float]:
    """(seconds of the warm-up calls, seconds per timed call)."""
    t0 = time.perf_counter()
    for _ in range(warmup):
        fn()
    _sync(device)
    t1 = time.perf_counter()
    for _ in range(steps):
        fn()
    _sync(device)
    return t1 - t0, (time.perf_counter() - t1) / steps


def _train_step_fn(model, device, batch: int, frames: int, size: int):
    import torch
    import torch.nn.functional as F

    model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, fused=device.type == "cuda")
    x = torch.randn(batch, 3, frames, size, size, device=device)
    y = torch.randint(0, 400, (batch,), device=device)

    def step() -> None:
        with _autocast(device, _amp(device)):
            logits = model(x)
        F.cross_entropy(logits.float(), y).backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
    return step


def measure_inference(name: str, device, *, compiled: bool, batch: int, frames: int, size: int, steps: int) -> dict:
    import torch

    model = _build_for_speed(name, device, frames, size, compiled=compiled, ckpt=False).eval()
    x = torch.randn(batch, 3, frames, size, size, device=device)

    @torch.no_grad()
    def fwd() -> None:
        with _autocast(device, _amp(device)):
            model(x)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    warm, per = _timed(fwd, device, warmup=2, steps=steps)
    rec = {"batch": batch, "clips_per_s": batch / per, "warmup_s": round(warm, 1)}
    if device.type == "cuda":
        rec["peak_gb"] = torch.cuda.max_memory_allocated(device) / 2**30
    return rec


def measure_training(name: str, device, *, compiled: bool, ckpt: bool, batch: int, frames: int, size: int,
                     steps: int) -> dict:
    import torch

    model = _build_for_speed(name, device, frames, size, compiled=compiled, ckpt=ckpt)
    step = _train_step_fn(model, device, batch, frames, size)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    warm, per = _timed(step, device, warmup=2, steps=steps)
    rec = {"batch": batch, "clips_per_s": batch / per, "warmup_s": round(warm, 1)}
    if device.type == "cuda":
        rec["peak_gb"] = torch.cuda.max_memory_allocated(device) / 2**30
    return rec


def max_training_batch(name: str, device, *, compiled: bool, ckpt: bool, frames: int, size: int, start: int,
                       cap: int, deadline: float) -> dict:
    """Largest batch whose training step (forward, backward, AdamW) fits, out-of-memory caught.

    The peak memory of steps at ``start`` and ``2 * start`` clips gives a linear estimate of the batch
    that fills the device; probes then step up by 1/8 from a batch that fits, or bisect down from one
    that does not, until the bracket is within 1/16 (a few probes instead of a doubling search at the
    largest batches). torch.compile with a dynamic batch size (one compilation for all probes).
    """
    import torch

    model = _build_for_speed(name, device, frames, size, compiled=False, ckpt=ckpt)
    if compiled:
        model.compile_repeated_blocks(dynamic=True)
    probes: list[tuple[int, bool]] = []

    def peak_if_fits(b: int) -> float | None:
        """Peak bytes of one training step at batch ``b``, None on out-of-memory."""
        step, peak = None, None
        torch.cuda.reset_peak_memory_stats(device)
        try:
            step = _train_step_fn(model, device, b, frames, size)
            step()
            _sync(device)
            peak = float(torch.cuda.max_memory_allocated(device))
        except Exception as e:  # noqa: BLE001
            if not _is_oom(e):
                raise
        del step
        model.zero_grad(set_to_none=True)
        _free_memory()
        probes.append((b, peak is not None))
        return peak

    p1, p2 = peak_if_fits(start), peak_if_fits(2 * start)
    if p1 is None:
        return {"max_batch": 0, "probes": probes}
    if p2 is None:
        lo, hi = start, 2 * start
    else:
        per_clip = max((p2 - p1) / start, 1.0)
        total = torch.cuda.mem_get_info(device)[1]
        estimate = int(min(cap, 2 * start + (0.97 * total - p2) / per_clip))
        lo, hi = 2 * start, None
        b = max(estimate, lo + 1)
        while hi is None and time.perf_counter() < deadline:
            if peak_if_fits(b) is not None:
                lo = b
                if b >= cap:
                    return {"max_batch": lo, "bound": "cap", "estimate": estimate, "probes": probes}
                b = min(cap, max(b + 1, b * 9 // 8))
            else:
                hi = b
        if hi is None:
            return {"max_batch": lo, "bound": "time", "estimate": estimate, "probes": probes}
    while hi - lo > max(1, lo // 16) and time.perf_counter() < deadline:
        mid = (lo + hi) // 2
        if peak_if_fits(mid) is not None:
            lo = mid
        else:
            hi = mid
    return {"max_batch": lo, "first_oom": hi, "probes": probes}


def run_throughput(sec: Section, device, args) -> None:
    """Speeds first (eager, checkpointing, compile, both), then the memory searches, so a tight budget
    loses the slowest measurements (compile's memory search) first."""
    cuda = device.type == "cuda"
    sec.entry["backends"] = _default_backends(device)  # a default run's flags (TF32, benchmark)
    if cuda:
        models, frames, size = THROUGHPUT_MODELS, 8, 224
        inf_batch, train_batch = 32, 8
        steps = 5 if args.quick else 10
    else:
        models, frames, size = ("regionvit_video_pico_w4", "timesformer_tiny"), 2, 64
        inf_batch, train_batch, steps = 4, 2, 2
    results: dict[str, dict] = sec.entry.setdefault("table", {})

    def record(model: str, variant: str, key: str, rec: dict) -> None:
        row = results.setdefault(model, {}).setdefault(variant, {})
        if rec.get("status") == "ok":
            row[key] = {k: v for k, v in rec.items() if k not in ("status",)}
        else:
            row[key] = rec.get("status") + ": " + (rec.get("reason") or rec.get("error", ""))[:120]

    variants = [("eager", False, False), ("ckpt", False, True)]
    if cuda:  # torch.compile on CPU is minutes of C++ builds: not a smoke test
        variants += [("compile", True, False), ("compile+ckpt", True, True)]
    for variant, compiled, ckpt in variants:
        est = 30 if compiled else 4
        for m in models:
            if not ckpt:  # activation checkpointing does nothing without gradients: inference once per compile mode
                rec = sec.run(f"{m}/{variant}/inference_b{inf_batch}", lambda m=m, c=compiled: measure_inference(
                    m, device, compiled=c, batch=inf_batch, frames=frames, size=size, steps=steps), est_s=est)
                record(m, variant, "inference", rec)
            rec = sec.run(f"{m}/{variant}/training_b{train_batch}", lambda m=m, c=compiled, k=ckpt: measure_training(
                m, device, compiled=c, ckpt=k, batch=train_batch, frames=frames, size=size, steps=steps), est_s=est)
            record(m, variant, "training", rec)
    if cuda and not args.quick:  # no out-of-memory on a CPU
        for variant, compiled, ckpt in variants:
            for m in models:
                rec = sec.run(f"{m}/{variant}/max_training_batch", lambda m=m, c=compiled, k=ckpt: max_training_batch(
                    m, device, compiled=c, ckpt=k, frames=frames, size=size, start=train_batch, cap=4096,
                    deadline=min(sec.deadline, time.perf_counter() + (40 if c else 20))), est_s=30 if compiled else 8)
                record(m, variant, "max_batch", rec)
    sec.entry["speedup"] = speedups(results)
    sec.report.write()


def speedups(table: dict) -> dict:
    """regionvit_video_medium clips/s over timesformer_base clips/s, per variant and phase; FLOP ratio."""
    a, b = table.get("regionvit_video_medium", {}), table.get("timesformer_base", {})
    out: dict[str, Any] = {"flop_ratio": round(FLOP_RATIO, 2)}
    for variant in a:
        for phase in ("inference", "training"):
            ra, rb = a.get(variant, {}).get(phase), b.get(variant, {}).get(phase)
            if isinstance(ra, dict) and isinstance(rb, dict):
                out[f"{variant}/{phase}"] = round(ra["clips_per_s"] / rb["clips_per_s"], 2)
    return out


# ================================================================================================== #
# 3. Feeding
# ================================================================================================== #
def check_feeding(device, workdir: Path, args, model_rate: float | None) -> dict:
    """A training epoch on 340x256 10 s clips with 16 workers (dt_data / dt from its stats), the loader
    alone (clips/s) and the model's training clips/s."""
    import numpy as np
    import torch

    sys.path.insert(0, str(REPO / "benchmarks"))
    from bench_loader import make_clip

    from regionvit_video.config import load_config
    from regionvit_video.data import build_loader
    from regionvit_video.engine import train
    from regionvit_video.engine.build import configure_backends
    from regionvit_video.engine.log import read_json_stats

    cuda = device.type == "cuda"
    seconds = 10.0 if cuda else 2.0
    videos, workers = (256, 16) if cuda and not args.quick else ((128, 16) if cuda else (8, 2))
    root = workdir / "feeding_videos"
    if not (root / "train.csv").is_file():
        clip = root / "clip.mp4"
        root.mkdir(parents=True, exist_ok=True)
        make_clip(clip, seconds, 340, 256)
        lines = []
        for i in range(videos):  # hard links of one clip: the decode cost of every item is a real clip's
            link = root / f"v{i:04d}.mp4"
            if not link.exists():
                os.link(clip, link)
            lines.append(f"v{i:04d}.mp4 {i % 2}")
        for split in ("train", "val"):
            (root / f"{split}.csv").write_text("\n".join(lines) + "\n")
    out = workdir / "feeding_run"
    shutil.rmtree(out, ignore_errors=True)
    arch, frames, crop = ("regionvit_video_small", 8, 224) if cuda else ("regionvit_video_pico_w4", 4, 64)
    batch = 8 if cuda else 2
    opts = ["DATA.PATH_TO_DATA_DIR", str(root), "DATA.PATH_PREFIX", str(root), "MODEL.ARCH", arch,
            "MODEL.PRETRAINED", "", "MODEL.NUM_CLASSES", "2", "DATA.NUM_FRAMES", str(frames),
            "DATA.TRAIN_CROP_SIZE", str(crop), "DATA.TRAIN_JITTER_SCALES", f"[{crop}, {crop + crop // 4}]"
            if not cuda else "[256, 320]", "TRAIN.BATCH_SIZE", str(batch), "DATA_LOADER.NUM_WORKERS", str(workers),
            "SOLVER.MAX_EPOCH", "1", "TRAIN.EVAL_PERIOD", "0", "LOG_PERIOD", "4" if cuda else "2",
            "TEST.ENABLE", "False",
            "DATA.DECODER", _decoder(), "DEVICE", device.type, "OUTPUT_DIR", str(out)]
    cfg = load_config(str(REPO / "configs" / "k400_regionvit_s.yaml"), opts)
    configure_backends(cfg, device)
    with _quiet_run(workdir / "feeding_run.log"):
        loader = build_loader(cfg, "train", distributed=False)
        it = iter(loader)
        warm = min(len(loader) // 4, 4)
        for _ in range(warm):
            next(it)
        t0, n = time.perf_counter(), 0
        for b in it:
            n += b["label"].shape[0]
        loader_rate = n / (time.perf_counter() - t0)
        del it, loader
        train(cfg)
    recs = [r for r in read_json_stats(out / "json_stats.log") if r.get("_type") == "train_iter"]
    recs.sort(key=lambda r: r["global_iter"])
    # dt and dt_data are averages since the epoch's start: the last record covers the whole epoch, the
    # first only the first LOG_PERIOD iterations (workers starting).
    last = recs[-1] if recs else {}
    ratio = last.get("dt_data", float("nan")) / last["dt"] if last.get("dt") else float("nan")
    if model_rate is None:  # no throughput section this run: the model's own step on random clips
        model = _build_for_speed(arch, device, frames, crop, compiled=False, ckpt=False)
        _, per = _timed(_train_step_fn(model, device, batch, frames, crop), device, warmup=2, steps=5)
        model_rate = batch / per
        del model
    return {"clips": videos, "clip_seconds": seconds, "workers": workers, "batch": batch, "decoder": cfg.DATA.DECODER,
            "dt_s": last.get("dt"), "dt_data_s": last.get("dt_data"), "dt_data_over_dt": ratio,
            "epoch_samples_per_s": float(np.mean([r["samples_per_s"] for r in recs[1:]])) if len(recs) > 1 else None,
            "loader_clips_per_s": loader_rate, "model_training_clips_per_s": model_rate,
            "loader_over_model": loader_rate / model_rate if model_rate else None,
            "cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads()}


def run_feeding(sec: Section, device, args, workdir: Path, report: Report) -> None:
    table = report.data["sections"].get("throughput", {}).get("table", {})
    small = table.get("regionvit_video_small", {}).get("eager", {}).get("training")
    model_rate = small["clips_per_s"] if isinstance(small, dict) and device.type == "cuda" else None
    sec.run("epoch_340x256_10s", lambda: check_feeding(device, workdir, args, model_rate),
            needs=run_modules(device), est_s=30)


# ================================================================================================== #
# Child processes (resume runs, the unchunked probe): ``--_child JSON``, result as the last stdout line
# ================================================================================================== #
CHILD_PREFIX = "@@gpu_check@@ "


def _child_json(job: dict, *, timeout: float, expect_kill: bool = False) -> dict:
    cmd = [sys.executable, str(Path(__file__).resolve()), "--_child", json.dumps(job)]
    env = dict(os.environ)
    opts = [o for run in job.get("jobs", []) for o in run["opts"]]
    det = any(o == "TRAIN.DETERMINISTIC" and v == "True" for o, v in zip(opts, opts[1:]))
    if det:  # read by cuBLAS when its first handle is made: set before the process starts
        env.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env)
    if expect_kill:
        if proc.returncode != -signal.SIGKILL:
            raise RuntimeError(f"child was to be killed, exit {proc.returncode}: {proc.stderr[-1500:]}")
        return {"signal": "SIGKILL"}
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith(CHILD_PREFIX)]
    if proc.returncode != 0 or not lines:
        raise RuntimeError(f"child {job.get('kind')} exit {proc.returncode}: {(proc.stderr or proc.stdout)[-1500:]}")
    return json.loads(lines[-1][len(CHILD_PREFIX):])


def child_main(job: dict) -> None:
    if job["kind"] == "unchunked":
        result = probe_unchunked(job["batch"])
    elif job["kind"] == "train":  # training runs one after the other, each with its config's backend flags
        from regionvit_video.config import load_config
        from regionvit_video.engine import train
        from regionvit_video.engine.build import configure_backends
        from regionvit_video.engine.distributed import resolve_device

        runs = []
        for run in job["jobs"]:
            cfg = load_config(None, run["opts"])
            kill_at = run.get("kill_at")

            def hook(epoch: int, it: int, global_it: int, kill_at=kill_at) -> None:
                if kill_at is not None and global_it == kill_at:
                    os.kill(os.getpid(), signal.SIGKILL)
            with warnings.catch_warnings(record=True) as caught, _quiet_run(Path(cfg.OUTPUT_DIR).with_suffix(".log")):
                warnings.simplefilter("always")
                configure_backends(cfg, resolve_device(cfg.DEVICE))
                res = train(cfg, iteration_hook=hook)
            nondet = sorted({str(w.message).split(" does not have a deterministic")[0][:120] for w in caught
                             if "deterministic" in str(w.message)})
            runs.append({"epochs_run": res.epochs_run, "nondeterministic": nondet})
        result = {"runs": runs}
    else:
        raise ValueError(f"unknown child job {job['kind']!r}")
    print(CHILD_PREFIX + json.dumps(result), flush=True)


# ================================================================================================== #
# Set-up, tables, main
# ================================================================================================== #
def install_wheels(wheels: Path) -> Path:
    """Unpack every ``wheels/*.whl`` into ``wheels/_site`` (once per set of files) and return that folder,
    which the caller puts on sys.path and PYTHONPATH (for the child processes). Unpacking is what pip does
    for a wheel's importable files (the root and its ``*.data/purelib|platlib``); it needs neither pip nor
    a network, and touches no environment."""
    import zipfile

    site = wheels / "_site"
    files = sorted(wheels.glob("*.whl"))
    if not files:
        raise SystemExit(f"gpu_check: --wheels {wheels}: no .whl files there")
    stamp = site / ".unpacked"
    names = "\n".join(f.name for f in files)
    if stamp.is_file() and stamp.read_text() == names:
        return site
    shutil.rmtree(site, ignore_errors=True)
    site.mkdir(parents=True)
    for whl in files:
        with zipfile.ZipFile(whl) as z:
            for info in z.infolist():
                parts = info.filename.split("/")
                if parts[0].endswith(".data"):
                    if len(parts) < 3 or parts[1] not in ("purelib", "platlib"):
                        continue  # scripts, headers, data: not needed to import
                    parts = parts[2:]
                target = site.joinpath(*parts)
                if info.is_dir():
                    target.mkdir(parents=True, exist_ok=True)
                    continue
                target.parent.mkdir(parents=True, exist_ok=True)
                with z.open(info) as src, open(target, "wb") as dst:
                    shutil.copyfileobj(src, dst)
                mode = info.external_attr >> 16
                if mode & 0o111:
                    target.chmod(0o755)
    stamp.write_text(names)
    return site


def meta_info(device, args) -> dict:
    import torch

    meta: dict[str, Any] = {
        "date_utc": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M:%S"),
        "argv": sys.argv[1:], "python": platform.python_version(), "platform": platform.platform(),
        "torch": torch.__version__, "cuda_build": torch.version.cuda, "cpu_count": os.cpu_count(),
        "device": str(device), "quick": args.quick,
    }
    with contextlib.suppress(Exception):
        meta["commit"] = subprocess.run(["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"], capture_output=True,
                                        text=True, timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(REPO), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=10).stdout.strip()
        meta["commit_dirty"] = bool(dirty)
    if device.type == "cuda":
        p = torch.cuda.get_device_properties(device)
        meta.update(gpu=p.name, capability=f"{p.major}.{p.minor}", gpu_memory_gb=round(p.total_memory / 2**30, 1),
                    cudnn=torch.backends.cudnn.version())
        with contextlib.suppress(Exception):
            meta["driver"] = subprocess.run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                                            capture_output=True, text=True, timeout=20).stdout.strip().splitlines()[0]
    for mod in ("timm", "einops", "fvcore", "pytorchvideo", "av", "decord"):
        with contextlib.suppress(Exception):
            meta.setdefault("packages", {})[mod] = (__import__(mod).__version__
                                                    if importlib.util.find_spec(mod) else None)
    return meta


def tables(report: Report) -> str:
    """The checks (one line each), the throughput table and the feeding summary, as text."""
    lines = []
    m = report.data["meta"]
    lines.append(f"gpu_check: {m.get('gpu', m['device'])} | driver {m.get('driver', '-')} | CUDA {m.get('cuda_build')} "
                 f"| torch {m['torch']} | commit {m.get('commit', '?')}{'+' if m.get('commit_dirty') else ''} "
                 f"| {m['date_utc']} UTC{' | --quick' if m['quick'] else ''}")
    lines.append("")
    w = max([len(f"{s}/{n}") for s, n, _ in report.checks()] + [10])
    lines.append(f"{'check':<{w}}  {'status':<8} {'time s':>7}  detail")
    for s, n, c in report.checks():
        detail = c.get("reason") or c.get("error") or _short(c)
        lines.append(f"{s + '/' + n:<{w}}  {c['status']:<8} {c.get('time_s', 0):>7.1f}  {detail}"[:220])
    tp = report.data["sections"].get("throughput", {})
    if tp.get("table"):
        amp = "bf16 autocast" if "cuda" in m["device"] else "float32"
        lines += ["", f"throughput ({amp}; clips/s; peak GB at the measured batch; max training batch)",
                  f"{'model':<24} {'variant':<13} {'infer/s':>9} {'train/s':>9} {'train GB':>9} {'max batch':>10}"]
        for model, variants in tp["table"].items():
            for variant, row in variants.items():
                def val(key, field, spec):
                    r = row.get(key)
                    if isinstance(r, dict):
                        return format(r[field], spec) if r.get(field) is not None else "-"
                    return "-" if r is None else str(r).split(":")[0]  # "failed" / "skipped"
                lines.append(f"{model:<24} {variant:<13} {val('inference', 'clips_per_s', '.1f'):>9} "
                             f"{val('training', 'clips_per_s', '.1f'):>9} {val('training', 'peak_gb', '.1f'):>9} "
                             f"{val('max_batch', 'max_batch', 'd'):>10}")
        sp = tp.get("speedup", {})
        if len(sp) > 1:
            lines.append("regionvit_video_medium over timesformer_base: " + ", ".join(
                f"{k} {v:.2f}x" for k, v in sp.items() if k != "flop_ratio") + f" (FLOP ratio {sp['flop_ratio']:.2f}x)")
    fd = report.data["sections"].get("feeding", {}).get("checks", {}).get("epoch_340x256_10s", {})
    if fd.get("status") == "ok":
        lines += ["", f"feeding: {fd['workers']} workers, dt_data/dt {fd['dt_data_over_dt']:.3f}, loader "
                      f"{fd['loader_clips_per_s']:.1f} clips/s vs model training "
                      f"{fd['model_training_clips_per_s']:.1f} "
                      f"clips/s (x{fd['loader_over_model']:.2f})"]
    return "\n".join(lines) + "\n"


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", choices=("cuda", "cpu"), default="cuda",
                   help="cuda (the check; exits with status 2 without CUDA) or cpu (smoke run of the script)")
    p.add_argument("--quick", action="store_true", help="fewer dtypes, models and steps")
    p.add_argument("--sections", default=",".join(SECTIONS), help=f"comma-separated subset of {','.join(SECTIONS)}")
    p.add_argument("--budget", action="append", default=[], metavar="SECTION=SECONDS", help="a section's time budget")
    p.add_argument("--out", type=Path, default=Path("gpu_check_output"), help="folder for the JSON, tables, logs")
    p.add_argument("--wheels", type=Path, default=None, help="folder of wheels to install for this run (see above)")
    p.add_argument("--keep-work", action="store_true", help="keep generated videos and runs in OUT/work")
    p.add_argument("--_child", default=None, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    args.sections = [s.strip() for s in args.sections.split(",") if s.strip()]
    bad = [s for s in args.sections if s not in SECTIONS]
    if bad:
        p.error(f"unknown section(s) {bad}; choose from {list(SECTIONS)}")
    budgets = dict(CPU_BUDGET_S if args.device == "cpu" else QUICK_BUDGET_S if args.quick else BUDGET_S)
    for item in args.budget:
        name, _, value = item.partition("=")
        if name not in SECTIONS or not value:
            p.error(f"--budget {item!r}: expected SECTION=SECONDS with SECTION in {list(SECTIONS)}")
        budgets[name] = float(value)
    args.budgets = budgets
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.wheels is not None:
        site = install_wheels(args.wheels.resolve())
        sys.path.insert(0, str(site))
        os.environ["PYTHONPATH"] = os.pathsep.join([str(site), str(REPO), os.environ.get("PYTHONPATH", "")])
    if str(REPO) not in sys.path:
        sys.path.insert(0, str(REPO))
        os.environ["PYTHONPATH"] = os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])
    import torch

    if args._child is not None:
        child_main(json.loads(args._child))
        return 0
    if args.device == "cuda" and not torch.cuda.is_available():
        print(f"gpu_check: no CUDA device (torch {torch.__version__}, CUDA build {torch.version.cuda}, "
              f"CUDA_VISIBLE_DEVICES={os.environ.get('CUDA_VISIBLE_DEVICES', '<unset>')!r}). This check needs an "
              "NVIDIA GPU; `--device cpu --quick` runs its CPU smoke test.", file=sys.stderr)
        return 2
    import regionvit_video  # noqa: F401  (pytorchvideo import shim, when pytorchvideo is there)

    device = torch.device("cuda", torch.cuda.current_device()) if args.device == "cuda" else torch.device("cpu")
    out = args.out.resolve()
    workdir = out / "work"
    workdir.mkdir(parents=True, exist_ok=True)
    report = Report(out, meta_info(device, args))
    report.write()
    print(tables(report).splitlines()[0], flush=True)
    deadline = time.perf_counter() + sum(args.budgets[s] for s in args.sections) + 15
    try:
        for name in args.sections:
            sec = Section(name, args.budgets[name], report, deadline)
            if name == "correctness":
                run_correctness(sec, device, args, workdir)
            elif name == "throughput":
                run_throughput(sec, device, args)
            else:
                run_feeding(sec, device, args, workdir, report)
    finally:
        text = tables(report)
        (out / "gpu_check.txt").write_text(text)
        print("\n" + text, flush=True)
        if not args.keep_work:
            shutil.rmtree(workdir, ignore_errors=True)
    statuses = [c["status"] for _, _, c in report.checks()]
    print(f"gpu_check: {statuses.count('ok')} ok, {statuses.count('failed')} failed, {statuses.count('skipped')} "
          f"skipped; {out / 'gpu_check.json'}", flush=True)
    return 1 if "failed" in statuses else 0


if __name__ == "__main__":
    sys.exit(main())
