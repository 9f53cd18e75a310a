"""Two boards' reports side by side: ``python -m benchmarks.compare A.json B.json [--out F.md]``."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path
from typing import Any

from benchmarks import SCHEMA
from benchmarks.machine import was_busy
from benchmarks.ram import RAM_SETTINGS
from benchmarks.units import fmt, q, val
from edge_ser.errors import ConfigError, EdgeSerError

log = logging.getLogger(__name__)


def load_report(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read report ({exc.strerror or exc})") from exc
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: not a report (not UTF-8 text at byte {exc.start})") from exc
    except json.JSONDecodeError as exc:
        raise ConfigError(f"{path}:{exc.lineno}: not JSON ({exc.msg})") from exc
    if not isinstance(data, dict) or str(data.get("schema", "")).split("/")[0] != \
            SCHEMA.split("/")[0]:
        raise ConfigError(f"{path}: not an edge-ser benchmark report (schema {SCHEMA} expected)")
    return data


def _rows(a: dict[str, Any], b: dict[str, Any]) -> list[tuple[str, Any, Any]]:
    rows: list[tuple[str, Any, Any]] = [("mode", _mode(a), _mode(b))]
    ma, mb = a.get("machine") or {}, b.get("machine") or {}
    for key in ("cpu_model", "board", "arch", "simd_flags", "logical_cores", "ram_total", "os",
                "python", "onnxruntime"):
        rows.append((f"machine: {key.replace('_', ' ')}", ma.get(key), mb.get(key)))
    la = (a.get("latency") or {}).get("models") or {}
    lb = (b.get("latency") or {}).get("models") or {}
    for name in list(dict.fromkeys([*la, *lb])):
        ta = (la.get(name) or {}).get("threads") or {}
        tb = (lb.get(name) or {}).get("threads") or {}
        for t in sorted(set(ta) | set(tb), key=int):
            for stat in ("median", "p95", "p99"):
                rows.append((f"{name} {t} thr latency {stat}", (ta.get(t) or {}).get(stat),
                             (tb.get(t) or {}).get(stat)))
    ra = (a.get("ram") or {}).get("models") or {}
    rb = (b.get("ram") or {}).get("models") or {}
    for name in list(dict.fromkeys([*ra, *rb])):
        for key in RAM_SETTINGS:
            fa = ((ra.get(name) or {}).get(key) or {}).get("peak")
            fb = ((rb.get(name) or {}).get(key) or {}).get("peak")
            if fa or fb:
                rows.append((f"{name} peak RSS ({key.replace('_', ' ')})", fa, fb))
    for key in ("steady_temp", "max_temp", "time_to_throttle"):
        rows.append((f"thermal {key.replace('_', ' ')}", (a.get("thermal") or {}).get(key),
                     (b.get("thermal") or {}).get(key)))
    ea, eb = a.get("e2e") or {}, b.get("e2e") or {}
    for key in ("latency_p50", "latency_p95", "daemon_rss_peak"):
        rows.append((f"e2e {key.replace('_', ' ')}", (ea.get("speech") or {}).get(key),
                     (eb.get("speech") or {}).get(key)))
    rows.append(("e2e idle CPU", (ea.get("idle") or {}).get("cpu"),
                 (eb.get("idle") or {}).get("cpu")))
    tgt_b = {t["id"]: t for t in b.get("targets", [])}
    for t in a.get("targets", []):
        other = tgt_b.get(t["id"], {})
        rows.append((f"target: {t['target']}", t.get("pass"), other.get("pass")))
    return rows


def _mode(r: dict[str, Any]) -> str:
    return "quick" if r.get("quick") else "full"


def _cautions(a: dict[str, Any], b: dict[str, Any]) -> list[str]:
    """What makes the two reports unlike: mode (quick: a few windows, p99 is their maximum)."""
    out = []
    if bool(a.get("quick")) != bool(b.get("quick")):
        out.append(f"- A is a {_mode(a)} run and B a {_mode(b)} run: a quick run times only a few "
                   "windows (its p99 is their maximum), so latency rows do not compare like for "
                   "like.")
    for name, r in (("A", a), ("B", b)):
        m = r.get("machine") or {}
        if was_busy(m):
            out.append(f"- {name}'s machine was busy (load average before the run "
                       f"{fmt(m.get('load_average_start'))}, other processes during it "
                       f"{fmt(m.get('other_processes_cpu'))}): its timings read high.")
    return out


def _cell(x: Any) -> str:
    if isinstance(x, dict):
        return fmt(x, 2)
    if isinstance(x, bool):
        return "pass" if x else "FAIL"
    if isinstance(x, list):
        return " ".join(str(i) for i in x) or "none"
    return "n/a" if x is None else str(x)


def compare(a: dict[str, Any], b: dict[str, Any], name_a: str, name_b: str) -> dict[str, Any]:
    """``{"rows": [{"what", "a", "b", "b_over_a"}], "markdown": str}``."""
    rows = []
    lines = [f"# Benchmark comparison: A = {name_a}, B = {name_b}", "",
             f"A: {(a.get('machine') or {}).get('cpu_model')} ({a.get('created')}); "
             f"B: {(b.get('machine') or {}).get('cpu_model')} ({b.get('created')})", ""]
    cautions = _cautions(a, b)
    if cautions:
        lines += ["Read with care:", *cautions, ""]
    lines += ["B / A above 1: B took longer or used more (latency, RSS, temperature); "
              "below 1: B did better.", "",
              "| figure | A | B | B / A |", "|---|---|---|---|"]
    for what, fa, fb in _rows(a, b):
        va, vb = val(fa), val(fb)
        ratio = q(vb / va if va and vb is not None else None, "x", 3)
        rows.append({"what": what, "a": fa, "b": fb, "b_over_a": ratio})
        lines.append(f"| {what} | {_cell(fa)} | {_cell(fb)} | "
                     f"{fmt(ratio, 2) if val(ratio) is not None else ''} |")
    return {"rows": rows, "markdown": "\n".join(lines) + "\n"}


def run_compare(path_a: Path, path_b: Path, out: Path | None = None) -> str:
    result = compare(load_report(path_a), load_report(path_b), str(path_a), str(path_b))
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(result["markdown"], encoding="utf-8")
        out.with_suffix(".json").write_text(json.dumps(result["rows"], indent=1,
                                                       ensure_ascii=False), encoding="utf-8")
    return str(result["markdown"])


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.compare", description=__doc__)
    ap.add_argument("a", type=Path)
    ap.add_argument("b", type=Path)
    ap.add_argument("--out", type=Path, default=None, help="also write this .md (and .json)")
    args = ap.parse_args(argv)
    try:
        print(run_compare(args.a, args.b, args.out), end="")
    except EdgeSerError as exc:
        print(f"benchmarks.compare: error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
