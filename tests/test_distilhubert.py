"""DistilHuBERT encoder, ONNX export and int8 quantization, with random weights.

No pretrained weights exist on these machines: the exact architecture is built with
``random_init=True`` and the whole path (export, int8, contract, agreement on real speech) is
checked on it.
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="needs the training extra (torch)")
pytest.importorskip("transformers", reason="needs the training extra (transformers)")

from edge_ser import LABELS  # noqa: E402
from edge_ser.errors import ModelError  # noqa: E402
from edge_ser_model.encoders import distilhubert as dh  # noqa: E402

pytestmark = pytest.mark.train
MB = 1e6


@pytest.fixture(scope="module")
def model() -> dh.DistilHubertClassifier:
    return dh.DistilHubertClassifier(random_init=True, seed=0).eval()


@pytest.fixture(scope="module")
def speech(examples: Path) -> np.ndarray:
    """Two prepared 8-s windows of real speech (bundled examples)."""
    from edge_ser.audio import read_wav
    from edge_ser.preprocess import prepare_window

    clips = sorted((examples / "clips").glob("*.wav"))[:2]
    return np.stack([prepare_window(read_wav(c)) for c in clips]).astype(np.float32)


def test_exact_architecture_and_param_count(model: dh.DistilHubertClassifier) -> None:
    enc = model.encoder
    assert sum(p.numel() for p in enc.parameters()) == dh.ENCODER_PARAMS == 23_491_968
    assert all(not p.requires_grad for p in enc.parameters())
    assert all(p.requires_grad for p in model.head.parameters())
    convs: list[Any] = [layer.conv for layer in enc.feature_extractor.conv_layers]
    assert [c.kernel_size[0] for c in convs] == [10, 3, 3, 3, 3, 2, 2]
    assert [c.stride[0] for c in convs] == [5, 2, 2, 2, 2, 2, 2]
    assert all(c.out_channels == 512 and c.bias is None for c in convs)
    assert len(enc.encoder.layers) == 2 and enc.config.num_attention_heads == 12
    model.train()
    assert not enc.training  # frozen encoder stays in eval mode (no dropout)
    model.eval()


def test_chunked_front_end_equals_unchunked(model: dh.DistilHubertClassifier,
                                           speech: np.ndarray) -> None:
    x = torch.from_numpy(speech)
    with torch.no_grad():
        chunked = model.front(x)
        model.front.chunk_frames = None
        try:
            whole = model.front(x)
        finally:
            model.front.chunk_frames = dh.CHUNK_FRAMES
        reference = model.encoder.feature_extractor(x)
    assert chunked.shape == whole.shape == (2, 512, 399)
    scale = float(whole.abs().max())
    assert float((chunked - whole).abs().max()) < 1e-5 * max(1.0, scale)
    assert float((whole - reference).abs().max()) == 0.0


def _upstream_state(model: dh.DistilHubertClassifier) -> dict[str, Any]:
    """The encoder's weights under the upstream checkpoint's key names (old weight norm)."""
    state = {}
    for key, value in model.encoder.state_dict().items():
        key = key.replace("parametrizations.weight.original0", "weight_g")
        key = key.replace("parametrizations.weight.original1", "weight_v")
        state[key] = value.clone()
    return state


def test_loads_local_weights_with_sha256(model: dh.DistilHubertClassifier, tmp_path: Path) -> None:
    torch.save(_upstream_state(model), tmp_path / "pytorch_model.bin")
    digest = dh.sha256_file(tmp_path / "pytorch_model.bin")
    loaded = dh.DistilHubertClassifier(weights_dir=tmp_path, expected_sha256=digest)
    mine: Any = model.encoder
    theirs: Any = loaded.encoder
    a = mine.feature_extractor.conv_layers[3].conv.weight
    assert torch.equal(a, theirs.feature_extractor.conv_layers[3].conv.weight)
    pos = mine.encoder.pos_conv_embed.conv.weight
    assert torch.allclose(pos, theirs.encoder.pos_conv_embed.conv.weight)


def test_refuses_bad_or_missing_weights(tmp_path: Path) -> None:
    with pytest.raises(ModelError, match="pytorch_model.bin: missing"):
        dh.DistilHubertClassifier(weights_dir=tmp_path)
    (tmp_path / "pytorch_model.bin").write_bytes(b"not the published checkpoint")
    with pytest.raises(ModelError, match="sha256") as err:
        dh.DistilHubertClassifier(weights_dir=tmp_path)  # default: the published sha256
    assert dh.EXPECTED_SHA256 in str(err.value) and "\n" not in str(err.value)
    with pytest.raises(ModelError, match="not a PyTorch state dict"):
        dh.DistilHubertClassifier(weights_dir=tmp_path, expected_sha256=None)
    (tmp_path / "config.json").write_text(json.dumps({"num_hidden_layers": 12}))
    with pytest.raises(ModelError, match="num_hidden_layers"):
        dh.DistilHubertClassifier(weights_dir=tmp_path, expected_sha256=None)
    with pytest.raises(ModelError, match="random_init"):
        dh.DistilHubertClassifier()
    (tmp_path / "config.json").unlink()
    with pytest.raises(ModelError, match=r"not a PyTorch state dict \(UnpicklingError"):
        dh.DistilHubertClassifier(weights_dir=tmp_path, expected_sha256=None)
    with pytest.raises(ModelError, match="no such folder"):
        dh.DistilHubertClassifier(weights_dir=tmp_path / "nowhere")
    with pytest.raises(ModelError, match="a file; --weights names the folder"):
        dh.DistilHubertClassifier(weights_dir=tmp_path / "pytorch_model.bin")


def test_weights_of_the_wrong_shape_are_one_line(model: dh.DistilHubertClassifier,
                                                 tmp_path: Path) -> None:
    state = _upstream_state(model)
    key = "feature_projection.projection.weight"
    state[key] = torch.zeros(8, 8)
    torch.save(state, tmp_path / "pytorch_model.bin")
    with pytest.raises(ModelError) as err:
        dh.DistilHubertClassifier(weights_dir=tmp_path, expected_sha256=None)
    text = str(err.value)
    assert "\n" not in text and f"{key} has shape [8, 8], the model's is [768, 512]" in text
    from edge_ser_model.export import load_checkpoint

    torch.save({"head.0.weight": torch.zeros(3, 3)}, tmp_path / "head.pt")
    with pytest.raises(ModelError, match=r"head\.0\.weight has shape \[3, 3\]"):
        load_checkpoint(model, tmp_path / "head.pt")


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Any]]:
    """fp32 + int8 DistilHuBERT (random weights), calibrated and checked on real speech."""
    from edge_ser_model.export import export_distilhubert
    from tests.conftest import EXAMPLES, SHARED_DATA

    data = SHARED_DATA if (SHARED_DATA / "ravdess" / "manifest.csv").is_file() else None
    out = tmp_path_factory.mktemp("distilhubert")
    report = export_distilhubert(
        out, random_init=True, calibration_data=data or EXAMPLES / "clips",
        n_calibration=16, n_check=48 if data else 12, timing_reps=2,
    )
    return out, report


@pytest.mark.slow
def test_export_int8_contract_size(exported: tuple[Path, dict[str, Any]]) -> None:
    out, report = exported
    fp32, int8 = out / "distilhubert.fp32.onnx", out / "distilhubert.int8.onnx"
    assert json.loads((out / "distilhubert.report.json").read_text()) == report
    assert report["fp32"]["max_abs_diff_vs_torch"] < 1e-2
    assert int8.stat().st_size <= 24 * MB < fp32.stat().st_size / 3
    if importlib.util.find_spec("edge_ser.model") is not None:  # the runtime's own check
        from edge_ser.model import OnnxModel

        runtime = OnnxModel(int8)
        assert tuple(runtime.info.labels) == LABELS and runtime.info.encoder == "distilhubert"
        probs = runtime.probabilities(np.zeros((1, 128000), np.float32))
        assert probs.shape == (1, 4) and abs(float(probs.sum()) - 1.0) < 1e-4
    from edge_ser_model.export import check_contract, read_metadata

    check_contract(int8)
    meta = read_metadata(int8)
    assert meta["encoder"] == "distilhubert" and meta["labels"] == ",".join(LABELS)
    assert meta["quantization"].startswith("int8") and meta["sample_rate"] == "16000"


@pytest.mark.slow
def test_export_writes_its_model_card(exported: tuple[Path, dict[str, Any]]) -> None:
    from edge_ser_model.card import figures

    out, report = exported
    card = (out / "distilhubert.MODEL_CARD.md").read_text()
    assert "not a speech-emotion model" in card  # random weights say so first
    lat = report["latency_1_thread"]
    assert lat["int8_ms"] > 0 and lat["fp32_ms"] > 0 and lat["torch_eager_ms"] > 0
    got = figures(report)
    assert f"{report['int8']['size_mb']:.2f} MB" in card
    assert f"{100 * got['argmax_agreement']:.1f} %" in card
    assert f"{got['int8_vs_fp32_speedup']:.2f} x" in card
    assert card.count("| pass |") + card.count("| **FAIL** |") == 4


def test_model_card_verdicts() -> None:
    """Each target row is judged against its limit; real weights drop the warning."""
    from edge_ser_model.card import card_text

    report: dict[str, Any] = {
        "weights": "ntu-spml/distilhubert", "window_s": 8.0, "head": "checkpoint head.pt",
        "fp32": {"size_mb": 94.9, "max_abs_diff_vs_torch": 1e-5},
        "int8": {"scheme": "qdq", "size_mb": 24.5},
        "int8_vs_fp32": {"windows": 100.0, "argmax_agreement": 0.995,
                         "mean_abs_logit_diff": 0.05, "fp32_logit_std": 2.0},
        "latency_1_thread": {"fp32_ms": 400.0, "int8_ms": 200.0, "torch_eager_ms": 250.0,
                             "reps": 5.0},
    }
    card = card_text(report)
    assert "not a speech-emotion model" not in card and "Apache-2.0" in card
    rows = {line.split(" | ")[0].lstrip("| "): line for line in card.splitlines()
            if line.startswith("| int8")}
    assert rows["int8 file size"].endswith("| **FAIL** |")  # 24.5 MB > 24 MB
    assert rows["int8 speed-up vs its fp32 ONNX (1 thread)"].endswith("| pass |")  # 2x
    assert rows["int8 speed-up vs PyTorch eager (1 thread)"].endswith("| **FAIL** |")  # 1.25x
    assert rows["int8/fp32 argmax agreement on real speech"].endswith("| pass |")
    del report["latency_1_thread"]
    assert card_text(report).count("not measured") == 2


@pytest.mark.slow
def test_int8_tracks_fp32_on_real_speech(exported: tuple[Path, dict[str, Any]]) -> None:
    _, report = exported
    agree = report["int8_vs_fp32"]
    # The check is meaningful: fp32 logits spread and predict several classes on real speech.
    assert agree["fp32_classes_predicted"] >= 3 and agree["fp32_logit_std"] > 0.5, agree
    # Measured with random weights: agreement 0.85-0.92, mean |diff| ~0.13 x the logit spread.
    assert agree["argmax_agreement"] >= 0.75, agree
    assert agree["mean_abs_logit_diff"] < 0.25 * agree["fp32_logit_std"], agree


@pytest.mark.slow
@pytest.mark.xfail(strict=False, reason="random weights: int8/fp32 agreement 0.85-0.92 < 0.99 "
                   "(heavy-tailed conv activations; see docs/distilhubert.md)")
def test_int8_agreement_target(exported: tuple[Path, dict[str, Any]]) -> None:
    assert exported[1]["int8_vs_fp32"]["argmax_agreement"] >= 0.99
