"""``file`` source: a WAV file played at real time or as fast as possible, optionally looped."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from edge_ser import CHUNK_MS, SAMPLE_RATE
from edge_ser.audio import Float32Array, WavFile
from edge_ser.errors import AudioError
from edge_ser.sources.base import DoneFn, PushFn, ThreadedSource

log = logging.getLogger(__name__)


class FileSource(ThreadedSource):
    """Plays a WAV (any rate, resampled to 16 kHz) in chunks, reading a few seconds at a time.

    ``realtime=True`` paces chunks by the clock (a stand-in for a microphone); ``False`` pushes
    them as fast as the consumer accepts them. ``loop=True`` starts again at the end; otherwise
    ``done(None)`` is called after the last chunk.
    """

    def __init__(
        self, path: Path, realtime: bool = True, loop: bool = False, chunk_ms: int = CHUNK_MS
    ) -> None:
        super().__init__()
        self.path = Path(path)
        self.realtime = realtime
        self.loop = loop
        self.chunk = max(1, SAMPLE_RATE * chunk_ms // 1000)
        self.name = f"file:{self.path.name}"
        self.live = realtime
        self.samples_played = 0
        self.loops = 0

    def start(self, push: PushFn, done: DoneFn) -> None:
        wav = WavFile(self.path)  # AudioError here, in the caller's thread, for a bad file
        log.info(
            "playing %s (%.2f s, %s%s)", self.path, wav.duration_s,
            "real time" if self.realtime else "as fast as possible",
            ", looped" if self.loop else "",
        )
        self.state = "playing"
        self._start_thread(
            lambda: self._run_reader(lambda: self._play(wav, push), done), "edge-ser-file"
        )

    def _chunks(self, wav: WavFile) -> Iterator[Float32Array]:
        """One pass over the file in chunks of ``chunk_ms`` (the last one may be shorter)."""
        rest = np.zeros(0, dtype=np.float32)
        try:
            for block in wav.blocks():
                audio = np.concatenate([rest, block]) if rest.size else block
                full = audio.size // self.chunk * self.chunk
                for i in range(0, full, self.chunk):
                    yield audio[i : i + self.chunk]
                rest = audio[full:]
        except AudioError:  # bad samples further on: what came before them is played first
            if rest.size:
                yield rest
            raise
        if rest.size:
            yield rest

    def _play(self, wav: WavFile, push: PushFn) -> None:
        with wav:  # closed by this thread, never under its feet
            t0 = time.monotonic()
            played = 0  # samples since t0, for pacing
            while not self._stop.is_set():
                before = played
                for block in self._chunks(wav):
                    if self._stop.is_set():
                        break
                    if self.realtime:
                        ahead = t0 + (played + block.size) / SAMPLE_RATE - time.monotonic()
                        if ahead > 0 and self._stop.wait(ahead):
                            break
                    push(block)
                    played += block.size
                    self.samples_played += block.size
                if not self.loop or self._stop.is_set():
                    break
                if played == before:  # cut to nothing while looping: do not spin
                    raise AudioError(f"{self.path}: no samples left to play")
                self.loops += 1

    def stats(self) -> dict[str, Any]:
        return {
            "source": self.name,
            "source_state": self.state,
            "source_played_s": round(self.samples_played / SAMPLE_RATE, 3),
            "source_loops": self.loops,
        }
