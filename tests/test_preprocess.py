"""The paper's preprocessing on real speech: trim, pre-emphasis, peak, fit length."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from edge_ser import SAMPLE_RATE
from edge_ser.audio import read_wav
from edge_ser.preprocess import (
    PEAK,
    PRE_EMPHASIS,
    TRIM_HOP,
    fit_length,
    peak_normalise,
    pre_emphasis,
    prepare_window,
    trim,
)


@pytest.fixture(scope="module")
def speech(examples: Path) -> np.ndarray:
    """A clip cut to its loud part (the clips start and end with near-silence)."""
    x = read_wav(examples / "clips" / "anger-ravdess-08.wav")
    return trim(x)


def test_trim_removes_silence_around_speech(speech: np.ndarray) -> None:
    rng = np.random.default_rng(0)
    quiet = (rng.standard_normal(SAMPLE_RATE) * 1e-4).astype(np.float32)  # -80 dBFS
    padded = np.concatenate([quiet, speech, quiet])
    out = trim(padded)
    assert abs(len(out) - len(speech)) <= 2 * TRIM_HOP + 2048
    assert len(out) < len(padded) - 1.5 * SAMPLE_RATE
    start = int(np.flatnonzero(np.isin(padded, out[:64]))[0])  # where the kept part begins
    assert SAMPLE_RATE - 2048 <= start <= SAMPLE_RATE + TRIM_HOP


def test_trim_leaves_silence_and_empty_alone() -> None:
    z = np.zeros(1000, dtype=np.float32)
    assert len(trim(z)) == 1000 and len(trim(z[:0])) == 0


def test_pre_emphasis_formula(speech: np.ndarray) -> None:
    y = pre_emphasis(speech)
    assert y[0] == speech[0]
    np.testing.assert_allclose(y[1:], speech[1:] - PRE_EMPHASIS * speech[:-1], atol=1e-7)
    # a high-pass: low-frequency energy drops relative to high
    spec_in = np.abs(np.fft.rfft(speech)) ** 2
    spec_out = np.abs(np.fft.rfft(y)) ** 2
    f = np.fft.rfftfreq(len(speech), 1 / SAMPLE_RATE)
    ratio_low = spec_out[f < 300].sum() / spec_in[f < 300].sum()
    ratio_high = spec_out[f > 4000].sum() / spec_in[f > 4000].sum()
    assert ratio_low < 0.1 < 1.0 < ratio_high


def test_peak_normalise(speech: np.ndarray) -> None:
    for gain in (0.01, 1.0, 3.0):
        assert np.max(np.abs(peak_normalise(speech * np.float32(gain)))) == pytest.approx(PEAK)
    z = np.zeros(10, dtype=np.float32)
    assert np.all(peak_normalise(z) == 0)


def test_prepare_window_chain(speech: np.ndarray) -> None:
    n = 8 * SAMPLE_RATE
    out = prepare_window(speech)
    assert out.shape == (n,) and out.dtype == np.float32
    core = peak_normalise(pre_emphasis(trim(speech)))
    np.testing.assert_allclose(out[: len(core)], core, atol=1e-6)
    assert np.all(out[len(core) :] == 0)  # zero padding at the end
    assert np.max(np.abs(out)) == pytest.approx(PEAK)
    long = np.concatenate([speech] * 4)
    assert prepare_window(long, window_s=2.0).shape == (2 * SAMPLE_RATE,)
    assert len(fit_length(speech, 100)) == 100


@pytest.mark.corpus
def test_prepare_window_on_corpus_clips(shared_data: Path) -> None:
    files = sorted((shared_data / "urdu").rglob("*.wav"))[::40]
    assert files
    for p in files:
        out = prepare_window(read_wav(p))
        assert out.shape == (8 * SAMPLE_RATE,)
        assert np.max(np.abs(out)) == pytest.approx(PEAK)
