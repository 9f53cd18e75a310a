"""``edge-ser bench``: latency, RAM, temperature and end-to-end figures for this board.

The work is done by the ``benchmarks`` package at the repository root (a source checkout, next to
``edge_ser/``); this command puts that root on ``sys.path`` when it runs and calls into it.
Building the parser (every ``edge-ser`` call) only reads ``benchmarks/options.py`` by its path.
``edge-ser bench --compare A.json B.json`` lines up two reports instead.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import logging
import sys
from pathlib import Path
from types import ModuleType

from edge_ser.config import REPO_ROOT
from edge_ser.errors import ConfigError

log = logging.getLogger(__name__)


def _need_checkout() -> None:
    if not (REPO_ROOT / "benchmarks" / "__init__.py").is_file():
        raise ConfigError(f"{REPO_ROOT / 'benchmarks'}: not found (edge-ser bench needs a source "
                          "checkout of edge-ser)")


def _benchmarks(name: str) -> ModuleType:
    _need_checkout()
    if str(REPO_ROOT) not in sys.path:
        sys.path.insert(0, str(REPO_ROOT))
    return importlib.import_module(f"benchmarks.{name}")


def _options() -> ModuleType:
    """``benchmarks/options.py`` loaded by path (standard library only), ``sys.path`` untouched."""
    _need_checkout()
    path = REPO_ROOT / "benchmarks" / "options.py"
    spec = importlib.util.spec_from_file_location("_edge_ser_bench_options", path)
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot load {path}")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--compare", nargs=2, type=Path, metavar=("A.json", "B.json"),
                        default=None, help="line up two report.json files side by side")
    try:
        options = _options()  # standard library only: cheap for every edge-ser call
    except (ConfigError, ImportError):  # shown by run(); keep the CLI usable
        parser.add_argument("rest", nargs=argparse.REMAINDER, help=argparse.SUPPRESS)
        return
    options.add_arguments(parser, sections=True)


def run(args: argparse.Namespace) -> int:
    if args.compare:
        compare = _benchmarks("compare")
        out = args.out / "compare.md" if getattr(args, "out", None) else None
        print(compare.run_compare(args.compare[0], args.compare[1], out), end="")
        return 0
    suite = _benchmarks("suite")
    if args.log_level is None:  # progress lines (a run takes minutes), without the daemon's INFO
        logging.getLogger("benchmarks").setLevel(logging.INFO)
    chosen = [s for s in suite.SECTIONS if s not in (args.skip or [])]
    path = suite.run_bench(args, chosen)
    print(path.parent / "report.md")
    rc: int = suite.exit_status(path)
    return rc
