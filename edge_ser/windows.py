"""Cutting gated speech into analysis windows (the paper's 8 s).

:class:`Windower` collects the speech audio of an utterance (or of a whole voice note: the
pipeline then only ends the "utterance" at the end of the note, so windows may span the gaps
between utterances, as the paper concatenates VAD-filtered audio). Every ``length_s`` of speech
gives a window; consecutive windows start ``hop_s`` apart. At the end of the utterance:

* speech shorter than one window gives exactly one shorter window (padding to the model's length
  happens in :func:`edge_ser.preprocess.prepare_window`);
* otherwise the samples not yet covered by a window give a trailing window (starting one hop after
  the previous one), unless they are fewer than ``min_s`` seconds.

Each :class:`Window` knows the stream time of its first sample (``start_s``), the time just
after its last sample (``end_s``) and its seconds of speech (``speech_s``, the aggregation
weight; smaller than ``end_s - start_s`` where the window spans a gap between utterances).
"""

from __future__ import annotations

import bisect
import logging
from dataclasses import dataclass, field

import numpy as np
from numpy.typing import NDArray

from edge_ser import SAMPLE_RATE
from edge_ser.config import WindowConfig

log = logging.getLogger(__name__)

Float32Array = NDArray[np.float32]


@dataclass(frozen=True, eq=False)
class Window:
    """One analysis window of speech audio (unpadded)."""

    audio: Float32Array = field(repr=False)
    start_s: float
    end_s: float
    speech_s: float


class Windower:
    """Streaming window cutter: ``push`` speech blocks, ``end_utterance`` at a boundary."""

    def __init__(self, cfg: WindowConfig | None = None, rate: int = SAMPLE_RATE) -> None:
        self.cfg = cfg if cfg is not None else WindowConfig.model_validate({})
        self.rate = rate
        self.length = int(round(self.cfg.length_s * rate))
        self.hop = max(1, int(round(self.cfg.hop_s * rate)))
        self.min_len = int(round(self.cfg.min_s * rate))
        self.reset()

    def reset(self) -> None:
        """Drop any buffered speech."""
        self._buf = np.zeros(0, dtype=np.float32)
        # Segments of contiguous stream time: buffer offset -> stream time of that sample.
        self._offsets: list[int] = []
        self._times: list[float] = []
        self._covered = 0  # leading buffer samples already inside an emitted window
        self._emitted = 0  # windows emitted in the current utterance

    @property
    def buffered_s(self) -> float:
        """Seconds of speech waiting in the buffer."""
        return len(self._buf) / self.rate

    def push(self, audio: Float32Array, start_s: float) -> list[Window]:
        """Add speech whose first sample is at stream time ``start_s``; return full windows."""
        x = np.asarray(audio, dtype=np.float32).reshape(-1)
        if x.size == 0:
            return []
        n = len(self._buf)
        if not self._offsets or abs(self._time_at(n) - start_s) > 0.5 / self.rate:
            self._offsets.append(n)
            self._times.append(float(start_s))
        self._buf = np.concatenate([self._buf, x])
        out: list[Window] = []
        while len(self._buf) >= self.length:
            out.append(self._make(self.length))
            self._covered = self.length
            self._drop(self.hop)
        return out

    def end_utterance(self) -> list[Window]:
        """Close the utterance: emit the trailing (or only) window and clear the buffer."""
        out: list[Window] = []
        n = len(self._buf)
        fresh = n - self._covered
        if n and (self._emitted == 0 or (fresh > 0 and fresh >= self.min_len)):
            out.append(self._make(n))
        elif fresh > 0:
            log.debug("dropped a trailing %.2f s piece (< windows.min_s)", fresh / self.rate)
        self.reset()
        return out

    # --- helpers ------------------------------------------------------------------------------
    def _time_at(self, i: int) -> float:
        """Stream time of buffer sample ``i`` (``i == len`` gives the time just after the end)."""
        k = bisect.bisect_right(self._offsets, i) - 1
        if k < 0:
            return 0.0
        return self._times[k] + (i - self._offsets[k]) / self.rate

    def _make(self, n: int) -> Window:
        self._emitted += 1
        audio = self._buf[:n].copy()
        start = self._time_at(0)
        end = self._time_at(n - 1) + 1.0 / self.rate
        # Rounded to the microsecond so adjacent windows share exact boundaries.
        return Window(audio, round(start, 6), round(end, 6), n / self.rate)

    def _drop(self, n: int) -> None:
        n = min(n, len(self._buf))
        k = bisect.bisect_right(self._offsets, n) - 1
        first_t = self._time_at(n)
        offsets = [0] + [o - n for o in self._offsets[k + 1 :]]
        times = [first_t] + self._times[k + 1 :]
        self._offsets, self._times = offsets, times
        self._buf = self._buf[n:]
        self._covered = max(0, self._covered - n)
