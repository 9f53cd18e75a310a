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

import numpy as np
import torch
from numpy.typing import NDArray

from edge_ser import WINDOW_S
from edge_ser.preprocess import prepare_window
from edge_ser_model.augment import AugmentConfig, augment
from edge_ser_model.data import Clip, read_audio
from edge_ser_model.encoders.compact import CompactFeatures

log = logging.getLogger(__name__)

HOP = 160


def speech_part(window: NDArray[np.float32], hop: int = HOP) -> NDArray[np.float32]:
    """The prepared window cut after its last non-zero sample (rounded up to a hop)."""
    nz = np.flatnonzero(window)
    if nz.size == 0:
        return window[:hop]
    end = min(len(window), -(-(int(nz[-1]) + 1) // hop) * hop)
    return window[:end]


def vectors_of(
    frontend: CompactFeatures, waves: Sequence[NDArray[np.float32]], window_s: float = WINDOW_S
) -> NDArray[np.float32]:
    """Prepare each raw clip like inference does and run the fixed front end: ``[n, D]``."""
    out = np.zeros((len(waves), frontend.dim), dtype=np.float32)
    with torch.no_grad():
        for i, x in enumerate(waves):
            w = speech_part(prepare_window(x, window_s))
            out[i] = frontend(torch.from_numpy(w).unsqueeze(0))[0].numpy()
    return out


def compute_features(
    clips: Sequence[Clip], frontend: CompactFeatures, copies: int = 4, seed: int = 0,
    window_s: float = WINDOW_S, aug: AugmentConfig | None = None,
    cache_dir: Path | None = None,
) -> NDArray[np.float32]:
    """``[n_clips, 1 + copies, D]``: the clean clip, then augmented copies (cached)."""
    key = hashlib.sha256(
        repr(([str(c.path) for c in clips], copies, seed, window_s, aug, frontend.dim,
              repr(frontend))).encode()
    ).hexdigest()[:16]
    path = cache_dir / f"vectors-{key}.npy" if cache_dir else None
    if path is not None and path.is_file():
        log.info("features: cache hit %s", path)
        return np.asarray(np.load(path), dtype=np.float32)
    rng = np.random.default_rng(seed)
    waves = read_audio(clips)
    feats = np.zeros((len(clips), 1 + copies, frontend.dim), dtype=np.float32)
    for i, x in enumerate(waves):
        variants = [x] + [augment(x, rng, aug) for _ in range(copies)]
        feats[i] = vectors_of(frontend, variants, window_s)
        if (i + 1) % 200 == 0:
            log.info("features: %d/%d clips", i + 1, len(waves))
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        np.save(path, feats)
    return feats
