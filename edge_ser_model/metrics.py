"""Classification metrics: WA, UAR, macro-F1, per-class F1, normalised confusion matrix."""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray

from edge_ser import LABELS


def confusion(y_true: NDArray[np.int64], y_pred: NDArray[np.int64], n: int = 4) -> NDArray:
    cm = np.zeros((n, n), dtype=np.int64)
    np.add.at(cm, (np.asarray(y_true), np.asarray(y_pred)), 1)
    return cm


def recalls(cm: NDArray) -> NDArray[np.float64]:
    support = cm.sum(axis=1)
    return np.where(support > 0, np.diag(cm) / np.maximum(support, 1), np.nan)


def uar(y_true: NDArray[np.int64], y_pred: NDArray[np.int64]) -> float:
    """Unweighted average recall over the classes present in ``y_true``."""
    return float(np.nanmean(recalls(confusion(y_true, y_pred, len(LABELS)))))


def f1_per_class(cm: NDArray) -> NDArray[np.float64]:
    tp = np.diag(cm).astype(np.float64)
    prec = tp / np.maximum(cm.sum(axis=0), 1)
    rec = tp / np.maximum(cm.sum(axis=1), 1)
    return np.where(prec + rec > 0, 2 * prec * rec / np.maximum(prec + rec, 1e-12), 0.0)


def scores(y_true: NDArray[np.int64], y_pred: NDArray[np.int64]) -> dict[str, float]:
    """WA, UAR, macro-F1 and ``f1_<label>`` for one set of predictions."""
    cm = confusion(y_true, y_pred, len(LABELS))
    f1 = f1_per_class(cm)
    out = {
        "wa": float(np.trace(cm) / max(cm.sum(), 1)),
        "uar": float(np.nanmean(recalls(cm))),
        "macro_f1": float(f1.mean()),
    }
    out.update({f"f1_{lab}": float(v) for lab, v in zip(LABELS, f1, strict=True)})
    out.update({f"recall_{lab}": float(v) for lab, v in zip(LABELS, recalls(cm), strict=True)})
    out["top_share"] = top_share(y_pred)
    return out


def top_share(y_pred: NDArray[np.int64]) -> float:
    """The share of predictions taken by the most predicted class: a collapse detector (a
    model that answers one class whatever it hears scores 1.0; a balanced one about 0.25)."""
    if len(y_pred) == 0:
        return float("nan")
    return float(np.bincount(np.asarray(y_pred), minlength=len(LABELS)).max() / len(y_pred))


def summarise(per_fold: list[dict[str, float]]) -> dict[str, dict[str, float]]:
    """Mean and (population) std over folds for every metric."""
    keys = per_fold[0].keys()
    return {
        k: {
            "mean": float(np.nanmean([f[k] for f in per_fold])),
            "std": float(np.nanstd([f[k] for f in per_fold])),
        }
        for k in keys
    }
