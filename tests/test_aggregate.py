"""Aggregation maths: speech-weighted pooling, arousal/valence, the result schema."""

from __future__ import annotations

import json

import numpy as np
import pytest

from edge_ser import LABELS
from edge_ser.aggregate import (
    CIRCUMPLEX,
    NO_SPEECH,
    WindowScore,
    arousal_valence,
    combine,
    pool,
)


def test_pool_weights_by_speech_seconds() -> None:
    p = np.array([[0.7, 0.1, 0.1, 0.1], [0.1, 0.1, 0.7, 0.1]])
    np.testing.assert_allclose(pool(p, [8.0, 1.0]), (8 * p[0] + p[1]) / 9)
    np.testing.assert_allclose(pool(p, [1.0, 1.0]), p.mean(axis=0))
    np.testing.assert_allclose(pool(p, [0.0, 0.0]), p.mean(axis=0))  # degenerate -> equal
    np.testing.assert_allclose(pool(p[:1], [3.0]), p[0])


def test_pool_rejects_bad_input() -> None:
    with pytest.raises(ValueError):
        pool(np.zeros((0, 4)), [])
    with pytest.raises(ValueError):
        pool(np.full((2, 4), 0.25), [1.0])
    with pytest.raises(ValueError):
        pool(np.full((2, 4), 0.25), [1.0, -1.0])


def test_arousal_valence_is_the_expectation_of_the_table() -> None:
    for i, label in enumerate(LABELS):
        onehot = np.eye(4)[i]
        a, v = arousal_valence(onehot)
        assert (v, a) == pytest.approx(CIRCUMPLEX[label])
    a, v = arousal_valence([0.5, 0.0, 0.0, 0.5])
    assert a == pytest.approx((0.77 - 0.57) / 2) and v == pytest.approx((-0.64 - 0.82) / 2)
    assert arousal_valence([1, 0, 0, 0])[0] > 0 > arousal_valence([0, 0, 0, 1])[0]
    assert arousal_valence([0, 1, 0, 0])[1] > 0 > arousal_valence([1, 0, 0, 0])[1]
    assert all(-1 <= c <= 1 for xy in CIRCUMPLEX.values() for c in xy)


def test_combine_and_schema() -> None:
    ws = [
        WindowScore(1.0, 9.0, 8.0, (0.6, 0.2, 0.1, 0.1)),
        WindowScore(9.0, 11.0, 2.0, (0.1, 0.1, 0.2, 0.6)),
    ]
    r = combine(ws, speech_s=10.0, start_s=0.7, end_s=11.6)
    pooled = (8 * np.array(ws[0].scores) + 2 * np.array(ws[1].scores)) / 10
    assert r.emotion == "anger" and r.confidence == pytest.approx(pooled[0])
    np.testing.assert_allclose(r.scores, pooled)
    d = json.loads(json.dumps(r.to_dict()))
    assert set(d) == {
        "emotion", "confidence", "scores", "arousal", "valence", "speech_s", "windows",
        "start_s", "end_s",
    }
    assert list(d["scores"]) == list(LABELS)
    assert sum(d["scores"].values()) == pytest.approx(1.0, abs=1e-3)
    assert d["windows"][1] == {
        "start_s": 9.0, "end_s": 11.0,
        "scores": {"anger": 0.1, "happiness": 0.1, "neutral": 0.2, "sadness": 0.6},
    }
    assert (d["start_s"], d["end_s"], d["speech_s"]) == (0.7, 11.6, 10.0)
    a, v = arousal_valence(pooled)
    assert d["arousal"] == pytest.approx(a, abs=1e-4) and d["valence"] == pytest.approx(v, abs=1e-4)


def test_no_speech_result() -> None:
    d = combine([], speech_s=0.0, start_s=0.0, end_s=5.0).to_dict()
    assert d["emotion"] is None and d["reason"] == NO_SPEECH
    assert d["windows"] == [] and d["speech_s"] == 0.0
    skipped = combine([], speech_s=3.0, start_s=0.0, end_s=5.0)
    assert skipped.emotion is None and skipped.reason != NO_SPEECH
