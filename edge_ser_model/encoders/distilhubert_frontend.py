"""The chunked convolutional front end of DistilHuBERT (see :mod:`.distilhubert`).

The convolutional front end runs in chunks of ``chunk_frames`` output frames (receptive field
400 samples, hop 320) so the 8-s activations of its 512 channels are never held at once. Layer
0's group norm spans the whole window: its per-channel mean and variance are computed in a first
pass over disjoint chunks (combined exactly, Chan et al.), then each chunk is normalised in a
second pass. The result equals the unchunked model up to float rounding.
"""

from __future__ import annotations

import torch
from torch import nn

RECEPTIVE_FIELD = 400  # samples seen by one output frame of the conv front end
HOP = 320  # samples between output frames (product of the conv strides)



class ChunkedFeatureEncoder(nn.Module):
    """HuBERT's conv front end, computed ``chunk_frames`` output frames at a time (exact)."""

    def __init__(self, conv_layers: nn.ModuleList, chunk_frames: int | None) -> None:
        super().__init__()
        self.conv_layers = conv_layers  # shared with the HubertModel, not copied
        self.chunk_frames = chunk_frames

    @staticmethod
    def _after(segment: torch.Tensor, done: list[torch.Tensor]) -> torch.Tensor:
        """``segment`` made to depend on the previous chunk's result (adds an exact zero).

        Without the edge, onnxruntime may start every chunk's first conv at once (they are all
        ready), holding all chunks' activations together and losing the memory bound.
        """
        if not done:
            return segment
        return segment + done[-1][:, :1, :1] * 0.0

    def _rest(self, h: torch.Tensor) -> torch.Tensor:
        for layer in list(self.conv_layers)[1:]:
            h = layer(h)
        return h

    def forward(self, waveform: torch.Tensor) -> torch.Tensor:
        """``[B, N]`` -> ``[B, 512, T]`` with ``T = (N - 400) // 320 + 1``."""
        first = self.conv_layers[0]
        x = waveform[:, None, :]
        n = int(waveform.shape[1])
        frames = (n - RECEPTIVE_FIELD) // HOP + 1
        if not self.chunk_frames or frames <= self.chunk_frames:
            return self._rest(first(x))
        conv0, norm = first.get_submodule("conv"), first.get_submodule("layer_norm")
        act = first.get_submodule("activation")
        assert isinstance(conv0, nn.Conv1d) and isinstance(norm, nn.GroupNorm)
        k0, s0 = int(conv0.kernel_size[0]), int(conv0.stride[0])
        # Pass 1: exact per-channel mean / variance of conv0's output over the whole window.
        n0 = (n - k0) // s0 + 1
        step = self.chunk_frames * (HOP // s0)
        counts: list[int] = []
        means: list[torch.Tensor] = []
        m2s: list[torch.Tensor] = []
        for a in range(0, n0, step):
            b = min(n0, a + step)
            c = conv0(self._after(x[:, :, a * s0:(b - 1) * s0 + k0], m2s))
            mu = c.mean(dim=2, keepdim=True)
            counts.append(b - a)
            means.append(mu)
            m2s.append(((c - mu) ** 2).sum(dim=2, keepdim=True))
        mean = sum(m * (c / n0) for m, c in zip(means, counts, strict=True))
        m2 = sum(q + (m - mean) ** 2 * c for q, m, c in zip(m2s, means, counts, strict=True))
        assert isinstance(mean, torch.Tensor) and isinstance(m2, torch.Tensor)
        scale = torch.rsqrt(m2 / n0 + norm.eps) * norm.weight[None, :, None]
        shift = norm.bias[None, :, None] - mean * scale
        # Pass 2: the whole front end, chunk by chunk, with the global normalisation.
        outs: list[torch.Tensor] = []
        for a in range(0, frames, self.chunk_frames):
            b = min(frames, a + self.chunk_frames)
            segment = x[:, :, a * HOP:(b - 1) * HOP + RECEPTIVE_FIELD]
            h = conv0(self._after(segment, outs or [shift]))
            h = act(h * scale + shift)
            outs.append(self._rest(h))
        return torch.cat(outs, dim=2)
