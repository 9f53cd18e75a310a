"""The capture queue between a source (capture callback) and the worker.

:class:`DropOldestQueue` is bounded by seconds of audio. ``put`` never blocks: a live source's
callback must return at once, so when the worker falls behind the *oldest* audio is dropped and
counted (fresh audio matters more to a live sensor than stale audio). Non-live sources (a WAV
played as fast as possible, a pre-recorded pipe) use :meth:`DropOldestQueue.put_wait`, which
waits for room instead, so nothing is lost.

Each item carries the monotonic time it arrived, which the daemon uses for end-of-speech to
event latency.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from edge_ser import SAMPLE_RATE

log = logging.getLogger(__name__)

Float32Array = NDArray[np.float32]
DROP_WARN_EVERY_S = 60.0  # dropping audio is logged at WARNING at most this often


@dataclass(frozen=True)
class Chunk:
    """A block of 16 kHz mono float32 audio, the ``time.monotonic()`` it was captured, and how
    many samples the queue dropped right before it (``gap``)."""

    audio: Float32Array
    arrived: float
    gap: int = 0


def split_at_gaps(chunks: list[Chunk]) -> list[tuple[int, list[Chunk]]]:
    """``chunks`` as runs of contiguous audio, each with the samples dropped before it."""
    runs: list[tuple[int, list[Chunk]]] = []
    for c in chunks:
        if c.gap or not runs:
            runs.append((c.gap, [c]))
        else:
            runs[-1][1].append(c)
    return runs


class QueueClosed(Exception):
    """Raised by ``put``/``put_wait`` after :meth:`DropOldestQueue.close`."""


class DropOldestQueue:
    """Bounded, thread-safe FIFO of audio chunks that drops the oldest chunk when full."""

    def __init__(self, capacity_s: float, rate: int = SAMPLE_RATE) -> None:
        if capacity_s <= 0:
            raise ValueError("capacity_s must be positive")
        self.capacity = max(1, int(round(capacity_s * rate)))  # in samples
        self.rate = rate
        self._items: deque[Chunk] = deque()
        self._samples = 0
        self._cond = threading.Condition()
        self._closed = False
        self.dropped_chunks = 0
        self.dropped_samples = 0
        self.high_water = 0  # most samples ever queued at once
        self._warned_at = -float("inf")

    # --- producer side ---------------------------------------------------------------------
    def put(self, audio: Float32Array, arrived: float | None = None) -> int:
        """Append a chunk without blocking; return the number of samples dropped to fit it."""
        chunk = Chunk(np.asarray(audio, dtype=np.float32), arrived or time.monotonic())
        dropped = 0
        with self._cond:
            if self._closed:
                raise QueueClosed("queue closed")
            if chunk.audio.size > self.capacity:  # keep the newest part of an oversize chunk
                cut = chunk.audio.size - self.capacity
                chunk = Chunk(chunk.audio[cut:], chunk.arrived, gap=cut)
                dropped += cut
                self.dropped_chunks += 1
            self._items.append(chunk)
            self._samples += chunk.audio.size
            lost = 0  # dropped from the front, with the gaps before them
            while self._samples > self.capacity:
                old = self._items.popleft()
                self._samples -= old.audio.size
                dropped += old.audio.size
                lost += old.gap + old.audio.size
                self.dropped_chunks += 1
            if lost:  # the consumer must learn that audio is missing before the new front
                front = self._items[0]
                self._items[0] = Chunk(front.audio, front.arrived, front.gap + lost)
            self.dropped_samples += dropped
            self.high_water = max(self.high_water, self._samples)
            self._cond.notify()
        if dropped:
            now = time.monotonic()
            if now - self._warned_at >= DROP_WARN_EVERY_S:
                self._warned_at = now
                log.warning("capture queue full (%.3g s of audio): the worker is behind, "
                            "dropping the oldest audio (%.2f s dropped so far)",
                            self.capacity / self.rate, self.dropped_samples / self.rate)
        return dropped

    def put_wait(
        self, audio: Float32Array, arrived: float | None = None, timeout: float | None = None
    ) -> bool:
        """Append a chunk, waiting for room (back-pressure). False if ``timeout`` ran out."""
        size = min(int(np.asarray(audio).size), self.capacity)
        with self._cond:
            ok = self._cond.wait_for(
                lambda: self._closed or self._samples + size <= self.capacity, timeout
            )
            if self._closed:
                raise QueueClosed("queue closed")
            if not ok:
                return False
        self.put(audio, arrived)
        return True

    def close(self) -> None:
        """No more input: wakes every waiter; ``get`` drains what is left, then returns None."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()

    # --- consumer side ---------------------------------------------------------------------
    def get(self, timeout: float | None = None) -> Chunk | None:
        """Oldest chunk, or None on timeout or when closed and empty."""
        with self._cond:
            if not self._cond.wait_for(lambda: bool(self._items) or self._closed, timeout):
                return None
            if not self._items:
                return None
            chunk = self._items.popleft()
            self._samples -= chunk.audio.size
            self._cond.notify_all()  # room for put_wait
            return chunk

    def get_all(self, timeout: float | None = None) -> list[Chunk]:
        """Every queued chunk (waiting up to ``timeout`` for the first); [] on timeout/closed."""
        first = self.get(timeout)
        if first is None:
            return []
        out = [first]
        with self._cond:
            while self._items:
                chunk = self._items.popleft()
                self._samples -= chunk.audio.size
                out.append(chunk)
            self._cond.notify_all()
        return out

    # --- state -----------------------------------------------------------------------------
    @property
    def closed(self) -> bool:
        with self._cond:
            return self._closed

    @property
    def drained(self) -> bool:
        """Closed and empty: the consumer has seen everything."""
        with self._cond:
            return self._closed and not self._items

    def __len__(self) -> int:
        with self._cond:
            return len(self._items)

    @property
    def queued_s(self) -> float:
        with self._cond:
            return self._samples / self.rate

    @property
    def dropped_s(self) -> float:
        with self._cond:
            return self.dropped_samples / self.rate

    def stats(self) -> dict[str, float | int]:
        with self._cond:
            return {
                "queue_s": round(self._samples / self.rate, 3),
                "queue_high_water_s": round(self.high_water / self.rate, 3),
                "audio_dropped_s": round(self.dropped_samples / self.rate, 3),
                "audio_dropped_chunks": self.dropped_chunks,
            }
