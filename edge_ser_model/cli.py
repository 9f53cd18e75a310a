"""``edge-ser-model``: build, evaluate, train and export edge-ser models.

- ``evaluate``: leave-one-corpus-out (models are chosen by its mean UAR) and speaker-independent
  k-fold CV, beside the eGeMAPS baseline on the same splits; for a frozen pretrained encoder it
  also chooses the layers, pooling and head. Writes loco_report.* / cv_report.*.
- ``train``: train on all of the corpora and write the fp32 + int8 ONNX models.
- ``build``: ``evaluate`` then ``train`` with its choice: the shipped model in one command.
- ``export``: export / quantize an encoder (``edge_ser_model.export``).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from edge_ser.errors import EdgeSerError
from edge_ser_model import VOICE_WEIGHT
from edge_ser_model.data import DEFAULT_CORPORA, Clip

if TYPE_CHECKING:
    import numpy as np
    from numpy.typing import NDArray

    from edge_ser_model.train import TrainConfig

#: top-level modules of the train extra: without them a command says which to install
TRAIN_EXTRA = frozenset({"torch", "transformers", "onnx", "onnxscript", "sklearn", "opensmile",
                         "matplotlib", "resemblyzer"})

log = logging.getLogger(__name__)

ENCODER_CHOICES = ("whisper-tiny", "distilhubert", "compact")
#: the corpora: $EDGE_SER_DATA (as the tests read it), else ../shared/data
DEFAULT_DATA = Path(os.environ.get("EDGE_SER_DATA") or "../shared/data")
DEFAULT_CACHE = Path(".cache/edge-ser-model")
#: where scripts/fetch-whisper puts Whisper tiny.en (the --weights default when present)
WHISPER_WEIGHTS = Path("weights/whisper-tiny.en")


def _at_least(low: int) -> Callable[[str], int]:
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
        if value < low:
            raise argparse.ArgumentTypeError(f"{value} is below {low}")
        return value

    return parse


def _seeds(text: str) -> list[int]:
    try:
        seeds = [int(s) for s in text.split(",") if s.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a comma-separated list of whole numbers") from None
    if not seeds:
        raise argparse.ArgumentTypeError("needs at least one seed")
    return seeds


def _names(text: str) -> list[str]:
    names = [c.strip() for c in text.split(",") if c.strip()]
    if not names:
        raise argparse.ArgumentTypeError("needs at least one corpus folder name")
    return names


def check_out_dir(out: Path, option: str = "--out") -> None:
    """``out`` is a folder, or one that can be made: checked before minutes of work, not after;
    nothing is created here (a command refused later leaves no folder behind)."""
    if out.exists() and not out.is_dir():
        raise EdgeSerError(f"{option}: {out} is a file, not a folder")
    parent = out
    while not parent.exists():
        parent = parent.parent
    if not parent.is_dir():
        raise EdgeSerError(f"{option}: cannot create {out} ({parent} is a file)")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise EdgeSerError(f"{option}: cannot create or write {out} ({parent} is not writable)")


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--encoder", choices=ENCODER_CHOICES, default="whisper-tiny",
                   help="whisper-tiny (default: frozen Whisper tiny.en + trained head), "
                   "distilhubert (the paper's frozen encoder + head) or compact (trained here)")
    p.add_argument("--weights", type=Path, metavar="DIR",
                   help="local copy of the frozen encoder's weights (whisper-tiny: a "
                   "CTranslate2 folder with model.bin, OpenAI's tiny.en.pt or a Hugging Face "
                   "folder; distilhubert: the ntu-spml/distilhubert folder)")
    p.add_argument("--random-init", action="store_true",
                   help="the frozen encoder with random weights (tests: figures mean nothing)")
    p.add_argument("--sha256", default=None,
                   help="expected sha256 of the weights file (default: the published one)")
    p.add_argument("--no-sha256-check", action="store_true",
                   help="load weights whose sha256 is not known (say which you trust instead)")
    p.add_argument("--data", type=Path, default=DEFAULT_DATA,
                   help="corpora root, one folder with a manifest.csv per corpus (default: "
                   "$EDGE_SER_DATA, else ../shared/data)")
    p.add_argument("--corpora", type=_names, default=list(DEFAULT_CORPORA),
                   help="comma-separated corpus folders (default " + ",".join(DEFAULT_CORPORA)
                   + ")")
    p.add_argument("--calm", choices=["drop", "neutral"], default="drop",
                   help="calm (RAVDESS, TurEV-DB): drop it (default) or train on it as neutral "
                   "(leave-one-corpus-out never tests it)")
    p.add_argument("--balance", choices=["corpus", "class"], default="corpus",
                   help="frozen encoders: weigh every (corpus, label) cell alike (default) or "
                   "only the labels")
    p.add_argument("--cache", type=Path, default=DEFAULT_CACHE, help="feature cache folder")
    p.add_argument("--copies", type=_at_least(0), default=None,
                   help="augmented copies per clip (default 4 for compact, 2 for a frozen "
                   "encoder, whose features cost more to compute)")
    p.add_argument("--seeds", type=_seeds, default=[0, 1, 2, 3, 4, 5],
                   help="ensemble member seeds, comma-separated (default 0,1,2,3,4,5)")
    p.add_argument("--epochs", type=_at_least(1), default=80)
    p.add_argument("--patience", type=int, default=0,
                   help="early-stopping patience in epochs on a speaker-disjoint validation "
                   "split (paper: 6); 0 (default, measured better): all epochs, every speaker")
    p.add_argument("--lr", type=float, default=3e-3)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--hidden", type=int, default=64, help="MLP width (0: linear head)")
    p.add_argument("--dropout", type=float, default=0.3)
    p.add_argument("--no-pitch", action="store_true", help="leave out the SHS pitch features")
    p.add_argument("--mixup", type=float, default=0.0, help="mixup alpha (0: off)")
    p.add_argument("--threads", type=_at_least(1), default=1,
                   help="torch threads (default 1: two were 40x slower with another process "
                   "busy on a 2-core machine; 2 helps only on an idle one)")
    p.add_argument("--limit", type=_at_least(0), default=0,
                   help="use only N clips, every k-th of all (tests)")
    p.add_argument("--no-voice", action="store_true",
                   help="leave out the pretrained voice branch (encoders/voice.py)")
    p.add_argument("--voice-weights", type=Path, default=None,
                   help="Resemblyzer pretrained.pt (default: the installed resemblyzer package's)")
    p.add_argument("--voice-random-init", action="store_true",
                   help="voice branch with random weights (tests; no weights file needed)")
    p.add_argument("--voice-weight", type=float, default=VOICE_WEIGHT,
                   help="weight of the voice head in the log-linear mix of probabilities (0-1)")
    p.add_argument("--voice-c", type=float, default=0.01,
                   help="inverse L2 strength of the voice head's logistic regression")


def _evaluate_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--protocol", choices=["loco", "cv", "both"], default="both",
                   help="leave-one-corpus-out (chooses the model), speaker-independent k-fold "
                   "CV, or both (default)")
    p.add_argument("--folds", type=_at_least(2), default=5)
    p.add_argument("--fold-seed", type=int, default=0)
    p.add_argument("--no-baseline", action="store_true")


def _train_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--name", default=None,
                   help="file name stem (default edge-ser-<encoder>)")
    p.add_argument("--license", default=None, metavar="TEXT",
                   help="licence of the weights for the metadata (default: inherited from the "
                   "known corpora; needed for any other corpus)")
    p.add_argument("--scheme", default="auto",
                   help="frozen encoders: int8 scheme (auto: the first that keeps argmax "
                   "agreement with fp32 >= 99%% on real speech)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="edge-ser-model", description=__doc__.splitlines()[0])
    parser.add_argument("--log-level", default="INFO",
                        choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    bu = sub.add_parser("build", help="evaluate, then train and export the chosen model")
    _common(bu)
    _evaluate_arguments(bu)
    _train_arguments(bu)
    bu.add_argument("--out", type=Path, default=Path("models"),
                    help="output folder (reports under OUT/eval)")
    tr = sub.add_parser("train", help="train on all data with an evaluation's choice, write ONNX")
    _common(tr)
    _train_arguments(tr)
    tr.add_argument("--out", type=Path, default=Path("models"), help="output folder")
    tr.add_argument("--evaluation", type=Path, default=None,
                    help="report of evaluate (loco_report.json, or cv_report.json for compact): "
                    "its figures go into the metadata and, for a frozen encoder, its choice of "
                    "layers, pooling and head is what is trained")
    tr.add_argument("--representation", default=None, metavar="SPEC",
                    help="frozen encoders, instead of --evaluation's choice: e.g. L2-mean")
    tr.add_argument("--head", choices=["lr", "mlp"], default=None,
                    help="frozen encoders, instead of --evaluation's choice")
    ev = sub.add_parser("evaluate", help="leave-one-corpus-out and speaker CV vs eGeMAPS")
    _common(ev)
    _evaluate_arguments(ev)
    ev.add_argument("--out", type=Path, default=Path("models/eval"))
    ex = sub.add_parser("export", help="export an encoder to ONNX and int8")
    from edge_ser_model.export_cli import add_export_arguments

    add_export_arguments(ex)
    return parser


def _train_config(args: argparse.Namespace) -> TrainConfig:
    from edge_ser_model.train import TrainConfig

    return TrainConfig(
        epochs=args.epochs, patience=args.patience, lr=args.lr, batch_size=args.batch_size,
        mixup=args.mixup, head={"hidden": args.hidden, "dropout": args.dropout},
    )


def _check_args(args: argparse.Namespace) -> None:
    """Options checked before minutes of feature extraction, not after."""
    if not 0.0 <= args.voice_weight <= 1.0:
        raise EdgeSerError(f"--voice-weight: {args.voice_weight} is not between 0 and 1")
    if args.patience < 0:
        raise EdgeSerError(f"--patience: {args.patience} is negative (0: no early stopping)")
    frozen = args.encoder != "compact"
    if args.copies is None:
        args.copies = 2 if frozen else 4
    if (args.encoder == "whisper-tiny" and args.weights is None and not args.random_init
            and WHISPER_WEIGHTS.is_dir()):
        args.weights = WHISPER_WEIGHTS
    if frozen and args.weights is None and not args.random_init:
        hint = (" (bash scripts/fetch-whisper puts them in weights/whisper-tiny.en)"
                if args.encoder == "whisper-tiny" else " (docs/distilhubert.md)")
        raise EdgeSerError(f"--encoder {args.encoder}: give --weights DIR, a local copy of its "
                           f"weights{hint}, or --random-init")
    compact_only = [opt for opt, given in (
        ("--voice-weights", args.voice_weights is not None),
        ("--voice-random-init", args.voice_random_init), ("--no-voice", args.no_voice),
        ("--no-pitch", args.no_pitch)) if given]
    if frozen and compact_only:
        raise EdgeSerError(f"{', '.join(compact_only)}: only for --encoder compact (this is "
                           f"--encoder {args.encoder})")
    if not frozen and (args.weights is not None or args.random_init):
        raise EdgeSerError("--weights / --random-init: the compact encoder is trained here "
                           "(its voice branch takes --voice-weights)")
    if frozen and getattr(args, "scheme", "auto") != "auto":
        from edge_ser_model.quantize import resolve

        resolve(args.scheme)
    if frozen and getattr(args, "representation", None):
        from edge_ser_model.frozen import Representation

        rep = Representation.parse(args.representation)
        layers = 5 if args.encoder == "whisper-tiny" else 3
        if max(rep.layers) >= layers:
            raise EdgeSerError(f"--representation: {args.encoder} has layers 0-{layers - 1} "
                               f"(0: the stem), not {max(rep.layers)}")


def _clips(args: argparse.Namespace) -> list[Clip]:
    """Every clip, calm included as neutral (one feature cache serves both --calm modes)."""
    from edge_ser_model.data import load_corpora

    clips = load_corpora(args.data, args.corpora, calm="neutral")
    if args.limit:
        clips = clips[:: max(1, len(clips) // args.limit)][: args.limit]
    return list(clips)


def _keep(args: argparse.Namespace, clips: list[Clip]) -> NDArray[np.int64]:
    """Row indices left after ``--calm``."""
    import numpy as np

    return np.array([i for i, c in enumerate(clips) if args.calm == "neutral" or not c.calm],
                    dtype=np.int64)


def _load(args: argparse.Namespace) -> tuple[list[Clip], NDArray[np.float32], Any]:
    """Clips, compact feature vectors and the voice setup (None with ``--no-voice``)."""
    import torch

    from edge_ser_model.encoders.compact import CompactFeatures
    from edge_ser_model.encoders.voice import VoiceFeatures
    from edge_ser_model.evaluate import VoiceSetup
    from edge_ser_model.features import compute_features

    _check_args(args)
    torch.set_num_threads(args.threads)
    # the voice weights are checked before minutes of feature extraction, not after
    voice_fe = None if args.no_voice else VoiceFeatures(args.voice_weights,
                                                        random_init=args.voice_random_init)
    clips = _clips(args)
    keep = _keep(args, clips)
    frontend = CompactFeatures(pitch=not args.no_pitch)
    feats = compute_features(clips, frontend, copies=args.copies, cache_dir=args.cache)
    voice = None
    if voice_fe is not None:
        vfeats = compute_features(clips, voice_fe, copies=args.copies, cache_dir=args.cache)
        voice = VoiceSetup(voice_fe, vfeats[keep], args.voice_weight, args.voice_c)
    return [clips[i] for i in keep], feats[keep], voice


def _load_frozen(args: argparse.Namespace) -> tuple[list[Clip], NDArray[np.float32], Any]:
    """Clips, every layer's pooled statistics and the backbone of a frozen encoder."""
    import torch

    from edge_ser_model.features import compute_features
    from edge_ser_model.frozen import BackboneFeatures, load_backbone

    _check_args(args)
    torch.set_num_threads(args.threads)
    backbone = load_backbone(args.encoder, args.weights, args.random_init, args.sha256,
                             check=not args.no_sha256_check)
    clips = _clips(args)
    keep = _keep(args, clips)
    feats = compute_features(clips, BackboneFeatures(backbone), copies=args.copies,
                             cache_dir=args.cache)
    return [clips[i] for i in keep], feats[keep], backbone


def _meta(args: argparse.Namespace, protocol: str) -> dict[str, object]:
    settings = {k: str(v) for k, v in vars(args).items() if not k.startswith("_")}
    return {"protocol": protocol, "encoder": args.encoder,
            "data": f"{','.join(args.corpora)}, calm={args.calm}", "settings": settings}


def run_evaluate(args: argparse.Namespace) -> int:
    check_out_dir(args.out)
    if args.encoder == "compact":
        from edge_ser_model.evaluate import evaluate_compact

        clips, feats, voice = _load(args)
        lines = evaluate_compact(args, clips, feats, voice, _train_config(args), _meta)
    else:
        from edge_ser_model.evaluate import evaluate_frozen

        clips, feats, backbone = _load_frozen(args)
        lines = evaluate_frozen(args, clips, feats, backbone, _train_config(args), _meta)
    for line in lines:
        print(line)
    return 0


def run_train(args: argparse.Namespace) -> int:
    from edge_ser_model.ship import license_of

    check_out_dir(args.out)
    evaluation = _evaluation(args.evaluation) if args.evaluation else None
    licence = license_of(args.corpora, args.license)
    name = args.name or f"edge-ser-{args.encoder}"
    if args.encoder == "compact":
        from edge_ser_model.ship import train_and_ship

        clips, feats, voice = _load(args)
        paths = train_and_ship(clips, feats, _train_config(args), args.seeds, args.out,
                               name, evaluation, args.calm, pitch=not args.no_pitch,
                               voice=voice, license=licence)
    else:
        from edge_ser_model.ship import frozen_choice, train_and_ship_frozen

        choice = frozen_choice(evaluation, args.representation, args.head, args.encoder)
        clips, feats, backbone = _load_frozen(args)
        paths = train_and_ship_frozen(clips, feats, backbone, choice, _train_config(args),
                                      args, name, evaluation, licence)
    for p in paths:
        print(f"wrote {p}")
    return 0


def run_build(args: argparse.Namespace) -> int:
    """``evaluate`` into OUT/eval, then ``train`` with its report."""
    out = args.out
    check_out_dir(out)
    if args.encoder != "compact" and args.protocol == "cv":
        raise EdgeSerError(f"build --encoder {args.encoder}: the choice comes from "
                           "leave-one-corpus-out; use --protocol loco or both")
    args.out = out / "eval"
    run_evaluate(args)
    report = "loco_report.json" if args.protocol != "cv" else "cv_report.json"
    args.out, args.evaluation = out, out / "eval" / report
    args.representation = args.head = None
    return run_train(args)


def _evaluation(path: Path) -> dict[str, object]:
    """The ``--evaluation`` report (loco_report.json or cv_report.json), read before any
    training."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise EdgeSerError(f"--evaluation: cannot read {path} ({exc.strerror or exc})") from exc
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise EdgeSerError(f"--evaluation: {path} is not JSON ({exc})") from exc
    if not isinstance(data, dict) or "systems" not in data:
        raise EdgeSerError(f"--evaluation: {path} is not a loco_report.json or cv_report.json "
                           "of edge-ser-model evaluate (no 'systems')")
    return data


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=args.log_level,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    try:
        if args.command == "evaluate":
            return run_evaluate(args)
        if args.command == "train":
            return run_train(args)
        if args.command == "build":
            return run_build(args)
        from edge_ser_model.export_cli import run_export

        rc: int = run_export(args)
        return rc
    except EdgeSerError as exc:
        print(f"edge-ser-model {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except ModuleNotFoundError as exc:
        if exc.name not in TRAIN_EXTRA:
            raise
        print(f"edge-ser-model {args.command}: error: {exc.name} is not installed: pip install "
              "'edge-ser[train]' (bash scripts/setup train)", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
