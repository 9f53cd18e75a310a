"""Child-process side of every measurement (a fresh interpreter per model and setting).

``python -m benchmarks.worker run --spec JSON --windows-file W.npy --threads N --windows K``
loads one model and times K windows of real speech; ``gemm`` measures the float32 matmul rate;
``load`` runs windows back to back for a duration (the thermal run). Each prints one line
``BENCH-RESULT {json}`` on stdout; sizes are bytes, times seconds or milliseconds as named.
Parents: :func:`benchmarks.children.run_child`.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import resource
import sys
import time
from typing import Any

MARK = "BENCH-RESULT "
log = logging.getLogger(__name__)


def _rss() -> int:
    """Resident set size in bytes (/proc, so the worker need not import psutil)."""
    try:
        with open("/proc/self/statm", encoding="ascii") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        import psutil

        return int(psutil.Process().memory_info().rss)


def _windows(path: str) -> list[Any]:
    """The prepared speech windows the parent wrote (``[K, samples]`` float32 .npy)."""
    import numpy as np

    arr = np.load(path)
    return [np.ascontiguousarray(arr[i], dtype=np.float32) for i in range(arr.shape[0])]


def _peak_rss() -> int:
    """High-water RSS of this process image in bytes (VmHWM: reset at exec, unlike ru_maxrss,
    which keeps the RSS of the parent that forked us)."""
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(peak) * (1 if sys.platform == "darwin" else 1024)


def _preimport(kind: str) -> None:
    """Import the runtime first, so the 'after load' figure is the model's own cost."""
    if kind == "torch":
        import torch  # noqa: F401
        import transformers  # noqa: F401
    else:
        import onnxruntime  # noqa: F401

        import edge_ser.model  # noqa: F401


def run_windows(args: argparse.Namespace) -> dict[str, Any]:
    from benchmarks.runners import make_runner

    spec = json.loads(args.spec)
    _preimport(spec.get("kind", "onnx"))
    windows = _windows(args.windows_file)
    rss_start = _rss()
    t0 = time.perf_counter()
    runner = make_runner(spec, args.threads, bool(args.arena), bool(args.low_memory))
    load_s = time.perf_counter() - t0
    rss_load = _rss()
    t0 = time.perf_counter()
    runner.scores(windows[0])
    first_ms = (time.perf_counter() - t0) * 1000.0
    rss_first = _rss()
    for i in range(args.warmup):
        runner.scores(windows[(i + 1) % len(windows)])
    latencies: list[float] = []
    cpu: list[float] = []
    argmax: list[int] = []
    rss_trace: list[int] = []
    for i in range(args.windows):
        w = windows[i % len(windows)]
        c0, t0 = time.process_time(), time.perf_counter()
        s = runner.scores(w)
        latencies.append((time.perf_counter() - t0) * 1000.0)
        cpu.append((time.process_time() - c0) * 1000.0)  # every thread of this process
        argmax.append(int(s.argmax()))
        rss_trace.append(_rss())
    return {
        "ok": True,
        "runtime": runner.runtime,
        "window_s": runner.window_s,
        "load_s": load_s,
        "first_ms": first_ms,
        "latencies_ms": latencies,
        "cpu_ms": cpu,
        "argmax": argmax,
        "distinct_windows": len(windows),
        "rss_bytes": {
            "start": rss_start, "after_load": rss_load, "after_first": rss_first,
            "after_n": _rss(), "peak": _peak_rss(),
        },
        "rss_per_window_bytes": rss_trace,
    }


def gemm(args: argparse.Namespace) -> dict[str, Any]:
    import numpy as np

    n = args.size
    rng = np.random.default_rng(0)
    a = rng.standard_normal((n, n), dtype=np.float32)
    b = rng.standard_normal((n, n), dtype=np.float32)
    a @ b  # warm up the BLAS thread pool
    best = float("inf")
    for _ in range(args.repeats):
        t0 = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - t0)
    blas = "unknown"
    try:
        from threadpoolctl import threadpool_info

        info = [i for i in threadpool_info() if i.get("user_api") == "blas"]
        if info:
            blas = f"{info[0].get('internal_api')} {info[0].get('version')} " \
                   f"({info[0].get('num_threads')} threads)"
    except ImportError:
        pass
    return {"ok": True, "gflops": 2.0 * n**3 / best / 1e9, "size": n, "best_s": best,
            "blas": blas}


def load(args: argparse.Namespace) -> dict[str, Any]:
    from benchmarks.runners import make_runner

    spec = json.loads(args.spec)
    windows = _windows(args.windows_file)
    runner = make_runner(spec, args.threads, bool(args.arena))
    print("BENCH-READY", flush=True)
    end = time.monotonic() + args.duration
    count = 0
    while time.monotonic() < end:
        runner.scores(windows[count % len(windows)])
        count += 1
    return {"ok": True, "windows": count, "duration_s": args.duration}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.worker")
    sub = ap.add_subparsers(dest="mode", required=True)
    r = sub.add_parser("run")
    r.add_argument("--spec", required=True)
    r.add_argument("--threads", type=int, default=1)
    r.add_argument("--arena", type=int, default=1)
    r.add_argument("--low-memory", type=int, default=0, help="edge_ser model.low_memory")
    r.add_argument("--windows", type=int, default=10)
    r.add_argument("--warmup", type=int, default=1)
    r.add_argument("--windows-file", required=True, help=".npy [K, samples] float32")
    g = sub.add_parser("gemm")
    g.add_argument("--size", type=int, default=2048)
    g.add_argument("--repeats", type=int, default=5)
    lo = sub.add_parser("load")
    lo.add_argument("--spec", required=True)
    lo.add_argument("--threads", type=int, default=1)
    lo.add_argument("--arena", type=int, default=1)
    lo.add_argument("--duration", type=float, default=10.0)
    lo.add_argument("--windows-file", required=True, help=".npy [K, samples] float32")
    args = ap.parse_args(argv)
    logging.basicConfig(level=os.environ.get("EDGE_SER_BENCH_LOG", "WARNING"))
    try:
        result = {"run": run_windows, "gemm": gemm, "load": load}[args.mode](args)
    except Exception as exc:  # reported to the parent as one line, never a traceback
        text = " ".join(str(exc).split())[:300] or type(exc).__name__
        result = {"ok": False, "error": f"{type(exc).__name__}: {text}"}
    print(MARK + json.dumps(result), flush=True)
    return 0 if result.get("ok") else 1


if __name__ == "__main__":
    raise SystemExit(main())
