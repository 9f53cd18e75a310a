"""Calibration data and checks for int8 quantization: real-speech windows, MinMax ranges.

:func:`speech_files` / :func:`speech_windows` pick preprocessed windows of real speech;
:func:`calibrate` collects MinMax ranges over them and :func:`unify_replica_ranges` makes the
replicas of a chunked conv share one range; :func:`agreement` compares fp32 and int8 logits.
Used by :mod:`edge_ser_model.quantize` (which re-exports them), export and ship.
"""

from __future__ import annotations

import csv
import itertools
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import onnx
from numpy.typing import NDArray
from onnxruntime.quantization import CalibrationDataReader, CalibrationMethod
from onnxruntime.quantization.calibrate import TensorData, TensorsData, create_calibrator

from edge_ser import WINDOW_S
from edge_ser.audio import read_wav
from edge_ser.errors import ModelError
from edge_ser.preprocess import prepare_window


def default_calibration_source() -> Path:
    """``../shared/data`` next to the checkout, else the bundled example clips."""
    from edge_ser.config import REPO_ROOT

    shared = REPO_ROOT.parent / "shared" / "data"
    if (shared / "ravdess" / "manifest.csv").is_file():
        return shared
    return REPO_ROOT / "examples" / "clips"


def source_fingerprint(source: Path) -> str:
    """The calibration source's resolved path and every WAV / manifest under it by name and
    size: what a cached export built from it depends on (stat only, no reading)."""
    root = source.resolve()
    entries = sorted(f"{p.relative_to(root)}:{p.stat().st_size}" for p in root.rglob("*")
                     if p.suffix.lower() in (".wav", ".csv") and p.is_file())
    return "\n".join([str(root), *entries])


class _Windows(CalibrationDataReader):
    def __init__(self, windows: NDArray[np.float32]) -> None:
        self._it: Iterator[NDArray[np.float32]] = iter(windows)

    def get_next(self) -> dict[str, NDArray[np.float32]] | None:
        x = next(self._it, None)
        return None if x is None else {"waveform": x[None, :].astype(np.float32)}


def calibrate(model: Path, windows: NDArray[np.float32], tmp: Path,
              symmetric: bool = False) -> TensorsData:
    """MinMax ranges of every Conv / MatMul tensor over the calibration windows."""
    calibrator = create_calibrator(
        model, ["Conv", "MatMul"], augmented_model_path=str(tmp / "augmented.onnx"),
        calibrate_method=CalibrationMethod.MinMax, extra_options={"symmetric": symmetric})
    calibrator.collect_data(_Windows(windows))
    data = calibrator.compute_data()
    del calibrator
    return data


def unify_replica_ranges(model: onnx.ModelProto, ranges: TensorsData) -> int:
    """Give the same range to tensors that play the same role in different chunks.

    The chunked front end repeats each conv (same weight initializer) once per chunk; left
    alone, each replica gets its own range, and a late chunk calibrated on zero padding clips
    real speech. Tensors are keyed by the weights of the nodes that produce and consume them;
    each group gets the union of its ranges. Returns how many tensors were widened.
    """
    weights = {t.name for t in model.graph.initializer}

    def role(node: onnx.NodeProto) -> str | None:
        named = [i for i in node.input[1:] if i in weights]
        return f"{node.op_type}:{named[0]}" if named else None

    keys: dict[str, list[str]] = {}
    for node in model.graph.node:
        r = role(node)
        if r is None:
            continue
        for i in node.input[:1]:
            keys.setdefault(i, []).append("in:" + r)
        for o in node.output:
            keys.setdefault(o, []).append("out:" + r)
    groups: dict[tuple[str, ...], list[str]] = {}
    for tensor in ranges.data:
        if tensor in keys:
            groups.setdefault(tuple(sorted(keys[tensor])), []).append(tensor)
    widened = 0
    for members in groups.values():
        if len(members) < 2:
            continue
        lo = min(float(np.min(ranges.data[m].range_value[0])) for m in members)
        hi = max(float(np.max(ranges.data[m].range_value[1])) for m in members)
        for m in members:
            shape = np.shape(ranges.data[m].range_value[0])
            ranges.data[m] = TensorData(lowest=np.full(shape, lo, dtype=np.float32),
                                        highest=np.full(shape, hi, dtype=np.float32))
            widened += 1
    return widened


def agreement(fp32_logits: NDArray[np.float32], int8_logits: NDArray[np.float32]
              ) -> dict[str, float]:
    """Argmax agreement and mean / max |logit difference| between two models' logits."""
    diff = np.abs(np.asarray(fp32_logits) - np.asarray(int8_logits))
    top = np.sort(fp32_logits, axis=1)
    return {
        "windows": float(len(fp32_logits)),
        "argmax_agreement": float(np.mean(fp32_logits.argmax(1) == int8_logits.argmax(1))),
        "mean_abs_logit_diff": float(diff.mean()),
        "max_abs_logit_diff": float(diff.max()),
        "fp32_logit_std": float(np.std(fp32_logits)),
        "fp32_median_margin": float(np.median(top[:, -1] - top[:, -2])),
        "fp32_classes_predicted": float(len(set(fp32_logits.argmax(1).tolist()))),
    }


def speech_files(source: str | Path) -> list[Path]:
    """WAV files under ``source``: the ``manifest.csv`` rows of each corpus, else every ``*.wav``.

    Corpora are interleaved (file i of each in turn) so any stride takes from all of them.
    """
    root = Path(source)
    if not root.exists():
        raise ModelError(f"{root}: calibration data not found")
    manifests = sorted(root.glob("manifest.csv")) + sorted(root.glob("*/manifest.csv"))
    corpora: list[list[Path]] = []
    for manifest in manifests:
        with manifest.open(newline="", encoding="utf-8") as fh:
            rows = [r for r in csv.DictReader(fh) if r.get("file")]
        corpora.append([manifest.parent / r["file"] for r in rows])
    if not corpora:
        corpora = [sorted(root.rglob("*.wav")) if root.is_dir() else [root]]
    files = [f for group in itertools.zip_longest(*corpora) for f in group if f is not None]
    if not files:
        raise ModelError(f"{root}: no WAV files (or manifest.csv rows) found")
    return files


def speech_windows(files: list[Path], n: int, offset: int = 0,
                   window_s: float = WINDOW_S) -> NDArray[np.float32]:
    """``n`` preprocessed windows from files ``offset, offset + step, ...`` spread over the list."""
    step = max(1, len(files) // max(1, n))
    picked = files[offset % step::step][:n] if len(files) >= n else files
    return np.stack([prepare_window(read_wav(f), window_s) for f in picked]).astype(np.float32)
