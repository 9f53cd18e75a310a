"""The fixed spectral front end of ``compact``: a Hann-windowed DFT as a strided Conv1d, its
power spectrum (shared by the log-mel and the voice branch) and the log-mel, plus the frame
mask read straight from the waveform (a 10 ms block of exact zeros is padding).
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from edge_ser import SAMPLE_RATE

EPS = 1e-6


def mel_filterbank(n_mels: int, n_fft: int, rate: int, fmin: float, fmax: float) -> np.ndarray:
    """HTK-style triangular mel filters, shape ``[n_mels, n_fft // 2 + 1]``."""

    def hz_to_mel(f: np.ndarray) -> np.ndarray:
        return 2595.0 * np.log10(1.0 + f / 700.0)

    def mel_to_hz(m: np.ndarray) -> np.ndarray:
        return 700.0 * (10.0 ** (m / 2595.0) - 1.0)

    freqs = np.linspace(0.0, rate / 2.0, n_fft // 2 + 1)
    edges = mel_to_hz(np.linspace(hz_to_mel(np.array(fmin)), hz_to_mel(np.array(fmax)), n_mels + 2))
    fb = np.zeros((n_mels, len(freqs)))
    for i in range(n_mels):
        lo, mid, hi = edges[i], edges[i + 1], edges[i + 2]
        up = (freqs - lo) / max(mid - lo, 1e-9)
        down = (hi - freqs) / max(hi - mid, 1e-9)
        fb[i] = np.maximum(0.0, np.minimum(up, down))
    fb /= np.maximum(fb.sum(axis=1, keepdims=True), 1e-9)
    return fb.astype(np.float32)


def hann_dft_kernel(win: int, n_fft: int, n_bins: int) -> np.ndarray:
    """Conv1d weights ``[2 * n_bins, 1, win]``: periodic-Hann-windowed DFT, cos rows then -sin."""
    n = np.arange(win)
    window = 0.5 - 0.5 * np.cos(2.0 * np.pi * n / win)
    k = np.arange(n_bins)[:, None]
    cos = np.cos(2.0 * np.pi * k * n[None, :] / n_fft) * window
    sin = -np.sin(2.0 * np.pi * k * n[None, :] / n_fft) * window
    return np.concatenate([cos, sin], axis=0)[:, None, :].astype(np.float32)


def speech_blocks(x: Tensor, hop: int) -> tuple[Tensor, Tensor]:
    """``x`` ``[B, N]`` zero-padded into hop blocks ``[B, T, hop]`` and their mask ``[B, T]``.

    A block of exact zeros is padding (the preprocessing pads windows with zeros).
    """
    t = (x.shape[-1] + hop - 1) // hop
    blocks = F.pad(x, (0, t * hop - x.shape[-1])).reshape(x.shape[0], t, hop)
    return blocks, (blocks.abs().amax(dim=-1) > 0).to(x.dtype)


class PowerSpectrum(nn.Module):
    """Waveform ``[B, N]`` -> (power spectrum ``[B, K, T]``, speech mask ``[B, T]``), fixed.

    25 ms periodic-Hann frames every 10 ms, frame ``t`` starting at sample ``t * hop``, a
    512-point DFT as one strided Conv1d. The log-mel and the voice branch read the same
    spectrum, so the shipped graph computes it once.
    """

    dft: Tensor

    def __init__(self, win: int = 400, hop: int = 160, n_fft: int = 512) -> None:
        super().__init__()
        self.win, self.hop, self.n_fft = win, hop, n_fft
        self.n_bins = n_fft // 2 + 1
        self.register_buffer("dft", torch.from_numpy(hann_dft_kernel(win, n_fft, self.n_bins)))

    def geometry(self) -> tuple[int, int, int]:
        return self.win, self.hop, self.n_fft

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        n = x.shape[-1]
        t = (n + self.hop - 1) // self.hop
        _, mask = speech_blocks(x, self.hop)
        x = F.pad(x, (0, t * self.hop - n + self.win - self.hop))
        spec = F.conv1d(x.unsqueeze(1), self.dft, stride=self.hop)  # [B, 2K, T]
        re, im = spec[:, : self.n_bins], spec[:, self.n_bins :]
        return re * re + im * im, mask


class LogMelFrontEnd(nn.Module):
    """Waveform ``[B, N]`` -> (log-mel ``[B, M, T]``, mask ``[B, T]``), fixed weights."""

    mel: Tensor

    def __init__(
        self, n_mels: int = 64, win: int = 400, hop: int = 160, n_fft: int = 512,
        fmin: float = 50.0, fmax: float = 8000.0, rate: int = SAMPLE_RATE,
    ) -> None:
        super().__init__()
        self.hop = hop
        self.spectrum = PowerSpectrum(win, hop, n_fft)
        fb = mel_filterbank(n_mels, n_fft, rate, fmin, fmax)
        self.register_buffer("mel", torch.from_numpy(fb))

    def frames(self, n_samples: int) -> int:
        return math.ceil(n_samples / self.hop)

    def from_power(self, power: Tensor) -> Tensor:
        return torch.log(torch.matmul(self.mel, power) + EPS)  # [B, M, T]

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        power, mask = self.spectrum(x)
        return self.from_power(power), mask
