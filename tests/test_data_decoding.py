"""Decoding: decord vs PyAV pixel identity, codecs, fallbacks, length guard, time bound, flat memory; and the
video writer the test videos come from."""
import os
import re
import signal
import time

import av
import numpy as np
import psutil
import pytest
import torch

from hostile_corpus import BAD_CASES, DAMAGED_CASES, GOOD_CASES, make_hostile_videos
from regionvit_video.data import decoder as dec
from regionvit_video.data.decoder import DecodeError, DecodeTimeout, open_video, read_frames
from regionvit_video.data.loader import raise_hung_decode
from regionvit_video.data.video_writer import write_video

HERE = os.path.dirname(__file__)
REAL = os.path.join(HERE, "data", "realshort.mp4")
BIG = os.path.join(HERE, "data", "bigbuckbunny.mp4")


def _pyav_all_frames(path):
    with av.open(path) as c:
        return np.stack([f.to_ndarray(format="rgb24") for f in c.decode(video=0)])


def _moving(t, h, w, seed=0):
    rng = np.random.default_rng(seed)
    base = rng.integers(0, 255, (h, w, 3), dtype=np.uint8)
    return np.stack([np.roll(base, 3 * i, axis=1) for i in range(t)])


@pytest.fixture(scope="module")
def hostile(tmp_path_factory):
    return make_hostile_videos(tmp_path_factory.mktemp("hostile"))


def test_decord_frames_equal_pyav_frames_on_real_clip():
    indices = [35, 0, 7, 7, 12, 21, 30, 3]  # unsorted, with a repeat
    ref = _pyav_all_frames(REAL)
    assert ref.shape == (36, 240, 320, 3)
    with open_video(REAL, "decord") as r:
        assert r.backend == "decord" and r.num_frames == 36
        got = r.get_frames(indices)
    np.testing.assert_array_equal(got, ref[indices])
    with open_video(REAL, "pyav") as r:
        np.testing.assert_array_equal(r.get_frames(indices), ref[indices])


def test_real_720p_clip_decodes_selected_frames():
    frames, idx, reader = read_frames(BIG, lambda n, fps: [0, n // 2, n - 1], "decord")
    assert frames.shape == (3, 720, 1280, 3) and reader.num_frames == 132
    assert idx.tolist() == [0, 66, 131] and 24 < reader.fps < 26


@pytest.mark.parametrize("ext,codec", [(".mp4", "libx264"), (".webm", "libvpx-vp9"), (".avi", "mpeg4"),
                                       (".mkv", "libx264")])
def test_codecs_decode_identically_with_both_backends(tmp_path, ext, codec):
    path = str(tmp_path / f"clip{ext}")
    write_video(path, _moving(20, 48, 64), fps=25, codec=codec)
    ref = _pyav_all_frames(path)
    idx = [0, 5, 9, 19]
    for backend in ("decord", "pyav"):
        frames, used, reader = read_frames(path, lambda n, fps: idx, backend)
        assert reader.num_frames == 20, (backend, reader.num_frames)
        np.testing.assert_array_equal(frames, ref[idx])


def test_indices_past_the_end_are_clamped(tmp_path):
    path = str(tmp_path / "short.mp4")
    write_video(path, _moving(5, 48, 64), fps=25)
    ref = _pyav_all_frames(path)
    for backend in ("decord", "pyav"):
        frames, used, _ = read_frames(path, lambda n, fps: [0, 4, 9, 100], backend)
        assert used.tolist() == [0, 4, 4, 4]
        np.testing.assert_array_equal(frames, ref[[0, 4, 4, 4]])


class _OverReportingVR:
    """Stands in for decord.VideoReader on a file whose header claims 2 frames more than exist."""

    def __init__(self, frames):
        self.frames, self.calls = frames, []

    def get_batch(self, idx):
        self.calls.append(list(idx))
        if max(idx) >= len(self.frames):
            raise RuntimeError("[decord] Error seeking to frame: end of file")

        class _Arr:
            def __init__(s, a):
                s.a = a

            def asnumpy(s):
                return s.a

        return _Arr(self.frames[idx])


def test_decord_over_reported_length_pulls_tail_indices_back():
    real = _moving(10, 8, 8)
    reader = dec.DecordReader.__new__(dec.DecordReader)
    reader.path, reader.num_frames, reader.fps = "fake.mp4", 12, 25.0
    reader._vr = _OverReportingVR(real)
    got = reader.get_frames([0, 5, 11])
    np.testing.assert_array_equal(got, real[[0, 5, 9]])
    assert reader._vr.calls[-1] == [0, 5, 9]


def test_decord_failure_falls_back_to_pyav(hostile):
    # decord2 cannot convert 16-pixel-wide frames (DECORDArrayCopyFromTo size mismatch); PyAV can.
    frames, _, reader = read_frames(hostile["tiny_16x16"], lambda n, fps: [0, 11], "decord")
    assert reader.backend == "pyav" and frames.shape == (2, 16, 16, 3)
    with pytest.raises(DecodeError, match="decord get_batch failed"):
        read_frames(hostile["tiny_16x16"], lambda n, fps: [0, 11], "decord", fallback=False)


@pytest.mark.parametrize("size", [32, 48, 96])
def test_small_h264_frames_equal_pyav_whichever_backend_reads_them(tmp_path, size):
    """decord2 3.4.0's get_batch fails on some small widths, which ones depending on the CPU (48 on AVX2
    and AVX-512 CPUs, 32 and 96 on AVX-512 ones): read_frames gives PyAV's frames either way."""
    path = tmp_path / f"{size}x{size}.mp4"
    write_video(path, _moving(6, size, size), fps=25)
    frames, _, _ = read_frames(path, lambda n, fps: range(n), "decord")
    np.testing.assert_array_equal(frames, _pyav_all_frames(str(path)))


def test_decord_get_batch_failure_reads_with_pyav_and_warns_once_per_file(tmp_path, monkeypatch, caplog):
    import logging

    import decord

    def failing_get_batch(self, indices):  # what decord2 raises on such a width, on every call
        raise decord.DECORDError("[12:00:00] /project/src/runtime/ndarray.cc:171: Check failed: from_size == "
                                 "to_size (6144 vs. 3072) DECORDArrayCopyFromTo: The size must exactly match")

    monkeypatch.setattr(decord.VideoReader, "get_batch", failing_get_batch)
    monkeypatch.setattr(dec, "_FALLBACK_REPORTED", set())
    paths = [tmp_path / "a.mp4", tmp_path / "b.mp4"]
    for i, path in enumerate(paths):
        write_video(path, _moving(5, 32, 32, seed=i), fps=25)
    with caplog.at_level(logging.DEBUG, logger=dec.__name__):
        for _ in range(3):
            for path in paths:
                frames, _, reader = read_frames(path, lambda n, fps: [0, 2, 4], "decord")
                assert reader.backend == "pyav"
                np.testing.assert_array_equal(frames, _pyav_all_frames(str(path))[[0, 2, 4]])
    warned = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warned) == 2, warned  # once per file, not once per read
    for path, message in zip(paths, warned):
        assert message.startswith(str(path)) and "from_size == to_size" in message and "PyAV" in message
    assert sum("decoded with PyAV instead" in r.getMessage() for r in caplog.records) == 6  # later reads: debug


@pytest.mark.parametrize("backend", ["decord", "pyav"])
def test_hostile_corpus_good_cases_decode_and_bad_cases_fail_with_reason(hostile, backend):
    for case in GOOD_CASES + DAMAGED_CASES:
        frames, used, reader = read_frames(hostile[case], lambda n, fps: np.linspace(0, n - 1, 8).astype(int),
                                           backend, timeout=20)
        assert frames.shape[0] == 8 and frames.shape[-1] == 3 and frames.dtype == np.uint8, case
    for case in BAD_CASES:
        with pytest.raises(DecodeError) as info:
            read_frames(hostile[case], lambda n, fps: [0], backend, timeout=20)
        assert info.value.reason and str(hostile[case]) in str(info.value), case


def test_audio_only_reports_missing_video_stream(hostile):
    with pytest.raises(DecodeError, match="no video stream"):
        read_frames(hostile["audio_only"], lambda n, fps: [0], "decord")


def test_hanging_decode_becomes_a_timeout_failure():
    def hang(n, fps):  # stands in for a decoder that never returns
        time.sleep(30)

    before = signal.getsignal(signal.SIGALRM)
    t0 = time.monotonic()
    with pytest.raises(DecodeTimeout, match="DECODE_TIMEOUT"):
        read_frames(REAL, hang, "decord", timeout=0.3)
    assert time.monotonic() - t0 < 10
    # The timer is disarmed and the previous handler restored: nothing fires later.
    assert signal.getitimer(signal.ITIMER_REAL) == (0.0, 0.0)
    assert signal.getsignal(signal.SIGALRM) is before
    time.sleep(0.4)
    frames, _, _ = read_frames(REAL, lambda n, fps: [1], "decord", timeout=30)
    assert frames.shape == (1, 240, 320, 3)


def test_unknown_backend_is_a_clear_error():
    with pytest.raises(ValueError, match="DATA.DECODER"):
        open_video(REAL, "torchvision")


@pytest.mark.slow
def test_memory_stays_flat_over_2000_reads(tmp_path):
    # The real clip without its audio stream (decord probes audio on open, which doubles the cost).
    path = str(tmp_path / "realshort_video_only.mp4")
    with av.open(REAL) as src, av.open(path, "w") as dst:
        out = dst.add_stream_from_template(src.streams.video[0])
        for packet in src.demux(src.streams.video[0]):
            if packet.dts is not None:
                packet.stream = out
                dst.mux(packet)
    proc = psutil.Process()
    for _ in range(100):
        read_frames(path, lambda n, fps: [0], "decord", timeout=5)
    rss0 = proc.memory_info().rss
    for _ in range(2000):
        frames, _, _ = read_frames(path, lambda n, fps: [0], "decord", timeout=5)
    growth = proc.memory_info().rss - rss0
    assert frames.shape == (1, 240, 320, 3)
    # One leaked reader or frame buffer per read would be >= 2000 * 230 kB = 460 MB.
    assert growth < 30e6, f"RSS grew by {growth / 1e6:.1f} MB over 2000 reads"


class _StuckInNativeCode(torch.utils.data.Dataset):
    """Blocks SIGALRM before sleeping: the soft bound cannot fire, as in a native loop holding the GIL."""

    def __init__(self, path="stuck.mp4"):
        self.path = path

    def __len__(self):
        return 1

    def __getitem__(self, i):
        with dec.time_limit(0.3, self.path):
            signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGALRM})
            time.sleep(60)
        return i


def _worker_record(error):
    """The in-flight record file of the worker named in ``error`` ("... (pid N) ...")."""
    return dec._in_flight_record(int(re.search(r"\(pid(?:\(s\))? (\d+)\)", str(error)).group(1)))


def test_worker_stuck_in_native_code_is_ended_by_the_hard_bound_naming_the_video(monkeypatch, tmp_path):
    monkeypatch.setattr(dec, "HARD_TIMEOUT_GRACE", 0.5)  # 2 x 0.3 + 0.5 s instead of 2 x 0.3 + 10 s
    video, bad = str(tmp_path / "dir with space" / "stuck.mp4"), tmp_path / "bad_videos.txt"
    t0 = time.monotonic()
    loader = torch.utils.data.DataLoader(_StuckInNativeCode(video), num_workers=1)
    with pytest.raises(DecodeTimeout) as info:
        try:
            next(iter(loader))
        except RuntimeError as e:
            raise_hung_decode(e, bad)
            raise
    assert time.monotonic() - t0 < 30
    message = str(info.value)
    assert message.startswith(f"{video}: decode did not return within 1.1 s (hard bound of DATA.DECODE_TIMEOUT=0.3 s)")
    assert "DataLoader worker (pid" in message and message.endswith("was ended")
    assert info.value.path == video
    assert isinstance(info.value.__cause__, RuntimeError) and "exited unexpectedly" in str(info.value.__cause__)
    assert bad.read_text() == f"{video}\thard decode timeout\n"
    assert not os.path.exists(_worker_record(info.value))  # the dead worker's record is read and removed


def test_hard_bound_is_named_when_the_worker_dies_outside_next_and_without_bad_video_list(monkeypatch):
    # torch raises a dead worker's error from its SIGCHLD handler, wherever the main thread is
    # (here sleeping; in training, usually in the model step).
    monkeypatch.setattr(dec, "HARD_TIMEOUT_GRACE", 0.5)
    loader = torch.utils.data.DataLoader(_StuckInNativeCode(), num_workers=1)
    with pytest.raises(DecodeTimeout, match=r"^stuck\.mp4: decode did not return within 1\.1 s"):
        try:
            it = iter(loader)
            time.sleep(30)
            next(it)
        except RuntimeError as e:
            raise_hung_decode(e)
            raise


class _DiesWhileDecoding(torch.utils.data.Dataset):
    """A worker that dies (as on a segfault) inside a decode, long before its hard bound."""

    def __len__(self):
        return 1

    def __getitem__(self, i):
        with dec.time_limit(30, "crash.mp4"):
            os._exit(3)


def test_other_worker_deaths_are_not_called_a_decode_timeout(tmp_path):
    bad = tmp_path / "bad_videos.txt"
    loader = torch.utils.data.DataLoader(_DiesWhileDecoding(), num_workers=1)
    with pytest.raises(RuntimeError, match="exited unexpectedly") as info:
        try:
            next(iter(loader))
        except RuntimeError as e:
            raise_hung_decode(e, bad)
            raise
    assert not isinstance(info.value, DecodeError) and not bad.exists()
    assert not os.path.exists(_worker_record(info.value))
    # Not a dead-worker error, or a dead worker without a record: returns (the caller re-raises).
    assert dec.hard_bound_timeout(RuntimeError("CUDA out of memory")) is None
    assert dec.hard_bound_timeout(RuntimeError("DataLoader worker (pid(s) 1, 2) exited unexpectedly")) is None


@pytest.mark.parametrize("name,codec", [("a.mp4", "libx264"), ("b.webm", "libvpx-vp9"), ("c.avi", "mpeg4")])
def test_write_video_round_trip(tmp_path, name, codec):
    rng = np.random.default_rng(0)
    frames = np.repeat(rng.integers(0, 255, (5, 1, 1, 3), dtype=np.uint8), 32, axis=1).repeat(48, axis=2)
    path = tmp_path / name
    write_video(path, frames, fps=10, codec=codec)
    with av.open(str(path)) as c:
        decoded = np.stack([f.to_ndarray(format="rgb24") for f in c.decode(video=0)])
    assert decoded.shape == (5, 32, 48, 3)
    # flat colour frames survive lossy coding within a few levels
    assert np.abs(decoded.astype(int) - frames.astype(int)).mean() < 6


@pytest.mark.parametrize("backend", ["pyav", "decord"])
def test_a_dropped_reader_is_freed_at_once_without_the_garbage_collector(backend):
    """No reference cycle keeps a reader (and its codec's threads) alive until a garbage collection, which could
    then run in a forked DataLoader worker, where freeing an FFmpeg codec context waits forever."""
    import gc
    import weakref

    gc.disable()
    try:
        reader = open_video(REAL, backend, fallback=False)
        reader.allow_seek = True
        reader.get_frames([0, 3])
        reader.get_frames([reader.num_frames - 2, reader.num_frames - 1])  # continues, or seeks
        ref = weakref.ref(reader)
        del reader
        assert ref() is None
    finally:
        gc.enable()


def test_pyav_falls_back_to_decoding_from_the_start_when_a_seek_loses_its_place(tmp_path):
    """A seek that lands on frames the keyframe table does not number (here: a table emptied after it was built)
    ends seeking in this file and decodes from the first frame, counting: the same frames as a reader that never
    seeks. The frame generator holds its reader through a weak proxy, and the fallback must work through it."""
    path = tmp_path / "gop8.mp4"
    rng = np.random.default_rng(0)
    write_video(path, rng.integers(0, 255, (72, 32, 48, 3), dtype=np.uint8), fps=25, gop_size=8)
    plain = open_video(path, "pyav", fallback=False)
    reader = open_video(path, "pyav", fallback=False)
    reader.allow_seek = True
    table = reader._keyframe_table()
    target = reader.num_frames - 2
    assert target >= reader.SEEK_MIN_GAP and table[-1, 0] > 0, "the clip needs a keyframe to seek to"
    reader._pts_index = {}  # every decoded frame's pts is now unknown to the table
    idx = [target, target + 1]
    np.testing.assert_array_equal(reader.get_frames(idx), plain.get_frames(idx))
    assert len(reader._keyframes) == 0  # no more seeking in this file
    np.testing.assert_array_equal(reader.get_frames([1, 2]), plain.get_frames([1, 2]))
    plain.close(), reader.close()
