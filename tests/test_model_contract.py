"""The model contract: a real ONNX model is accepted, each kind of breakage refused in one line."""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from edge_ser import LABELS, SAMPLE_RATE
from edge_ser.audio import read_wav
from edge_ser.errors import ModelError
from edge_ser.model import OnnxModel, read_model_info, softmax
from edge_ser.preprocess import prepare_window

N = 8 * SAMPLE_RATE


@pytest.fixture(scope="module")
def batch(examples: Path) -> np.ndarray:
    clips = sorted((examples / "clips").glob("*.wav"))
    return np.stack([prepare_window(read_wav(p)) for p in clips])


def _refused(path: Path, *what: str) -> str:
    with pytest.raises(ModelError) as err:
        OnnxModel(path)
    msg = str(err.value)
    assert "\n" not in msg and msg.startswith(str(path)), msg
    for w in what:
        assert w in msg, msg
    with pytest.raises(ModelError):
        read_model_info(path)
    return msg


def test_tiny_model_info(tiny_model: Path) -> None:
    info = OnnxModel(tiny_model).info
    assert info.labels == LABELS and info.sample_rate == SAMPLE_RATE
    assert info.window_s == 8.0 and info.window_samples == N and info.samples is None
    assert info.encoder == "tiny-energy" and info.name == "edge-ser-test-tiny"
    assert info.evaluation == {"note": "not trained"}
    assert read_model_info(tiny_model) == info


def test_low_memory_mode_gives_the_same_logits(shipped_model: Path, batch: np.ndarray) -> None:
    from edge_ser.memory import release_large_buffers

    a = OnnxModel(shipped_model).logits(batch)
    b = OnnxModel(shipped_model, low_memory=True).logits(batch)
    # without prepacked weights the int8 MatMuls take another kernel path: rounding only (up to
    # 0.012 measured with the Whisper model's sensitive head; its int8 file differs from the
    # fp32 twin by 0.09 on average)
    assert np.array_equal(a.argmax(axis=1), b.argmax(axis=1))
    assert np.allclose(a, b, atol=0.03)
    twin = shipped_model.with_name(shipped_model.name.replace(".int8.", ".fp32."))
    if twin.is_file():  # fp32 arithmetic: the same numbers
        assert np.allclose(OnnxModel(twin).logits(batch),
                           OnnxModel(twin, low_memory=True).logits(batch), atol=1e-4)
    assert isinstance(release_large_buffers(), bool)


def test_model_from_config_takes_its_settings(tiny_model: Path) -> None:
    from edge_ser.config import ModelConfig

    cfg = ModelConfig(path=tiny_model, threads=2, arena=True, low_memory=True)
    opts = OnnxModel.from_config(cfg)._session.get_session_options()
    assert opts.intra_op_num_threads == 2
    assert not opts.enable_cpu_mem_arena  # low memory turns the arena off
    assert OnnxModel.from_config(cfg, threads=1)._session.get_session_options() \
        .intra_op_num_threads == 1


@pytest.mark.parametrize(("threads", "arena"), [(1, True), (2, False)])
def test_probabilities_of_real_speech(
    tiny_model: Path, batch: np.ndarray, threads: int, arena: bool
) -> None:
    model = OnnxModel(tiny_model, threads=threads, arena=arena)
    p = model.probabilities(batch)
    assert p.shape == (len(batch), 4) and p.dtype == np.float32
    np.testing.assert_allclose(p.sum(axis=1), 1.0, atol=1e-5)
    assert np.all(p > 0)
    assert np.ptp(p[:, 0]) > 1e-3  # scores depend on the audio
    one_by_one = np.concatenate([model.probabilities(batch[i : i + 1]) for i in range(len(batch))])
    np.testing.assert_allclose(p, one_by_one, atol=1e-5)
    np.testing.assert_allclose(p, softmax(model.logits(batch)), atol=1e-6)


def test_softmax_is_stable() -> None:
    p = softmax(np.array([[1000.0, 0.0, 0.0, 0.0], [1.0, 1.0, 1.0, 1.0]]))
    expected = np.array([[1.0, 0.0, 0.0, 0.0], [0.25, 0.25, 0.25, 0.25]])
    np.testing.assert_allclose(p, expected, atol=1e-6)


def test_fixed_length_and_batch_one_models(
    make_model: Callable[..., Path], batch: np.ndarray
) -> None:
    fixed = OnnxModel(make_model("fixed", samples=N, batch=1))
    assert fixed.info.samples == N
    ref = OnnxModel(make_model("dyn"))
    np.testing.assert_allclose(fixed.probabilities(batch), ref.probabilities(batch), atol=1e-5)
    with pytest.raises(ValueError):
        fixed.probabilities(batch[:, :1000])


def test_inference_failure_is_a_model_error(tiny_model: Path) -> None:
    model = OnnxModel(tiny_model)
    with pytest.raises(ModelError, match="inference failed"):
        model.probabilities(np.zeros((1, 1001), dtype=np.float32))  # not whole 10 ms frames


def test_missing_file(tmp_path: Path) -> None:
    _refused(tmp_path / "nope.onnx", "no such model file")
    _refused(tmp_path, "a folder, not a model file")


def test_random_weights_stand_in_is_flagged(make_model: Callable[..., Path],
                                            caplog: pytest.LogCaptureFixture) -> None:
    """A --random-init export (the benchmarks' DistilHuBERT) classifies, with a warning."""
    path = make_model("random", metadata={"encoder_weights": "random weights"})
    with caplog.at_level(logging.WARNING, logger="edge_ser.model"):
        OnnxModel(path)
    assert any("random weights" in r.getMessage() and "mean nothing" in r.getMessage()
               for r in caplog.records)
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="edge_ser.model"):
        OnnxModel(make_model("trained", metadata={"encoder_weights": "ntu-spml/distilhubert"}))
    assert not caplog.records


def test_not_onnx(tmp_path: Path) -> None:
    p = tmp_path / "model.onnx"
    p.write_text("this is not a model\n" * 50)
    _refused(p, "not a loadable ONNX model")


@pytest.mark.parametrize(
    ("name", "kwargs", "what"),
    [
        ("input-name", {"input_name": "audio"}, "input named 'waveform'"),
        ("input-dtype", {"input_dtype": "float64"}, "must be float32"),
        ("input-rank", {"input_rank": 3}, "rank 2"),
        ("fixed-batch", {"batch": 4}, "fixed batch of 4"),
        ("output-name", {"output_name": "scores"}, "no output named 'logits'"),
        ("output-classes", {"n_out": 3}, "[batch, 4]"),
        ("labels-order", {"metadata": {"labels": "happiness,anger,neutral,sadness"}}, "labels"),
        ("labels-calm", {"metadata": {"labels": '["anger","calm","neutral","sadness"]'}}, "calm"),
        ("sample-rate", {"metadata": {"sample_rate": "8000"}}, "sample_rate is 8000"),
        ("window", {"metadata": {"window_s": "eight"}}, "not a number"),
        ("batching", {"metadata": {"batching": "sometimes"}}, "batching 'sometimes'"),
    ],
)
def test_contract_breakage_is_refused(
    make_model: Callable[..., Path], name: str, kwargs: dict[str, object], what: str
) -> None:
    _refused(make_model(name, **kwargs), what)


@pytest.mark.parametrize("key", ["labels", "sample_rate", "window_s", "preprocessing", "encoder"])
def test_missing_metadata_key_is_refused(make_model: Callable[..., Path], key: str) -> None:
    _refused(make_model(f"no-{key}", metadata={key: None}), "metadata lacks", key)


def test_shipped_scores_do_not_depend_on_batch_mates(shipped_model: Path,
                                                     batch: np.ndarray) -> None:
    """The shipped int8 file's dynamic int8 LSTMs take activation scales over the whole batch,
    so it asks (metadata ``batching: per-window``) to run one window per call: a window's scores
    are then the same whichever windows the pipeline happens to batch with it."""
    model = OnnxModel(shipped_model)
    assert model.info.batching == "per-window"
    together = model.logits(batch)
    alone = np.concatenate([model.logits(batch[i : i + 1]) for i in range(len(batch))])
    assert np.array_equal(together, alone)
    assert np.array_equal(model.logits(batch[::-1])[::-1], together)


def test_json_labels_accepted(make_model: Callable[..., Path]) -> None:
    labels = '["anger", "happiness", "neutral", "sadness"]'
    path = make_model("json-labels", metadata={"labels": labels})
    assert OnnxModel(path).info.labels == LABELS


def test_shipped_model_obeys_the_contract(shipped_model: Path, batch: np.ndarray) -> None:
    model = OnnxModel(shipped_model)
    info = model.info
    for key in ("training_data", "license", "quantization"):
        assert info.metadata.get(key), key
    p = model.probabilities(batch)
    np.testing.assert_allclose(p.sum(axis=1), 1.0, atol=1e-5)
