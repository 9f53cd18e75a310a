"""The source interface and the streaming helpers every source shares.

A source turns some input (microphone, WAV file, raw PCM on stdin) into 16 kHz mono float32
chunks, handed to ``push`` as they are captured. Audio stays in memory: no source writes to disk.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any, Protocol

import numpy as np
from numpy.typing import NDArray

from edge_ser.audio import StreamResampler, pcm_to_float
from edge_ser.capture import QueueClosed
from edge_ser.errors import AudioError, EdgeSerError

log = logging.getLogger(__name__)

Float32Array = NDArray[np.float32]
#: Called with each 16 kHz mono float32 chunk.
PushFn = Callable[[Float32Array], Any]
#: Called once when a source ends: ``None`` at end of input, or the error that ended it.
DoneFn = Callable[[EdgeSerError | None], None]

__all__ = ["AudioSource", "DoneFn", "PushFn", "StreamResampler", "ThreadedSource", "s16le_to_float"]


class AudioSource(Protocol):
    """Where audio comes from (``mic``, ``file``, ``stdin``)."""

    #: Short name for logs and stats, e.g. ``file:voice-note.wav``.
    name: str
    #: True when audio arrives in real time and must never wait (drop oldest instead);
    #: False when the source can be slowed down (back-pressure, nothing dropped).
    live: bool

    def start(self, push: PushFn, done: DoneFn) -> None:
        """Begin capturing in the background; returns at once."""

    def stop(self) -> None:
        """Stop capturing and release the device; idempotent, returns within a second."""

    def stats(self) -> dict[str, Any]:
        """Source health for the ``stats`` topic (state, reopen count, ...)."""


class ThreadedSource:
    """Thread bookkeeping shared by the sources: a stop event, the worker thread, ``state``."""

    #: How long ``stop()`` waits for the worker thread, in seconds.
    join_timeout_s = 1.0

    def __init__(self) -> None:
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.state = "idle"
        self.name = type(self).__name__

    def _start_thread(self, target: Callable[[], None], name: str) -> None:
        self._stop.clear()
        self._thread = threading.Thread(target=target, name=name, daemon=True)
        self._thread.start()

    def _run_reader(self, body: Callable[[], None], done: DoneFn) -> None:
        """Run a reader thread's ``body``, then report how it ended: the end of input, its
        error, or nothing when the consumer closed the queue (the daemon is stopping)."""
        error: EdgeSerError | None = None
        try:
            body()
        except QueueClosed:
            log.debug("%s: the consumer is stopping", self.name)
            self.state = "stopped"
            return
        except EdgeSerError as exc:
            error = exc
        except Exception as exc:  # a bug: end with it, never pose as the end of the input
            log.debug("%s failed", self.name, exc_info=True)
            error = AudioError(f"{self.name}: the source failed ({type(exc).__name__}: {exc})")
        self._finish(error, done)

    def _finish(self, error: EdgeSerError | None, done: DoneFn) -> None:
        """End of the worker: report the end (or the error) unless we were asked to stop."""
        self.state = "ended"
        if not self._stop.is_set() or error is not None:
            done(error)

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout=self.join_timeout_s)
        self.state = "stopped"


def s16le_to_float(data: bytes, channels: int) -> Float32Array:
    """Raw signed 16-bit little-endian interleaved PCM to mono float32 in [-1, 1)."""
    pcm = np.frombuffer(data, dtype="<i2")
    x = pcm_to_float(pcm)
    if channels > 1:
        x = np.asarray(x.reshape(-1, channels).mean(axis=1), dtype=np.float32)
    return x
