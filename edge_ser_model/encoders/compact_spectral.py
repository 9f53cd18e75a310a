"""Level-invariant spectral-balance and energy-contour functionals for the ``compact`` encoder.

All statistics are computed from the masked log-mel ``[B, M, T]`` inside the ONNX graph (no
absolute level: every energy is taken relative to the utterance's own maximum or enters only
through ratios, slopes and shapes). Per frame: alpha ratio (50 Hz-1 kHz vs 1-5 kHz energy),
Hammarberg index (max band below 2 kHz vs 2-5 kHz), spectral slopes 0-500 Hz and 500-1500 Hz,
spectral centroid, 85 % roll-off and entropy of the band distribution, spectral flux. Each gets a
mean, std and the means over the louder / quieter half of the frames (split at the median frame
energy). The frame-energy contour gets percentiles, skew, kurtosis, rise / fall slopes and its
modulation spectrum (share of 1-25 Hz power in 1-2, 2-4, 4-8 and 8-16 Hz), as do three band
groups' envelopes; eight band groups get 10/50/90 % percentiles relative to the energy peak.
A second set repeats the energy-contour statistics and alpha / centroid on the spectrum with the
pre-emphasis gain taken out again (low frequencies dominate the energy, as in loudness).
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import Tensor, nn

from edge_ser import SAMPLE_RATE

EPS = 1e-6
FRAME_RATE = 100.0  # frames per second (10 ms hop)
MOD_BANDS = ((1.0, 2.0), (2.0, 4.0), (4.0, 8.0), (8.0, 16.0))  # Hz
N_SPECTRAL = 78 + 23


def masked_moments(x: Tensor, m: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Mean, std, skew and kurtosis over the last axis of ``x`` ``[B, T]`` where ``m`` is 1."""
    count = m.sum(dim=-1).clamp(min=1e-3)
    mean = (x * m).sum(dim=-1) / count
    d = (x - mean.unsqueeze(-1)) * m
    std = torch.sqrt((d * d).sum(dim=-1) / count + EPS)
    z = d / std.unsqueeze(-1)
    return mean, std, (z**3).sum(dim=-1) / count, (z**4).sum(dim=-1) / count


def masked_quantiles(x: Tensor, mask: Tensor, qs: tuple[float, ...]) -> Tensor:
    """Quantiles ``[B, len(qs)]`` of ``x`` ``[B, T]`` over the frames where ``mask`` is 1."""
    s, _ = torch.sort(x * mask + 1e4 * (1.0 - mask), dim=-1)
    last = (mask.sum(dim=-1, keepdim=True) - 1.0).clamp(min=0.0)
    idx = torch.cat([torch.round(last * q) for q in qs], dim=1).to(torch.int64)
    return torch.gather(s, 1, idx)


def masked_max(x: Tensor, mask: Tensor) -> Tensor:
    """Maximum ``[B, 1]`` of ``x`` ``[B, T]`` over the frames where ``mask`` is 1."""
    return (x * mask - 1e4 * (1.0 - mask)).amax(dim=-1, keepdim=True)


def masked_mean(x: Tensor, m: Tensor) -> Tensor:
    return (x * m).sum(dim=-1) / m.sum(dim=-1).clamp(min=1e-3)


def modulation(env: Tensor, mask: Tensor) -> Tensor:
    """Log share of the 1-25 Hz modulation power in each of ``MOD_BANDS``: ``[B, 4]``."""
    t = torch.arange(env.shape[-1], dtype=env.dtype, device=env.device)
    n = mask.sum(dim=-1, keepdim=True).clamp(min=2.0)
    hann = (0.5 - 0.5 * torch.cos(2.0 * math.pi * t / (n - 1.0))) * mask
    x = (env - masked_mean(env, mask).unsqueeze(-1)) * hann  # [B, T]
    freqs = torch.arange(1.0, 25.0, 0.25, dtype=env.dtype, device=env.device)
    arg = 2.0 * math.pi * freqs.unsqueeze(1) * t.unsqueeze(0) / FRAME_RATE  # [F, T]
    re = torch.matmul(x, torch.cos(arg).t())
    im = torch.matmul(x, torch.sin(arg).t())
    power = re * re + im * im  # [B, F]
    total = power.sum(dim=-1) + 1e-9
    parts = [power[:, int((lo - 1.0) * 4) : int((hi - 1.0) * 4)].sum(dim=-1)
             for lo, hi in MOD_BANDS]
    return torch.log(torch.stack(parts, dim=1) / total.unsqueeze(-1) + EPS)


def contour_stats(e: Tensor, mask: Tensor, pair: Tensor, qs: tuple[float, ...]) -> list[Tensor]:
    """Energy-contour functionals: quantiles (re max), skew, log kurtosis, rise, fall."""
    pc = masked_quantiles(e - masked_max(e, mask), mask, qs)
    _, _, skew, kurt = masked_moments(e, mask)
    de = e[:, 1:] - e[:, :-1]
    up = (de > 0).to(e.dtype) * pair
    rise = (de * up).sum(dim=-1) / up.sum(dim=-1).clamp(min=1e-3)
    down = pair - up
    fall = -(de * down).sum(dim=-1) / down.sum(dim=-1).clamp(min=1e-3)
    # bounded: a few near-silent frames make raw skew / kurtosis huge outliers (int8 ranges)
    shape = [skew.clamp(-3.0, 3.0), torch.log(kurt.clamp(1.0, 20.0)), rise, fall]
    return [pc, torch.stack(shape, dim=1)]


class SpectralFunctionals(nn.Module):
    """(log-mel ``[B, M, T]``, mask ``[B, T]``) -> ``[B, N_SPECTRAL]`` level-invariant stats."""

    log_cent: Tensor
    de_gain: Tensor

    def __init__(self, fb: np.ndarray, rate: int = SAMPLE_RATE, preemph: float = 0.97) -> None:
        super().__init__()
        n_bins = fb.shape[1]
        cent = (fb * np.linspace(0.0, rate / 2.0, n_bins)).sum(axis=1)
        self.register_buffer("log_cent", torch.tensor(np.log(cent), dtype=torch.float32))
        w = np.linspace(0.0, np.pi, n_bins)
        gain = np.log(fb @ (np.abs(1.0 - preemph * np.exp(-1j * w)) ** 2))
        self.register_buffer("de_gain", torch.tensor(gain, dtype=torch.float32).unsqueeze(-1))
        self.lo = int((cent < 1000).sum())
        self.hi = int((cent < 5000).sum())
        self.h0 = int((cent < 2000).sum())
        self.s0 = int((cent < 500).sum())
        self.s1 = int((cent < 1500).sum())
        n_mels = self.n_mels = len(cent)
        self.groups = [(int(g[0]), int(g[-1]) + 1) for g in np.array_split(np.arange(n_mels), 8)]
        self.envs = ((0, 16), (16, 40), (40, n_mels))

    def slope(self, logmel: Tensor, a: int, b: int) -> Tensor:
        idx = torch.linspace(-1.0, 1.0, b - a, device=logmel.device).unsqueeze(-1)
        return (logmel[:, a:b] * idx).sum(dim=1) / (idx * idx).sum()

    def balance(self, power: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Per-frame alpha ratio, log centroid and band distribution ``[B, M, T]``."""
        alpha = (torch.log(power[:, : self.lo].sum(dim=1) + 1e-12)
                 - torch.log(power[:, self.lo : self.hi].sum(dim=1) + 1e-12))
        dist = power / (power.sum(dim=1, keepdim=True) + 1e-12)
        centroid = (dist * self.log_cent.unsqueeze(-1)).sum(dim=1)
        return alpha, centroid, dist

    def forward(self, logmel: Tensor, mask: Tensor) -> Tensor:
        pair = mask[:, 1:] * mask[:, :-1]
        power = torch.exp(logmel)
        energy = torch.log(power.sum(dim=1) + 1e-12)  # [B, T]
        alpha, centroid, dist = self.balance(power)
        hamm = logmel[:, : self.h0].amax(dim=1) - logmel[:, self.h0 : self.hi].amax(dim=1)
        below = (torch.cumsum(dist, dim=1) < 0.85).to(logmel.dtype).sum(dim=1)
        idx = below.clamp(max=self.n_mels - 1.0).to(torch.int64)
        roll = self.log_cent[idx]
        ent = -(dist * torch.log(dist + 1e-12)).sum(dim=1)
        median = masked_quantiles(energy, mask, (0.5,))
        act = (energy > median).to(logmel.dtype) * mask
        inact = mask - act
        per_frame = [alpha, hamm, self.slope(logmel, 0, self.s0),
                     self.slope(logmel, self.s0, self.s1), centroid, roll, ent]
        out: list[Tensor] = []
        for c in per_frame:
            mean, std, _, _ = masked_moments(c, mask)
            out.append(torch.stack([mean, std, masked_mean(c, act), masked_mean(c, inact)], dim=1))
        ldist = torch.log(dist + 1e-9)
        flux = torch.sqrt(((ldist[:, :, 1:] - ldist[:, :, :-1]) ** 2).mean(dim=1) + EPS)
        fmean, fstd, _, _ = masked_moments(flux, pair)
        out.append(torch.stack([fmean, fstd], dim=1))
        pc, shape = contour_stats(energy, mask, pair, (0.2, 0.5, 0.8))
        out += [pc, (pc[:, 2] - pc[:, 0]).unsqueeze(1), shape, modulation(energy, mask)]
        for a, b in self.envs:
            out.append(modulation(torch.log(power[:, a:b].sum(dim=1) + 1e-12), mask))
        emax = masked_max(energy, mask)
        for a, b in self.groups:
            band = torch.log(power[:, a:b].sum(dim=1) + 1e-12) - emax
            out.append(masked_quantiles(band, mask, (0.1, 0.5, 0.9)))
        out.append(self.deemphasised(logmel, mask, pair))
        return torch.cat(out, dim=1)

    def deemphasised(self, logmel: Tensor, mask: Tensor, pair: Tensor) -> Tensor:
        """Energy-contour and balance statistics with the pre-emphasis gain removed: ``[B, 23]``."""
        power = torch.exp(logmel - self.de_gain)
        e = torch.log(power.sum(dim=1) + 1e-12)
        emax = masked_max(e, mask)
        e0_mean, e_std, _, _ = masked_moments(e - emax, mask)
        pc, shape = contour_stats(e, mask, pair, (0.1, 0.2, 0.5, 0.8, 0.9))
        de = masked_mean((e[:, 1:] - e[:, :-1]).abs(), pair)
        alpha, centroid, _ = self.balance(power)
        median = masked_quantiles(e, mask, (0.5,))
        act = (e > median).to(e.dtype) * mask
        cm, cs, _, _ = masked_moments(centroid, mask)
        am, as_, _, _ = masked_moments(alpha, mask)
        return torch.cat([
            torch.stack([e0_mean, e_std], dim=1), pc, (pc[:, 3] - pc[:, 1]).unsqueeze(1), shape,
            de.unsqueeze(1), modulation(e, mask),
            torch.stack([cm, cs, masked_mean(centroid, act), am, as_, masked_mean(alpha, act)],
                        dim=1),
        ], dim=1)
