"""``edge-ser devices``: list audio input devices (index, name, channels, rates)."""

from __future__ import annotations

import argparse
import json

from edge_ser.sources.devices import AudioBackend, input_devices, pyaudio_backend


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="print a JSON list instead of a table")


def describe(pa: AudioBackend, as_json: bool = False) -> tuple[str, int]:
    """The listing text and the exit status (1 when there is no input device)."""
    devices = input_devices(pa)
    if as_json:
        return json.dumps(devices), 0 if devices else 1
    if not devices:
        return ("no audio input devices found (is a microphone plugged in, and is this user "
                "in the 'audio' group?)"), 1
    lines = [f"{'index':>5}  {'channels':>8}  {'default Hz':>10}  supported Hz      name"]
    for d in devices:
        rates = ",".join(str(r) for r in d["rates"]) or "-"
        lines.append(f"{d['index']:>5}  {d['channels']:>8}  {d['default_rate']:>10}  "
                     f"{rates:<16}  {d['name']}")
    lines.append("use source.device: <part of the name> (names survive reboots; indexes may not)")
    return "\n".join(lines), 0


def run(args: argparse.Namespace) -> int:
    pa = pyaudio_backend(quiet=True)  # AudioError (exit 2) when PyAudio is missing
    try:
        text, rc = describe(pa, args.json)
    finally:
        pa.terminate()
    print(text)
    return rc
