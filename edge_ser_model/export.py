"""Export an encoder (waveform -> logits) to ONNX with the model contract, then to int8.

``edge-ser-model export`` (``edge_ser_model/export_cli.py``) and the benchmarks call
:func:`export_distilhubert`.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
import torch
from numpy.typing import NDArray

from edge_ser import LABELS, SAMPLE_RATE, WINDOW_S
from edge_ser.errors import ModelError
from edge_ser.model import RANDOM_WEIGHTS, batching_of
from edge_ser.preprocess import DESCRIPTION
from edge_ser_model.calibration import default_calibration_source as default_calibration_source

log = logging.getLogger(__name__)

OPSET = 17
REQUIRED_METADATA = ("labels", "sample_rate", "window_s", "preprocessing", "encoder")
NON_COMMERCIAL = "CC BY-NC-SA 4.0 (RAVDESS) + research-only (URDU): non-commercial"


def base_metadata(encoder: str, name: str, window_s: float = WINDOW_S,
                  **extra: str) -> dict[str, str]:
    """The contract's metadata_props with defaults; ``extra`` overrides or adds keys."""
    meta = {
        "edge_ser.contract": "1",
        "labels": ",".join(LABELS),
        "sample_rate": str(SAMPLE_RATE),
        "window_s": f"{window_s:g}",
        "preprocessing": DESCRIPTION,
        "encoder": encoder,
        "name": name,
        "quantization": "none",
        "training_data": "none (random weights)",
        "license": "Apache-2.0 (no training data)",
        "evaluation": "{}",
    }
    meta.update(extra)
    return meta


def write_metadata(model: onnx.ModelProto, metadata: Mapping[str, str]) -> None:
    """Replace ``metadata_props`` with ``metadata`` (all values strings; contract keys present)."""
    missing = [k for k in REQUIRED_METADATA if k not in metadata]
    if missing:
        raise ModelError(f"model metadata: missing {', '.join(missing)}")
    del model.metadata_props[:]
    for key, value in metadata.items():
        if not isinstance(value, str):
            raise ModelError(f"model metadata: {key} must be a string, got {type(value).__name__}")
        entry = model.metadata_props.add()
        entry.key, entry.value = key, value


def read_metadata(path: str | Path) -> dict[str, str]:
    model = onnx.load(str(path), load_external_data=False)
    return {p.key: p.value for p in model.metadata_props}


def session(path: str | Path, threads: int = 1, arena: bool = True) -> ort.InferenceSession:
    """A plain CPU session for checks (the runtime's own is ``edge_ser.model.OnnxModel``)."""
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.enable_cpu_mem_arena = arena
    opts.log_severity_level = 3
    return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])


def logits(path: str | Path, windows: NDArray[np.float32], threads: int = 1,
           batch: int = 1) -> NDArray[np.float32]:
    sess = session(path, threads)
    out = [sess.run(["logits"], {"waveform": windows[i:i + batch]})[0]
           for i in range(0, len(windows), batch)]
    return np.concatenate(out).astype(np.float32)


def check_contract(path: str | Path, window_s: float = WINDOW_S) -> None:
    """Names, dtypes, ranks, metadata, and a batch-2 run giving finite ``[2, 4]`` logits."""
    meta = read_metadata(path)
    missing = [k for k in REQUIRED_METADATA if k not in meta]
    if missing:
        raise ModelError(f"{path}: metadata lacks {', '.join(missing)}")
    if meta["labels"] != ",".join(LABELS):
        raise ModelError(f"{path}: labels {meta['labels']!r} != {','.join(LABELS)!r}")
    batching_of(path, meta)
    sess = session(path)
    ins, outs = sess.get_inputs(), sess.get_outputs()
    if [i.name for i in ins] != ["waveform"] or ins[0].type != "tensor(float)":
        raise ModelError(f"{path}: input must be one float tensor 'waveform'")
    if "logits" not in [o.name for o in outs] or len(ins[0].shape) != 2:
        raise ModelError(f"{path}: want waveform [batch, samples] -> logits [batch, 4]")
    n = int(round(window_s * SAMPLE_RATE))
    x = np.random.default_rng(0).uniform(-0.5, 0.5, (2, n)).astype(np.float32)
    y = sess.run(["logits"], {"waveform": x})[0]
    if y.shape != (2, len(LABELS)) or y.dtype != np.float32 or not np.all(np.isfinite(y)):
        raise ModelError(f"{path}: batch-2 run gave {y.dtype} {y.shape}, want float32 (2, 4)")


def export_onnx(module: torch.nn.Module, path: str | Path, metadata: Mapping[str, str],
                window_s: float = WINDOW_S, opset: int = OPSET) -> dict[str, float]:
    """Trace ``module`` (waveform ``[batch, samples]`` -> logits ``[batch, 4]``) to ONNX.

    The legacy TorchScript exporter (``dynamo=False``) is used: it folds the frozen encoder's
    constants and keeps the chunked front end as plain Conv/Slice nodes that onnxruntime's
    quantizer and memory planner handle well. Samples are fixed to ``window_s * 16000`` (the
    chunk loop is unrolled at that length); batch is dynamic. Returns the check figures.
    """
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    module = module.eval()
    n = int(round(window_s * SAMPLE_RATE))
    dummy = torch.from_numpy(
        np.random.default_rng(0).uniform(-0.5, 0.5, (2, n)).astype(np.float32))
    t0 = time.perf_counter()
    with torch.no_grad():
        expected = module(dummy).numpy()
        torch.onnx.export(
            module, (dummy,), str(out), input_names=["waveform"], output_names=["logits"],
            dynamic_axes={"waveform": {0: "batch"}, "logits": {0: "batch"}},
            opset_version=opset, do_constant_folding=True, dynamo=False,
        )
    model = onnx.load(str(out))
    write_metadata(model, {**metadata, "window_s": f"{window_s:g}"})
    onnx.save(model, str(out))
    check_contract(out, window_s)
    got = session(out).run(["logits"], {"waveform": dummy.numpy()})[0]
    diff = float(np.max(np.abs(got - expected)))
    log.info("exported %s (%.1f MB) in %.1f s; max |onnx - torch| = %.2g",
             out, out.stat().st_size / 1e6, time.perf_counter() - t0, diff)
    if not diff < 1e-2 * max(1.0, float(np.max(np.abs(expected)))):
        raise ModelError(f"{out}: ONNX logits differ from PyTorch by {diff:.3g}")
    return {"max_abs_diff_vs_torch": diff, "size_mb": out.stat().st_size / 1e6}


def export_frozen(module: torch.nn.Module, path: str | Path, metadata: Mapping[str, str],
                  window_s: float = WINDOW_S, opset: int = OPSET) -> dict[str, float]:
    """Trace a frozen-encoder model (``edge_ser_model.frozen.FrozenSER``): waveform
    ``[batch, samples]`` -> ``logits [batch, 4]`` and ``embedding [batch, D]`` (the pooled
    features, for adaptation in the home). Checked against PyTorch on real-length speech and on
    a full window."""
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    module = module.eval()
    n = int(round(window_s * SAMPLE_RATE))
    rng = np.random.default_rng(0)
    full = rng.uniform(-0.5, 0.5, (1, n)).astype(np.float32)
    short = full.copy()
    short[:, n // 3 :] = 0.0  # a short utterance: the graph encodes only its speech
    t0 = time.perf_counter()
    with torch.no_grad():
        torch.onnx.export(
            module, (torch.from_numpy(full),), str(out), input_names=["waveform"],
            output_names=["logits", "embedding"],
            dynamic_axes={"waveform": {0: "batch"}, "logits": {0: "batch"},
                          "embedding": {0: "batch"}},
            opset_version=opset, do_constant_folding=True, dynamo=False,
        )
    model = onnx.load(str(out))
    write_metadata(model, {**metadata, "window_s": f"{window_s:g}"})
    onnx.save(model, str(out))
    check_contract(out, window_s)
    sess = session(out)
    diff = 0.0
    for x in (full, short):
        with torch.no_grad():
            expected = module(torch.from_numpy(x))[0].numpy()
        got = sess.run(["logits"], {"waveform": x})[0]
        diff = max(diff, float(np.max(np.abs(got - expected))))
        if not diff < 1e-2 * max(1.0, float(np.max(np.abs(expected)))):
            raise ModelError(f"{out}: ONNX logits differ from PyTorch by {diff:.3g}")
    log.info("exported %s (%.1f MB) in %.1f s; max |onnx - torch| = %.2g",
             out, out.stat().st_size / 1e6, time.perf_counter() - t0, diff)
    return {"max_abs_diff_vs_torch": diff, "size_mb": out.stat().st_size / 1e6}


def export_distilhubert(
    out_dir: str | Path, weights_dir: str | Path | None = None, random_init: bool = False,
    scheme: str = "auto", calibration_data: str | Path | None = None,
    checkpoint: str | Path | None = None, expected_sha256: str | None = None,
    n_calibration: int = 32, n_check: int = 100, window_s: float = WINDOW_S, seed: int = 0,
    use_default_sha256: bool = True, timing_reps: int = 5,
) -> dict[str, Any]:
    """Build DistilHuBERT (+ head), write ``distilhubert.fp32.onnx``, ``distilhubert.int8.onnx``,
    ``distilhubert.report.json`` and ``distilhubert.MODEL_CARD.md`` (``card.py``: the figures
    beside the DistilHuBERT targets) under ``out_dir``; return the report. ``timing_reps`` windows
    are timed per variant at one thread (0: no latency figures).

    With ``random_init`` and no ``checkpoint`` the head gets a data-dependent init on real speech
    so the logits spread across classes (see ``DistilHubertClassifier.init_head_from_data``).
    Calibration and check windows are disjoint clips of ``calibration_data``.
    """
    from edge_ser_model.card import latency, write_card
    from edge_ser_model.encoders.distilhubert import EXPECTED_SHA256, DistilHubertClassifier
    from edge_ser_model.quantize import (
        agreement,
        quantize_int8,
        resolve,
        speech_files,
        speech_windows,
    )

    resolve(scheme)  # a bad scheme fails before minutes of export
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    sha = expected_sha256 if expected_sha256 or not use_default_sha256 else EXPECTED_SHA256
    model = DistilHubertClassifier(weights_dir=weights_dir, random_init=random_init,
                                   expected_sha256=sha, seed=seed)
    files = speech_files(calibration_data or default_calibration_source())
    calib = speech_windows(files, n_calibration, offset=0, window_s=window_s)
    check = speech_windows(files, n_check, offset=1, window_s=window_s)
    if checkpoint is not None:
        load_checkpoint(model, checkpoint)
    elif random_init:
        with torch.no_grad():
            emb = torch.cat([model.embed(torch.from_numpy(calib[i:i + 8]))
                             for i in range(0, min(len(calib), 32), 8)])
        model.init_head_from_data(emb)
    kind = RANDOM_WEIGHTS if weights_dir is None else "ntu-spml/distilhubert"
    meta = base_metadata("distilhubert", "edge-ser-distilhubert-fp32", window_s,
                         encoder_weights=kind,
                         training_data="none (head not trained)" if checkpoint is None
                         else "see checkpoint")
    fp32, int8 = out / "distilhubert.fp32.onnx", out / "distilhubert.int8.onnx"
    report: dict[str, Any] = {"encoder": "distilhubert", "weights": kind, "window_s": window_s,
                              "head": "not trained (data-dependent random init)"
                              if checkpoint is None else f"checkpoint {Path(checkpoint).name}"}
    exported = model.for_export()
    report["fp32"] = export_onnx(exported, fp32, meta, window_s)
    report["int8"] = quantize_int8(fp32, int8, calib, scheme)
    check_contract(int8, window_s)
    report["int8_vs_fp32"] = agreement(logits(fp32, check, batch=4), logits(int8, check, batch=4))
    report["check_windows_from"] = str(calibration_data or default_calibration_source())
    if timing_reps > 0:
        report["latency_1_thread"] = latency(fp32, int8, exported, check[0], timing_reps)
    (out / "distilhubert.report.json").write_text(json.dumps(report, indent=2) + "\n")
    card = write_card(report, out)
    log.info("distilhubert int8 vs fp32: %s; model card %s", report["int8_vs_fp32"], card)
    return report


def load_checkpoint(model: torch.nn.Module, path: str | Path) -> None:
    """Load a ``torch.save`` d state dict (or ``{"state_dict": ...}``) into ``model``."""
    try:
        state = torch.load(Path(path), map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - unreadable checkpoint: one line for the user
        raise ModelError(f"{path}: not a PyTorch checkpoint: {err}") from err
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]
    if not isinstance(state, dict):
        raise ModelError(f"{path}: not a state dict")
    from edge_ser_model.encoders.distilhubert import load_state

    missing, unexpected = load_state(model, state, Path(path))
    head_missing = [k for k in missing if not k.startswith("encoder.")]
    if head_missing or unexpected:
        raise ModelError(f"{path}: missing {head_missing[:3]}, unexpected {list(unexpected)[:3]}")
