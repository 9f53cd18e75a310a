"""Real speech for every benchmark: the bundled RAVDESS clips, cut into full prepared windows."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
from numpy.typing import NDArray

from benchmarks import EXAMPLES
from edge_ser import SAMPLE_RATE, WINDOW_S
from edge_ser.audio import read_wav
from edge_ser.errors import AudioError
from edge_ser.preprocess import prepare_window, trim

log = logging.getLogger(__name__)


def example_clips(root: Path = EXAMPLES) -> list[Path]:
    clips = sorted((root / "clips").glob("*.wav"))
    if not clips:
        raise AudioError(f"{root / 'clips'}: no example WAV clips (needed as benchmark speech)")
    return clips


def speech_windows(
    count: int, window_s: float = WINDOW_S, root: Path = EXAMPLES
) -> list[NDArray[np.float32]]:
    """``count`` distinct prepared windows of continuous speech (clips laid end to end, cycled),
    each with speech up to its last sample.

    Each window starts where speech starts and runs on for its whole length; a pause cut at its
    end is filled with its own speech. A model that stops at the end of speech then does a full
    window's work, as it does when someone talks on (one clip alone would leave zero padding).
    """
    clips = np.concatenate([read_wav(p) for p in example_clips(root)])
    n = int(round(window_s * SAMPLE_RATE))
    speech = np.concatenate([clips] * (2 + (2 * n) // max(1, len(clips))))  # room for 2n
    hop = max(SAMPLE_RATE // 2, len(clips) // max(count, 1))
    out: list[NDArray[np.float32]] = []
    for i in range(count):
        start = (i * hop) % len(clips)
        talk = trim(speech[start:start + 2 * n])[:n]  # from the first speech on
        out.append(fill_to_end(prepare_window(talk, window_s)))
    return out


def fill_to_end(window: NDArray[np.float32]) -> NDArray[np.float32]:
    """``window`` with any zero padding at its end replaced by its own speech, repeated."""
    nz = np.flatnonzero(window)
    if len(nz) == 0 or nz[-1] + 1 == len(window):
        return window
    return np.resize(window[: nz[-1] + 1], len(window)).astype(np.float32)
