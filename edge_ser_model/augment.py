"""The paper's waveform augmentation (applied to raw clips, before ``prepare_window``).

gain -18..+6 dB, additive Gaussian noise of amplitude (std) 0.001-0.015, pitch shift within
+-2 semitones (phase-vocoder time stretch + polyphase resampling, so duration is kept) and
polarity inversion. Gain is applied before the noise: since ``prepare_window`` peak-normalises,
gain on its own is a no-op and only matters through the signal-to-noise ratio it sets.
"""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction

import numpy as np
from numpy.typing import NDArray
from scipy.signal import istft, resample_poly, stft

Float32Array = NDArray[np.float32]


@dataclass(frozen=True)
class AugmentConfig:
    gain_db: tuple[float, float] = (-18.0, 6.0)
    noise: tuple[float, float] = (0.001, 0.015)
    semitones: float = 2.0
    p_pitch: float = 0.5
    p_noise: float = 0.5
    p_polarity: float = 0.5


def apply_gain(x: Float32Array, db: float) -> Float32Array:
    return (x * np.float32(10.0 ** (db / 20.0))).astype(np.float32)


def add_noise(x: Float32Array, amplitude: float, rng: np.random.Generator) -> Float32Array:
    return (x + rng.normal(0.0, amplitude, size=x.shape)).astype(np.float32)


def invert_polarity(x: Float32Array) -> Float32Array:
    return (-x).astype(np.float32)


def time_stretch(x: Float32Array, rate: float, n_fft: int = 512, hop: int = 128) -> Float32Array:
    """Phase-vocoder time stretch: ``rate`` > 1 makes it shorter, pitch unchanged."""
    if abs(rate - 1.0) < 1e-6 or x.size < n_fft:
        return x.astype(np.float32)
    _, _, spec = stft(x, nperseg=n_fft, noverlap=n_fft - hop, boundary="zeros", padded=True)
    steps = np.arange(0.0, spec.shape[1] - 1, rate)
    expected = 2.0 * np.pi * hop * np.arange(spec.shape[0]) / n_fft
    phase = np.angle(spec[:, 0])
    out = np.empty((spec.shape[0], len(steps)), dtype=np.complex128)
    for i, step in enumerate(steps):
        j = int(step)
        frac = step - j
        a, b = spec[:, j], spec[:, j + 1]
        out[:, i] = ((1.0 - frac) * np.abs(a) + frac * np.abs(b)) * np.exp(1j * phase)
        dphi = np.angle(b) - np.angle(a) - expected
        dphi -= 2.0 * np.pi * np.round(dphi / (2.0 * np.pi))
        phase = phase + expected + dphi
    _, y = istft(out, nperseg=n_fft, noverlap=n_fft - hop, boundary=True)
    return np.asarray(y, dtype=np.float32)


def pitch_shift(x: Float32Array, semitones: float) -> Float32Array:
    """Shift pitch by ``semitones`` keeping the duration (stretch, then resample)."""
    if abs(semitones) < 1e-3:
        return x.astype(np.float32)
    factor = 2.0 ** (semitones / 12.0)
    ratio = Fraction(factor).limit_denominator(100)
    stretched = time_stretch(x, 1.0 / factor)
    y = resample_poly(stretched, ratio.denominator, ratio.numerator)
    y = y[: len(x)] if len(y) >= len(x) else np.pad(y, (0, len(x) - len(y)))
    return np.asarray(y, dtype=np.float32)


def augment(
    x: Float32Array, rng: np.random.Generator, cfg: AugmentConfig | None = None
) -> Float32Array:
    """One random augmented copy of a raw clip."""
    c = cfg or AugmentConfig()
    y = apply_gain(x, float(rng.uniform(*c.gain_db)))
    if rng.random() < c.p_pitch:
        y = pitch_shift(y, float(rng.uniform(-c.semitones, c.semitones)))
    if rng.random() < c.p_noise:
        y = add_noise(y, float(rng.uniform(*c.noise)), rng)
    if rng.random() < c.p_polarity:
        y = invert_polarity(y)
    return np.clip(y, -1.0, 1.0).astype(np.float32)
