"""Things that turn one prepared window into scores: an ONNX model or PyTorch eager.

:class:`OnnxRunner` is the daemon's own :class:`edge_ser.model.OnnxModel` (same session options,
same contract check); :class:`TorchRunner` is DistilHuBERT in PyTorch eager mode, the baseline a
user would otherwise pick. :func:`make_runner` chooses from a :class:`~benchmarks.variants.Spec`.
Only child processes (:mod:`benchmarks.worker`) create runners.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any, Protocol

import numpy as np
from numpy.typing import NDArray

from edge_ser import WINDOW_S
from edge_ser.errors import ModelError

log = logging.getLogger(__name__)


class Runner(Protocol):
    name: str
    runtime: str
    window_s: float

    def scores(self, window: NDArray[np.float32]) -> NDArray[np.float32]:
        """Scores (probabilities or logits) ``[4]`` for one prepared window."""
        ...


class OnnxRunner:
    def __init__(self, name: str, path: Path, threads: int, arena: bool,
                 low_memory: bool = False) -> None:
        from edge_ser.model import OnnxModel

        self.name = name
        self.model = OnnxModel(path, threads=threads, arena=arena, low_memory=low_memory)
        self.window_s = self.model.info.window_s
        self.runtime = "onnxruntime (edge_ser.model.OnnxModel)"

    def scores(self, window: NDArray[np.float32]) -> NDArray[np.float32]:
        return self.model.probabilities(window[None, :])[0]


class TorchRunner:
    """DistilHuBERT, random init, plain (unchunked) front end, ``torch.inference_mode``."""

    def __init__(self, name: str, threads: int, options: dict[str, Any] | None = None) -> None:
        try:
            import torch

            from edge_ser_model.encoders.distilhubert import DistilHubertClassifier
        except ImportError as exc:
            raise ModelError(f"{name}: PyTorch eager needs the train extra ({exc})") from exc
        torch.set_num_threads(threads)
        kw: dict[str, Any] = {"random_init": True, "chunk_frames": None, "seed": 0}
        kw.update(options or {})
        self.torch = torch
        self.module = DistilHubertClassifier(**kw).eval()
        self.name = name
        self.window_s = WINDOW_S
        self.runtime = f"torch {torch.__version__} eager fp32 ({threads} threads)"

    def scores(self, window: NDArray[np.float32]) -> NDArray[np.float32]:
        with self.torch.inference_mode():
            x = self.torch.from_numpy(np.ascontiguousarray(window[None, :]))
            out = self.module(x)
        return np.asarray(self.torch.softmax(out, dim=-1)[0].numpy(), dtype=np.float32)


def make_runner(spec: dict[str, Any], threads: int, arena: bool,
                low_memory: bool = False) -> Runner:
    """The runner a variant spec (``{"name", "kind", "path", ...}``) asks for."""
    kind = spec.get("kind")
    if kind == "onnx":
        return OnnxRunner(spec["name"], Path(spec["path"]), threads, arena, low_memory)
    if kind == "torch":
        os.environ.setdefault("OMP_NUM_THREADS", str(threads))
        return TorchRunner(spec["name"], threads, spec.get("options"))
    raise ModelError(f"{spec.get('name')}: unknown runner kind {kind!r}")
