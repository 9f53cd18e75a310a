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
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any, BinaryIO

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


@dataclass(frozen=True)
class _Layout:
    """Where and how a WAV file stores its samples (see :func:`_layout`)."""

    rate: int
    channels: int
    width: int  # bytes per sample in the file
    dtype: np.dtype[Any]  # what one sample becomes (int32/int64 for 3, 5, 6 or 7 bytes)
    offset: int  # of the first sample in the file (bytes)
    frames: int  # whole frames the file holds
    promised: int  # frames the data chunk's header promises


_GUID_TAIL = {"<": b"\x00\x00\x10\x00\x80\x00\x00\xaa\x00\x38\x9b\x71",
              ">": b"\x00\x00\x00\x10\x80\x00\x00\xaa\x00\x38\x9b\x71"}


def _layout(p: Path) -> _Layout:
    """The sample layout of a WAV file read from its chunks, as scipy reads them (RIFF, RIFX,
    RF64; integer PCM of 1-8 bytes a sample, 32/64-bit float, plain or extensible), without
    reading the samples. For what scipy cannot map: 3-byte samples, and a data chunk promising
    more than the file holds. ValueError or struct.error for anything else."""
    size = p.stat().st_size
    with p.open("rb") as f:
        riff = f.read(12)
        if len(riff) < 12 or riff[:4] not in (b"RIFF", b"RIFX", b"RF64") or riff[8:] != b"WAVE":
            raise ValueError("not a RIFF WAVE file")
        e = ">" if riff[:4] == b"RIFX" else "<"
        fmt: tuple[int, int, int, int, int] | None = None
        rf64_data: int | None = None
        while True:
            head = f.read(8)
            if len(head) < 8:
                raise ValueError("no data chunk")
            cid, n = head[:4], struct.unpack(e + "I", head[4:])[0]
            if cid == b"data":
                break
            if cid not in (b"ds64", b"fmt "):  # LIST, JUNK, ...: skipped, however large
                if f.seek(n + (n & 1), 1) > size:
                    raise ValueError(f"chunk {cid!r} is cut short")
                continue
            body = f.read(n)
            if len(body) < n:
                raise ValueError(f"chunk {cid!r} is cut short")
            if cid == b"ds64" and len(body) >= 16:
                rf64_data = struct.unpack("<Q", body[8:16])[0]
            elif cid == b"fmt ":
                tag, channels, rate, per_s, align, bits = struct.unpack(e + "HHIIHH", body[:16])
                if tag == 0xFFFE and len(body) >= 40 and body[28:40] == _GUID_TAIL[e]:
                    tag = struct.unpack(e + "I", body[24:28])[0]  # the sub-format's tag
                if tag == 1 and per_s != rate * align:  # scipy refuses these too
                    raise ValueError("WAV header is invalid: bytes per second do not match")
                fmt = (tag, channels, rate, align, bits)
            f.seek(n & 1, 1)  # pad byte after a chunk of odd size
        if fmt is None:
            raise ValueError("no fmt chunk before data")
        if riff[:4] == b"RF64" and rf64_data is not None:
            n = rf64_data
        offset = f.tell()
    tag, channels, rate, align, bits = fmt
    if channels < 1 or align < channels:
        raise ValueError("its header gives 0 channels or 0 bytes per sample frame")
    width = align // channels
    if tag == 1 and bits <= 8 and width == 1:
        dtype = np.dtype("u1")
    elif tag == 1 and width <= 8:
        dtype = np.dtype(f"{e}i{8 if width > 4 else 4 if width == 3 else width}")
    elif tag == 3 and bits in (32, 64) and width == bits // 8:
        dtype = np.dtype(f"{e}f{width}")
    else:
        raise ValueError(f"unsupported WAV format {tag:#x} with {bits}-bit samples")
    return _Layout(rate, channels, width, dtype, offset,
                   frames=min(n, max(0, size - offset)) // align, promised=n // align)


class WavFile:
    """A WAV file read block by block: :meth:`blocks` yields 16 kHz mono float32 pieces.

    The header is checked when the file is opened (one-line :class:`AudioError`); the samples
    are read :data:`BLOCK_S` at a time, so a long recording never sits in memory whole, whatever
    its sample format, and also when its header promises more than the file holds (a recorder
    that lost power: what is there is read, with a note). The file stays open until
    :meth:`close` (or the end of a ``with`` block): replacing or deleting it by name does not
    change what is read.
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
        try:
            rate_in, data, notes = _scipy_read(p, mmap=True)
        except AudioError as refused:  # 3-byte samples or cut short, else not a WAV
            layout = self._layout_or(p, refused)
            rate_in, notes = layout.rate, []
            self.dtype, self.channels = layout.dtype, layout.channels
            self.frames, self._width, self._offset = layout.frames, layout.width, layout.offset
            if layout.frames < layout.promised:
                notes = [f"cut short (EOF): its header promises {layout.promised / rate_in:.2f}"
                         f" s, the file holds {layout.frames / rate_in:.2f} s"]
        else:
            self.dtype = data.dtype
            self.frames = int(data.shape[0]) if data.size else 0
            self.channels = int(data.shape[1]) if data.ndim > 1 else 1
            self._width = data.dtype.itemsize
            self._offset = int(getattr(data, "offset", 0))  # of the samples in the file (bytes)
            del data  # closes the mapping
        self.notes = notes[:1]  # what is odd about the file, for reports
        for note in self.notes:
            log.warning("%s: %s", p, note)
        if self.frames == 0:
            raise AudioError(f"{p}: WAV file holds no samples")
        if rate_in < 8000 or rate_in > 192_000:  # below 8 kHz the speech band is cut off
            raise AudioError(f"{p}: unsupported sample rate {rate_in} Hz (8000-192000 Hz)")
        self.rate_in = rate_in
        self._file: BinaryIO | None = None
        self._warned_short = False
        try:
            self._file = p.open("rb")
        except OSError as exc:
            raise AudioError(f"{p}: cannot read ({exc.strerror or exc})") from exc
        log.debug("opened %s: %d Hz, %s, %d channels, %.2f s", p, rate_in, self.dtype,
                  self.channels, self.duration_s)

    @staticmethod
    def _layout_or(p: Path, refused: AudioError) -> _Layout:
        """:func:`_layout`, or scipy's reason (``refused``) for a file that is not a WAV."""
        try:
            return _layout(p)
        except (ValueError, struct.error, OSError):
            raise refused from None

    @property
    def duration_s(self) -> float:
        return self.frames / self.rate_in

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None

    def __enter__(self) -> WavFile:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _raw(self, start: int, count: int) -> NDArray[np.generic]:
        if self._file is None:
            raise AudioError(f"{self.path}: read after close")
        count = min(count, self.frames - start)  # never past what the header or file holds
        width, frame = self._width, self._width * self.channels
        try:
            self._file.seek(self._offset + start * frame)
            if width == self.dtype.itemsize:
                data = np.fromfile(self._file, dtype=self.dtype, count=count * self.channels)
            else:
                data = self._widen(np.fromfile(self._file, dtype=np.uint8, count=count * frame))
        except OSError as exc:
            raise AudioError(f"{self.path}: cannot read ({exc.strerror or exc})") from exc
        usable = data.size // self.channels * self.channels
        return data[:usable].reshape(-1, self.channels) if self.channels > 1 else data[:usable]

    def _widen(self, raw: NDArray[np.uint8]) -> NDArray[np.generic]:
        """3-, 5-, 6- or 7-byte samples into the high bytes of int32/int64, as scipy does."""
        n, width = raw.size // self._width, self._width
        wide = np.zeros((n, self.dtype.itemsize), dtype=np.uint8)
        if self.dtype.byteorder == ">":
            wide[:, :width] = raw[: n * width].reshape(n, width)
        else:
            wide[:, -width:] = raw[: n * width].reshape(n, width)
        return wide.view(self.dtype).reshape(n)

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
