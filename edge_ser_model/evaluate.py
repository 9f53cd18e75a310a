"""``edge-ser-model evaluate``: leave-one-corpus-out and speaker-independent k-fold CV.

Leave-one-corpus-out (``loco_report.json`` / ``.md``, :mod:`edge_ser_model.loco`) chooses models;
speaker CV (``cv_report.json`` / ``.md`` and ``confusion.png``, row-normalised, summed over folds)
stays beside it. The eGeMAPS baseline runs on the same splits.
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from edge_ser import LABELS
from edge_ser_model import VOICE_WEIGHT
from edge_ser_model.baseline import baseline_predictions, egemaps_features
from edge_ser_model.data import Clip, corpus_folds, labels_of, speaker_folds, validation_split
from edge_ser_model.encoders.compact import CompactHead
from edge_ser_model.encoders.voice import VoiceFeatures, train_voice_head, voice_proba
from edge_ser_model.loco import best_system, fold_table, sample_weights, write_loco_report
from edge_ser_model.metrics import confusion, scores, summarise
from edge_ser_model.train import TrainConfig, predict_proba, train_head

log = logging.getLogger(__name__)
Folds = Sequence[tuple[NDArray[np.int64], NDArray[np.int64]]]


@dataclass(frozen=True)
class VoiceSetup:
    """The voice branch (loaded once), its cached features ``[n, copies, 1536]``, mixing
    weight and LR C."""

    branch: VoiceFeatures
    feats: NDArray[np.float32]
    weight: float = VOICE_WEIGHT
    c: float = 0.01


def mix_voice(p_heads: NDArray[np.float64], p_voice: NDArray[np.float64],
              weight: float) -> NDArray[np.float64]:
    """The shipped graph's log-linear mix, renormalised: ``p ∝ p_heads^(1-w) p_voice^w``."""
    logp = (1.0 - weight) * np.log(p_heads + 1e-7) + weight * np.log(p_voice + 1e-7)
    p = np.exp(logp - logp.max(axis=1, keepdims=True))
    return np.asarray(p / p.sum(axis=1, keepdims=True), dtype=np.float64)


def train_members(
    clips: Sequence[Clip], feats: NDArray[np.float32], train_idx: NDArray[np.int64],
    cfg: TrainConfig, seeds: Sequence[int],
) -> list[CompactHead]:
    """One head per seed: trained ``cfg.epochs`` on every clip of ``train_idx``, or with
    ``cfg.patience > 0`` early-stopped on its own speaker-disjoint validation split."""
    labels = labels_of(clips)
    members = []
    for n, seed in enumerate(seeds, start=1):
        log.info("training head %d of %d (seed %d, %d clips, %d epochs)", n, len(seeds), seed,
                 len(train_idx), cfg.epochs)
        if cfg.patience > 0:
            fit_idx, val_idx = validation_split(clips, train_idx, seed=seed)
        else:
            fit_idx, val_idx = train_idx, None
        member_cfg = TrainConfig(**{**asdict(cfg), "seed": seed})
        model, hist = train_head(feats, labels, fit_idx, val_idx, member_cfg)
        if val_idx is not None:
            log.debug("seed %d: best epoch %d, val UAR %.3f", seed, hist["best_epoch"],
                      hist["val_uar"])
        members.append(model)
    return members


def cross_validate(
    clips: Sequence[Clip], feats: NDArray[np.float32], folds: Folds, cfg: TrainConfig,
    seeds: Sequence[int], voice: VoiceSetup | None = None,
) -> dict[str, list[NDArray[np.float64]]]:
    """Probabilities ``[n_test, 4]`` for each fold's test part, per system.

    ``compact`` is the shipped recipe: the MLP heads' ensemble, mixed with the voice head when
    ``voice`` is given; then also ``compact_functionals`` (the heads alone) and ``voice_lr``.
    """
    out: dict[str, list[NDArray[np.float64]]] = {"compact": []}
    if voice is not None:
        out.update(compact_functionals=[], voice_lr=[])
    y = labels_of(clips)
    for k, (train_idx, test_idx) in enumerate(folds):
        t0 = time.monotonic()
        members = train_members(clips, feats, train_idx, cfg, seeds)
        probs = np.mean([predict_proba(m, feats, test_idx) for m in members], axis=0)
        if voice is not None:
            head = train_voice_head(voice.feats, y, train_idx, voice.c)
            pv = voice_proba(head, voice.feats, test_idx)
            out["compact_functionals"].append(probs)
            out["voice_lr"].append(pv)
            probs = mix_voice(probs, pv, voice.weight)
        out["compact"].append(probs)
        log.info(
            "fold %d: UAR %.3f (%.0f s)", k + 1, scores(y[test_idx], probs.argmax(1))["uar"],
            time.monotonic() - t0,
        )
    return out


def fold_scores(
    clips: Sequence[Clip], folds: Folds, preds: Sequence[NDArray[np.int64]]
) -> tuple[list[dict[str, float]], NDArray[np.int64]]:
    """Per-fold scores (with ``uar_<corpus>``: UAR within each corpus's part of the fold)."""
    y = labels_of(clips)
    corpus = np.array([c.corpus for c in clips])
    names = sorted(set(corpus.tolist())) if len(set(corpus.tolist())) > 1 else []
    per_fold = []
    for (_, te), p in zip(folds, preds, strict=True):
        row = scores(y[te], p)
        for name in names:
            sel = corpus[te] == name
            row[f"uar_{name}"] = scores(y[te][sel], p[sel])["uar"] if sel.any() else float("nan")
        per_fold.append(row)
    cm = sum(
        (confusion(y[te], p) for (_, te), p in zip(folds, preds, strict=True)),
        np.zeros((len(LABELS), len(LABELS)), dtype=np.int64),
    )
    return per_fold, cm


def plot_confusion(cm: NDArray[np.int64], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    norm = cm / np.maximum(cm.sum(axis=1, keepdims=True), 1)
    fig, ax = plt.subplots(figsize=(4.8, 4.2))
    ax.imshow(norm, cmap="Blues", vmin=0.0, vmax=1.0)
    ax.set_xticks(range(len(LABELS)), LABELS, rotation=30)
    ax.set_yticks(range(len(LABELS)), LABELS)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title, fontsize=9)
    for i in range(len(LABELS)):
        for j in range(len(LABELS)):
            ax.text(j, i, f"{norm[i, j]:.2f}", ha="center", va="center",
                    color="white" if norm[i, j] > 0.5 else "black")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def markdown_table(systems: dict[str, dict[str, dict[str, float]]]) -> str:
    first = next(iter(systems.values()), {})
    keys = ["uar", "wa", "macro_f1"] + [f"f1_{lab}" for lab in LABELS] + sorted(
        k for k in first if k.startswith("uar_"))
    lines = ["| system | " + " | ".join(keys) + " |", "|---" * (len(keys) + 1) + "|"]
    for name, summ in systems.items():
        cells = [f"{summ[k]['mean']:.3f} ± {summ[k]['std']:.3f}" for k in keys]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def write_report(
    out_dir: Path, clips: Sequence[Clip], folds: Folds,
    preds_by_system: dict[str, Sequence[NDArray[np.int64]]], meta: dict[str, Any],
) -> dict[str, Any]:
    """Write cv_report.json / .md and confusion.png (of ``compact``); returns the JSON object."""
    out_dir.mkdir(parents=True, exist_ok=True)
    systems: dict[str, dict[str, dict[str, float]]] = {}
    report: dict[str, Any] = {"meta": meta, "systems": {}}
    for name, preds in preds_by_system.items():
        per_fold, cm = fold_scores(clips, folds, preds)
        systems[name] = summarise(per_fold)
        report["systems"][name] = {
            "summary": systems[name], "per_fold": per_fold, "confusion": cm.tolist(),
        }
        if name == next(iter(preds_by_system)):  # the evaluated system, before baselines
            plot_confusion(cm, out_dir / "confusion.png",
                           f"{name}, {len(folds)}-fold speaker-independent CV")
    (out_dir / "cv_report.json").write_text(json.dumps(report, indent=2) + "\n")
    md = [
        f"# Speaker-independent {len(folds)}-fold CV ({meta.get('data', '')})",
        "",
        f"{len(clips)} clips, {len({c.speaker for c in clips})} speakers; mean ± std over folds.",
        "",
        markdown_table(systems),
        "",
        "Settings: `" + json.dumps(meta.get("settings", {}), sort_keys=True) + "`",
        "",
    ]
    (out_dir / "cv_report.md").write_text("\n".join(md))
    return report


def run_baselines(
    clips: Sequence[Clip], folds: Folds, cache_dir: Path | None
) -> dict[str, Sequence[NDArray[np.int64]]]:
    feats = egemaps_features(clips, cache_dir)
    y = labels_of(clips)
    return {
        "egemaps_lr": baseline_predictions(clips, feats, y, folds, per_speaker=False),
        "egemaps_lr_spk_znorm": baseline_predictions(clips, feats, y, folds, per_speaker=True),
    }


Meta = Callable[[argparse.Namespace, str], dict[str, Any]]


def _protocols(args: argparse.Namespace) -> tuple[bool, bool]:
    return args.protocol in ("loco", "both"), args.protocol in ("cv", "both")


def _speaker_meta(args: argparse.Namespace) -> str:
    return (f"speaker-independent {args.folds}-fold CV (StratifiedGroupKFold by manifest "
            f"speaker, seed {args.fold_seed})")


def _loco_lines(report: dict[str, Any], out: Path) -> list[str]:
    lines = [f"{name:28s} LOCO UAR mean {s['uar_mean']:.3f} (worst {s['uar_min']:.3f}, top "
             f"share {s['top_share_max']:.2f})"
             for name, s in sorted(report["systems"].items(), key=lambda kv: -kv[1]["uar_mean"])]
    lines.append(f"chosen: {report['choice']['system']}; wrote {out}/loco_report.json, "
                 "loco_report.md")
    return lines


def _cv_lines(report: dict[str, Any], out: Path) -> list[str]:
    lines = []
    for name, system in report["systems"].items():
        s = system["summary"]
        lines.append(f"{name:28s} CV UAR {s['uar']['mean']:.3f} ± {s['uar']['std']:.3f}  "
                     f"WA {s['wa']['mean']:.3f}  macro-F1 {s['macro_f1']['mean']:.3f}")
    lines.append(f"wrote {out}/cv_report.json, cv_report.md, confusion.png")
    return lines


def _baseline_table(clips: Sequence[Clip], folds: Folds, names: Sequence[str],
                    cache: Path | None) -> dict[str, Any]:
    out = {}
    for name, preds in run_baselines(clips, folds, cache).items():
        if name == "egemaps_lr":  # the per-speaker oracle needs labels of speakers: not here
            out[name] = {**fold_table(clips, folds, names, preds), "head": "baseline"}
    return out


def evaluate_compact(args: argparse.Namespace, clips: Sequence[Clip], feats: NDArray[np.float32],
                     voice: VoiceSetup | None, cfg: TrainConfig, meta: Meta) -> list[str]:
    """The compact recipe (heads + voice branch) under the chosen protocols."""
    loco, cv = _protocols(args)
    lines: list[str] = []
    if loco:
        names, folds = corpus_folds(clips)
        probs = cross_validate(clips, feats, folds, cfg, args.seeds, voice)
        systems = {name: {**fold_table(clips, folds, names, [p.argmax(1) for p in fold_probs]),
                          "head": "compact"} for name, fold_probs in probs.items()}
        choice = best_system(systems)
        if not args.no_baseline:
            systems.update(_baseline_table(clips, folds, names, args.cache))
        report = {"meta": meta(args, "leave-one-corpus-out"), "corpora": names,
                  "systems": systems, "choice": {"system": choice}}
        write_loco_report(args.out, report)
        lines += _loco_lines(report, args.out)
    if cv:
        folds = speaker_folds(clips, args.folds, args.fold_seed)
        probs = cross_validate(clips, feats, folds, cfg, args.seeds, voice)
        preds: dict[str, Sequence[NDArray[np.int64]]] = {
            name: [p.argmax(1) for p in fold_probs] for name, fold_probs in probs.items()}
        if not args.no_baseline:
            preds.update(run_baselines(clips, folds, args.cache))
        report = write_report(args.out, clips, folds, preds, meta(args, _speaker_meta(args)))
        lines += _cv_lines(report, args.out)
    return lines


def _choice(systems: dict[str, Any]) -> dict[str, Any]:
    """The best system by mean UAR, as what ``train`` needs to rebuild it."""
    best = best_system(systems)
    return {"system": best, "representation": systems[best]["representation"],
            "head": systems[best]["head"], "c": systems[best].get("c", 0.1)}


def evaluate_frozen(args: argparse.Namespace, clips: Sequence[Clip], feats: NDArray[np.float32],
                    backbone: Any, cfg: TrainConfig, meta: Meta) -> list[str]:
    """Choose layers, pooling and head of a frozen encoder by leave-one-corpus-out
    (``edge_ser_model.select``); speaker CV of the choice beside it."""
    from edge_ser_model.select import search, system_of

    loco, cv = _protocols(args)
    weights = sample_weights(clips, args.balance)
    lines: list[str] = []
    choice: dict[str, Any] | None = None
    if loco:
        names, folds = corpus_folds(clips)
        systems = search(clips, feats, backbone.width, backbone.layers, folds, names, cfg,
                         args.seeds, weights)
        choice = _choice(systems)
        if not args.no_baseline:
            systems.update(_baseline_table(clips, folds, names, args.cache))
        report = {"meta": {**meta(args, "leave-one-corpus-out"), "backbone": backbone.name,
                           "weights": backbone.weights_id},
                  "corpora": names, "systems": systems, "choice": choice}
        write_loco_report(args.out, report)
        lines += _loco_lines(report, args.out)
    if cv:
        folds = speaker_folds(clips, args.folds, args.fold_seed)
        y = labels_of(clips)
        if choice is None:  # CV alone: every candidate under CV, the best by its mean
            names = [f"fold{i + 1}" for i in range(len(folds))]
            systems = search(clips, feats, backbone.width, backbone.layers, folds, names, cfg,
                             args.seeds, weights)
            choice = _choice(systems)
        system = system_of(choice, feats, y, backbone.width, cfg, args.seeds, weights)
        preds: dict[str, Sequence[NDArray[np.int64]]] = {
            choice["system"]: [system(tr, te).argmax(1) for tr, te in folds]}
        if not args.no_baseline:
            preds.update(run_baselines(clips, folds, args.cache))
        report = write_report(args.out, clips, folds, preds, meta(args, _speaker_meta(args)))
        lines += _cv_lines(report, args.out)
    return lines
