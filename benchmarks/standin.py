"""A tiny contract-compliant ONNX model built with ``onnx.helper``, for tests and development.

waveform [B, 128000] -> frames [B, 500, 256] -> MatMul 256x64 -> Relu -> mean over frames ->
MatMul 64x4 + bias -> logits [B, 4]. Random weights (fixed seed): it measures plumbing, not
emotion. ``python -m benchmarks.standin OUT.onnx [--int8]``.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

import numpy as np

from edge_ser import LABELS, SAMPLE_RATE, WINDOW_S
from edge_ser.preprocess import DESCRIPTION

log = logging.getLogger(__name__)

FRAME = 256
HIDDEN = 64


def build_standin(path: Path, int8: bool = False, window_s: float = WINDOW_S) -> Path:
    """Write the stand-in model to ``path`` (dynamic int8 on MatMul when ``int8``)."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    n = int(round(window_s * SAMPLE_RATE))
    frames = n // FRAME
    rng = np.random.default_rng(0)
    w1 = rng.standard_normal((FRAME, HIDDEN)).astype(np.float32) * 0.05
    w2 = rng.standard_normal((HIDDEN, len(LABELS))).astype(np.float32) * 0.1
    b2 = np.zeros(len(LABELS), dtype=np.float32)
    inits = [
        numpy_helper.from_array(np.array([-1, frames, FRAME], dtype=np.int64), "shape"),
        numpy_helper.from_array(w1, "w1"),
        numpy_helper.from_array(w2, "w2"),
        numpy_helper.from_array(b2, "b2"),
        numpy_helper.from_array(np.array([1], dtype=np.int64), "axes"),
    ]
    nodes = [
        helper.make_node("Reshape", ["waveform", "shape"], ["frames"]),
        helper.make_node("MatMul", ["frames", "w1"], ["h"]),
        helper.make_node("Relu", ["h"], ["hr"]),
        helper.make_node("ReduceMean", ["hr", "axes"], ["pooled"], keepdims=0),
        helper.make_node("MatMul", ["pooled", "w2"], ["z"]),
        helper.make_node("Add", ["z", "b2"], ["logits"]),
    ]
    graph = helper.make_graph(
        nodes, "standin",
        [helper.make_tensor_value_info("waveform", TensorProto.FLOAT, ["batch", n])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", len(LABELS)])],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    model.ir_version = 8
    meta = {
        "edge_ser.contract": "1",
        "labels": ",".join(LABELS),
        "sample_rate": str(SAMPLE_RATE),
        "window_s": str(window_s),
        "preprocessing": DESCRIPTION,
        "encoder": "standin",
        "name": "standin-int8" if int8 else "standin-fp32",
        "quantization": "int8 dynamic MatMul" if int8 else "none",
        "training_data": "none (random weights)",
        "license": "Apache-2.0",
        "evaluation": "{}",
    }
    onnx.helper.set_model_props(model, meta)
    onnx.checker.check_model(model)
    path.parent.mkdir(parents=True, exist_ok=True)
    if not int8:
        onnx.save(model, str(path))
        return path
    from onnxruntime.quantization import QuantType, quantize_dynamic

    tmp = path.with_suffix(".tmp-fp32.onnx")
    onnx.save(model, str(tmp))
    try:
        quantize_dynamic(str(tmp), str(path), weight_type=QuantType.QInt8,
                         op_types_to_quantize=["MatMul"])
    finally:
        tmp.unlink(missing_ok=True)
    q8 = onnx.load(str(path))
    onnx.helper.set_model_props(q8, meta)  # the quantizer keeps no metadata_props
    onnx.save(q8, str(path))
    return path


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.standin", description=__doc__)
    ap.add_argument("out", type=Path)
    ap.add_argument("--int8", action="store_true")
    args = ap.parse_args(argv)
    print(build_standin(args.out, int8=args.int8))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
