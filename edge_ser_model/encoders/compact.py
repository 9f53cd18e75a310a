"""``compact``: a small from-scratch encoder that runs waveform -> logits in one ONNX graph.

Front end (fixed weights, no training): a Hann-windowed DFT as a strided Conv1d (25 ms window,
10 ms hop, 512-point), power spectrum (shared with the voice branch), a mel filterbank MatMul
and a log. A frame mask comes
straight from the waveform (a 10 ms block that is all zeros is padding), so the zero padding that
``prepare_window`` adds never biases a statistic.

A pitch tracker (fixed weights) runs beside it: a 50 ms Hann DFT up to 1.5 kHz (1024-point) as
a second strided Conv1d, a peak-enhanced log-magnitude spectrum and subharmonic summation (SHS,
Hermes 1988; the method openSMILE's eGeMAPS F0 uses) over 72 F0 candidates in
half-semitone steps from 55 Hz (three octaves, 55-440 Hz), on the same 10 ms grid.

Utterance functionals (all masked): mean / std of the log-mel and of its |time delta|,
frame-energy statistics, log speech duration, and voicing-weighted F0 statistics (mean, std,
|delta|, voiced fraction, voicing strength), plus level-invariant spectral-balance and
energy-contour functionals (``compact_spectral``: alpha ratio, Hammarberg index, slopes, centroid,
roll-off, entropy, flux, contour percentiles / shape, modulation spectrum). Trained part:
standardisation with training-set constants and a small MLP per ensemble member; members
(seeds) are averaged as probabilities inside the same graph (logits = log mean probability), and
mixed log-linearly with the voice branch's (``encoders.voice``) when the model has one.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from edge_ser import LABELS, SAMPLE_RATE
from edge_ser_model import VOICE_WEIGHT
from edge_ser_model.encoders.compact_frontend import EPS, LogMelFrontEnd, hann_dft_kernel
from edge_ser_model.encoders.compact_spectral import N_SPECTRAL, SpectralFunctionals, masked_max

if TYPE_CHECKING:
    from edge_ser_model.encoders.voice import VoiceFeatures, VoiceHead

N_PITCH = 5  # pitch functionals


def masked_mean_std(x: Tensor, mask: Tensor) -> tuple[Tensor, Tensor]:
    """Mean and std over the last axis of ``x`` ``[B, C, T]`` where ``mask`` ``[B, T]`` is 1."""
    m = mask.unsqueeze(1)
    count = m.sum(dim=-1).clamp(min=1.0)
    mean = (x * m).sum(dim=-1) / count
    var = (((x - mean.unsqueeze(-1)) * m) ** 2).sum(dim=-1) / count
    return mean, torch.sqrt(var + EPS)


def functionals(logmel: Tensor, mask: Tensor) -> Tensor:
    """Utterance-level statistics ``[B, 4M + 5]`` (all masked)."""
    mean, std = masked_mean_std(logmel, mask)
    pair = mask[:, 1:] * mask[:, :-1]
    delta = logmel[:, :, 1:] - logmel[:, :, :-1]
    dmean, dstd = masked_mean_std(delta.abs(), pair)
    energy = torch.logsumexp(logmel, dim=1, keepdim=True)  # [B, 1, T]
    emean, estd = masked_mean_std(energy, mask)
    emax = masked_max(energy.squeeze(1), mask)
    de = (energy[:, :, 1:] - energy[:, :, :-1]).abs()
    demean, _ = masked_mean_std(de, pair)
    dur = torch.log(mask.sum(dim=-1, keepdim=True).clamp(min=1.0))
    return torch.cat([mean, std, dmean, dstd, emean, estd, emax - emean, demean, dur], dim=1)


class PitchFrontEnd(nn.Module):
    """Waveform ``[B, N]`` -> SHS pitch salience ``[B, C, T]`` (C candidates, 10 ms frames)."""

    dft: Tensor
    shs: Tensor

    def __init__(
        self, win: int = 800, hop: int = 160, n_fft: int = 1024, fmax_spec: float = 1500.0,
        f0_min: float = 55.0, n_cand: int = 72, step_st: float = 0.5, n_harm: int = 8,
        decay: float = 0.84, rate: int = SAMPLE_RATE, mel_win: int = 400,
    ) -> None:
        super().__init__()
        self.win, self.hop, self.step_st = win, hop, step_st
        self.left = (win - mel_win) // 2  # centre on the log-mel frames
        k_bins = int(fmax_spec / (rate / n_fft)) + 1
        self.register_buffer("dft", torch.from_numpy(hann_dft_kernel(win, n_fft, k_bins)))
        self.k_bins = k_bins
        shs = np.zeros((n_cand, k_bins))
        bin_hz = rate / n_fft
        for i in range(n_cand):
            f0 = f0_min * 2.0 ** (i * step_st / 12.0)
            for h in range(1, n_harm + 1):
                b = h * f0 / bin_hz
                if b >= k_bins - 1:
                    break
                lo, frac = int(b), b - int(b)
                shs[i, lo] += decay ** (h - 1) * (1.0 - frac)
                shs[i, lo + 1] += decay ** (h - 1) * frac
        self.register_buffer("shs", torch.tensor(shs, dtype=torch.float32))

    def forward(self, x: Tensor) -> Tensor:
        n = x.shape[-1]
        t = (n + self.hop - 1) // self.hop
        xp = F.pad(x, (self.left, t * self.hop - n + self.win - self.hop - self.left))
        spec = F.conv1d(xp.unsqueeze(1), self.dft, stride=self.hop)[:, :, :t]
        re, im = spec[:, : self.k_bins], spec[:, self.k_bins :]
        logmag = torch.log(torch.sqrt(re * re + im * im + 1e-8) + 1e-3)  # [B, K, T]
        local = F.avg_pool1d(logmag.transpose(1, 2).reshape(-1, 1, self.k_bins), 9, 1, 4)
        peaks = F.relu(logmag - local.reshape(x.shape[0], t, self.k_bins).transpose(1, 2))
        return torch.matmul(self.shs, peaks)


def pitch_functionals(salience: Tensor, mask: Tensor, step_st: float = 0.5) -> Tensor:
    """Voicing-weighted F0 statistics ``[B, 5]`` from SHS salience ``[B, C, T]``.

    Mean and std of F0 (semitones above 55 Hz), mean |F0 jump| between voiced frames (capped at
    4 semitones against octave errors), voiced fraction and mean voicing strength. Range,
    extremes and a pitch histogram were tried and dropped: octave errors made them hurt CV UAR.
    """
    peak = salience.amax(dim=1)  # [B, T]
    rel = peak / (peak * mask).amax(dim=1, keepdim=True).clamp(min=EPS)
    w = torch.sigmoid((rel - 0.35) * 20.0) * mask  # soft voicing weight
    st = salience.argmax(dim=1).to(salience.dtype) * step_st
    count = w.sum(dim=1).clamp(min=1e-3)
    mean = (w * st).sum(dim=1) / count
    std = torch.sqrt((w * (st - mean.unsqueeze(1)) ** 2).sum(dim=1) / count + EPS)
    pair = w[:, 1:] * w[:, :-1]
    jump = (st[:, 1:] - st[:, :-1]).abs().clamp(max=4.0)
    dmean = (pair * jump).sum(dim=1) / pair.sum(dim=1).clamp(min=1e-3)
    voiced = w.sum(dim=1) / mask.sum(dim=1).clamp(min=1.0)
    strength = (w * rel).sum(dim=1) / count
    return torch.stack([mean, std, dmean, voiced, strength], dim=1)


class CompactFeatures(nn.Module):
    """Waveform ``[B, N]`` -> utterance feature vector ``[B, D]`` (fixed, no training)."""

    def __init__(self, n_mels: int = 64, pitch: bool = True, spectral: bool = True) -> None:
        super().__init__()
        self.logmel = LogMelFrontEnd(n_mels=n_mels)
        self.pitch = PitchFrontEnd() if pitch else None
        self.spectral = SpectralFunctionals(self.logmel.mel.numpy()) if spectral else None
        self.dim = 4 * n_mels + 5 + (N_PITCH if pitch else 0) + (N_SPECTRAL if spectral else 0)

    def forward(self, x: Tensor) -> Tensor:
        return self.from_power(x, *self.logmel.spectrum(x))

    def from_power(self, x: Tensor, power: Tensor, mask: Tensor) -> Tensor:
        """The feature vector from the waveform and its ``PowerSpectrum`` (computed once)."""
        logmel = self.logmel.from_power(power)
        parts = [functionals(logmel, mask)]
        if self.pitch is not None:
            parts.append(pitch_functionals(self.pitch(x), mask))
        if self.spectral is not None:
            parts.append(self.spectral(logmel, mask))
        return torch.cat(parts, dim=1)


class CompactHead(nn.Module):
    """Trainable part: feature vector ``[B, D]`` -> logits ``[B, 4]``."""

    feat_mean: Tensor
    feat_std: Tensor

    def __init__(self, dim: int, hidden: int = 64, dropout: float = 0.3,
                 in_dropout: float = 0.1) -> None:
        super().__init__()
        self.register_buffer("feat_mean", torch.zeros(dim))
        self.register_buffer("feat_std", torch.ones(dim))
        layers: list[nn.Module] = [nn.Dropout(in_dropout)]
        if hidden > 0:
            layers += [nn.Linear(dim, hidden), nn.GELU(), nn.Dropout(dropout),
                       nn.Linear(hidden, len(LABELS))]
        else:
            layers.append(nn.Linear(dim, len(LABELS)))
        self.net = nn.Sequential(*layers)

    def forward(self, f: Tensor) -> Tensor:
        out: Tensor = self.net((f - self.feat_mean) / self.feat_std)
        return out


class CompactSER(nn.Module):
    """The whole encoder: waveform ``[B, N]`` (preprocessed) -> logits ``[B, 4]``.

    With one head the logits are that head's; with several (an ensemble of seeds) they are the
    log of the mean of the heads' probabilities. With a voice branch (``encoders.voice``) its
    probabilities are mixed in log-linearly at ``voice_weight`` (a product of experts):
    ``logits = (1 - w) log p_heads + w log p_voice``; softmax of them is the normalised mix.
    """

    def __init__(self, n_mels: int = 64, pitch: bool = True,
                 heads: list[CompactHead] | None = None, voice: VoiceFeatures | None = None,
                 voice_head: VoiceHead | None = None, voice_weight: float = VOICE_WEIGHT,
                 **head_kw: float) -> None:
        super().__init__()
        self.features = CompactFeatures(n_mels=n_mels, pitch=pitch)
        self.heads = nn.ModuleList(heads or [CompactHead(self.features.dim, **head_kw)])  # type: ignore[arg-type]
        if (voice is None) != (voice_head is None):
            raise ValueError("the voice branch needs both its features and its head")
        shared = self.features.logmel.spectrum.geometry()
        if voice is not None and voice.spectrum.geometry() != shared:
            raise ValueError("the voice branch must read the log-mel's spectrum (same frames)")
        self.voice, self.voice_head = voice, voice_head
        self.voice_weight = float(voice_weight)

    def forward(self, waveform: Tensor) -> Tensor:
        power, mask = self.features.logmel.spectrum(waveform)  # shared by both branches
        f = self.features.from_power(waveform, power, mask)
        if len(self.heads) == 1 and self.voice is None:
            out: Tensor = self.heads[0](f)
            return out
        probs = torch.stack([F.softmax(h(f), dim=-1) for h in self.heads]).mean(dim=0)
        if self.voice is not None and self.voice_head is not None:
            pv = F.softmax(self.voice_head(self.voice.from_power(waveform, power, mask)), dim=-1)
            w = self.voice_weight
            return (1.0 - w) * torch.log(probs + 1e-7) + w * torch.log(pv + 1e-7)
        return torch.log(probs + 1e-7)
