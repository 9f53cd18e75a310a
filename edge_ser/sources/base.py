"""The source interface and the streaming helpers every source shares.

A source turns some input (microphone, WAV file, raw PCM on stdin) into 16 kHz mono float32
chunks, handed to ``push`` as they are captured. Audio stays in memory: no source writes to disk.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Callable
from fractions import Fraction
from typing import Any, Protocol

import numpy as np
from numpy.typing import NDArray

from edge_ser import SAMPLE_RATE
from edge_ser.audio import pcm_to_float, resample
from edge_ser.errors import EdgeSerError

Float32Array = NDArray[np.float32]
#: Called with each 16 kHz mono float32 chunk.
PushFn = Callable[[Float32Array], Any]
#: Called once when a source ends: ``None`` at end of input, or the error that ended it.
DoneFn = Callable[[EdgeSerError | None], None]


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

    def _start_thread(self, target: Callable[[], None], name: str) -> None:
        self._stop.clear()
        self._thread = threading.Thread(target=target, name=name, daemon=True)
        self._thread.start()

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


class StreamResampler:
    """Chunk-by-chunk resampling to 16 kHz, identical to resampling the whole stream.

    Each call resamples the new input together with a little context from both sides (the
    polyphase filter's support), so chunk edges leave no clicks. The price is a delay of
    ``context`` input samples (under 30 ms); :meth:`flush` returns the held-back tail.
    """

    def __init__(self, rate_in: int, rate_out: int = SAMPLE_RATE) -> None:
        self.rate_in, self.rate_out = rate_in, rate_out
        ratio = Fraction(rate_out, rate_in)
        self.up, self.down = ratio.numerator, ratio.denominator
        # resample_poly's filter reaches 10 * max(up, down) samples at the upsampled rate
        half = math.ceil(10 * max(self.up, self.down) / self.up) + 2
        self.context = self.down * math.ceil(half / self.down)  # a multiple of `down`
        self._buf = np.zeros(self.context, dtype=np.float32)  # history starts as silence

    @property
    def passthrough(self) -> bool:
        return self.rate_in == self.rate_out

    def process(self, x: Float32Array) -> Float32Array:
        if self.passthrough:
            return np.asarray(x, dtype=np.float32)
        self._buf = np.concatenate([self._buf, np.asarray(x, dtype=np.float32)])
        c = self.context
        usable = (self._buf.size - 2 * c) // self.down * self.down
        if usable <= 0:
            return np.zeros(0, dtype=np.float32)
        y = resample(self._buf[: c + usable + c], self.rate_in, self.rate_out)
        lo = c * self.up // self.down
        out = y[lo : lo + usable * self.up // self.down]
        self._buf = self._buf[usable:]
        return np.asarray(out, dtype=np.float32)

    def flush(self) -> Float32Array:
        """Resample what is held back (end of stream); the resampler is reset."""
        if self.passthrough:
            return np.zeros(0, dtype=np.float32)
        c = self.context
        rest = self._buf.size - c
        out = np.zeros(0, dtype=np.float32)
        if rest > 0:
            pad = (-rest) % self.down
            buf = np.concatenate([self._buf, np.zeros(pad + c, dtype=np.float32)])
            y = resample(buf, self.rate_in, self.rate_out)
            lo = c * self.up // self.down
            out = np.asarray(y[lo : lo + rest * self.up // self.down], dtype=np.float32)
        self._buf = np.zeros(c, dtype=np.float32)
        return out


def s16le_to_float(data: bytes, channels: int) -> Float32Array:
    """Raw signed 16-bit little-endian interleaved PCM to mono float32 in [-1, 1)."""
    pcm = np.frombuffer(data, dtype="<i2")
    x = pcm_to_float(pcm)
    if channels > 1:
        x = np.asarray(x.reshape(-1, channels).mean(axis=1), dtype=np.float32)
    return x
