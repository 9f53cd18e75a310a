"""Resident memory of a fresh process per model: after load, after the first window, after N.

One child per model and setting, 1 thread: onnxruntime's CPU memory arena on, off, and
edge-ser's ``model.low_memory`` mode (arena off, no weight prepacking, large buffers returned to
the kernel when freed; its median latency per window is reported beside it, since it costs
speed).
``peak`` is the kernel's high-water mark (ru_maxrss) of the whole process: Python, numpy and
onnxruntime included (``start`` is that baseline, measured before the model is loaded);
``steady`` is the median RSS over the second half of the windows; ``growth`` is the change from
the first window to the last (flat = near 0). RSS over time is sampled by the parent every 50 ms.
``python -m benchmarks.ram [--quick] [--out DIR] [--models ...]``.
"""

from __future__ import annotations

import logging
from typing import Any

from benchmarks.measure import Runs
from benchmarks.units import percentile, q, series
from benchmarks.variants import Variant

log = logging.getLogger(__name__)
MIB = float(2**20)
#: the RAM settings, in report order: (key, arena, low_memory); torch has only "eager"
ONNX_SETTINGS = (("arena_on", True, False), ("arena_off", False, False),
                 ("low_memory", False, True))
RAM_SETTINGS = tuple(k for k, _, _ in ONNX_SETTINGS) + ("eager",)


def _figures(result: dict[str, Any], samples: list[Any]) -> dict[str, Any]:
    rss = result["rss_bytes"]
    trace = [x / MIB for x in result.get("rss_per_window_bytes", [])]
    half = trace[len(trace) // 2:] or trace
    return {
        "start": q(rss["start"] / MIB, "MiB", 1),
        "after_load": q(rss["after_load"] / MIB, "MiB", 1),
        "after_first_window": q(rss["after_first"] / MIB, "MiB", 1),
        "after_n_windows": q(rss["after_n"] / MIB, "MiB", 1),
        "peak": q(rss["peak"] / MIB, "MiB", 1),
        "steady": q(percentile(half, 50) if half else None, "MiB", 1),
        "growth": q((rss["after_n"] - rss["after_first"]) / MIB, "MiB", 2),
        "model_cost": q((rss["peak"] - rss["start"]) / MIB, "MiB", 1),
        "windows": q(len(trace), "count"),
        "median_latency": q(percentile(list(result.get("latencies_ms") or []), 50), "ms", 1),
        "timeline": {"t": series([s.t_s for s in samples], "s", 3),
                     "rss": series([s.rss_bytes / MIB for s in samples], "MiB", 2)},
    }


def measure_ram(variants: list[Variant], runs: Runs) -> dict[str, Any]:
    models: dict[str, Any] = {}
    for v in variants:
        entry: dict[str, Any] = {"kind": v.kind}
        models[v.name] = entry
        if v.skipped:
            entry.update(status="skipped", reason=v.skipped)
            continue
        settings = [("eager", True, False)] if v.kind == "torch" else list(ONNX_SETTINGS)
        entry["status"] = "ok"
        for key, arena, low_memory in settings:
            res = runs.get(v, 1, arena, low_memory)
            if not res.ok:
                entry.update(status="failed", reason=res.error)
                break
            entry[key] = _figures(res.result, res.samples)
    return {
        "settings": {"threads": q(1, "count"),
                     "windows": q(max(runs.settings.ram_windows, runs.settings.windows), "count"),
                     "process": "fresh Python process per model and setting"},
        "models": models,
    }


def main(argv: list[str] | None = None) -> int:
    from benchmarks.suite import run_sections

    return run_sections(["ram"], argv, prog="python -m benchmarks.ram", doc=__doc__)


if __name__ == "__main__":
    raise SystemExit(main())
