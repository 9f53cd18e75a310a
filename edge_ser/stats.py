"""Health figures for the periodic ``stats`` message.

:class:`LatencyWindow` keeps recent end-of-speech -> event latencies for p50/p95;
:class:`CpuMeter` gives this process's CPU % since the previous reading (psutil, 100 = one
core); :func:`build_stats` merges the parts' own ``stats()`` into one flat dict.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np
import psutil

from edge_ser import SAMPLE_RATE


class LatencyWindow:
    """The last ``size`` latencies in seconds, with percentiles in milliseconds."""

    def __init__(self, size: int = 200) -> None:
        self._values: deque[float] = deque(maxlen=size)
        self.count = 0

    def add(self, seconds: float) -> None:
        self._values.append(max(0.0, seconds))
        self.count += 1

    def percentile_ms(self, q: float) -> float | None:
        if not self._values:
            return None
        return round(float(np.percentile(np.fromiter(self._values, float), q)) * 1000.0, 1)

    def stats(self) -> dict[str, float | int | None]:
        return {
            "latency_p50_ms": self.percentile_ms(50),
            "latency_p95_ms": self.percentile_ms(95),
            "latency_count": self.count,
        }


class CpuMeter:
    """CPU % of this process between successive calls (100 = one full core)."""

    def __init__(self) -> None:
        self._proc = psutil.Process()
        self._proc.cpu_percent(interval=None)  # the first reading is meaningless; prime it

    def percent(self) -> float:
        return round(float(self._proc.cpu_percent(interval=None)), 1)


class StreamClock:
    """Maps stream time (audio the worker has consumed, counted in samples) to when that audio
    arrived.

    The worker records each chunk's end position and arrival time; the latency of an event
    ending at ``end_s`` is "now" minus the arrival of the chunk holding ``end_s``. ``keep``
    marks are held (size it to the capture queue's chunks, or a long backlog reads short).
    """

    def __init__(self, keep: int = 4000, rate: int = SAMPLE_RATE) -> None:
        self._marks: deque[tuple[int, float]] = deque(maxlen=keep)  # (end sample, arrived)
        self.rate = rate
        self.position = 0  # samples

    @property
    def position_s(self) -> float:
        return self.position / self.rate

    def advance(self, samples: int, arrived: float) -> None:
        self.position += samples
        self._marks.append((self.position, arrived))

    def skip(self, samples: int) -> None:
        """Audio that never reached the worker (dropped): the position moves, no mark."""
        self.position += samples

    def arrival_of(self, stream_s: float) -> float | None:
        at = round(stream_s * self.rate)
        for end, arrived in self._marks:
            if end >= at:
                return arrived
        return self._marks[-1][1] if self._marks else None

    def latency_s(self, end_s: float, now: float | None = None) -> float | None:
        arrived = self.arrival_of(end_s)
        if arrived is None:
            return None
        return (time.monotonic() if now is None else now) - arrived


def build_stats(parts: Iterable[Mapping[str, Any]], **extra: Any) -> dict[str, Any]:
    """One flat dict: later parts and ``extra`` win on key clashes."""
    out: dict[str, Any] = {}
    for part in parts:
        out.update(part)
    out.update(extra)
    return out
