"""Model cards written by the kit, one Markdown file each.

``export_distilhubert`` measures size, int8-vs-fp32 agreement on real speech and (here) the
per-window latency of the fp32 ONNX, the int8 ONNX and PyTorch eager at one thread, and writes
``distilhubert.MODEL_CARD.md`` from its report. With random weights the card says in its first
lines that the file is no speech model and which figures mean nothing for it.
``build`` / ``train`` of a frozen encoder write ``<name>.MODEL_CARD.md`` (:func:`frozen_card`):
what was chosen and why, the leave-one-corpus-out table, data and licences, int8 agreement.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch
from numpy.typing import NDArray

from edge_ser_model.quantize import DESCRIPTIONS

#: the DistilHuBERT targets: key, what, limit, whether the value must be at least it, unit
TARGETS = (
    ("int8_size_mb", "int8 file size", 24.0, False, "MB"),
    ("int8_vs_fp32_speedup", "int8 speed-up vs its fp32 ONNX (1 thread)", 1.0, True, "x"),
    ("int8_vs_torch_speedup", "int8 speed-up vs PyTorch eager (1 thread)", 1.5, True, "x"),
    ("argmax_agreement", "int8/fp32 argmax agreement on real speech", 0.99, True, ""),
)
WEIGHTS_LICENCE = "Apache-2.0 (ntu-spml/distilhubert as published; check the copy you use)"


def median_ms(run: Callable[[], object], reps: int) -> float:
    """Median wall time of ``run`` in ms over ``reps`` calls after one warm-up call."""
    run()
    times = []
    for _ in range(reps):
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    return float(np.median(times) * 1000.0)


def latency(fp32: Path, int8: Path, module: torch.nn.Module, window: NDArray[np.float32],
            reps: int = 5) -> dict[str, float]:
    """Median ms per window at one thread: fp32 ONNX, int8 ONNX, PyTorch eager (same window)."""
    from edge_ser_model.export import session

    x = np.ascontiguousarray(window[None, :], dtype=np.float32)
    out: dict[str, float] = {}
    for name, path in (("fp32_ms", fp32), ("int8_ms", int8)):
        out[name] = median_ms(partial(session(path, threads=1).run, ["logits"], {"waveform": x}),
                              reps)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with torch.inference_mode():
            t = torch.from_numpy(x)
            out["torch_eager_ms"] = median_ms(lambda: module(t), reps)
    finally:
        torch.set_num_threads(threads)
    out["reps"] = float(reps)
    return out


def figures(report: dict[str, Any]) -> dict[str, float | None]:
    """The target figures from an export report (None where not measured)."""
    lat = report.get("latency_1_thread") or {}
    int8_ms = lat.get("int8_ms")
    return {
        "int8_size_mb": report["int8"]["size_mb"],
        "int8_vs_fp32_speedup": lat["fp32_ms"] / int8_ms if int8_ms else None,
        "int8_vs_torch_speedup": lat["torch_eager_ms"] / int8_ms if int8_ms else None,
        "argmax_agreement": report["int8_vs_fp32"]["argmax_agreement"],
    }


def _fmt(value: float | None, unit: str) -> str:
    if value is None:
        return "not measured"
    if unit == "":
        return f"{100.0 * value:.1f} %"
    return f"{value:.2f} {unit}"


def card_text(report: dict[str, Any]) -> str:
    """The Markdown model card of one DistilHuBERT export."""
    random = report["weights"] == "random weights"
    scheme = report["int8"]["scheme"]
    agree = report["int8_vs_fp32"]
    lines = ["# Model card: edge-ser DistilHuBERT (int8)", ""]
    if random:
        lines += ["**Random weights (`--random-init`): this file is not a speech-emotion model.** "
                  "Its size, latency and memory are those of the real architecture; its "
                  "predictions, and so the agreement figure below, mean nothing. Export with "
                  "`--weights DIR` (a local ntu-spml/distilhubert) and a trained `--checkpoint` "
                  "before trusting any of them.", ""]
    lines += [
        "| | |", "|---|---|",
        f"| files | `distilhubert.int8.onnx` ({report['int8']['size_mb']:.2f} MB), "
        f"`distilhubert.fp32.onnx` ({report['fp32']['size_mb']:.2f} MB) |",
        "| encoder | DistilHuBERT (7 conv layers, 2 transformer layers of 768), frozen, chunked "
        "conv front end; an MLP head (768 -> 256 -> 4) on the mean of the last hidden states "
        "over the speech frames |",
        f"| encoder weights | {report['weights']} |",
        f"| head | {report.get('head', 'not trained')} |",
        f"| int8 scheme | `{scheme}`: {DESCRIPTIONS.get(scheme, scheme)} |",
        f"| window | {report['window_s']:g} s at 16 kHz |",
        f"| licence | encoder weights: {WEIGHTS_LICENCE if not random else 'none (random)'}; "
        "head: that of its training data |",
        "", "## Figures of this export (the DistilHuBERT targets)", "",
        "| figure | value | target | result |", "|---|---|---|---|",
    ]
    got = figures(report)
    for key, what, limit, at_least, unit in TARGETS:
        value = got[key]
        ok = None if value is None else (value >= limit if at_least else value <= limit)
        bound = (">= " if at_least else "<= ") + _fmt(limit, unit)
        verdict = "n/a" if ok is None else ("pass" if ok else "**FAIL**")
        lines.append(f"| {what} | {_fmt(value, unit)} | {bound} | {verdict} |")
    lat = report.get("latency_1_thread")
    lines += [
        "",
        f"Agreement: {int(agree['windows'])} real speech windows from "
        f"`{report.get('check_windows_from', '?')}` not used for calibration; mean |logit "
        f"difference| {agree['mean_abs_logit_diff']:.3f} at fp32 logit std "
        f"{agree['fp32_logit_std']:.2f}. fp32 ONNX vs PyTorch: max |difference| "
        f"{report['fp32']['max_abs_diff_vs_torch']:.1e}.",
    ]
    if lat:
        lines += ["", f"Latency (one {report['window_s']:g}-s window, 1 thread, median of "
                  f"{int(lat['reps'])} after a "
                  f"warm-up, on the exporting machine): fp32 ONNX {lat['fp32_ms']:.0f} ms, int8 "
                  f"{lat['int8_ms']:.0f} ms, PyTorch eager (the same module) "
                  f"{lat['torch_eager_ms']:.0f} ms. "
                  "`edge-ser bench` measures latency per thread count, RSS and temperature on "
                  "the board itself."]
    if random:
        lines += ["", "With random weights every int8 scheme lands at 85-92 % agreement: the "
                  "random conv activations are heavy-tailed and the random head's margins are "
                  "small (docs/distilhubert.md)."]
    return "\n".join(lines) + "\n"


def write_card(report: dict[str, Any], out_dir: Path) -> Path:
    path = Path(out_dir) / "distilhubert.MODEL_CARD.md"
    path.write_text(card_text(report))
    return path


def frozen_card(meta: dict[str, str], report: dict[str, Any],
                evaluation: dict[str, Any] | None, path: Path) -> Path:
    """The card of a frozen-encoder model built by ``train`` (figures from its evaluation)."""
    random = report["weights"] == "random"
    lines = [f"# Model card: {meta['name'].removesuffix('-fp32')}", ""]
    if random:
        lines += ["**Random encoder weights: this file is no speech model.** It exercises the "
                  "path (export, int8, contract); its accuracy figures mean nothing.", ""]
    agree = report["int8"]["int8_vs_fp32"]
    kept = ", ".join(report["int8"].get("keep_fp32", [])) or "none"
    lines += [
        "| | |", "|---|---|",
        f"| encoder | {meta['encoder']} (weights {report['weights']}), frozen |",
        f"| representation | {meta['representation']} (layer indices: 0 = the stem) |",
        f"| head | {meta['head']} |",
        f"| training data | {meta['training_data']}: {report['clips']} clips |",
        f"| licence | {meta['license']} |",
        f"| int8 | {report['int8']['scheme']}, MatMuls kept fp32: {kept}; "
        f"{report['int8']['size_mb']:.1f} MB (fp32 {report['fp32']['size_mb']:.1f} MB) |",
        f"| int8/fp32 argmax agreement | {agree['argmax_agreement']:.3f} on "
        f"{agree['windows']:.0f} real windows (none used to calibrate it) |", "",
    ]
    if evaluation and "corpora" in evaluation:
        names = evaluation["corpora"]
        lines += ["## Leave-one-corpus-out (train on the others, test on one)", "",
                  "| system | " + " | ".join(names) + " | mean | worst |",
                  "|---" * (len(names) + 3) + "|"]
        systems = evaluation["systems"]
        for key in sorted(systems, key=lambda k: -systems[k]["uar_mean"]):
            s = systems[key]
            mark = " (this model)" if key == evaluation["choice"]["system"] else ""
            cells = " | ".join(f"{s['per_corpus'][c]['uar']:.3f}" for c in names)
            lines.append(f"| {key}{mark} | {cells} | {s['uar_mean']:.3f} | {s['uar_min']:.3f} |")
        lines.append("")
    lines += ["Known limits: the four labels only; windows of one speaker; scores are not "
              "calibrated probabilities. The weights inherit the training data's licences.", ""]
    path.write_text("\n".join(lines))
    return path
