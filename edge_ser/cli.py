"""``edge-ser`` command line: one sub-command per module under :mod:`edge_ser.commands`.

Each command module exposes ``add_arguments(parser)`` and ``run(args) -> int``. Modules are
imported lazily so ``edge-ser check-config`` never loads onnxruntime, and so on.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys
from collections.abc import Sequence

from edge_ser import __version__
from edge_ser.errors import EdgeSerError, OutputClosed

log = logging.getLogger(__name__)

LEVELS = ["DEBUG", "INFO", "WARNING", "ERROR"]

COMMANDS: dict[str, tuple[str, str]] = {
    "classify": ("edge_ser.commands.classify", "classify the emotion in WAV files"),
    "run": ("edge_ser.commands.run", "run the daemon (capture -> MQTT events)"),
    "check-config": ("edge_ser.commands.check_config", "validate a config file and exit"),
    "devices": ("edge_ser.commands.devices", "list audio input devices and their rates"),
    "bench": ("edge_ser.commands.bench", "benchmark latency, RAM and temperature"),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="edge-ser",
        description="On-device speech-emotion sensor: classify WAV files, run the daemon "
        "(audio -> emotion events over MQTT), check a config, list input devices, benchmark.",
        epilog="Each command has its own --help. Docs: README.md and docs/ in the checkout.",
    )
    parser.add_argument("--version", action="version", version=f"edge-ser {__version__}")
    parser.add_argument(
        "--log-level", default=None, choices=LEVELS,
        help="log level (default: WARNING, or the config's logging.level for 'run')",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, (module, help_text) in COMMANDS.items():
        p = sub.add_parser(name, help=help_text, description=help_text)
        importlib.import_module(module).add_arguments(p)
        p.add_argument("--log-level", default=argparse.SUPPRESS, choices=LEVELS,
                       help="log level (also accepted before the command)")
        p.set_defaults(_module=module)
    return parser


def _silence_stdout() -> None:
    """Point fd 1 at /dev/null so the interpreter's last flush cannot fail again."""
    try:
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    except (OSError, ValueError, AttributeError):
        pass


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=args.log_level or "WARNING",
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    try:
        rc: int = importlib.import_module(args._module).run(args)
        if sys.stdout is not None:  # None when started with fd 1 closed (>&-)
            sys.stdout.flush()  # here, where a full disk is still a one-line error
        return rc
    except (OutputClosed, BrokenPipeError):  # `| head`: stop quietly, as after SIGPIPE
        _silence_stdout()
        return 141
    except EdgeSerError as exc:
        print(f"edge-ser {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:  # writing the output (a full disk) or another system error
        _silence_stdout()
        where = f" ({exc.filename})" if exc.filename else " (writing the output)"
        print(f"edge-ser {args.command}: error: {exc.strerror or exc}{where}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
