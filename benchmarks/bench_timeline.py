#!/usr/bin/env python
"""Timeline speed on a long video: seconds of video per second of compute, decoding, memory.

    OMP_NUM_THREADS=2 .venv/bin/python benchmarks/bench_timeline.py --rounds 2      # all rows (~25 min on 2 cores)
    .venv/bin/python benchmarks/bench_timeline.py --rows demo_1min,demo_1min_decord --rounds 3

Generates (once, cached in ``--cache``) a 10-minute 340x256 H.264 video at 25 fps with a keyframe every 2 s
(as web videos have; x264's default is every 10 s), with :func:`regionvit_video.data.video_writer.write_video`
frame by frame: a scrolling texture with shapes that change their motion every few seconds. Each row runs the
timeline job (``regionvit_video.engine.timeline.timeline``, what ``run_net.py TIMELINE.ENABLE True`` runs) in a
fresh process, with random weights (the speed does not depend on them), ``--threads`` torch threads and
DATA_LOADER.NUM_WORKERS 1 (the timeline decodes a file in one loading process):

- ``decode``: the windows of the demo row, decoded and cropped, no model (the data side's rate);
- ``demo_1min`` / ``demo``: the demo model (regionvit_video_pico_w4, 4 frames, configs/demo.yaml's 64 px test
  scale and crops, 3 crops), windows of 1 s every 0.5 s, on the first minute / the whole video: the peak memory
  of both shows whether it grows with the video's length;
- ``demo_sparse``: the same model, windows of 1 s every 10 s: the decoder seeks from window to window;
- ``demo_decord`` / ``demo_1min_decord``: the demo rows with TIMELINE.DECODER decord (the others use PyAV, the
  default);
- ``small``: regionvit_video_small, 8 frames at 224 (test scale 256), 3 crops, windows of 10 s every 10 s (the
  length of a Kinetics clip).

Columns: windows, seconds of compute (the job's loop: decoding, crops, forward), seconds of video per second,
windows per second, frames decoded for the frames sampled (each decoded once however many windows sample it;
with seeking, the frames between windows are decoded only from the keyframe before the next window), peak
memory of the main process and of the loading process, and the machine's 1-minute load average before and after
the row (the machine is shared: a load above the core count means the figures are low).
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

FPS, HEIGHT, WIDTH, GOP = 25, 256, 340, 50
DEMO = ["MODEL.ARCH", "regionvit_video_pico_w4", "MODEL.NUM_CLASSES", "8", "DATA.NUM_FRAMES", "4",
        "DATA.TEST_SCALE", "64", "DATA.TEST_CROP_SIZE", "64", "MODEL.TIME_EMBED_INIT", "normal",
        "MODEL.TEMPORAL_FC_INIT", "trunc_normal"]
SMALL = ["MODEL.ARCH", "regionvit_video_small", "MODEL.NUM_CLASSES", "400", "DATA.NUM_FRAMES", "8",
         "DATA.TEST_SCALE", "256", "DATA.TEST_CROP_SIZE", "224"]
ROWS = {  # name: (model options, window s, stride s, minutes of video, other options)
    "decode": (DEMO, 1.0, 0.5, None, []),
    "demo_1min": (DEMO, 1.0, 0.5, 1, []),
    "demo_1min_decord": (DEMO, 1.0, 0.5, 1, ["TIMELINE.DECODER", "decord"]),
    "demo": (DEMO, 1.0, 0.5, None, []),
    "demo_sparse": (DEMO, 1.0, 10.0, None, []),
    "demo_decord": (DEMO, 1.0, 0.5, None, ["TIMELINE.DECODER", "decord"]),
    "small": (SMALL, 10.0, 10.0, None, []),
}


def _frames(minutes: float, seed: int = 0):
    """The benchmark video, frame by frame: a scrolling texture, two shapes whose motion changes every 4-8 s."""
    rng = np.random.default_rng(seed)
    small = rng.integers(0, 255, (HEIGHT // 8 + 1, WIDTH // 8 + 1, 3), dtype=np.uint8)
    texture = np.kron(small, np.ones((8, 8, 1), np.uint8))[:HEIGHT, :WIDTH]  # blocky, compressible
    texture = np.concatenate([texture, texture], axis=1)
    total = int(minutes * 60 * FPS)
    change, vx, vy, x, y = 0, 0.0, 0.0, WIDTH / 2, HEIGHT / 2
    for t in range(total):
        if t >= change:
            change = t + int(rng.uniform(4, 8) * FPS)
            vx, vy = rng.uniform(-4, 4, 2)
        x, y = (x + vx) % (WIDTH - 40), (y + vy) % (HEIGHT - 40)
        off = (t * 2) % WIDTH
        frame = texture[:, off:off + WIDTH].copy()
        frame[int(y):int(y) + 40, int(x):int(x) + 40] = (230, 40, 40)
        frame[int(HEIGHT - y - 30):int(HEIGHT - y), int(WIDTH - x - 30):int(WIDTH - x)] = (40, 40, 230)
        yield frame


def make_video(cache: Path, minutes: float) -> Path:
    """The cached ``minutes``-long benchmark video (written once, atomically)."""
    from regionvit_video.data.video_writer import write_video

    path = cache / f"long_{WIDTH}x{HEIGHT}_{FPS}fps_gop{GOP}_{minutes:g}min.mp4"
    if not path.is_file():
        cache.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".partial.mp4")
        t = time.perf_counter()
        print(f"writing {path} ({minutes:g} min) ...", flush=True)
        write_video(tmp, _frames(minutes), fps=FPS, gop_size=GOP, options={"preset": "veryfast"})
        os.replace(tmp, path)
        print(f"  {path.stat().st_size / 2**20:.0f} MiB in {time.perf_counter() - t:.0f} s", flush=True)
    return path


def _checkpoint(cache: Path, model_opts: list[str]) -> Path:
    import torch

    from regionvit_video.config.load import load_config
    from regionvit_video.engine.build import build_model

    cfg = load_config(None, model_opts, check_paths=False)
    path = cache / f"random_{cfg.MODEL.ARCH}.pyth"
    if not path.is_file():
        torch.manual_seed(0)
        torch.save({"model_state": build_model(cfg).state_dict()}, path)
    return path


def run_row(name: str, cache: Path, minutes: float, threads: int, workers: int, out: Path) -> dict:
    """One row, in this process (the parent starts a fresh process per row)."""
    import torch

    from regionvit_video.config.load import load_config
    from regionvit_video.data import build_timeline_dataset
    from regionvit_video.engine.timeline import timeline

    torch.set_num_threads(threads)
    model_opts, window, stride, row_minutes, extra = ROWS[name]
    video = make_video(cache, row_minutes or minutes)
    opts = model_opts + extra + [
        "TIMELINE.ENABLE", "True", "TIMELINE.INPUT", str(video), "TIMELINE.WINDOW_SECONDS", str(window),
        "TIMELINE.STRIDE_SECONDS", str(stride), "TEST.NUM_SPATIAL_CROPS", "3", "DATA_LOADER.NUM_WORKERS", str(workers),
        "DEVICE", "cpu", "OUTPUT_DIR", str(out / name), "TEST.CHECKPOINT_FILE_PATH", str(_checkpoint(cache, model_opts))]
    cfg = load_config(None, opts)
    load = [os.getloadavg()[0]]
    if name == "decode":  # the data side alone: decode, crop, normalise; what the model would get
        t = time.perf_counter()
        windows, stats = 0, {}
        for item in build_timeline_dataset(cfg, video):
            windows += len(item["bounds"])
            covered = item["bounds"][-1, 1] / item["fps"]
            stats = item.get("decode_stats", stats)
        seconds = time.perf_counter() - t
        result = {"windows": windows, "compute_seconds": seconds, "video_seconds": covered,
                  "video_seconds_per_second": covered / seconds, "windows_per_second": windows / seconds,
                  "decoding": stats, "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}
    else:
        s = timeline(cfg)
        result = {k: s[k] for k in ("compute_seconds", "video_seconds", "video_seconds_per_second",
                                    "windows_per_second", "peak_rss_mb", "decoding")}
        result["windows"] = s["num_windows"]
    load.append(os.getloadavg()[0])
    result.update(row=name, minutes=row_minutes or minutes, window_s=window, stride_s=stride, load=load,
                  arch=cfg.MODEL.ARCH, frames=cfg.DATA.NUM_FRAMES, crop=cfg.DATA.TEST_CROP_SIZE,
                  decoder=cfg.TIMELINE.DECODER,
                  worker_peak_rss_mb=resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024)
    return result


def _commit() -> str:
    try:
        return subprocess.run(["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"], capture_output=True,
                              text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--rows", default=",".join(ROWS), help=f"comma-separated, of {', '.join(ROWS)}")
    p.add_argument("--minutes", type=float, default=10.0, help="length of the long video")
    p.add_argument("--threads", type=int, default=2, help="torch threads of the main process")
    p.add_argument("--workers", type=int, default=1, help="DATA_LOADER.NUM_WORKERS (0: decode in the main process)")
    p.add_argument("--cache", default="bench_output/timeline", help="where the video and outputs go")
    p.add_argument("--rounds", type=int, default=1, help="interleaved rounds (the table shows the median)")
    p.add_argument("--json", default="", help="also write the rows here")
    p.add_argument("--one", default="", help=argparse.SUPPRESS)  # internal: run one row, print its json
    args = p.parse_args(argv)
    cache = Path(args.cache)
    if args.one:
        print("ROW " + json.dumps(run_row(args.one, cache, args.minutes, args.threads, args.workers, cache / "out")),
              flush=True)
        return 0

    from regionvit_video.utils.machine import describe

    rows = [r for r in args.rows.split(",") if r]
    unknown = set(rows) - set(ROWS)
    if unknown:
        p.error(f"unknown rows {sorted(unknown)}; choose from {', '.join(ROWS)}")
    for minutes in {ROWS[r][3] or args.minutes for r in rows}:
        make_video(cache, minutes)  # before timing anything
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": str(args.threads)}
    runs: dict[str, list[dict]] = {name: [] for name in rows}
    for round_ in range(args.rounds):  # interleaved: the machine's speed drifts between rows
        for name in rows:
            print(f"round {round_ + 1}/{args.rounds}: row {name} ...", flush=True)
            proc = subprocess.run([sys.executable, __file__, "--one", name, "--cache", str(cache), "--minutes",
                                   str(args.minutes), "--threads", str(args.threads), "--workers", str(args.workers)],
                                  env=env, capture_output=True, text=True)
            line = [x for x in proc.stdout.splitlines() if x.startswith("ROW ")]
            if proc.returncode or not line:
                print(proc.stdout[-3000:], proc.stderr[-3000:], file=sys.stderr)
                runs[name].append({"row": name, "error": f"exit status {proc.returncode}"})
                continue
            runs[name].append(json.loads(line[-1][4:]))

    print(f"\ncommit {_commit()}; " + "; ".join(describe()))
    print(f"{args.minutes:g}-minute {WIDTH}x{HEIGHT} H.264 video at {FPS} fps, keyframe every {GOP // FPS} s; "
          f"{args.threads} torch threads, {args.workers} loading processes, CPU, float32, random weights; "
          f"median of {args.rounds} interleaved rounds (range in brackets)\n")
    print("| row | model | frames x crop | views | video | window / stride (s) | windows | compute s | "
          "video s per s | windows/s | frames decoded / sampled | peak RSS MB (main / loader) | load before / after |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    results = []
    for name in rows:
        good = [r for r in runs[name] if "error" not in r]
        if not good:
            print(f"| {name} | failed: {runs[name][-1]['error']} |")
            results.extend(runs[name])
            continue
        rates = sorted(r["video_seconds_per_second"] for r in good)
        r = sorted(good, key=lambda x: x["video_seconds_per_second"])[len(good) // 2]  # the median run
        results.extend(runs[name])
        d = r.get("decoding") or {}
        spread = f" [{rates[0]:.2f}-{rates[-1]:.2f}]" if len(rates) > 1 else ""
        model = "(no model)" if name == "decode" else r["arch"]
        print(f"| {name} | {model} | {r['frames']} x {r['crop']} | 3 | {r['minutes']:g} min ({r['decoder']}) | "
              f"{r['window_s']:g} / {r['stride_s']:g} | {r['windows']} | {r['compute_seconds']:.1f} | "
              f"**{r['video_seconds_per_second']:.2f}**{spread} | {r['windows_per_second']:.2f} | "
              f"{d.get('frames_decoded', '?')} / {d.get('frames_sampled', '?')}"
              + (f" ({d['pyav_frames_through_decoder']} through the decoder)" if "pyav_frames_through_decoder" in d
                 else "")
              + f" | {r['peak_rss_mb']:.0f} / {r['worker_peak_rss_mb']:.0f} | {r['load'][0]:.1f} / {r['load'][1]:.1f} |")
    if args.json:
        Path(args.json).write_text(json.dumps({"commit": _commit(), "machine": describe(), "rows": results}, indent=1))
    return 1 if any("error" in r for r in results) else 0


if __name__ == "__main__":
    sys.exit(main())
