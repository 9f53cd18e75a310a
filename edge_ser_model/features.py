"""Precomputed utterance feature vectors for clips and their augmented copies.

The compact front end (log-mel, SHS pitch, functionals) has fixed weights, so training its head
on cached front-end output is the same as training the whole graph end to end, and the front
end runs once per clip copy instead of once per epoch. Each clip goes through
``edge_ser.preprocess.prepare_window`` (the inference preprocessing) first; only the part up to
the end of the speech is fed (the rest is masked padding, so the vector is the same).
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Protocol

import numpy as np
import torch
from numpy.typing import NDArray
from torch import Tensor

from edge_ser import WINDOW_S
from edge_ser.preprocess import DESCRIPTION as PREPROCESSING
from edge_ser.preprocess import prepare_window
from edge_ser_model.augment import AugmentConfig, augment
from edge_ser_model.data import Clip, read_audio

log = logging.getLogger(__name__)

HOP = 160


class FrontEnd(Protocol):
    """A fixed (untrained) front end: prepared waveforms ``[B, N]`` -> vectors ``[B, dim]``."""

    dim: int

    def __call__(self, x: Tensor) -> Tensor: ...


BATCH = 16  # clips per front-end call
FEATURES_VERSION = 3  # bump when a front end's numbers change (cache key)


def speech_part(window: NDArray[np.float32], hop: int = HOP) -> NDArray[np.float32]:
    """The prepared window cut after its last non-zero sample (rounded up to a hop)."""
    nz = np.flatnonzero(window)
    if nz.size == 0:
        return window[:hop]
    end = min(len(window), -(-(int(nz[-1]) + 1) // hop) * hop)
    return window[:end]


def vectors_of(
    frontend: FrontEnd, waves: Sequence[NDArray[np.float32]], window_s: float = WINDOW_S,
    batch: int = BATCH,
) -> NDArray[np.float32]:
    """Prepare each raw clip like inference does and run the fixed front end: ``[n, D]``.

    Clips of similar length go through together, zero-padded to the longest of the batch: both
    front ends mask the padding (and the voice LSTMs are causal), so a clip's vector does not
    depend on its batch mates, and batching makes the LSTMs' matrix products pay.
    """
    parts = [speech_part(prepare_window(x, window_s)) for x in waves]
    out = np.zeros((len(parts), frontend.dim), dtype=np.float32)
    order = np.argsort([len(p) for p in parts], kind="stable")
    with torch.no_grad():
        for b in range(0, len(order), batch):
            idx = order[b : b + batch]
            longest = max(len(parts[i]) for i in idx)
            x = np.zeros((len(idx), longest), dtype=np.float32)
            for row, i in enumerate(idx):
                x[row, : len(parts[i])] = parts[i]
            out[idx] = frontend(torch.from_numpy(x)).numpy()
    return out


def compute_features(
    clips: Sequence[Clip], frontend: FrontEnd, copies: int = 4, seed: int = 0,
    window_s: float = WINDOW_S, aug: AugmentConfig | None = None,
    cache_dir: Path | None = None,
) -> NDArray[np.float32]:
    """``[n_clips, 1 + copies, D]``: the clean clip, then augmented copies (cached).

    The copies depend on ``seed`` only, so two front ends (compact and voice) called with the
    same clips and seed see the same augmented audio. The cache key holds the clips, the copies,
    the front end (for a frozen encoder: its weights' sha256) and the preprocessing.
    """
    key = hashlib.sha256(
        repr(([str(c.path) for c in clips], copies, seed, window_s, aug, frontend.dim,
              repr(frontend), FEATURES_VERSION, PREPROCESSING)).encode()
    ).hexdigest()[:16]
    path = cache_dir / f"vectors-{key}.npy" if cache_dir else None
    if path is not None and path.is_file():
        log.info("features: cache hit %s", path)
        return np.asarray(np.load(path), dtype=np.float32)
    rng = np.random.default_rng(seed)
    waves = read_audio(clips)
    dim = frontend.dim
    feats = np.zeros((len(clips), 1 + copies, dim), dtype=np.float32)
    step = 64  # clips per progress step
    for start in range(0, len(waves), step):
        chunk = waves[start : start + step]
        variants = [v for x in chunk for v in [x] + [augment(x, rng, aug) for _ in range(copies)]]
        feats[start : start + len(chunk)] = vectors_of(frontend, variants, window_s).reshape(
            len(chunk), 1 + copies, dim)
        log.info("features (%s): %d/%d clips", type(frontend).__name__,
                 min(start + step, len(waves)), len(waves))
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        np.save(path, feats)
    return feats
