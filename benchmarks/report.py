"""report.json, report.md and the plots; ``python -m benchmarks.report report.json`` re-renders."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path
from typing import Any

from benchmarks.machine import was_busy
from benchmarks.plots import write_plots
from benchmarks.ram import RAM_SETTINGS
from benchmarks.targets import continuous_speech, duty_verdicts, evaluate_targets
from benchmarks.units import fmt, val

log = logging.getLogger(__name__)


def _table(head: list[str], rows: list[list[str]]) -> list[str]:
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return lines


def _machine(m: dict[str, Any]) -> list[str]:
    cores = val(m.get("usable_cores")) or 1.0
    load = val(m.get("load_average_start")) or 0.0  # the end's counts the benchmark itself
    busy = ([f"- **The machine was busy**: 1-min load average {load:.1f} on {cores:.0f} cores "
             f"before the run, other processes used {fmt(m.get('other_processes_cpu'))} on "
             "average during it; timings include contention with other work."]
            if was_busy(m) else [])
    return busy + [
        f"- CPU: {m.get('cpu_model')} ({m.get('arch')}), {fmt(m.get('logical_cores'))} logical "
        f"cores ({fmt(m.get('usable_cores'))} usable), "
        f"SIMD: {', '.join(m.get('simd_flags') or []) or 'none listed'}",
        f"- RAM: {fmt(m.get('ram_total'), 0)}; OS: {m.get('os')} (kernel {m.get('kernel')})",
        f"- Load average (1 min): {fmt(m.get('load_average_start'), 2)} at start, "
        f"{fmt(m.get('load_average_end'), 2)} at end",
        f"- Python {m.get('python')}, onnxruntime {m.get('onnxruntime')}, numpy {m.get('numpy')}, "
        f"torch {m.get('torch') or 'not installed'}",
    ]


def _summary(ratios: dict[str, Any]) -> list[str]:
    one = ratios.get("1") or {}
    said = [
        ("shipped_int8_speedup_vs_fp32", "shipped int8 vs its fp32 twin"),
        ("compact_int8_speedup_vs_fp32", "compact int8 vs its fp32 twin"),
        ("distilhubert_int8_speedup_vs_fp32", "DistilHuBERT int8 vs its fp32 ONNX"),
        ("distilhubert_int8_speedup_vs_torch", "DistilHuBERT int8 ONNX vs PyTorch eager"),
    ]
    out = [f"- {text}: **{fmt(one[k], 2)}** faster per window (1 thread)"
           for k, text in said if val(one.get(k)) is not None]
    return out or ["- no pair of variants to compare in this run"]


def _latency(lat: dict[str, Any]) -> list[str]:
    rows = []
    skipped = []
    for name, m in (lat.get("models") or {}).items():
        if m.get("status") != "ok":
            skipped.append(f"- **{name}**: {m.get('status')}: {m.get('reason')}")
            continue
        for t, st in m["threads"].items():
            rows.append([name, t, fmt(st.get("windows")), fmt(st["median"]), fmt(st["p95"]),
                         fmt(st["p99"]),
                         fmt(st["first_window"]), fmt(st["rtf"]),
                         fmt(m.get("flops_per_window"), 3), fmt(st["achieved"]),
                         fmt(st["gemm_share"]), fmt(m.get("file_size"), 1)])
    gemm = ", ".join(f"{t} thr {fmt(g['rate'])}" for t, g in (lat.get("gemm") or {}).items())
    out = _table(["model", "threads", "windows", "median", "p95", "p99", "first (cold)", "RTF",
                  "work/window", "achieved", "of GEMM limit", "file"], rows)
    out += ["", f"GEMM limit (numpy float32 matmul): {gemm}. RTF = mean latency / window "
            "length (below 1 keeps up). Timed windows exclude warm-up; 'first' is the cold "
            "first window after load. Each window is speech to its last sample. 'Work' counts "
            "Conv/MatMul/Gemm/LSTM FLOPs; int8 kernels (VNNI / dot-product instructions) can go "
            "past the float32 GEMM limit."]
    ratios = lat.get("ratios") or {}
    rrows = []
    for t, r in ratios.items():
        if not t.isdigit():
            continue
        for k, v in r.items():
            if val(v) is not None:
                rrows.append([t, k.replace("_", " "), fmt(v, 2)])
    out += ["", *_summary(ratios)]
    if rrows:
        out += ["", "All ratios at equal threads (A vs B = how many times faster A is):", ""]
        out += _table(["threads", "ratio", "value"], rrows)
    for fam, a in (lat.get("agreement") or {}).items():
        if a.get("status") != "ok":
            out += ["", f"int8 vs fp32 argmax agreement ({fam}): {a.get('status')}: "
                    f"{a.get('reason')}"]
            continue
        more = (" (this run's quick check on random weights; the target row above uses the "
                "exporter's larger check)" if fam == "distilhubert" else "")
        corpora = ", ".join(f"{k} {fmt(c.get('argmax_agreement'))} of {fmt(c.get('windows'))}"
                            for k, c in (a.get("by_corpus") or {}).items())
        out += ["", f"int8 vs fp32 argmax agreement ({fam}): {fmt(a['argmax_agreement'])} over "
                f"{fmt(a['windows'])} windows of real speech from {a.get('source')}{more}"
                + (f"; per corpus: {corpora}" if corpora else "")]
    if skipped:
        out += ["", "Not measured:", *skipped]
    return out


def _continuous(c: dict[str, Any]) -> list[str]:
    rows = []
    for name, m in (c.get("models") or {}).items():
        if m.get("status") != "ok":
            rows.append([name, "", "", f"{m.get('status')}: {m.get('reason')}", "", "", "", ""])
            continue
        agree = m.get("int8_fp32_agreement")
        rows.append([name, str(m.get("encoder") or ""), fmt(m.get("flops_per_window"), 3),
                     fmt(m.get("latency_mean")), fmt(m.get("rtf")), fmt(m.get("core_share"), 2),
                     (f"{fmt(agree)} ({fmt(m.get('agreement_windows'))} windows)"
                      if val(agree) is not None else "n/a")])
    return _table(["model", "encoder", "work/window", "mean latency", "real-time factor",
                   "share of one core", "int8/fp32 agreement"], rows) + [
        "", "One 8-s window of speech every 8 s on 1 thread: real-time factor = mean processing "
        "time / audio time (below 1 keeps up); share of one core = mean CPU time per window / "
        "window length (what is left of the core for everything else). Agreement: int8 and its "
        "fp32 twin pick the same class, on real speech (n/a without both files in --models; "
        "DistilHuBERT: random weights, its exporter's check)."]


def _ram(ram: dict[str, Any]) -> list[str]:
    rows = []
    for name, m in (ram.get("models") or {}).items():
        if m.get("status") != "ok":
            rows.append([name, "-", m.get("status", ""), "", "", "", "", "", "",
                         str(m.get("reason"))])
            continue
        for key in RAM_SETTINGS:
            f = m.get(key)
            if f:
                rows.append([name, key.replace("_", " "), fmt(f["start"], 0),
                             fmt(f["after_load"], 0), fmt(f["after_first_window"], 0),
                             fmt(f["after_n_windows"], 0), fmt(f["peak"], 0), fmt(f["steady"], 0),
                             fmt(f["growth"], 1), fmt(f.get("median_latency"))])
    return _table(["model", "setting", "start (runtime only)", "after load", "after 1st window",
                   "after N", "peak", "steady", "growth 1st->N", "median/window"], rows) + [
        "", f"Fresh process per row, 1 thread, {fmt((ram.get('settings') or {}).get('windows'))} "
        "windows; 'start' is Python + numpy + onnxruntime (or torch) before the model loads."]


def _thermal(th: dict[str, Any]) -> list[str]:
    if th.get("status") != "ok":
        return [f"{th.get('status')}: {th.get('reason')}"]
    sens = th.get("sensors") or {}
    steady = th.get("steady_temp")
    steady_text = fmt(steady) if val(steady) is not None else "no sensor"
    return [
        f"- Load: {th.get('model')} back to back on {fmt(th.get('threads'))} thread(s) for "
        f"{fmt(th.get('duration'))} ({fmt(th.get('windows_run'))} windows)",
        f"- Sensors: temperature {sens.get('temperature')}; frequency {sens.get('frequency')}; "
        f"throttle flags {sens.get('throttle')}",
        f"- Steady-state temperature: {steady_text} (start {fmt(th.get('start_temp'))}, max "
        f"{fmt(th.get('max_temp'))})",
        f"- Time to throttle: {fmt(th.get('time_to_throttle'))} ({th.get('throttle_method')})",
    ]


def _e2e(e: dict[str, Any]) -> list[str]:
    if e.get("status") != "ok":
        return [f"{e.get('status')}: {e.get('reason')}"]
    sp, idle = e.get("speech") or {}, e.get("idle") or {}
    return [
        f"- Daemon: `edge-ser run` on a file source at real time, model {e.get('model')}, "
        f"1 thread, a real mosquitto on 127.0.0.1; timeline anchored by {e.get('anchor')}",
        f"- End of speech -> MQTT event: p50 {fmt(sp.get('latency_p50'), 3)}, p95 "
        f"{fmt(sp.get('latency_p95'), 3)}, max {fmt(sp.get('latency_max'), 3)} over "
        f"{fmt(sp.get('events'))} events ({fmt(sp.get('events_unmatched'))} unmatched; "
        f"{fmt(sp.get('speech_ends_in_file'))} speech ends in {fmt(sp.get('audio'))} of audio)",
        f"- Daemon RSS while classifying: peak {fmt(sp.get('daemon_rss_peak'), 0)}, steady "
        f"{fmt(sp.get('daemon_rss_steady'), 0)}",
        f"- Idle on silence: {fmt(idle.get('cpu'), 2)} over {fmt(idle.get('window'))} "
        f"(RSS {fmt(idle.get('rss'), 0)})" if idle.get("status") == "ok"
        else f"- Idle on silence: {idle.get('status')}: {idle.get('reason')}",
    ]


def _few_samples(r: dict[str, Any]) -> str:
    """The quick run's caveat, with the sample counts its tails rest on."""
    counts = {val(st.get("windows")) for m in ((r.get("latency") or {}).get("models") or {})
              .values() if isinstance(m, dict) for st in (m.get("threads") or {}).values()}
    windows = ", ".join(f"{c:.0f}" for c in sorted(c for c in counts if c is not None))
    events = val(((r.get("e2e") or {}).get("speech") or {}).get("events"))
    parts = [f"latency from {windows} timed window(s) per model and thread count"] if windows \
        else []
    if events is not None:
        parts.append(f"the event p95 from {events:.0f} event(s)")
    return ("**Quick run:** " + (", ".join(parts) + ": " if parts else "") +
            "a p95 or p99 of so few samples is close to their maximum; run without --quick "
            "before judging a board.")


def render_markdown(r: dict[str, Any]) -> str:
    lines = [f"# edge-ser benchmark report ({'quick' if r.get('quick') else 'full'} run)", "",
             f"Created {r.get('created')} by `{r.get('command')}`: {fmt(r.get('elapsed'))} of "
             "measuring" + (f", {fmt(r.get('wall_time'))} in all (with any model build)"
                            if val(r.get("wall_time")) is not None else "") + ".",
             ""]
    lines += [f"**Section failed (a bug, see the log):** {e}" for e in r.get("errors") or []]
    lines += ["## Machine", "", *_machine(r.get("machine") or {}), "", "## Verdicts", ""]
    lines += _table(["duty", "verdict", "why"], [[d["duty"], f"**{d['verdict']}**", d["reason"]]
                                                  for d in r.get("duties", [])])
    lines += ["", "## Targets", ""]
    mark = {True: "pass", False: "**FAIL**", None: "not measured"}
    lines += _table(["target", "measured", "limit", "result", "note"],
                    [[t["target"], fmt(t["measured"], 2), fmt(t["limit"], 2), mark[t["pass"]],
                      t.get("note", "")] for t in r.get("targets", [])])
    if r.get("quick"):
        lines += ["", _few_samples(r)]
    if (r.get("continuous_speech") or {}).get("models"):
        lines += ["", "## Continuous speech, per model", "", *_continuous(r["continuous_speech"])]
    if r.get("latency"):
        lines += ["", "## Latency per window", "", *_latency(r["latency"])]
    if r.get("ram"):
        lines += ["", "## Memory (RSS)", "", *_ram(r["ram"])]
    if r.get("thermal"):
        lines += ["", "## Temperature and throttling", "", *_thermal(r["thermal"])]
    if r.get("e2e"):
        lines += ["", "## End to end (daemon + MQTT)", "", *_e2e(r["e2e"])]
    build = (r.get("build") or {}).get("distilhubert")
    if build:
        if build.get("error"):
            how = f"not built ({build.get('error')})"
        elif build.get("cached"):
            how = (f"cached in {build.get('dir')} (built earlier in "
                   f"{fmt(build.get('build_time'))})")
        else:
            how = f"built in {build.get('dir')} in {fmt(build.get('build_time'))} by this run"
        lines += ["", f"DistilHuBERT ONNX (random init): {how}"]
    lines += ["", "## Plots", ""] + [f"![{k}]({v})" for k, v in (r.get("plots") or {}).items()]
    return "\n".join(lines) + "\n"


def finish(report: dict[str, Any], out: Path, rss_budget_mib: float = 400.0,
           default_arena: bool = True) -> Path:
    """Targets, verdicts and plots into ``report``; write report.json and report.md to ``out``."""
    report["continuous_speech"] = continuous_speech(report)
    report["targets"] = evaluate_targets(report, default_arena)
    report["duties"] = duty_verdicts(report, rss_budget_mib)
    report["plots"] = write_plots(report, out)
    (out / "report.json").write_text(json.dumps(report, indent=1, ensure_ascii=False) + "\n",
                                     encoding="utf-8")
    (out / "report.md").write_text(render_markdown(report), encoding="utf-8")
    return out / "report.json"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.report",
                                 description="Re-render report.md and the plots of a report.json.")
    ap.add_argument("report", type=Path)
    ap.add_argument("--out", type=Path, default=None, help="folder (default: the report's)")
    args = ap.parse_args(argv)
    from benchmarks.compare import load_report
    from benchmarks.options import make_out_dir
    from edge_ser.errors import EdgeSerError

    try:
        report = load_report(args.report)
        out = make_out_dir(args.out or args.report.parent)
    except EdgeSerError as exc:
        print(f"benchmarks.report: error: {exc}", file=sys.stderr)
        return 2
    print(finish(report, out))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
