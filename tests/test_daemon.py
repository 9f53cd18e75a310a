"""The daemon end to end: ``edge-ser run`` as a subprocess on real speech (file and stdin
sources, JSON lines on stdout), SIGTERM, budgets visible in stats, bad input -> one line."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from edge_ser.audio import read_wav, resample, write_wav
from edge_ser.config import Config, SourceConfig
from edge_ser.daemon import Daemon
from edge_ser.errors import ConfigError
from edge_ser.model import OnnxModel
from edge_ser.publish.stdout import StdoutSink
from edge_ser.stopping import SAME_SIGNAL_S
from tests.conftest import roomy

REPO = Path(__file__).resolve().parent.parent
VOICE_NOTE = REPO / "examples" / "voice-note.wav"
EVENT_KEYS = {"emotion", "confidence", "scores", "arousal", "valence", "start_s", "end_s",
              "speech_s", "model", "time"}
#: Utterances of examples/voice-note.wav (seconds): three anger clips with silence between.
UTTERANCES = [(1.7, 4.7), (7.0, 9.8), (12.2, 14.8)]


def _config(tmp_path: Path, model: Path, source: str, extra: str = "") -> Path:
    path = tmp_path / "edge-ser.yaml"
    path.write_text(f"{source}\nmodel:\n  path: {model}\n{extra}")
    return path


def _run(cfg: Path, *, stdin: Any = None, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "edge_ser", "run", "--config", str(cfg)],
                          stdin=stdin, capture_output=True, text=True, timeout=timeout)


def _lines(stdout: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in stdout.splitlines() if line.strip()]


def _of(lines: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [m for m in lines if m["type"] == kind]


FILE_FAST = f"source:\n  type: file\n  path: {VOICE_NOTE}\n  realtime: false\n"


def test_file_source_end_to_end_json_lines(tmp_path: Path, tiny_model: Path) -> None:
    proc = _run(_config(tmp_path, tiny_model, FILE_FAST))
    assert proc.returncode == 0, proc.stderr
    lines = _lines(proc.stdout)
    events, states, stats = _of(lines, "emotion"), _of(lines, "state"), _of(lines, "stats")
    assert len(events) == 3 and len(states) == 3 and len(stats) >= 1
    for ev, (start, end) in zip(events, UTTERANCES, strict=True):
        assert EVENT_KEYS <= ev.keys()
        assert ev["start_s"] == pytest.approx(start, abs=0.5)
        assert ev["end_s"] == pytest.approx(end, abs=0.5)
        assert ev["model"] == "edge-ser-test-tiny" and ev["emotion"] in ev["scores"]
        assert sum(ev["scores"].values()) == pytest.approx(1.0, abs=1e-3)
        assert 1.5 < ev["speech_s"] < 4.5
    assert states[-1]["emotion"] == events[-1]["emotion"]
    last = stats[-1]
    assert last["windows_run"] == 3 and last["windows_dropped"] == 0 and last["events"] == 3
    assert last["audio_dropped_s"] == 0.0  # a file played fast waits, it never drops
    assert last["mqtt_connected"] is None  # no broker: not "connected"
    for key in ("latency_p50_ms", "latency_p95_ms", "rss_mb", "cpu_percent", "throttle",
                "temperature_c", "events_dropped"):
        assert key in last
    assert lines[-1]["type"] == "stats"  # the final stats come last, after every event


def test_shipped_model_hears_anger_in_the_voice_note(tmp_path: Path, shipped_model: Path) -> None:
    proc = _run(_config(tmp_path, shipped_model, FILE_FAST))
    assert proc.returncode == 0, proc.stderr
    events = _of(_lines(proc.stdout), "emotion")
    assert len(events) == 3
    labels = [ev["emotion"] for ev in events]
    assert labels.count("anger") >= 2, labels  # three angry RAVDESS utterances
    assert np.mean([ev["arousal"] for ev in events]) > 0  # anger-ish: aroused on the whole


def test_stdin_source_from_a_pipe(tmp_path: Path, tiny_model: Path) -> None:
    pcm = np.clip(resample(read_wav(VOICE_NOTE), 16000, 48000) * 32768, -32768, 32767)
    raw = tmp_path / "note.raw"
    raw.write_bytes(pcm.astype("<i2").tobytes())
    cfg = _config(tmp_path, tiny_model,
                  "source:\n  type: stdin\n  rate: 48000\n  realtime: false\n")
    with raw.open("rb") as f:
        proc = _run(cfg, stdin=f)
    assert proc.returncode == 0, proc.stderr
    events = _of(_lines(proc.stdout), "emotion")
    assert [round(e["start_s"]) for e in events] == [round(s) for s, _ in UTTERANCES]


def test_sigterm_finishes_publishes_and_exits_0(tmp_path: Path, tiny_model: Path) -> None:
    cfg = _config(tmp_path, tiny_model,
                  f"source:\n  type: file\n  path: {VOICE_NOTE}\n  loop: true\n")
    proc = subprocess.Popen([sys.executable, "-m", "edge_ser", "run", "--config", str(cfg)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    first = json.loads(proc.stdout.readline())  # blocks until the first utterance (~5 s)
    assert first["type"] == "emotion"
    t0 = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=30)
    waited = time.monotonic() - t0
    assert proc.returncode == 0, err
    assert waited < 15.0  # generous: it normally takes well under a second
    assert "SIGTERM received" in err and "edge-ser stopped (SIGTERM)" in err
    assert _lines(out)[-1]["type"] == "stats"


def test_sighup_is_a_stop_request_not_a_kill(tmp_path: Path, tiny_model: Path) -> None:
    """Before, SIGHUP's default action killed the daemon: exit 129 (-1 here), no log line, no
    flush, no last stats, no ``offline``."""
    cfg = _config(tmp_path, tiny_model,
                  f"source:\n  type: file\n  path: {VOICE_NOTE}\n  loop: true\n")
    proc = subprocess.Popen([sys.executable, "-m", "edge_ser", "run", "--config", str(cfg)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    assert json.loads(proc.stdout.readline())["type"] == "emotion"
    proc.send_signal(signal.SIGHUP)
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    assert "SIGHUP received" in err and "restart it to read a changed config" in err, err
    assert "edge-ser stopped (SIGHUP)" in err
    assert _lines(out)[-1]["type"] == "stats"


def test_under_nohup_a_hangup_is_left_ignored(tmp_path: Path, tiny_model: Path) -> None:
    """``nohup edge-ser run &`` must outlive the terminal: SIGHUP ignored by the parent stays
    ignored (stopping on it would end the daemon at logout)."""
    cfg = _config(tmp_path, tiny_model,
                  f"source:\n  type: file\n  path: {VOICE_NOTE}\n  loop: true\n")
    proc = subprocess.Popen([sys.executable, "-m", "edge_ser", "run", "--config", str(cfg)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGHUP, signal.SIG_IGN))
    assert proc.stdout is not None
    assert json.loads(proc.stdout.readline())["type"] == "emotion"
    proc.send_signal(signal.SIGHUP)
    assert json.loads(proc.stdout.readline())["type"]  # still running: the next line comes
    assert proc.poll() is None
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    assert "SIGHUP" not in err


def test_a_second_sigterm_says_how_many_events_it_abandons(
    tmp_path: Path, tiny_model: Path
) -> None:
    """The second signal exits at once: before, the buffered events it threw away went unsaid."""
    from tests.fixtures_broker import free_port

    cfg = _config(tmp_path, tiny_model, FILE_FAST,
                  f"mqtt:\n  host: 127.0.0.1\n  port: {free_port()}\n  connect_wait_s: 0.5\n"
                  "  stop_flush_s: 9\n")
    proc = subprocess.Popen([sys.executable, "-m", "edge_ser", "run", "--config", str(cfg)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert proc.stderr is not None
    seen: list[str] = []

    def wait_for(text: str) -> None:
        assert proc.stderr is not None
        for line in proc.stderr:
            seen.append(line)
            if text in line:
                return
        raise AssertionError(f"never logged {text!r}: {''.join(seen)[-3000:]}")

    try:  # the file is done, the sink waits for the broker with the 3 events
        wait_for("for 3 buffered events")
        proc.send_signal(signal.SIGTERM)
        wait_for("SIGTERM received")
        time.sleep(SAME_SIGNAL_S + 0.2)  # not the same kill delivered twice
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 1
    assert "second SIGTERM: exiting now; 3 buffered events abandoned, not delivered" in err, err


def _started(tmp_path: Path, tiny_model: Path, extra: str, wait_for: str) -> subprocess.Popen[str]:
    """``edge-ser run`` on the voice note (real time), once ``wait_for`` is in its log."""
    cfg = _config(tmp_path, tiny_model, f"source:\n  type: file\n  path: {VOICE_NOTE}\n", extra)
    proc = subprocess.Popen([sys.executable, "-m", "edge_ser", "--log-level", "DEBUG", "run",
                             "--config", str(cfg)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert proc.stderr is not None
    for line in proc.stderr:
        if wait_for in line:
            return proc
    raise AssertionError(f"never logged {wait_for!r}")


def test_sigterm_while_waiting_for_the_broker_stops_at_once(
    tmp_path: Path, tiny_model: Path
) -> None:
    from tests.fixtures_broker import free_port

    proc = _started(tmp_path, tiny_model, f"mqtt:\n  host: 127.0.0.1\n  port: {free_port()}\n"
                    "  connect_wait_s: 60\n", "mqtt: connecting to")
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err  # not the hard deadline's exit 1
    assert "taking too long" not in err and "not reachable" not in err, err
    assert "playing" not in err, err  # the source (a mic, under systemd) is never opened


def test_one_kill_delivered_twice_is_one_stop(monkeypatch: pytest.MonkeyPatch) -> None:
    """timeout(1) forwards SIGTERM and also signals the process group: the same request. A
    second signal a while later is a user insisting: exit now."""
    from edge_ser import stopping

    exits: list[int] = []
    monkeypatch.setattr(stopping.os, "_exit", exits.append)
    stop = stopping.StopControl(grace_s=10.0, wake=threading.Event())
    stop._on_signal(signal.SIGTERM, None)
    stop._on_signal(signal.SIGTERM, None)
    assert stop.reason == "SIGTERM" and exits == []
    stop._signalled_at -= stopping.SAME_SIGNAL_S
    stop._on_signal(signal.SIGINT, None)
    assert exits == [1]


def test_bad_config_and_missing_model_exit_2_with_one_line(
    tmp_path: Path, tiny_model: Path
) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("source:\n  type: file\n  path: x.wav\n  realtim: false\n")
    proc = _run(bad)
    assert proc.returncode == 2 and proc.stdout == ""
    assert proc.stderr.strip() == (
        f"edge-ser run: error: {bad}:4: source.realtim: unknown key")
    proc = _run(_config(tmp_path, tmp_path / "gone.onnx", FILE_FAST))
    assert proc.returncode == 2
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("edge-ser run: error: ") and "gone.onnx" in last
    proc = _run(_config(tmp_path, tiny_model, "source:\n  type: file\n  path: gone.wav\n"))
    assert proc.returncode == 2 and "gone.wav: no such file" in proc.stderr.splitlines()[-1]


def test_memory_budget_sheds_windows_in_the_daemon(tmp_path: Path, tiny_model: Path) -> None:
    cfg = _config(tmp_path, tiny_model, FILE_FAST, "budgets:\n  memory:\n    rss_mb: 5\n")
    proc = _run(cfg)
    assert proc.returncode == 0, proc.stderr
    lines = _lines(proc.stdout)
    assert _of(lines, "emotion") == []
    stats = _of(lines, "stats")[-1]
    assert stats["windows_dropped"] == 3 and stats["windows_run"] == 0
    assert stats["memory_over_budget"] is True
    assert proc.stderr.count("over the 5 MiB budget") == 1  # logged once per episode


def _in_process(cfg: Config, model: Any, out: Path) -> Daemon:
    with out.open("w") as stream:
        daemon = Daemon(roomy(cfg), model=model, sink=StdoutSink(stream, model_name="tiny"))
        assert daemon.run(install_signals=False) == 0
    return daemon


def test_fake_thermal_zone_pauses_inference(tmp_path: Path, tiny_model: Path) -> None:
    zone = tmp_path / "temp"
    zone.write_text("85000\n")
    cfg = Config.model_validate({
        "source": {"type": "file", "path": str(VOICE_NOTE), "realtime": False},
        "budgets": {"thermal": {"zone": str(zone)}},
    })
    daemon = _in_process(cfg, OnnxModel(tiny_model), tmp_path / "out.jsonl")
    stats = _of(_lines((tmp_path / "out.jsonl").read_text()), "stats")[-1]
    assert stats["throttle"] == "paused" and stats["temperature_c"] == 85.0
    assert stats["windows_dropped"] == 3 and daemon.events == 0


class SlowModel:
    """The real tiny model, slowed down: the worker falls behind a live source."""

    def __init__(self, path: Path, delay_s: float) -> None:
        self.inner, self.delay_s = OnnxModel(path), delay_s

    @property
    def info(self):  # type: ignore[no-untyped-def]
        return self.inner.info

    def probabilities(self, batch: np.ndarray) -> np.ndarray:
        time.sleep(self.delay_s)
        return self.inner.probabilities(batch)


def test_live_source_drops_oldest_audio_when_the_worker_lags(
    tmp_path: Path, tiny_model: Path
) -> None:
    note = tmp_path / "note.wav"
    write_wav(note, read_wav(VOICE_NOTE)[: 16000 * 21 // 2])  # the first two utterances
    cfg = Config(source=SourceConfig(type="file", path=note, realtime=True, queue_s=0.5))
    daemon = _in_process(cfg, SlowModel(tiny_model, 2.5), tmp_path / "out.jsonl")
    lines = _lines((tmp_path / "out.jsonl").read_text())
    stats = _of(lines, "stats")[-1]
    assert stats["audio_dropped_s"] > 1.0 and stats["audio_dropped_chunks"] > 10
    assert stats["queue_high_water_s"] <= 0.5 + 1e-6
    assert daemon.queue.dropped_s == pytest.approx(stats["audio_dropped_s"], abs=0.01)
    # dropped audio is a gap in the stream, not a splice: times after it stay true
    assert stats["stream_s"] == pytest.approx(10.5, abs=0.05)
    events = _of(lines, "emotion")
    assert len(events) == 2, events
    for e, (start, end) in zip(events, UTTERANCES, strict=False):
        assert start - 0.4 <= e["start_s"] and e["end_s"] <= end + 0.4, (e["start_s"], e["end_s"])


class PingLog:
    """A Notifier-shaped recorder of the times the worker asks to ping the watchdog."""

    def __init__(self) -> None:
        self.pings: list[float] = []

    def watchdog(self, force: bool = False) -> bool:
        self.pings.append(time.monotonic())
        return True

    def ready(self, status: str = "") -> bool:
        return True

    def status(self, text: str) -> bool:
        return True

    def stopping(self) -> bool:
        return True

    def close(self) -> None:
        pass


def test_duty_cycle_rest_keeps_pinging_the_watchdog(tmp_path: Path, tiny_model: Path) -> None:
    """At duty_cycle 0.05 each 0.15-s window earns a 2.85-s rest: the watchdog is still asked
    for a ping every tick (a rest longer than WatchdogSec would get a healthy daemon killed)."""
    cfg = Config.model_validate({
        "source": {"type": "file", "path": str(VOICE_NOTE), "realtime": False},
        "budgets": {"duty_cycle": 0.05},
    })
    pings = PingLog()
    with (tmp_path / "out.jsonl").open("w") as stream:
        daemon = Daemon(roomy(cfg), model=SlowModel(tiny_model, 0.15), notifier=pings,  # type: ignore[arg-type]
                        sink=StdoutSink(stream, model_name="tiny"))
        assert daemon.run(install_signals=False) == 0
    assert daemon.events == 3 and daemon.duty.rested_s > 6.0
    gaps = np.diff(pings.pings)
    assert gaps.max() < 0.25 + 0.15 + 0.3, gaps.max()
    # a rest is a wait, not a spin (the file ends early and must not cut the waits short)
    assert len(pings.pings) < 4 * daemon.duty.rested_s / 0.25 + 50, len(pings.pings)


def test_events_undelivered_at_the_end_exit_1(tmp_path: Path, tiny_model: Path) -> None:
    """A file run against a broker that never answers must not look like a success."""
    import socket

    with socket.socket() as s:  # a free port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = _run(_config(tmp_path, tiny_model, FILE_FAST,
                        f"mqtt:\n  host: 127.0.0.1\n  port: {port}\n  connect_wait_s: 0.5\n"
                        "  stop_flush_s: 0.5\n"))
    assert proc.returncode == 1, proc.stderr
    assert f"events were not delivered to 127.0.0.1:{port}" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_daemon_refuses_voice_note_pooling_of_an_endless_source(tmp_path: Path) -> None:
    """voice_note mode holds every window's scores until the input ends: a mic never does."""
    cfg = tmp_path / "c.yaml"
    cfg.write_text("source:\n  type: mic\naggregate:\n  mode: voice_note\n")
    for cmd in ("check-config", "run --config"):
        proc = subprocess.run([sys.executable, "-m", "edge_ser", *cmd.split(), str(cfg)],
                              capture_output=True, text=True, timeout=60)
        assert proc.returncode == 2, proc.stderr
        assert proc.stderr.strip().splitlines() == [
            f"edge-ser {cmd.split()[0]}: error: {cfg}:4: aggregate.mode: 'voice_note' pools the "
            "whole input into one event, which a source that never ends (mic) would never "
            "publish: use 'utterance'"]
    looping = Config.model_validate({"source": {"type": "file", "path": str(VOICE_NOTE),
                                                "loop": True},
                                     "aggregate": {"mode": "voice_note"}})
    with pytest.raises(ConfigError, match=r"\(file with loop\)"):
        Daemon(looping)


@pytest.mark.skipif(not hasattr(os, "getuid"), reason="POSIX only")
def test_no_audio_is_written_to_disk(tmp_path: Path, tiny_model: Path) -> None:
    """The run leaves no audio behind in its working folder or TMPDIR.

    (onnxruntime itself drops a 51-byte ``.ses`` session-id file into TMPDIR; that is allowed.)
    """
    work, tmp = tmp_path / "work", tmp_path / "tmp"
    work.mkdir()
    tmp.mkdir()
    cfg = _config(work, tiny_model, FILE_FAST)
    before = {p for p in work.rglob("*")}
    proc = subprocess.run([sys.executable, "-m", "edge_ser", "run", "--config", str(cfg)],
                          cwd=work, env={**os.environ, "TMPDIR": str(tmp)},
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert {p for p in work.rglob("*")} == before
    left = [p for p in tmp.rglob("*") if p.is_file() and p.stat().st_size > 1024]
    assert left == []


def test_mic_that_fails_and_comes_back_keeps_the_daemon_running(
    tmp_path: Path, tiny_model: Path
) -> None:
    """A PyAudio-shaped USB mic (48 kHz only) dies after ~6 s of speech, vanishes for two
    reopen attempts, then returns: the daemon keeps classifying and reports the reopen."""
    from edge_ser.sources import MicSource
    from tests.test_sources import FakePyAudio, FakeWorld

    world = FakeWorld(resample(read_wav(VOICE_NOTE), 16000, 48000), fail_after_chunks=200,
                      absent_opens=2)
    source = MicSource(device="USB", reopen_min_s=0.1, reopen_max_s=0.5,
                       backend=lambda: FakePyAudio(world))
    cfg = roomy(Config(source=SourceConfig(type="mic", device="USB")))
    out = tmp_path / "out.jsonl"
    with out.open("w") as stream:
        daemon = Daemon(cfg, model=OnnxModel(tiny_model), source=source,
                        sink=StdoutSink(stream, model_name="tiny"))
        def stop_when_done() -> None:
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline and (daemon.events < 3 or source.reopens < 1):
                time.sleep(0.05)
            daemon.request_stop("test")

        threading.Thread(target=stop_when_done, daemon=True).start()
        assert daemon.run(install_signals=False) == 0
    lines = _lines(out.read_text())
    stats = _of(lines, "stats")[-1]
    assert stats["source_reopens"] == 1 and stats["source_failures"] == 3
    assert stats["source_rate_hz"] == 48000
    assert len(_of(lines, "emotion")) >= 3  # utterances before and after the outage
