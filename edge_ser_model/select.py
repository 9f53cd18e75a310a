"""Choose a frozen-encoder model by leave-one-corpus-out: which layers, pooling and head.

Every candidate representation (each hidden state alone, and all of them concatenated; mean or
mean + std pooling) is scored with the baseline head, a balanced logistic regression; the best
few then also get the paper's head (an MLP trained with focal loss, label smoothing, AdamW and a
cosine schedule, one member per seed) and a more strongly regularised regression. The system
with the best mean UAR over the left-out corpora is the choice that ``train --evaluation``
builds.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import asdict
from typing import Any

import numpy as np
from numpy.typing import NDArray

from edge_ser_model.data import Clip, labels_of
from edge_ser_model.frozen import POOLINGS, Representation
from edge_ser_model.loco import Folds, System, fold_table, lr_system, run_folds
from edge_ser_model.train import TrainConfig, predict_proba, train_head

log = logging.getLogger(__name__)
STRONG_C = 0.01  # the stronger-regularised LR tried on the best representations


def candidates(layers: int) -> list[Representation]:
    """Each hidden state alone (both poolings) and all of them concatenated (mean)."""
    reps = [Representation((i,), pooling) for i in range(layers) for pooling in POOLINGS]
    reps.append(Representation(tuple(range(layers)), "mean"))
    return reps


def mlp_system(feats: NDArray[np.float32], y: NDArray[np.int64], cfg: TrainConfig,
               seeds: Sequence[int], weights: NDArray[np.float64] | None) -> System:
    """The paper's head, one member per seed, probabilities averaged."""

    def run(train: NDArray[np.int64], test: NDArray[np.int64]) -> NDArray[np.float64]:
        probs = []
        for seed in seeds:
            head, _ = train_head(feats, y, train, None,
                                 TrainConfig(**{**asdict(cfg), "seed": seed}), weights)
            probs.append(predict_proba(head, feats, test))
        return np.asarray(np.mean(probs, axis=0), dtype=np.float64)

    return run


def search(clips: Sequence[Clip], feats: NDArray[np.float32], width: int, layers: int,
           folds: Folds, names: Sequence[str], cfg: TrainConfig, seeds: Sequence[int],
           weights: NDArray[np.float64], mlp_top: int = 2, lr_c: float = 0.1,
           ) -> dict[str, dict[str, Any]]:
    """Scores of every candidate system under ``folds`` (see the module docstring)."""
    y = labels_of(clips)
    systems: dict[str, dict[str, Any]] = {}
    for rep in candidates(layers):
        x = rep.select(feats[:, 0], width)
        name = f"lr-{rep.name}"
        probs = run_folds(name, lr_system(x, y, weights, lr_c), folds, names)
        systems[name] = {**fold_table(clips, folds, names, probs), "head": "lr",
                         "representation": rep.name}
        log.info("%s: LOCO mean UAR %.3f", name, systems[name]["uar_mean"])
    ranked = sorted(systems, key=lambda k: -systems[k]["uar_mean"])[:mlp_top]
    for lr_name in ranked:
        rep = Representation.parse(systems[lr_name]["representation"])
        name = f"lr{STRONG_C:g}-{rep.name}"
        x = rep.select(feats[:, 0], width)
        probs = run_folds(name, lr_system(x, y, weights, STRONG_C), folds, names)
        systems[name] = {**fold_table(clips, folds, names, probs), "head": "lr", "c": STRONG_C,
                         "representation": rep.name}
        log.info("%s: LOCO mean UAR %.3f", name, systems[name]["uar_mean"])
        name = f"mlp-{rep.name}"
        sel = rep.select(feats, width)
        probs = run_folds(name, mlp_system(sel, y, cfg, seeds, weights), folds, names)
        systems[name] = {**fold_table(clips, folds, names, probs), "head": "mlp",
                         "representation": rep.name}
        log.info("%s: LOCO mean UAR %.3f", name, systems[name]["uar_mean"])
    return systems


def system_of(choice: dict[str, Any], feats: NDArray[np.float32], y: NDArray[np.int64],
              width: int, cfg: TrainConfig, seeds: Sequence[int],
              weights: NDArray[np.float64], lr_c: float = 0.1) -> System:
    """The chosen system (``{"representation", "head"}``) as a fold runner."""
    rep = Representation.parse(choice["representation"])
    if choice["head"] == "lr":
        return lr_system(rep.select(feats[:, 0], width), y, weights, float(choice.get("c", lr_c)))
    return mlp_system(rep.select(feats, width), y, cfg, seeds, weights)
