"""The reference baseline: opensmile eGeMAPSv02 functionals + logistic regression.

Two variants on the same folds as the compact encoder: features standardised on the training
part only (``egemaps_lr``), and z-normalised per speaker first (``egemaps_lr_spk``: every
speaker's clips, test speakers included, are normalised with that speaker's own mean/std: an
oracle the daemon cannot apply to a single utterance, reported because it was the strongest lever).
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from numpy.typing import NDArray

from edge_ser_model.data import Clip, groups_of, read_audio

log = logging.getLogger(__name__)


def egemaps_features(clips: Sequence[Clip], cache_dir: Path | None = None) -> NDArray[np.float64]:
    """88 eGeMAPSv02 functionals per clip (raw 16 kHz audio), cached under ``cache_dir``."""
    key = hashlib.sha256(repr([str(c.path) for c in clips]).encode()).hexdigest()[:16]
    path = cache_dir / f"egemaps-{key}.npy" if cache_dir else None
    if path is not None and path.is_file():
        return np.asarray(np.load(path), dtype=np.float64)
    import opensmile

    smile = opensmile.Smile(
        feature_set=opensmile.FeatureSet.eGeMAPSv02,
        feature_level=opensmile.FeatureLevel.Functionals,
    )
    rows = [
        np.asarray(smile.process_signal(x, 16000).to_numpy()[0], dtype=np.float64)
        for x in read_audio(clips)
    ]
    feats = np.stack(rows)
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        np.save(path, feats)
    return feats


def speaker_znorm(feats: NDArray[np.float64], groups: NDArray[np.str_]) -> NDArray[np.float64]:
    """Z-normalise each speaker's rows with that speaker's own mean and std."""
    out = np.empty_like(feats)
    for g in np.unique(groups):
        rows = groups == g
        mu = feats[rows].mean(axis=0)
        sd = feats[rows].std(axis=0)
        out[rows] = (feats[rows] - mu) / np.where(sd > 1e-8, sd, 1.0)
    return out


def baseline_predictions(
    clips: Sequence[Clip], feats: NDArray[np.float64], labels: NDArray[np.int64],
    folds: Sequence[tuple[NDArray[np.int64], NDArray[np.int64]]], per_speaker: bool,
) -> list[NDArray[np.int64]]:
    """Predicted labels for each fold's test part."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    x = speaker_znorm(feats, groups_of(clips)) if per_speaker else feats
    preds = []
    for train_idx, test_idx in folds:
        clf = make_pipeline(
            StandardScaler(),
            LogisticRegression(C=0.1, max_iter=2000, class_weight="balanced"),
        )
        clf.fit(x[train_idx], labels[train_idx])
        preds.append(np.asarray(clf.predict(x[test_idx]), dtype=np.int64))
    return preds
