"""Sustained load: temperature, frequency, throttle flags, RSS and CPU % every second.

One child runs windows of real speech back to back on all threads for the configured duration;
the parent samples the sensors (:mod:`benchmarks.sensors`) and the child (psutil) once a second.
Time to throttle comes from the Raspberry Pi throttle flags where the board has them, else from
the CPU frequency (below 90 % of the rated sustained frequency, ``base_frequency`` or else
cpuinfo_max_freq, for 3 consecutive samples); steady-state
temperature is the mean of the last third of the run. Without a sensor the report says
"no sensor". ``python -m benchmarks.thermal [--duration S] [--thermal-root DIR]``.
"""

from __future__ import annotations

import json
import logging
import time
from typing import Any

from benchmarks.children import Sample, run_child
from benchmarks.measure import Runs
from benchmarks.sensors import THROTTLE_NOW_MASK, SensorSample, make_sensors
from benchmarks.units import q, series
from benchmarks.variants import Variant

log = logging.getLogger(__name__)
MIB = float(2**20)
FREQ_CAP_SHARE = 0.9
FREQ_CAP_SAMPLES = 3
NO_THROTTLE_SENSOR = "no sensor"  # neither throttle flags nor a CPU frequency with its rating


def _pick(variants: list[Variant], wanted: str | None) -> Variant | None:
    usable = [v for v in variants if not v.skipped]
    if wanted:
        return next((v for v in usable if v.name == wanted), None)
    for name in ("shipped-int8", "distilhubert-int8"):
        v = next((x for x in usable if x.name == name), None)
        if v:
            return v
    return usable[0] if usable else None


def _throttle_time(ts: list[float], readings: list[SensorSample],
                   max_freq: float | None) -> tuple[float | None, str]:
    flags = [r.throttle_flags for r in readings]
    if any(f is not None for f in flags):
        for t, flag in zip(ts, flags, strict=True):
            if flag is not None and flag & THROTTLE_NOW_MASK:
                return t, "throttle flags (ARM capped / throttled / soft temp limit)"
        return None, "throttle flags: not throttled during the run"
    freqs = [min(r.freq_mhz) if r.freq_mhz else None for r in readings]
    if max_freq and any(f is not None for f in freqs):
        run = 0
        for i, f in enumerate(freqs):
            run = run + 1 if f is not None and f < FREQ_CAP_SHARE * max_freq else 0
            if run >= FREQ_CAP_SAMPLES:
                return ts[i - FREQ_CAP_SAMPLES + 1], (
                    f"frequency below {FREQ_CAP_SHARE:.0%} of {max_freq:.0f} MHz")
        return None, f"frequency: never below {FREQ_CAP_SHARE:.0%} of {max_freq:.0f} MHz"
    return None, NO_THROTTLE_SENSOR


def measure_thermal(variants: list[Variant], runs: Runs) -> dict[str, Any]:
    s = runs.settings
    sensors = make_sensors(s.thermal_root, s.cpu_root)
    out: dict[str, Any] = {"sensors": sensors.describe(), "duration": q(s.thermal_s, "s"),
                           "threads": q(s.max_threads, "count")}
    v = _pick(variants, s.thermal_model)
    if v is None:
        out.update(status="skipped", reason="no model to load the CPU with")
        return out
    out["model"] = v.name
    ts: list[float] = []
    readings: list[SensorSample] = []
    procs: list[Sample | None] = []
    t0 = time.monotonic()

    def tick(sample: Sample | None) -> None:
        ts.append(time.monotonic() - t0)
        readings.append(sensors.read())
        procs.append(sample)

    tick(None)  # the sensors before the load starts (no child yet: no RSS, no CPU)
    argv = ["load", "--spec", json.dumps(v.spec()), "--threads", str(s.max_threads),
            "--duration", str(s.thermal_s), "--windows-file", str(runs.windows_file(v.window_s))]
    res = run_child(argv, s.max_threads, s.thermal_s + 300.0, interval_s=1.0, on_tick=tick)
    if not res.ok:
        out.update(status="failed", reason=res.error)
        return out
    temps = [r.temp_c for r in readings]
    known = [x for x in temps if x is not None]
    third = known[-max(1, len(known) // 3):] if known else []
    t_throttle, how = _throttle_time(ts, readings, sensors.max_freq_mhz())
    freqs = [sum(r.freq_mhz) / len(r.freq_mhz) if r.freq_mhz else None for r in readings]
    out.update(
        status="ok",
        windows_run=q(res.result.get("windows"), "count"),
        time_to_throttle=q(t_throttle, "s", 1),
        throttle_method=how,
        throttled=None if how == NO_THROTTLE_SENSOR else t_throttle is not None,
        start_temp=q(known[0] if known else None, "°C", 1),
        max_temp=q(max(known) if known else None, "°C", 1),
        steady_temp=q(sum(third) / len(third) if third else None, "°C", 1),
        temperature_note="no sensor" if not known else "mean of the last third of the run",
        max_freq=q(sensors.max_freq_mhz(), "MHz", 0),
        samples={
            "t": series(ts, "s", 2),
            "temperature": series(temps, "°C", 2),
            "frequency": series(freqs, "MHz", 1),
            "rss": series([p.rss_bytes / MIB if p and p.rss_bytes else None for p in procs],
                          "MiB", 1),
            "cpu": series([p.cpu_pct if p else None for p in procs], "% of one core", 1),
            "throttle_flags": [None if r.throttle_flags is None else hex(r.throttle_flags)
                               for r in readings],
        },
    )
    return out


def main(argv: list[str] | None = None) -> int:
    from benchmarks.suite import run_sections

    return run_sections(["thermal"], argv, prog="python -m benchmarks.thermal", doc=__doc__)


if __name__ == "__main__":
    raise SystemExit(main())
