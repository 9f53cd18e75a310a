"""Latency per 8-s window for each model variant and thread count, against the GEMM limit.

For every variant and 1..N threads: median, p95, p99 of the timed windows (after warm-up; the
first, cold window is reported apart), the real-time factor (mean processing time / window
length) and the share of one core at continuous speech (mean CPU time per window, every thread
of the process, / window length: one window every window length), FLOPs per window and the
share of this machine's float32 GEMM rate (numpy matmul, same thread count) that the latency
reaches. Ratios between variants are stated at equal threads. The int8 / fp32 argmax agreement
of each pair of real models is measured on real speech (:mod:`benchmarks.agreement`).
``python -m benchmarks.latency [--quick] [--out DIR] [--models ...] [--threads N]``.
"""

from __future__ import annotations

import logging
from typing import Any

from benchmarks.children import run_child
from benchmarks.flops import count_flops
from benchmarks.measure import DISTINCT_WINDOWS, Runs, Settings
from benchmarks.units import percentile, q, series, val
from benchmarks.variants import Variant

log = logging.getLogger(__name__)


def measure_gemm(settings: Settings) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for t in settings.threads:
        res = run_child(["gemm", "--size", str(settings.gemm_size),
                         "--repeats", str(settings.gemm_repeats)], t, 300.0)
        r = res.result
        out[str(t)] = {
            "rate": q(r.get("gflops") if res.ok else None, "GFLOP/s", 2),
            "size": q(settings.gemm_size, "count"),
            "blas": r.get("blas") if res.ok else f"failed: {res.error}",
        }
    return out


def _flops(v: Variant, flops_by_path: dict[str, dict[str, Any]]) -> dict[str, Any] | None:
    if v.kind != "onnx" or v.path is None or not v.path.is_file():
        return None
    key = str(v.path)
    if key not in flops_by_path:
        try:
            flops_by_path[key] = count_flops(v.path, int(round(v.window_s * 16000)))
        except Exception as exc:  # an unreadable graph: report, keep measuring time
            log.warning("%s: FLOPs not counted (%s)", v.path, exc)
            flops_by_path[key] = {"flops": None, "error": str(exc)}
    return flops_by_path[key]


def _thread_stats(res: dict[str, Any], window_s: float, flops: float | None,
                  gemm: float | None) -> dict[str, Any]:
    lat = [float(x) for x in res["latencies_ms"]]
    cpu = [float(x) for x in res.get("cpu_ms") or []]
    med = percentile(lat, 50)  # NaN when nothing was timed: every figure below is then None
    mean = sum(lat) / len(lat) if lat else None
    cpu_mean = sum(cpu) / len(cpu) if cpu else None
    achieved = flops / (med / 1000.0) / 1e9 if flops and med > 0 else None
    return {
        "median": q(med, "ms", 2),
        "p95": q(percentile(lat, 95), "ms", 2),
        "p99": q(percentile(lat, 99), "ms", 2),
        "mean": q(mean, "ms", 2),
        "min": q(min(lat) if lat else None, "ms", 2),
        "first_window": q(res.get("first_ms"), "ms", 2),
        # continuous speech: one window every window_s, so the means are what it costs
        "rtf": q(mean / 1000.0 / window_s if mean is not None else None, "s/s", 7),
        "cpu_per_window": q(cpu_mean, "ms", 2),
        "core_share": q(cpu_mean / 10.0 / window_s if cpu_mean is not None else None,
                        "% of one core", 3),
        "achieved": q(achieved, "GFLOP/s", 2),
        "gemm_share": q(100.0 * achieved / gemm if achieved and gemm else None, "%", 1),
        "samples": series(lat, "ms", 3),
        "windows": q(len(lat), "count"),
    }


def _ratio(a: Any, b: Any) -> dict[str, Any]:
    va, vb = val(a), val(b)
    return q(va / vb if va and vb else None, "x", 3)


def _ratios(models: dict[str, Any], threads: list[int]) -> dict[str, Any]:
    def med(name: str, t: int) -> Any:
        return models.get(name, {}).get("threads", {}).get(str(t), {}).get("median")

    out: dict[str, Any] = {}
    for t in threads:
        out[str(t)] = {
            "shipped_int8_speedup_vs_fp32": _ratio(med("shipped-fp32", t), med("shipped-int8", t)),
            "compact_int8_speedup_vs_fp32": _ratio(med("compact-fp32", t), med("compact-int8", t)),
            "distilhubert_int8_speedup_vs_fp32": _ratio(med("distilhubert-fp32", t),
                                                        med("distilhubert-int8", t)),
            "distilhubert_int8_speedup_vs_torch": _ratio(med("distilhubert-torch", t),
                                                         med("distilhubert-int8", t)),
            "distilhubert_fp32_onnx_speedup_vs_torch": _ratio(med("distilhubert-torch", t),
                                                              med("distilhubert-fp32", t)),
        }
    out["meaning"] = "X_speedup_vs_Y: how many times faster X is than Y (Y's median over X's)"
    return out


def _agreement(runs: Runs, variants: list[Variant]) -> dict[str, Any]:
    """Per family with an int8 and an fp32 file: real models on real speech
    (:func:`benchmarks.agreement.measure_agreement`); DistilHuBERT, whose random weights decide
    the figure, only on the latency windows (its exporter runs the larger check)."""
    from benchmarks.agreement import measure_agreement

    out: dict[str, Any] = {}
    by_family: dict[str, dict[str, Variant]] = {}
    for v in variants:
        if v.kind == "onnx" and not v.skipped:
            by_family.setdefault(v.family, {})[v.precision] = v
    for family, pair in by_family.items():
        if "int8" not in pair or "fp32" not in pair or family == "custom":
            continue
        if family != "distilhubert":
            out[family] = measure_agreement(runs, pair["int8"], pair["fp32"])
            continue
        a = runs.results.get((pair["int8"].name, 1, True, False))
        b = runs.results.get((pair["fp32"].name, 1, True, False))
        if not (a and b and a.ok and b.ok):
            continue
        n = min(DISTINCT_WINDOWS, len(a.result["argmax"]), len(b.result["argmax"]))
        same = sum(1 for i in range(n) if a.result["argmax"][i] == b.result["argmax"][i])
        out[family] = {"status": "ok", "argmax_agreement": q(100.0 * same / n if n else None,
                                                              "%", 1),
                       "windows": q(n, "count"), "source": "the latency windows (bundled clips)"}
    return out


def measure_latency(variants: list[Variant], runs: Runs) -> dict[str, Any]:
    s = runs.settings
    gemm = measure_gemm(s)
    flops_by_path: dict[str, dict[str, Any]] = {}
    models: dict[str, Any] = {}
    for v in variants:
        entry: dict[str, Any] = {
            "kind": v.kind, "family": v.family, "precision": v.precision,
            "encoder": v.encoder or None,
            "path": str(v.path) if v.path else None, "file_size": q(v.file_mb(), "MB", 2),
            "window": q(v.window_s, "s"), "notes": list(v.notes),
        }
        models[v.name] = entry
        if v.skipped:
            entry.update(status="skipped", reason=v.skipped)
            continue
        fl = _flops(v, flops_by_path)
        if fl is None and v.family == "distilhubert":
            twin = next((x for x in variants if x.name == "distilhubert-fp32" and not x.skipped),
                        None)
            fl = _flops(twin, flops_by_path) if twin else None
            if fl is not None:
                entry["notes"].append("FLOPs counted on the distilhubert-fp32 graph (same model)")
        flops = fl.get("flops") if fl else None
        entry["flops_per_window"] = q(flops / 1e9 if flops else None, "GFLOP", 4)
        if fl and fl.get("by_op"):
            entry["flops_by_op"] = {op: q(x / 1e9, "GFLOP", 4) for op, x in fl["by_op"].items()}
            entry["flops_nodes_unresolved"] = q(fl.get("nodes_unresolved", 0), "count")
        entry["threads"] = {}
        for t in s.threads:
            res = runs.get(v, t, True)
            if not res.ok:
                entry.update(status="failed", reason=res.error)
                break
            entry["runtime"] = res.result.get("runtime")
            entry["load_time"] = q(res.result.get("load_s"), "s", 3)
            entry["threads"][str(t)] = _thread_stats(
                res.result, v.window_s, flops, val(gemm[str(t)]["rate"]))
        else:
            entry["status"] = "ok"
    return {
        "settings": {"timed_windows": q(s.windows, "count"), "warmup_windows": q(s.warmup, "count"),
                     "threads": {"values": list(s.threads), "unit": "count"}, "arena": "on"},
        "gemm": gemm,
        "models": models,
        "ratios": _ratios(models, s.threads),
        "agreement": _agreement(runs, variants),
    }


def main(argv: list[str] | None = None) -> int:
    from benchmarks.suite import run_sections

    return run_sections(["latency"], argv, prog="python -m benchmarks.latency", doc=__doc__)


if __name__ == "__main__":
    raise SystemExit(main())
