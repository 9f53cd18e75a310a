"""No entry point leaves onnxruntime's telemetry store (or anything else) in $HOME or $TMPDIR.

Official onnxruntime builds create ~/.cache/Microsoft/DeveloperTools/.onnxruntime/onnxruntime.db
and a device id on import, and a `.ses` file in $TMPDIR. Each command runs with HOME and TMPDIR
set to empty folders and the switch taken out of its environment (this process has it: conftest
imports edge_ser), so only the edge-ser code it starts can turn the store off.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
VOICE_NOTE = REPO / "examples" / "voice-note.wav"


def _written(args: list[str], tmp_path: Path, stdin: str | None = None) -> list[str]:
    home, tmp = tmp_path / "home", tmp_path / "tmp"
    home.mkdir()
    tmp.mkdir()
    # onnxruntime also stays quiet where CI or ORT_RUNNING_UNIT_TESTS is set (as on a CI
    # machine): without them out, the control test could not see the store and the others
    # would pass without testing anything
    env = {k: v for k, v in os.environ.items()
           if k not in ("ORT_DISABLE_TELEMETRY", "XDG_CACHE_HOME", "CI", "ORT_RUNNING_UNIT_TESTS")}
    env.update(HOME=str(home), TMPDIR=str(tmp))
    proc = subprocess.run([sys.executable, *args], cwd=REPO, env=env, input=stdin,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*")
                  if p not in (home, tmp))


def test_classify_writes_nothing(tmp_path: Path, tiny_model: Path) -> None:
    args = ["-m", "edge_ser", "classify", "--model", str(tiny_model), str(VOICE_NOTE)]
    assert _written(args, tmp_path) == []


def test_the_daemon_writes_nothing(tmp_path: Path, tiny_model: Path) -> None:
    cfg = tmp_path / "edge-ser.yaml"
    cfg.write_text(f"source:\n  type: file\n  path: {VOICE_NOTE}\n  realtime: false\n"
                   f"model:\n  path: {tiny_model}\n")
    run = tmp_path / "run"
    run.mkdir()
    assert _written(["-m", "edge_ser", "run", "--config", str(cfg)], run) == []


@pytest.mark.parametrize("package", ["edge_ser_model", "benchmarks"])
def test_the_kit_and_the_benchmarks_load_onnxruntime_without_telemetry(
    tmp_path: Path, tiny_model: Path, package: str
) -> None:
    """``edge-ser-model`` and the benchmark workers (``python -m benchmarks.worker``) import
    onnxruntime in modules of their own packages: importing the package is enough."""
    code = (f"import {package}, onnxruntime as ort; "
            f"ort.InferenceSession({str(tiny_model)!r}, providers=['CPUExecutionProvider'])")
    assert _written(["-c", code], tmp_path) == []


def test_without_the_switch_onnxruntime_does_write(tmp_path: Path) -> None:
    """The check above can see the store: plain onnxruntime, imported first, creates it."""
    written = _written(["-c", "import onnxruntime"], tmp_path)
    assert "home/.cache/Microsoft/DeveloperTools/.onnxruntime/onnxruntime.db" in written
