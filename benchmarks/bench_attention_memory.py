"""Attention memory of RegionViT's R2L attention vs global attention over all local tokens, per stage.

The paper (RegionViT, ICLR 2022) argues that regional-to-local attention needs far less memory than
global self-attention over the local tokens (about 73% saving at stage 3 of RegionViT-S at 224).
This script prints, for each stage of ``regionvit_small`` at the given input size:

- analytic: elements of the attention maps (scores + softmax probabilities) of one layer,
  R2L = RSA (nW x nW per image) + LSA (one (1+ws^2)^2 map per window), global = N_local^2, per head;
- measured: the peak memory of running that one attention layer with explicit (materialised)
  attention maps, on CUDA with ``torch.cuda.max_memory_allocated`` when available, otherwise on CPU as
  the increase of the process's peak RSS (``ru_maxrss``) in a fresh subprocess per measurement (so the
  high-water mark only reflects that computation). The "method" column says which one was used.

Usage: OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_attention_memory.py [--size 224] [--batch N]
"""
from __future__ import annotations

import argparse
import json
import math
import resource
import subprocess
import sys

import torch


def stage_geometry(size: int, variant: str = "regionvit_small") -> list[dict]:
    """Per stage: channels, heads, window, local grid and regional grid at a square input ``size``."""
    from regionvit_video.models import create_model

    with torch.device("meta"):
        model = create_model(variant)
        maps = model.forward_intermediates(torch.empty(1, 3, size, size), intermediates_only=True)
        regional = model.cls_token(torch.empty(1, 3, size, size))
    rh, rw = regional.shape[-2:]
    out = []
    for s, (stage, m) in enumerate(zip(model.layers, maps)):
        if s > 0:
            rh, rw = math.ceil(rh / 2), math.ceil(rw / 2)
        attn = stage.block[1].attn
        out.append(dict(stage=s + 1, dim=m.shape[1], heads=attn.num_heads, ws=stage.ws,
                        local=(m.shape[2], m.shape[3]), regional=(rh, rw)))
    return out


def analytic_elements(g: dict, batch: int) -> tuple[int, int]:
    """Attention-map elements (one layer, scores and probabilities both counted) for R2L and global."""
    n_win = g["regional"][0] * g["regional"][1]
    n_local = g["local"][0] * g["local"][1]
    seq = 1 + g["ws"] ** 2
    r2l = batch * g["heads"] * (n_win * n_win + n_win * seq * seq)
    glob = batch * g["heads"] * n_local * n_local
    return 2 * r2l, 2 * glob


def _run(g: dict, kind: str, batch: int, device: str) -> None:
    from regionvit_video.layers import RelPosAttention, window_mask

    dim, heads, ws = g["dim"], g["heads"], g["ws"]
    n_win = g["regional"][0] * g["regional"][1]
    if kind == "r2l":
        attn = RelPosAttention(dim, num_heads=heads, window_size=ws).to(device)
        attn.fused_attn = False  # materialise the maps: the memory being compared
        regional = torch.randn(batch, n_win, dim, device=device)
        windows = torch.randn(batch * n_win, 1 + ws * ws, dim, device=device)
        hr, wr = g["regional"]
        pad_b, pad_r = hr * ws - g["local"][0], wr * ws - g["local"][1]
        mask = window_mask((hr, wr), ws, pad_b, pad_r, device=device) if (pad_b or pad_r) else None

        def fn():
            attn(regional)
            attn(windows, rel_pos=True, mask=mask, num_windows=n_win)
    else:
        attn = RelPosAttention(dim, num_heads=heads).to(device)
        attn.fused_attn = False
        tokens = torch.randn(batch, g["local"][0] * g["local"][1], dim, device=device)

        def fn():
            attn(tokens)

    with torch.no_grad():
        # Warm-up on a tiny problem with the same ops, so lazily allocated library buffers (oneDNN/BLAS
        # workspaces, thread pools) are not counted as attention memory.
        tiny = RelPosAttention(32, num_heads=1, window_size=2).to(device)
        tiny.fused_attn = False
        tiny(torch.randn(1, 4, 32, device=device))
        tiny(torch.randn(4, 5, 32, device=device), rel_pos=True,
             mask=window_mask((2, 2), 2, 1, 1, device=device), num_windows=4)
        if device == "cuda":
            torch.cuda.synchronize()
            base = torch.cuda.memory_allocated()
            torch.cuda.reset_peak_memory_stats()
            fn()
            torch.cuda.synchronize()
            peak = torch.cuda.max_memory_allocated() - base
        else:
            before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
            fn()
            peak = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) * 1024  # ru_maxrss is KiB
    print(json.dumps({"peak_bytes": peak}))


def measure(g: dict, kind: str, batch: int) -> tuple[float, str]:
    if torch.cuda.is_available():
        res = subprocess.run([sys.executable, __file__, "--_measure", json.dumps(g), kind, str(batch), "cuda"],
                             capture_output=True, text=True, check=True)
        return json.loads(res.stdout.strip().splitlines()[-1])["peak_bytes"], "cuda max_memory_allocated"
    res = subprocess.run([sys.executable, __file__, "--_measure", json.dumps(g), kind, str(batch), "cpu"],
                         capture_output=True, text=True, check=True)
    return json.loads(res.stdout.strip().splitlines()[-1])["peak_bytes"], "CPU peak-RSS increase"


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--_measure":
        g = json.loads(sys.argv[2])
        _run(g, sys.argv[3], int(sys.argv[4]), sys.argv[5])
        return
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--batch", type=int, default=0, help="fixed batch for the measurements (0: per stage, auto)")
    parser.add_argument("--variant", default="regionvit_small")
    args = parser.parse_args()
    from tqdm import tqdm

    geo = stage_geometry(args.size, args.variant)
    rows = []
    for g in tqdm(geo, desc="stages", leave=False):
        e_r2l, e_glob = analytic_elements(g, 1)
        # Batch per stage so the global maps are ~256 MB: small stages rise above allocator/RSS noise and
        # stage 1 (59M elements per image) stays within the machine. Measurements are reported per image.
        batch = args.batch or max(1, min(64, round(2**28 / (4 * e_glob))))
        m_r2l, method = measure(g, "r2l", batch)
        m_glob, _ = measure(g, "global", batch)
        rows.append((g, batch, e_r2l, e_glob, m_r2l / batch, m_glob / batch, method))

    print(f"{args.variant} at {args.size}x{args.size}, one attention layer per stage, fp32, per image")
    hdr = (f"{'stage':>5} {'local':>7} {'windows':>7} {'heads':>5} | {'R2L maps (M el)':>15} {'global (M el)':>13} "
           f"{'saving':>7} | {'batch':>5} {'R2L meas. MB':>12} {'global meas. MB':>15} {'saving':>7} | method")
    print(hdr)
    print("-" * len(hdr))
    for g, batch, e_r2l, e_glob, m_r2l, m_glob, method in rows:
        n_win = g["regional"][0] * g["regional"][1]
        local = f"{g['local'][0]}x{g['local'][1]}"
        meas_saving = f"{100 * (1 - m_r2l / m_glob):6.1f}%" if m_glob > 0 else "   n/a"
        print(f"{g['stage']:>5} {local:>7} {n_win:>7} {g['heads']:>5} | {e_r2l / 1e6:>15.3f} {e_glob / 1e6:>13.3f} "
              f"{100 * (1 - e_r2l / e_glob):6.1f}% | {batch:>5} {m_r2l / 2**20:>12.2f} {m_glob / 2**20:>15.2f} "
              f"{meas_saving} | {method}")
    print("analytic: attention-map elements per image (scores + probabilities, RSA + LSA for R2L); measured: peak "
          "memory of running the layer with materialised maps, divided by the batch (includes q/k/v and outputs)")


if __name__ == "__main__":
    main()
