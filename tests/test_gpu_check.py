"""benchmarks/gpu_check.py without a GPU: it refuses at once, its bookkeeping survives failing checks, and
its CPU smoke mode (``--device cpu --quick``) runs every section end to end, so that on the day a GPU
machine is at hand the script runs first time."""
from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "benchmarks" / "gpu_check.py"


def _module():
    spec = importlib.util.spec_from_file_location("gpu_check", SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _run(*args: str, timeout: float) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, str(SCRIPT), *args], capture_output=True, text=True, timeout=timeout,
                          env=env, cwd=REPO)


def test_without_cuda_it_stops_at_once_with_a_message(tmp_path):
    t0 = time.perf_counter()
    p = _run("--out", str(tmp_path / "out"), timeout=120)
    assert p.returncode == 2, p.stderr
    assert "no CUDA device" in p.stderr and "--device cpu --quick" in p.stderr
    assert not (tmp_path / "out").exists()  # nothing was started
    assert time.perf_counter() - t0 < 60


def test_flags_are_checked():
    gc = _module()
    with pytest.raises(SystemExit):
        gc.parse_args(["--sections", "correctness,speed"])
    with pytest.raises(SystemExit):
        gc.parse_args(["--budget", "feeding"])
    args = gc.parse_args(["--quick", "--sections", "feeding,throughput", "--budget", "feeding=12.5"])
    assert args.sections == ["feeding", "throughput"] and args.budgets["feeding"] == 12.5
    assert args.budgets["throughput"] == gc.QUICK_BUDGET_S["throughput"]
    assert gc.parse_args(["--device", "cpu"]).budgets == gc.CPU_BUDGET_S
    assert sum(gc.BUDGET_S.values()) <= 440  # the GPU run's 8 minutes, with start-up


def test_each_check_catches_its_own_failure_and_the_json_keeps_everything(tmp_path):
    gc = _module()
    report = gc.Report(tmp_path, {"device": "cpu", "torch": torch.__version__, "date_utc": "now", "quick": True})
    sec = gc.Section("correctness", 100.0, report, deadline=time.perf_counter() + 100)

    def boom():
        raise ValueError("broken kernel")

    def oom():
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

    sec.run("raises", boom)
    sec.run("out_of_memory", oom)
    sec.run("criterion", lambda: {"pass": False, "out_err": 0.5})
    sec.run("fine", lambda: {"out_err": 1e-6})
    sec.run("needs_wheels", lambda: {}, needs=("no_such_module_xyz",))
    sec.run("too_long", lambda: {}, est_s=1e6)
    data = json.loads((tmp_path / "gpu_check.json").read_text())
    checks = data["sections"]["correctness"]["checks"]
    assert {k: v["status"] for k, v in checks.items()} == {
        "raises": "failed", "out_of_memory": "failed", "criterion": "failed", "fine": "ok",
        "needs_wheels": "skipped", "too_long": "skipped"}
    assert checks["raises"]["error"] == "ValueError: broken kernel" and "boom" in checks["raises"]["traceback"]
    assert "OutOfMemoryError" in checks["out_of_memory"]["error"]
    assert "no_such_module_xyz" in checks["needs_wheels"]["reason"] and "time budget" in checks["too_long"]["reason"]
    text = gc.tables(report)
    assert "correctness/raises" in text and "ValueError: broken kernel" in text


def test_wheels_are_unpacked_without_pip(tmp_path):
    """--wheels: a wheel's importable files (root and .data/purelib) land in wheels/_site, once."""
    import zipfile

    gc = _module()
    wheels = tmp_path / "wheels"
    wheels.mkdir()
    with zipfile.ZipFile(wheels / "demo_pkg-1.0-py3-none-any.whl", "w") as z:
        z.writestr("demo_pkg/__init__.py", "VALUE = 42\n")
        z.writestr("demo_pkg-1.0.dist-info/METADATA", "Name: demo_pkg\n")
        z.writestr("demo_pkg-1.0.data/purelib/demo_extra.py", "X = 1\n")
        z.writestr("demo_pkg-1.0.data/scripts/tool", "#!/bin/sh\n")
    site = gc.install_wheels(wheels)
    assert (site / "demo_pkg" / "__init__.py").read_text() == "VALUE = 42\n"
    assert (site / "demo_extra.py").is_file() and not (site / "tool").exists()
    stamp = (site / ".unpacked").stat().st_mtime_ns
    assert gc.install_wheels(wheels) == site and (site / ".unpacked").stat().st_mtime_ns == stamp


@pytest.mark.slow
def test_cpu_smoke_run_of_every_section(tmp_path):
    """``--device cpu --quick``: every check of every section runs and passes on a CPU (the kernels in
    fp32 and bf16 autocast, a tiny model, gloo instead of NCCL, train+test, a SIGKILLed run resumed to
    the same weights in the deterministic mode, the speed and feeding measurements on tiny settings)."""
    out = tmp_path / "out"
    p = _run("--device", "cpu", "--quick", "--out", str(out), timeout=1500)
    assert p.returncode == 0, p.stdout[-4000:] + p.stderr[-4000:]
    data = json.loads((out / "gpu_check.json").read_text())
    checks = {f"{s}/{n}": c for s, e in data["sections"].items() for n, c in e["checks"].items()}
    assert {k: c["status"] for k, c in checks.items() if c["status"] != "ok"} == {}
    assert {"correctness/masked_rows", "correctness/temporal_chunking", "correctness/sdpa_backends",
            "correctness/model/regionvit_video_pico_w4", "correctness/ddp_world_size_1", "correctness/train_test/bf16",
            "correctness/resume_after_kill/deterministic", "feeding/epoch_340x256_10s"} <= set(checks)
    resume = checks["correctness/resume_after_kill/deterministic"]
    assert resume["max_weight_diff"] == 0 == resume["max_ema_diff"] and resume["killed_by"] == "SIGKILL"
    assert checks["correctness/temporal_chunking"]["chunks"] > 1
    assert checks["feeding/epoch_340x256_10s"]["loader_clips_per_s"] > 0
    table = data["sections"]["throughput"]["table"]
    assert table["timesformer_tiny"]["eager"]["training"]["clips_per_s"] > 0
    text = (out / "gpu_check.txt").read_text()
    assert "throughput (float32" in text and "feeding: 2 workers" in text and text in p.stdout
    assert not (out / "work").exists()  # generated videos and runs removed (--keep-work keeps them)


@pytest.mark.parametrize("estimate_at", [320, 200, 260])
def test_max_batch_search_brackets_the_out_of_memory_batch(monkeypatch, estimate_at):
    """The memory search, on CPU with CUDA's memory functions faked: a step at more than 300 clips runs out
    of memory, each clip takes 100 MB; wherever the linear estimate lands, the answer is within 1/16 below."""
    gc = _module()
    fixed, per_clip, limit = 2e9, 1e8, 300
    state = {"batch": 0}

    def fake_step_fn(model, device, batch, frames, size):
        def step():
            if batch > limit:
                raise torch.OutOfMemoryError("CUDA out of memory.")
            state["batch"] = batch
        return step

    monkeypatch.setattr(gc, "_build_for_speed", lambda *a, **k: torch.nn.Linear(1, 1))
    monkeypatch.setattr(gc, "_train_step_fn", fake_step_fn)
    monkeypatch.setattr(torch.cuda, "reset_peak_memory_stats", lambda device=None: None)
    monkeypatch.setattr(torch.cuda, "max_memory_allocated", lambda device=None: fixed + per_clip * state["batch"])
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda device=None: (0, (fixed + per_clip * estimate_at) / 0.97))
    rec = gc.max_training_batch("m", torch.device("cpu"), compiled=False, ckpt=False, frames=8, size=224, start=8,
                                cap=4096, deadline=time.perf_counter() + 60)
    assert limit * 15 / 16 <= rec["max_batch"] <= limit, rec
    assert rec["first_oom"] > limit and len(rec["probes"]) <= 10, rec
    assert [b for b, ok in rec["probes"] if ok and b > limit] == []
