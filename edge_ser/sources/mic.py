"""``mic`` source: PyAudio capture, any device rate resampled to 16 kHz, reopened on failure.

The backend is created afresh for every open: PortAudio only rescans devices at
initialisation, and a re-plugged USB microphone usually gets a new index, so the device is also
looked up by name again each time (:mod:`edge_ser.sources.devices`).
"""

from __future__ import annotations

import contextlib
import logging
import time
from typing import Any

from edge_ser import CHUNK_MS, SAMPLE_RATE
from edge_ser.errors import AudioError
from edge_ser.sources.base import (
    DoneFn,
    PushFn,
    StreamResampler,
    ThreadedSource,
    s16le_to_float,
)
from edge_ser.sources.devices import (
    PA_ABORT,
    PA_COMPLETE,
    PA_CONTINUE,
    PA_INPUT_OVERFLOW,
    PA_INT16,
    AudioStream,
    BackendFactory,
    choose_rate,
    find_device,
    pyaudio_backend,
)

log = logging.getLogger(__name__)


class MicSource(ThreadedSource):
    """Live capture; a device that errors, stalls or disappears is reopened with backoff."""

    live = True

    def __init__(
        self,
        device: str | int | None = None,
        rate: int | None = None,
        channels: int = 1,
        chunk_ms: int = CHUNK_MS,
        reopen_min_s: float = 1.0,
        reopen_max_s: float = 30.0,
        backend: BackendFactory | None = None,
    ) -> None:
        super().__init__()
        self.device, self.rate, self.channels = device, rate, channels
        self.chunk_ms = chunk_ms
        self.reopen_min_s, self.reopen_max_s = reopen_min_s, max(reopen_min_s, reopen_max_s)
        self._factory = backend or pyaudio_backend
        self.name = f"mic:{device if device is not None else 'default'}"
        self.stall_s = max(2.0, 20 * chunk_ms / 1000)
        self._push: PushFn | None = None
        self._resampler = StreamResampler(SAMPLE_RATE)
        self._last_audio = 0.0
        self._cb_error: BaseException | None = None
        self.opens = 0
        self.reopens = 0
        self.failures = 0
        self.overflows = 0
        self.last_error = ""
        self.device_name = ""
        self.device_rate = 0

    def start(self, push: PushFn, done: DoneFn) -> None:
        if self._factory is pyaudio_backend:
            pyaudio_backend().terminate()  # fail now, in the caller, when PyAudio is missing
        self._push = push
        self._start_thread(self._supervise, "edge-ser-mic")

    def stats(self) -> dict[str, Any]:
        return {
            "source": self.name,
            "source_state": self.state,
            "source_device": self.device_name,
            "source_rate_hz": self.device_rate,
            "source_reopens": self.reopens,
            "source_failures": self.failures,
            "source_overflows": self.overflows,
            "source_error": self.last_error,
        }

    # --- supervisor thread -----------------------------------------------------------------
    def _supervise(self) -> None:
        delay = self.reopen_min_s
        while not self._stop.is_set():
            began = time.monotonic()
            try:
                self._capture()
            except Exception as exc:  # AudioError, or whatever PortAudio raised
                self.last_error = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
                if self._stop.is_set():
                    break
                self.failures += 1
                if time.monotonic() - began > self.reopen_max_s:
                    delay = self.reopen_min_s  # it had been working for a while
                self.state = "reopening"
                log.warning("microphone %s: %s; reopening in %.1f s",
                            self.device_name or self.name, self.last_error, delay)
                if self._stop.wait(delay):
                    break
                delay = min(delay * 2, self.reopen_max_s)

    def _capture(self) -> None:
        pa = self._factory()
        stream: AudioStream | None = None
        try:
            index, info = find_device(pa, self.device)
            rate = choose_rate(pa, index, info, self.channels, self.rate)
            self.device_name, self.device_rate = str(info.get("name", index)), rate
            self._resampler = StreamResampler(rate)
            self._cb_error = None
            self._last_audio = time.monotonic()
            stream = pa.open(
                format=PA_INT16, channels=self.channels, rate=rate, input=True,
                input_device_index=index, frames_per_buffer=max(1, rate * self.chunk_ms // 1000),
                stream_callback=self._callback,
            )
            self.opens += 1
            if self.opens > 1:
                self.reopens += 1
                log.warning("microphone %s reopened at %d Hz (reopen #%d)",
                            self.device_name, rate, self.reopens)
            else:
                log.info("capturing from %s (index %d) at %d Hz%s", self.device_name, index,
                         rate, "" if rate == SAMPLE_RATE else ", resampled to 16000 Hz")
            self.state = "capturing"
            self._watch(stream)
        finally:
            if stream is not None:
                with contextlib.suppress(Exception):
                    stream.stop_stream()
                with contextlib.suppress(Exception):
                    stream.close()
            with contextlib.suppress(Exception):
                pa.terminate()

    def _watch(self, stream: AudioStream) -> None:
        while not self._stop.wait(0.1):
            if self._cb_error is not None:
                raise AudioError(f"capture failed: {self._cb_error}")
            if not stream.is_active():
                raise AudioError("the input stream stopped (device unplugged?)")
            silent_for = time.monotonic() - self._last_audio
            if silent_for > self.stall_s:
                raise AudioError(f"no audio from the device for {silent_for:.1f} s")

    def _callback(
        self, in_data: bytes | None, frame_count: int, time_info: Any, status: int
    ) -> tuple[None, int]:
        if self._stop.is_set():
            return None, PA_COMPLETE
        try:
            if status & PA_INPUT_OVERFLOW:
                self.overflows += 1
            self._last_audio = time.monotonic()
            if in_data:
                block = self._resampler.process(s16le_to_float(in_data, self.channels))
                if block.size and self._push is not None:
                    self._push(block)
            return None, PA_CONTINUE
        except Exception as exc:  # never let an exception escape into PortAudio's thread
            self._cb_error = exc
            return None, PA_ABORT
