"""``edge-ser-model export``: its arguments (torch-free, so ``--help`` stays light) and the run.

The work is in :mod:`edge_ser_model.export`, imported only when an export runs.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from edge_ser import WINDOW_S
from edge_ser.errors import EdgeSerError


def add_export_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--encoder", choices=("distilhubert", "compact"), default="distilhubert")
    src = parser.add_mutually_exclusive_group()
    src.add_argument("--weights", type=Path, metavar="DIR",
                     help="local ntu-spml/distilhubert directory holding pytorch_model.bin")
    src.add_argument("--random-init", action="store_true",
                     help="the exact architecture with random weights (for tests and benchmarks)")
    parser.add_argument("--sha256", default=None,
                        help="expected sha256 of pytorch_model.bin (default: the published one)")
    parser.add_argument("--no-sha256-check", action="store_true")
    parser.add_argument("--checkpoint", type=Path, metavar="PT",
                        help="trained state dict (torch.save) to load before export")
    parser.add_argument("--out", type=Path, default=Path("build/models"), metavar="DIR")
    parser.add_argument("--scheme", default="auto",
                        help="int8 scheme: auto (= qdq) or one of edge_ser_model.quantize.SCHEMES")
    parser.add_argument("--calibration-data", type=Path, metavar="DIR",
                        help="real speech (corpus dirs with manifest.csv, or WAVs); "
                        "default ../shared/data, else examples/clips")
    parser.add_argument("--window-s", type=float, default=WINDOW_S)


def _export_compact(args: argparse.Namespace) -> dict[str, Any]:
    from edge_ser_model.encoders import build_encoder
    from edge_ser_model.export import (
        base_metadata,
        default_calibration_source,
        export_onnx,
        load_checkpoint,
        logits,
    )
    from edge_ser_model.quantize import agreement, quantize_int8, speech_files, speech_windows

    module = build_encoder("compact")
    if args.checkpoint is not None:
        load_checkpoint(module, args.checkpoint)
    files = speech_files(args.calibration_data or default_calibration_source())
    out: Path = args.out
    fp32, int8 = out / "compact.fp32.onnx", out / "compact.int8.onnx"
    meta = base_metadata("compact", "edge-ser-compact-fp32", args.window_s)
    report: dict[str, Any] = {"encoder": "compact",
                              "fp32": export_onnx(module, fp32, meta, args.window_s)}
    report["int8"] = quantize_int8(fp32, int8, speech_windows(files, 64, 0, args.window_s),
                                   args.scheme)
    check = speech_windows(files, 100, 1, args.window_s)
    report["int8_vs_fp32"] = agreement(logits(fp32, check, batch=8), logits(int8, check, batch=8))
    (out / "compact.report.json").write_text(json.dumps(report, indent=2) + "\n")
    return report


def run_export(args: argparse.Namespace) -> int:
    """``edge-ser-model export``: fp32 + int8 ONNX and a JSON report under ``--out``."""
    from edge_ser_model.cli import check_out_dir
    from edge_ser_model.export import export_distilhubert

    check_out_dir(args.out)
    if args.encoder == "distilhubert":
        if args.weights is None and not args.random_init:
            raise EdgeSerError("export: distilhubert needs --weights DIR or --random-init")
        report = export_distilhubert(
            args.out, weights_dir=args.weights, random_init=args.random_init,
            scheme=args.scheme, calibration_data=args.calibration_data,
            checkpoint=args.checkpoint, expected_sha256=args.sha256,
            use_default_sha256=not args.no_sha256_check, window_s=args.window_s)
    else:
        report = _export_compact(args)
    agree = report["int8_vs_fp32"]
    print(f"{args.encoder}: fp32 {report['fp32']['size_mb']:.1f} MB, int8 "
          f"{report['int8']['size_mb']:.1f} MB ({report['int8']['scheme']}); int8/fp32 argmax "
          f"agreement {agree['argmax_agreement']:.3f} on {agree['windows']:.0f} real windows, "
          f"mean |logit diff| {agree['mean_abs_logit_diff']:.3g}; written to {args.out}"
          + (" (with distilhubert.MODEL_CARD.md)" if args.encoder == "distilhubert" else ""))
    return 0
