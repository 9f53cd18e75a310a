"""Leave-one-corpus-out evaluation: train on all corpora but one, test on that one, each in turn.

A board in a stranger's home hears voices, a language and a microphone that no training clip
had; speaker-independent CV within the training corpora does not show how a model fares there
(it did not show the pretrained encoder's gain: docs/training.md). Here each corpus is a "home":
the report gives per-corpus UAR, their mean (the figure models are chosen by), per-class recall
and the share of predictions taken by the most predicted class (1.0: the model collapsed onto one
answer). ``loco_report.json`` also records the system chosen for ``train --evaluation``.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from edge_ser import LABELS
from edge_ser_model.data import Clip, labels_of
from edge_ser_model.metrics import confusion, scores

log = logging.getLogger(__name__)
Folds = Sequence[tuple[NDArray[np.int64], NDArray[np.int64]]]
#: ``(train_idx, test_idx) -> probabilities [len(test_idx), 4]``
System = Callable[[NDArray[np.int64], NDArray[np.int64]], NDArray[np.float64]]


def sample_weights(clips: Sequence[Clip], balance: str) -> NDArray[np.float64]:
    """Per-clip training weights: ``corpus`` gives every (corpus, label) cell the same total
    (TurEV-DB's 1.3k one-word clips would otherwise outweigh Korean's 300 sentences 4 to 1);
    ``class`` only balances labels."""
    keys = [(c.corpus, c.label) if balance == "corpus" else c.label for c in clips]
    counts: dict[Any, int] = {}
    for k in keys:
        counts[k] = counts.get(k, 0) + 1
    w = np.array([1.0 / counts[k] for k in keys])
    return w * (len(w) / w.sum())


def lr_system(x: NDArray[np.float32], y: NDArray[np.int64], weights: NDArray[np.float64],
              c: float = 0.1) -> System:
    """Balanced logistic regression on standardised features (the baseline to beat)."""

    def run(train: NDArray[np.int64], test: NDArray[np.int64]) -> NDArray[np.float64]:
        clf = fit_lr(x[train], y[train], weights[train], c)
        return np.asarray(clf.predict_proba(x[test]), dtype=np.float64)

    return run


def fit_lr(x: NDArray[np.float32], y: NDArray[np.int64], w: NDArray[np.float64],
           c: float = 0.1) -> Any:
    """A StandardScaler + LogisticRegression pipeline fitted with sample weights ``w``."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    clf = make_pipeline(StandardScaler(), LogisticRegression(C=c, max_iter=3000))
    clf.fit(x, y, logisticregression__sample_weight=w)
    if list(clf.classes_) != list(range(len(LABELS))):
        raise ValueError("training part lacks a label")
    return clf


def run_folds(name: str, system: System, folds: Folds, names: Sequence[str]
              ) -> list[NDArray[np.int64]]:
    """Each fold's predicted labels."""
    out = []
    t0 = time.monotonic()
    for (train, test), corpus in zip(folds, names, strict=True):
        out.append(np.asarray(system(train, test).argmax(1), dtype=np.int64))
        log.debug("%s: %s done", name, corpus)
    log.info("%s: %d folds in %.0f s", name, len(folds), time.monotonic() - t0)
    return out


def fold_table(clips: Sequence[Clip], folds: Folds, names: Sequence[str],
               preds: Sequence[NDArray[np.int64]]) -> dict[str, Any]:
    """Per-corpus scores of one system's predicted labels and their mean (``uar_mean``
    chooses models)."""
    y = labels_of(clips)
    per: dict[str, dict[str, float]] = {}
    cm = np.zeros((len(LABELS), len(LABELS)), dtype=np.int64)
    for (_, test), corpus, pred in zip(folds, names, preds, strict=True):
        per[corpus] = scores(y[test], pred)
        cm += confusion(y[test], pred)
    uars = [per[c]["uar"] for c in names]
    return {"per_corpus": per, "uar_mean": float(np.mean(uars)), "uar_min": float(np.min(uars)),
            "top_share_max": float(max(per[c]["top_share"] for c in names)),
            "confusion": cm.tolist()}


def markdown(report: dict[str, Any]) -> str:
    names: list[str] = report["corpora"]
    systems: dict[str, Any] = report["systems"]
    lines = [
        f"# Leave-one-corpus-out ({report['meta'].get('data', '')})", "",
        "Train on the other corpora, test on the named one (its four-label clips). UAR per "
        "corpus, their mean and worst; `top` is the largest share of one predicted class in a "
        "corpus (1.0 = collapsed onto one answer).", "",
        "| system | " + " | ".join(names) + " | mean | worst | top |",
        "|---" * (len(names) + 4) + "|",
    ]
    for name, s in sorted(systems.items(), key=lambda kv: -kv[1]["uar_mean"]):
        cells = [f"{s['per_corpus'][c]['uar']:.3f}" for c in names]
        mark = " **(chosen)**" if name == report.get("choice", {}).get("system") else ""
        lines.append(f"| {name}{mark} | " + " | ".join(cells)
                     + f" | {s['uar_mean']:.3f} | {s['uar_min']:.3f} | {s['top_share_max']:.2f} |")
    choice = report.get("choice")
    if choice:
        best = systems[choice["system"]]
        lines += ["", f"Per-class recall of {choice['system']}:", "",
                  "| corpus | " + " | ".join(LABELS) + " | top |", "|---" * (len(LABELS) + 2) + "|"]
        for c in names:
            row = best["per_corpus"][c]
            cells = ["-" if np.isnan(row[f"recall_{lab}"]) else f"{row[f'recall_{lab}']:.2f}"
                     for lab in LABELS]
            lines.append(f"| {c} | " + " | ".join(cells) + f" | {row['top_share']:.2f} |")
    lines += ["", "Settings: `" + json.dumps(report["meta"].get("settings", {}), sort_keys=True)
              + "`", ""]
    return "\n".join(lines)


def write_loco_report(out_dir: Path, report: dict[str, Any]) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "loco_report.json").write_text(json.dumps(_finite(report), indent=2) + "\n")
    (out_dir / "loco_report.md").write_text(markdown(report))


def _finite(value: Any) -> Any:
    """NaN (a recall of a label the corpus lacks) as null: strict JSON."""
    if isinstance(value, float) and not np.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(v) for v in value]
    return value


def best_system(systems: dict[str, Any], exclude: Sequence[str] = ()) -> str:
    """The system with the highest mean UAR over the left-out corpora."""
    pool = {k: v for k, v in systems.items() if k not in exclude}
    return max(pool, key=lambda k: pool[k]["uar_mean"])
