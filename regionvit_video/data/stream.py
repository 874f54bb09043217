"""Live input: windows of a camera, a network stream or a stream on stdin, as they complete.

:class:`LiveWindows` reads a source with PyAV in a background thread (``/dev/video0`` through v4l2, ``rtsp://``,
``http(s)://`` and the other URLs FFmpeg reads, ``-`` for a stream on stdin such as MPEG-TS) and hands out each
window as soon as its last frame has arrived: the same windows as a file's (window ``k`` starts at frame ``k *
stride``, :func:`regionvit_video.data.long_video.window_offsets` frames sampled in it), with the time of the
arrival of its last frame, from which the latency of its prediction is measured.

Memory is bounded: only the frames some open window samples are converted and kept, in a ring of the at most
``ceil(window / stride)`` windows open at once, and finished windows wait in a queue of one. What happens when
the consumer (the model) is slower than the source is the ``realtime`` choice: True (cameras and URLs) replaces
a finished window nobody took yet by the newer one (the skipped windows are counted), so predictions stay
current; False (stdin) makes the reader wait for the consumer, so every window is predicted.

A source that sends no frame for ``stall_seconds`` (while the reader is waiting on it, not on the consumer) is
reported as stalled: iteration raises :class:`StreamStalled` at once instead of waiting; the end of the stream
ends the iteration. The reading thread is a daemon: one stuck in a read of a stalled source does not keep the
process alive.
"""
from __future__ import annotations

import logging
import math
import os
import queue
import re
import sys
import threading
import time
from dataclasses import dataclass, field
from typing import Iterator

import numpy as np

from regionvit_video.data.decoder import _rgb
from regionvit_video.data.long_video import window_frames, window_offsets
from regionvit_video.data.sampling import stride_in_frames

logger = logging.getLogger(__name__)

_URL = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")
# FFmpeg probing for a live source: enough to find a video stream's parameters, not seconds of buffering
# (the defaults, 5 MB and 5 s, delay the first frame of a low-bitrate stream by seconds).
PROBE_OPTIONS = {"probesize": "65536", "analyzeduration": "0"}
LIVE_MODES: tuple[str, ...] = ("auto", "realtime", "every_window")  # TIMELINE.LIVE_MODE


def is_live_source(source: str) -> bool:
    """Whether ``source`` is read as a stream: ``-`` (stdin), a camera device (``/dev/video*``) or a URL."""
    source = str(source)
    return source == "-" or source.startswith("/dev/video") or bool(_URL.match(source))


def realtime_for(source: str, live_mode: str) -> bool:
    """Whether windows the consumer could not take in time are skipped (TIMELINE.LIVE_MODE; "auto": for cameras
    and URLs, not for stdin, whose writer can wait)."""
    if live_mode not in LIVE_MODES:
        raise ValueError(f"TIMELINE.LIVE_MODE must be one of {LIVE_MODES}, got {live_mode!r}")
    return live_mode == "realtime" or (live_mode == "auto" and str(source) != "-")


def source_name(source: str) -> str:
    """How a source is named in messages (``stdin`` for ``-``)."""
    return "stdin" if source == "-" else str(source)


class StreamStalled(RuntimeError):
    """A live source sent no frame for longer than the stall timeout."""


class StreamError(RuntimeError):
    """A live source could not be opened or decoded."""


@dataclass
class StreamWindow:
    """One finished window of a stream.

    ``frames``: ``(N*T, H, W, 3)`` uint8, the frames :func:`window_offsets` samples (clip-major);
    ``start_s`` / ``end_s``: stream time of its first frame and of the end of its last frame, from the first
    frame of the stream (timestamps; frame / fps where a frame has none); ``ready_at``: ``time.monotonic()`` when
    its last frame was decoded; ``skipped``: windows dropped since the previous one handed out (``realtime``).
    """

    index: int
    start_frame: int
    end_frame: int
    start_s: float
    end_s: float
    frames: np.ndarray
    ready_at: float
    skipped: int = 0


@dataclass
class _Open:
    """A window being filled: its frames so far (None until sampled) and its start time."""

    index: int
    start: int
    start_s: float
    frames: list = field(default_factory=list)


class _FdReader:
    """The file object PyAV reads a pipe through: ``os.read`` on a descriptor, no buffer and no lock (a thread
    blocked in it does not hold a lock the interpreter needs at exit, as ``sys.stdin.buffer`` would)."""

    def __init__(self, fd: int):
        self.fd = fd

    def read(self, n: int = -1) -> bytes:
        return os.read(self.fd, n if n and n > 0 else 1 << 16)


class LiveWindows:
    """The windows of a live source, in order, as they complete (see the module docstring).

    Args:
        source: ``-`` (stdin), ``/dev/videoN`` or a URL.
        window_seconds: window length (converted to frames at the stream's frame rate, at least 1).
        stride_seconds: window stride (same).
        num_frames: frames per clip (DATA.NUM_FRAMES).
        num_clips: temporal clips per window (TEST.NUM_ENSEMBLE_VIEWS).
        sampling, sampling_rate, target_fps: how a clip samples its window (DATA.SAMPLING, ...).
        stall_seconds: report a stall after this long without a frame (also bounds opening the source).
        realtime: drop windows the consumer did not take in time (see the module docstring).
        stdin_fd: the descriptor ``-`` reads (tests pass a pipe).

    After iteration: ``stats`` (frames read, windows, skipped, fps, end reason) and ``end_reason``
    ("end of stream", "stalled", "error: ..."). Iteration raises :class:`StreamStalled` or :class:`StreamError`.
    """

    def __init__(self, source: str, *, window_seconds: float, stride_seconds: float, num_frames: int,
                 num_clips: int = 1, sampling: str = "uniform", sampling_rate: int = 8, target_fps: float = 30.0,
                 stall_seconds: float = 10.0, realtime: bool = False, stdin_fd: int | None = None):
        self.source = str(source)
        self.window_seconds, self.stride_seconds = float(window_seconds), float(stride_seconds)
        self.num_frames, self.num_clips = int(num_frames), int(num_clips)
        self.sampling, self.sampling_rate, self.target_fps = sampling, sampling_rate, target_fps
        self.stall_seconds, self.realtime = float(stall_seconds), bool(realtime)
        self.stdin_fd = stdin_fd
        self.fps = 0.0
        self.window = self.stride = 0  # frames, once the frame rate is known
        self.frames_read = 0
        self.windows_done = 0
        self.skipped = 0
        self.max_open_windows = 0  # the most windows filled at once (the ring's size: ceil(window / stride))
        self.end_reason = ""
        self._queue: queue.Queue = queue.Queue(maxsize=1)
        self._activity = 0.0  # monotonic time of the last sign of life of the source
        self._waiting_on_consumer = False
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()

    # -- the reading thread ------------------------------------------------------------------- #
    def _open(self):
        import av

        name, kwargs = self.source, {"options": dict(PROBE_OPTIONS)}
        if self.source == "-":
            fd = self.stdin_fd if self.stdin_fd is not None else sys.stdin.fileno()
            name = _FdReader(fd)
        elif self.source.startswith("/dev/video"):
            kwargs["format"] = "v4l2"
        else:
            if self.source.startswith("rtsp://"):
                kwargs["options"]["rtsp_transport"] = "tcp"
            kwargs["timeout"] = (self.stall_seconds, self.stall_seconds)  # network reads end instead of hanging
        container = av.open(name, mode="r", **kwargs)
        if not container.streams.video:
            container.close()
            raise StreamError(f"{source_name(self.source)}: no video stream")
        return container

    def _frame_rate(self, stream) -> float:
        for rate in (stream.average_rate, stream.guessed_rate, getattr(stream.codec_context, "framerate", None),
                     stream.base_rate):
            if rate and float(rate) > 0:
                return float(rate)
        return 0.0

    def _read(self) -> None:
        container = None
        try:
            container = self._open()
            stream = container.streams.video[0]
            self._activity = time.monotonic()
            self._decode(container, stream)
            self._deliver(("end", "end of stream"))
        except Exception as e:  # noqa: BLE001  (reported by the consumer)
            if not self._stop.is_set():
                self._deliver(("error", f"{type(e).__name__}: {e}" if not isinstance(e, StreamError) else str(e)))
        finally:
            if container is not None:
                try:
                    container.close()
                except Exception:  # noqa: BLE001
                    pass

    def _decode(self, container, stream) -> None:
        t0 = None
        offsets = rel_slots = None
        ring: dict[int, _Open] = {}
        for n, frame in enumerate(container.decode(stream)):
            if self._stop.is_set():
                return
            now = time.monotonic()
            self._activity = now
            if n == 0:
                self.fps = self._frame_rate(stream)
                if self.fps <= 0:
                    raise StreamError(f"{source_name(self.source)}: the stream's frame rate is unknown")
                self.window = window_frames(self.window_seconds, "seconds", self.fps, key="TIMELINE.WINDOW_SECONDS")
                self.stride = stride_in_frames(self.stride_seconds, "seconds", self.fps, key="TIMELINE.STRIDE_SECONDS")
                offsets = window_offsets(self.window, self.num_frames, num_clips=self.num_clips,
                                         sampling=self.sampling, sampling_rate=self.sampling_rate, fps=self.fps,
                                         target_fps=self.target_fps)
                rel_slots = {}
                for slot, rel in enumerate(offsets.tolist()):
                    rel_slots.setdefault(rel, []).append(slot)
            seconds = float(frame.pts * frame.time_base) if frame.pts is not None and frame.time_base else n / self.fps
            t0 = seconds if t0 is None else t0
            t = seconds - t0
            self.frames_read = n + 1
            if n % self.stride == 0:  # a window starts here
                k = n // self.stride
                ring[k] = _Open(k, n, t, [None] * len(offsets))
                self.max_open_windows = max(self.max_open_windows, len(ring))
            rgb = None
            for win in ring.values():
                slots = rel_slots.get(n - win.start)
                if slots:
                    rgb = _rgb(frame) if rgb is None else rgb
                    for s in slots:
                        win.frames[s] = rgb
            done = [k for k, win in ring.items() if n - win.start == self.window - 1]
            for k in done:
                win = ring.pop(k)
                self._deliver(("window", StreamWindow(win.index, win.start, n + 1, win.start_s, t + 1.0 / self.fps,
                                                       np.stack(win.frames), now)))

    def _deliver(self, item) -> None:
        """Hand ``item`` to the consumer: realtime windows replace an untaken one; otherwise wait for room."""
        if self.realtime and item[0] == "window":
            # Only this thread puts: after taking the untaken window out, there is room.
            try:
                old = self._queue.get_nowait()
                self.skipped += 1
                item[1].skipped += old[1].skipped + 1
            except queue.Empty:
                pass
            self._queue.put_nowait(item)
            return
        self._waiting_on_consumer = True
        try:
            while not self._stop.is_set():
                try:
                    self._queue.put(item, timeout=0.1)
                    break
                except queue.Full:
                    continue
        finally:
            self._waiting_on_consumer = False
            self._activity = time.monotonic()

    # -- the consumer --------------------------------------------------------------------------- #
    def __iter__(self) -> Iterator[StreamWindow]:
        if self._thread is not None:
            raise RuntimeError("a LiveWindows is iterated once")
        self._activity = time.monotonic()
        self._thread = threading.Thread(target=self._read, name="timeline-stream", daemon=True)
        self._thread.start()
        try:
            while True:
                try:
                    kind, value = self._queue.get(timeout=0.05)
                except queue.Empty:
                    self._check_stall()
                    continue
                if kind == "end":
                    self.end_reason = value
                    return
                if kind == "error":
                    self.end_reason = f"error: {value}"
                    raise StreamError(f"{source_name(self.source)}: {value}")
                self.windows_done += 1
                yield value
        finally:
            self._stop.set()

    def _check_stall(self) -> None:
        idle = time.monotonic() - self._activity
        if self._waiting_on_consumer or idle <= self.stall_seconds:
            return
        self.end_reason = "stalled"
        what = (f"after {self.frames_read} frames" if self.frames_read else
                "before its first frame" + (" (is a stream piped in?)" if self.source == "-" else ""))
        raise StreamStalled(f"{source_name(self.source)}: no frame for {idle:.1f} s (TIMELINE.STALL_SECONDS="
                            f"{self.stall_seconds:g}), {what}")

    def stats(self) -> dict:
        """Frames read, windows handed out and skipped, the frame rate and window geometry, the end reason."""
        return {"frames_read": self.frames_read, "windows": self.windows_done, "skipped_windows": self.skipped,
                "max_open_windows": self.max_open_windows,
                "fps": self.fps, "window_frames": self.window, "stride_frames": self.stride,
                "realtime": self.realtime, "end": self.end_reason,
                "stream_seconds": self.frames_read / self.fps if self.fps > 0 else math.nan}
