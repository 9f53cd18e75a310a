"""Leave-one-corpus-out: folds, the report's collapse detector, and the frozen-encoder path end
to end (random weights: the figures mean nothing, the path is real)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from edge_ser import LABELS
from edge_ser_model.data import Clip, corpus_folds
from edge_ser_model.metrics import scores, top_share

pytestmark = pytest.mark.train


def clips_of(spec: list[tuple[str, str, bool]]) -> list[Clip]:
    return [Clip(Path(f"{c}-{i}.wav"), c, f"{c}-s{i % 2}", LABELS.index(e), calm=calm)
            for i, (c, e, calm) in enumerate(spec)]


def test_each_corpus_is_left_out_once_and_calm_is_never_tested() -> None:
    spec = [(c, e, False) for c in ("a", "b", "c") for e in LABELS]
    spec += [("b", "neutral", True)]  # calm trained as neutral
    clips = clips_of(spec)
    names, folds = corpus_folds(clips)
    assert names == ["a", "b", "c"]
    for name, (train, test) in zip(names, folds, strict=True):
        assert {clips[i].corpus for i in test} == {name}
        assert name not in {clips[i].corpus for i in train}
        assert not any(clips[i].calm for i in test)
    assert len(set(np.concatenate([te for _, te in folds]).tolist())) == len(clips) - 1
    with pytest.raises(Exception, match="at least two corpora"):
        corpus_folds(clips_of([("a", "anger", False)]))


def test_collapse_detector() -> None:
    y = np.array([0, 1, 2, 3] * 5)
    assert top_share(np.full(20, 3)) == 1.0
    assert top_share(y) == 0.25
    s = scores(y, np.full(20, 3))
    assert s["uar"] == 0.25 and s["top_share"] == 1.0
    assert s["recall_sadness"] == 1.0 and s["recall_anger"] == 0.0


def test_a_loco_report_goes_into_the_metadata() -> None:
    """``build --encoder compact`` hands train a leave-one-corpus-out report (it crashed on
    the missing CV summary)."""
    from edge_ser_model.ship import evaluation_summary

    per = {c: {"uar": u} for c, u in (("a", 0.3), ("b", 0.5))}
    report = {"corpora": ["a", "b"], "choice": {"system": "compact"}, "meta": {},
              "systems": {"compact": {"uar_mean": 0.4, "uar_min": 0.3, "per_corpus": per}}}
    summary = json.loads(evaluation_summary(report))
    assert summary["protocol"] == "leave-one-corpus-out" and summary["uar_mean"] == 0.4
    assert summary["per_corpus_uar"] == {"a": 0.3, "b": 0.5}


@pytest.mark.slow
@pytest.mark.parametrize("encoder", ["whisper-tiny", "distilhubert"])
def test_build_runs_end_to_end_with_random_weights(encoder: str, shared_data: Path,
                                                   tmp_path: Path) -> None:
    """The one documented command: leave-one-corpus-out, speaker CV, the choice trained,
    exported, quantized; the model passes the contract and the daemon's loader."""
    pytest.importorskip("torch")
    out = tmp_path / "models"
    cmd = [sys.executable, "-m", "edge_ser_model", "build", "--encoder", encoder,
           "--random-init", "--data", str(shared_data), "--limit", "48", "--copies", "0",
           "--folds", "2", "--seeds", "0", "--epochs", "2", "--no-baseline",
           "--cache", str(tmp_path / "cache"), "--out", str(out)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=1200)
    assert proc.returncode == 0, proc.stderr[-3000:]
    loco = json.loads((out / "eval" / "loco_report.json").read_text())
    assert loco["corpora"] == ["korean", "ravdess", "turevdb", "urdu"]
    chosen = loco["systems"][loco["choice"]["system"]]
    assert chosen["uar_mean"] == max(s["uar_mean"] for s in loco["systems"].values())
    assert set(chosen["per_corpus"]) == set(loco["corpora"])
    assert "(chosen)" in (out / "eval" / "loco_report.md").read_text()
    assert json.loads((out / "eval" / "cv_report.json").read_text())["systems"]

    from edge_ser.model import OnnxModel
    from edge_ser_model.export import check_contract, read_metadata

    int8 = out / f"edge-ser-{encoder}.int8.onnx"
    check_contract(int8)
    meta = read_metadata(int8)
    assert meta["encoder"] == encoder and meta["batching"] == "per-window"
    assert meta["representation"] == loco["choice"]["representation"]
    assert "non-commercial" in meta["license"]
    model = OnnxModel(int8)
    probs = model.probabilities(np.zeros((1, 128000), np.float32) + 0.01)
    assert probs.shape == (1, 4) and np.isclose(probs.sum(), 1.0, atol=1e-4)
    report = json.loads((out / f"edge-ser-{encoder}.train.json").read_text())
    assert 0.0 <= report["int8"]["int8_vs_fp32"]["argmax_agreement"] <= 1.0
    card = (out / f"edge-ser-{encoder}.MODEL_CARD.md").read_text()
    assert "no speech model" in card and "(this model)" in card and "non-commercial" in card
