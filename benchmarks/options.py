"""Command-line options of ``edge-ser bench`` and ``python -m benchmarks[.<section>]``.

Imports only the standard library: ``edge-ser`` builds every sub-command's parser at start-up,
and ``edge-ser run`` must not pay for numpy, psutil or onnx because the bench command exists.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from edge_ser.errors import ConfigError

SECTIONS = ("latency", "ram", "thermal", "e2e")
#: measured by default: the shipped model (Whisper tiny.en encoder + head) and its fp32 twin, the
#: compact model (the lighter option), DistilHuBERT (random weights: its cost, not its accuracy)
DEFAULT_NAMES = ("shipped-int8", "shipped-fp32", "compact-int8", "distilhubert-int8",
                 "distilhubert-fp32", "distilhubert-torch")
#: every name ``--models`` takes (compact-fp32 only on request: it adds a minute to a full run)
KNOWN_NAMES = (*DEFAULT_NAMES, "compact-fp32")


def _threads(text: str) -> int:
    try:
        n = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if n < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, not {n}")
    return n


def _seconds(text: str) -> float:
    try:
        s = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of seconds: {text!r}") from None
    if not (s > 0 and s < 1e6):  # also refuses nan and inf
        raise argparse.ArgumentTypeError(f"must be a number of seconds above 0, not {text}")
    return s


def make_out_dir(out: Path) -> Path:
    """The ``--out`` folder, created if needed; ConfigError when it is a file or cannot be made."""
    if out.exists() and not out.is_dir():
        raise ConfigError(f"--out: {out} is a file, not a folder")
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigError(f"--out: cannot create {out} ({exc.strerror or exc})") from exc
    return out


def add_arguments(ap: argparse.ArgumentParser, sections: bool = True) -> None:
    ap.add_argument("--quick", action="store_true",
                    help="few repeats, a 5-s thermal run, short e2e (well under two minutes)")
    ap.add_argument("--out", type=Path, default=None,
                    help="output folder (default: bench-out/quick or bench-out/full)")
    ap.add_argument("--models", nargs="+", default=None, metavar="MODEL",
                    help=f"variants to measure: {', '.join(KNOWN_NAMES)} and/or .onnx paths "
                         f"(default: {', '.join(DEFAULT_NAMES)})")
    ap.add_argument("--threads", type=_threads, default=None, metavar="N",
                    help="measure 1..N threads (default: the usable cores)")
    ap.add_argument("--duration", type=_seconds, default=None, metavar="S",
                    help="thermal run length in seconds (default 120, quick 5)")
    ap.add_argument("--thermal-root", type=Path, default=Path("/sys/class/thermal"),
                    metavar="DIR", help="thermal zones (default /sys/class/thermal)")
    ap.add_argument("--cpu-root", type=Path, default=Path("/sys/devices/system/cpu"),
                    metavar="DIR", help="cpufreq root (default /sys/devices/system/cpu)")
    ap.add_argument("--thermal-model", default=None, metavar="NAME",
                    help="variant that loads the CPU in the thermal run (default: shipped-int8)")
    ap.add_argument("--cache-dir", type=Path, default=None, metavar="DIR",
                    help="where built DistilHuBERT files are kept (default "
                         "$EDGE_SER_BENCH_CACHE or ~/.cache/edge-ser/bench)")
    if sections:
        ap.add_argument("--skip", nargs="+", default=[], choices=SECTIONS, metavar="SECTION",
                        help=f"sections to leave out ({', '.join(SECTIONS)})")
