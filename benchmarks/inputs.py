"""Real speech for every benchmark: the bundled RAVDESS clips, cut into prepared windows."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
from numpy.typing import NDArray

from benchmarks import EXAMPLES
from edge_ser import SAMPLE_RATE, WINDOW_S
from edge_ser.audio import read_wav
from edge_ser.errors import AudioError
from edge_ser.preprocess import prepare_window

log = logging.getLogger(__name__)


def example_clips(root: Path = EXAMPLES) -> list[Path]:
    clips = sorted((root / "clips").glob("*.wav"))
    if not clips:
        raise AudioError(f"{root / 'clips'}: no example WAV clips (needed as benchmark speech)")
    return clips


def speech_windows(
    count: int, window_s: float = WINDOW_S, root: Path = EXAMPLES
) -> list[NDArray[np.float32]]:
    """``count`` distinct prepared windows of real speech (clips laid end to end, cycled)."""
    speech = np.concatenate([read_wav(p) for p in example_clips(root)])
    n = int(round(window_s * SAMPLE_RATE))
    hop = max(SAMPLE_RATE // 2, (len(speech) - n) // max(count, 1))
    out: list[NDArray[np.float32]] = []
    for i in range(count):
        start = (i * hop) % max(1, len(speech) - n)
        out.append(prepare_window(speech[start:start + n], window_s))
    return out
