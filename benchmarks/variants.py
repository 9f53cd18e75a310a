"""Which models a run measures, and building the DistilHuBERT ones (cached by export-code hash).

Default variants: the shipped model (frozen Whisper tiny.en encoder + trained head) int8 and its
fp32 twin, the compact model int8 (the lighter option; its fp32 twin on request), DistilHuBERT
int8 and fp32 exported with random weights by ``edge_ser_model.export.export_distilhubert``, and
DistilHuBERT in PyTorch eager mode. ``--models`` takes any of those names and/or paths of
``.onnx`` files. A variant that cannot be had is kept with ``skipped`` set to the one-line
reason.
"""

from __future__ import annotations

import functools
import hashlib
import importlib.util
import json
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

from benchmarks import REPO
from benchmarks.options import DEFAULT_NAMES, KNOWN_NAMES
from edge_ser import WINDOW_S
from edge_ser.errors import ConfigError, ModelError

log = logging.getLogger(__name__)

#: the files behind the named variants: shipped = the default model, compact = the lighter option
MODEL_FILES = {
    "shipped-int8": REPO / "models" / "edge-ser-whisper-tiny.int8.onnx",
    "shipped-fp32": REPO / "models" / "edge-ser-whisper-tiny.fp32.onnx",
    "compact-int8": REPO / "models" / "edge-ser-compact.int8.onnx",
    "compact-fp32": REPO / "models" / "edge-ser-compact.fp32.onnx",
}
#: Files whose content decides what export_distilhubert builds (the cache key hashes them).
EXPORT_CODE = ("edge_ser_model/export.py", "edge_ser_model/quantize.py",
               "edge_ser_model/calibration.py", "edge_ser_model/encoders/distilhubert.py",
               "edge_ser_model/encoders/distilhubert_frontend.py", "edge_ser/preprocess.py")
BUILD_TIMEOUT_S = 1800.0


@dataclass
class Variant:
    name: str
    kind: str  # "onnx" | "torch"
    family: str  # "shipped" | "compact" | "distilhubert" | "custom"
    precision: str  # "int8" | "fp32"
    path: Path | None = None
    skipped: str | None = None
    window_s: float = WINDOW_S
    notes: list[str] = field(default_factory=list)
    encoder: str = ""  # the model's ``encoder`` metadata (whisper-tiny, compact, distilhubert)

    def spec(self) -> dict[str, Any]:
        return {"name": self.name, "kind": self.kind,
                "path": str(self.path) if self.path else None}

    def file_mb(self) -> float | None:
        if self.path is None or not self.path.is_file():
            return None
        return self.path.stat().st_size / 1e6


def default_cache_dir() -> Path:
    env = os.environ.get("EDGE_SER_BENCH_CACHE")
    if env:
        return Path(env)
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg) if xdg else Path.home() / ".cache") / "edge-ser" / "bench"


def _calibration_fingerprint() -> str:
    """What the export calibrates and checks on (``../shared/data`` when it is there, else the
    bundled clips), so checkouts with and without the corpora never share a build."""
    try:
        from edge_ser_model.calibration import default_calibration_source, source_fingerprint
    except ImportError:  # no model kit: nothing is built, the key only names a folder
        return "<no model kit>"
    return source_fingerprint(default_calibration_source())


def export_code_hash() -> str:
    """sha256 (12 hex digits) of the export code, the library versions it depends on and the
    calibration data it reads."""
    h = hashlib.sha256()
    h.update(_calibration_fingerprint().encode())
    for rel in EXPORT_CODE:
        p = REPO / rel
        h.update(rel.encode())
        h.update(p.read_bytes() if p.is_file() else b"<absent>")
    for dist in ("torch", "transformers", "onnx", "onnxruntime", "onnxscript"):
        try:
            h.update(f"{dist}={metadata.version(dist)}".encode())
        except metadata.PackageNotFoundError:
            h.update(f"{dist}=none".encode())
    return h.hexdigest()[:12]


def _torch_missing() -> str | None:
    if importlib.util.find_spec("torch") is None:
        return "torch is not installed (bash scripts/setup train: the CPU-only wheel)"
    if importlib.util.find_spec("edge_ser_model") is None:
        return "edge_ser_model (the model kit) is not importable"
    return None


_BUILD_SCRIPT = (
    "import json, sys\n"
    "from pathlib import Path\n"
    "from edge_ser_model.export import export_distilhubert\n"
    "r = export_distilhubert(Path(sys.argv[1]), random_init=True, timing_reps=0,\n"
    "                        n_check=int(sys.argv[2]))\n"
    "print('BENCH-RESULT ' + json.dumps(r, default=str))\n"
)
#: windows the export's int8-vs-fp32 agreement check runs: a full run's 100 take about a minute
#: on 2 cores (fp32 and int8 each), so a quick run checks fewer. The models are the same
#: (calibration does not change); only the agreement figure rests on fewer windows.
CHECK_WINDOWS = {False: 100, True: 24}


def _find_pair(folder: Path) -> tuple[Path | None, Path | None]:
    onnx_files = sorted(folder.glob("*.onnx"))
    int8 = next((p for p in onnx_files if "int8" in p.name), None)
    fp32 = next((p for p in onnx_files if "int8" not in p.name), None)
    return fp32, int8


def build_distilhubert(cache_dir: Path, n_check: int = CHECK_WINDOWS[False]) -> dict[str, Any]:
    """fp32 and int8 DistilHuBERT (random init) under ``cache_dir/distilhubert-<hash>-<n>/``
    (``n_check`` agreement windows; a quick and a full build are kept side by side).

    Returns ``{"fp32": Path|None, "int8": Path|None, "cached": bool, "build_s": float|None,
    "error": str|None, "dir": Path, "export": dict}``; builds in a child process when needed.
    """
    missing = _torch_missing()
    if missing is None and importlib.util.find_spec("edge_ser_model.export") is None:
        missing = "edge_ser_model.export is not there yet"
    code = export_code_hash()
    folder = cache_dir / f"distilhubert-{code}-{n_check}"
    out: dict[str, Any] = {"fp32": None, "int8": None, "cached": False, "build_s": None,
                           "error": None, "dir": folder, "export": {}}
    marker = folder / "build.json"
    if marker.is_file():
        fp32, int8 = _find_pair(folder)
        info = json.loads(marker.read_text(encoding="utf-8"))
        out.update(fp32=fp32, int8=int8, cached=True, build_s=info.get("build_s"),
                   export=info.get("export", {}))
        return out
    if missing:
        out["error"] = missing
        return out
    cache_dir.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix="build-", dir=cache_dir))
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), env.get("PYTHONPATH", "")) if p)
    log.info("building DistilHuBERT ONNX (random init) into %s; cached afterwards", folder)
    t0 = time.monotonic()
    try:
        proc = subprocess.run([sys.executable, "-c", _BUILD_SCRIPT, str(tmp), str(n_check)],
                              cwd=str(REPO),
                              env=env, capture_output=True, text=True, timeout=BUILD_TIMEOUT_S,
                              check=False)
    except subprocess.TimeoutExpired:
        shutil.rmtree(tmp, ignore_errors=True)
        out["error"] = f"export_distilhubert timed out after {BUILD_TIMEOUT_S:.0f} s"
        return out
    build_s = time.monotonic() - t0
    result: dict[str, Any] = {}
    for line in reversed(proc.stdout.splitlines()):
        if line.startswith("BENCH-RESULT "):
            result = json.loads(line[len("BENCH-RESULT "):])
            break
    fp32, int8 = _find_pair(tmp)
    if proc.returncode != 0 or (fp32 is None and int8 is None):
        tail = [ln for ln in proc.stderr.splitlines() if ln.strip()]
        shutil.rmtree(tmp, ignore_errors=True)
        out["error"] = f"export_distilhubert failed: {tail[-1][:240] if tail else proc.returncode}"
        return out
    (tmp / "build.json").write_text(json.dumps({"build_s": build_s, "export": result}, indent=1),
                                    encoding="utf-8")
    if folder.exists():  # another run finished first: keep theirs
        shutil.rmtree(tmp, ignore_errors=True)
    else:
        tmp.rename(folder)
    for old in cache_dir.glob("distilhubert-*"):  # builds of other export code: ~120 MB each
        if not old.name.startswith(f"distilhubert-{code}-") and (old / "build.json").is_file():
            shutil.rmtree(old, ignore_errors=True)
    fp32, int8 = _find_pair(folder)
    out.update(fp32=fp32, int8=int8, build_s=build_s, export=result)
    return out


def _custom(path: Path) -> Variant:
    name = path.name.removesuffix(".onnx")
    v = Variant(name=name, kind="onnx", family="custom", precision="fp32", path=path)
    if not path.is_file():
        v.skipped = f"{path}: no such model file"
        return v
    try:
        from edge_ser.model import read_model_info

        info = read_model_info(path)
        v.window_s = info.window_s
        v.encoder = info.encoder
        quant = info.quantization.lower()
        v.precision = "int8" if ("int8" in quant or "int8" in name) else "fp32"
    except Exception as exc:  # ModelError: measured anyway, the worker reports the refusal
        v.notes.append(str(exc))
    return v


def resolve_variants(
    names: list[str] | None, cache_dir: Path, quick: bool = False
) -> tuple[list[Variant], dict[str, Any]]:
    """The variants to measure (in order) and facts about the DistilHuBERT build (``quick``:
    its agreement check on fewer windows, :data:`CHECK_WINDOWS`)."""
    wanted = list(names) if names else list(DEFAULT_NAMES)
    build: dict[str, Any] = {}
    out: list[Variant] = []
    for item in wanted:
        if item in MODEL_FILES:
            path = MODEL_FILES[item]
            v = _custom(path)
            v.name = item
            v.family, v.precision = item.rsplit("-", 1)
            if v.skipped:
                v.skipped = f"{path.relative_to(REPO)} is not in this checkout"
            out.append(v)
        elif item in ("distilhubert-int8", "distilhubert-fp32"):
            if not build:
                build = build_distilhubert(cache_dir, CHECK_WINDOWS[quick])
            prec = item.rsplit("-", 1)[1]
            built: Path | None = build.get(prec)
            v = Variant(name=item, kind="onnx", family="distilhubert", precision=prec, path=built,
                        encoder="distilhubert (random init)")
            if built is None:
                v.skipped = build.get("error") or f"export_distilhubert wrote no {prec} file"
            out.append(v)
        elif item == "distilhubert-torch":
            v = Variant(name=item, kind="torch", family="distilhubert", precision="fp32",
                        encoder="distilhubert (random init)")
            v.skipped = _torch_missing()
            v.notes.append("PyTorch eager, random init, plain (unchunked) front end")
            out.append(v)
        else:
            check_model_name(item, "--models")
            out.append(_custom(Path(item).resolve()))
    return out, build


@functools.cache
def _loads(path: str) -> None:
    """onnxruntime opens ``path`` (ModelError why not); once per file: the suite checks the
    names before it makes --out, and resolve_variants checks them again (raises are not cached)."""
    import onnxruntime as ort

    from edge_ser.model import open_session

    open_session(Path(path), ort.SessionOptions())


def check_model_name(item: str, option: str) -> None:
    """``item`` is a variant name or an existing model file; ConfigError naming ``option``."""
    if item in KNOWN_NAMES:
        return
    if item.endswith(".onnx") or Path(item).exists():
        if not Path(item).is_file():
            raise ConfigError(f"{option}: no such model file {item}")
        try:  # a file that does not load is misuse, refused before anything is measured
            _loads(str(Path(item).resolve()))
        except ModelError as exc:
            raise ConfigError(f"{option}: {exc}") from exc
        return
    raise ConfigError(f"{option}: unknown model {item!r} (a path to .onnx, or one of "
                      f"{', '.join(KNOWN_NAMES)})")
