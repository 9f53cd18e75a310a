"""End to end: the daemon on a ``file`` source (real time) publishing to a real mosquitto.

Speech: examples/voice-note.wav (and, outside ``--quick``, every bundled clip) laid on one
timeline with silence between. The end of each stretch of speech is known from the file (10-ms
frames within 40 dB of the piece's peak, gaps under 150 ms bridged, stretches under 100 ms
dropped). The file source logs ``playing <file>`` at the
instant playback starts; that log line, read from the daemon's stderr, anchors the timeline to
the clock. Latency = arrival of the ``emotion`` event at a subscriber - (anchor + true end of
the utterance the event reports): VAD hangover, windowing, inference and MQTT all included.
Idle CPU: a second daemon run over a silent WAV, psutil CPU time of the daemon process over a
window that starts 1.5 s after playback. ``python -m benchmarks.e2e [--quick] [--out DIR]``.
"""

from __future__ import annotations

import importlib.util
import json
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from benchmarks import EXAMPLES, REPO
from benchmarks.broker import Broker, Recorder, mosquitto_missing
from benchmarks.inputs import example_clips
from benchmarks.measure import Runs
from benchmarks.units import percentile, q, series
from benchmarks.variants import Variant
from edge_ser import SAMPLE_RATE
from edge_ser.audio import read_wav, write_wav

log = logging.getLogger(__name__)
MIB = float(2**20)
GAP_S = 3.0
ACTIVE_DB = -40.0
MERGE_FRAMES = 15  # active stretches closer than 150 ms are one
MIN_FRAMES = 10  # shorter than 100 ms (a click, a breath) is not speech
END_TOLERANCE_S = 0.35
IDLE_SETTLE_S = 1.5


def speech_ends(x: NDArray[np.float32], offset_s: float) -> list[float]:
    """Times (s, plus ``offset_s``) where stretches of speech in ``x`` end."""
    f = SAMPLE_RATE // 100
    n = len(x) // f
    if n == 0:
        return []
    rms = np.sqrt((x[: n * f].reshape(n, f).astype(np.float64) ** 2).mean(axis=1))
    db = 20.0 * np.log10(np.maximum(rms, 1e-10) / max(float(rms.max()), 1e-10))
    active = db > ACTIVE_DB
    segs: list[list[int]] = []  # [start, end) in 10-ms frames
    for i in range(n):
        if not active[i]:
            continue
        if segs and i - segs[-1][1] < MERGE_FRAMES:
            segs[-1][1] = i + 1
        else:
            segs.append([i, i + 1])
    return [offset_s + e / 100.0 for s, e in segs if e - s >= MIN_FRAMES]


def build_timeline(quick: bool) -> tuple[NDArray[np.float32], list[float]]:
    pieces = [EXAMPLES / "voice-note.wav"] + ([] if quick else example_clips())
    parts: list[NDArray[np.float32]] = [np.zeros(SAMPLE_RATE, dtype=np.float32)]
    ends: list[float] = []
    t = 1.0
    for p in pieces:
        x = read_wav(p)
        ends += speech_ends(x, t)
        parts += [x, np.zeros(int(GAP_S * SAMPLE_RATE), dtype=np.float32)]
        t += len(x) / SAMPLE_RATE + GAP_S
    return np.concatenate(parts), ends


@dataclass
class DaemonRun:
    rc: int | None = None
    anchor: float | None = None  # monotonic time of "playing <file>"
    lines: list[tuple[float, str]] = field(default_factory=list)
    rss: list[tuple[float, int]] = field(default_factory=list)
    cpu: list[tuple[float, float]] = field(default_factory=list)  # (t, user+system seconds)

    def cpu_between(self, a: float, b: float) -> float | None:
        pa = next((c for c in self.cpu if c[0] >= a), None)
        pb = next((c for c in reversed(self.cpu) if c[0] <= b), None)
        if pa is None or pb is None or pb[0] - pa[0] < 0.5:
            return None
        return 100.0 * (pb[1] - pa[1]) / (pb[0] - pa[0])

    def last_error(self) -> str:
        text = [ln for _, ln in self.lines if ln.strip()]
        return text[-1][:240] if text else "no output"


def write_daemon_config(path: Path, wav: Path, model: Path, port: int, *, realtime: bool = True,
                        loop: bool = False, device_id: str = "bench", stats_s: float = 5.0,
                        level: str = "INFO") -> None:
    """A config for ``edge-ser run``: ``wav`` as a file source, ``model`` on 1 thread, the
    broker on 127.0.0.1:``port`` (topics ``edge-ser/<device_id>/...``)."""
    cfg = {
        "source": {"type": "file", "path": str(wav.resolve()), "realtime": realtime,
                   "loop": loop},
        "model": {"path": str(model.resolve()), "threads": 1},
        "mqtt": {"host": "127.0.0.1", "port": port, "device_id": device_id, "prefix": "edge-ser",
                 "stats_interval_s": stats_s},
        "logging": {"level": level},
    }
    path.write_text(json.dumps(cfg, indent=1), encoding="utf-8")  # JSON is YAML


def spawn_daemon(config: Path) -> subprocess.Popen[str]:
    """``edge-ser run --config CONFIG`` from this checkout, stderr piped (text), stdout dropped."""
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), env.get("PYTHONPATH", "")) if p)
    return subprocess.Popen([sys.executable, "-m", "edge_ser", "run", "--config", str(config)],
                            cwd=str(REPO), env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)


def stop_daemon(proc: subprocess.Popen[str]) -> None:
    """SIGTERM (the service's stop), then a kill if it has not exited 10 s later."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def run_daemon(config: Path, wav: Path, timeout_s: float) -> DaemonRun:
    import psutil

    proc = spawn_daemon(config)
    run = DaemonRun()

    def read() -> None:
        assert proc.stderr is not None
        for line in proc.stderr:
            now = time.monotonic()
            run.lines.append((now, line.rstrip()))
            if run.anchor is None and "playing" in line and wav.name in line:
                run.anchor = now

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    ps = psutil.Process(proc.pid)
    deadline = time.monotonic() + timeout_s
    try:
        while proc.poll() is None and time.monotonic() < deadline:
            try:
                ct = ps.cpu_times()
                now = time.monotonic()
                run.cpu.append((now, ct.user + ct.system))
                run.rss.append((now, int(ps.memory_info().rss)))
            except psutil.Error:
                pass
            time.sleep(0.2)
    finally:
        stop_daemon(proc)
    reader.join(timeout=5)
    run.rc = proc.returncode
    log_path = config.with_suffix(".log")
    log_path.write_text("\n".join(ln for _, ln in run.lines) + "\n", encoding="utf-8")
    return run


def _model(variants: list[Variant]) -> Variant | None:
    """The shipped int8 model (the daemon's default) when measured, else the first ONNX one."""
    usable = [v for v in variants if v.kind == "onnx" and not v.skipped]
    return next((v for v in usable if v.name == "shipped-int8"), usable[0] if usable else None)


def daemon_missing() -> str | None:
    if importlib.util.find_spec("edge_ser.daemon") is None:
        return "the daemon (edge_ser.daemon) is not in this checkout yet"
    return mosquitto_missing()


def measure_e2e(variants: list[Variant], runs: Runs) -> dict[str, Any]:
    s = runs.settings
    missing = daemon_missing()
    v = _model(variants)
    if missing or v is None or v.path is None:
        return {"status": "skipped", "reason": missing or "no ONNX model to run the daemon with"}
    work = s.out / "work"
    work.mkdir(parents=True, exist_ok=True)
    audio, ends = build_timeline(s.quick)
    speech_wav, silent_wav = work / "e2e-speech.wav", work / "e2e-silence.wav"
    write_wav(speech_wav, audio)
    idle_len = s.e2e_idle_s + IDLE_SETTLE_S + 1.0
    write_wav(silent_wav, np.zeros(int(idle_len * SAMPLE_RATE), dtype=np.float32))
    out: dict[str, Any] = {"model": v.name, "anchor": "the file source's 'playing' log line",
                           "source": "file, real time", "threads": q(1, "count")}
    with Broker() as broker:
        rec = Recorder(broker.host, broker.port, "edge-ser/bench/#")
        rec.start()
        try:
            cfg = work / "e2e-speech.yaml"
            write_daemon_config(cfg, speech_wav, v.path, broker.port)
            run = run_daemon(cfg, speech_wav, len(audio) / SAMPLE_RATE + 60.0)
            time.sleep(0.5)
            events = rec.on("/emotion")
            topics = sorted({m.topic for m in rec.messages})
            cfg_idle = work / "e2e-idle.yaml"
            write_daemon_config(cfg_idle, silent_wav, v.path, broker.port)
            idle = run_daemon(cfg_idle, silent_wav, idle_len + 60.0)
        finally:
            rec.stop()
    if run.anchor is None:
        return {**out, "status": "failed",
                "reason": f"daemon exited {run.rc} before playing: {run.last_error()}"}
    latencies: list[float] = []
    unmatched = 0
    for m in events:
        try:
            end_s = float(json.loads(m.payload)["end_s"])
        except (ValueError, KeyError, TypeError):
            unmatched += 1
            continue
        true_end = max((e for e in ends if e <= end_s + END_TOLERANCE_S), default=None)
        if true_end is None:
            unmatched += 1
            continue
        latencies.append(m.t - (run.anchor + true_end))
    rss = [r / MIB for _, r in run.rss]
    out["status"] = "ok"
    out["speech"] = {
        "audio": q(len(audio) / SAMPLE_RATE, "s", 2),
        "speech_ends_in_file": q(len(ends), "count"),
        "events": q(len(events), "count"),
        "events_unmatched": q(unmatched, "count"),
        "latency_p50": q(percentile(latencies, 50) if latencies else None, "s", 3),
        "latency_p95": q(percentile(latencies, 95) if latencies else None, "s", 3),
        "latency_max": q(max(latencies) if latencies else None, "s", 3),
        "latencies": series(latencies, "s", 3),
        "daemon_rss_peak": q(max(rss) if rss else None, "MiB", 1),
        "daemon_rss_steady": q(percentile(rss[len(rss) // 2:], 50) if rss else None, "MiB", 1),
        "daemon_exit_code": q(run.rc, "exit status"),
        "topics_seen": topics,
    }
    if idle.anchor is None:
        out["idle"] = {"status": "failed", "reason": idle.last_error()}
    else:
        a = idle.anchor + IDLE_SETTLE_S
        irss = [r / MIB for t, r in idle.rss if t >= a]
        out["idle"] = {
            "status": "ok",
            "cpu": q(idle.cpu_between(a, a + s.e2e_idle_s), "% of one core", 2),
            "window": q(s.e2e_idle_s, "s"),
            "rss": q(percentile(irss, 50) if irss else None, "MiB", 1),
            "audio": "digital silence",
        }
    return out


def main(argv: list[str] | None = None) -> int:
    from benchmarks.suite import run_sections

    return run_sections(["e2e"], argv, prog="python -m benchmarks.e2e", doc=__doc__)


if __name__ == "__main__":
    raise SystemExit(main())
