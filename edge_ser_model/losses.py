"""The paper's objective: focal loss (gamma=2) with balanced class weights and label smoothing."""

from __future__ import annotations

import numpy as np
import torch.nn.functional as F
from numpy.typing import NDArray
from torch import Tensor, nn


def balanced_weights(labels: NDArray[np.int64], n_classes: int) -> NDArray[np.float32]:
    """sklearn's 'balanced' class weights: ``n / (n_classes * count_c)``."""
    counts = np.bincount(labels, minlength=n_classes).astype(np.float64)
    w = len(labels) / (n_classes * np.maximum(counts, 1.0))
    return w.astype(np.float32)


class FocalLoss(nn.Module):
    """``mean_i( sum_c alpha_c * q_ic * (1 - p_ic)^gamma * -log p_ic )``.

    ``q`` is the label-smoothed target (``1 - s + s/C`` on the true class, ``s/C`` elsewhere),
    ``alpha`` the per-class weight. With ``gamma=0``, ``s=0`` and no weights this is cross
    entropy. ``targets`` may also be soft (``[B, C]``, e.g. from mixup).
    """

    def __init__(
        self, gamma: float = 2.0, alpha: Tensor | None = None, smoothing: float = 0.1
    ) -> None:
        super().__init__()
        self.gamma = gamma
        self.smoothing = smoothing
        self.alpha: Tensor | None
        self.register_buffer("alpha", alpha)

    def forward(self, logits: Tensor, targets: Tensor) -> Tensor:
        n_classes = logits.shape[-1]
        if targets.dim() == 1:
            targets = F.one_hot(targets, n_classes).to(logits.dtype)
        q = targets * (1.0 - self.smoothing) + self.smoothing / n_classes
        logp = F.log_softmax(logits, dim=-1)
        p = logp.exp()
        loss = -q * (1.0 - p) ** self.gamma * logp
        if self.alpha is not None:
            loss = loss * self.alpha
        return loss.sum(dim=-1).mean()
