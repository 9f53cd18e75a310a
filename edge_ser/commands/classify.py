"""``edge-ser classify FILE...``: the emotion of each WAV file, as text or JSON lines.

The model is loaded once for all files and each result is printed as soon as it is known (a user
may pass thousands of files). A file that cannot be read gives a line with its error and the
others are still classified; the exit status is then 1. A bad model or config, or a stdout that
cannot be written (a full disk), exits with 2; a reader that goes away (``| head``) ends it
quietly with 141, like SIGPIPE would.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path
from typing import Any, TextIO

from edge_ser.config import load_config
from edge_ser.errors import AudioError
from edge_ser.publish.stdout import write_line

log = logging.getLogger(__name__)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "files", nargs="+", metavar="FILE", help="WAV files (any rate, mono or stereo)"
    )
    parser.add_argument(
        "--model", type=Path, default=None,
        help="ONNX model file (default: the config's model.path, i.e. the shipped model)",
    )
    parser.add_argument("--config", type=Path, default=None, help="YAML config file")
    parser.add_argument(
        "--format", choices=["text", "jsonl"], default="text",
        help="one human line per file (text) or one JSON object per file (jsonl)",
    )


def format_text(record: dict[str, Any]) -> str:
    """One human line for a jsonl record."""
    name = record["file"]
    if "error" in record:
        return f"{name}: error: {record['error']}"
    warned = "".join(f" [warning: {w}]" for w in record.get("warnings", []))
    if record["emotion"] is None:
        return (f"{name}: {record.get('reason', 'no result')} "
                f"(speech {record['speech_s']:.1f} s){warned}")
    n = len(record["windows"])
    return (
        f"{name}: {record['emotion']} {record['confidence']:.2f} "
        f"(arousal {record['arousal']:+.2f}, valence {record['valence']:+.2f}, "
        f"speech {record['speech_s']:.1f} s, {n} window{'s' if n != 1 else ''}){warned}"
    )


def _emit(record: dict[str, Any], fmt: str, out: TextIO) -> None:
    write_line(out, json.dumps(record) if fmt == "jsonl" else format_text(record), "the results")


def run(args: argparse.Namespace) -> int:
    # Imported here so that `edge-ser --help` does not load onnxruntime and scipy.
    from edge_ser.audio import WavFile
    from edge_ser.model import OnnxModel
    from edge_ser.pipeline import predict_clip

    cfg = load_config(args.config)
    if args.model is not None:
        cfg.model.path = args.model
    cfg.aggregate.mode = "voice_note"
    model = OnnxModel.from_config(cfg.model)
    failed = 0
    for name in args.files:
        record: dict[str, Any] = {"file": name}
        try:
            with WavFile(name) as wav:  # read a few seconds at a time
                record.update(predict_clip(wav, cfg, model).to_dict())
                if wav.notes:  # e.g. a truncated file: classified, but say so
                    record["warnings"] = list(wav.notes)
        except AudioError as exc:
            failed += 1
            record = {"file": name, "error": str(exc)}
            log.debug("skipping %s: %s", name, exc)
        _emit(record, args.format, sys.stdout)  # OutputClosed for `| head`: exit 141
    if failed:
        log.warning("%d of %d files could not be read", failed, len(args.files))
    return 1 if failed else 0
