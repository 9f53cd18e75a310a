"""The paper's preprocessing, shared by training and inference.

Per window (or per training clip): 20 dB top-threshold trim, pre-emphasis
``y[n] = x[n] - 0.97 x[n-1]``, peak normalisation to 0.95, then zero padding (or truncation)
to the model's window length. The parameters are stored in each model's metadata.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray

from edge_ser import SAMPLE_RATE, WINDOW_S

TRIM_TOP_DB = 20.0
PRE_EMPHASIS = 0.97
PEAK = 0.95
TRIM_FRAME = 2048
TRIM_HOP = 512

#: Human-readable description stored in model metadata under ``preprocessing``.
DESCRIPTION = (
    f"trim top_db={TRIM_TOP_DB:g} (frame {TRIM_FRAME}, hop {TRIM_HOP}); "
    f"pre-emphasis {PRE_EMPHASIS:g}; peak normalise {PEAK:g}; zero-pad/truncate to window"
)


def _frame_rms_db(x: NDArray[np.float32], frame: int, hop: int) -> NDArray[np.float64]:
    pad = frame // 2
    xp = np.pad(x.astype(np.float64), (pad, pad))
    n = 1 + max(0, (len(xp) - frame) // hop)
    idx = np.arange(frame)[None, :] + hop * np.arange(n)[:, None]
    rms = np.sqrt(np.mean(xp[idx] ** 2, axis=1))
    ref = max(float(rms.max()), 1e-10)
    return np.asarray(20.0 * np.log10(np.maximum(rms, 1e-10) / ref), dtype=np.float64)


def trim(
    x: NDArray[np.float32],
    top_db: float = TRIM_TOP_DB,
    frame: int = TRIM_FRAME,
    hop: int = TRIM_HOP,
) -> NDArray[np.float32]:
    """Drop leading and trailing audio quieter than ``top_db`` below the loudest frame."""
    if x.size == 0 or not np.any(x):
        return x
    db = _frame_rms_db(x, frame, hop)
    loud = np.flatnonzero(db > -top_db)
    if loud.size == 0:
        return x
    start = max(0, int(loud[0]) * hop)
    end = min(len(x), (int(loud[-1]) + 1) * hop)
    return x[start:end]


def pre_emphasis(x: NDArray[np.float32], coef: float = PRE_EMPHASIS) -> NDArray[np.float32]:
    """First-order high-pass ``y[n] = x[n] - coef * x[n-1]`` (``y[0] = x[0]``)."""
    if x.size == 0:
        return x
    y = np.empty_like(x, dtype=np.float32)
    y[0] = x[0]
    y[1:] = x[1:] - coef * x[:-1]
    return y


def peak_normalise(x: NDArray[np.float32], peak: float = PEAK) -> NDArray[np.float32]:
    """Scale so that max |x| == ``peak`` (silence is left as is)."""
    m = float(np.max(np.abs(x))) if x.size else 0.0
    if m < 1e-8:
        return x.astype(np.float32)
    return (x * (peak / m)).astype(np.float32)


def fit_length(x: NDArray[np.float32], n: int) -> NDArray[np.float32]:
    """Zero-pad at the end, or truncate, to exactly ``n`` samples."""
    if len(x) >= n:
        return x[:n].astype(np.float32)
    return np.pad(x, (0, n - len(x))).astype(np.float32)


def prepare_window(
    x: NDArray[np.float32], window_s: float = WINDOW_S, rate: int = SAMPLE_RATE
) -> NDArray[np.float32]:
    """The whole chain for one window or training clip: trim, pre-emphasis, peak, fit length."""
    y = peak_normalise(pre_emphasis(trim(np.asarray(x, dtype=np.float32))))
    return fit_length(y, int(round(window_s * rate)))
