"""The emotion model: an ONNX file obeying the edge-ser model contract, run by onnxruntime.

Contract (docs/DESIGN.md): input ``waveform`` float32 ``[batch, samples]`` at 16 kHz, output
``logits`` float32 ``[batch, 4]`` in the order of :data:`edge_ser.LABELS`; ``metadata_props``
carry at least ``labels``, ``sample_rate``, ``window_s``, ``preprocessing`` and ``encoder``.
Anything else is refused with a one-line :class:`~edge_ser.errors.ModelError` naming the file and
what is wrong. Only onnxruntime is used here (never the ``onnx`` package).
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np
import onnxruntime as ort
from numpy.typing import NDArray

from edge_ser import LABELS, SAMPLE_RATE
from edge_ser.errors import ModelError

if TYPE_CHECKING:
    from edge_ser.config.schema import ModelConfig

log = logging.getLogger(__name__)

INPUT_NAME = "waveform"
OUTPUT_NAME = "logits"
REQUIRED_KEYS = ("labels", "sample_rate", "window_s", "preprocessing", "encoder")
#: metadata ``encoder_weights`` of an export built with ``--random-init`` (benchmarks, tests)
RANDOM_WEIGHTS = "random weights"
#: optional ``batching`` metadata: ``per-window`` makes every window a call of its own, for a
#: graph whose scores depend on batch mates (dynamic int8 scales span the whole batch)
BATCHING = ("independent", "per-window")


@dataclass(frozen=True)
class ModelInfo:
    """What a model's metadata says about it."""

    path: Path
    name: str
    encoder: str
    labels: tuple[str, ...]
    sample_rate: int
    window_s: float
    preprocessing: str
    quantization: str = ""
    training_data: str = ""
    license: str = ""
    evaluation: dict[str, Any] | str = ""
    contract: str = ""
    samples: int | None = None  # fixed input length, or None when dynamic
    batching: str = BATCHING[0]  # "per-window": one window per call (see BATCHING)
    metadata: dict[str, str] = field(default_factory=dict, repr=False)

    @property
    def window_samples(self) -> int:
        """Samples per window fed to the model."""
        return self.samples or int(round(self.window_s * self.sample_rate))


class EmotionModel(Protocol):
    """What the pipeline needs from a model (:class:`OnnxModel`, or a test double)."""

    @property
    def info(self) -> ModelInfo: ...

    def probabilities(self, batch: NDArray[np.float32]) -> NDArray[np.float32]: ...


def _parse_labels(path: Path, text: str) -> tuple[str, ...]:
    text = text.strip()
    if text.startswith("["):
        try:
            value = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ModelError(f"{path}: metadata 'labels' is not a valid JSON list ({exc})") from exc
        if not isinstance(value, list):
            raise ModelError(f"{path}: metadata 'labels' must be a list")
        return tuple(str(v).strip() for v in value)
    return tuple(v.strip() for v in text.split(",") if v.strip())


def _info_from(path: Path, session: ort.InferenceSession) -> ModelInfo:
    """Check inputs, outputs and metadata of a loaded session against the contract."""
    inputs = session.get_inputs()
    names = [i.name for i in inputs]
    if len(inputs) != 1 or inputs[0].name != INPUT_NAME:
        raise ModelError(f"{path}: expected one input named '{INPUT_NAME}', found {names}")
    inp = inputs[0]
    if inp.type != "tensor(float)":
        raise ModelError(f"{path}: input '{INPUT_NAME}' must be float32, found {inp.type}")
    if len(inp.shape) != 2:
        raise ModelError(
            f"{path}: input '{INPUT_NAME}' must have rank 2 [batch, samples], found {inp.shape}"
        )
    if isinstance(inp.shape[0], int) and inp.shape[0] != 1:  # windows come one or a few
        raise ModelError(f"{path}: input '{INPUT_NAME}' has a fixed batch of {inp.shape[0]}; "
                         "the batch must be dynamic or 1")
    outputs = {o.name: o for o in session.get_outputs()}
    out = outputs.get(OUTPUT_NAME)
    if out is None:
        raise ModelError(f"{path}: no output named '{OUTPUT_NAME}' (found {sorted(outputs)})")
    if out.type != "tensor(float)":
        raise ModelError(f"{path}: output '{OUTPUT_NAME}' must be float32, found {out.type}")
    if len(out.shape) != 2 or (isinstance(out.shape[1], int) and out.shape[1] != len(LABELS)):
        raise ModelError(
            f"{path}: output '{OUTPUT_NAME}' must be [batch, {len(LABELS)}], found {out.shape}"
        )
    meta = dict(session.get_modelmeta().custom_metadata_map)
    missing = [k for k in REQUIRED_KEYS if not meta.get(k, "").strip()]
    if missing:
        raise ModelError(f"{path}: metadata lacks {', '.join(missing)}")
    labels = _parse_labels(path, meta["labels"])
    if labels != LABELS:
        raise ModelError(
            f"{path}: metadata labels {','.join(labels)} differ from {','.join(LABELS)}"
        )
    try:
        rate = int(float(meta["sample_rate"]))
        window_s = float(meta["window_s"])
    except (ValueError, OverflowError) as exc:  # "abc"; "inf" (int() of infinity)
        raise ModelError(f"{path}: metadata sample_rate/window_s is not a number ({exc})") from exc
    if rate != SAMPLE_RATE:
        raise ModelError(f"{path}: metadata sample_rate is {rate}, edge-ser needs {SAMPLE_RATE}")
    if not 0.1 <= window_s <= 60.0:  # also refuses NaN
        raise ModelError(f"{path}: metadata window_s {window_s} is out of range [0.1, 60]")
    evaluation: dict[str, Any] | str = meta.get("evaluation", "")
    if isinstance(evaluation, str) and evaluation.strip().startswith("{"):
        try:
            evaluation = json.loads(evaluation)
        except json.JSONDecodeError:
            log.warning("%s: metadata 'evaluation' is not valid JSON; kept as text", path)
    batching = batching_of(path, meta)
    if meta.get("encoder_weights", "").strip() == RANDOM_WEIGHTS:
        log.warning("%s: its encoder has random weights (a benchmark stand-in, exported with "
                    "--random-init): its emotions mean nothing", path)
    samples = inp.shape[1] if isinstance(inp.shape[1], int) and inp.shape[1] > 0 else None
    return ModelInfo(
        path=path,
        name=meta.get("name", path.stem),
        encoder=meta["encoder"],
        labels=labels,
        sample_rate=rate,
        window_s=window_s,
        preprocessing=meta["preprocessing"],
        quantization=meta.get("quantization", ""),
        training_data=meta.get("training_data", ""),
        license=meta.get("license", ""),
        evaluation=evaluation,
        contract=meta.get("edge_ser.contract", ""),
        samples=samples,
        batching=batching,
        metadata=meta,
    )


def batching_of(path: str | Path, meta: dict[str, str]) -> str:
    """The metadata's ``batching`` (default ``independent``); an unknown value is refused."""
    batching = meta.get("batching", BATCHING[0])
    if batching not in BATCHING:
        raise ModelError(f"{path}: metadata batching '{batching}' is not one of "
                         f"{', '.join(BATCHING)}")
    return batching


def _quiet_runtime() -> None:
    """Non-essential telemetry events off (for a host program that loaded onnxruntime before
    edge_ser could set ORT_DISABLE_TELEMETRY, see edge_ser/__init__.py), and onnxruntime's
    process-wide log at errors only: as a service user (home /nonexistent) it warned at every
    start that it could not store a telemetry id."""
    ort.disable_telemetry_events()
    ort.set_default_logger_severity(3)


def open_session(path: Path, options: ort.SessionOptions) -> ort.InferenceSession:
    """An onnxruntime session on ``path``, or a one-line ModelError naming the file and why."""
    if path.is_dir():
        raise ModelError(f"{path}: a folder, not a model file")
    if not path.is_file():
        raise ModelError(f"{path}: no such model file")
    try:
        path.open("rb").close()
    except OSError as exc:  # onnxruntime would only say "system error number 13"
        raise ModelError(f"{path}: cannot read the model file ({exc.strerror or exc})") from exc
    _quiet_runtime()
    try:
        return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    except Exception as exc:  # onnxruntime raises its own Fail/InvalidProtobuf/... types
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
        raise ModelError(f"{path}: not a loadable ONNX model ({first})") from exc


def read_model_info(path: str | Path) -> ModelInfo:
    """Validate a model file against the contract and return its :class:`ModelInfo`."""
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    options.log_severity_level = 4  # errors reach the user as one-line ModelErrors
    p = Path(path)
    return _info_from(p, open_session(p, options))


def softmax(logits: NDArray[np.floating[Any]]) -> NDArray[np.float32]:
    """Row-wise softmax, numerically stable."""
    z = np.asarray(logits, dtype=np.float64)
    z = z - z.max(axis=-1, keepdims=True)
    e = np.exp(z)
    return np.asarray(e / e.sum(axis=-1, keepdims=True), dtype=np.float32)


class OnnxModel:
    """An onnxruntime session over a contract-checked model file."""

    def __init__(self, path: str | Path, threads: int = 1, arena: bool = True,
                 low_memory: bool = False) -> None:
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.enable_cpu_mem_arena = arena and not low_memory
        options.log_severity_level = 4  # errors reach the user as one-line ModelErrors
        if low_memory:  # no second, prepacked copy of the weights; freed buffers go back
            from edge_ser.memory import release_large_buffers

            options.add_session_config_entry("session.disable_prepacking", "1")
            release_large_buffers()
        self.path = Path(path)
        self._session = open_session(self.path, options)
        self._info = _info_from(self.path, self._session)
        shape0 = self._session.get_inputs()[0].shape[0]
        self._batch_one = (isinstance(shape0, int) and shape0 == 1) or \
            self._info.batching == "per-window"
        log.info(
            "loaded model %s (encoder %s, %s, threads %d, arena %s, low memory %s)",
            self._info.name, self._info.encoder, self._info.quantization or "?", threads,
            options.enable_cpu_mem_arena, low_memory,
        )

    @classmethod
    def from_config(cls, cfg: ModelConfig, threads: int | None = None) -> OnnxModel:
        """The model ``cfg`` (the config's ``model`` section) names, with its settings;
        ``threads`` overrides ``cfg.threads`` (the daemon halves it when hot)."""
        return cls(cfg.path, threads=cfg.threads if threads is None else threads,
                   arena=cfg.arena, low_memory=cfg.low_memory)

    @property
    def info(self) -> ModelInfo:
        return self._info

    def logits(self, batch: NDArray[np.float32]) -> NDArray[np.float32]:
        """Raw ``logits`` for a ``[B, samples]`` float32 batch."""
        x = np.ascontiguousarray(batch, dtype=np.float32)
        if x.ndim != 2:
            raise ValueError(f"batch must be [B, samples], got shape {x.shape}")
        if self._info.samples is not None and x.shape[1] != self._info.samples:
            raise ValueError(f"model takes {self._info.samples} samples, got {x.shape[1]}")
        if x.shape[0] == 0:
            return np.zeros((0, len(LABELS)), dtype=np.float32)
        if self._batch_one and x.shape[0] > 1:
            return np.concatenate([self.logits(x[i : i + 1]) for i in range(x.shape[0])])
        try:
            out = self._session.run([OUTPUT_NAME], {INPUT_NAME: x})[0]
        except Exception as exc:  # onnxruntime's Fail / InvalidArgument / RuntimeException
            first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
            raise ModelError(f"{self.path}: inference failed on {x.shape} ({first})") from exc
        y = np.asarray(out, dtype=np.float32)
        if y.shape != (x.shape[0], len(LABELS)):
            raise ModelError(f"{self.path}: output '{OUTPUT_NAME}' has shape {y.shape}")
        if not np.all(np.isfinite(y)):
            raise ModelError(f"{self.path}: output '{OUTPUT_NAME}' is not finite (NaN or inf)")
        return y

    def probabilities(self, batch: NDArray[np.float32]) -> NDArray[np.float32]:
        """Class probabilities ``[B, 4]`` (softmax of the logits), columns in LABELS order."""
        return softmax(self.logits(batch))
