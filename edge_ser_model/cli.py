"""``edge-ser-model``: train, evaluate and export edge-ser models.

- ``train``: train the compact encoder on all of the corpora and write the fp32 + int8 ONNX models.
- ``evaluate``: speaker-independent k-fold CV of the compact encoder beside the eGeMAPS
  baseline on the same folds; writes cv_report.json / .md and confusion.png.
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

from edge_ser.errors import EdgeSerError
from edge_ser_model import VOICE_WEIGHT

#: top-level modules of the train extra: without them a command says which to install
TRAIN_EXTRA = frozenset({"torch", "transformers", "onnx", "onnxscript", "sklearn", "opensmile",
                         "matplotlib", "resemblyzer"})

log = logging.getLogger(__name__)

#: the corpora: $EDGE_SER_DATA (as the tests read it), else ../shared/data
DEFAULT_DATA = Path(os.environ.get("EDGE_SER_DATA") or "../shared/data")
DEFAULT_CACHE = Path(".cache/edge-ser-model")


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
    p.add_argument("--data", type=Path, default=DEFAULT_DATA,
                   help="corpora root, one folder with a manifest.csv per corpus (default: "
                   "$EDGE_SER_DATA, else ../shared/data)")
    p.add_argument("--corpora", type=_names, default=["ravdess", "urdu"],
                   help="comma-separated corpus folders (default ravdess,urdu)")
    p.add_argument("--calm", choices=["drop", "neutral"], default="drop",
                   help="RAVDESS calm: drop it (default) or merge it into neutral")
    p.add_argument("--cache", type=Path, default=DEFAULT_CACHE, help="feature cache folder")
    p.add_argument("--copies", type=int, default=4, help="augmented copies per clip")
    p.add_argument("--seeds", type=_seeds, default=[0, 1, 2, 3, 4, 5],
                   help="ensemble member seeds, comma-separated (default 0,1,2,3,4,5)")
    p.add_argument("--epochs", type=int, default=80)
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
    p.add_argument("--limit", type=int, default=0, help="use only the first N clips (tests)")
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


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="edge-ser-model", description=__doc__.splitlines()[0])
    parser.add_argument("--log-level", default="INFO",
                        choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    tr = sub.add_parser("train", help="train the compact encoder on all data, write ONNX")
    _common(tr)
    tr.add_argument("--out", type=Path, default=Path("models"), help="output folder")
    tr.add_argument("--name", default="edge-ser-compact")
    tr.add_argument("--evaluation", type=Path, default=None,
                    help="cv_report.json whose summary goes into the model metadata")
    tr.add_argument("--license", default=None, metavar="TEXT",
                    help="licence of the weights for the metadata (default: inherited from "
                    "ravdess / urdu; needed for any other corpus)")
    ev = sub.add_parser("evaluate", help="speaker-independent k-fold CV vs eGeMAPS baseline")
    _common(ev)
    ev.add_argument("--folds", type=_at_least(2), default=5)
    ev.add_argument("--fold-seed", type=int, default=0)
    ev.add_argument("--out", type=Path, default=Path("models/eval"))
    ev.add_argument("--no-baseline", action="store_true")
    ex = sub.add_parser("export", help="export an encoder to ONNX and int8")
    from edge_ser_model.export_cli import add_export_arguments

    add_export_arguments(ex)
    return parser


def _train_config(args: argparse.Namespace) -> object:
    from edge_ser_model.train import TrainConfig

    return TrainConfig(
        epochs=args.epochs, patience=args.patience, lr=args.lr, batch_size=args.batch_size,
        mixup=args.mixup, head={"hidden": args.hidden, "dropout": args.dropout},
    )


def _load(args: argparse.Namespace) -> tuple[list[object], object, object]:
    """Clips, compact feature vectors and the voice setup (None with ``--no-voice``)."""
    import torch

    from edge_ser_model.data import load_corpora
    from edge_ser_model.encoders.compact import CompactFeatures
    from edge_ser_model.encoders.voice import VoiceFeatures
    from edge_ser_model.evaluate import VoiceSetup
    from edge_ser_model.features import compute_features

    if not 0.0 <= args.voice_weight <= 1.0:
        raise EdgeSerError(f"--voice-weight: {args.voice_weight} is not between 0 and 1")
    if args.patience < 0:
        raise EdgeSerError(f"--patience: {args.patience} is negative (0: no early stopping)")
    torch.set_num_threads(args.threads)
    # the voice weights are checked before minutes of feature extraction, not after
    voice_fe = None if args.no_voice else VoiceFeatures(args.voice_weights,
                                                        random_init=args.voice_random_init)
    clips = load_corpora(args.data, args.corpora, calm=args.calm)
    if args.limit:
        clips = clips[:: max(1, len(clips) // args.limit)][: args.limit]
    frontend = CompactFeatures(pitch=not args.no_pitch)
    feats = compute_features(clips, frontend, copies=args.copies, cache_dir=args.cache)
    voice = None
    if voice_fe is not None:
        vfeats = compute_features(clips, voice_fe, copies=args.copies, cache_dir=args.cache)
        voice = VoiceSetup(voice_fe, vfeats, args.voice_weight, args.voice_c)
    return list(clips), feats, voice


def run_evaluate(args: argparse.Namespace) -> int:
    from edge_ser_model.data import speaker_folds
    from edge_ser_model.evaluate import cross_validate, run_baselines, write_report

    check_out_dir(args.out)
    clips, feats, voice = _load(args)
    folds = speaker_folds(clips, args.folds, args.fold_seed)  # type: ignore[arg-type]
    seeds = args.seeds
    cfg = _train_config(args)
    probs = cross_validate(clips, feats, folds, cfg, seeds, voice)  # type: ignore[arg-type]
    preds = {name: [p.argmax(1) for p in fold_probs] for name, fold_probs in probs.items()}
    if not args.no_baseline:
        preds.update(run_baselines(clips, folds, args.cache))  # type: ignore[arg-type]
    settings = {k: v for k, v in vars(args).items() if not k.startswith("_")}
    meta = {
        "protocol": f"speaker-independent {args.folds}-fold CV (StratifiedGroupKFold by "
                    f"manifest speaker, seed {args.fold_seed})",
        "data": f"{','.join(args.corpora)}, calm={args.calm}",
        "settings": {k: str(v) for k, v in settings.items()},
    }
    report = write_report(args.out, clips, folds, preds, meta)  # type: ignore[arg-type]
    for name, system in report["systems"].items():
        s = system["summary"]
        print(f"{name:24s} UAR {s['uar']['mean']:.3f} ± {s['uar']['std']:.3f}  "
              f"WA {s['wa']['mean']:.3f}  macro-F1 {s['macro_f1']['mean']:.3f}")
    print(f"wrote {args.out}/cv_report.json, cv_report.md, confusion.png")
    return 0


def run_train(args: argparse.Namespace) -> int:
    from edge_ser_model.ship import license_of, train_and_ship

    check_out_dir(args.out)
    evaluation = _evaluation(args.evaluation) if args.evaluation else None
    licence = license_of(args.corpora, args.license)
    clips, feats, voice = _load(args)
    seeds = args.seeds
    paths = train_and_ship(clips, feats, _train_config(args), seeds, args.out,  # type: ignore[arg-type]
                           args.name, evaluation, args.calm, pitch=not args.no_pitch,
                           voice=voice, license=licence)  # type: ignore[arg-type]
    for p in paths:
        print(f"wrote {p}")
    return 0


def _evaluation(path: Path) -> dict[str, object]:
    """The ``--evaluation`` cv_report.json, read before any training."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise EdgeSerError(f"--evaluation: cannot read {path} ({exc.strerror or exc})") from exc
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise EdgeSerError(f"--evaluation: {path} is not JSON ({exc})") from exc
    if not isinstance(data, dict) or "systems" not in data:
        raise EdgeSerError(f"--evaluation: {path} is not a cv_report.json of "
                           "edge-ser-model evaluate (no 'systems')")
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
