"""``stdin`` source: raw signed 16-bit little-endian PCM, e.g. ``arecord -f S16_LE -r 16000``."""

from __future__ import annotations

import logging
import sys
from typing import IO, Any

from edge_ser import CHUNK_MS, SAMPLE_RATE
from edge_ser.errors import AudioError
from edge_ser.sources.base import (
    DoneFn,
    PushFn,
    StreamResampler,
    ThreadedSource,
    s16le_to_float,
)

log = logging.getLogger(__name__)


class StdinSource(ThreadedSource):
    """Reads interleaved s16le PCM at ``rate`` Hz with ``channels`` channels from a byte stream.

    ``live=True`` (audio from a capture program) lets the capture queue drop the oldest audio
    when the worker falls behind; ``live=False`` (a recording piped in) applies back-pressure
    instead. End of input calls ``done(None)``.
    """

    def __init__(
        self,
        rate: int = SAMPLE_RATE,
        channels: int = 1,
        chunk_ms: int = CHUNK_MS,
        live: bool = True,
        stream: IO[bytes] | None = None,
    ) -> None:
        super().__init__()
        self.rate = rate
        self.channels = channels
        self.frame_bytes = 2 * channels
        self.chunk_bytes = max(1, rate * chunk_ms // 1000) * self.frame_bytes
        self.live = live
        # a blocking read() cannot be interrupted; the reader is a daemon thread and exits at
        # the next chunk or end of input, so stop() does not wait long for it
        self.join_timeout_s = 0.2
        self.name = f"stdin:{rate}Hz/{channels}ch"
        self._stream = stream
        self._resampler = StreamResampler(rate)
        self.bytes_read = 0

    def start(self, push: PushFn, done: DoneFn) -> None:
        stream = self._stream if self._stream is not None else sys.stdin.buffer
        if stream.isatty():
            raise AudioError("source.type 'stdin' needs raw PCM piped in, not a terminal")
        self.state = "reading"
        self._start_thread(
            lambda: self._run_reader(lambda: self._read(stream, push), done), "edge-ser-stdin"
        )
        log.info("reading %s s16le PCM from stdin", self.name)

    def _read(self, stream: IO[bytes], push: PushFn) -> None:
        carry = b""
        try:
            while not self._stop.is_set():
                data = stream.read(self.chunk_bytes)
                if not data:
                    break
                self.bytes_read += len(data)
                data = carry + data
                whole = len(data) // self.frame_bytes * self.frame_bytes
                data, carry = data[:whole], data[whole:]
                if data:
                    block = self._resampler.process(s16le_to_float(data, self.channels))
                    if block.size:
                        push(block)
        except OSError as exc:
            raise AudioError(f"stdin: read failed ({exc.strerror or exc})") from exc
        tail = self._resampler.flush()
        if tail.size and not self._stop.is_set():
            push(tail)
        if carry:
            log.warning("stdin ended inside a sample frame; %d bytes ignored", len(carry))

    def stats(self) -> dict[str, Any]:
        return {
            "source": self.name,
            "source_state": self.state,
            "source_read_s": round(self.bytes_read / self.frame_bytes / self.rate, 3),
        }
