"""The runtime never imports the model kit or its heavy dependencies."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
FORBIDDEN = ("torch", "transformers", "onnx", "edge_ser_model")

SCRIPT = r"""
import contextlib, importlib, io, json, pkgutil, sys
import edge_ser
failed = {}
for mod in pkgutil.walk_packages(edge_ser.__path__, "edge_ser."):
    if mod.name == "edge_ser.__main__":
        continue
    try:
        importlib.import_module(mod.name)
    except Exception as exc:  # reported, so a broken module cannot hide from this test
        failed[mod.name] = repr(exc)
from edge_ser.cli import main
out = io.StringIO()
with contextlib.redirect_stdout(out):
    rc = main(["classify", "--model", sys.argv[1], "--format", "jsonl", sys.argv[2]])
heavy = ("torch", "transformers", "onnx", "edge_ser_model")
bad = sorted(m for m in sys.modules if m.split(".")[0] in heavy)
print(json.dumps({"rc": rc, "bad": bad, "failed": failed, "out": out.getvalue(),
                  "modules": sorted(m for m in sys.modules if m.startswith("edge_ser"))}))
"""


def test_runtime_import_graph(tiny_model: Path, examples: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-c", SCRIPT, str(tiny_model), str(examples / "voice-note.wav")],
        capture_output=True, text=True, cwd=REPO, timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    assert report["bad"] == [], f"runtime imported {report['bad']}"
    assert report["failed"] == {}, report["failed"]
    assert report["rc"] == 0 and json.loads(report["out"])["emotion"] is not None
    for name in ("edge_ser.vad", "edge_ser.windows", "edge_ser.model", "edge_ser.pipeline"):
        assert name in report["modules"]
    # onnxruntime is allowed; the onnx package (protobuf tooling) is not
    assert all(m.split(".")[0] not in FORBIDDEN for m in report["modules"])


DAEMON_SCRIPT = r"""
import sys
import edge_ser.commands.run, edge_ser.daemon, edge_ser.pipeline, edge_ser.publish, edge_ser.sources
from edge_ser.sources import make_source
from edge_ser.config import SourceConfig
make_source(SourceConfig(type="stdin", rate=16000))
print(sorted(m for m in sys.modules if m.split(".")[0] == "scipy"))
"""


def test_daemon_on_16khz_input_does_not_load_scipy() -> None:
    """scipy (~65 MiB of RSS) is only imported when a WAV is read or audio must be resampled."""
    proc = subprocess.run(
        [sys.executable, "-c", DAEMON_SCRIPT], capture_output=True, text=True, cwd=REPO,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "[]", proc.stdout


CLI_SCRIPT = r"""
import contextlib, io, json, sys
before = list(sys.path)
from edge_ser.cli import build_parser, main
build_parser()
parser_ort = "onnxruntime" in sys.modules
out = io.StringIO()
with contextlib.redirect_stdout(out):
    rc = main(["check-config", sys.argv[1]])
print(json.dumps({"rc": rc, "out": out.getvalue(), "path_changed": sys.path != before,
                  "parser_onnxruntime": parser_ort,
                  "onnxruntime": "onnxruntime" in sys.modules}))
"""


def test_cli_parser_does_not_load_onnxruntime(tmp_path: Path) -> None:
    """Building the parser (every command: --help, a typo) loads no onnxruntime and leaves
    sys.path alone (the bench command reads its options by file path); check-config loads it,
    because it checks the model the way the daemon does."""
    cfg = tmp_path / "c.yaml"
    cfg.write_text(f"model:\n  path: {REPO / 'models' / 'edge-ser-whisper-tiny.int8.onnx'}\n")
    proc = subprocess.run(
        [sys.executable, "-c", CLI_SCRIPT, str(cfg)], capture_output=True, text=True,
        cwd=tmp_path, timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    assert report == {"rc": 0, "out": "ok\n", "path_changed": False,
                      "parser_onnxruntime": False, "onnxruntime": True}
