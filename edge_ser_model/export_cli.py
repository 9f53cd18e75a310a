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
    parser.add_argument("--encoder", choices=("distilhubert", "whisper-tiny", "compact"),
                        default="distilhubert",
                        help="whisper-tiny: the frozen encoder's graph with an untrained head "
                        "(cost and int8 checks; a trained one comes from build / train)")
    src = parser.add_mutually_exclusive_group()
    src.add_argument("--weights", type=Path, metavar="DIR",
                     help="local weights: ntu-spml/distilhubert directory holding "
                     "pytorch_model.bin, or Whisper tiny.en (see edge-ser-model build)")
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
    parser.add_argument("--representation", default="L2-meanstd", metavar="SPEC",
                        help="whisper-tiny: the layers and pooling the head reads")


def _export_whisper(args: argparse.Namespace) -> dict[str, Any]:
    """The frozen Whisper graph with a data-initialised, untrained LR head: its size, cost and
    int8 agreement on real speech, without a training run."""
    import numpy as np

    from edge_ser_model.encoders.compact import CompactHead
    from edge_ser_model.export import (
        base_metadata,
        default_calibration_source,
        export_frozen,
        logits,
    )
    from edge_ser_model.frozen import (
        FrozenSER,
        Representation,
        load_backbone,
        smooth_activations,
    )
    from edge_ser_model.quantize import agreement, quantize_int8, speech_files, speech_windows
    from edge_ser_model.ship import FROZEN_SCHEMES

    if args.weights is None and not args.random_init:
        raise EdgeSerError("export: whisper-tiny needs --weights DIR or --random-init")
    if args.checkpoint is not None:
        raise EdgeSerError("export: --checkpoint is for distilhubert; a trained whisper-tiny "
                           "model comes from edge-ser-model build / train")
    rep = Representation.parse(args.representation)
    backbone = load_backbone("whisper-tiny", args.weights, args.random_init, args.sha256,
                             check=not args.no_sha256_check)
    files = speech_files(args.calibration_data or default_calibration_source())
    calib = speech_windows(files, 32, 0, args.window_s)
    check = speech_windows(files, 100, 1, args.window_s)
    import torch

    width = backbone.width * len(rep.layers) * (1 if rep.pooling == "mean" else 2)
    head = CompactHead(width, hidden=0).eval()
    model = FrozenSER(backbone, rep, [head], backbone.width).eval()
    with torch.no_grad():  # standardise with real speech, random directions: logits that vary
        emb = model.embed(torch.from_numpy(calib))
        head.feat_mean.copy_(emb.mean(0))
        head.feat_std.copy_(emb.std(0).clamp_min(1e-3))
        linear: Any = head.net[-1]
        linear.weight.normal_(0.0, 1.0 / np.sqrt(width))
    smooth_activations(model, torch.from_numpy(calib))
    out: Path = args.out
    fp32, int8 = out / "whisper-tiny.fp32.onnx", out / "whisper-tiny.int8.onnx"
    meta = base_metadata("whisper-tiny", "edge-ser-whisper-tiny-untrained-fp32", args.window_s,
                         representation=rep.name, batching="per-window",
                         training_data="none (head not trained)",
                         encoder_weights=backbone.weights_id)
    report: dict[str, Any] = {"encoder": "whisper-tiny", "weights": backbone.weights_id,
                              "fp32": export_frozen(model, fp32, meta, args.window_s)}
    scheme, keep = (FROZEN_SCHEMES[1] if args.scheme == "auto" else (args.scheme, ()))
    report["int8"] = quantize_int8(fp32, int8, calib, scheme, keep_fp32=keep)
    report["int8_vs_fp32"] = agreement(logits(fp32, check), logits(int8, check))
    (out / "whisper-tiny.report.json").write_text(json.dumps(report, indent=2) + "\n")
    return report


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
    elif args.encoder == "whisper-tiny":
        report = _export_whisper(args)
    else:
        report = _export_compact(args)
    agree = report["int8_vs_fp32"]
    print(f"{args.encoder}: fp32 {report['fp32']['size_mb']:.1f} MB, int8 "
          f"{report['int8']['size_mb']:.1f} MB ({report['int8']['scheme']}); int8/fp32 argmax "
          f"agreement {agree['argmax_agreement']:.3f} on {agree['windows']:.0f} real windows, "
          f"mean |logit diff| {agree['mean_abs_logit_diff']:.3g}; written to {args.out}"
          + (" (with distilhubert.MODEL_CARD.md)" if args.encoder == "distilhubert" else ""))
    return 0
