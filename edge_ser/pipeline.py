"""The streaming emotion pipeline: vad -> windows -> preprocess -> model -> aggregate.

:class:`EmotionPipeline` is fed 16 kHz mono float32 blocks of any size. In ``utterance`` mode
(the daemon) it returns one :class:`~edge_ser.aggregate.EmotionResult` per utterance as soon as
the utterance ends; in ``voice_note`` mode it pools the windows of the whole input into a single
result from :meth:`flush`. Windows end with their utterance (a window never spans the silence
between two utterances, which the model never saw in training) unless
``windows.span_utterances`` is true, which windows the VAD-filtered speech of the whole input as
one stream, as the paper describes.
:func:`predict_clip` is the whole-clip entry point used by ``edge-ser classify``.

Windows completed by one call are preprocessed and sent through the model as one batch. An
optional ``gate`` callable is asked before each window; when it returns False the window is
skipped (counted in ``windows_skipped``) - the daemon's budgets use it to shed load.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from numpy.typing import NDArray

from edge_ser import SAMPLE_RATE
from edge_ser.aggregate import EmotionResult, WindowScore, combine
from edge_ser.audio import WavFile
from edge_ser.config import Config
from edge_ser.errors import ConfigError
from edge_ser.model import EmotionModel, OnnxModel
from edge_ser.preprocess import prepare_window
from edge_ser.vad import SpeechAudio, SpeechEnd, SpeechStart, VadGate
from edge_ser.windows import Window, Windower

log = logging.getLogger(__name__)

MAX_BATCH = 8  # windows per model call at most (8 x 8 s of float32 audio = 4 MiB)

STAGES = ("vad", "window", "preprocess", "model", "aggregate")
#: predict_clip feeds long clips in blocks of this many seconds (bounded memory).
CLIP_BLOCK_S = 30.0


@dataclass
class StageTiming:
    """Cumulative wall time of one stage: calls, total and last duration in seconds."""

    count: int = 0
    total_s: float = 0.0
    last_s: float = 0.0

    def add(self, seconds: float) -> None:
        self.count += 1
        self.total_s += seconds
        self.last_s = seconds

    def to_dict(self) -> dict[str, float]:
        return {"count": self.count, "total_s": self.total_s, "last_s": self.last_s}


def check_window_length(config: Config, model_window_s: float, model_name: str) -> None:
    """ConfigError (at the YAML line) when ``windows.length_s`` is longer than the model's
    window: the model would see only its first part, and the rest would be lost unheard."""
    length = config.windows.length_s
    if length > model_window_s + 1e-6:
        raise ConfigError(
            f"{config.where('windows.length_s')}: windows.length_s: {length:g} s is longer than "
            f"the {model_window_s:g}-s window of model {model_name}; at most {model_window_s:g}")


class EmotionPipeline:
    """Streaming pipeline; ``process`` blocks, ``flush`` at the end, ``reset`` between inputs.

    ``timings``, ``windows_run`` and ``windows_skipped`` are cumulative statistics and survive
    :meth:`reset`.
    """

    def __init__(
        self,
        config: Config,
        model: EmotionModel,
        gate: Callable[[], bool] | None = None,
    ) -> None:
        self.config = config
        self.model = model
        self.gate = gate
        self.mode = config.aggregate.mode
        self.window_s = model.info.window_samples / SAMPLE_RATE
        check_window_length(config, self.window_s, model.info.name)
        self.vad = VadGate(config.vad)
        self.windower = Windower(config.windows)
        self.timings: dict[str, StageTiming] = {s: StageTiming() for s in STAGES}
        self.windows_run = 0
        self.windows_skipped = 0
        self.reset()

    # --- public API ---------------------------------------------------------------------------
    def reset(self) -> None:
        """Forget buffered audio and partial results; the stream clock restarts at 0."""
        self.vad.reset()
        self.windower.reset()
        self._pending: list[Window] = []
        self._scores: list[WindowScore] = []
        self._speech_n = 0  # samples of gated speech in the current result
        self._utt_start: float | None = None
        self._first_start: float | None = None
        self._last_end: float | None = None

    def process(self, samples: NDArray[np.float32]) -> list[EmotionResult]:
        """Feed a block of 16 kHz mono float32; return results of utterances it completed."""
        with self._timed("vad"):
            events = self.vad.process(samples)
        return self._handle(events)

    def skip(self, n_samples: int) -> list[EmotionResult]:
        """``n_samples`` of audio went missing (the capture queue dropped them): the open
        utterance ends before the gap, and stream times after it stay true."""
        with self._timed("vad"):
            events = self.vad.skip(n_samples)
        return self._handle(events)

    def flush(self) -> list[EmotionResult]:
        """End of input: close the open utterance; in voice-note mode return the one result."""
        with self._timed("vad"):
            events = self.vad.flush()
        results = self._handle(events)
        if self.mode == "voice_note":
            with self._timed("window"):
                self._pending.extend(self.windower.end_utterance())
            self._run_pending()
            start = self._first_start if self._first_start is not None else 0.0
            end = self._last_end if self._last_end is not None else self.vad.time_s
            results.append(self._result(start, end))
            self._first_start = self._last_end = None
        return results

    def timings_dict(self) -> dict[str, dict[str, float]]:
        """Per-stage timings as plain dicts (for stats events and benchmarks)."""
        return {name: t.to_dict() for name, t in self.timings.items()}

    # --- internals ----------------------------------------------------------------------------
    @contextmanager
    def _timed(self, stage: str) -> Iterator[None]:
        t0 = time.perf_counter()
        try:
            yield
        finally:
            self.timings[stage].add(time.perf_counter() - t0)

    def _handle(self, events: list[SpeechStart | SpeechAudio | SpeechEnd]) -> list[EmotionResult]:
        results: list[EmotionResult] = []
        for ev in events:
            if isinstance(ev, SpeechStart):
                self._utt_start = ev.t_s
                if self._first_start is None:
                    self._first_start = ev.t_s
            elif isinstance(ev, SpeechAudio):
                self._speech_n += len(ev.audio)
                with self._timed("window"):
                    self._pending.extend(self.windower.push(ev.audio, ev.start_s))
            else:
                self._last_end = ev.t_s
                if self.mode == "utterance" or not self.config.windows.span_utterances:
                    with self._timed("window"):
                        self._pending.extend(self.windower.end_utterance())
                if self.mode == "utterance":
                    self._run_pending()
                    start = self._utt_start if self._utt_start is not None else ev.t_s
                    result = self._result(start, ev.t_s)
                    if result.emotion is not None:
                        results.append(result)
                    else:
                        log.debug("utterance %.2f-%.2f s: %s", start, ev.t_s, result.reason)
                self._utt_start = None
        self._run_pending()
        return results

    def _run_pending(self) -> None:
        """Run the pending windows the gate lets through, :data:`MAX_BATCH` at a time (the
        memory gate then sees what each batch costs before the next is let through)."""
        pending, self._pending = self._pending, []
        for at in range(0, len(pending), MAX_BATCH):
            self._run_batch(pending[at:at + MAX_BATCH])

    def _run_batch(self, windows: list[Window]) -> None:
        todo: list[Window] = []
        for w in windows:
            if self.gate is None or self.gate():
                todo.append(w)
            else:
                self.windows_skipped += 1
                log.debug("window %.2f-%.2f s skipped by the gate", w.start_s, w.end_s)
        if not todo:
            return
        with self._timed("preprocess"):
            batch = np.stack([prepare_window(w.audio, self.window_s) for w in todo])
        with self._timed("model"):
            probs = self.model.probabilities(batch)
        self.windows_run += len(todo)
        for w, p in zip(todo, probs, strict=True):
            self._scores.append(
                WindowScore(w.start_s, w.end_s, w.speech_s, tuple(float(v) for v in p))
            )

    def _result(self, start_s: float, end_s: float) -> EmotionResult:
        with self._timed("aggregate"):
            result = combine(self._scores, self._speech_n / SAMPLE_RATE, start_s, end_s)
        self._scores = []
        self._speech_n = 0
        return result


def predict_clip(
    audio_or_path: NDArray[np.float32] | str | Path | WavFile,
    config: Config | None = None,
    model: EmotionModel | None = None,
) -> EmotionResult:
    """Classify a whole clip (16 kHz float32 array, WAV path or open :class:`WavFile`) with
    voice-note pooling.

    ``model`` defaults to :class:`OnnxModel` on ``config.model``; pass one to reuse it.
    Raises :class:`~edge_ser.errors.AudioError` / :class:`~edge_ser.errors.ModelError`.
    """
    cfg = config if config is not None else Config()
    if cfg.aggregate.mode != "voice_note":
        cfg = cfg.model_copy(deep=True)
        cfg.aggregate.mode = "voice_note"
    if isinstance(audio_or_path, WavFile):  # opened by the caller, who reads its notes
        return _pooled(audio_or_path.blocks(), cfg, model)
    if isinstance(audio_or_path, (str, Path)):
        with WavFile(audio_or_path) as wav:  # read a few seconds at a time
            return _pooled(wav.blocks(), cfg, model)
    audio = np.asarray(audio_or_path, dtype=np.float32)
    block = int(CLIP_BLOCK_S * SAMPLE_RATE)
    return _pooled((audio[i : i + block] for i in range(0, len(audio), block)), cfg, model)


def _pooled(pieces: Iterable[NDArray[np.float32]], cfg: Config,
            model: EmotionModel | None) -> EmotionResult:
    pipe = EmotionPipeline(cfg, model if model is not None else OnnxModel.from_config(cfg.model))
    for piece in pieces:
        pipe.process(piece)
    return pipe.flush()[-1]
