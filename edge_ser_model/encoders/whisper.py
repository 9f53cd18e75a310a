"""Whisper tiny.en's audio encoder, frozen, as a feature extractor for emotion heads.

OpenAI's Whisper weights are MIT-licensed. They are read from a local copy, never downloaded, in
any of the forms a user holds them (each checked by sha256, see :func:`load_whisper`):

- a CTranslate2 folder (``model.bin``: SYSTRAN's ``faster-whisper-tiny.en``),
- OpenAI's own checkpoint (``tiny.en.pt``),
- a Hugging Face folder (``model.safetensors`` or ``pytorch_model.bin`` of
  ``openai/whisper-tiny.en``).

Whisper was trained on 30-s inputs; the position table is sliced to the window's frames, so an
8-s window costs 8/30 of the full encoder. Middle blocks carry more of how something is said
than the last, which is tuned to words, so the graph can stop after any block.
"""

from __future__ import annotations

import logging
import math
import struct
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from edge_ser import SAMPLE_RATE
from edge_ser.errors import ModelError
from edge_ser_model.encoders import sha256_file

log = logging.getLogger(__name__)

N_FFT = 400
HOP = 160
N_MELS = 80
WIDTH = 384
HEADS = 6
BLOCKS = 4
N_CTX = 1500  # encoder frames of a 30-s input
FRAME = 2 * HOP  # input samples per encoder frame (the second convolution has stride 2)

#: sha256 of the files known to hold whisper tiny.en's weights, by file name.
KNOWN_SHA256 = {
    # SYSTRAN/faster-whisper-tiny.en at 0d3d19a32d3338f10357c0889762bd8d64bbdeba (fp16)
    "model.bin": "1a5afae06a4db91c975c9a9d78be5cc110ee4ea022ad57d55492e4550e936b2a",
    # OpenAI's release (its download URL carries the hash)
    "tiny.en.pt": "d3dd57d32accea0b295c96e26691aa14d8822fac7d9d27d5dc00b4ca2826dd03",
}
WEIGHTS_SOURCE = "openai/whisper-tiny.en (MIT)"


def mel_filters(sr: int = SAMPLE_RATE, n_fft: int = N_FFT, n_mels: int = N_MELS) -> np.ndarray:
    """Slaney-scale, Slaney-normalised triangular filters ``[n_mels, n_fft // 2 + 1]``, as
    Whisper computed its log-mel (librosa's defaults)."""

    def hz_to_mel(f: np.ndarray) -> np.ndarray:
        f = np.asarray(f, dtype=np.float64)
        lin = f / (200.0 / 3)
        logstep = math.log(6.4) / 27.0
        return np.where(f >= 1000.0, 15.0 + np.log(np.maximum(f, 1e-10) / 1000.0) / logstep, lin)

    def mel_to_hz(m: np.ndarray) -> np.ndarray:
        m = np.asarray(m, dtype=np.float64)
        logstep = math.log(6.4) / 27.0
        return np.where(m >= 15.0, 1000.0 * np.exp(logstep * (m - 15.0)), (200.0 / 3) * m)

    fft_freqs = np.linspace(0, sr / 2, n_fft // 2 + 1)
    mel_f = mel_to_hz(np.linspace(hz_to_mel(np.array(0.0)), hz_to_mel(np.array(sr / 2.0)),
                                  n_mels + 2))
    fdiff = np.diff(mel_f)
    ramps = mel_f[:, None] - fft_freqs[None, :]
    weights = np.zeros((n_mels, len(fft_freqs)))
    for i in range(n_mels):
        lower = -ramps[i] / fdiff[i]
        upper = ramps[i + 2] / fdiff[i + 1]
        weights[i] = np.maximum(0, np.minimum(lower, upper))
    weights *= (2.0 / (mel_f[2 : n_mels + 2] - mel_f[:n_mels]))[:, None]
    return weights.astype(np.float32)


class LogMel(nn.Module):
    """Whisper's log-mel spectrogram as exportable ops: ``[B, N]`` -> ``[B, 80, N // 160]``.

    A reflect-padded STFT (periodic Hann, 400 points, hop 160) as two convolutions, power, mel,
    log10, floored 8 below the window's maximum, scaled as Whisper's ``(x + 4) / 4``.
    """

    basis: Tensor
    mel: Tensor

    def __init__(self) -> None:
        super().__init__()
        n = np.arange(N_FFT)
        window = 0.5 - 0.5 * np.cos(2 * np.pi * n / N_FFT)
        k = np.arange(N_FFT // 2 + 1)[:, None]
        cos = np.cos(2 * np.pi * k * n[None, :] / N_FFT) * window
        sin = -np.sin(2 * np.pi * k * n[None, :] / N_FFT) * window
        basis = np.concatenate([cos, sin])[:, None, :].astype(np.float32)
        self.register_buffer("basis", torch.from_numpy(basis))
        self.register_buffer("mel", torch.from_numpy(mel_filters()))

    def forward(self, x: Tensor) -> Tensor:
        padded = nn.functional.pad(x[:, None, :], (N_FFT // 2, N_FFT // 2), mode="reflect")
        spec = nn.functional.conv1d(padded, self.basis, stride=HOP)[:, :, :-1]
        half = N_FFT // 2 + 1
        power = spec[:, :half] ** 2 + spec[:, half:] ** 2
        logmel = torch.log10(torch.clamp(torch.matmul(self.mel, power), min=1e-10))
        top = logmel.amax(dim=(1, 2), keepdim=True)
        return (torch.maximum(logmel, top - 8.0) + 4.0) / 4.0


class Block(nn.Module):
    """A pre-LN transformer block: self-attention, then a 4x-wide GELU MLP."""

    def __init__(self) -> None:
        super().__init__()
        self.attn_ln = nn.LayerNorm(WIDTH)
        self.qkv = nn.Linear(WIDTH, 3 * WIDTH)
        self.out = nn.Linear(WIDTH, WIDTH)
        self.mlp_ln = nn.LayerNorm(WIDTH)
        self.mlp = nn.Sequential(nn.Linear(WIDTH, 4 * WIDTH), nn.GELU(),
                                 nn.Linear(4 * WIDTH, WIDTH))

    def forward(self, x: Tensor) -> Tensor:
        b, t, _ = x.shape
        d = WIDTH // HEADS
        qkv = self.qkv(self.attn_ln(x)).reshape(b, t, 3, HEADS, d).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.unbind(0)
        att = torch.softmax(torch.matmul(q, k.transpose(-1, -2)) * d**-0.5, dim=-1)
        x = x + self.out(torch.matmul(att, v).transpose(1, 2).reshape(b, t, WIDTH))
        return x + self.mlp(self.mlp_ln(x))


class WhisperEncoder(nn.Module):
    """Log-mel, two convolutions, sinusoidal positions and the first ``blocks`` blocks.

    ``hidden_states`` returns the residual stream after the stem and after each block
    (``1 + blocks`` tensors ``[B, T, 384]``, ``T = N // 320``); the final LayerNorm of the full
    encoder is not applied (it belongs to the last block's output only).
    """

    positions: Tensor

    def __init__(self, blocks: int = BLOCKS) -> None:
        super().__init__()
        if not 0 <= blocks <= BLOCKS:
            raise ModelError(f"whisper: blocks must be 0-{BLOCKS}, not {blocks}")
        self.logmel = LogMel()
        self.conv1 = nn.Conv1d(N_MELS, WIDTH, 3, padding=1)
        self.conv2 = nn.Conv1d(WIDTH, WIDTH, 3, stride=2, padding=1)
        self.register_buffer("positions", sinusoids(N_CTX, WIDTH))
        self.blocks = nn.ModuleList(Block() for _ in range(blocks))

    def hidden_states(self, waveform: Tensor) -> list[Tensor]:
        x = nn.functional.gelu(self.conv1(self.logmel(waveform)))
        x = nn.functional.gelu(self.conv2(x)).transpose(1, 2)
        x = x + self.positions[: x.shape[1]]
        out = [x]
        for block in self.blocks:
            x = block(x)
            out.append(x)
        return out

    def forward(self, waveform: Tensor) -> Tensor:
        return self.hidden_states(waveform)[-1]


def sinusoids(length: int, channels: int, max_timescale: float = 10000.0) -> Tensor:
    """Whisper's fixed position table ``[length, channels]`` (sin half, then cos half)."""
    inc = math.log(max_timescale) / (channels // 2 - 1)
    inv = torch.exp(-inc * torch.arange(channels // 2, dtype=torch.float64))
    t = torch.arange(length, dtype=torch.float64)[:, None] * inv[None, :]
    return torch.cat([torch.sin(t), torch.cos(t)], dim=1).float()


def speech_frames(waveform: Tensor) -> Tensor:
    """``[B, T]`` 1.0 where an encoder frame's 320 input samples are not all zero (padding)."""
    energy = nn.functional.avg_pool1d(waveform.abs()[:, None, :], FRAME, FRAME)
    return (energy[:, 0, :] > 0).to(waveform.dtype)


# --- weights ------------------------------------------------------------------------------------


def _read_ctranslate2(path: Path) -> dict[str, np.ndarray]:
    """The variables of a CTranslate2 ``model.bin`` (format version 6), by name."""
    dtypes = {0: np.float32, 1: np.int8, 2: np.int16, 3: np.int32, 4: np.float16}
    out: dict[str, np.ndarray] = {}
    with path.open("rb") as fh:

        def unpack(fmt: str) -> Any:
            size = struct.calcsize(fmt)
            data = fh.read(size)
            if len(data) != size:
                raise ModelError(f"{path}: cut short (not a whole CTranslate2 model.bin)")
            return struct.unpack(fmt, data)[0]

        def string() -> str:
            raw = fh.read(unpack("<H"))
            return raw.rstrip(b"\0").decode("utf-8", "replace")

        version = unpack("<I")
        if version != 6:
            raise ModelError(f"{path}: CTranslate2 model format {version}, this reads 6")
        spec = string()
        if spec != "WhisperSpec":
            raise ModelError(f"{path}: a CTranslate2 {spec}, not a Whisper model")
        unpack("<I")  # spec revision
        for _ in range(unpack("<I")):
            name = string()
            rank = unpack("<B")
            shape = [unpack("<I") for _ in range(rank)]
            dtype = dtypes.get(unpack("<B"))
            nbytes = unpack("<I")
            if not name.startswith("encoder/"):
                fh.seek(nbytes, 1)
                continue
            if dtype is None:
                raise ModelError(f"{path}: {name} has a data type this reader does not know")
            raw = fh.read(nbytes)
            out[name] = np.frombuffer(raw, dtype=dtype).reshape(shape).astype(np.float32)
    return out


def _from_ctranslate2(v: dict[str, np.ndarray], blocks: int) -> dict[str, np.ndarray]:
    state = {
        "conv1.weight": v["encoder/conv1/weight"], "conv1.bias": v["encoder/conv1/bias"],
        "conv2.weight": v["encoder/conv2/weight"], "conv2.bias": v["encoder/conv2/bias"],
        "positions": v["encoder/position_encodings/encodings"],
    }
    for i in range(blocks):
        p, o = f"encoder/layer_{i}/", f"blocks.{i}."
        pairs = {
            "attn_ln.weight": "self_attention/layer_norm/gamma",
            "attn_ln.bias": "self_attention/layer_norm/beta",
            "qkv.weight": "self_attention/linear_0/weight",
            "qkv.bias": "self_attention/linear_0/bias",
            "out.weight": "self_attention/linear_1/weight",
            "out.bias": "self_attention/linear_1/bias",
            "mlp_ln.weight": "ffn/layer_norm/gamma", "mlp_ln.bias": "ffn/layer_norm/beta",
            "mlp.0.weight": "ffn/linear_0/weight", "mlp.0.bias": "ffn/linear_0/bias",
            "mlp.2.weight": "ffn/linear_1/weight", "mlp.2.bias": "ffn/linear_1/bias",
        }
        state.update({o + ours: v[p + theirs] for ours, theirs in pairs.items()})
    return state


def _from_torch_names(t: dict[str, np.ndarray], blocks: int, hf: bool) -> dict[str, np.ndarray]:
    """OpenAI's (``encoder.blocks.N.attn.query``) or Hugging Face's
    (``model.encoder.layers.N.self_attn.q_proj``) names; the key projection has no bias."""
    pre = "model.encoder." if hf else "encoder."
    if hf and not any(k.startswith(pre) for k in t):
        pre = "encoder."  # a bare WhisperModel / encoder state dict
    state = {k: t[pre + k] for k in ("conv1.weight", "conv1.bias", "conv2.weight", "conv2.bias")}
    state["positions"] = t[pre + ("embed_positions.weight" if hf else "positional_embedding")]
    for i in range(blocks):
        o = f"blocks.{i}."
        if hf:
            p = f"{pre}layers.{i}."
            names = {"q": "self_attn.q_proj", "k": "self_attn.k_proj", "v": "self_attn.v_proj",
                     "out": "self_attn.out_proj", "attn_ln": "self_attn_layer_norm",
                     "mlp0": "fc1", "mlp2": "fc2", "mlp_ln": "final_layer_norm"}
        else:
            p = f"{pre}blocks.{i}."
            names = {"q": "attn.query", "k": "attn.key", "v": "attn.value", "out": "attn.out",
                     "attn_ln": "attn_ln", "mlp0": "mlp.0", "mlp2": "mlp.2", "mlp_ln": "mlp_ln"}
        q, k, v = (p + names[x] for x in "qkv")
        state[o + "qkv.weight"] = np.concatenate([t[q + ".weight"], t[k + ".weight"],
                                                  t[v + ".weight"]])
        state[o + "qkv.bias"] = np.concatenate([t[q + ".bias"], np.zeros(WIDTH, np.float32),
                                                t[v + ".bias"]])
        for ours, theirs in (("out", "out"), ("attn_ln", "attn_ln"), ("mlp.0", "mlp0"),
                             ("mlp.2", "mlp2"), ("mlp_ln", "mlp_ln")):
            for part in ("weight", "bias"):
                state[f"{o}{ours}.{part}"] = t[f"{p}{names[theirs]}.{part}"]
    return state


def weights_file(source: Path) -> Path:
    """The weights file inside ``source`` (a folder in one of the known forms, or a file)."""
    if source.is_file():
        return source
    if not source.is_dir():
        raise ModelError(f"{source}: no such file or folder (a local copy of whisper tiny.en: "
                         "a CTranslate2 folder with model.bin, OpenAI's tiny.en.pt, or a "
                         "Hugging Face folder)")
    for name in ("model.bin", "model.safetensors", "pytorch_model.bin", "tiny.en.pt"):
        if (source / name).is_file():
            return source / name
    raise ModelError(f"{source}: holds none of model.bin (CTranslate2), model.safetensors or "
                     "pytorch_model.bin (Hugging Face), tiny.en.pt (OpenAI)")


def check_sha256(path: Path, expected: str | None, check: bool = True) -> str:
    """The file's sha256, checked against ``expected`` or the known hash of its file name."""
    actual = sha256_file(path)
    if not check:
        return actual
    want = expected or KNOWN_SHA256.get(path.name)
    if want is None:
        raise ModelError(f"{path}: no published sha256 is known here for this file; give the "
                         "one you trust with --sha256 HEX (or --no-sha256-check)")
    if actual != want.lower():
        raise ModelError(f"{path}: sha256 {actual} != expected {want} (another model, or a "
                         "damaged copy)")
    return actual


def load_state_file(path: Path, blocks: int = BLOCKS) -> dict[str, np.ndarray]:
    """Encoder weights in this module's naming, from any of the supported files."""
    try:
        if path.name.endswith(".bin") and path.read_bytes()[:4] == struct.pack("<I", 6):
            return _from_ctranslate2(_read_ctranslate2(path), blocks)
        if path.suffix == ".safetensors":
            from safetensors.numpy import load_file

            raw = dict(load_file(str(path)))
            return _from_torch_names({k: np.asarray(v, np.float32) for k, v in raw.items()},
                                     blocks, hf=True)
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except ModelError:
        raise
    except KeyError as err:
        raise ModelError(f"{path}: no tensor {err} (not whisper tiny.en's weights?)") from err
    except Exception as err:  # noqa: BLE001 - unreadable weights: one line for the user
        first = (str(err).strip().splitlines() or [""])[0][:160]
        raise ModelError(f"{path}: not readable weights ({type(err).__name__}: {first})") from err
    if not isinstance(obj, dict):
        raise ModelError(f"{path}: not a state dict")
    openai = "model_state_dict" in obj
    tensors = obj["model_state_dict"] if openai else obj
    arrays = {k: v.float().numpy() for k, v in tensors.items() if isinstance(v, Tensor)}
    try:
        return _from_torch_names(arrays, blocks, hf=not openai)
    except KeyError as err:
        raise ModelError(f"{path}: no tensor {err} (not whisper tiny.en's weights?)") from err


def load_whisper(source: str | Path, blocks: int = BLOCKS, expected_sha256: str | None = None,
                 check: bool = True) -> tuple[WhisperEncoder, str]:
    """A frozen :class:`WhisperEncoder` of ``blocks`` blocks from local weights, and the
    weights file's sha256."""
    path = weights_file(Path(source).expanduser())
    digest = check_sha256(path, expected_sha256, check)
    state = load_state_file(path, blocks)
    model = WhisperEncoder(blocks)
    own = model.state_dict()
    for key, value in state.items():
        if key == "positions":
            if value.shape[1:] != (WIDTH,) or value.shape[0] < N_CTX:
                raise ModelError(f"{path}: position table {list(value.shape)}, whisper tiny "
                                 f"has [{N_CTX}, {WIDTH}]")
            value = value[:N_CTX]
        elif tuple(own[key].shape) != value.shape:
            raise ModelError(f"{path}: {key} has shape {list(value.shape)}, whisper tiny's is "
                             f"{list(own[key].shape)} (another Whisper size?)")
        own[key] = torch.from_numpy(np.ascontiguousarray(value))
    model.load_state_dict(own)
    log.info("whisper: %d blocks from %s (sha256 %s...)", blocks, path, digest[:12])
    return freeze(model), digest


def freeze(model: WhisperEncoder) -> WhisperEncoder:
    for p in model.parameters():
        p.requires_grad = False
    return model.eval()


def random_whisper(blocks: int = BLOCKS, seed: int = 0) -> WhisperEncoder:
    """The architecture with random weights (tests; the figures mean nothing)."""
    torch.manual_seed(seed)
    return freeze(WhisperEncoder(blocks))

