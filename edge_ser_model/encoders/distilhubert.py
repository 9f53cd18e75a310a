"""The paper's encoder: frozen DistilHuBERT (``ntu-spml/distilhubert``) plus a small trainable head.

The architecture is built from :data:`DISTILHUBERT_CONFIG` (the upstream ``config.json``, written
here so nothing is ever fetched). Pretrained weights come from a local Hugging Face-format
directory holding ``pytorch_model.bin`` (sha256-checked); ``random_init=True`` builds the same
architecture with random weights, which is how it is tested on machines without the weights.

The convolutional front end runs in chunks of ``chunk_frames`` output frames so the 8-s
activations of its 512 channels are never held at once; it lives in
:mod:`.distilhubert_frontend` (re-exported here) and equals the unchunked model up to float
rounding.
"""

from __future__ import annotations

import copy
import json
import logging
from pathlib import Path
from typing import Any

import torch
from torch import nn
from transformers import HubertConfig, HubertModel

from edge_ser import LABELS
from edge_ser.errors import ModelError
from edge_ser_model.encoders import sha256_file as sha256_file
from edge_ser_model.encoders.distilhubert_frontend import HOP as HOP
from edge_ser_model.encoders.distilhubert_frontend import RECEPTIVE_FIELD as RECEPTIVE_FIELD
from edge_ser_model.encoders.distilhubert_frontend import (
    ChunkedFeatureEncoder as ChunkedFeatureEncoder,
)

log = logging.getLogger(__name__)

#: sha256 of the published ``ntu-spml/distilhubert`` ``pytorch_model.bin``.
EXPECTED_SHA256 = "59d95a43d546c59b81453311e470476c97d20eada48301235e8eab57c1a3f188"
#: Parameters of the encoder (``HubertModel``, including ``masked_spec_embed``).
ENCODER_PARAMS = 23_491_968
WEIGHTS_FILE = "pytorch_model.bin"
HIDDEN = 768
RANDOM_BIAS_STD = 0.2  # see randomize_biases

#: Upstream ``config.json`` of ``ntu-spml/distilhubert`` (architecture-relevant keys).
DISTILHUBERT_CONFIG: dict[str, Any] = {
    "model_type": "hubert", "architectures": ["HubertModel"], "vocab_size": 32,
    "conv_dim": [512] * 7, "conv_kernel": [10, 3, 3, 3, 3, 2, 2],
    "conv_stride": [5, 2, 2, 2, 2, 2, 2],
    "conv_bias": False, "feat_extract_norm": "group", "feat_extract_activation": "gelu",
    "num_feat_extract_layers": 7, "feat_proj_layer_norm": False, "do_stable_layer_norm": False,
    "hidden_size": HIDDEN, "num_hidden_layers": 2, "num_attention_heads": 12,
    "intermediate_size": 3072, "hidden_act": "gelu", "layer_norm_eps": 1e-05,
    "num_conv_pos_embeddings": 128, "num_conv_pos_embedding_groups": 16,
    "activation_dropout": 0.1, "attention_dropout": 0.1, "hidden_dropout": 0.1,
    "feat_proj_dropout": 0.1, "feat_extract_dropout": 0.0, "final_dropout": 0.0, "layerdrop": 0.0,
    "apply_spec_augment": False, "mask_time_prob": 0.05, "initializer_range": 0.02,
}
#: Keys of a user's ``config.json`` that must match ours (dropouts and the like may differ).
_ARCH_KEYS = [k for k in DISTILHUBERT_CONFIG if not k.endswith("dropout") and (
    k.startswith(("conv_", "feat_", "num_", "hidden_")) or k in ("do_stable_layer_norm",
                                                                 "intermediate_size"))]


CHUNK_FRAMES = 32  # front-end chunk (0.64 s): 50 peaked 12 MiB higher, int8 file 22 KB smaller


def hubert_config() -> HubertConfig:
    cfg = HubertConfig(**DISTILHUBERT_CONFIG)
    cfg._attn_implementation = "eager"  # plain ops: exportable and quantizable
    return cfg


def check_config_json(weights_dir: Path) -> None:
    """If ``config.json`` is there, it must describe the same architecture."""
    path = weights_dir / "config.json"
    if not path.is_file():
        return
    try:
        theirs = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        raise ModelError(f"{path}: not readable JSON: {err}") from err
    for key in _ARCH_KEYS:
        if key in theirs and theirs[key] != DISTILHUBERT_CONFIG[key]:
            want = DISTILHUBERT_CONFIG[key]
            raise ModelError(f"{path}: {key} is {theirs[key]!r}, distilhubert has {want!r}")


def load_weights(weights_dir: str | Path, expected_sha256: str | None = EXPECTED_SHA256
                 ) -> dict[str, torch.Tensor]:
    """Read ``pytorch_model.bin`` from a local directory, sha256-checked; keys in our naming."""
    folder = Path(weights_dir)
    if folder.is_file():  # the weights file itself: an easy slip
        raise ModelError(f"{folder}: a file; --weights names the folder that holds "
                         f"{WEIGHTS_FILE} (and config.json)")
    if not folder.is_dir():
        raise ModelError(f"{folder}: no such folder (the local copy of ntu-spml/distilhubert)")
    path = folder / WEIGHTS_FILE
    if not path.is_file():
        raise ModelError(f"{path}: missing (place ntu-spml/distilhubert's {WEIGHTS_FILE} there)")
    check_config_json(folder)
    if expected_sha256 is not None:
        actual = sha256_file(path)
        if actual != expected_sha256.lower():
            raise ModelError(f"{path}: sha256 {actual} != expected {expected_sha256}")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - any unpickling failure is one line for the user
        first = (str(err).strip().splitlines() or [""])[0][:160]
        raise ModelError(f"{path}: not a PyTorch state dict ({type(err).__name__}"
                         + (f": {first}" if first and not first.isdigit() else "") + ")") from err
    if not isinstance(state, dict):
        raise ModelError(f"{path}: not a PyTorch state dict")
    out: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        name = key.removeprefix("hubert.")
        name = name.replace("pos_conv_embed.conv.weight_g",
                            "pos_conv_embed.conv.parametrizations.weight.original0")
        name = name.replace("pos_conv_embed.conv.weight_v",
                            "pos_conv_embed.conv.parametrizations.weight.original1")
        out[name] = value
    return out


def load_state(module: nn.Module, state: dict[str, torch.Tensor], path: Path
               ) -> tuple[list[str], list[str]]:
    """``module.load_state_dict(state, strict=False)``: (missing, unexpected) keys, and a
    tensor of the wrong shape is a one-line ModelError naming it (torch lists them all)."""
    own = module.state_dict()
    for key, value in state.items():
        if key in own and tuple(own[key].shape) != tuple(value.shape):
            raise ModelError(f"{path}: {key} has shape {list(value.shape)}, the model's is "
                             f"{list(own[key].shape)} (weights of another architecture?)")
    missing, unexpected = module.load_state_dict(state, strict=False)
    return list(missing), list(unexpected)


@torch.no_grad()
def randomize_biases(module: nn.Module, std: float) -> None:
    """Give every bias a random value (``transformers`` initialises them to zero).

    With zero biases the zero-padded frames of a short clip map to an almost-zero hidden vector,
    which the encoder's LayerNorms then blow up by ~1000x: float rounding alone flips outputs and
    no int8 scheme can be judged. Trained weights have non-zero biases; this mimics them.
    """
    for sub in module.modules():
        bias = getattr(sub, "bias", None)
        if isinstance(bias, torch.Tensor):
            bias.normal_(0.0, std)


class DistilHubertClassifier(nn.Module):
    """Frozen DistilHuBERT -> mean over frames -> MLP -> ``len(LABELS)`` logits."""

    def __init__(
        self,
        weights_dir: str | Path | None = None,
        random_init: bool = False,
        expected_sha256: str | None = EXPECTED_SHA256,
        head_hidden: int = 256,
        dropout: float = 0.1,
        chunk_frames: int | None = CHUNK_FRAMES,
        head_init_scale: float = 1.0,
        seed: int | None = None,
        masked_pool: bool = True,
    ) -> None:
        super().__init__()
        if weights_dir is None and not random_init:
            raise ModelError("distilhubert: give a weights directory or random_init=True")
        if seed is not None:
            torch.manual_seed(seed)
        self.encoder = HubertModel(hubert_config())
        n_params = sum(p.numel() for p in self.encoder.parameters())
        if n_params != ENCODER_PARAMS:
            raise ModelError(f"distilhubert: {n_params} encoder params, want {ENCODER_PARAMS}")
        if weights_dir is not None:
            state = load_weights(weights_dir, expected_sha256)
            missing, unexpected = load_state(self.encoder, state, Path(weights_dir) / WEIGHTS_FILE)
            if missing or unexpected:
                raise ModelError(
                    f"{Path(weights_dir) / WEIGHTS_FILE}: missing keys {missing[:3]}, "
                    f"unexpected keys {unexpected[:3]}"
                )
            log.info("distilhubert: loaded %d tensors from %s", len(state), weights_dir)
        else:
            randomize_biases(self.encoder, RANDOM_BIAS_STD)
        for p in self.encoder.parameters():
            p.requires_grad = False
        self.front = ChunkedFeatureEncoder(self.encoder.feature_extractor.conv_layers, chunk_frames)
        self.head = nn.Sequential(
            nn.Linear(HIDDEN, head_hidden), nn.GELU(), nn.Dropout(dropout),
            nn.Linear(head_hidden, len(LABELS)),
        )
        if head_init_scale != 1.0:
            with torch.no_grad():
                for p in self.head.parameters():
                    p.mul_(head_init_scale)
        self.masked_pool = masked_pool
        self.encoder.eval()

    @torch.no_grad()
    def init_head_from_data(self, embeddings: torch.Tensor, logit_std: float = 2.0,
                            directions: int = 8) -> None:
        """Data-dependent head init for random weights: logits that differ between real clips.

        With random encoder weights the pooled embeddings of all clips share a large common
        component, so a plainly initialised head gives one argmax for every clip. Here the first
        layer reads random mixtures of the top ``directions`` principal components of real
        speech embeddings (where clips differ, as a trained head would), centred and scaled to
        unit variance; the logits are then centred and scaled to ``logit_std``.
        """
        first, last = self.head[0], self.head[-1]
        assert isinstance(first, nn.Linear) and isinstance(last, nn.Linear)
        centred = embeddings - embeddings.mean(dim=0)
        k = max(1, min(directions, len(embeddings) - 1))
        _, sing, vt = torch.linalg.svd(centred, full_matrices=False)
        mix = torch.randn(first.out_features, k, generator=torch.Generator().manual_seed(0))
        first.weight.copy_(mix @ (vt[:k] / sing[:k, None].clamp_min(1e-6)))
        first.bias.zero_()
        pre = first(embeddings)
        std = pre.std(dim=0).clamp_min(1e-6)
        first.weight.div_(std[:, None])
        first.bias.copy_(-pre.mean(dim=0) / std)
        out = last(self.head[1](first(embeddings)))
        ostd = out.std(dim=0).clamp_min(1e-6) / logit_std
        last.weight.div_(ostd[:, None])
        last.bias.copy_((last.bias - out.mean(dim=0)) / ostd)

    def train(self, mode: bool = True) -> DistilHubertClassifier:
        super().train(mode)
        self.encoder.eval()  # frozen: no dropout, no masking, ever
        return self

    def embed(self, waveform: torch.Tensor) -> torch.Tensor:
        """``[B, N]`` preprocessed waveform -> ``[B, 768]`` mean-pooled encoder output."""
        feats = self.front(waveform).transpose(1, 2)
        hidden = self.encoder.feature_projection(feats)
        hidden = self.encoder.encoder(hidden)[0]
        if not self.masked_pool:
            return hidden.mean(dim=1)
        mask = self.speech_frames(waveform)[:, :, None]
        return (hidden * mask).sum(dim=1) / mask.sum(dim=1).clamp_min(1.0)

    @staticmethod
    def speech_frames(waveform: torch.Tensor) -> torch.Tensor:
        """``[B, T]`` 1.0 where a frame's 400 input samples are not all zero (not padding)."""
        energy = nn.functional.avg_pool1d(waveform.abs()[:, None, :], RECEPTIVE_FIELD, HOP)
        return (energy[:, 0, :] > 0).to(waveform.dtype)

    def forward(self, waveform: torch.Tensor) -> torch.Tensor:
        return self.head(self.embed(waveform))

    def for_export(self) -> DistilHubertClassifier:
        """A copy in eval mode with the positional conv's weight norm folded into one tensor."""
        model = copy.deepcopy(self).eval()
        pos = model.encoder.encoder.pos_conv_embed
        old = pos.conv
        plain = nn.Conv1d(old.in_channels, old.out_channels, old.kernel_size[0],
                          padding=old.padding[0], groups=old.groups)
        with torch.no_grad():
            plain.weight.copy_(old.weight)
            assert plain.bias is not None and old.bias is not None
            plain.bias.copy_(old.bias)
        plain.requires_grad_(False)
        pos.conv = plain
        return model
