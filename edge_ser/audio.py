"""Reading WAV files and converting any PCM to 16 kHz mono float32.

Accepts 8-192 kHz, mono or multi-channel, 8/16/24/32-bit integer or 32/64-bit
float WAV. Resampling uses a polyphase FIR filter (``scipy.signal.resample_poly``), never
decimation by dropping samples.
"""

from __future__ import annotations

import logging
import warnings
from fractions import Fraction
from pathlib import Path

import numpy as np
from numpy.typing import NDArray

from edge_ser import SAMPLE_RATE
from edge_ser.errors import AudioError

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
    from scipy.signal import resample_poly  # lazy: scipy costs ~65 MiB RSS, only some need it

    ratio = Fraction(rate_out, rate_in)
    y = resample_poly(x.astype(np.float64), ratio.numerator, ratio.denominator)
    return np.asarray(y, dtype=np.float32)


def read_wav(path: str | Path, rate: int = SAMPLE_RATE) -> Float32Array:
    """Read a WAV file as mono float32 at ``rate`` Hz.

    Raises :class:`AudioError` with a one-line reason for anything that is not a readable WAV.
    """
    p = Path(path)
    if p.is_dir():
        raise AudioError(f"{p}: is a folder, not a WAV file")
    if not p.is_file():
        raise AudioError(f"{p}: no such file")
    from scipy.io import wavfile  # lazy, see resample()

    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", wavfile.WavFileWarning)
            rate_in, data = wavfile.read(str(p), mmap=False)
    except Exception as exc:  # scipy raises ValueError, struct.error, ZeroDivisionError, ...
        reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:160]
        raise AudioError(f"{p}: not a readable WAV file ({reason})") from exc
    for w in caught[:1]:
        log.warning("%s: %s", p, w.message)
    if data.size == 0:
        raise AudioError(f"{p}: WAV file holds no samples")
    if rate_in < 8000 or rate_in > 192_000:  # below 8 kHz the speech band is cut off
        raise AudioError(f"{p}: unsupported sample rate {rate_in} Hz (8000-192000 Hz)")
    x = to_mono(pcm_to_float(data))
    if not np.all(np.isfinite(x)):
        raise AudioError(f"{p}: WAV file holds NaN or infinite samples")
    log.debug("read %s: %d Hz, %s, %.2f s", p, rate_in, data.dtype, len(x) / rate_in)
    return resample(x, rate_in, rate)


def write_wav(path: str | Path, x: Float32Array, rate: int = SAMPLE_RATE) -> None:
    """Write mono float audio as 16-bit PCM (used by tests and examples, never by the daemon)."""
    from scipy.io import wavfile  # lazy, see resample()

    pcm = np.clip(np.asarray(x) * 32768.0, -32768, 32767).astype(np.int16)
    wavfile.write(str(path), rate, pcm)
