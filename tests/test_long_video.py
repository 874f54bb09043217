"""Long-video data: window geometry in seconds, frames decoded once and kept within a bound, PyAV reads that
continue and seek, and live windows from a pipe (end, stall, realtime skipping)."""
import os
import threading
import time

import av
import numpy as np
import pytest
import torch

from regionvit_video.data import LiveWindows, StreamStalled, WindowFrames, open_video, plan_windows, read_frames
from regionvit_video.data.decoder import PyAVReader
from regionvit_video.data.sampling import clip_indices, sliding_windows
from regionvit_video.data.sliding_window import SlidingWindowClips
from regionvit_video.data.video_writer import write_video


def _moving(t, h=48, w=64, seed=0):
    rng = np.random.default_rng(seed)
    base = rng.integers(0, 255, (h, w, 3), dtype=np.uint8)
    return np.stack([np.roll(base, 3 * i, axis=1) for i in range(t)])


def _all_frames(path):
    with av.open(str(path)) as c:
        return np.stack([f.to_ndarray(format="rgb24") for f in c.decode(video=0)])


@pytest.fixture(scope="module")
def videos(tmp_path_factory):
    root = tmp_path_factory.mktemp("long")
    out = {}
    for name, codec in (("mp4", "libx264"), ("ts", "libx264"), ("webm", "libvpx-vp9")):
        out[name] = root / f"v.{name}"
        write_video(out[name], _moving(120), fps=15, codec=codec, gop_size=10)  # a keyframe every 10 frames
    return out


def test_plan_in_seconds_is_the_feature_windows_rule():
    plan = plan_windows(150, 15.0, window=1.0, stride=0.5, num_frames=4, window_unit="seconds",
                        stride_unit="seconds")
    assert (plan.window, plan.stride) == (15, 8)  # round(0.5 * 15) = 8 (round half to even)
    indices, bounds = sliding_windows(150, window=15, stride=8, num_frames=4)
    np.testing.assert_array_equal(plan.bounds, bounds)
    np.testing.assert_array_equal(plan.indices, indices)  # one uniform clip: the features' frames
    np.testing.assert_allclose(plan.seconds()[1], [8 / 15, 23 / 15])
    assert plan.describe()["windows_per_second"] == pytest.approx(15 / 8)
    # Several temporal clips, dense sampling: each window sampled as the test samples a video of its length.
    plan = plan_windows(150, 15.0, window=2.0, stride=1.0, num_frames=4, window_unit="seconds", stride_unit="seconds",
                        num_clips=2, sampling="dense", sampling_rate=2, target_fps=30)
    expected = np.concatenate([clip_indices("dense", 30, 4, train=False, clip_idx=k, num_clips=2, sampling_rate=2,
                                            fps=15.0, target_fps=30) for k in (0, 1)])
    np.testing.assert_array_equal(plan.indices[3], 45 + expected)
    # A video shorter than the window: one window over all of it.
    short = plan_windows(20, 15.0, window=4.0, stride=1.0, num_frames=4, window_unit="seconds", stride_unit="seconds")
    assert short.bounds.tolist() == [[0, 20]]
    with pytest.raises(ValueError, match="TIMELINE.WINDOW_SECONDS"):
        plan_windows(20, 0.0, window=1.0, stride=1, num_frames=4, window_unit="seconds",
                     window_key="TIMELINE.WINDOW_SECONDS")


@pytest.mark.parametrize("backend", ["decord", "pyav"])
def test_window_frames_decode_each_frame_once_within_a_bound(videos, backend):
    # 9-frame windows every 3 frames, 3 frames each (offsets 1, 4, 6): window k+1 samples window k's frame 4.
    plan = plan_windows(120, 15.0, window=9, stride=3, num_frames=3)
    assert len(np.unique(plan.indices)) < plan.indices.size
    source = WindowFrames(open_video(videos["mp4"], backend))
    chunk = 4
    got = []
    for c in range(0, plan.num_windows, chunk):
        idx = plan.indices[c:c + chunk]
        keep = None if c + chunk >= plan.num_windows else int(plan.indices[c + chunk].min())
        got.append(source.get(idx, keep_from=keep))
    source.close()
    np.testing.assert_array_equal(np.concatenate(got), _all_frames(videos["mp4"])[plan.indices.reshape(-1)])
    stats = source.stats
    assert stats.frames_sampled == plan.indices.size
    assert stats.frames_decoded == len(np.unique(plan.indices))  # each frame once, however many windows use it
    assert stats.max_frames_kept <= max(len(np.unique(plan.indices[c:c + chunk + 1]))
                                        for c in range(0, plan.num_windows, chunk))


@pytest.mark.parametrize("name", ["mp4", "ts", "webm"])
def test_pyav_reads_continue_and_seek_to_keyframes(videos, name):
    """Reads in order continue where the last stopped; with allow_seek, sparse reads jump to the keyframe before
    them (MPEG-TS seeks by dts: the reader notices it landed past the keyframe and seeks again)."""
    ref = _all_frames(videos[name])
    wanted = [[2, 5], [70, 71], [77], [93, 99], [118]]
    plain, seeking = PyAVReader(str(videos[name])), PyAVReader(str(videos[name]))
    seeking.allow_seek = True
    for idx in wanted:
        np.testing.assert_array_equal(plain.get_frames(idx), ref[idx])
        np.testing.assert_array_equal(seeking.get_frames(idx), ref[idx])
    assert plain.frames_decoded == 119  # one pass, not one per read
    assert seeking.frames_decoded < 60  # from the keyframe before each read
    np.testing.assert_array_equal(seeking.get_frames([3, 60]), ref[[3, 60]])  # backwards: from the start again
    plain.close()
    seeking.close()


def test_sliding_window_items_carry_the_plan_and_decode_stats(videos):
    ds = SlidingWindowClips([_record(videos["mp4"])], window=1.0, window_unit="seconds", stride=0.5,
                            stride_unit="seconds", num_frames=4, num_clips=2, chunk_windows=5, test_scale=32,
                            test_crop_size=32, num_crops=3)
    items = list(ds)
    assert [len(it["bounds"]) for it in items] == [5, 5, 4] and items[-1]["last"]
    assert items[0]["video"].shape == (5 * 6, 3, 4, 32, 32)  # 2 clips x 3 crops per window
    assert items[0]["window"] == 15 and items[0]["stride"] == 8 and items[0]["num_windows"] == 14
    assert items[-1]["decode_stats"]["frames_sampled"] == 14 * 8


def _record(path):
    from regionvit_video.data import VideoRecord

    return VideoRecord(str(path), -1)


def _pipe_writer(data: bytes, close: bool):
    r, w = os.pipe()

    def write():
        os.write(w, data)
        if close:
            os.close(w)

    threading.Thread(target=write, daemon=True).start()
    return r, w


def test_live_windows_from_a_pipe_are_the_files_windows(videos):
    data = videos["ts"].read_bytes()
    r, w = _pipe_writer(data, close=True)
    live = LiveWindows("-", window_seconds=1.0, stride_seconds=0.5, num_frames=4, num_clips=2, stall_seconds=20,
                       stdin_fd=r)
    windows = list(live)
    os.close(r)
    plan = plan_windows(120, 15.0, window=1.0, stride=0.5, num_frames=4, window_unit="seconds",
                        stride_unit="seconds", num_clips=2)
    assert live.end_reason == "end of stream" and live.stats()["frames_read"] == 120
    assert [(x.start_frame, x.end_frame) for x in windows] == [tuple(b) for b in plan.bounds.tolist()]
    np.testing.assert_allclose([(x.start_s, x.end_s) for x in windows], plan.seconds(), atol=1e-6)
    ref = read_frames(str(videos["ts"]), lambda n, f: plan.indices.reshape(-1), "pyav")[0]
    np.testing.assert_array_equal(np.concatenate([x.frames for x in windows]), ref)
    assert live.max_open_windows <= 2  # ceil(window / stride): the ring buffer's bound


def test_a_stalled_pipe_is_reported_within_the_timeout(videos):
    r, w = _pipe_writer(videos["ts"].read_bytes()[:6000], close=False)  # a few frames, then silence
    live = LiveWindows("-", window_seconds=0.5, stride_seconds=0.5, num_frames=2, stall_seconds=1.0, stdin_fd=r)
    t0 = time.monotonic()
    with pytest.raises(StreamStalled, match=r"stdin: no frame for 1\.\d s \(TIMELINE.STALL_SECONDS=1\)"):
        for _ in live:
            pass
    assert time.monotonic() - t0 < 6  # reported, not hung on
    assert live.end_reason == "stalled"
    os.close(w)  # the reading thread sees the end and finishes
    live._thread.join(5)
    os.close(r)


def test_realtime_skips_the_windows_a_slow_consumer_cannot_take(videos):
    r, w = _pipe_writer(videos["ts"].read_bytes(), close=True)
    live = LiveWindows("-", window_seconds=0.5, stride_seconds=0.25, num_frames=2, stall_seconds=20, realtime=True,
                       stdin_fd=r)
    got = []
    for win in live:
        got.append(win)
        time.sleep(0.3)  # a model slower than the source
    os.close(r)
    total = 1 + (120 - 8) // 4
    assert live.skipped > 0 and len(got) + live.skipped == total
    assert sum(x.skipped for x in got) == live.skipped
    assert got[-1].end_frame == 120 - (120 - 8) % 4  # the newest window is never dropped
    assert [x.index for x in got] == sorted(x.index for x in got)


def test_live_mode_and_source_kinds():
    from regionvit_video.data.stream import is_live_source, realtime_for

    assert all(is_live_source(s) for s in ("-", "/dev/video0", "rtsp://cam/stream", "http://host/x.ts", "udp://@:1234"))
    assert not any(is_live_source(s) for s in ("video.mp4", "/data/v.mkv", "c:/x.mp4"))
    assert realtime_for("rtsp://x", "auto") and not realtime_for("-", "auto") and realtime_for("-", "realtime")
    assert not realtime_for("/dev/video0", "every_window")
    torch.manual_seed(0)


def test_write_video_takes_frames_one_at_a_time(tmp_path):
    """A long benchmark video is written from a generator, never held in memory: the same file as from an array."""
    frames = _moving(12, h=31, w=45)  # odd sizes: padded per frame as the whole array is
    write_video(tmp_path / "a.mp4", frames, fps=10)
    write_video(tmp_path / "b.mp4", (f for f in frames), fps=10)
    assert (tmp_path / "a.mp4").read_bytes() == (tmp_path / "b.mp4").read_bytes()
    with pytest.raises(ValueError, match="no frames"):
        write_video(tmp_path / "c.mp4", iter([]))
