"""Floating-point work per window, counted from an ONNX graph.

Shapes come from onnx shape inference with the input fixed to ``[1, samples]``; where that cannot
resolve a shape (data-dependent Slice, Pad, ...), from one onnxruntime run on a window of real
speech with those tensors exposed as outputs. That window has speech up to its last sample, so a
graph that cuts the window at the end of speech (the Whisper-based model does, to skip the zero
padding) is counted for a full window of continuous speech, its most work. The count covers
Conv, MatMul and Gemm and their quantized forms (ConvInteger, QLinearConv, MatMulInteger,
QLinearMatMul, MatMulNBits, DynamicQuantizeMatMul), and LSTM / DynamicQuantizeLSTM (the input
and recurrent products of the four gates, every step): 2 x multiply-accumulates. Element-wise ops,
norms and softmax are left out (a few percent at most for these models). A quantized op counts
the same as its float form: FLOPs measure work, not precision.
``python -m benchmarks.flops MODEL.onnx [--samples N]``.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
from collections import defaultdict
from pathlib import Path
from typing import Any

from edge_ser import SAMPLE_RATE, WINDOW_S

log = logging.getLogger(__name__)

#: op type -> (index of the data input A/X, index of the weight input W or None)
CONV_OPS = {"Conv": (0, 1), "ConvInteger": (0, 1), "QLinearConv": (0, 3)}
RNN_OPS = ("LSTM", "DynamicQuantizeLSTM")
MATMUL_OPS = {"MatMul": 0, "MatMulInteger": 0, "QLinearMatMul": 0, "DynamicQuantizeMatMul": 0,
              "FusedMatMul": 0, "MatMulIntegerToFloat": 0}


def _shape_table(model: Any) -> dict[str, list[int] | None]:
    table: dict[str, list[int] | None] = {}

    def put(vi: Any) -> None:
        t = vi.type.tensor_type
        if not t.HasField("shape"):
            table[vi.name] = None
            return
        dims: list[int] = []
        for d in t.shape.dim:
            if d.HasField("dim_value") and d.dim_value > 0:
                dims.append(int(d.dim_value))
            else:
                table[vi.name] = None
                return
        table[vi.name] = dims

    g = model.graph
    for vi in list(g.input) + list(g.value_info) + list(g.output):
        put(vi)
    for init in g.initializer:
        table[init.name] = [int(d) for d in init.dims]
    return table


def _fix_input(model: Any, samples: int) -> None:
    for inp in model.graph.input:
        dims = inp.type.tensor_type.shape.dim
        if inp.name == "waveform" and len(dims) == 2:
            dims[0].ClearField("dim_param")
            dims[0].dim_value = 1
            dims[1].ClearField("dim_param")
            dims[1].dim_value = samples


def _needed(node: Any) -> list[str]:
    if node.op_type in CONV_OPS:
        return [node.output[0]]
    if node.op_type in RNN_OPS:
        return [node.input[0]]
    if node.op_type in MATMUL_OPS or node.op_type in ("Gemm", "MatMulNBits"):
        return [node.input[0], node.output[0]]
    return []


def _runtime_shapes(model: Any, names: list[str], samples: int) -> dict[str, list[int]]:
    """Shapes of ``names`` from one onnxruntime run on a window of real speech that lasts to its
    last sample (no zero padding for a data-dependent Slice to cut off)."""
    import onnx
    import onnxruntime as ort

    from benchmarks.inputs import fill_to_end, speech_windows

    types = {vi.name: vi.type.tensor_type.elem_type for vi in model.graph.value_info}
    have = {o.name for o in model.graph.output} | {i.name for i in model.graph.initializer}
    extra = [n for n in dict.fromkeys(names) if n and n not in have]
    probe = onnx.ModelProto()
    probe.CopyFrom(model)
    for n in extra:
        probe.graph.output.append(onnx.helper.make_tensor_value_info(
            n, types.get(n) or onnx.TensorProto.FLOAT, None))
    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    opts.log_severity_level = 3
    sess = ort.InferenceSession(probe.SerializeToString(), opts,
                                providers=["CPUExecutionProvider"])
    window = fill_to_end(speech_windows(1, samples / float(SAMPLE_RATE))[0])[None, :]
    wanted = [o.name for o in sess.get_outputs() if o.name in set(names)]
    values = sess.run(wanted, {"waveform": window})
    return {n: [int(d) for d in v.shape] for n, v in zip(wanted, values, strict=True)}


def _lstm_macs(node: Any, shapes: dict[str, list[int] | None]) -> float | None:
    """Steps x batch x directions x 4 gates x hidden x (input + hidden)."""
    x = shapes.get(node.input[0])
    hidden = next((int(at.i) for at in node.attribute if at.name == "hidden_size"), 0)
    layout = next((int(at.i) for at in node.attribute if at.name == "layout"), 0)
    direction = next((at.s for at in node.attribute if at.name == "direction"), b"forward")
    if not x or len(x) != 3 or not hidden:
        return None
    steps, batch = (x[1], x[0]) if layout else (x[0], x[1])
    dirs = 2 if direction == b"bidirectional" else 1
    return float(steps * batch * dirs * 4 * hidden * (x[2] + hidden))


def count_flops(path: Path, samples: int | None = None) -> dict[str, Any]:
    """``{"flops": float, "by_op": {...}, "nodes_counted", "nodes_unresolved", "method"}``."""
    import onnx
    from onnx import shape_inference

    n = samples or int(round(WINDOW_S * SAMPLE_RATE))
    model = onnx.load(str(path))
    if len(model.functions):
        from onnx import inliner

        model = inliner.inline_local_functions(model)
    _fix_input(model, n)
    try:
        model = shape_inference.infer_shapes(model, data_prop=True)
    except Exception as exc:  # a graph the inferencer cannot walk: count what we can
        log.warning("%s: shape inference failed (%s)", path, exc)
    shapes = _shape_table(model)
    method = "onnx shape inference"
    missing = [n for node in model.graph.node for n in _needed(node) if not shapes.get(n)]
    if missing:
        try:
            shapes.update(_runtime_shapes(model, missing, n))
            method = "onnx shape inference + one onnxruntime run for data-dependent shapes"
        except Exception as exc:  # count what shape inference resolved; say so
            log.warning("%s: runtime shapes failed (%s)", path, exc)
    by_op: dict[str, float] = defaultdict(float)
    counted = unresolved = 0
    for node in model.graph.node:
        macs: float | None = None
        op = node.op_type
        if op in CONV_OPS:
            _, wi = CONV_OPS[op]
            w = shapes.get(node.input[wi]) if len(node.input) > wi else None
            y = shapes.get(node.output[0])
            if w and y:
                macs = float(math.prod(y)) * float(math.prod(w[1:]))
        elif op in MATMUL_OPS or op in ("Gemm", "MatMulNBits"):
            a = shapes.get(node.input[0])
            y = shapes.get(node.output[0])
            if op == "MatMulNBits":
                k = next((int(at.i) for at in node.attribute if at.name == "K"), 0)
            elif op == "Gemm" and a:
                trans_a = next((int(at.i) for at in node.attribute if at.name == "transA"), 0)
                k = a[0] if trans_a else a[-1]
            else:
                k = a[-1] if a else 0
            if y and k:
                macs = float(math.prod(y)) * float(k)
        elif op in RNN_OPS:
            macs = _lstm_macs(node, shapes)
        else:
            continue
        if macs is None:
            unresolved += 1
            continue
        counted += 1
        by_op[op] += 2.0 * macs
    return {
        "flops": float(sum(by_op.values())),
        "by_op": dict(by_op),
        "nodes_counted": counted,
        "nodes_unresolved": unresolved,
        "samples": n,
        "method": f"{method}; 2 x MACs of Conv/MatMul/Gemm/LSTM (+ quantized forms)",
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.flops", description=__doc__)
    ap.add_argument("model", type=Path)
    ap.add_argument("--samples", type=int, default=None, help="input length (default 8 s)")
    args = ap.parse_args(argv)
    print(json.dumps(count_flops(args.model, args.samples), indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
