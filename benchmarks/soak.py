"""Soak: the daemon over many hours of speech, to show that its memory and handles stay flat.

The daemon (the shipped int8 model, Whisper tiny.en encoder + head, one thread) plays
examples/voice-note.wav in a loop as fast as it can and publishes to a real mosquitto on
127.0.0.1, where a subscriber counts the events. Every window goes through the whole pipeline
(VAD, windows, model, aggregation, MQTT), at about 180-200x real time on the development VM, so
the default 10 minutes are over a day of speech.
Every 5 seconds (1 with ``--quick``): the daemon's RSS, USS, open file descriptors and threads,
and the audio it has processed (``stream_s`` of its stats topic). The verdict compares the end
of the run (median of its last 10 %) with the end of the warm-up (median of 20-30 % into it).

``python -m benchmarks.soak [--quick] [--minutes M] [--out DIR]`` writes soak.json (every figure
with its unit) and soak.md; ``--quick`` (20 s) is what the test command runs.
"""

from __future__ import annotations

import argparse
import json
import logging
import subprocess
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from benchmarks import EXAMPLES, REPO
from benchmarks.broker import Broker, Recorder, mosquitto_missing
from benchmarks.e2e import spawn_daemon, stop_daemon, write_daemon_config
from benchmarks.options import make_out_dir
from benchmarks.units import percentile, q
from benchmarks.variants import MODEL_FILES
from edge_ser.errors import ConfigError

log = logging.getLogger(__name__)
MIB = float(2**20)
WAV = EXAMPLES / "voice-note.wav"
MODEL = MODEL_FILES["shipped-int8"]
DEVICE_ID = "soak"
#: "flat": RSS grew by at most this many MiB, or this share of the warm RSS, whichever is more
#: (the page cache moves file-backed pages by some MiB), and no fds or threads were added.
FLAT_MIB = 4.0
FLAT_SHARE = 0.03
#: Growth rates are given only when the marks are this far apart, in seconds of running: over a
#: quick run's 14 s, 1 MiB of late warm-up would read as hundreds of MiB per hour.
RATE_MIN_SPAN_S = 300.0


@dataclass
class Sample:
    t: float  # seconds since the daemon started
    rss_mib: float
    uss_mib: float
    fds: int
    threads: int
    audio_s: float | None  # stream time the daemon had processed (its last stats message)


def _median(xs: list[float]) -> float | None:
    return percentile(xs, 50) if xs else None


def summarize(samples: list[Sample], wall_s: float) -> dict[str, Any]:
    """The soak's figures and verdict from its samples (pure: tested on made-up series)."""
    warm = [s for s in samples if 0.2 * wall_s <= s.t <= 0.3 * wall_s]
    end = [s for s in samples if s.t >= 0.9 * wall_s]
    if not warm or not end:
        return {"verdict": "unknown", "reason": f"too few samples ({len(samples)}) to compare "
                "the end of the run with the end of its warm-up"}
    warm_audio = [s.audio_s for s in warm if s.audio_s is not None]
    end_audio = [s.audio_s for s in end if s.audio_s is not None]
    span_audio = 0.0
    if warm_audio and end_audio:  # medians, as for RSS, so the rates below match
        span_audio = (_median(end_audio) or 0.0) - (_median(warm_audio) or 0.0)
    span_wall = (_median([s.t for s in end]) or 0.0) - (_median([s.t for s in warm]) or 0.0)
    rss_warm = _median([s.rss_mib for s in warm]) or 0.0
    rss_end = _median([s.rss_mib for s in end]) or 0.0
    uss_warm, uss_end = _median([s.uss_mib for s in warm]), _median([s.uss_mib for s in end])
    growth = rss_end - rss_warm
    allowed = max(FLAT_MIB, FLAT_SHARE * rss_warm)
    # a leak keeps what it took: compare the fewest at the end with the most after warm-up
    fds_added = max(0, min(s.fds for s in end) - max(s.fds for s in warm))
    threads_added = max(0, min(s.threads for s in end) - max(s.threads for s in warm))
    problems = []
    if growth > allowed:
        problems.append(f"RSS grew by {growth:.1f} MiB (allowed {allowed:.1f})")
    if fds_added > 0:
        problems.append(f"{fds_added} more open file descriptors")
    if threads_added > 0:
        problems.append(f"{threads_added} more threads")
    if problems:
        verdict, reason = "growing", "; ".join(problems)
    elif span_audio <= 0:  # level memory proves nothing if no audio went through
        verdict, reason = "unknown", "no audio was processed between the two marks"
    else:
        verdict = "flat"
        reason = f"RSS moved {growth:+.1f} MiB (allowed {allowed:.1f}); no fds or threads added"
    audio = [s.audio_s for s in samples if s.audio_s is not None]
    rated = span_wall >= RATE_MIN_SPAN_S and span_audio > 0
    return {
        "verdict": verdict, "reason": reason,
        "rss_warm": q(rss_warm, "MiB", 1), "rss_end": q(rss_end, "MiB", 1),
        "rss_growth": q(growth, "MiB", 1), "rss_growth_allowed": q(allowed, "MiB", 1),
        "rss_growth_per_wall_hour": q(growth / span_wall * 3600 if rated else None, "MiB/h", 1),
        "rss_growth_per_audio_day": q(growth / span_audio * 86400 if rated else None,
                                      "MiB per 24 h of audio", 2),
        "rss_peak": q(max(s.rss_mib for s in samples), "MiB", 1),
        "uss_warm": q(uss_warm, "MiB", 1), "uss_end": q(uss_end, "MiB", 1),
        "fds_added": q(fds_added, "count"), "threads_added": q(threads_added, "count"),
        "audio_processed": q(max(audio) / 3600.0 if audio else None, "h", 2),
        "audio_between_warm_and_end": q(span_audio / 3600.0, "h", 2),
    }


def _stats(rec: Recorder) -> dict[str, Any]:
    got = rec.latest(f"edge-ser/{DEVICE_ID}/stats")
    try:
        return dict(json.loads(got.payload)) if got is not None else {}
    except ValueError:
        return {}


def soak(duration_s: float, every_s: float, out: Path) -> dict[str, Any]:
    import psutil

    missing = mosquitto_missing()
    if missing:
        return {"status": "skipped", "reason": missing}
    make_out_dir(out)
    samples: list[Sample] = []
    problems: list[str] = []
    with Broker() as broker:
        rec = Recorder(broker.host, broker.port, f"edge-ser/{DEVICE_ID}/#", keep=False)
        rec.start()
        cfg = out / "soak.yaml"
        write_daemon_config(cfg, WAV, MODEL, broker.port, realtime=False, loop=True,
                            device_id=DEVICE_ID, stats_s=every_s,
                            level="WARNING")  # stderr then holds only problems
        t0 = time.monotonic()
        proc: subprocess.Popen[str] | None = None
        reader: threading.Thread | None = None
        try:
            proc = spawn_daemon(cfg)
            stderr = proc.stderr
            reader = threading.Thread(target=lambda: problems.extend(
                ln.rstrip() for ln in stderr or [] if ln.strip()), daemon=True)
            reader.start()
            ps = psutil.Process(proc.pid)
            while proc.poll() is None and time.monotonic() - t0 < duration_s:
                time.sleep(every_s)
                try:
                    mem = ps.memory_full_info()
                    audio = _stats(rec).get("stream_s")
                    samples.append(Sample(round(time.monotonic() - t0, 2), mem.rss / MIB,
                                          mem.uss / MIB, ps.num_fds(), ps.num_threads(),
                                          float(audio) if audio is not None else None))
                except psutil.Error:
                    break
        finally:
            wall_s = time.monotonic() - t0
            if proc is not None:
                stop_daemon(proc)
            if reader is not None:
                reader.join(timeout=5)
            time.sleep(0.3)
            rec.stop()
    stats = _stats(rec)
    received = rec.counts[f"edge-ser/{DEVICE_ID}/emotion"]
    ran = proc.returncode == 0 and wall_s >= 0.9 * duration_s
    result: dict[str, Any] = {
        "status": "ok" if ran and received > 0 else "failed",
        "model": MODEL.name, "audio": f"{WAV.name}, looped, as fast as possible",
        "wall": q(wall_s, "s", 1), "sample_every": q(every_s, "s", 1),
        "daemon_exit_code": proc.returncode,
        "events_received": q(received, "count"),
        "events_by_daemon": q(stats.get("events"), "count"),
        "audio_dropped": q(stats.get("audio_dropped_s"), "s", 2),
        "daemon_stderr": problems[-20:],
        **summarize(samples, wall_s),
        "samples": [asdict(s) for s in samples],
    }
    if result["status"] == "failed":  # a run that did not run is not judged
        why = problems[-1] if problems else "no message"
        result["verdict"] = "unknown"
        result["reason"] = (f"daemon exited {proc.returncode} after {wall_s:.0f} s: {why}"
                            if not ran else "no event reached the subscriber")
    (out / "soak.json").write_text(json.dumps(result, indent=1) + "\n", encoding="utf-8")
    (out / "soak.md").write_text(render(result), encoding="utf-8")
    return result


def _v(fig: Any) -> str:
    """A figure as "133.2 MiB": units.fmt rounds figures of 100 and more to whole numbers, and
    the soak's RSS comparison needs its tenths."""
    if isinstance(fig, dict) and "value" in fig:
        if fig["value"] is None:
            return "n/a"
        return str(fig["value"]) if fig["unit"] == "count" else f"{fig['value']} {fig['unit']}"
    return str(fig)


def render(r: dict[str, Any]) -> str:
    rows = [("verdict", f"**{r.get('verdict', r['status'])}**: {r.get('reason', '')}"),
            ("run", f"{_v(r['wall'])} of {r['audio']}, exit code {r['daemon_exit_code']}"),
            ("audio processed", f"{_v(r.get('audio_processed'))} ("
             f"{_v(r.get('audio_between_warm_and_end'))} between the warm and the end mark)"),
            ("RSS warm / end / peak", f"{_v(r.get('rss_warm'))} / {_v(r.get('rss_end'))} / "
                                      f"{_v(r.get('rss_peak'))}"),
            ("RSS growth per hour of running / per 24 h of audio",
             f"{_v(r.get('rss_growth_per_wall_hour'))} / {_v(r.get('rss_growth_per_audio_day'))}"),
            ("USS warm / end", f"{_v(r.get('uss_warm'))} / {_v(r.get('uss_end'))}"),
            ("fds / threads added", f"{_v(r.get('fds_added'))} / {_v(r.get('threads_added'))}"),
            ("events received / counted by the daemon",
             f"{_v(r['events_received'])} / {_v(r['events_by_daemon'])}"),
            ("daemon warnings and errors", str(len(r["daemon_stderr"])))]
    lines = ["# edge-ser soak", "", "| figure | value |", "| --- | --- |"]
    lines += [f"| {k} | {v} |" for k, v in rows]
    lines += [""] + [f"    {ln}" for ln in r["daemon_stderr"]]
    return "\n".join(lines).rstrip() + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.soak", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true",
                    help="20 s, a sample every second (overrides --minutes)")
    ap.add_argument("--minutes", type=float, default=10.0, help="run length (default 10)")
    ap.add_argument("--out", type=Path, default=None,
                    help="output folder (default bench-out/soak or bench-out/soak-quick)")
    args = ap.parse_args(argv)
    logging.basicConfig(level="INFO", format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if not (0 < args.minutes <= 24 * 60):
        raise SystemExit(f"python -m benchmarks.soak: error: --minutes must be in (0, 1440], "
                         f"not {args.minutes}")
    duration = 20.0 if args.quick else 60.0 * args.minutes
    every = 1.0 if args.quick else 5.0
    out = args.out or REPO / "bench-out" / ("soak-quick" if args.quick else "soak")
    log.info("soak: %.0f s, writing %s", duration, out)
    try:
        r = soak(duration, every, out)
    except (ConfigError, OSError, RuntimeError) as exc:
        raise SystemExit(f"python -m benchmarks.soak: error: {exc}") from None
    if r["status"] == "skipped":
        print(f"soak skipped: {r['reason']}")
        return 0
    print(render(r), end="")
    return 0 if r["status"] == "ok" else 1


if __name__ == "__main__":
    raise SystemExit(main())
