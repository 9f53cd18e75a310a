"""The pretrained voice branch of the ``compact`` encoder: Resemblyzer's GE2E LSTM, frozen.

No pretrained speech encoder for emotion can be had here, but the ``Resemblyzer`` package on
PyPI ships the weights of a GE2E speaker encoder (3 LSTM layers of 256 on 40 mel bands, trained
by Resemble AI on LibriSpeech and VoxCeleb 1/2; Apache-2.0) inside its wheel. Speaker encoders
carry much paralinguistic information; the statistics of its hidden states over an utterance
are a second feature vector beside the hand-made functionals, with a logistic-regression head
whose probabilities are mixed with the MLP heads' inside the graph.

Everything runs in the ONNX graph, waveform in: the speech (the window's non-zero 10 ms blocks)
is brought to -30 dBFS RMS as Resemblyzer does, a 25 ms / 10 ms power mel spectrogram (40 Slaney
bands, no log: the encoder's input; read from the log-mel's power spectrum) feeds the three LSTM
layers in 4-s partials (each from zero state, all partials of a window as one batch, as
Resemblyzer embeds 1.6-s partials: 400 steps instead of 800 in a row), and each layer's outputs
get a masked mean and std over the speech frames. The LSTMs are causal and the padding follows
the speech, so the zero padding of a short clip never changes the statistics.

The weights file is found in the installed ``resemblyzer`` package (``pip install --no-deps
resemblyzer==0.1.4``: its own dependencies are not needed, and would replace webrtcvad-wheels)
or given as a path; it is sha256-checked, never downloaded.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from numpy.typing import NDArray
from torch import Tensor, nn

from edge_ser import LABELS, SAMPLE_RATE
from edge_ser.errors import ModelError
from edge_ser_model.encoders import sha256_file
from edge_ser_model.encoders.compact import masked_mean_std
from edge_ser_model.encoders.compact_frontend import PowerSpectrum, speech_blocks

#: sha256 of ``resemblyzer/pretrained.pt`` in Resemblyzer 0.1.4 on PyPI.
VOICE_SHA256 = "39373b86598fa3da9fcddee6142382efe09777e8d37dc9c0561f41f0070f134e"
VOICE_PACKAGE = "resemblyzer==0.1.4"
HIDDEN = 256
LAYERS = 3
N_VOICE = LAYERS * 2 * HIDDEN
TARGET_DBFS = -30.0
#: frames per LSTM partial (4 s): an 8-s window is two partials run as one batch. GE2E was
#: trained on, and Resemblyzer embeds, 1.6-s partials; 400 frames kept CV UAR (160 lost 0.01)
PARTIAL = 400


def slaney_mel(n_mels: int = 40, n_fft: int = 400, rate: int = SAMPLE_RATE) -> NDArray[np.float32]:
    """Slaney-scale, Slaney-normalised mel filters ``[n_mels, n_fft // 2 + 1]`` (0 Hz-Nyquist).

    The same filters as ``librosa.filters.mel(sr, n_fft, n_mels)``, which Resemblyzer used.
    """
    f_sp, min_log_hz = 200.0 / 3, 1000.0
    min_log_mel, logstep = min_log_hz / f_sp, np.log(6.4) / 27.0

    def to_mel(f: NDArray[np.float64]) -> NDArray[np.float64]:
        return np.where(f >= min_log_hz, min_log_mel + np.log(np.maximum(f, 1e-9) / min_log_hz)
                        / logstep, f / f_sp)

    def to_hz(m: NDArray[np.float64]) -> NDArray[np.float64]:
        return np.where(m >= min_log_mel, min_log_hz * np.exp(logstep * (m - min_log_mel)),
                        f_sp * m)

    fft_freqs = np.linspace(0.0, rate / 2.0, n_fft // 2 + 1)
    edges = to_hz(np.linspace(to_mel(np.array(0.0)), to_mel(np.array(rate / 2.0)), n_mels + 2))
    fdiff = np.diff(edges)
    ramps = edges[:, None] - fft_freqs[None, :]
    lower = -ramps[:-2] / fdiff[:-1, None]
    upper = ramps[2:] / fdiff[1:, None]
    fb = np.maximum(0.0, np.minimum(lower, upper))
    fb *= (2.0 / (edges[2:] - edges[:-2]))[:, None]
    return fb.astype(np.float32)


def find_voice_weights(path: str | Path | None = None, sha256: str | None = VOICE_SHA256) -> Path:
    """The weights file: ``path``, else the installed resemblyzer package's; sha256-checked."""
    if path is None:
        spec = importlib.util.find_spec("resemblyzer")  # finds it without importing it
        if spec is None or spec.origin is None:
            raise ModelError(
                f"voice encoder weights: not found (pip install --no-deps {VOICE_PACKAGE}, or "
                "pass --voice-weights FILE, or --no-voice to leave the voice branch out)")
        path = Path(spec.origin).parent / "pretrained.pt"
    found = Path(path)
    if not found.is_file():
        raise ModelError(f"{found}: voice encoder weights file missing")
    if sha256 is not None:
        actual = sha256_file(found)
        if actual != sha256.lower():
            raise ModelError(f"{found}: sha256 {actual} != expected {sha256}")
    return found


def load_voice_state(path: Path) -> dict[str, Tensor]:
    """The LSTM weights of a Resemblyzer checkpoint (``model_state`` of ``pretrained.pt``)."""
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - any unpickling failure is one line for the user
        raise ModelError(f"{path}: not a PyTorch checkpoint: {err}") from err
    state = ckpt.get("model_state", ckpt) if isinstance(ckpt, dict) else None
    if not isinstance(state, dict) or f"lstm.weight_ih_l{LAYERS - 1}" not in state:
        raise ModelError(f"{path}: not a Resemblyzer voice encoder (no lstm.* weights)")
    return {k: v for k, v in state.items() if k.startswith("lstm.")}


class VoiceFeatures(nn.Module):
    """Waveform ``[B, N]`` (prepared window) -> LSTM state statistics ``[B, 1536]`` (frozen).

    It reads the log-mel's 512-point ``PowerSpectrum`` (the shipped graph computes it once)
    through 40 Slaney bands scaled by ``win / n_fft``: zero-padding a 400-sample frame to 512
    points samples the same spectrum 512/400 times as densely, so the scaled band energies match
    the 400-point ones Resemblyzer was trained on. Its frames start at ``t * hop`` where
    librosa's were centred there, a 12.5 ms shift (CV UAR unchanged, docs/training.md).
    The LSTMs run on ``partial``-frame pieces of the sequence, each from zero state, batched:
    the sequential steps drop from the window's frame count to ``partial``.
    """

    mel: Tensor

    def __init__(self, weights: str | Path | None = None, random_init: bool = False,
                 sha256: str | None = VOICE_SHA256, win: int = 400, hop: int = 160,
                 n_fft: int = 512, partial: int = PARTIAL) -> None:
        super().__init__()
        if partial < 1:
            raise ValueError("partial must be at least one frame")
        self.hop, self.dim, self.partial = hop, N_VOICE, partial
        self.spectrum = PowerSpectrum(win, hop, n_fft)
        bands = slaney_mel(40, n_fft) * np.float32(win / n_fft)
        self.register_buffer("mel", torch.from_numpy(bands))
        self.lstms = nn.ModuleList(
            nn.LSTM(40 if i == 0 else HIDDEN, HIDDEN, 1, batch_first=True) for i in range(LAYERS))
        self.source = "random-init"
        if not random_init:
            found = find_voice_weights(weights, sha256)
            self.source = sha256 or str(found)
            state = load_voice_state(found)
            for i, lstm in enumerate(self.lstms):
                lstm.load_state_dict({name.replace(f"_l{i}", "_l0"): value
                                      for name, value in ((k[5:], v) for k, v in state.items())
                                      if name.endswith(f"_l{i}")})
        for p in self.parameters():
            p.requires_grad_(False)

    def extra_repr(self) -> str:  # part of the feature-cache key
        win, hop, n_fft = self.spectrum.geometry()
        return (f"weights={self.source}, win={win}, hop={hop}, n_fft={n_fft}, "
                f"partial={self.partial}")

    def forward(self, x: Tensor) -> Tensor:
        return self.from_power(x, *self.spectrum(x))

    def from_power(self, x: Tensor, power: Tensor, mask: Tensor) -> Tensor:
        """The statistics from the waveform and its ``PowerSpectrum`` ``[B, K, T]``."""
        blocks, _ = speech_blocks(x, self.hop)  # [B, T, hop]
        count = mask.sum(dim=1, keepdim=True).clamp(min=1.0)
        ms = (blocks * blocks).sum(dim=-1).mul(mask).sum(dim=1, keepdim=True) / (count * self.hop)
        gain2 = (10.0 ** (TARGET_DBFS / 10.0)) / (ms + 1e-12)  # power gain to -30 dBFS RMS
        h = torch.matmul(self.mel, power).transpose(1, 2) * gain2.unsqueeze(-1)  # [B, T, 40]
        batch, frames = h.shape[0], h.shape[1]
        pad = (-frames) % self.partial
        # [B * P, partial, 40]: each partial starts from zero state, the P run as one batch
        h = F.pad(h, (0, 0, 0, pad)).reshape(-1, self.partial, h.shape[2])
        stats: list[Tensor] = []
        for lstm in self.lstms:
            h, _ = lstm(h)
            seq = h.reshape(batch, -1, HIDDEN)[:, :frames]
            stats += masked_mean_std(seq.transpose(1, 2), mask)
        return torch.cat(stats, dim=1)


class VoiceHead(nn.Module):
    """Standardisation + one linear layer (a logistic regression): ``[B, 1536]`` -> logits."""

    feat_mean: Tensor
    feat_std: Tensor

    def __init__(self, dim: int = N_VOICE) -> None:
        super().__init__()
        self.register_buffer("feat_mean", torch.zeros(dim))
        self.register_buffer("feat_std", torch.ones(dim))
        self.linear = nn.Linear(dim, len(LABELS))

    def forward(self, v: Tensor) -> Tensor:
        out: Tensor = self.linear((v - self.feat_mean) / self.feat_std)
        return out


def train_voice_head(feats: NDArray[np.float32], labels: NDArray[np.int64],
                     idx: NDArray[np.int64], c: float = 0.01) -> VoiceHead:
    """Balanced L2 logistic regression (C = ``c``) on every copy (clean + augmented) of ``idx``.

    Standardised with the clean copies' mean and std. Deterministic (lbfgs).
    """
    from sklearn.linear_model import LogisticRegression

    clean = feats[idx, 0].astype(np.float64)
    mean, std = clean.mean(axis=0), np.maximum(clean.std(axis=0), 1e-3)
    x = feats[idx].reshape(-1, feats.shape[-1]).astype(np.float64)
    lr = LogisticRegression(C=c, class_weight="balanced", max_iter=3000)
    lr.fit((x - mean) / std, np.repeat(labels[idx], feats.shape[1]))
    head = VoiceHead(x.shape[1])
    coef = np.zeros((len(LABELS), x.shape[1]))
    bias = np.zeros(len(LABELS))
    if len(lr.classes_) > 2:
        coef[lr.classes_], bias[lr.classes_] = lr.coef_, lr.intercept_
    else:  # binary: softmax([0, z]) is sigmoid(z)
        coef[lr.classes_[1]], bias[lr.classes_[1]] = lr.coef_[0], lr.intercept_[0]
        bias[lr.classes_[0]] = 0.0
    missing = np.setdiff1d(np.arange(len(LABELS)), lr.classes_)
    bias[missing] = -30.0  # a class absent from training (tiny subsets) is never predicted
    with torch.no_grad():
        head.feat_mean.copy_(torch.from_numpy(mean.astype(np.float32)))
        head.feat_std.copy_(torch.from_numpy(std.astype(np.float32)))
        head.linear.weight.copy_(torch.from_numpy(coef.astype(np.float32)))
        head.linear.bias.copy_(torch.from_numpy(bias.astype(np.float32)))
    return head.eval()


def voice_proba(head: VoiceHead, feats: NDArray[np.float32],
                idx: NDArray[np.int64]) -> NDArray[np.float64]:
    """The voice head's class probabilities ``[len(idx), 4]`` for the clean copies of ``idx``."""
    with torch.no_grad():
        logits = head(torch.from_numpy(np.ascontiguousarray(feats[idx, 0])))
        return np.asarray(torch.softmax(logits, dim=-1).numpy(), dtype=np.float64)
