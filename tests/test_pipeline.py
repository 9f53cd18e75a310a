"""The streaming pipeline on real speech with a real ONNX model (the tiny contract model)."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest

from edge_ser import LABELS, SAMPLE_RATE
from edge_ser.aggregate import NO_SPEECH, EmotionResult
from edge_ser.audio import read_wav
from edge_ser.config import Config
from edge_ser.model import OnnxModel
from edge_ser.pipeline import STAGES, EmotionPipeline, predict_clip


def _config(mode: str = "utterance", **windows: float) -> Config:
    return Config.model_validate({"aggregate": {"mode": mode}, "windows": windows})


@pytest.fixture(scope="module")
def model(tiny_model: Path) -> OnnxModel:
    return OnnxModel(tiny_model)


@pytest.fixture(scope="module")
def note(examples: Path) -> np.ndarray:
    return read_wav(examples / "voice-note.wav")


def _stream(pipe: EmotionPipeline, x: np.ndarray, chunk: int | None) -> list[EmotionResult]:
    out: list[EmotionResult] = []
    if chunk is None:
        out += pipe.process(x)
    else:
        for i in range(0, len(x), chunk):
            out += pipe.process(x[i : i + chunk])
    return out + pipe.flush()


def _same(a: list[EmotionResult], b: list[EmotionResult]) -> None:
    assert len(a) == len(b)
    for ra, rb in zip(a, b, strict=True):
        assert (ra.emotion, ra.start_s, ra.end_s, ra.speech_s) == (
            rb.emotion, rb.start_s, rb.end_s, rb.speech_s,
        )
        np.testing.assert_allclose(ra.scores, rb.scores, atol=1e-5)
        spans_a = [(w.start_s, w.end_s) for w in ra.windows]
        assert spans_a == [(w.start_s, w.end_s) for w in rb.windows]


def test_utterance_mode_gives_one_result_per_utterance(model: OnnxModel, note: np.ndarray) -> None:
    pipe = EmotionPipeline(_config(), model)
    results = _stream(pipe, note, 480)
    assert len(results) == 3
    for r in results:
        assert r.emotion in LABELS and len(r.windows) == 1
        assert 2.0 < r.speech_s == pytest.approx(r.end_s - r.start_s)
        assert r.windows[0].start_s == r.start_s
        assert sum(r.scores) == pytest.approx(1.0, abs=1e-5)
    assert [r.start_s for r in results] == sorted(r.start_s for r in results)
    assert pipe.windows_run == 3 and pipe.windows_skipped == 0
    for stage in STAGES:
        assert pipe.timings[stage].count > 0 and pipe.timings[stage].total_s >= 0.0
    assert set(pipe.timings_dict()) == set(STAGES)


@pytest.mark.parametrize("chunk", [160, 1000, 16000])
def test_streaming_equals_whole_clip(model: OnnxModel, note: np.ndarray, chunk: int) -> None:
    for mode in ("utterance", "voice_note"):
        whole = _stream(EmotionPipeline(_config(mode), model), note, None)
        _same(_stream(EmotionPipeline(_config(mode), model), note, chunk), whole)


def test_results_arrive_when_the_utterance_ends(model: OnnxModel, note: np.ndarray) -> None:
    pipe = EmotionPipeline(_config(), model)
    first = pipe.process(note[: 6 * SAMPLE_RATE])  # the first utterance ends ~4.7 s
    assert len(first) == 1 and first[0].end_s < 6.0


def test_voice_note_mode_pools_the_whole_input(model: OnnxModel, note: np.ndarray) -> None:
    cfg = _config("voice_note", hop_s=2.0, min_s=0.2)
    pipe = EmotionPipeline(cfg, model)
    assert pipe.process(note) == []
    (r,) = pipe.flush()
    assert r.emotion in LABELS and len(r.windows) >= 2
    weights = np.array([w.speech_s for w in r.windows])
    pooled = (weights[:, None] * np.array([w.scores for w in r.windows])).sum(0) / weights.sum()
    np.testing.assert_allclose(r.scores, pooled, atol=1e-6)
    utterances = _stream(EmotionPipeline(_config(), model), note, None)
    assert r.start_s == utterances[0].start_s and r.end_s == utterances[-1].end_s
    assert r.speech_s == pytest.approx(sum(u.speech_s for u in utterances))
    _same([predict_clip(note, cfg, model)], [r])


def test_reset_gives_fresh_results(model: OnnxModel, note: np.ndarray, examples: Path) -> None:
    other = read_wav(examples / "clips" / "sadness-ravdess-08.wav")
    fresh = _stream(EmotionPipeline(_config(), model), note, 480)
    pipe = EmotionPipeline(_config(), model)
    pipe.process(other[: int(2.5 * SAMPLE_RATE)])  # stop in the middle of speech
    pipe.reset()
    _same(_stream(pipe, note, 480), fresh)


def test_gate_sheds_windows(model: OnnxModel, note: np.ndarray) -> None:
    pipe = EmotionPipeline(_config(), model, gate=lambda: False)
    assert _stream(pipe, note, 4800) == []
    assert (pipe.windows_run, pipe.windows_skipped) == (0, 3)
    answers = iter([True, False, True])
    pipe = EmotionPipeline(_config(), model, gate=lambda: next(answers))
    results = _stream(pipe, note, 4800)
    assert (pipe.windows_run, pipe.windows_skipped, len(results)) == (2, 1, 2)
    pipe = EmotionPipeline(_config("voice_note"), model, gate=lambda: False)
    (r,) = _stream(pipe, note, None)
    assert r.emotion is None and r.reason not in (None, NO_SPEECH) and r.speech_s > 5


def test_no_speech(model: OnnxModel) -> None:
    rng = np.random.default_rng(0)
    hiss = (rng.standard_normal(4 * SAMPLE_RATE) * 1e-4).astype(np.float32)
    r = predict_clip(hiss, _config(), model)
    assert r.emotion is None and r.reason == NO_SPEECH and r.windows == ()
    assert _stream(EmotionPipeline(_config(), model), hiss, 480) == []


def test_predict_clip_reads_a_path(model: OnnxModel, examples: Path) -> None:
    path = examples / "clips" / "anger-ravdess-03.wav"
    r = predict_clip(path, Config(), model)
    _same([r], [predict_clip(read_wav(path), Config(), model)])
    assert r.emotion in LABELS and 1.0 < r.speech_s < 4.5


@pytest.mark.corpus
def test_corpus_clips_through_the_pipeline(model: OnnxModel, shared_data: Path) -> None:
    rows: list[dict[str, str]] = []
    for corpus in ("ravdess", "urdu"):
        with open(shared_data / corpus / "manifest.csv", newline="") as fh:
            rows += list(csv.DictReader(fh))[::97]
    pipe = EmotionPipeline(_config("voice_note"), model)
    for row in rows:
        pipe.reset()
        pipe.process(read_wav(shared_data / row["corpus"] / row["file"]))
        (r,) = pipe.flush()
        assert r.emotion in LABELS, row["file"]
        assert 0 < r.speech_s <= float(row["duration_s"]) + 0.05, row["file"]


def test_shipped_model_reads_the_bundled_examples(shipped_model: Path, examples: Path) -> None:
    # These clips are in its training data: this checks the pipeline, not generalisation.
    model = OnnxModel(shipped_model)
    assert predict_clip(examples / "voice-note.wav", Config(), model).emotion == "anger"
    clips = sorted((examples / "clips").glob("*.wav"))
    right = sum(predict_clip(p, Config(), model).emotion == p.name.split("-")[0] for p in clips)
    assert right >= 5, f"{right}/8 bundled clips right"


def test_long_utterance_windows_run_before_it_ends(model: OnnxModel, note: np.ndarray) -> None:
    cfg = Config.model_validate({"vad": {"hangover_ms": 5000}})  # bridge the note's pauses
    pipe = EmotionPipeline(cfg, model)
    first = pipe.process(note[: 12 * SAMPLE_RATE])
    assert first == [] and pipe.windows_run == 1  # one full 8 s window, utterance still open
    (r,) = pipe.process(note[12 * SAMPLE_RATE :]) + pipe.flush()
    assert len(r.windows) == 2 and pipe.windows_run == 2
    assert r.windows[0].speech_s == 8.0 and r.windows[1].start_s == r.windows[0].end_s


def test_predict_clip_on_a_long_clip_equals_one_block(model: OnnxModel, note: np.ndarray) -> None:
    long = np.concatenate([note] * 3)  # 49 s: fed to the pipeline in 30 s blocks
    pipe = EmotionPipeline(_config("voice_note"), model)
    _same([predict_clip(long, Config(), model)], _stream(pipe, long, None))
    r = predict_clip(long, Config(), model)
    # default: windows end with their utterance -> one window per utterance, none spans a pause
    assert len(r.windows) == 9 and all(w.speech_s < 8.0 for w in r.windows)
    joined = Config.model_validate({"windows": {"span_utterances": True}})
    r = predict_clip(long, joined, model)
    assert [w.speech_s for w in r.windows][:3] == [8.0, 8.0, 8.0] and len(r.windows) == 4
