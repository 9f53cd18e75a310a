"""Model fixtures: a small *real* ONNX model obeying the contract, and the shipped model.

The tiny model is built with the ``onnx`` helper API (tests only; the runtime never imports
``onnx``): waveform ``[B, N]`` -> 10 ms frame log-energies -> (mean, max, std) -> MatMul -> logits.
It is no emotion classifier, but its scores depend on the audio, so pipeline tests exercise the
real onnxruntime path without waiting for the trained model.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from edge_ser import LABELS
from edge_ser.config.schema import DEFAULT_MODEL
from edge_ser.preprocess import DESCRIPTION

SHIPPED_MODEL = DEFAULT_MODEL

BASE_METADATA: dict[str, str] = {
    "edge_ser.contract": "1",
    "labels": ",".join(LABELS),
    "sample_rate": "16000",
    "window_s": "8.0",
    "preprocessing": DESCRIPTION,
    "encoder": "tiny-energy",
    "name": "edge-ser-test-tiny",
    "quantization": "none",
    "training_data": "none (fixed random weights, tests only)",
    "license": "Apache-2.0",
    "evaluation": '{"note": "not trained"}',
}


def build_contract_model(
    path: Path,
    *,
    input_name: str = "waveform",
    output_name: str = "logits",
    input_dtype: str = "float32",
    input_rank: int = 2,
    samples: int | None = None,
    batch: int | str = "batch",
    n_out: int = 4,
    metadata: dict[str, str | None] | None = None,
    seed: int = 0,
) -> Path:
    """Write a small ONNX model to ``path``; keyword arguments break the contract on purpose.

    ``metadata`` overrides :data:`BASE_METADATA` (a ``None`` value removes the key).
    """
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    elem = {"float32": TensorProto.FLOAT, "float64": TensorProto.DOUBLE}[input_dtype]
    dims: list[int | str] = [batch] + [1] * (input_rank - 2) + [samples or "samples"]
    rng = np.random.default_rng(seed)
    inits = [
        numpy_helper.from_array(np.array([0, -1, 160], dtype=np.int64), "frame_shape"),
        numpy_helper.from_array(np.array([1e-6], dtype=np.float32), "eps"),
        numpy_helper.from_array(
            (rng.standard_normal((3, n_out)) * 0.3).astype(np.float32), "w"
        ),
        numpy_helper.from_array((rng.standard_normal(n_out) * 0.1).astype(np.float32), "b"),
    ]
    nodes = []
    x = input_name
    if input_dtype != "float32":
        nodes.append(helper.make_node("Cast", [x], ["x_f"], to=TensorProto.FLOAT))
        x = "x_f"
    nodes += [
        helper.make_node("Reshape", [x, "frame_shape"], ["frames"]),
        helper.make_node("Mul", ["frames", "frames"], ["sq"]),
        helper.make_node("ReduceMean", ["sq"], ["energy"], axes=[2], keepdims=0),
        helper.make_node("Add", ["energy", "eps"], ["energy_eps"]),
        helper.make_node("Log", ["energy_eps"], ["loge"]),
        helper.make_node("ReduceMean", ["loge"], ["m"], axes=[1], keepdims=1),
        helper.make_node("ReduceMax", ["loge"], ["mx"], axes=[1], keepdims=1),
        helper.make_node("Sub", ["loge", "m"], ["dev"]),
        helper.make_node("Mul", ["dev", "dev"], ["dev2"]),
        helper.make_node("ReduceMean", ["dev2"], ["var"], axes=[1], keepdims=1),
        helper.make_node("Sqrt", ["var"], ["sd"]),
        helper.make_node("Concat", ["m", "mx", "sd"], ["feats"], axis=1),
        helper.make_node("MatMul", ["feats", "w"], ["mm"]),
        helper.make_node("Add", ["mm", "b"], [output_name]),
    ]
    graph = helper.make_graph(
        nodes,
        "edge_ser_tiny",
        [helper.make_tensor_value_info(input_name, elem, dims)],
        [helper.make_tensor_value_info(output_name, TensorProto.FLOAT, [batch, n_out])],
        initializer=inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    meta: dict[str, str | None] = {**BASE_METADATA, **(metadata or {})}
    for key, value in meta.items():
        if value is not None:
            entry = model.metadata_props.add()
            entry.key, entry.value = key, value
    onnx.checker.check_model(model)
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(path))
    return path


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Path of the tiny contract-obeying ONNX model (dynamic batch and samples)."""
    return build_contract_model(tmp_path_factory.mktemp("models") / "tiny.onnx")


@pytest.fixture(scope="session")
def make_model(tmp_path_factory: pytest.TempPathFactory) -> Callable[..., Path]:
    """Factory: ``make_model("name", **kwargs)`` builds a variant (see build_contract_model)."""
    root = tmp_path_factory.mktemp("model-variants")

    def _make(name: str, **kwargs: object) -> Path:
        return build_contract_model(root / f"{name}.onnx", **kwargs)  # type: ignore[arg-type]

    return _make


@pytest.fixture(scope="session")
def shipped_model() -> Path:
    """The trained model that ships in models/ (skips until it has been trained)."""
    if not SHIPPED_MODEL.is_file():
        pytest.skip(f"the shipped model {SHIPPED_MODEL} does not exist yet")
    return SHIPPED_MODEL
