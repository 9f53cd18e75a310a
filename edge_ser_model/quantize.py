"""int8 quantization of an exported model with onnxruntime's quantizer, and the checks on it.

Schemes are listed in :data:`DESCRIPTIONS` and measured in docs/distilhubert.md; ``auto``
(the default of ``edge-ser-model export``) is :data:`DEFAULT_SCHEME`. Every static scheme:
MinMax ranges shared by the replicas of a chunked conv, the 1-channel waveform conv and the
attention-score MatMuls kept fp32, the head Gemm stored int8 weight-only, and the mean logit
shift on the calibration windows added back at the output (empirical bias correction).
"""

from __future__ import annotations

import logging
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
from numpy.typing import NDArray
from onnxruntime.quantization import (
    CalibrationMethod,
    QuantFormat,
    QuantType,
    quantize_dynamic,
    quantize_static,
)
from onnxruntime.quantization.calibrate import save_tensors_data
from onnxruntime.quantization.shape_inference import quant_pre_process

from edge_ser.errors import ModelError

# Calibration helpers live in calibration.py; re-exported here for existing imports.
from edge_ser_model.calibration import _Windows as _Windows
from edge_ser_model.calibration import agreement as agreement
from edge_ser_model.calibration import calibrate as calibrate
from edge_ser_model.calibration import speech_files as speech_files
from edge_ser_model.calibration import speech_windows as speech_windows
from edge_ser_model.calibration import unify_replica_ranges as unify_replica_ranges

log = logging.getLogger(__name__)

#: The scheme ``auto`` resolves to (see docs/distilhubert.md for the measurements).
DEFAULT_SCHEME = "qdq"
#: Conv weights (name fragments) whose convs keep fp32 activations, per mixed scheme; their
#: weights are still stored as int8 (weight-only, dequantized on every run).
FP32_ACTIVATION_CONVS = {
    "qdq-late-fp32": ("conv_layers.5.", "conv_layers.6."),
    "qdq-front-fp32": ("conv_layers.",),
}
DESCRIPTIONS = {
    "qdq": "int8 static QDQ per-channel (Conv+MatMul, first conv fp32)",
    "qdq-late-fp32": "int8 static QDQ per-channel; last two front-end convs int8 weight-only",
    "qdq-front-fp32": "int8 static QDQ per-channel MatMul; conv front end int8 weight-only",
    "qdq-all-matmul": "int8 static QDQ per-channel (Conv+all MatMul, first conv fp32)",
    "qdq-s8": "int8 static QDQ per-channel, symmetric int8 activations",
    "qdq-reduce-range": "int8 static QDQ per-channel, 7-bit weights",
    "qoperator": "int8 static QOperator per-channel (Conv+MatMul, first conv fp32)",
    "dynamic": "int8 dynamic (onnxruntime default: all ops)",
    "dynamic-matmul": "int8 dynamic (MatMul only)",
    "dynamic-matmul-pc": "int8 dynamic, per-channel weights (MatMul only)",
}
SCHEMES = tuple(DESCRIPTIONS)


def resolve(scheme: str) -> str:
    name = DEFAULT_SCHEME if scheme == "auto" else scheme
    if name not in SCHEMES:
        raise ModelError(f"quantization scheme {scheme!r}: use auto or one of {', '.join(SCHEMES)}")
    return name


def waveform_convs(model: onnx.ModelProto) -> list[str]:
    """Conv nodes whose weight has one input channel: the waveform convs, kept in fp32."""
    weights = {t.name: list(t.dims) for t in model.graph.initializer}
    return [n.name for n in model.graph.node
            if n.op_type == "Conv" and len(n.input) > 1
            and len(weights.get(n.input[1], [])) == 3 and weights[n.input[1]][1] == 1]


def activation_matmuls(model: onnx.ModelProto) -> list[str]:
    """MatMul nodes without a constant operand (attention scores and mixing)."""
    weights = {t.name for t in model.graph.initializer}
    return [n.name for n in model.graph.node
            if n.op_type == "MatMul" and not any(i in weights for i in n.input)]


def quantize_int8(fp32_path: str | Path, int8_path: str | Path,
                  calibration: NDArray[np.float32], scheme: str = "auto",
                  keep_fp32: tuple[str, ...] = ()) -> dict[str, Any]:
    """Quantize ``fp32_path`` to ``int8_path``; ``calibration`` is ``[n, samples]`` real speech.

    The metadata of the fp32 model is carried over with ``quantization`` and ``name`` updated.
    Dynamic schemes leave the MatMuls whose node names contain a ``keep_fp32`` fragment in fp32.
    """
    name = resolve(scheme)
    src, dst = Path(fp32_path), Path(int8_path)
    if not src.is_file():
        raise ModelError(f"{src}: missing")
    calibration = np.asarray(calibration, dtype=np.float32)
    if name.startswith("qdq") or name == "qoperator":
        if calibration.ndim != 2 or len(calibration) == 0:
            raise ModelError(f"calibration: want [n, samples] windows, got {calibration.shape}")
    dst.parent.mkdir(parents=True, exist_ok=True)
    original = onnx.load(str(src))
    meta = {p.key: p.value for p in original.metadata_props}
    with tempfile.TemporaryDirectory() as tmp:
        prep = Path(tmp) / "prep.onnx"
        quant_pre_process(str(src), str(prep), skip_symbolic_shape=True)
        if name.startswith("dynamic"):
            prep_model = onnx.load(str(prep))
            consts = {t.name for t in prep_model.graph.initializer}
            nodes = [n.name for n in prep_model.graph.node if n.op_type == "MatMul"
                     and n.input[1] in consts and not any(f in n.name for f in keep_fp32)]
            quantize_dynamic(
                str(prep), str(dst), weight_type=QuantType.QInt8,
                per_channel=name == "dynamic-matmul-pc",
                op_types_to_quantize=["MatMul"] if name.startswith("dynamic-matmul") else None,
                nodes_to_quantize=nodes if keep_fp32 else None,
            )
        else:
            prep_model = onnx.load(str(prep))
            exclude = waveform_convs(prep_model)
            if name != "qdq-all-matmul":  # MatMulConstBOnly alone does not stop these
                exclude += activation_matmuls(prep_model)
            weight_only = [n.name for n in prep_model.graph.node if n.op_type == "Conv"
                           and n.name not in exclude and len(n.input) > 1
                           and any(f in n.input[1] for f in FP32_ACTIVATION_CONVS.get(name, ()))]
            cache = Path(tmp) / "ranges.json"
            ranges = calibrate(prep, calibration, Path(tmp), symmetric=name == "qdq-s8")
            shared = unify_replica_ranges(prep_model, ranges)
            save_tensors_data(ranges, cache)
            log.info("calibrated %d tensors on %d windows; %d share ranges across chunks",
                     len(ranges.data), len(calibration), shared)
            quantize_static(
                str(prep), str(dst), None, calibration_cache_path=cache,
                quant_format=QuantFormat.QOperator if name == "qoperator" else QuantFormat.QDQ,
                op_types_to_quantize=["Conv", "MatMul"],
                per_channel=True,
                reduce_range=name == "qdq-reduce-range",
                activation_type=QuantType.QInt8 if name == "qdq-s8" else QuantType.QUInt8,
                weight_type=QuantType.QInt8,
                nodes_to_exclude=exclude + weight_only,
                calibrate_method=CalibrationMethod.MinMax,
                extra_options={
                    "MatMulConstBOnly": name != "qdq-all-matmul",
                    "ActivationSymmetric": name == "qdq-s8",
                    "WeightSymmetric": True,
                },
            )
    model = onnx.load(str(dst))
    if not name.startswith("dynamic"):
        gemms = {n.name for n in model.graph.node if n.op_type == "Gemm"}
        int8_weights_only(model, set(weight_only) | gemms)  # the head: int8 weights, fp32 math
    correction = None
    if not name.startswith("dynamic"):
        correction = output_bias_correction(src, dst, calibration)
        add_output_bias(model, correction)
    kept = f"; fp32: MatMuls named *{'*, *'.join(keep_fp32)}*" if keep_fp32 else ""
    meta.update({"quantization": DESCRIPTIONS[name] + kept,
                 "name": meta.get("name", "model").replace("-fp32", "") + "-int8"})
    shorten_names(model)
    del model.metadata_props[:]
    for key, value in meta.items():
        entry = model.metadata_props.add()
        entry.key, entry.value = key, value
    onnx.save(model, str(dst))
    size = dst.stat().st_size / 1e6
    log.info("quantized %s -> %s (%s, %.1f MB)", src, dst, name, size)
    return {"scheme": name, "size_mb": size, "calibration_windows": int(len(calibration)),
            "bias_correction": None if correction is None else correction.round(5).tolist()}


def _run(path: Path, windows: NDArray[np.float32]) -> NDArray[np.float32]:
    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    sess = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    return np.concatenate([sess.run(["logits"], {"waveform": windows[i:i + 4]})[0]
                           for i in range(0, len(windows), 4)])


def output_bias_correction(fp32: Path, int8: Path, windows: NDArray[np.float32]
                           ) -> NDArray[np.float32]:
    """Mean fp32 - int8 logit difference on the calibration windows (empirical bias correction,
    Nagel et al. 2019): removes the systematic part of the quantization error."""
    return np.asarray((_run(fp32, windows) - _run(int8, windows)).mean(axis=0), dtype=np.float32)


def add_output_bias(model: onnx.ModelProto, bias: NDArray[np.float32]) -> None:
    """``logits = logits_int8 + bias`` as one Add node at the end of the graph."""
    graph = model.graph
    raw = "logits_before_bias_correction"
    for node in graph.node:
        node.output[:] = [raw if o == "logits" else o for o in node.output]
    graph.initializer.append(onnx.numpy_helper.from_array(bias.astype(np.float32),
                                                          "logits_bias_correction"))
    graph.node.append(onnx.helper.make_node("Add", [raw, "logits_bias_correction"], ["logits"],
                                            name="logits_bias_correction_add"))


def int8_weights_only(model: onnx.ModelProto, nodes: set[str]) -> None:
    """Store the weights of ``nodes`` as symmetric per-output-channel int8 + DequantizeLinear."""
    graph = model.graph
    inits = {t.name: t for t in graph.initializer}
    done: dict[str, str] = {}
    new_nodes = []
    for node in graph.node:
        if node.name not in nodes or node.input[1] not in inits:
            continue
        wname = node.input[1]
        if wname not in done:
            w = onnx.numpy_helper.to_array(inits[wname]).astype(np.float32)
            scale = np.abs(w).reshape(len(w), -1).max(axis=1).clip(min=1e-12) / 127.0
            q = np.round(w / scale.reshape(-1, *([1] * (w.ndim - 1)))).clip(-127, 127)
            graph.initializer.extend([
                onnx.numpy_helper.from_array(q.astype(np.int8), wname + "_w8"),
                onnx.numpy_helper.from_array(scale.astype(np.float32), wname + "_w8_scale"),
                onnx.numpy_helper.from_array(np.zeros(len(w), np.int8), wname + "_w8_zp")])
            new_nodes.append(onnx.helper.make_node(
                "DequantizeLinear", [wname + "_w8", wname + "_w8_scale", wname + "_w8_zp"],
                [wname + "_w8_dq"], name=wname + "_w8_dequantize", axis=0))
            done[wname] = wname + "_w8_dq"
        node.input[1] = done[wname]
    used = {i for n in graph.node for i in n.input}
    keep = [t for t in graph.initializer if t.name in used or t.name.endswith(
        ("_w8", "_w8_scale", "_w8_zp"))]
    del graph.initializer[:]
    graph.initializer.extend(keep)
    for n in reversed(new_nodes):
        graph.node.insert(0, n)


def shorten_names(model: onnx.ModelProto) -> None:
    """Rename inner tensors and nodes ``t<i>`` / ``n<i>`` (the unrolled chunks make ~900 nodes,
    whose exporter names alone take ~0.25 MB); graph inputs and outputs keep their names."""
    graph = model.graph
    keep = {v.name for v in graph.input} | {v.name for v in graph.output} | {""}
    names: dict[str, str] = {}

    def short(name: str) -> str:
        return name if name in keep else names.setdefault(name, f"t{len(names)}")

    for t in graph.initializer:
        t.name = short(t.name)
    for i, node in enumerate(graph.node):
        node.name = f"n{i}"
        node.input[:] = [short(x) for x in node.input]
        node.output[:] = [short(x) for x in node.output]
    for v in graph.value_info:
        v.name = short(v.name)
