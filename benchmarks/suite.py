"""The whole benchmark (``edge-ser bench`` / ``python -m benchmarks``) and each section alone.

Sections run in order latency, ram, thermal, e2e, then report.json, report.md and the plots are
written to ``--out``. ``--quick`` cuts repeats and durations so a run takes well under two
minutes once the DistilHuBERT ONNX files are cached.
"""

from __future__ import annotations

import argparse
import logging
import os
import shlex
import sys
import time
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from benchmarks import SCHEMA
from benchmarks.machine import OtherWork, load_average, machine_facts
from benchmarks.measure import Runs, Settings
from benchmarks.options import SECTIONS, add_arguments, make_out_dir
from benchmarks.units import q
from benchmarks.variants import Variant, check_model_name, default_cache_dir, resolve_variants
from edge_ser import __version__
from edge_ser.errors import ConfigError

log = logging.getLogger(__name__)

def _usable_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


def _measure(name: str) -> Callable[[list[Variant], Runs], dict[str, Any]]:
    if name == "latency":
        from benchmarks.latency import measure_latency

        return measure_latency
    if name == "ram":
        from benchmarks.ram import measure_ram

        return measure_ram
    if name == "thermal":
        from benchmarks.thermal import measure_thermal

        return measure_thermal
    from benchmarks.e2e import measure_e2e

    return measure_e2e


def _build_facts(build: dict[str, Any]) -> dict[str, Any]:
    """What export_distilhubert built, with its own int8/fp32 check (figures with units)."""
    export = build.get("export") or {}
    facts: dict[str, Any] = {
        "cached": build.get("cached"), "dir": str(build.get("dir")),
        "build_time": q(build.get("build_s"), "s", 1), "error": build.get("error"),
        "int8_scheme": (export.get("int8") or {}).get("scheme"),
        "check_windows_from": export.get("check_windows_from"),
    }
    agree = export.get("int8_vs_fp32") or {}
    if "argmax_agreement" in agree:
        facts["int8_vs_fp32"] = {
            "argmax_agreement": q(100.0 * float(agree["argmax_agreement"]), "%", 2),
            "windows": q(int(agree.get("windows", 0)), "count"),
            "mean_abs_logit_diff": q(agree.get("mean_abs_logit_diff"), "logit", 5),
            "max_abs_logit_diff": q(agree.get("max_abs_logit_diff"), "logit", 5),
        }
    return facts


def run_bench(args: argparse.Namespace, sections: list[str]) -> Path:
    """Measure ``sections`` as ``args`` say; write the report; return report.json's path."""
    import importlib.util

    from benchmarks.report import finish

    if importlib.util.find_spec("matplotlib") is None:  # before minutes of measuring, not after
        raise ConfigError("matplotlib is not installed (the plots need it): "
                          "pip install 'edge-ser[bench]', or bash scripts/setup bench")
    t_begin = time.monotonic()  # wall time in all, the DistilHuBERT build included
    load_before = load_average()  # before the DistilHuBERT build, which would count as load
    threads = args.threads or _usable_cores()
    if threads < 1:
        raise ConfigError("--threads: must be at least 1")
    out = (args.out or Path("bench-out") / ("quick" if args.quick else "full")).resolve()
    for name in args.models or []:  # misuse is refused before anything is made
        check_model_name(name, "--models")
    if args.thermal_model is not None:
        check_model_name(args.thermal_model, "--thermal-model")
    make_out_dir(out)
    settings = Settings.make(out, args.quick, threads, args.duration)
    settings.thermal_root = args.thermal_root
    settings.cpu_root = args.cpu_root
    settings.thermal_model = args.thermal_model
    cache = args.cache_dir or default_cache_dir()
    names = args.models
    if sections == ["thermal"] and names is None:
        names = [args.thermal_model or "shipped-int8"]
    if sections == ["e2e"] and names is None:
        names = ["shipped-int8"]
    variants, build = resolve_variants(names, cache, bool(args.quick))
    runs = Runs(settings)
    t_start = time.monotonic()  # measurement time (a DistilHuBERT build is reported apart)
    report: dict[str, Any] = {
        "schema": SCHEMA,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "command": " ".join(shlex.quote(a) for a in sys.argv),
        "edge_ser": __version__,
        "quick": bool(args.quick),
        "machine": {**machine_facts(), "load_average_start": load_before},
        "variants": {v.name: {"status": "skipped" if v.skipped else "ok", "reason": v.skipped,
                              "kind": v.kind, "path": str(v.path) if v.path else None,
                              "family": v.family, "precision": v.precision,
                              "encoder": v.encoder or None, "notes": v.notes}
                     for v in variants},
    }
    if build:
        report["build"] = {"distilhubert": _build_facts(build)}
    report["errors"] = []
    others = OtherWork()
    for name in sections:
        t0 = time.monotonic()
        log.info("bench: %s ...", name)
        try:
            report[name] = _measure(name)(variants, runs)
        except Exception as exc:  # a bug in a section: keep the others, fail the command
            log.exception("bench: %s crashed", name)
            line = " ".join(str(exc).split())[:300]
            report[name] = {"status": "failed", "reason": f"{type(exc).__name__}: {line}"}
            report["errors"].append(f"{name}: {type(exc).__name__}: {line}")
        report[name]["elapsed"] = q(time.monotonic() - t0, "s", 1)
    report["elapsed"] = q(time.monotonic() - t_start, "s", 1)
    report["wall_time"] = q(time.monotonic() - t_begin, "s", 1)
    report["machine"]["load_average_end"] = load_average()
    report["machine"]["other_processes_cpu"] = others.cores()
    from edge_ser.config import Config

    cfg = Config()
    return finish(report, out, cfg.budgets.memory.rss_mb, cfg.model.arena)


def run_sections(sections: list[str], argv: list[str] | None, prog: str, doc: str | None) -> int:
    """``main`` of each section module: same options as ``edge-ser bench``."""
    from edge_ser.errors import EdgeSerError

    ap = argparse.ArgumentParser(prog=prog, description=(doc or "").split("\n\n")[0])
    add_arguments(ap, sections=len(sections) > 1)
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("benchmarks").setLevel(logging.INFO)  # progress lines
    chosen = [x for x in sections if x not in (getattr(args, "skip", None) or [])]
    try:
        path = run_bench(args, chosen)
    except EdgeSerError as exc:
        print(f"{prog}: error: {exc}", file=sys.stderr)
        return 2
    print(path.parent / "report.md")
    return exit_status(path)


def exit_status(report_json: Path) -> int:
    """1 when a section crashed (a bug: the report says which), else 0."""
    import json

    errors = json.loads(report_json.read_text(encoding="utf-8")).get("errors") or []
    for e in errors:
        print(f"benchmark section failed: {e}", file=sys.stderr)
    return 1 if errors else 0


def main(argv: list[str] | None = None) -> int:
    return run_sections(list(SECTIONS), argv, "python -m benchmarks", __doc__)
