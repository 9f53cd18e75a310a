"""``edge-ser classify`` as a user runs it: a subprocess on real clips and on bad files."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from scipy.io import wavfile

from edge_ser import LABELS
from edge_ser.audio import read_wav, resample

REPO = Path(__file__).resolve().parent.parent
KEYS = {"file", "emotion", "confidence", "scores", "arousal", "valence", "speech_s", "windows"}


def classify(*args: str | Path, cwd: Path = REPO) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "edge_ser", "classify", *map(str, args)],
        capture_output=True, text=True, cwd=cwd, timeout=300,
    )


def _records(proc: subprocess.CompletedProcess[str]) -> list[dict[str, object]]:
    return [json.loads(line) for line in proc.stdout.splitlines()]


def test_jsonl_on_real_clips(tiny_model: Path, examples: Path) -> None:
    files = [examples / "voice-note.wav", *sorted((examples / "clips").glob("*.wav"))]
    proc = classify(*files, "--model", tiny_model, "--format", "jsonl")
    assert proc.returncode == 0, proc.stderr
    records = _records(proc)
    assert [r["file"] for r in records] == [str(f) for f in files]  # input order, path as given
    for r in records:
        assert KEYS <= set(r), r
        assert r["emotion"] in LABELS
        scores = r["scores"]
        assert isinstance(scores, dict) and list(scores) == list(LABELS)
        assert sum(scores.values()) == pytest.approx(1.0, abs=1e-3)
        assert r["confidence"] == max(scores.values())
        assert -1 <= r["arousal"] <= 1 and -1 <= r["valence"] <= 1  # type: ignore[operator]
        windows = r["windows"]
        assert isinstance(windows, list) and windows
        assert set(windows[0]) == {"start_s", "end_s", "scores"}
    assert 7.0 < records[0]["speech_s"] < 10.0  # type: ignore[operator]


def test_text_format_one_line_per_file(tiny_model: Path, examples: Path) -> None:
    files = sorted((examples / "clips").glob("*.wav"))[:3]
    proc = classify(*files, "--model", tiny_model)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert len(lines) == 3
    for f, line in zip(files, lines, strict=True):
        assert line.startswith(f"{f}: ") and any(label in line for label in LABELS)


def test_bad_files_mixed_with_good(tiny_model: Path, examples: Path, tmp_path: Path) -> None:
    good = examples / "clips" / "anger-ravdess-03.wav"
    not_wav = tmp_path / "notes.wav"
    not_wav.write_text("not audio at all\n")
    empty = tmp_path / "empty.wav"
    wavfile.write(str(empty), 16000, np.zeros(0, dtype=np.int16))
    stereo = tmp_path / "stereo-44k.wav"  # a WAV a user might have: stereo 44.1 kHz float
    x = resample(read_wav(good), 16000, 44100)
    wavfile.write(str(stereo), 44100, np.stack([x, x], axis=1).astype(np.float32))
    silent = tmp_path / "silent.wav"
    wavfile.write(str(silent), 16000, np.zeros(32000, dtype=np.int16))
    files = [tmp_path / "missing.wav", good, not_wav, empty, stereo, silent]
    proc = classify(*files, "--model", tiny_model, "--format", "jsonl")
    assert proc.returncode == 1
    records = _records(proc)
    assert [r["file"] for r in records] == [str(f) for f in files]
    errors = {r["file"]: r.get("error") for r in records}
    for bad in (files[0], not_wav, empty):
        msg = errors[str(bad)]
        assert isinstance(msg, str) and str(bad) in msg and "\n" not in msg
        assert "emotion" not in records[files.index(bad)]
    assert records[1]["emotion"] in LABELS and records[4]["emotion"] in LABELS
    assert records[4]["scores"] == pytest.approx(records[1]["scores"], abs=0.05)
    assert records[5]["emotion"] is None and records[5]["reason"] == "no speech"
    text = classify(*files, "--model", tiny_model)
    assert text.returncode == 1 and len(text.stdout.splitlines()) == len(files)
    assert "error" in text.stdout.splitlines()[0]


def test_bad_model_is_one_line_and_exit_2(tmp_path: Path, examples: Path) -> None:
    bogus = tmp_path / "bogus.onnx"
    bogus.write_bytes(b"\x00garbage" * 100)
    clip = examples / "clips" / "anger-ravdess-03.wav"
    for model, what in ((bogus, "not a loadable ONNX model"), (tmp_path / "x.onnx", "no such")):
        proc = classify(clip, "--model", model)
        assert proc.returncode == 2
        lines = proc.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("edge-ser classify: error: ")
        assert str(model) in lines[0] and what in lines[0] and proc.stdout == ""


def test_config_model_path_and_bad_config(tmp_path: Path, tiny_model: Path, examples: Path) -> None:
    cfg = tmp_path / "edge-ser.yaml"
    cfg.write_text(f"model:\n  path: {tiny_model}\n  threads: 2\nvad:\n  aggressiveness: 3\n")
    proc = classify(examples / "voice-note.wav", "--config", cfg, "--format", "jsonl")
    assert proc.returncode == 0, proc.stderr
    assert _records(proc)[0]["emotion"] in LABELS
    cfg.write_text("model:\n  path: missing-model.onnx\n")
    proc = classify(examples / "voice-note.wav", "--config", cfg)
    assert proc.returncode == 2 and str(tmp_path / "missing-model.onnx") in proc.stderr
    cfg.write_text("vad:\n  frame_ms: 25\n")
    proc = classify(examples / "voice-note.wav", "--config", cfg)
    assert proc.returncode == 2 and "vad.frame_ms" in proc.stderr


def test_default_model(examples: Path) -> None:
    proc = classify(examples / "voice-note.wav", "--format", "jsonl")
    shipped = REPO / "models" / "edge-ser-whisper-tiny.int8.onnx"
    if not shipped.is_file():  # until the model is trained: a clear error naming the path
        assert proc.returncode == 2 and str(shipped) in proc.stderr
        assert len(proc.stderr.strip().splitlines()) == 1
    else:
        assert proc.returncode == 0, proc.stderr
        assert _records(proc)[0]["emotion"] == "anger"


def _closed_after_one_line(args: list[str]) -> tuple[int, str]:
    """Run ``edge-ser ARGS | head -1``: read one line, close the pipe, return (rc, stderr)."""
    proc = subprocess.Popen([sys.executable, "-m", "edge_ser", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, cwd=REPO)
    assert proc.stdout is not None and proc.stderr is not None
    assert proc.stdout.readline()
    proc.stdout.close()
    err = proc.stderr.read()
    return proc.wait(timeout=120), err


def test_a_reader_that_goes_away_ends_commands_quietly_with_141(tmp_path: Path) -> None:
    clips = sorted(str(p) for p in (REPO / "examples" / "clips").glob("*.wav"))
    rc, err = _closed_after_one_line(["classify", *clips, *clips, *clips])
    assert rc == 141 and "Error" not in err and "error" not in err, err
    cfg = tmp_path / "file.yaml"  # endless: the pipe is closed while it still writes
    cfg.write_text(f"source:\n  type: file\n  path: {REPO / 'examples' / 'voice-note.wav'}\n"
                   "  realtime: false\n  loop: true\nlogging:\n  level: WARNING\n")
    rc, err = _closed_after_one_line(["run", "--config", str(cfg)])
    assert rc == 141 and "Traceback" not in err and "error" not in err, err


@pytest.mark.skipif(not Path("/dev/full").exists(), reason="needs /dev/full (Linux)")
def test_a_full_disk_is_one_line(tmp_path: Path) -> None:
    cfg = tmp_path / "file.yaml"  # a file source: passes whether or not PyAudio is installed
    cfg.write_text(f"source:\n  type: file\n  path: {REPO / 'examples/voice-note.wav'}\n")
    with open("/dev/full", "w") as full:
        proc = subprocess.run(
            [sys.executable, "-m", "edge_ser", "check-config", str(cfg)],
            stdout=full, stderr=subprocess.PIPE, text=True, timeout=60, cwd=REPO,
        )
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        "edge-ser check-config: error: No space left on device (writing the output)"
    ]


def test_a_closed_stdout_is_not_a_traceback() -> None:
    proc = subprocess.run(
        f"{sys.executable} -m edge_ser check-config config/edge-ser.yaml >&-",
        shell=True, capture_output=True, text=True, timeout=60, cwd=REPO,
    )
    assert "Traceback" not in proc.stderr and proc.returncode in (0, 2), proc.stderr


def test_a_truncated_wav_is_classified_and_flagged(tmp_path: Path) -> None:
    cut = tmp_path / "cut.wav"
    cut.write_bytes((REPO / "examples" / "voice-note.wav").read_bytes()[:200_000])  # 6 s of 16
    proc = subprocess.run([sys.executable, "-m", "edge_ser", "classify", "--format", "jsonl",
                           str(cut)], capture_output=True, text=True, timeout=120, cwd=REPO)
    assert proc.returncode == 0, proc.stderr
    record = json.loads(proc.stdout)
    assert record["emotion"] is not None  # the part that is there is classified
    assert any("EOF" in w for w in record["warnings"]), record


@pytest.mark.skipif(not hasattr(__import__("os"), "mkfifo"), reason="POSIX named pipes")
def test_a_named_pipe_says_what_it_is(tiny_model: Path, tmp_path: Path) -> None:
    """Before: 'pipe.wav: no such file', for a file that is plainly there."""
    import os

    fifo = tmp_path / "pipe.wav"
    os.mkfifo(fifo)
    proc = classify(fifo, "--model", tiny_model)  # never opened: no writer needed
    assert proc.returncode == 1
    assert proc.stdout.strip().startswith(f"{fifo}: error: {fifo}: is a named pipe (FIFO), not a "
                                          "file"), proc.stdout
    assert "no such file" not in proc.stdout


def test_model_metadata_in_an_error_has_its_control_bytes_escaped(
    make_model: Callable[..., Path], examples: Path
) -> None:
    """An escape sequence in a model's metadata reached the terminal as is (it could recolour
    or clear the screen, or hide the rest of the line)."""
    bad = make_model("ansi-labels",
                     metadata={"labels": "anger,happiness,neutral,\x1b[2J\x1b[31msadness\x07"})
    proc = classify(examples / "voice-note.wav", "--model", bad)
    assert proc.returncode == 2
    (line,) = proc.stderr.strip().splitlines()
    assert "\x1b" not in line and "\x07" not in line
    assert "neutral,\\x1b[2J\\x1b[31msadness\\x07 differ from" in line, line


def test_a_buzzer_is_not_speech(tmp_path: Path) -> None:
    """A 30-s clipping square wave (an alarm buzzer) passed webrtcvad as 30 s of speech and came
    out as an emotion; the VAD's steady-sound veto keeps it from the model."""
    t = np.arange(30 * 16000) / 16000
    buzz = np.clip(1.2 * np.sign(np.sin(2 * np.pi * 440 * t)), -1, 1)
    wavfile.write(str(tmp_path / "buzzer.wav"), 16000, (buzz * 32767).astype(np.int16))
    proc = classify(tmp_path / "buzzer.wav", "--format", "jsonl")
    assert proc.returncode == 0, proc.stderr
    record = _records(proc)[0]
    assert (record["emotion"], record["reason"], record["speech_s"]) == (None, "no speech", 0.0)
