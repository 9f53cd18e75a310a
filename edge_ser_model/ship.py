"""Train the shipped compact model on all data and write its fp32 and int8 ONNX files."""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from edge_ser import WINDOW_S
from edge_ser.errors import ConfigError, ModelError
from edge_ser.preprocess import prepare_window
from edge_ser_model import VOICE_WEIGHT
from edge_ser_model.data import Clip, labels_of, read_audio
from edge_ser_model.encoders.compact import CompactHead, CompactSER
from edge_ser_model.encoders.voice import VoiceFeatures, VoiceHead, train_voice_head
from edge_ser_model.evaluate import VoiceSetup, train_members
from edge_ser_model.train import TrainConfig

log = logging.getLogger(__name__)

QUANTIZATION = (
    "int8 static QDQ per-channel on the heads (Gemm); front-end DFT/mel/SHS weights stored int8 "
    "per-channel (weight-only, fp32 compute)"
)
VOICE_QUANTIZATION = "; voice LSTM layers 2-3 dynamic int8 (DynamicQuantizeLSTM), layer 1 fp32"
#: The licence each known corpus passes on to a model trained on it (../shared/data/README.md).
CORPUS_LICENSES = {
    "ravdess": "CC BY-NC-SA 4.0 (RAVDESS)", "urdu": "research-only (URDU)",
    "turevdb": "CC BY-NC-ND 4.0 (TurEV-DB)",
    "korean": "research-only, non-commercial (emotiontts open DB)",
}


def license_of(corpora: Sequence[str], given: str | None = None) -> str:
    """The weights' licence: ``given`` (``--license``), else inherited from the known corpora
    (both of ours are non-commercial); a corpus of unknown licence needs ``given``."""
    if given:
        return given
    unknown = sorted(set(corpora) - set(CORPUS_LICENSES))
    if unknown:
        raise ConfigError(f"--license: the licence of corpus {', '.join(unknown)} is not known "
                          "here; state it with --license TEXT (a model inherits its data's)")
    return " + ".join(CORPUS_LICENSES[c] for c in sorted(set(corpora))) + ": non-commercial"
VOICE_LICENSE = "voice branch: Resemblyzer 0.1.4 pretrained.pt, Apache-2.0 (Resemble AI)"


def assemble(members: Sequence[CompactHead], pitch: bool = True,
             voice: VoiceFeatures | None = None, voice_head: VoiceHead | None = None,
             voice_weight: float = VOICE_WEIGHT) -> CompactSER:
    """One module: the fixed front ends and the trained heads (averaged as probabilities), mixed
    log-linearly with the voice head when there is one."""
    model = CompactSER(pitch=pitch, heads=list(members), voice=voice, voice_head=voice_head,
                       voice_weight=voice_weight).eval()
    if int(members[0].feat_mean.shape[0]) != model.features.dim:
        raise ValueError("head width does not match the front end")
    return model


def calibration_windows(
    clips: Sequence[Clip], n: int = 64, seed: int = 0, window_s: float = WINDOW_S,
    skip: int = 0,
) -> NDArray[np.float32]:
    """``n`` prepared windows of real speech, spread over the clips (int8 calibration); with
    ``skip`` the first ``skip`` clips of the same draw are passed over, so ``skip=n`` of one
    call gives windows disjoint from ``n`` of another with the same seed."""
    rng = np.random.default_rng(seed)
    pick = rng.permutation(len(clips))[skip : skip + n]
    waves = read_audio([clips[int(i)] for i in pick])
    return np.stack([prepare_window(x, window_s) for x in waves]).astype(np.float32)


def int8_weights_only(model: Any, min_size: int = 4096,
                      keep: frozenset[str] = frozenset()) -> list[str]:
    """Store every large fp32 initializer still in the graph as int8 + per-row scale.

    The initializer is replaced by an int8 tensor and a ``DequantizeLinear`` that rebuilds the
    fp32 weight, so the front end keeps fp32 arithmetic but ships at a quarter of the size.
    onnxruntime does not constant-fold these while its QDQ handling is on: they run on every
    call (0.25 ms per window for the compact model's front end, measured). The scale is per
    slice along the first axis longer than 1 (rows of a Conv/MatMul weight). Initializers named
    in ``keep`` stay fp32.
    """
    from onnx import helper, numpy_helper

    done = []
    for init in list(model.graph.initializer):
        w = numpy_helper.to_array(init)
        if w.dtype != np.float32 or w.size < min_size or w.ndim < 2 or init.name in keep:
            continue
        axis = next((i for i, d in enumerate(w.shape) if d > 1), 0)
        rows = np.moveaxis(w, axis, 0).reshape(w.shape[axis], -1)
        scale = (np.abs(rows).max(axis=1) / 127.0).clip(min=1e-12).astype(np.float32)
        q = np.round(rows / scale[:, None]).clip(-127, 127).astype(np.int8)
        q = np.moveaxis(q.reshape(np.moveaxis(w, axis, 0).shape), 0, axis)
        name = init.name
        model.graph.initializer.remove(init)
        model.graph.initializer.extend([
            numpy_helper.from_array(q, name + "_int8"),
            numpy_helper.from_array(scale, name + "_scale"),
            numpy_helper.from_array(np.zeros_like(scale, dtype=np.int8), name + "_zero"),
        ])
        model.graph.node.insert(0, helper.make_node(
            "DequantizeLinear", [name + "_int8", name + "_scale", name + "_zero"], [name],
            name=name + "_weight_dequant", axis=axis))
        done.append(name)
    return done


def quantize_compact(
    fp32: Path, int8: Path, calibration: NDArray[np.float32]
) -> dict[str, Any]:
    """Static QDQ int8 (per-channel Conv/MatMul weights) with the whole front end kept fp32.

    ``edge_ser_model.quantize.quantize_int8`` keeps only the waveform convs in fp32; here the
    mel MatMul feeds a log of a power spectrum (a huge dynamic range) and must stay fp32 too,
    else int8 agrees with fp32 on a third of the windows only (measured). So must the first
    voice LSTM, whose input is a mel power spectrum without log: onnxruntime's dynamic int8 LSTM
    on all three layers agreed with fp32 on 80 % of 128 real windows. Layers 2 and 3 read the
    layer below's outputs (bounded by tanh) and run as ``DynamicQuantizeLSTM`` (int8 weights,
    activations quantized on the fly with scales that span the batch; about 2.5x faster);
    layer 1 keeps fp32 weights, which
    onnxruntime prepacks (a ``DequantizeLinear`` in front of them would not be folded while
    QDQ handling is on, and would cost the prepacking).
    """
    import tempfile

    import onnx
    from onnxruntime.quantization import (
        CalibrationDataReader,
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_dynamic,
        quantize_static,
    )
    from onnxruntime.quantization.shape_inference import quant_pre_process

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.it = iter(calibration)

        def get_next(self) -> dict[str, NDArray[np.float32]] | None:
            x = next(self.it, None)
            return None if x is None else {"waveform": x[None, :]}

    meta = {p.key: p.value for p in onnx.load(str(fp32)).metadata_props}
    with tempfile.TemporaryDirectory() as tmp:
        prep = Path(tmp) / "prep.onnx"
        quant_pre_process(str(fp32), str(prep), skip_symbolic_shape=True)
        graph = onnx.load(str(prep)).graph
        exclude = [n.name for n in graph.node if not n.name.startswith("/heads")]
        static = Path(tmp) / "static.onnx"
        quantize_static(
            str(prep), str(static), Reader(), quant_format=QuantFormat.QDQ,
            op_types_to_quantize=["Conv", "MatMul", "Gemm"], per_channel=True,
            activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
            nodes_to_exclude=exclude, calibrate_method=CalibrationMethod.MinMax,
            extra_options={"MatMulConstBOnly": True, "WeightSymmetric": True},
        )
        # graph order is topological: the first LSTM reads the mel power spectrum, the others
        # the layer below's outputs (bounded by tanh): those get int8 arithmetic
        dynamic = [n.name for n in graph.node if n.op_type == "LSTM"][1:]
        if dynamic:
            quantize_dynamic(str(static), str(int8), op_types_to_quantize=["LSTM"],
                             nodes_to_quantize=dynamic, weight_type=QuantType.QInt8,
                             per_channel=True)
        else:
            static.replace(int8)
    model = onnx.load(str(int8))
    done = sum(n.op_type == "DynamicQuantizeLSTM" for n in model.graph.node)
    if done != len(dynamic):
        raise ModelError(f"{int8}: onnxruntime quantized {done} of the {len(dynamic)} voice "
                         "LSTMs asked for")
    # the LSTMs left as float keep fp32 weights: onnxruntime prepacks those, not dequantized ones
    keep = frozenset(i for n in model.graph.node if n.op_type == "LSTM" for i in n.input[1:4] if i)
    int8_weights_only(model, keep=keep)
    scheme = QUANTIZATION + (VOICE_QUANTIZATION if dynamic else "")
    meta.update(quantization=scheme, name=meta["name"].replace("-fp32", "") + "-int8")
    if dynamic:  # per-batch activation scales: a window's scores would depend on batch mates
        meta["batching"] = "per-window"
    del model.metadata_props[:]
    for key, value in meta.items():
        entry = model.metadata_props.add()
        entry.key, entry.value = key, value
    onnx.save(model, str(int8))
    return {"scheme": scheme, "size_mb": int8.stat().st_size / 1e6,
            "calibration_windows": int(len(calibration))}


def evaluation_summary(report: dict[str, Any] | None) -> str:
    """The evaluation's figures as the metadata ``evaluation`` JSON string: a leave-one-corpus-
    out report's choice (:func:`_loco_summary`), or every system's CV means/stds."""
    if not report:
        return "{}"
    if "corpora" in report:
        return _loco_summary(report)
    out: dict[str, Any] = {"protocol": report.get("meta", {}).get("protocol", "speaker k-fold CV")}
    for name, system in report.get("systems", {}).items():
        s = system["summary"]
        out[name] = {k: [round(s[k]["mean"], 4), round(s[k]["std"], 4)]
                     for k in ("uar", "wa", "macro_f1")}
    return json.dumps(out, sort_keys=True)


def train_and_ship(
    clips: Sequence[Clip], feats: NDArray[np.float32], cfg: TrainConfig, seeds: Sequence[int],
    out_dir: Path, name: str = "edge-ser-compact", evaluation: dict[str, Any] | None = None,
    calm: str = "drop", pitch: bool = True, voice: VoiceSetup | None = None,
    license: str | None = None,
) -> list[Path]:
    """Train every member on every clip (as ``train_members``), export, quantize."""
    from edge_ser_model.export import base_metadata, export_onnx, logits
    from edge_ser_model.quantize import agreement

    all_idx = np.arange(len(clips), dtype=np.int64)
    members = train_members(clips, feats, all_idx, cfg, seeds)
    extra: dict[str, str] = {}
    if voice is None:
        module = assemble(members, pitch=pitch)
    else:
        head = train_voice_head(voice.feats, labels_of(clips), all_idx, voice.c)
        module = assemble(members, pitch=pitch, voice=voice.branch, voice_head=head,
                          voice_weight=voice.weight)
        extra = {"voice_branch": f"Resemblyzer GE2E LSTM ({voice.branch.source}), "
                                 "logistic-regression head mixed log-linearly at "
                                 f"{voice.weight:g}",
                 "voice_license": VOICE_LICENSE}
    corpora = sorted({c.corpus for c in clips})
    data = " + ".join(
        "RAVDESS actors 01-20 (calm " + ("dropped" if calm == "drop" else "as neutral") + ")"
        if c == "ravdess" else c.upper() for c in corpora
    )
    meta = base_metadata(
        "compact", f"{name}-fp32", training_data=data, license=license or license_of(corpora),
        evaluation=evaluation_summary(evaluation),
        ensemble_members=str(len(members)),
    )
    meta.update(extra)
    fp32 = out_dir / f"{name}.fp32.onnx"
    int8 = out_dir / f"{name}.int8.onnx"
    export_onnx(module, fp32, meta)
    calib = calibration_windows(clips)
    info = quantize_compact(fp32, int8, calib)
    check = calibration_windows(clips, n=128, seed=1)
    # int8 one window per call, as the daemon runs it (metadata batching: per-window)
    agree = agreement(logits(fp32, check, batch=16), logits(int8, check, batch=1))
    log.info("int8 %s (%.2f MB); agreement with fp32 on 128 real clips: %s",
             info["scheme"], info["size_mb"], agree)
    (out_dir / f"{name}.train.json").write_text(json.dumps(
        {"members": len(members), "seeds": list(seeds), "quantization": info,
         "voice": None if voice is None else {"weight": voice.weight, "c": voice.c},
         "int8_vs_fp32": agree, "clips": len(clips)}, indent=2) + "\n")
    return [fp32, int8, out_dir / f"{name}.train.json"]


# --- frozen pretrained encoders -----------------------------------------------------------------

#: int8 schemes tried in turn for a frozen encoder's graph (``--scheme auto``): the first whose
#: argmax agrees with fp32 on >= 99 % of real windows that did not calibrate it ships. Each is
#: (scheme, MatMuls kept fp32): the first block's attention projection reads the convolution
#: stem and was the most sensitive to int8 (docs/training.md)
FROZEN_SCHEMES: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("dynamic-matmul-pc", ()),
    ("dynamic-matmul-pc", ("blocks.0/qkv",)),
    ("dynamic-matmul-pc", ("qkv",)),
)
AGREEMENT_TARGET = 0.99
FROZEN_LICENSES = {
    "whisper-tiny": "encoder: Whisper tiny.en, MIT (OpenAI)",
    "distilhubert": "encoder: DistilHuBERT, Apache-2.0 (ntu-spml)",
}


def frozen_choice(evaluation: dict[str, Any] | None, representation: str | None,
                  head: str | None, encoder: str) -> dict[str, Any]:
    """What to train: ``--representation``/``--head``, else the evaluation's choice."""
    from edge_ser_model.frozen import Representation

    if representation or head:
        if not (representation and head):
            raise ConfigError("--representation and --head: give both, or neither (the "
                              "evaluation's choice)")
        Representation.parse(representation)
        return {"system": f"{head}-{representation}", "representation": representation,
                "head": head}
    if evaluation is None:
        raise ConfigError(f"--encoder {encoder}: give --evaluation loco_report.json (from "
                          "evaluate: it chooses layers, pooling and head) or --representation "
                          "SPEC --head lr|mlp")
    choice = evaluation.get("choice")
    theirs = evaluation.get("meta", {}).get("encoder")
    if not isinstance(choice, dict) or "representation" not in choice:
        raise ConfigError("--evaluation: the report holds no frozen-encoder choice (a compact "
                          "report, or cv_report.json? give loco_report.json)")
    if theirs != encoder:
        raise ConfigError(f"--evaluation: the report evaluated encoder {theirs!r}, not "
                          f"{encoder!r}")
    return choice


def lr_head(x: NDArray[np.float32], y: NDArray[np.int64], w: NDArray[np.float64],
            c: float = 0.1) -> CompactHead:
    """The balanced logistic regression as a graph module (standardise, then one Linear)."""
    import torch

    from edge_ser_model.loco import fit_lr

    clf = fit_lr(x, y, w, c)
    scaler, lr = clf[0], clf[-1]
    head = CompactHead(x.shape[1], hidden=0).eval()
    with torch.no_grad():
        head.feat_mean.copy_(torch.from_numpy(scaler.mean_.astype(np.float32)))
        head.feat_std.copy_(torch.from_numpy(scaler.scale_.astype(np.float32)))
        linear: Any = head.net[-1]
        linear.weight.copy_(torch.from_numpy(lr.coef_.astype(np.float32)))
        linear.bias.copy_(torch.from_numpy(lr.intercept_.astype(np.float32)))
    return head


def _loco_summary(report: dict[str, Any]) -> str:
    """A leave-one-corpus-out report's choice and figures for the metadata ``evaluation``."""
    choice = report["choice"]["system"]
    s = report["systems"][choice]
    out = {"protocol": "leave-one-corpus-out", "system": choice,
           "uar_mean": round(s["uar_mean"], 4), "uar_min": round(s["uar_min"], 4),
           "per_corpus_uar": {c: round(v["uar"], 4) for c, v in s["per_corpus"].items()}}
    base = report["systems"].get("egemaps_lr")
    if base:
        out["egemaps_lr_uar_mean"] = round(base["uar_mean"], 4)
    return json.dumps(out, sort_keys=True)


def train_and_ship_frozen(
    clips: Sequence[Clip], feats: NDArray[np.float32], backbone: Any, choice: dict[str, Any],
    cfg: TrainConfig, args: Any, name: str, evaluation: dict[str, Any] | None, licence: str,
) -> list[Path]:
    """Train the chosen head on every clip, export waveform -> logits + embedding, quantize."""
    from dataclasses import asdict

    import torch

    from edge_ser_model.export import base_metadata, export_frozen, logits
    from edge_ser_model.frozen import FrozenSER, Representation, smooth_activations
    from edge_ser_model.loco import sample_weights
    from edge_ser_model.quantize import agreement, quantize_int8, resolve
    from edge_ser_model.train import train_head

    rep = Representation.parse(choice["representation"])
    y = labels_of(clips)
    w = sample_weights(clips, args.balance)
    x = rep.select(feats, backbone.width)
    everyone = np.arange(len(clips), dtype=np.int64)
    if choice["head"] == "lr":
        heads = [lr_head(x[:, 0], y, w, float(choice.get("c", 0.1)))]
    else:
        heads = []
        for seed in args.seeds:
            head, _ = train_head(x, y, everyone, None, TrainConfig(**{**asdict(cfg), "seed": seed}),
                                 w)
            heads.append(head)
    module = FrozenSER(backbone, rep, heads, backbone.width).eval()
    calib = calibration_windows(clips, n=min(64, max(1, len(clips) // 2)), seed=0)
    smoothed = smooth_activations(module, torch.from_numpy(calib))
    corpora = sorted({c.corpus for c in clips})
    calm = "dropped" if args.calm == "drop" else "trained as neutral"
    meta = base_metadata(
        backbone.name, f"{name}-fp32", training_data=" + ".join(corpora) + f" (calm {calm})",
        license=f"{licence}; {FROZEN_LICENSES[backbone.name]}",
        evaluation=evaluation_summary(evaluation), encoder_weights=backbone.weights_id,
        representation=rep.name, head=f"{choice['head']} x{len(heads)}",
        outputs="logits,embedding", batching="per-window",
    )
    out_dir = Path(args.out)
    fp32, int8 = out_dir / f"{name}.fp32.onnx", out_dir / f"{name}.int8.onnx"
    exported = export_frozen(module, fp32, meta)
    check = calibration_windows(clips, n=400, seed=0, skip=len(calib))  # none calibrated int8
    ref = logits(fp32, check)
    schemes = FROZEN_SCHEMES if args.scheme == "auto" else ((resolve(args.scheme), ()),)
    tried: list[dict[str, Any]] = []
    for scheme, keep in schemes:
        info = quantize_int8(fp32, int8, calib, scheme, keep_fp32=keep)
        agree = agreement(ref, logits(int8, check))
        tried.append({**info, "keep_fp32": list(keep), "int8_vs_fp32": agree})
        log.info("int8 %s (fp32: %s): %.2f MB, argmax agreement with fp32 on %d real windows "
                 "%.4f", scheme, ", ".join(keep) or "none", info["size_mb"], len(check),
                 agree["argmax_agreement"])
        if agree["argmax_agreement"] >= AGREEMENT_TARGET:
            break
    else:
        best = max(range(len(tried)),
                   key=lambda i: tried[i]["int8_vs_fp32"]["argmax_agreement"])
        log.warning("no int8 scheme reached %.0f %% agreement; shipping the closest",
                    100 * AGREEMENT_TARGET)
        if best != len(tried) - 1:
            quantize_int8(fp32, int8, calib, schemes[best][0], keep_fp32=schemes[best][1])
        tried.append(tried[best])
    report = {"encoder": backbone.name, "weights": backbone.weights_id, "choice": choice,
              "members": len(heads), "clips": len(clips), "smoothed_layer_norms": smoothed,
              "fp32": exported, "int8": tried[-1], "schemes_tried": tried}
    (out_dir / f"{name}.train.json").write_text(json.dumps(report, indent=2) + "\n")
    from edge_ser_model.card import frozen_card

    card = frozen_card(meta, report, evaluation, out_dir / f"{name}.MODEL_CARD.md")
    return [fp32, int8, out_dir / f"{name}.train.json", card]
