"""Training a compact head on cached feature vectors (the paper's recipe).

Focal loss (gamma 2, balanced class weights, label smoothing 0.1), AdamW, cosine schedule with
10 % linear warmup. The paper's early stopping on validation UAR (patience 6, on a
speaker-disjoint validation split) is available (``patience > 0``), but by default every member
trains all 80 epochs on every training speaker: with ~6 validation speakers the stopping epoch
was noise, and measured CV UAR rose with fixed length (20: 0.636, 45: 0.655, 80: 0.663, heads
alone) and varied less from seed to seed (docs/training.md). Each epoch draws one random copy
(clean or augmented) of every clip; mixup of feature vectors is optional.
"""

from __future__ import annotations

import copy
import logging
import math
from dataclasses import dataclass, field

import numpy as np
import torch
from numpy.typing import NDArray

from edge_ser import LABELS
from edge_ser_model.encoders.compact import CompactHead
from edge_ser_model.losses import FocalLoss, balanced_weights
from edge_ser_model.metrics import uar

log = logging.getLogger(__name__)


@dataclass
class TrainConfig:
    epochs: int = 80
    batch_size: int = 32
    lr: float = 3e-3
    weight_decay: float = 0.05
    warmup: float = 0.1
    patience: int = 0  # 0: no early stopping (all epochs); the paper's is 6
    gamma: float = 2.0
    smoothing: float = 0.1
    mixup: float = 0.0
    seed: int = 0
    head: dict[str, float] = field(default_factory=dict)


def fit_standardiser(head: CompactHead, feats: NDArray[np.float32],
                     idx: NDArray[np.int64]) -> None:
    """Set the head's fixed mean/std from the clean training clips."""
    f = torch.from_numpy(feats[idx, 0])
    with torch.no_grad():
        head.feat_mean.copy_(f.mean(0))
        head.feat_std.copy_(f.std(0).clamp(min=1e-3))


def predict_proba(head: CompactHead, feats: NDArray[np.float32],
                  idx: NDArray[np.int64]) -> NDArray[np.float64]:
    """Class probabilities ``[len(idx), 4]`` for the clean copies of ``idx``."""
    head.eval()
    with torch.no_grad():
        logits = head(torch.from_numpy(feats[idx, 0]))
        return np.asarray(torch.softmax(logits, dim=-1).numpy(), dtype=np.float64)


def lr_factor(step: int, total: int, warmup: float) -> float:
    """Linear warmup over ``warmup * total`` steps, then cosine decay to 0."""
    w = max(1, int(warmup * total))
    if step < w:
        return (step + 1) / w
    return 0.5 * (1.0 + math.cos(math.pi * min(1.0, (step - w) / max(1, total - w))))


def train_head(
    feats: NDArray[np.float32], labels: NDArray[np.int64], fit_idx: NDArray[np.int64],
    val_idx: NDArray[np.int64] | None, cfg: TrainConfig,
    weights: NDArray[np.float64] | None = None,
) -> tuple[CompactHead, dict[str, float]]:
    """Train one head; returns its weights and a small history.

    With ``val_idx`` (early stopping) the weights are the best on validation UAR; without it they
    are those after the last epoch (``val_uar`` is then -1). With per-clip ``weights`` each epoch
    draws its clips in proportion to them (with replacement) instead of each clip once.
    """
    torch.manual_seed(cfg.seed)
    rng = np.random.default_rng(cfg.seed)
    head = CompactHead(feats.shape[-1], **cfg.head)  # type: ignore[arg-type]
    fit_standardiser(head, feats, fit_idx)
    alpha = torch.from_numpy(balanced_weights(labels[fit_idx], len(LABELS)))
    loss_fn = FocalLoss(cfg.gamma, alpha, cfg.smoothing)
    opt = torch.optim.AdamW(head.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    total = cfg.epochs * math.ceil(len(fit_idx) / cfg.batch_size)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: lr_factor(s, total, cfg.warmup))
    onehot = torch.nn.functional.one_hot(torch.from_numpy(labels), len(LABELS)).float()
    best_state, best_uar, best_epoch, bad = copy.deepcopy(head.state_dict()), -1.0, 0, 0
    use_val = val_idx is not None and len(val_idx) > 0
    epoch = 0
    for epoch in range(cfg.epochs):
        head.train()
        if weights is None:
            order = rng.permutation(fit_idx)
        else:
            p = weights[fit_idx] / weights[fit_idx].sum()
            order = rng.choice(fit_idx, size=len(fit_idx), p=p)
        pick = rng.integers(0, feats.shape[1], size=len(order))
        for start in range(0, len(order), cfg.batch_size):
            batch = order[start : start + cfg.batch_size]
            x = torch.from_numpy(feats[batch, pick[start : start + len(batch)]])
            y = onehot[torch.from_numpy(batch)]
            if cfg.mixup > 0 and len(batch) > 1:
                lam = float(rng.beta(cfg.mixup, cfg.mixup))
                perm = torch.from_numpy(rng.permutation(len(batch)))
                x, y = lam * x + (1 - lam) * x[perm], lam * y + (1 - lam) * y[perm]
            loss = loss_fn(head(x), y)
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
        if not use_val:
            continue
        assert val_idx is not None
        score = uar(labels[val_idx], predict_proba(head, feats, val_idx).argmax(1))
        log.debug("epoch %d val UAR %.3f", epoch + 1, score)
        if score > best_uar:
            best_uar, best_epoch, bad = score, epoch + 1, 0
            best_state = copy.deepcopy(head.state_dict())
        else:
            bad += 1
            if cfg.patience > 0 and bad >= cfg.patience:
                break
    if use_val:
        head.load_state_dict(best_state)
    else:
        best_epoch = epoch + 1
    head.eval()
    return head, {"val_uar": best_uar, "best_epoch": float(best_epoch), "epochs": epoch + 1.0}
