#!/usr/bin/env python
"""Model benchmark: params, fvcore GFLOPs, latency, peak memory and bf16 autocast, one table.

For every model (default: regionvit_video_small, regionvit_video_medium, timesformer_base at 8x224,
batch 1) and a large fp32 matmul as the machine's reference rate, on the same number of threads:

- params and fvcore GFLOPs (fvcore convention: one multiply-add = one FLOP; SDPA counted with
  ``regionvit_video.utils.flops.sdpa_flop_jit``, LayerNorm not counted, as in the papers' tables);
- forward latency (eval, no grad) and the achieved GFLOP/s as a fraction of the matmul rate (the matmul
  rate is counted the same way, n^3 multiply-adds per n x n x n product);
- train-step latency: forward + cross-entropy + backward + AdamW step (train mode);
- peak memory: the process's RSS high-water mark (``getrusage`` ru_maxrss), measured in a fresh
  subprocess per model and phase so models do not share a high-water mark; "delta" is the peak minus the
  RSS after imports (weights, gradients, optimizer state, activations, workspace); "ckpt delta" is the
  same train step with per-block activation checkpointing (``MODEL.ACT_CHECKPOINT``);
- bf16 autocast on the CPU: forward latency and the largest |logit| difference from fp32 (same input).

Latencies are medians over ``--repeats`` timed runs after ``--warmup`` untimed ones. A shared or
virtual machine's speed drifts by 10-30% over minutes, so the fp32 forward and the matmul reference are
measured in ``--rounds`` interleaved rounds (matmul, model 1, model 2, ..., again) and the table shows
the median over rounds: ratios between models then compare like with like.

Usage::

    OMP_NUM_THREADS=2 python benchmarks/bench_models.py                      # full run (minutes)
    python benchmarks/bench_models.py --frames 2 --size 112 --repeats 1 --threads 1   # smoke run
    python benchmarks/bench_models.py --models timesformer_base --json out.json
    python benchmarks/bench_models.py --speedup-only --rounds 5          # medium vs timesformer_base, one process
    python benchmarks/bench_models.py --speedup-only --compile blocks   # ... and each compiled block by block

The speed-up table (``--speedup-only``, and at the end of a full run that includes both models) times
regionvit_video_medium against timesformer_base in ONE process, in interleaved rounds whose order
alternates, for the forward and a training step (batch 2), in float32 and, on CPUs with bf16 instructions
(avx512_bf16 or amx in /proc/cpuinfo), under bf16 autocast; the speed-up is the median of the per-round
ratios. On CPUs without them bf16 is emulated (slower than float32) and the table says it skipped it.
With ``--compile blocks`` (``compile_repeated_blocks``) or ``--compile model``, a compiled copy of each
model runs in the same rounds, and a row gives each model at its fastest (eager or compiled).
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from typing import Any, Callable

DEFAULT_MODELS = ("regionvit_video_small", "regionvit_video_medium", "timesformer_base")
# Targets (CPU) this benchmark reports against.
TARGET_MODEL, BASELINE_MODEL = "regionvit_video_medium", "timesformer_base"
TARGET_SPEEDUP = 2.0  # TARGET_MODEL forward at least this much faster than BASELINE_MODEL
FLOP_RATIO = 2.37  # BASELINE_MODEL / TARGET_MODEL GFLOPs at 8x224 (paper Table 7: 197 / 83.1)
TARGET_MEM_RATIO = 0.5  # TARGET_MODEL train-step peak memory (delta) at most this fraction of BASELINE_MODEL's
TARGET_MATMUL_FRACTION = 0.5  # achieved forward GFLOP/s at least this fraction of the matmul rate

RESULT_PREFIX = "@@bench_models@@ "


# Worker side (runs in a fresh subprocess) ----------------------------------------------------------
def _rss_now_mb() -> float:
    import psutil

    return psutil.Process().memory_info().rss / 2**20


def _rss_peak_mb() -> float:
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2**20 if sys.platform == "darwin" else peak / 2**10  # bytes on macOS, KiB on Linux


def _median_seconds(fn: Callable[[], Any], repeats: int, warmup: int) -> float:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def _build(name: str, args: argparse.Namespace):
    """create_model with the benchmark's settings; size-agnostic models that take no img_size get none."""
    from regionvit_video.models import create_model

    kwargs = dict(num_classes=args.num_classes, num_frames=args.frames)
    try:
        return create_model(name, img_size=args.size, **kwargs), True
    except TypeError as e:
        if "img_size" not in str(e):
            raise
        return create_model(name, **kwargs), False


def _worker_matmul(args: argparse.Namespace) -> dict[str, Any]:
    import torch

    n = args.matmul_size
    a, b = torch.randn(n, n), torch.randn(n, n)
    sec = _median_seconds(lambda: torch.mm(a, b), max(args.repeats, 3), max(args.warmup, 1))
    return dict(size=n, seconds=sec, gflops=n**3 / sec / 1e9)


def _fvcore_gflops(model, x) -> tuple[float, dict[str, float]]:
    """fvcore total and per-operator GFLOPs in eval mode, SDPA counted, LayerNorm not counted."""
    import torch

    from regionvit_video.utils.flops import flop_count_analysis

    with torch.no_grad():
        fca = flop_count_analysis(model.eval(), x, count_layer_norm=False)
        by_op = {k: v / 1e9 for k, v in fca.by_operator().items() if v}
    return sum(by_op.values()), by_op


def _eval_model(args: argparse.Namespace):
    """The model in eval mode, whether it took ``img_size``, and a random input batch."""
    import torch

    model, took_img_size = _build(args.model, args)
    return model.eval(), took_img_size, torch.randn(args.batch, 3, args.frames, args.size, args.size)


def _worker_infer(args: argparse.Namespace) -> dict[str, Any]:
    import torch

    base_mb = _rss_now_mb()
    model, took_img_size, x = _eval_model(args)
    out: dict[str, Any] = dict(
        params=sum(p.numel() for p in model.parameters()),
        img_size_kwarg=took_img_size,
    )
    with torch.no_grad():
        out["fwd_s"] = _median_seconds(lambda: model(x), args.repeats, args.warmup)
        out["fwd_peak_mb"] = _rss_peak_mb()
        out["fwd_delta_mb"] = out["fwd_peak_mb"] - base_mb
        ref = model(x).float()
        with torch.autocast("cpu", dtype=torch.bfloat16):
            out["bf16_fwd_s"] = _median_seconds(lambda: model(x), args.repeats, args.warmup)
            low = model(x).float()
        out["bf16_max_abs_diff"] = (low - ref).abs().max().item()
        out["max_abs_logit"] = ref.abs().max().item()
    try:
        out["gflops"], out["gflops_by_op"] = _fvcore_gflops(model, x)
    except Exception as e:  # report, do not lose the other numbers
        out["gflops"] = None
        out["gflops_error"] = f"{type(e).__name__}: {e}"
    return out


def _worker_fwd(args: argparse.Namespace) -> dict[str, Any]:
    """fp32 forward latency only (the extra interleaved rounds)."""
    import torch

    model, _, x = _eval_model(args)
    with torch.no_grad():
        return dict(fwd_s=_median_seconds(lambda: model(x), args.repeats, args.warmup))


def _worker_train(args: argparse.Namespace, act_checkpoint: bool = False) -> dict[str, Any]:
    import torch
    import torch.nn.functional as F

    base_mb = _rss_now_mb()
    model, _ = _build(args.model, args)
    if act_checkpoint:
        model.set_grad_checkpointing(True)
    model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, weight_decay=0.05)
    x = torch.randn(args.batch, 3, args.frames, args.size, args.size)
    y = torch.randint(0, args.num_classes, (args.batch,))

    def step() -> None:
        opt.zero_grad(set_to_none=True)
        F.cross_entropy(model(x), y).backward()
        opt.step()

    sec = _median_seconds(step, args.repeats, args.warmup)
    peak = _rss_peak_mb()
    if act_checkpoint:
        return dict(ckpt_train_s=sec, ckpt_train_delta_mb=peak - base_mb)
    return dict(train_s=sec, train_peak_mb=peak, train_delta_mb=peak - base_mb, base_mb=base_mb)


def _worker_speedup(args: argparse.Namespace) -> dict[str, Any]:
    """TARGET_MODEL against BASELINE_MODEL in this one process, in interleaved rounds (the order alternates),
    so that both see the same machine state: the forward (inference mode, batch ``--batch``) and a training
    step (forward + backward + AdamW, batch ``--train-batch``) in float32 and, where the CPU has bf16
    instructions (or with ``--bf16 always``), under bf16 autocast. Medians over ``--rounds`` rounds.
    With ``--compile blocks|model`` each model also runs compiled (a copy with the same weights, compiled by
    ``compile_repeated_blocks`` or as one graph), in the same rounds as the eager ones; the warm-up calls
    compile (the forward's compile time is reported; the training step compiles its backward graphs in its
    own warm-up)."""
    import copy

    import torch
    import torch.nn.functional as F

    from regionvit_video.utils.machine import has_native_bf16

    dtypes = ["fp32"] + (["bf16"] if args.bf16 == "always" or (args.bf16 == "auto" and has_native_bf16()) else [])
    names = (TARGET_MODEL, BASELINE_MODEL)
    models = {(n, "eager"): _build(n, args)[0] for n in names}
    compile_s: dict[str, float] = {}
    x = torch.randn(args.batch, 3, args.frames, args.size, args.size)
    xt = torch.randn(args.train_batch, 3, args.frames, args.size, args.size)
    y = torch.randint(0, args.num_classes, (args.train_batch,))

    def autocast(dtype: str):
        return torch.autocast("cpu", dtype=torch.bfloat16) if dtype == "bf16" else torch.autocast("cpu", enabled=False)

    def forward(key: tuple[str, str], dtype: str) -> None:
        with torch.inference_mode(), autocast(dtype):
            models[key].eval()(x)

    opts: dict[tuple[str, str], torch.optim.Optimizer] = {}

    def train_step(key: tuple[str, str], dtype: str) -> None:
        model = models[key].train()
        opt = opts.setdefault(key, torch.optim.AdamW(model.parameters(), lr=1e-6))
        opt.zero_grad(set_to_none=True)
        with autocast(dtype):
            loss = F.cross_entropy(model(xt).float(), y)
        loss.backward()
        opt.step()

    modes = ["eager"]
    if args.compile != "none":
        modes.append("compiled")
        for n in names:
            model = copy.deepcopy(models[(n, "eager")])  # same weights; the eager model stays eager
            if args.compile == "blocks":
                model.compile_repeated_blocks()
            else:
                model.compile()
            models[(n, "compiled")] = model
            t0 = time.perf_counter()
            for dtype in dtypes:  # the first call of each dtype compiles the inference graphs
                forward((n, "compiled"), dtype)
            compile_s[n] = time.perf_counter() - t0
    phases = [("forward", forward, modes)] + ([] if args.no_train else [("train step", train_step, modes)])
    times: dict[tuple[str, str, str, str], list[float]] = {}
    for dtype in dtypes:
        for phase, fn, phase_modes in phases:
            keys = [(n, mode) for mode in phase_modes for n in names]
            for key in keys:  # warm-up (a compiled model's first calls compile: at least one)
                for _ in range(max(args.warmup, key[1] == "compiled")):
                    fn(key, dtype)
            for r in range(args.rounds):
                for key in (keys if r % 2 == 0 else keys[::-1]):
                    t0 = time.perf_counter()
                    fn(key, dtype)
                    times.setdefault((dtype, phase, *key), []).append(time.perf_counter() - t0)
    rows = []

    def row(dtype: str, phase: str, mode: str, t: list[float], b: list[float], **extra) -> dict[str, Any]:
        return dict(dtype=dtype, phase=phase, mode=mode, target_s=statistics.median(t), baseline_s=statistics.median(b),
                    speedup=statistics.median(bb / tt for tt, bb in zip(t, b)), target_rounds=t, baseline_rounds=b,
                    **extra)

    for dtype in dtypes:
        for phase, _, phase_modes in phases:
            for mode in phase_modes:
                rows.append(row(dtype, phase, mode, *(times[(dtype, phase, n, mode)] for n in names)))
            if len(phase_modes) > 1:  # each model at its fastest (per round: the faster of its eager and compiled run)
                best = {n: [min(rt) for rt in zip(*(times[(dtype, phase, n, m)] for m in phase_modes))] for n in names}
                fastest = {n: min(phase_modes, key=lambda m: statistics.median(times[(dtype, phase, n, m)]))
                           for n in names}
                rows.append(row(dtype, phase, "each at its fastest", *(best[n] for n in names),
                                fastest=fastest))
    return dict(rows=rows, compile=args.compile, compile_s=compile_s,
                bf16="measured" if "bf16" in dtypes else "skipped: this CPU has no bf16 instructions "
                "(avx512_bf16 / amx), where PyTorch emulates bf16 and it is slower than fp32")


def _speedup_table(res: dict[str, Any], args: argparse.Namespace) -> str:
    lines = [f"{TARGET_MODEL} against {BASELINE_MODEL} in one process, {args.rounds} interleaved rounds "
             f"(forward batch {args.batch}, train step batch {args.train_batch}, {args.frames}x{args.size}):",
             f"{'dtype':5s} | {'phase':10s} | {'mode':42s} | {TARGET_MODEL + ' ms':>27s} | "
             f"{BASELINE_MODEL + ' ms':>20s} | "
             f"speed-up (paired median; target {TARGET_SPEEDUP}x, FLOP ratio {FLOP_RATIO}x)"]
    for r in res["rows"]:
        mode = r.get("mode", "eager")
        if "fastest" in r:
            mode += f" ({r['fastest'][TARGET_MODEL]} / {r['fastest'][BASELINE_MODEL]})"
        lines.append(f"{r['dtype']:5s} | {r['phase']:10s} | {mode:42s} | "
                     f"{r['target_s'] * 1e3:27.0f} | "
                     f"{r['baseline_s'] * 1e3:20.0f} | {r['speedup']:.2f}x")
    if res.get("compile_s"):
        lines.append(f"compiled ({res['compile']}): first call(s), compilation included: "
                     + ", ".join(f"{n} {sec:.0f} s" for n, sec in res["compile_s"].items()))
    lines.append(f"bf16: {res['bf16']}")
    return "\n".join(lines)


def _worker_main(args: argparse.Namespace) -> None:
    import torch

    import regionvit_video  # noqa: F401  (pytorchvideo shim)

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    fn = {"matmul": _worker_matmul, "infer": _worker_infer, "fwd": _worker_fwd, "train": _worker_train,
          "train_ckpt": lambda a: _worker_train(a, act_checkpoint=True), "speedup": _worker_speedup}[args._worker]
    print(RESULT_PREFIX + json.dumps(fn(args)), flush=True)


# Parent side --------------------------------------------------------------------------------------
def _run_worker(phase: str, args: argparse.Namespace, model: str | None = None) -> dict[str, Any]:
    cmd = [sys.executable, os.path.abspath(__file__), "--_worker", phase]
    for flag in ("frames", "size", "batch", "repeats", "warmup", "threads", "num_classes", "matmul_size", "rounds",
                 "train_batch", "bf16", "compile"):
        cmd += [f"--{flag.replace('_', '-')}", str(getattr(args, flag))]
    if args.no_train:
        cmd += ["--no-train"]
    if model:
        cmd += ["--model", model]
    env = {**os.environ, **{v: str(args.threads) for v in ("OMP_NUM_THREADS", "MKL_NUM_THREADS")}}
    proc = subprocess.run(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    for line in proc.stdout.splitlines():
        if line.startswith(RESULT_PREFIX):
            return json.loads(line[len(RESULT_PREFIX) :])
    tail = "\n".join(proc.stderr.strip().splitlines()[-15:])
    return dict(error=f"{phase} worker exited with {proc.returncode}:\n{tail}")


def _fmt(v: float | None, spec: str) -> str:
    return "n/a" if v is None else format(v, spec)


def _table(rows: list[dict[str, Any]], matmul: dict[str, Any]) -> str:
    head = [
        "model", "params (M)", "GFLOPs", "fwd ms", "GFLOP/s", "% matmul", "train ms",
        "fwd peak MB", "train peak MB", "train delta MB", "ckpt delta MB", "bf16 fwd ms", "bf16 max|dlogit|",
    ]  # fmt: skip
    lines = []
    for r in rows:
        if "error" in r and "params" not in r:
            lines.append([r["model"], "error"] + [""] * (len(head) - 2))
            continue
        achieved = r["gflops"] / r["fwd_s"] if r.get("gflops") and r.get("fwd_s") else None
        frac = achieved / matmul["gflops"] if achieved and matmul.get("gflops") else None
        lines.append([
            r["model"] + ("" if r.get("img_size_kwarg", True) else " *"),
            _fmt(r.get("params", 0) / 1e6, ".2f"),
            _fmt(r.get("gflops"), ".1f"),
            _fmt(r["fwd_s"] * 1e3, ".0f"),
            _fmt(achieved, ".1f"),
            _fmt(frac * 100 if frac is not None else None, ".0f"),
            _fmt(r["train_s"] * 1e3 if "train_s" in r else None, ".0f"),
            _fmt(r.get("fwd_peak_mb"), ".0f"),
            _fmt(r.get("train_peak_mb"), ".0f"),
            _fmt(r.get("train_delta_mb"), ".0f"),
            _fmt(r.get("ckpt_train_delta_mb"), ".0f"),
            _fmt(r["bf16_fwd_s"] * 1e3, ".0f"),
            _fmt(r.get("bf16_max_abs_diff"), ".3g"),
        ])  # fmt: skip
    lines.append(["matmul fp32 (ref)", "", f"{matmul.get('size', 0) ** 3 / 1e9:.1f}",
                  _fmt(matmul.get("seconds", 0) * 1e3, ".0f"), _fmt(matmul.get("gflops"), ".1f"), "100"]
                 + [""] * (len(head) - 6))  # fmt: skip
    widths = [max(len(str(c)) for c in col) for col in zip(head, *lines)]

    def fmt_row(cells: list[str]) -> str:  # first column left-aligned, numbers right-aligned
        return " | ".join(str(c).rjust(w) if i else str(c).ljust(w) for i, (c, w) in enumerate(zip(cells, widths)))

    return "\n".join([fmt_row(head), "-+-".join("-" * w for w in widths), *map(fmt_row, lines)])


def _targets(rows: list[dict[str, Any]], matmul: dict[str, Any]) -> list[dict[str, Any]]:
    by = {r["model"]: r for r in rows if "error" not in r}
    checks = []
    t, b = by.get(TARGET_MODEL), by.get(BASELINE_MODEL)
    if t and b:
        speedup = b["fwd_s"] / t["fwd_s"]
        checks.append(dict(what=f"{TARGET_MODEL} forward speedup over {BASELINE_MODEL}", value=speedup,
                           target=f">= {TARGET_SPEEDUP}", ok=speedup >= TARGET_SPEEDUP))  # fmt: skip
        if "train_delta_mb" in t and "train_delta_mb" in b:
            ratio = t["train_delta_mb"] / b["train_delta_mb"]
            checks.append(dict(what=f"{TARGET_MODEL} / {BASELINE_MODEL} train-step peak memory (delta)",
                               value=ratio, target=f"<= {TARGET_MEM_RATIO}", ok=ratio <= TARGET_MEM_RATIO))  # fmt: skip
        if "ckpt_train_delta_mb" in t and "ckpt_train_delta_mb" in b:
            ratio = t["ckpt_train_delta_mb"] / b["ckpt_train_delta_mb"]
            checks.append(dict(what="  same, both with activation checkpointing", value=ratio,
                               target=f"<= {TARGET_MEM_RATIO}", ok=ratio <= TARGET_MEM_RATIO))  # fmt: skip
    for r in rows:
        if r.get("gflops") and matmul.get("gflops"):
            frac = r["gflops"] / r["fwd_s"] / matmul["gflops"]
            checks.append(dict(what=f"{r['model']} forward GFLOP/s / matmul GFLOP/s", value=frac,
                               target=f">= {TARGET_MATMUL_FRACTION}", ok=frac >= TARGET_MATMUL_FRACTION))  # fmt: skip
    return checks


def _parse(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--models", nargs="+", default=list(DEFAULT_MODELS),
                   help="registered model names (space- or comma-separated)")  # fmt: skip
    p.add_argument("--frames", type=int, default=8, help="clip length T")
    p.add_argument("--size", type=int, default=224, help="crop side H = W")
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--repeats", type=int, default=5, help="timed runs per measurement (median reported)")
    p.add_argument("--warmup", type=int, default=1, help="untimed runs before timing")
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: OMP_NUM_THREADS or all cores)")
    p.add_argument("--num-classes", type=int, default=400)
    p.add_argument("--matmul-size", type=int, default=2048, help="n of the n x n fp32 reference GEMM")
    p.add_argument("--no-train", action="store_true", help="skip the train-step measurements")
    p.add_argument("--rounds", type=int, default=3,
                   help="interleaved rounds of the fp32 forward and matmul timings (median reported)")
    p.add_argument("--no-ckpt", action="store_true", help="skip the activation-checkpointed train step")
    p.add_argument("--json", metavar="PATH", help="also write all numbers to this JSON file")
    p.add_argument("--train-batch", type=int, default=2, help="batch of the speed-up table's training step")
    p.add_argument("--bf16", choices=("auto", "always", "never"), default="auto",
                   help="the speed-up table's bf16 rows: auto = where the CPU has bf16 instructions")
    p.add_argument("--compile", choices=("none", "blocks", "model"), default="none",
                   help="the speed-up table also runs each model compiled: its repeated blocks "
                        "(compile_repeated_blocks) or the whole model (minutes of compilation on a CPU)")
    p.add_argument("--speedup-only", action="store_true",
                   help=f"only the {TARGET_MODEL} / {BASELINE_MODEL} speed-up table (one process, interleaved)")
    p.add_argument("--_worker", choices=("matmul", "infer", "fwd", "train", "train_ckpt", "speedup"),
                   help=argparse.SUPPRESS)
    p.add_argument("--model", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.threads is None:
        args.threads = int(os.environ.get("OMP_NUM_THREADS") or os.cpu_count() or 1)
    args.models = [m for item in args.models for m in item.split(",") if m]
    for flag in ("frames", "size", "batch", "repeats", "threads", "matmul_size", "rounds", "train_batch"):
        if getattr(args, flag) < 1:
            p.error(f"--{flag.replace('_', '-')} must be >= 1")
    if args.warmup < 0:
        p.error("--warmup must be >= 0")
    return args


def _settings(args: argparse.Namespace) -> dict[str, Any]:
    return {k: v for k, v in vars(args).items() if not k.startswith("_") and k != "model"}


def _write_json(path: str, payload: dict[str, Any]) -> None:
    from regionvit_video.utils.io import atomic_write_text

    atomic_write_text(path, json.dumps(payload, indent=2))
    print(f"\nwrote {path}")


def main(argv: list[str] | None = None) -> int:
    args = _parse(argv)
    if args._worker:
        _worker_main(args)
        return 0

    import torch
    from tqdm import tqdm

    import regionvit_video  # noqa: F401
    from regionvit_video.models import is_model

    unknown = [m for m in args.models if not is_model(m)]
    if unknown:
        print(f"unknown model(s): {', '.join(unknown)} (see regionvit_video.models.list_models())", file=sys.stderr)
        return 2

    from regionvit_video.utils.machine import describe

    machine = describe()
    if args.speedup_only:
        res = _run_worker("speedup", args)
        print("\n".join(f"bench_models: {line}" for line in machine))
        if "error" in res:
            print(res["error"], file=sys.stderr)
            return 1
        print(_speedup_table(res, args))
        if args.json:
            _write_json(args.json, dict(settings=_settings(args), machine=machine, speedup=res))
        return 0

    phases = ("infer",) if args.no_train else ("infer", "train") if args.no_ckpt else ("infer", "train", "train_ckpt")
    jobs = [("matmul", None)] + [(ph, m) for m in args.models for ph in phases]
    if TARGET_MODEL in args.models and BASELINE_MODEL in args.models:
        jobs.append(("speedup", None))
    for _ in range(args.rounds - 1):
        jobs += [("matmul", None)] + [("fwd", m) for m in args.models]
    results: dict[tuple[str, str | None], dict[str, Any]] = {}
    rounds: dict[str | None, list[dict[str, Any]]] = {}  # every matmul / fp32-forward measurement
    for phase, model in (bar := tqdm(jobs, desc="bench_models", unit="job", file=sys.stderr)):
        bar.set_postfix_str(f"{phase} {model or ''}".strip())
        res = _run_worker(phase, args, model)
        if phase == "speedup":
            results[("speedup", None)] = res
            continue
        if phase in ("matmul", "infer", "fwd") and "error" not in res:
            rounds.setdefault(model, []).append(res)
        results.setdefault((phase, model), res)

    matmul = dict(results[("matmul", None)])
    mm = [r for r in rounds.get(None, []) if "seconds" in r]
    if mm:
        matmul["seconds"] = statistics.median(r["seconds"] for r in mm)
        matmul["gflops"] = statistics.median(r["gflops"] for r in mm)
        matmul["gflops_rounds"] = [r["gflops"] for r in mm]
    rows = []
    for m in args.models:
        row: dict[str, Any] = dict(model=m)
        for phase in ("infer", "train", "train_ckpt"):
            res = results.get((phase, m), {})
            if "error" in res:
                row.setdefault("error", "")
                row["error"] += res["error"] + "\n"
            else:
                row.update(res)
        fwd = [r["fwd_s"] for r in rounds.get(m, []) if "fwd_s" in r]
        if fwd:
            row["fwd_s"], row["fwd_s_rounds"] = statistics.median(fwd), fwd
        rows.append(row)

    cpu = machine[0]
    print(
        f"bench_models: {args.batch}x3x{args.frames}x{args.size}x{args.size}, {args.threads} thread(s), "
        f"{args.repeats} timed run(s) (median) after {args.warmup} warm-up, fp32 forward and matmul: median of "
        f"{args.rounds} interleaved round(s), torch {torch.__version__}"
    )
    print("\n".join(f"bench_models: {line}" for line in machine))
    print(_table(rows, matmul))
    speedup = results.get(("speedup", None))
    if speedup is not None:
        print()
        print(_speedup_table(speedup, args) if "error" not in speedup else f"speed-up table: {speedup['error']}")
    print(
        "GFLOPs: fvcore (multiply-add = 1 FLOP; SDPA counted, LayerNorm not); matmul GFLOP/s counted the same way.\n"
        "Memory: RSS high-water mark (getrusage ru_maxrss) of a fresh process per model and phase; "
        "delta = peak - RSS after imports.\n"
        "bf16: torch.autocast('cpu', bfloat16) forward; max|dlogit| vs fp32 on the same input."
    )
    if any(not r.get("img_size_kwarg", True) for r in rows):
        print("* built without img_size (the model takes any input size)")
    for r in rows:
        if "error" in r:
            print(f"\n{r['model']}: {r['error'].rstrip()}", file=sys.stderr)
        if r.get("gflops_error"):
            print(f"\n{r['model']}: fvcore failed: {r['gflops_error']}", file=sys.stderr)
    if "error" in matmul:
        print(f"\nmatmul: {matmul['error']}", file=sys.stderr)
    checks = _targets(rows, matmul)
    if checks:
        print("\nTargets (CPU):")
        for c in checks:
            print(f"  [{'PASS' if c['ok'] else 'FAIL'}] {c['what']}: {c['value']:.3g} (target {c['target']})")
    if args.json:
        _write_json(args.json, dict(settings=_settings(args), torch=torch.__version__, cpu=cpu, machine=machine,
                                    matmul=matmul, models=rows, targets=checks, speedup=speedup))
    return 1 if any("error" in r for r in rows) or "error" in matmul else 0


if __name__ == "__main__":
    sys.exit(main())
