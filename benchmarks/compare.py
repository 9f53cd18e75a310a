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
from benchmarks.options import make_out_dir
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
    if not isinstance(data, dict) or _major(data.get("schema")) != _major(SCHEMA):
        raise ConfigError(f"{path}: not an edge-ser benchmark report (schema {SCHEMA} expected)")
    return data


def _major(schema: Any) -> tuple[str, str]:
    """``"edge-ser-bench/1.2"`` -> ``("edge-ser-bench", "1")``: reports of one major version
    compare, other versions and other files are refused."""
    name, _, version = str(schema or "").partition("/")
    return name, version.split(".")[0]


def _d(x: Any, *keys: str) -> dict[str, Any]:
    """``x[k1][k2]...`` when each step is a dict, else ``{}`` (a hand-edited report)."""
    for k in keys:
        x = x.get(k) if isinstance(x, dict) else None
    return x if isinstance(x, dict) else {}


_THREAD_ROWS = (("median", "latency median"), ("p95", "latency p95"), ("p99", "latency p99"),
                ("rtf", "real-time factor"), ("core_share", "share of one core"),
                ("gemm_share", "share of the GEMM limit"))


def _thread_order(t: str) -> tuple[int, str]:
    return (int(t), "") if t.isdigit() else (1 << 30, t)


def _rows(a: dict[str, Any], b: dict[str, Any]) -> list[tuple[str, Any, Any]]:
    rows: list[tuple[str, Any, Any]] = [("mode", _mode(a), _mode(b))]
    ma, mb = _d(a, "machine"), _d(b, "machine")
    for key in ("cpu_model", "board", "arch", "simd_flags", "logical_cores", "ram_total", "os",
                "python", "onnxruntime"):
        rows.append((f"machine: {key.replace('_', ' ')}", ma.get(key), mb.get(key)))
    ga, gb = _d(a, "latency", "gemm"), _d(b, "latency", "gemm")
    for t in sorted(set(ga) | set(gb), key=_thread_order):
        rows.append((f"GEMM limit {t} thr", _d(ga, t).get("rate"), _d(gb, t).get("rate")))
    la, lb = _d(a, "latency", "models"), _d(b, "latency", "models")
    for name in list(dict.fromkeys([*la, *lb])):
        rows.append((f"{name} FLOPs per window", _d(la, name).get("flops_per_window"),
                     _d(lb, name).get("flops_per_window")))
        ta, tb = _d(la, name, "threads"), _d(lb, name, "threads")
        for t in sorted(set(ta) | set(tb), key=_thread_order):
            for stat, label in _THREAD_ROWS:
                rows.append((f"{name} {t} thr {label}", _d(ta, t).get(stat),
                             _d(tb, t).get(stat)))
    ra, rb = _d(a, "ram", "models"), _d(b, "ram", "models")
    for name in list(dict.fromkeys([*ra, *rb])):
        for key in RAM_SETTINGS:
            for stat in ("peak", "steady"):
                fa, fb = _d(ra, name, key).get(stat), _d(rb, name, key).get(stat)
                if fa or fb:
                    rows.append((f"{name} {stat} RSS ({key.replace('_', ' ')})", fa, fb))
    for key in ("steady_temp", "max_temp", "time_to_throttle"):
        rows.append((f"thermal {key.replace('_', ' ')}", _d(a, "thermal").get(key),
                     _d(b, "thermal").get(key)))
    for key in ("latency_p50", "latency_p95", "daemon_rss_peak"):
        rows.append((f"e2e {key.replace('_', ' ')}", _d(a, "e2e", "speech").get(key),
                     _d(b, "e2e", "speech").get(key)))
    rows.append(("e2e idle CPU", _d(a, "e2e", "idle").get("cpu"),
                 _d(b, "e2e", "idle").get("cpu")))
    tgt_b = {t["id"]: t for t in _targets(b)}
    for row in _targets(a):
        rows.append((f"target: {row.get('target', row['id'])}", _verdict(row),
                     _verdict(tgt_b.get(row["id"], {}))))
    return rows


def _targets(r: dict[str, Any]) -> list[dict[str, Any]]:
    rows = r.get("targets")
    return [t for t in rows if isinstance(t, dict) and "id" in t] if isinstance(rows, list) else []


def _verdict(t: dict[str, Any]) -> str:
    """A target's result with its measured figure: ``"pass (23.9 ms)"``."""
    ok = t.get("pass")
    word = "not measured" if ok is None else "pass" if ok is True else "FAIL"
    return f"{word} ({fmt(t.get('measured'), 2)})" if val(t.get("measured")) is not None \
        else word


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
              "below 1: B did better. For the GEMM limit and its share, above 1 is B faster.",
              "",
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
        make_out_dir(out.parent)
        try:
            out.write_text(result["markdown"], encoding="utf-8")
            out.with_suffix(".json").write_text(json.dumps(result["rows"], indent=1,
                                                           ensure_ascii=False), encoding="utf-8")
        except OSError as exc:
            raise ConfigError(f"{out}: cannot write the comparison ({exc.strerror or exc})") \
                from exc
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
