"""int8 vs fp32 argmax agreement of a model and its fp32 twin on windows of real speech.

The windows are those the model kit checks its int8 exports on: files picked by
``edge_ser_model.calibration.speech_files`` over ``../shared/data`` beside the checkout (every
corpus, interleaved), else over the bundled clips, spread over the list one step past the
calibration windows (offset 1), and prepared by its ``speech_windows``. Each model runs in a fresh
worker (1 thread, the daemon's ``OnnxModel``), as the latency runs do; the figure is the share
of windows on which both pick the same class, over all windows and per corpus.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from benchmarks import EXAMPLES
from benchmarks.children import run_child
from benchmarks.measure import Runs
from benchmarks.units import q
from benchmarks.variants import Variant

log = logging.getLogger(__name__)

#: windows checked: enough that one disagreement in a hundred shows in a full run; a quick run's
#: figure rests on fewer (a single disagreement is then 1 %)
AGREEMENT_WINDOWS = {False: 400, True: 100}
TARGET_PCT = 99.0


def _pick(files: list[Path], n: int, offset: int = 1) -> list[Path]:
    """``n`` files spread over ``files``, ``offset`` into each step (0 is what the exporters
    calibrate on, 1 what they check on)."""
    step = max(1, len(files) // max(1, n))
    return files[offset % step::step][:n] if len(files) >= n else list(files)


def _corpus(path: Path, source: Path) -> str:
    try:
        rel = path.resolve().relative_to(source.resolve())
    except ValueError:
        return path.parent.name
    return rel.parts[0] if len(rel.parts) > 1 else source.name


def real_speech(n: int, window_s: float) -> tuple[NDArray[np.float32], list[str], str]:
    """``(windows [k, samples], corpus of each, where they came from)``, ``k <= n``."""
    from edge_ser.config import REPO_ROOT

    try:
        from edge_ser_model.calibration import (
            default_calibration_source,
            speech_files,
            speech_windows,
        )
    except ImportError as exc:  # no model kit: the bundled clips, prepared as the daemon does
        from benchmarks.inputs import example_clips
        from edge_ser.audio import read_wav
        from edge_ser.preprocess import prepare_window

        clips = _pick(example_clips(), n)
        windows = np.stack([prepare_window(read_wav(f), window_s) for f in clips])
        return (windows.astype(np.float32), ["clips"] * len(clips),
                f"{len(clips)} bundled clips (model kit not importable: {exc})")
    source = default_calibration_source()
    picked = _pick(speech_files(source), n)
    windows = speech_windows(picked, len(picked), offset=0, window_s=window_s)
    corpora = [_corpus(f, source) for f in picked]
    if source.resolve() == (EXAMPLES / "clips").resolve():
        where = "the bundled clips (examples/clips; ../shared/data is not beside the checkout)"
    else:
        shown = source.resolve()
        try:
            shown = Path("..") / shown.relative_to(REPO_ROOT.resolve().parent)
        except ValueError:
            pass
        where = f"{shown} ({', '.join(sorted(set(corpora)))})"
    return windows, corpora, where


def measure_agreement(runs: Runs, int8: Variant, fp32: Variant) -> dict[str, Any]:
    """Argmax agreement of ``int8`` with ``fp32`` (figures with units; ``status`` and ``reason``
    when it could not be measured)."""
    s = runs.settings
    n = AGREEMENT_WINDOWS[s.quick]
    windows, corpora, where = real_speech(n, int8.window_s)
    path = s.out / "work" / f"agreement-{n}-{int8.window_s:g}s.npy"
    path.parent.mkdir(parents=True, exist_ok=True)
    np.save(path, windows)
    picks: dict[str, list[int]] = {}
    for v in (int8, fp32):
        log.info("agreement: %s on %d windows of real speech", v.name, len(windows))
        res = run_child(["run", "--spec", json.dumps(v.spec()), "--threads", "1",
                         "--windows", str(len(windows)), "--warmup", "0",
                         "--windows-file", str(path)], 1, s.child_timeout_s)
        if not res.ok:
            return {"status": "failed", "reason": f"{v.name}: {res.error}"}
        picks[v.name] = [int(x) for x in res.result["argmax"]]
    a, b = picks[int8.name], picks[fp32.name]
    same = [x == y for x, y in zip(a, b, strict=True)]
    by_corpus: dict[str, Any] = {}
    for corpus in sorted(set(corpora)):
        hits = [ok for ok, c in zip(same, corpora, strict=True) if c == corpus]
        by_corpus[corpus] = {"argmax_agreement": q(100.0 * sum(hits) / len(hits), "%", 2),
                             "windows": q(len(hits), "count")}
    return {
        "status": "ok", "int8": int8.name, "fp32": fp32.name, "source": where,
        "argmax_agreement": q(100.0 * sum(same) / len(same) if same else None, "%", 2),
        "windows": q(len(same), "count"),
        "disagreements": q(len(same) - sum(same), "count"),
        "by_corpus": by_corpus,
        "fp32_classes_predicted": q(len(set(b)), "count"),
    }
