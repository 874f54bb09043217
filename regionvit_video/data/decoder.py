"""Video decoding: decord (default) and PyAV readers behind one interface, with a time bound.

:func:`open_video` / :func:`read_frames` decode only the frames a clip needs (``get_batch`` on sorted,
de-duplicated, clamped indices; the frames come back in the order asked for) and close the reader right
after, which keeps memory flat. decord's over-reported frame counts are guarded (decord issues #91, #195),
a file decord cannot open or decode is read with PyAV (:func:`decode_frames`; a warning once per file
and process, since decord2 fails on every read of some small frame widths), and every item's decode is
bounded by ``DATA.DECODE_TIMEOUT`` (:func:`time_limit`; a DataLoader worker stuck in native code, as in
decord #373, is ended and its video named: :func:`hard_bound_timeout`). The why and how of each guard:
datasets/README.md, "Decoding".
"""
from __future__ import annotations

import contextlib
import faulthandler
import json
import logging
import os
import re
import signal
import stat
import sys
import tempfile
import threading
import time
import weakref
from typing import Iterator, Literal, Sequence

import numpy as np

logger = logging.getLogger(__name__)

Backend = Literal["decord", "pyav"]
_MAX_TAIL_BACKOFF = 4
# Hard bound in DataLoader workers: HARD_TIMEOUT_FACTOR * timeout + HARD_TIMEOUT_GRACE seconds.
HARD_TIMEOUT_FACTOR = 2.0
HARD_TIMEOUT_GRACE = 10.0
# In-flight records older than this process are left-overs of another run (see hard_bound_timeout).
_STARTED = time.monotonic()
# The dead worker(s) in torch's "DataLoader worker (pid 12) exited unexpectedly with exit code 1"
# (SIGCHLD handler) and "DataLoader worker (pid(s) 12, 13) exited unexpectedly" (queue check).
_DEAD_WORKERS = re.compile(r"DataLoader worker \(pid(?:\(s\))? ([\d, ]+)\) exited unexpectedly")
# Files this process has already reported falling back to PyAV for (see _log_fallback).
_FALLBACK_REPORTED: set[str] = set()


class DecodeError(RuntimeError):
    """A video could not be decoded. ``path`` and ``reason`` say which and why."""

    def __init__(self, path: str, reason: str):
        super().__init__(f"{path}: {reason}")
        self.path = str(path)
        self.reason = reason


class DecodeTimeout(DecodeError):
    """A decode took longer than DATA.DECODE_TIMEOUT."""


# ---------------------------------------------------------------------------------------------- #
# Time bound
# ---------------------------------------------------------------------------------------------- #
def _in_dataloader_worker() -> bool:
    try:
        import torch.utils.data

        return torch.utils.data.get_worker_info() is not None
    except Exception:  # pragma: no cover - torch always importable here
        return False


@contextlib.contextmanager
def time_limit(seconds: float, path: str = "") -> Iterator[None]:
    """Raise :class:`DecodeTimeout` if the body runs longer than ``seconds`` (0: no bound).

    Two levels (datasets/README.md, "Decoding"): a ``SIGALRM`` timer in the decoding process's main
    thread raises :class:`DecodeTimeout` in anything that returns to the interpreter; inside a
    DataLoader worker, ``faulthandler.dump_traceback_later(2 * seconds + 10, exit=True)`` also ends a
    worker stuck in native code (its stack printed), after an in-flight record naming the video is
    written for :func:`hard_bound_timeout`. Outside the main thread (where signals cannot be used)
    only the hard bound of worker processes applies.
    """
    if not seconds or seconds <= 0:
        yield
        return
    use_signal = threading.current_thread() is threading.main_thread() and hasattr(signal, "setitimer")
    hard = _in_dataloader_worker()
    previous = None
    fired = []
    message = f"decode took longer than DATA.DECODE_TIMEOUT={seconds:g} s"
    if use_signal:

        def _on_alarm(signum, frame):
            fired.append(True)
            raise DecodeTimeout(path, message)

        previous = signal.signal(signal.SIGALRM, _on_alarm)
        signal.setitimer(signal.ITIMER_REAL, seconds)
    record = None
    if hard:
        bound = HARD_TIMEOUT_FACTOR * seconds + HARD_TIMEOUT_GRACE
        record = _write_in_flight_record(path, seconds, bound)
        faulthandler.dump_traceback_later(bound, repeat=False, file=sys.stderr, exit=True)
    try:
        yield
    finally:
        if use_signal:
            signal.setitimer(signal.ITIMER_REAL, 0)
            signal.signal(signal.SIGALRM, previous if previous is not None else signal.SIG_DFL)
        if hard:
            faulthandler.cancel_dump_traceback_later()
            if record is not None:
                with contextlib.suppress(OSError):
                    os.unlink(record)
    # The alarm fired where its exception was swallowed (e.g. inside a library's __del__):
    # the item still counts as timed out.
    if fired:
        raise DecodeTimeout(path, message)


def _in_flight_record(pid: int) -> str:
    """Where DataLoader worker ``pid`` records the decode it is in: a per-user 0700 folder, one file per worker."""
    return os.path.join(tempfile.gettempdir(), f"regionvit_video-{os.getuid()}", f"decoding-{pid}.json")


def _write_in_flight_record(path: str, timeout: float, bound: float) -> str | None:
    """Record this worker's decode of ``path``; returns the file (None: not recorded, the bound still applies)."""
    record = _in_flight_record(os.getpid())
    folder = os.path.dirname(record)
    try:
        os.makedirs(folder, mode=0o700, exist_ok=True)
        st = os.lstat(folder)
        if not stat.S_ISDIR(st.st_mode) or st.st_uid != os.getuid():
            raise OSError(f"{folder} is not a directory of this user")
        text = json.dumps({"path": path, "timeout": timeout, "bound": bound, "armed": time.monotonic()})
        fd = os.open(record, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
        try:
            os.write(fd, text.encode("utf-8"))
        finally:
            os.close(fd)
    except OSError as e:
        logger.debug("%s: no in-flight record (%s)", path, e)
        return None
    return record


def hard_bound_timeout(error: BaseException) -> DecodeTimeout | None:
    """The :class:`DecodeTimeout` naming the video when ``error`` reports a worker the hard bound ended.

    ``error`` is torch's "DataLoader worker (pid N) exited unexpectedly" RuntimeError, raised in
    the main process. The in-flight records of the dead workers it names are read and removed;
    one written by this run whose bound had passed gives the timeout. Anything else: None.
    """
    found = _DEAD_WORKERS.search(str(error))
    if not isinstance(error, RuntimeError) or isinstance(error, DecodeError) or found is None:
        return None
    for pid in found.group(1).replace(" ", "").split(","):
        record = _in_flight_record(int(pid))
        try:
            with open(record, encoding="utf-8") as f:
                r = json.load(f)
            os.unlink(record)
            path, timeout, bound, armed = str(r["path"]), float(r["timeout"]), float(r["bound"]), float(r["armed"])
        except (OSError, ValueError, KeyError, TypeError):
            continue
        # time.monotonic() is one system-wide clock on Linux: comparable across processes.
        if armed >= _STARTED and time.monotonic() >= armed + bound:
            return DecodeTimeout(path, f"decode did not return within {bound:g} s (hard bound of "
                                       f"DATA.DECODE_TIMEOUT={timeout:g} s); the DataLoader worker (pid {pid}) "
                                       "was ended")
    return None


# ---------------------------------------------------------------------------------------------- #
# Readers
# ---------------------------------------------------------------------------------------------- #
def _unique_sorted(indices: Sequence[int], num_frames: int) -> tuple[np.ndarray, np.ndarray]:
    """Clamp to [0, num_frames-1], sort and de-duplicate; also return where each input lands."""
    idx = np.clip(np.asarray(indices, dtype=np.int64), 0, max(num_frames - 1, 0))
    unique, inverse = np.unique(idx, return_inverse=True)
    return unique, inverse


def _in_order(frames: np.ndarray, inverse: np.ndarray) -> np.ndarray:
    """The decoded (sorted, unique) frames in the order asked for; no copy when that is their order
    (increasing indices, as every training clip asks)."""
    if len(inverse) == len(frames) and bool((inverse == np.arange(len(inverse))).all()):
        return frames
    return frames[inverse]


class VideoReader:
    """Common interface: ``num_frames``, ``fps``, ``get_frames(indices)``, ``close()``."""

    backend: str = ""
    path: str
    num_frames: int
    fps: float

    def get_frames(self, indices: Sequence[int]) -> np.ndarray:
        """Frames at ``indices`` (clamped to the video), (N, H, W, 3) uint8 RGB, in the given order."""
        raise NotImplementedError

    def close(self) -> None:
        raise NotImplementedError

    def __enter__(self) -> "VideoReader":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class DecordReader(VideoReader):
    """decord ``VideoReader`` with the over-reported-length guard."""

    backend = "decord"

    def __init__(self, path: str, num_threads: int = 1):
        import decord

        self.path = str(path)
        if not os.path.isfile(self.path):
            raise DecodeError(self.path, "file not found")
        try:
            self._vr = decord.VideoReader(self.path, ctx=decord.cpu(0), num_threads=num_threads)
        except DecodeTimeout:
            raise
        except Exception as e:  # decord raises DECORDError / RuntimeError with C++ messages
            raise DecodeError(self.path, f"decord cannot open: {_short(e)}") from None
        self.num_frames = len(self._vr)
        if self.num_frames <= 0:
            self.close()
            raise DecodeError(self.path, "decord reports no frames")
        self.fps = float(self._vr.get_avg_fps() or 0.0)

    def get_frames(self, indices: Sequence[int]) -> np.ndarray:
        if self._vr is None:
            raise DecodeError(self.path, "reader is closed")
        unique, inverse = _unique_sorted(indices, self.num_frames)
        for backoff in range(_MAX_TAIL_BACKOFF + 1):
            try:
                frames = self._vr.get_batch(unique.tolist()).asnumpy()
                break
            except DecodeTimeout:
                raise
            except Exception as e:
                # Over-reported frame count: the last frames do not exist. Pull the tail back.
                last_ok = self.num_frames - 2 - backoff
                if backoff == _MAX_TAIL_BACKOFF or last_ok < 0 or unique[-1] <= last_ok:
                    raise DecodeError(self.path, f"decord get_batch failed: {_short(e)}") from None
                logger.debug("%s: get_batch failed near the end (%s); clamping to %d", self.path, e, last_ok)
                unique = np.minimum(unique, last_ok)
        else:  # pragma: no cover
            raise DecodeError(self.path, "decord get_batch failed")
        if frames.ndim != 4 or frames.shape[0] != len(unique):
            raise DecodeError(self.path, f"decord returned frames of shape {frames.shape}")
        return _in_order(frames, inverse)

    def close(self) -> None:
        # Dropping the only reference frees the native reader at once (VideoReader.__del__).
        self._vr = None


class PyAVReader(VideoReader):
    """PyAV decoder: decodes in order up to the last index needed and keeps the wanted frames.

    Frame ``i`` is the ``i``-th frame in presentation order, as in decord, so both give the
    same pixels on the same file. If the stream holds fewer frames than its header says, missing
    indices repeat the last decoded frame.

    Reads in increasing order continue where the previous one stopped (a long video read window by
    window decodes each frame once). With ``allow_seek`` set (long-video inference sets it), a read
    that starts past a keyframe ahead of the current position seeks to that keyframe instead of
    decoding up to it: the keyframes are found by one demuxing pass over the file (no decoding) the
    first time a seek could help, and frames after a seek are numbered by their timestamps; a frame
    whose timestamp is not in that table makes the read start again from the beginning, counting.
    ``frames_decoded`` counts the frames the decoder produced.
    """

    backend = "pyav"
    # The keyframe table is built (one demuxing pass) the first time a read starts this many frames ahead of
    # the current position; once built, every read that a keyframe separates from the position seeks.
    SEEK_MIN_GAP = 48

    def __init__(self, path: str, num_threads: int = 1):
        import av

        self.path = str(path)
        self.allow_seek = False
        self.frames_decoded = 0
        self._decoded: Iterator | None = None  # (index, frame) from the current position
        self._position = 0  # index of the next frame self._decoded yields
        self._last_frame = None  # the last frame decoded (repeated past the real end)
        self._keyframes: np.ndarray | None = None  # (K, 3) index, pts, dts; empty: cannot seek
        self._pts_index: dict[int, int] = {}
        if not os.path.isfile(self.path):
            raise DecodeError(self.path, "file not found")
        try:
            self._container = av.open(self.path)
        except DecodeTimeout:
            raise
        except Exception as e:
            raise DecodeError(self.path, f"PyAV cannot open: {_short(e)}") from None
        if not self._container.streams.video:
            self.close()
            raise DecodeError(self.path, "no video stream")
        self._stream = self._container.streams.video[0]
        if num_threads > 1:
            self._stream.thread_type = "AUTO"
            self._stream.codec_context.thread_count = num_threads
        rate = self._stream.average_rate or self._stream.guessed_rate
        self.fps = float(rate) if rate else 0.0
        self.num_frames = int(self._stream.frames or 0)
        if self.num_frames <= 0:
            self.num_frames = self._count_packets()
        if self.num_frames <= 0:
            self.close()
            raise DecodeError(self.path, "no frames in the video stream")

    def _count_packets(self) -> int:
        """Frame count for containers that do not store it (mkv, webm): demux without decoding."""
        try:
            n = sum(1 for p in self._container.demux(self._stream) if p.size)
        except DecodeTimeout:
            raise
        except Exception as e:
            raise DecodeError(self.path, f"PyAV cannot demux: {_short(e)}") from None
        self._container.seek(0)
        return n

    # -- positioning ------------------------------------------------------------------------- #
    def _from_start(self) -> None:
        """Decode from the first frame, numbering frames by counting (the reference numbering)."""
        self._container.seek(0)
        self._decoded, self._position = PyAVReader._counted(weakref.proxy(self)), 0

    # The frame generators are stored on the reader and get it as a weak proxy: a strong ``self`` in a stored
    # generator is a reference cycle, so a reader dropped without close() would wait for the garbage collector,
    # which may then run in a forked DataLoader worker where the codec's threads do not exist (a hang; see
    # data.loader.DataLoader). Without the cycle the container closes as soon as the reader is dropped.
    def _counted(self) -> Iterator:
        for i, frame in enumerate(self._container.decode(self._stream)):
            yield i, frame

    def _keyframe_table(self) -> np.ndarray:
        """(index, pts, dts) rows of the keyframes, by presentation index (one demuxing pass, no decoding);
        empty when timestamps cannot number the frames (missing or repeated pts)."""
        if self._keyframes is None:
            pts, keys = [], []
            try:
                self._container.seek(0)
                for packet in self._container.demux(self._stream):
                    if packet.size:
                        pts.append(packet.pts)
                        if packet.is_keyframe:
                            keys.append((packet.pts, packet.dts if packet.dts is not None else packet.pts))
            except DecodeTimeout:
                raise
            except Exception as e:  # noqa: BLE001  (no table: reads continue without seeking)
                logger.debug("%s: no keyframe table (%s)", self.path, e)
                pts = [None]
            self._decoded = None  # the demuxing moved the container: the next read repositions
            if any(p is None for p in pts) or len(set(pts)) != len(pts) or not keys:
                self._keyframes = np.zeros((0, 3), np.int64)
            else:
                self._pts_index = {p: i for i, p in enumerate(sorted(pts))}
                self._keyframes = np.array(sorted((self._pts_index[p], p, d) for p, d in keys), dtype=np.int64)
        return self._keyframes

    def _keyframe_before(self, target: int) -> tuple[int, int, int] | None:
        """(index, pts, dts) of the last keyframe at or before frame ``target``; None without a table."""
        table = self._keyframe_table()
        k = int(np.searchsorted(table[:, 0], target, side="right")) - 1
        return tuple(int(x) for x in table[k]) if k >= 0 else None

    def _seek_to(self, index: int, pts: int, dts: int) -> None:
        self._decoded, self._position = PyAVReader._timestamped(weakref.proxy(self), index, pts, dts), index

    def _timestamped(self, start: int, pts: int, dts: int) -> Iterator:
        """Frames from keyframe ``start`` on, numbered by their pts. The seek goes to the keyframe's pts,
        then, if that lands past it (MPEG-TS seeks by dts), to its dts; frames before it are skipped. A
        frame whose pts is not in the table, or two seeks past the keyframe, restart from the first frame,
        counting (and end seeking in this file)."""
        for ts in (pts, dts):
            self._container.seek(ts, stream=self._stream, backward=True, any_frame=False)
            reached = lost = False
            for frame in self._container.decode(self._stream):
                i = self._pts_index.get(frame.pts) if frame.pts is not None else None
                if i is None:
                    logger.debug("%s: frame pts %s not in the keyframe table", self.path, frame.pts)
                    lost = True
                    break
                if i < start:
                    self.frames_decoded += 1
                    continue
                if not reached and i > start:  # the seek went past the keyframe
                    break
                reached = True
                yield i, frame
            if lost:
                break
            if reached:
                return  # the end of the stream
            # past the keyframe, or at the end without reaching it: try the next timestamp
        logger.debug("%s: seeking does not work on this file; decoding from the start", self.path)
        self._keyframes = np.zeros((0, 3), np.int64)
        self._container.seek(0)
        yield from PyAVReader._counted(self)  # self is the weak proxy here: no type(self)

    def _reposition(self, target: int) -> None:
        """Put the decoder where frame ``target`` comes next, or before it, at the least decoding."""
        ahead = self._decoded is not None and self._position <= target
        gap = target - (self._position if ahead else 0)
        if self.allow_seek and gap > 0 and (self._keyframes is not None or gap >= self.SEEK_MIN_GAP):
            key = self._keyframe_before(target)  # building the table moves the container: self._decoded reset
            if key is not None and key[0] > 0 and (self._decoded is None or key[0] > self._position):
                self._seek_to(*key)
                return
        if self._decoded is None or self._position > target:
            self._from_start()

    def get_frames(self, indices: Sequence[int]) -> np.ndarray:
        if self._container is None:
            raise DecodeError(self.path, "reader is closed")
        unique, inverse = _unique_sorted(indices, self.num_frames)
        wanted = set(unique.tolist())
        last = int(unique[-1])
        got: dict[int, np.ndarray] = {}
        try:
            self._reposition(int(unique[0]))
            for i, frame in self._decoded:
                self.frames_decoded += 1
                self._position, self._last_frame = i + 1, frame
                if i in wanted:
                    got[i] = _rgb(frame)
                if i >= last:
                    break
            else:
                self._decoded = None  # the end of the stream: a later read starts again
        except DecodeTimeout:
            self._decoded = None
            raise
        except Exception as e:
            self._decoded = None
            if not got:
                raise DecodeError(self.path, f"PyAV decode failed: {_short(e)}") from None
            logger.debug("%s: PyAV decode stopped early: %s", self.path, e)
        if not got:
            if self._last_frame is None:
                raise DecodeError(self.path, "PyAV decoded no frames")
            got[int(unique[0])] = _rgb(self._last_frame)
        # Indices past the real end (over-reported length) repeat the last decoded frame.
        out, last_frame = [], None
        for i in unique.tolist():
            if i in got:
                last_frame = got[i]
            elif last_frame is None:
                last_frame = got[min(got)]
            out.append(last_frame)
        return _in_order(np.stack(out), inverse)

    def close(self) -> None:
        # The stream too: its codec context (and the codec's threads) is freed with it, now, here.
        self._decoded = self._stream = self._last_frame = None
        container, self._container = getattr(self, "_container", None), None
        if container is not None:
            container.close()


def _rgb(frame) -> np.ndarray:
    """A decoded PyAV frame as (H, W, 3) uint8 RGB. One conversion thread: the loader's workers are the
    parallelism, and PyAV's default (one thread per core) would oversubscribe them."""
    return frame.to_ndarray(format="rgb24", threads=1)


def _log_fallback(path: str, reason: str, action: str) -> None:
    """Warn once per file and process that decord failed on it and PyAV reads it; later reads log at debug."""
    if path in _FALLBACK_REPORTED:
        logger.debug("%s: %s; %s", path, reason, action)
        return
    _FALLBACK_REPORTED.add(path)
    logger.warning("%s: %s; %s (reported once per file; see 'Decoding' in datasets/README.md)", path, reason, action)


_READERS = {"decord": DecordReader, "pyav": PyAVReader}
BACKENDS: tuple[str, ...] = tuple(_READERS)  # DATA.DECODER


_TS_PACKET = 188


def is_mpeg_ts(path: str | os.PathLike) -> bool:
    """Whether ``path`` is an MPEG transport stream (.ts, .m2ts, ...): the 0x47 sync byte at the start of three
    consecutive 188-byte packets (192-byte packets with a timecode for M2TS)."""
    try:
        with open(path, "rb") as f:
            head = f.read(3 * 192)
    except OSError:
        return False
    return any(len(head) >= off + 2 * size + 1 and all(head[off + k * size] == 0x47 for k in range(3))
               for size, off in ((_TS_PACKET, 0), (192, 4)))


def open_video(path: str | os.PathLike, backend: Backend = "decord", *, num_threads: int = 1,
               fallback: bool = True) -> VideoReader:
    """Open ``path`` with ``backend``; when decord fails and ``fallback`` is set, try PyAV.

    Raises:
        DecodeError: neither decoder can open the file (the reason names both failures).
        ValueError: unknown backend.
    """
    if backend not in _READERS:
        raise ValueError(f"DATA.DECODER must be one of {sorted(_READERS)}, got {backend!r}")
    path = str(path)
    if backend == "decord" and fallback and is_mpeg_ts(path):
        # decord2 cannot seek in MPEG-TS: get_batch returns other frames ("corrupted and recovered from
        # nearest frames") or fails at the end; PyAV reads it exactly.
        reader = PyAVReader(path, num_threads=num_threads)
        _log_fallback(path, "an MPEG-TS file (decord returns wrong frames on it)", "decoding with PyAV instead")
        return reader
    try:
        return _READERS[backend](path, num_threads=num_threads)
    except DecodeTimeout:
        raise
    except DecodeError as e:
        if not fallback or backend == "pyav" or e.reason == "file not found":
            raise
        try:
            reader = PyAVReader(path, num_threads=num_threads)
        except DecodeError as e2:
            raise DecodeError(path, f"{e.reason}; PyAV fallback: {e2.reason}") from None
        _log_fallback(path, e.reason, "decoding with PyAV instead")
        return reader


def decode_frames(reader: VideoReader, indices: Sequence[int], *, num_threads: int = 1,
                  fallback: bool = True) -> tuple[np.ndarray, VideoReader]:
    """``reader.get_frames(indices)``; when decord fails to decode and ``fallback`` is set, the reader is
    closed and the file re-read with PyAV.

    Returns:
        ``(frames, reader)``: the reader now in use (the PyAV one after a fallback; the caller closes it).

    Raises:
        DecodeError: neither decoder can decode the frames (the reason names both failures).
    """
    try:
        return reader.get_frames(indices), reader
    except DecodeTimeout:
        raise
    except DecodeError as e:
        if not fallback or reader.backend == "pyav":
            raise
        path, pyav = reader.path, None
        reader.close()
        try:
            pyav = PyAVReader(path, num_threads=num_threads)
            frames = pyav.get_frames(indices)
        except BaseException as e2:
            if pyav is not None:
                pyav.close()
            if isinstance(e2, DecodeError):
                raise DecodeError(path, f"{e.reason}; PyAV fallback: {e2.reason}") from None
            raise
        _log_fallback(path, e.reason, "decoded with PyAV instead")
        return frames, pyav


def read_frames(path: str | os.PathLike, indices_fn, backend: Backend = "decord", *, num_threads: int = 1,
                timeout: float = 0.0, fallback: bool = True) -> tuple[np.ndarray, np.ndarray, VideoReader]:
    """Open, choose indices from the real frame count, decode them, close; all under the time bound.

    Args:
        path: video file.
        indices_fn: ``f(num_frames, fps) -> array of frame indices`` (any order, repeats allowed).
        backend: "decord" or "pyav".
        num_threads: decoder threads.
        timeout: seconds for the whole call (0: no bound), see :func:`time_limit`.
        fallback: re-read with PyAV when decord fails to open or decode the file.

    Returns:
        ``(frames (N, H, W, 3) uint8, indices used (clamped), reader)``; the reader is closed and
        only carries ``num_frames``, ``fps`` and ``backend``.
    """
    path = str(path)
    with time_limit(timeout, path):
        reader = open_video(path, backend, num_threads=num_threads, fallback=fallback)
        try:
            indices = np.asarray(indices_fn(reader.num_frames, reader.fps), dtype=np.int64)
            frames, reader = decode_frames(reader, indices, num_threads=num_threads, fallback=fallback)
        finally:
            reader.close()
    return frames, np.clip(indices, 0, reader.num_frames - 1), reader


def _short(e: BaseException, limit: int = 300) -> str:
    text = " ".join(str(e).split()) or type(e).__name__
    return text if len(text) <= limit else text[:limit] + "..."
