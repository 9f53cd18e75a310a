"""The project's targets, the cost of each model at continuous speech, and the "fits / does not
fit" verdicts, all computed from a report dict."""

from __future__ import annotations

from typing import Any

from benchmarks.units import fmt, q, val

IDLE_LIMIT_PCT = 2.0
EVENT_P95_LIMIT_S = 1.0
RSS_LIMIT_MIB = 150.0
SIZE_LIMIT_MB = 24.0
TORCH_SPEEDUP = 1.5
AGREEMENT_PCT = 99.0


def _get(d: Any, *keys: str) -> Any:
    for k in keys:
        if not isinstance(d, dict):
            return None
        d = d.get(k)
    return d


def _row(tid: str, text: str, measured: Any, limit: Any, ok: bool | None, note: str = "") -> dict[
        str, Any]:
    return {"id": tid, "target": text, "measured": measured, "limit": limit, "pass": ok,
            "note": note}


def _cmp(measured: Any, limit: float, le: bool) -> bool | None:
    v = val(measured)
    if v is None:
        return None
    return v <= limit if le else v >= limit


def _why(report: dict[str, Any], section: str, model: str | None = None) -> str:
    sec = report.get(section) or {}
    if not sec:
        return f"{section} not run"
    if model is not None:
        m = _get(sec, "models", model) or {}
        if m.get("status") not in (None, "ok"):
            return f"{model} {m.get('status')}: {m.get('reason')}"
    if sec.get("status") not in (None, "ok"):
        return f"{section} {sec.get('status')}: {sec.get('reason')}"
    return ""


def _min_ratio(report: dict[str, Any], key: str) -> Any:
    ratios = _get(report, "latency", "ratios") or {}
    values = [val(r.get(key)) for t, r in ratios.items() if t.isdigit()]
    known = [v for v in values if v is not None]
    return q(min(known) if known else None, "x", 3)


def _rss_row(report: dict[str, Any], default_arena: bool) -> dict[str, Any]:
    """DistilHuBERT int8 peak RSS in ``model.low_memory`` mode, with the price stated beside it:
    the default setting's peak and both median latencies (all from the RAM children)."""
    ram = _get(report, "ram", "models", "distilhubert-int8") or {}
    default_key = "arena_on" if default_arena else "arena_off"
    low, default = ram.get("low_memory") or {}, ram.get(default_key) or {}
    peak = low.get("peak")
    note = _why(report, "ram", "distilhubert-int8")
    if not note and low:
        note = (f"default config (arena {'on' if default_arena else 'off'}): peak "
                f"{fmt(default.get('peak'), 0)}; median per window {fmt(low.get('median_latency'))}"
                f" in low-memory mode vs {fmt(default.get('median_latency'))} by default")
    return _row("distilhubert_rss", "DistilHuBERT int8 peak RSS <= 150 MiB (fresh process, 1 "
                "thread, model.low_memory: true)", peak, q(RSS_LIMIT_MIB, "MiB"),
                _cmp(peak, RSS_LIMIT_MIB, True), note)


def evaluate_targets(report: dict[str, Any], default_arena: bool = True) -> list[dict[str, Any]]:
    lat = report.get("latency") or {}
    rows: list[dict[str, Any]] = []
    size = _get(lat, "models", "distilhubert-int8", "file_size")
    rows.append(_row("distilhubert_int8_size", "DistilHuBERT int8 file <= 24 MB", size,
                     q(SIZE_LIMIT_MB, "MB"), _cmp(size, SIZE_LIMIT_MB, True),
                     _why(report, "latency", "distilhubert-int8")))
    r = _min_ratio(report, "distilhubert_int8_speedup_vs_fp32")
    rows.append(_row("int8_not_slower", "DistilHuBERT int8 not slower than its fp32 ONNX "
                     "(fp32/int8 median, worst thread count)", r, q(1.0, "x"),
                     _cmp(r, 1.0, False), _why(report, "latency", "distilhubert-fp32")))
    r = _min_ratio(report, "distilhubert_int8_speedup_vs_torch")
    rows.append(_row("int8_vs_torch", "DistilHuBERT int8 >= 1.5x faster than PyTorch eager "
                     "(worst thread count)", r, q(TORCH_SPEEDUP, "x"),
                     _cmp(r, TORCH_SPEEDUP, False), _why(report, "latency", "distilhubert-torch")))
    exported = _get(report, "build", "distilhubert", "int8_vs_fp32")
    if exported:  # the exporter's own check: more windows than the benchmark runs
        agree, n = exported.get("argmax_agreement"), val(exported.get("windows"))
        src = (f"{n:.0f} windows checked by export_distilhubert; random weights (no pretrained "
               "DistilHuBERT here), which decide agreement: not a real model's figure")
    else:
        agree = _get(lat, "agreement", "distilhubert", "argmax_agreement")
        n = val(_get(lat, "agreement", "distilhubert", "windows"))
        src = f"{n:.0f} benchmark windows" if n else _why(report, "latency", "distilhubert-int8")
    rows.append(_row("int8_agreement", "DistilHuBERT int8/fp32 argmax agreement >= 99 % on real "
                     "speech", agree, q(AGREEMENT_PCT, "%"), _cmp(agree, AGREEMENT_PCT, False),
                     src))
    rows.append(_rss_row(report, default_arena))
    rows += _shipped_rows(report)
    idle = _get(report, "e2e", "idle", "cpu")
    rows.append(_row("idle_cpu", "Daemon idle on silence <= 2 % of one core", idle,
                     q(IDLE_LIMIT_PCT, "% of one core"), _cmp(idle, IDLE_LIMIT_PCT, True),
                     _why(report, "e2e")))
    p95 = _get(report, "e2e", "speech", "latency_p95")
    rows.append(_row("event_latency", "End of speech -> MQTT event p95 <= 1 s", p95,
                     q(EVENT_P95_LIMIT_S, "s"), _cmp(p95, EVENT_P95_LIMIT_S, True),
                     _why(report, "e2e")))
    return rows


def _shipped_rows(report: dict[str, Any]) -> list[dict[str, Any]]:
    """The shipped model's int8 file against its fp32 twin: agreement on real speech, speed."""
    enc = _get(report, "variants", "shipped-int8", "encoder") or "default"
    lat = report.get("latency") or {}
    ag = _get(lat, "agreement", "shipped") or {}
    if ag.get("status") == "ok":
        note = (f"{fmt(ag.get('windows'))} windows of real speech from {ag.get('source')}; "
                f"{fmt(ag.get('disagreements'))} disagree")
        worst = sorted(((val(c.get("argmax_agreement")), k) for k, c in
                        (ag.get("by_corpus") or {}).items() if val(c.get("argmax_agreement"))
                        is not None))
        if len(worst) > 1:
            note += f"; lowest on {worst[0][1]} ({worst[0][0]:.1f} %)"
    elif ag:
        note = f"agreement {ag.get('status')}: {ag.get('reason')}"
    else:
        note = (_why(report, "latency", "shipped-int8") or _why(report, "latency", "shipped-fp32")
                or "needs shipped-int8 and shipped-fp32 in --models")
    agree = ag.get("argmax_agreement") if ag.get("status") == "ok" else None
    rows = [_row("shipped_int8_agreement", f"Shipped model ({enc}) int8/fp32 argmax agreement "
                 ">= 99 % on real speech", agree, q(AGREEMENT_PCT, "%"),
                 _cmp(agree, AGREEMENT_PCT, False), note)]
    r = _min_ratio(report, "shipped_int8_speedup_vs_fp32")
    rows.append(_row("shipped_int8_not_slower", f"Shipped model ({enc}) int8 not slower than its "
                     "fp32 twin (fp32/int8 median, worst thread count)", r, q(1.0, "x"),
                     _cmp(r, 1.0, False), _why(report, "latency", "shipped-int8")
                     or _why(report, "latency", "shipped-fp32")))
    return rows


def continuous_speech(report: dict[str, Any]) -> dict[str, Any]:
    """Per model, on 1 thread: what one window every window length costs (real-time factor,
    share of one core, FLOPs) and the int8/fp32 agreement of its family (figures with units)."""
    lat = report.get("latency") or {}
    out: dict[str, Any] = {}
    for name, m in (lat.get("models") or {}).items():
        st = _get(m, "threads", "1") or {}
        if m.get("status") != "ok" or not st:
            out[name] = {"status": m.get("status"), "reason": m.get("reason")}
            continue
        ag = _get(lat, "agreement", str(m.get("family"))) or {}
        exported = _get(report, "build", "distilhubert", "int8_vs_fp32")
        if m.get("family") == "distilhubert" and exported:  # the exporter's larger check
            ag = {"status": "ok", **exported}
        if m.get("kind") != "onnx":  # PyTorch eager has no int8 twin
            ag = {}
        out[name] = {
            "status": "ok", "encoder": m.get("encoder"), "precision": m.get("precision"),
            "window": m.get("window"), "flops_per_window": m.get("flops_per_window"),
            "latency_mean": st.get("mean"), "rtf": st.get("rtf"),
            "core_share": st.get("core_share"),
            "int8_fp32_agreement": ag.get("argmax_agreement") if ag.get("status") == "ok"
            else q(None, "%"),
            "agreement_windows": ag.get("windows") if ag.get("status") == "ok"
            else q(None, "count"),
        }
    return {"threads": q(1, "count"), "models": out,
            "meaning": "rtf: mean processing time per window / window length; core_share: mean "
                       "CPU time per window / window length (one window every window length)"}


def _daemon_overhead(report: dict[str, Any]) -> float | None:
    """MiB the daemon adds to a bare model process: its e2e peak minus the RAM child's peak
    for the model the daemon ran, or None when either was not measured."""
    e2e = report.get("e2e") or {}
    daemon = val(_get(e2e, "speech", "daemon_rss_peak"))
    bare = val(_get(report, "ram", "models", str(e2e.get("model")), "arena_on", "peak"))
    if e2e.get("status") != "ok" or daemon is None or bare is None:
        return None
    return max(0.0, daemon - bare)


def duty_verdicts(report: dict[str, Any], rss_budget_mib: float) -> list[dict[str, Any]]:
    """One 8-s window every 8 s of continuous speech on 1 thread, inside the memory budget."""
    out: list[dict[str, Any]] = []
    models = _get(report, "latency", "models") or {}
    overhead = _daemon_overhead(report)
    for name, m in models.items():
        duty = (f"{name}: one {val(m.get('window')) or 8:g}-s window every "
                f"{val(m.get('window')) or 8:g} s of continuous speech, 1 thread, "
                f"peak RSS within the {rss_budget_mib:g} MiB budget")
        st = _get(m, "threads", "1")
        if m.get("status") != "ok" or not st:
            out.append({"duty": duty, "verdict": "unknown",
                        "reason": f"{m.get('status')}: {m.get('reason')}"})
            continue
        p99 = val(st.get("p99"))
        if p99 is None:
            out.append({"duty": duty, "verdict": "unknown", "reason": "no window was timed"})
            continue
        budget_ms = (val(m.get("window")) or 8.0) * 1000.0
        ram = _get(report, "ram", "models", name) or {}
        peak = val(_get(ram, "arena_on", "peak")) or val(_get(ram, "eager", "peak"))
        reasons = [f"p99 {p99:.0f} ms = {100 * p99 / budget_ms:.1f} % of the "
                   f"{budget_ms / 1000:g}-s window"]
        share = val(st.get("core_share"))
        if share is not None:
            reasons[0] += f"; {share:.2g} % of one core at continuous speech"
        fits = p99 < budget_ms
        if peak is not None and overhead is not None:  # the budget is the daemon's
            daemon = peak + overhead
            reasons.append(f"peak RSS {peak:.0f} MiB in a bare process, about {daemon:.0f} MiB "
                           f"as the daemon (+{overhead:.0f} MiB measured end to end) vs "
                           f"{rss_budget_mib:g} MiB")
            fits = fits and daemon <= rss_budget_mib
        elif peak is not None:
            reasons.append(f"peak RSS {peak:.0f} MiB in a bare process (the daemon adds its own "
                           f"parts; e2e not measured) vs {rss_budget_mib:g} MiB")
            fits = fits and peak <= rss_budget_mib
        else:  # half the duty unmeasured: "unknown" unless the other half already fails
            reasons.append("RSS not measured")
        verdict = ("does not fit" if not fits else "fits" if peak is not None else "unknown")
        out.append({"duty": duty, "verdict": verdict, "reason": "; ".join(reasons)})
    e2e = report.get("e2e") or {}
    if e2e.get("status") == "ok":
        p95 = _get(e2e, "speech", "latency_p95")
        idle = _get(e2e, "idle", "cpu")
        checks = (_cmp(p95, EVENT_P95_LIMIT_S, True), _cmp(idle, IDLE_LIMIT_PCT, True))
        verdict = ("unknown" if None in checks else  # not measured is not "does not fit"
                   "fits" if all(checks) else "does not fit")
        out.append({"duty": f"daemon with {e2e.get('model')}: event within 1 s of the end of "
                            "speech (p95), idle <= 2 % of a core on silence",
                    "verdict": verdict,
                    "reason": f"p95 {fmt(p95, 2)}, idle {fmt(idle, 2)}"})
    th = report.get("thermal") or {}
    if th.get("status") == "ok":
        throttled = th.get("throttled")
        verdict = "unknown" if throttled is None else ("does not fit" if throttled else "fits")
        steady = val(th.get("steady_temp"))
        if throttled is not None:
            reason = f"{th.get('throttle_method')}; steady {fmt(th.get('steady_temp'))}"
        elif steady is not None:
            reason = (f"steady {fmt(th.get('steady_temp'))}, but no throttle flags and no CPU "
                      "frequency with its rating to tell throttling")
        else:
            reason = "no temperature, frequency or throttle sensor on this machine"
        out.append({"duty": f"{th.get('model')} back to back on {val(th.get('threads')):.0f} "
                            f"thread(s) for {val(th.get('duration')):g} s without throttling",
                    "verdict": verdict, "reason": reason})
    return out
