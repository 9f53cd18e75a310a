"""Reading WAV files and converting any PCM to 16 kHz mono float32.

Accepts 8-192 kHz, mono or multi-channel, 8/16/24/32-bit integer or 32/64-bit
float WAV. Resampling uses a polyphase FIR filter (``scipy.signal.resample_poly``), never
decimation by dropping samples.
"""

from __future__ import annotations

import logging
import math
import struct
import warnings
from collections.abc import Iterator
from fractions import Fraction
from pathlib import Path
from typing import BinaryIO

import numpy as np
from numpy.typing import NDArray

from edge_ser import SAMPLE_RATE
from edge_ser.errors import AudioError, not_a_file

log = logging.getLogger(__name__)

Float32Array = NDArray[np.float32]


def pcm_to_float(data: NDArray[np.generic]) -> Float32Array:
    """Scale integer PCM to [-1, 1) float32; float input is passed through as float32."""
    if data.dtype.kind == "f":
        return np.asarray(data, dtype=np.float32)
    if data.dtype == np.uint8:  # 8-bit WAV is unsigned
        return ((data.astype(np.float32) - 128.0) / 128.0).astype(np.float32)
    if data.dtype.kind == "i":
        scale = float(2 ** (8 * data.dtype.itemsize - 1))
        return (data.astype(np.float32) / scale).astype(np.float32)
    raise AudioError(f"unsupported sample type {data.dtype}")


def to_mono(data: Float32Array) -> Float32Array:
    """Average channels (frames x channels) into one."""
    if data.ndim == 1:
        return data
    return np.asarray(data.mean(axis=1), dtype=np.float32)


def resample(x: Float32Array, rate_in: int, rate_out: int = SAMPLE_RATE) -> Float32Array:
    """Band-limited polyphase resampling from ``rate_in`` to ``rate_out`` Hz."""
    if rate_in == rate_out or x.size == 0:
        return np.asarray(x, dtype=np.float32)
    from scipy.signal import resample_poly  # lazy, see _scipy_read()

    ratio = Fraction(rate_out, rate_in)
    y = resample_poly(x.astype(np.float64), ratio.numerator, ratio.denominator)
    return np.asarray(y, dtype=np.float32)


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


BLOCK_S = 4.0  # how much of a WAV file is read and converted at a time (s)


def _scipy_read(p: Path, mmap: bool) -> tuple[int, NDArray[np.generic], list[str]]:
    """scipy's WAV reader, its exceptions as one-line :class:`AudioError`, warnings returned."""
    from scipy.io import wavfile  # lazy: scipy costs ~65 MiB RSS, only some need it

    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", wavfile.WavFileWarning)
            rate_in, data = wavfile.read(str(p), mmap=mmap)
    except Exception as exc:  # scipy raises ValueError, struct.error, ZeroDivisionError, ...
        raise AudioError(f"{p}: not a readable WAV file ({_why(exc, p)})") from exc
    return int(rate_in), data, [str(w.message) for w in caught]


def _why(exc: Exception, p: Path) -> str:
    """scipy's reason for refusing a file, in words that name the cause."""
    if isinstance(exc, ZeroDivisionError):
        return "its header gives 0 channels or 0 bytes per sample frame"
    if isinstance(exc, (UnboundLocalError, NameError)):
        return "it has no data chunk"
    if isinstance(exc, struct.error):
        return "its header is cut short"
    try:
        if p.stat().st_size == 0:
            return "the file is empty"
    except OSError:  # gone meanwhile: scipy's reason will do
        pass
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0][:160]


class WavFile:
    """A WAV file read block by block: :meth:`blocks` yields 16 kHz mono float32 pieces.

    The header is checked when the file is opened (one-line :class:`AudioError`); the samples
    are read :data:`BLOCK_S` at a time, so a long recording never sits in memory whole. 24-bit
    and truncated files, which scipy cannot map, are read whole instead. The file stays open
    until :meth:`close` (or the end of a ``with`` block): replacing or deleting it by name does
    not change what is read.
    """

    def __init__(self, path: str | Path, rate: int = SAMPLE_RATE) -> None:
        if not str(path):
            raise AudioError("an empty file name is not a WAV file")
        p = self.path = Path(path)
        if p.is_dir():
            raise AudioError(f"{p}: is a folder, not a WAV file")
        if not p.is_file():
            raise AudioError(f"{p}: {not_a_file(p)}")
        self.rate = rate
        self._whole: NDArray[np.generic] | None = None
        try:
            rate_in, data, notes = _scipy_read(p, mmap=True)
        except AudioError:  # 24-bit or truncated (or not a WAV: then this says why)
            rate_in, data, notes = _scipy_read(p, mmap=False)
            self._whole = data
        self.notes = notes[:1]  # what is odd about the file (scipy's warning), for reports
        for note in self.notes:
            log.warning("%s: %s", p, note)
        if data.size == 0:
            raise AudioError(f"{p}: WAV file holds no samples")
        if rate_in < 8000 or rate_in > 192_000:  # below 8 kHz the speech band is cut off
            raise AudioError(f"{p}: unsupported sample rate {rate_in} Hz (8000-192000 Hz)")
        self.rate_in = rate_in
        self.dtype = data.dtype
        self.frames = int(data.shape[0])
        self.channels = int(data.shape[1]) if data.ndim > 1 else 1
        self._offset = int(getattr(data, "offset", 0))  # of the samples in the file (bytes)
        del data  # closes the mapping
        self._file: BinaryIO | None = None
        self._warned_short = False
        if self._whole is None:
            try:
                self._file = p.open("rb")
            except OSError as exc:
                raise AudioError(f"{p}: cannot read ({exc.strerror or exc})") from exc
        log.debug("opened %s: %d Hz, %s, %d channels, %.2f s", p, rate_in, self.dtype,
                  self.channels, self.duration_s)

    @property
    def duration_s(self) -> float:
        return self.frames / self.rate_in

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None
        self._whole = None

    def __enter__(self) -> WavFile:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _raw(self, start: int, count: int) -> NDArray[np.generic]:
        if self._whole is not None:
            return self._whole[start : start + count]
        if self._file is None:
            raise AudioError(f"{self.path}: read after close")
        try:
            self._file.seek(self._offset + start * self.channels * self.dtype.itemsize)
            data = np.fromfile(self._file, dtype=self.dtype, count=count * self.channels)
        except OSError as exc:
            raise AudioError(f"{self.path}: cannot read ({exc.strerror or exc})") from exc
        usable = data.size // self.channels * self.channels
        return data[:usable].reshape(-1, self.channels) if self.channels > 1 else data[:usable]

    def blocks(self) -> Iterator[Float32Array]:
        """The file from the start, as 16 kHz mono float32 blocks of about :data:`BLOCK_S`.

        Raises :class:`AudioError` at the first block holding NaN or infinite samples.
        """
        resampler = StreamResampler(self.rate_in, self.rate)
        step = max(1, int(BLOCK_S * self.rate_in))
        for start in range(0, self.frames, step):
            raw = self._raw(start, min(step, self.frames - start))
            if raw.shape[0] == 0:  # the file got shorter since it was opened
                if not self._warned_short:
                    self._warned_short = True
                    self.notes.append(f"ends early at {start / self.rate_in:.2f} s")
                    log.warning("%s: %s", self.path, self.notes[-1])
                break
            x = to_mono(pcm_to_float(raw))
            if not np.all(np.isfinite(x)):
                raise AudioError(f"{self.path}: WAV file holds NaN or infinite samples "
                                 f"(after {start / self.rate_in:.2f} s)")
            y = resampler.process(x)
            if y.size:
                yield y
        tail = resampler.flush()
        if tail.size:
            yield tail


def read_wav(path: str | Path, rate: int = SAMPLE_RATE) -> Float32Array:
    """Read a whole WAV file as mono float32 at ``rate`` Hz (see :class:`WavFile`).

    Raises :class:`AudioError` with a one-line reason for anything that is not a readable WAV.
    """
    with WavFile(path, rate) as wav:
        parts = list(wav.blocks())
    return np.concatenate(parts) if parts else np.zeros(0, dtype=np.float32)


def write_wav(path: str | Path, x: Float32Array, rate: int = SAMPLE_RATE) -> None:
    """Write mono float audio as 16-bit PCM (used by tests and examples, never by the daemon)."""
    from scipy.io import wavfile  # lazy, see _scipy_read()

    pcm = np.clip(np.asarray(x) * 32768.0, -32768, 32767).astype(np.int16)
    wavfile.write(str(path), rate, pcm)
