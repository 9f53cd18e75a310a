"""Pooling window scores into one reading, and arousal/valence from class probabilities.

Pooling (the paper's voice-note aggregation): the probabilities of the windows of an utterance
or of a whole voice note are averaged, each window weighted by its seconds of speech
(``Window.speech_s``), so a 1 s tail window counts an eighth of a full 8 s window. The emotion is
the arg-max of the pooled probabilities; ``confidence`` is that probability.

Arousal and valence are the expectation of fixed circumplex coordinates (Russell 1980, unit
circle, neutral at the origin) under the class probabilities:

=========  =========  ========  ========
class      angle      valence   arousal
=========  =========  ========  ========
anger      130 deg    -0.64     +0.77
happiness   30 deg    +0.87     +0.50
neutral    (origin)    0.00      0.00
sadness    215 deg    -0.82     -0.57
=========  =========  ========  ========

so both lie in [-1, 1]; a confident anger reading gives arousal ~ +0.77, valence ~ -0.64, an
even spread gives roughly (0.18, -0.15). These are conventions, not model outputs: the model is
trained on the four categories only (see docs/aggregation.md).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from numpy.typing import NDArray

from edge_ser import LABELS

#: (valence, arousal) per class, in LABELS order.
CIRCUMPLEX: dict[str, tuple[float, float]] = {
    "anger": (-0.64, 0.77),
    "happiness": (0.87, 0.50),
    "neutral": (0.0, 0.0),
    "sadness": (-0.82, -0.57),
}
_VA = np.array([CIRCUMPLEX[label] for label in LABELS], dtype=np.float64)  # [4, 2]

NO_SPEECH = "no speech"
ALL_SKIPPED = "all windows skipped (load shedding)"


def pool(probs: NDArray[np.floating[Any]], weights: Sequence[float] | NDArray[Any]) -> NDArray[
    np.float64
]:
    """Weighted mean of window probabilities ``[W, 4]``; equal weights if all weights are 0."""
    p = np.asarray(probs, dtype=np.float64).reshape(-1, len(LABELS))
    if p.shape[0] == 0:
        raise ValueError("pool() needs at least one window")
    w = np.asarray(weights, dtype=np.float64).reshape(-1)
    if w.shape[0] != p.shape[0]:
        raise ValueError(f"{w.shape[0]} weights for {p.shape[0]} windows")
    if np.any(w < 0):
        raise ValueError("weights must be >= 0")
    if w.sum() <= 0:
        w = np.ones_like(w)
    out: NDArray[np.float64] = (w[:, None] * p).sum(axis=0) / w.sum()
    return out


def arousal_valence(probs: NDArray[np.floating[Any]] | Sequence[float]) -> tuple[float, float]:
    """``(arousal, valence)`` = expectation of the class coordinates under ``probs`` ``[4]``."""
    p = np.asarray(probs, dtype=np.float64).reshape(len(LABELS))
    valence, arousal = p @ _VA
    return float(arousal), float(valence)


@dataclass(frozen=True)
class WindowScore:
    """One window's place in the stream and its class probabilities."""

    start_s: float
    end_s: float
    speech_s: float
    scores: tuple[float, ...]

    def to_dict(self) -> dict[str, Any]:
        return {
            "start_s": round(self.start_s, 3),
            "end_s": round(self.end_s, 3),
            "scores": {k: round(float(v), 4) for k, v in zip(LABELS, self.scores, strict=True)},
        }


@dataclass(frozen=True)
class EmotionResult:
    """The reading for one utterance or voice note."""

    emotion: str | None
    confidence: float
    scores: tuple[float, ...]
    arousal: float
    valence: float
    speech_s: float
    start_s: float
    end_s: float
    windows: tuple[WindowScore, ...] = field(default_factory=tuple)
    reason: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """The classify record and MQTT event object (without ``file``), with ``start_s`` and
        ``end_s``."""
        d: dict[str, Any] = {
            "emotion": self.emotion,
            "confidence": round(self.confidence, 4),
            "scores": {k: round(float(v), 4) for k, v in zip(LABELS, self.scores, strict=False)},
            "arousal": round(self.arousal, 4),
            "valence": round(self.valence, 4),
            "speech_s": round(self.speech_s, 3),
            "windows": [w.to_dict() for w in self.windows],
            "start_s": round(self.start_s, 3),
            "end_s": round(self.end_s, 3),
        }
        if self.reason is not None:
            d["reason"] = self.reason
        return d


def combine(
    windows: Sequence[WindowScore], speech_s: float, start_s: float, end_s: float
) -> EmotionResult:
    """Pool window scores into a result; no windows gives ``emotion=None`` with a reason."""
    if not windows:
        return EmotionResult(
            emotion=None, confidence=0.0, scores=(), arousal=0.0, valence=0.0,
            speech_s=speech_s, start_s=start_s, end_s=end_s,
            reason=NO_SPEECH if speech_s <= 0 else ALL_SKIPPED,
        )
    pooled = pool(np.array([w.scores for w in windows]), [w.speech_s for w in windows])
    best = int(np.argmax(pooled))
    arousal, valence = arousal_valence(pooled)
    return EmotionResult(
        emotion=LABELS[best],
        confidence=float(pooled[best]),
        scores=tuple(float(v) for v in pooled),
        arousal=arousal,
        valence=valence,
        speech_s=speech_s,
        start_s=start_s,
        end_s=end_s,
        windows=tuple(windows),
    )
