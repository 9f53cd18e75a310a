"""A frozen pretrained encoder with a trained head: the paper's recipe, for any backbone.

A backbone (Whisper tiny.en's encoder, DistilHuBERT) maps a preprocessed window to hidden states,
one per layer. Each state is pooled over the frames of speech (mean, or mean and standard
deviation); the head reads one layer's pooled vector or several concatenated. Which layers, which
pooling and which head is for the evaluation protocol to choose (``edge_ser_model.loco``), so
training caches every layer's pooled statistics once (:class:`BackboneFeatures`) and the head
trains on those. :class:`FrozenSER` is the whole graph for export: waveform -> backbone cut at the
last layer used -> pooling -> head -> ``logits``, with the pooled ``embedding`` as a second output.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
from numpy.typing import NDArray
from torch import Tensor, nn

from edge_ser import SAMPLE_RATE, WINDOW_S
from edge_ser.errors import ConfigError
from edge_ser_model.encoders.compact import masked_mean_std

log = logging.getLogger(__name__)

#: encoders with a frozen-backbone path (``--encoder``)
BACKBONES = ("whisper-tiny", "distilhubert")
#: pooled statistics of a hidden state: mean, or mean and standard deviation
POOLINGS = ("mean", "meanstd")
FRAME = 320  # input samples per frame of both backbones (20 ms)
WINDOW_SAMPLES = int(round(WINDOW_S * SAMPLE_RATE))


class Backbone(Protocol):
    """A frozen encoder: ``hidden_states(x)`` gives ``layers`` tensors ``[B, T, width]``."""

    name: str
    width: int
    layers: int
    weights_id: str
    #: the graph encodes only up to the end of speech (else the whole window, padding masked
    #: in the pooling only: DistilHuBERT's chunked front end is unrolled at the window length)
    cuts_speech: bool

    def hidden_states(self, waveform: Tensor) -> list[Tensor]: ...

    def frame_mask(self, waveform: Tensor) -> Tensor: ...


def speech_end(waveform: Tensor) -> Tensor:
    """Samples up to the batch's last non-zero one, rounded up to whole frames (at least two:
    DistilHuBERT's front end needs 400 samples): the zero padding after a window's speech is
    never encoded."""
    n = waveform.shape[1]
    idx = torch.arange(1, n + 1, dtype=waveform.dtype, device=waveform.device)
    last = (idx * (waveform != 0).to(waveform.dtype)).amax()
    return torch.clamp(torch.ceil(last / FRAME) * FRAME, min=2 * FRAME, max=n).to(torch.int64)


def pooled_states(backbone: Backbone, waveform: Tensor, upto: int | None = None) -> list[Tensor]:
    """Per hidden state (up to ``upto``), ``[B, 2 * width]``: mean then std over each row's
    speech frames. Rows are cut to the batch's speech end; a row that ends earlier is masked in
    the pooling, but attention sees its padding: one window per call gives the training
    features exactly."""
    x = waveform[:, : speech_end(waveform)] if backbone.cuts_speech else waveform
    mask = backbone.frame_mask(x)
    states = backbone.hidden_states(x)[: upto]
    # the compact front end's masked statistics, over time laid out last: [B, D, T]
    return [torch.cat(masked_mean_std(h.transpose(1, 2), mask[:, : h.shape[1]]), dim=1)
            for h in states]


class BackboneFeatures:
    """The training front end (``edge_ser_model.features``): every hidden state's mean and
    std, ``[B, layers * 2 * width]``; each row is encoded alone, as the exported graph sees
    one window per call."""

    def __init__(self, backbone: Backbone) -> None:
        self.backbone = backbone
        self.dim = backbone.layers * 2 * backbone.width

    def __repr__(self) -> str:  # the feature cache key: backbone, weights, layout
        return (f"{type(self.backbone).__name__}Features(layers={self.backbone.layers}, "
                f"weights={self.backbone.weights_id})")

    def __call__(self, x: Tensor) -> Tensor:
        if self.backbone.cuts_speech:
            x = nn.functional.pad(x, (0, -x.shape[1] % FRAME))  # whole frames, as in a window
        else:  # the whole window, as the graph sees it
            x = nn.functional.pad(x, (0, WINDOW_SAMPLES - x.shape[1]))
        with torch.no_grad():
            rows = [torch.cat(pooled_states(self.backbone, x[i : i + 1]), dim=1)
                    for i in range(x.shape[0])]
        return torch.cat(rows)


@dataclass(frozen=True)
class Representation:
    """Which pooled hidden states the head reads: layer indices (0: the stem) and pooling."""

    layers: tuple[int, ...]
    pooling: str = "mean"

    def __post_init__(self) -> None:
        if self.pooling not in POOLINGS:
            raise ConfigError(f"pooling: {self.pooling!r} is not one of {', '.join(POOLINGS)}")
        if not self.layers or min(self.layers) < 0:
            raise ConfigError(f"layers: {self.layers!r} is not a list of layer indices")

    @property
    def name(self) -> str:
        layers = "+".join(str(i) for i in self.layers)
        return f"L{layers}-{self.pooling}"

    def columns(self, width: int) -> NDArray[np.int64]:
        """Columns of :class:`BackboneFeatures` output for these layers and this pooling."""
        take = width if self.pooling == "mean" else 2 * width
        return np.concatenate([np.arange(i * 2 * width, i * 2 * width + take)
                               for i in self.layers]).astype(np.int64)

    def select(self, feats: NDArray[np.float32], width: int) -> NDArray[np.float32]:
        return np.ascontiguousarray(feats[..., self.columns(width)])

    @classmethod
    def parse(cls, text: str) -> Representation:
        """``L2-mean`` / ``L1+2+3-meanstd`` (the ``name`` form)."""
        try:
            layers, pooling = text.removeprefix("L").split("-")
            return cls(tuple(int(i) for i in layers.split("+")), pooling)
        except (ValueError, ConfigError):
            raise ConfigError(f"representation: {text!r} is not like L2-mean or "
                              "L1+2-meanstd") from None


class FrozenSER(nn.Module):
    """Waveform ``[B, N]`` (preprocessed) -> ``logits [B, 4]`` and ``embedding [B, D]``.

    The backbone runs only up to the last layer the representation reads. With several heads
    (seeds) the logits are the log of their mean probabilities.
    """

    def __init__(self, backbone: nn.Module, rep: Representation, heads: Sequence[nn.Module],
                 width: int) -> None:
        super().__init__()
        self.backbone = backbone.truncated(max(rep.layers) + 1)  # type: ignore[operator]
        self.rep = rep
        self.width = width
        self.heads = nn.ModuleList(heads)

    def embed(self, waveform: Tensor) -> Tensor:
        backbone: Any = self.backbone
        pooled = pooled_states(backbone, waveform, upto=max(self.rep.layers) + 1)
        take = self.width if self.rep.pooling == "mean" else 2 * self.width
        return torch.cat([pooled[i][:, :take] for i in self.rep.layers], dim=1)

    def forward(self, waveform: Tensor) -> tuple[Tensor, Tensor]:
        emb = self.embed(waveform)
        if len(self.heads) == 1:
            return self.heads[0](emb), emb
        probs = torch.stack([torch.softmax(h(emb), dim=-1) for h in self.heads]).mean(0)
        return torch.log(probs.clamp_min(1e-7)), emb


# --- backbones ----------------------------------------------------------------------------------


class WhisperBackbone(nn.Module):
    """Whisper tiny.en's encoder (``encoders.whisper``): the stem and its 4 blocks."""

    name = "whisper-tiny"
    cuts_speech = True

    def __init__(self, encoder: nn.Module, weights_id: str) -> None:
        super().__init__()
        from edge_ser_model.encoders.whisper import WIDTH

        self.encoder = encoder
        self.width = WIDTH
        self.layers = len(encoder.blocks) + 1  # type: ignore[arg-type]
        self.weights_id = weights_id

    def hidden_states(self, waveform: Tensor) -> list[Tensor]:
        states: list[Tensor] = self.encoder.hidden_states(waveform)  # type: ignore[operator]
        return states

    def frame_mask(self, waveform: Tensor) -> Tensor:
        from edge_ser_model.encoders.whisper import speech_frames

        return speech_frames(waveform)

    def truncated(self, layers: int) -> WhisperBackbone:
        """A copy that computes only the first ``layers`` hidden states."""
        import copy

        enc = copy.deepcopy(self.encoder)
        enc.blocks = enc.blocks[: layers - 1]  # type: ignore[index]
        return WhisperBackbone(enc, self.weights_id)


class DistilHubertBackbone(nn.Module):
    """DistilHuBERT (``encoders.distilhubert``): the projected front end and its 2 layers."""

    name = "distilhubert"
    cuts_speech = False

    def __init__(self, model: nn.Module, weights_id: str) -> None:
        super().__init__()
        from edge_ser_model.encoders.distilhubert import HIDDEN

        self.model = model  # a DistilHubertClassifier; its head is not used
        self.width = HIDDEN
        self.layers = 3
        self.weights_id = weights_id

    def hidden_states(self, waveform: Tensor) -> list[Tensor]:
        m = self.model
        feats = m.front(waveform).transpose(1, 2)  # type: ignore[operator]
        hidden = m.encoder.feature_projection(feats)  # type: ignore[union-attr,operator]
        # the encoder's own steps, each state kept (transformers 5 no longer returns them from
        # the bare encoder); the layers return a tensor, or a tuple in transformers 4
        enc: Any = m.encoder.encoder  # type: ignore[union-attr]
        hidden = enc.layer_norm(hidden + enc.pos_conv_embed(hidden))
        states = [hidden]
        for layer in enc.layers:
            out = layer(hidden, attention_mask=None)
            hidden = out[0] if isinstance(out, tuple) else out
            states.append(hidden)
        return states

    def frame_mask(self, waveform: Tensor) -> Tensor:
        mask: Tensor = self.model.speech_frames(waveform)  # type: ignore[operator]
        return mask

    def truncated(self, layers: int) -> DistilHubertBackbone:
        import copy

        model: Any = copy.deepcopy(self.model)
        enc = model.encoder.encoder
        enc.layers = enc.layers[: layers - 1]
        return DistilHubertBackbone(model, self.weights_id)


def load_backbone(name: str, weights: Path | None = None, random_init: bool = False,
                  sha256: str | None = None, check: bool = True) -> Any:
    """The named backbone from local weights (sha256-checked), or with random weights."""
    if name not in BACKBONES:
        raise ConfigError(f"encoder: {name!r} has no frozen-backbone path "
                          f"({', '.join(BACKBONES)})")
    if weights is None and not random_init:
        raise ConfigError(f"--encoder {name}: give --weights DIR (a local copy) or "
                          "--random-init (the architecture with random weights, for tests)")
    if name == "whisper-tiny":
        from edge_ser_model.encoders.whisper import load_whisper, random_whisper

        if weights is None:
            return WhisperBackbone(random_whisper(), "random")
        enc, digest = load_whisper(weights, expected_sha256=sha256, check=check)
        return WhisperBackbone(enc, digest[:16])
    from edge_ser_model.encoders import sha256_file
    from edge_ser_model.encoders.distilhubert import (
        EXPECTED_SHA256,
        WEIGHTS_FILE,
        DistilHubertClassifier,
    )

    want = sha256 or (EXPECTED_SHA256 if check else None)
    model = DistilHubertClassifier(weights_dir=weights, random_init=weights is None,
                                   expected_sha256=want, seed=0)
    if weights is None:
        digest = "random"
    else:  # the loader checked the file against ``want``: hash it again only when unchecked
        digest = want.lower() if want else sha256_file(Path(weights) / WEIGHTS_FILE)
    return DistilHubertBackbone(model.eval(), digest[:16])


@torch.no_grad()
def smooth_activations(model: FrozenSER, windows: Tensor, alpha: float = 0.5) -> int:
    """Move the outlier channels of each LayerNorm's output into the Linear that reads it
    (SmoothQuant, Xiao et al. 2023): ``LN(x) / s`` then ``W * s`` computes the same in fp32,
    but int8's per-tensor activation scale no longer has to span a few huge channels. Whisper's
    pre-LN blocks only (LN -> qkv, LN -> first MLP layer); returns the pairs smoothed."""
    blocks = getattr(getattr(model.backbone, "encoder", None), "blocks", None)
    if blocks is None or not all(hasattr(b, "attn_ln") for b in blocks):
        return 0
    pairs = [(b.attn_ln, b.qkv) for b in blocks] + [(b.mlp_ln, b.mlp[0]) for b in blocks]
    peaks: dict[int, Tensor] = {}

    def hook(index: int) -> Callable[..., None]:
        def record(_m: nn.Module, _inp: object, out: Tensor) -> None:
            peak = out.abs().amax(dim=(0, 1))
            peaks[index] = torch.maximum(peaks.get(index, peak), peak)
        return record

    handles = [ln.register_forward_hook(hook(i)) for i, (ln, _) in enumerate(pairs)]
    try:
        for i in range(len(windows)):
            model(windows[i : i + 1])
    finally:
        for h in handles:
            h.remove()
    for i, (ln, linear) in enumerate(pairs):
        w_peak = linear.weight.abs().amax(dim=0).clamp_min(1e-5)
        s = (peaks[i].clamp_min(1e-5) ** alpha / w_peak ** (1 - alpha)).clamp(1e-2, 1e2)
        ln.weight.div_(s)
        ln.bias.div_(s)
        linear.weight.mul_(s[None, :])
    return len(pairs)
