"""Corpora (manifest.csv per corpus) and speaker-independent folds.

``calm`` (RAVDESS, TurEV-DB) is not one of the four labels: it is dropped by default
(``calm="drop"``), or merged into ``neutral`` for training (``calm="neutral"``; such clips keep
``calm=True``, and leave-one-corpus-out tests on the four labels only).
Speaker folds group by the manifest's ``speaker`` column: no speaker is in the train and test part
of one fold (``StratifiedGroupKFold``, so class balance is kept as well as groups allow). Corpus
folds train on all corpora but one and test on that one, each in turn: the closest thing here to
a board in a home the model was not trained in.
"""

from __future__ import annotations

import csv
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from numpy.typing import NDArray

from edge_ser import LABELS
from edge_ser.audio import read_wav
from edge_ser.errors import AudioError, ConfigError

log = logging.getLogger(__name__)

MANIFEST_COLUMNS = ("file", "corpus", "speaker", "emotion")
CALM_MODES = ("drop", "neutral")
DEFAULT_CORPORA = ("ravdess", "urdu", "turevdb", "korean")


@dataclass(frozen=True)
class Clip:
    """One labelled clip from a corpus manifest."""

    path: Path
    corpus: str
    speaker: str
    label: int  # index into edge_ser.LABELS
    calm: bool = False  # a ``calm`` clip merged into neutral (``calm="neutral"``)


def read_manifest(corpus_dir: Path, calm: str = "drop") -> list[Clip]:
    """Read ``corpus_dir/manifest.csv`` into clips with 4-class labels."""
    if calm not in CALM_MODES:
        raise ConfigError(f"calm: must be one of {', '.join(CALM_MODES)}, not {calm!r}")
    manifest = corpus_dir / "manifest.csv"
    if not manifest.is_file():
        hint = ("" if corpus_dir.parent.is_dir() else
                f" ({corpus_dir.parent} does not exist: point --data at the corpora, e.g. "
                "--data ../shared/data)")
        raise ConfigError(f"{manifest}: no such manifest{hint}")
    clips: list[Clip] = []
    with manifest.open(newline="") as fh:
        reader = csv.DictReader(fh)
        missing = [c for c in MANIFEST_COLUMNS if c not in (reader.fieldnames or [])]
        if missing:
            raise ConfigError(f"{manifest}: missing column(s) {', '.join(missing)}")
        for lineno, row in enumerate(reader, start=2):
            empty = [c for c in MANIFEST_COLUMNS if not (row.get(c) or "").strip()]
            if empty:  # a short row leaves its last columns None
                raise ConfigError(f"{manifest}:{lineno}: {', '.join(empty)}: empty or missing "
                                  f"(each row needs {', '.join(MANIFEST_COLUMNS)})")
            emotion = row["emotion"].strip()
            was_calm = emotion == "calm"
            if was_calm:
                if calm == "drop":
                    continue
                emotion = "neutral"
            if emotion not in LABELS:
                raise ConfigError(f"{manifest}:{lineno}: emotion: unknown label {emotion!r}")
            clips.append(
                Clip(corpus_dir / row["file"], row["corpus"], row["speaker"], LABELS.index(emotion),
                     calm=was_calm)
            )
    log.info("%s: %d clips (calm=%s)", manifest, len(clips), calm)
    return clips


def load_corpora(
    root: Path, corpora: Sequence[str] = DEFAULT_CORPORA, calm: str = "drop"
) -> list[Clip]:
    """All clips of the named corpora under ``root`` (e.g. ../shared/data)."""
    clips: list[Clip] = []
    for name in corpora:
        clips.extend(read_manifest(Path(root) / name, calm=calm))
    if not clips:
        raise ConfigError(f"{root}: no clips in corpora {', '.join(corpora)}")
    return clips


def read_audio(clips: Sequence[Clip]) -> list[NDArray[np.float32]]:
    """Read every clip as 16 kHz mono float32 (raises AudioError naming the file)."""
    out: list[NDArray[np.float32]] = []
    for clip in clips:
        try:
            out.append(read_wav(clip.path))
        except AudioError:
            raise
        except Exception as exc:  # pragma: no cover - defensive
            raise AudioError(f"{clip.path}: {exc}") from exc
    return out


def labels_of(clips: Sequence[Clip]) -> NDArray[np.int64]:
    return np.array([c.label for c in clips], dtype=np.int64)


def groups_of(clips: Sequence[Clip]) -> NDArray[np.str_]:
    return np.array([c.speaker for c in clips])


def speaker_folds(
    clips: Sequence[Clip], k: int = 5, seed: int = 0
) -> list[tuple[NDArray[np.int64], NDArray[np.int64]]]:
    """``k`` speaker-disjoint (train_idx, test_idx) splits, stratified by label."""
    from sklearn.model_selection import StratifiedGroupKFold

    groups = groups_of(clips)
    if len(set(groups.tolist())) < k:
        raise ConfigError(f"folds: {k} folds need at least {k} speakers")
    sgkf = StratifiedGroupKFold(n_splits=k, shuffle=True, random_state=seed)
    idx = np.arange(len(clips))
    folds = [
        (np.asarray(tr, dtype=np.int64), np.asarray(te, dtype=np.int64))
        for tr, te in sgkf.split(idx, labels_of(clips), groups)
    ]
    for tr, te in folds:
        assert not set(groups[tr].tolist()) & set(groups[te].tolist())
    return folds


def corpus_folds(
    clips: Sequence[Clip],
) -> tuple[list[str], list[tuple[NDArray[np.int64], NDArray[np.int64]]]]:
    """Leave one corpus out: ``(names, folds)``, one (train_idx, test_idx) per corpus.

    The test part holds the left-out corpus's clips of the four labels (``calm`` merged into
    neutral trains, but is not tested: it is not what that corpus calls neutral).
    """
    corpus = np.array([c.corpus for c in clips])
    calm = np.array([c.calm for c in clips], dtype=bool)
    names = sorted(set(corpus.tolist()))
    if len(names) < 2:
        raise ConfigError("corpora: leave-one-corpus-out needs at least two corpora")
    idx = np.arange(len(clips), dtype=np.int64)
    folds = [(idx[corpus != name], idx[(corpus == name) & ~calm]) for name in names]
    return names, folds


def validation_split(
    clips: Sequence[Clip], train_idx: NDArray[np.int64], fraction: float = 0.15, seed: int = 0
) -> tuple[NDArray[np.int64], NDArray[np.int64]]:
    """Split ``train_idx`` into (fit, validation) by speaker, for early stopping.

    With fewer than two speakers there is no validation part (an empty array).
    """
    sub = [clips[i] for i in train_idx]
    n_speakers = len({c.speaker for c in sub})
    if n_speakers < 2:
        return train_idx, np.zeros(0, dtype=np.int64)
    k = max(2, min(int(round(1.0 / fraction)), n_speakers))
    try:
        tr, va = speaker_folds(sub, k=k, seed=seed)[0]
    except ValueError:  # a class with fewer clips than folds (tiny subsets): groups only
        from sklearn.model_selection import GroupKFold

        tr, va = next(GroupKFold(n_splits=k).split(np.arange(len(sub)), groups=groups_of(sub)))
    return train_idx[np.asarray(tr)], train_idx[np.asarray(va)]
