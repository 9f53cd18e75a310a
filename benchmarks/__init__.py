"""edge-ser benchmarks: latency, RAM, temperature and end-to-end figures for one board.

Each concern is one module, runnable on its own (``python -m benchmarks.<name>``); the whole
suite is :mod:`benchmarks.suite`, also reachable as ``edge-ser bench``. Heavy measurements run in
fresh child processes (:mod:`benchmarks.worker`) so that one model's memory, threads or torch's
OpenMP pool never leak into the next measurement.

Every figure in ``report.json`` carries its unit: ``{"value": 12.3, "unit": "ms"}`` for one
figure, ``{"values": [...], "unit": "MiB"}`` for a series (see :mod:`benchmarks.units`).
"""

from __future__ import annotations

from pathlib import Path

import edge_ser  # noqa: F401  (turns onnxruntime's telemetry off before a worker loads it)

#: Repository root (the directory holding ``edge_ser/`` and ``benchmarks/``).
REPO = Path(__file__).resolve().parent.parent
#: Bundled real speech used for every window the benchmarks run.
EXAMPLES = REPO / "examples"
#: Report schema version (bump when keys change; compare refuses mismatched majors).
SCHEMA = "edge-ser-bench/1.1"
