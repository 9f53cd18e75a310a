"""Non-speech against the VAD: what reaches the model, with ``vad.steady_veto`` off and on.

Three tables (docs/daemon.md, "What the VAD lets through"):

* synthetic home sounds, 30 s each (tones, square waves, hum, sweeps, sirens, beeps, DTMF,
  noise of several colours, a melody): utterances, speech seconds and emotion events of the
  daemon's pipeline (utterance mode, the shipped int8 model);
* the bundled voice note over some of those sounds at 20, 10 and 5 dB SNR: its utterances;
* every clip of the corpora (``--data``, default ../shared/data): speech seconds with the veto off
  and on, and the share of the first kept by the second.

``python -m benchmarks.nonspeech [--data DIR] [--skip corpora]``.
"""

from __future__ import annotations

import argparse
import csv
from pathlib import Path

import numpy as np
from numpy.typing import NDArray
from scipy import signal as sps

from benchmarks import EXAMPLES, REPO
from edge_ser import SAMPLE_RATE
from edge_ser.audio import read_wav
from edge_ser.config import Config, VadConfig
from edge_ser.config.schema import DEFAULT_MODEL
from edge_ser.model import OnnxModel
from edge_ser.pipeline import EmotionPipeline
from edge_ser.vad import SpeechEnd, SpeechStart, VadGate

R = SAMPLE_RATE
SECONDS = 30.0
BLOCK = 1440  # the daemon's 90-ms capture block
F32 = NDArray[np.float32]
F64 = NDArray[np.float64]
Spans = list[tuple[float, float]]


def _at(x: F64, dbfs: float) -> F32:
    return (x / np.sqrt(np.mean(x**2)) * 10 ** (dbfs / 20)).astype(np.float32)


def _gated(x: F64, on_s: float, off_s: float) -> F64:
    t = np.arange(x.size) / R
    return np.asarray(x * ((t % (on_s + off_s)) < on_s))


def _coloured(exponent: float, seed: int) -> F64:
    """Noise whose power falls as 1/f**exponent (1 pink, 2 brown)."""
    n = int(SECONDS * R)
    spec = np.fft.rfft(np.random.default_rng(seed).standard_normal(n))
    f = np.fft.rfftfreq(n, 1 / R)
    f[0] = f[1]
    return np.asarray(np.fft.irfft(spec / f ** (exponent / 2), n))


def sounds() -> dict[str, F32]:
    """The synthetic non-speech, 30 s each at 16 kHz."""
    t = np.arange(int(SECONDS * R)) / R
    rng = np.random.default_rng(1)
    tone = {f: np.sin(2 * np.pi * f * t) for f in (250, 440, 1000, 2000, 3000, 3100)}
    out: dict[str, F32] = {f"sine {f} Hz": _at(tone[f], -12) for f in (250, 440, 1000, 3000)}
    out["square 440 Hz, clipping"] = np.clip(np.sign(tone[440]) * 1.2, -1, 1).astype(np.float32)
    out["square 100 Hz"] = _at(np.sign(np.sin(2 * np.pi * 100 * t)), -12)
    out["sawtooth 220 Hz"] = _at(sps.sawtooth(2 * np.pi * 220 * t), -12)
    out["mains hum 50 Hz + harmonics"] = _at(
        sum((np.sin(2 * np.pi * 50 * k * t) / k for k in range(1, 12)), np.zeros_like(t)), -20)
    out["sweep 100-4000 Hz, 5 s, repeated"] = _at(sps.chirp(t % 5, 100, 5, 4000), -12)
    out["log sweep 200-3000 Hz, 2 s"] = _at(sps.chirp(t % 2, 200, 2, 3000, method="log"), -12)
    out["siren 600-1200 Hz, 0.5 Hz"] = _at(
        np.sin(2 * np.pi * np.cumsum(900 + 300 * np.sin(2 * np.pi * 0.5 * t)) / R), -12)
    out["two-tone siren 450/600 Hz"] = _at(
        np.sin(2 * np.pi * np.cumsum(np.where((t % 1.0) < 0.5, 450, 600)) / R), -12)
    out["beeps 1 kHz 0.1 s on/off"] = _at(_gated(tone[1000], 0.1, 0.1), -12)
    out["smoke alarm 3.1 kHz 0.5 s on/off"] = _at(_gated(tone[3100], 0.5, 0.5), -6)
    out["microwave beep 2 kHz 1 s/2 s"] = _at(_gated(tone[2000], 1.0, 2.0), -12)
    out["square beeper 2.4 kHz 0.25 s/0.25 s"] = _at(
        _gated(np.sign(np.sin(2 * np.pi * 2400 * t)), 0.25, 0.25), -6)
    out["doorbell ding-dong 660/520 Hz"] = _at(
        np.sin(2 * np.pi * np.where((t % 3) < 1, 660, 520) * t) * np.exp(-3 * (t % 1))
        * ((t % 3) < 2), -12)
    keys = np.array([(697, 1209), (770, 1336), (852, 1477), (941, 1336)])  # digits 1 5 9 0
    k = (t // 0.2).astype(int) % 4
    out["DTMF digits 0.1 s on/off"] = _at(_gated(
        np.sin(2 * np.pi * keys[k, 0] * t) + np.sin(2 * np.pi * keys[k, 1] * t), 0.1, 0.1), -12)
    out["white noise -20 dBFS"] = _at(rng.standard_normal(t.size), -20)
    out["pink noise -20 dBFS"] = _at(_coloured(1.0, 2), -20)
    out["brown noise -20 dBFS"] = _at(_coloured(2.0, 3), -20)
    fan = sps.lfilter(*sps.butter(2, 400 / (R / 2)), rng.standard_normal(t.size))
    out["fan: low-passed noise + 100 Hz hum"] = _at(
        fan / np.std(fan) + 0.5 * np.sin(2 * np.pi * 100 * t), -20)
    out["band noise 300-3000 Hz"] = _at(sps.lfilter(
        *sps.butter(2, [300 / (R / 2), 3000 / (R / 2)], "band"), rng.standard_normal(t.size)), -20)
    # harmonic notes (5 partials) changing every 0.3 s, decaying like a plucked string
    notes = 220 * 2 ** (np.array([0, 2, 4, 5, 7, 9, 11, 12]) / 12)
    f0 = notes[rng.integers(0, 8, size=int(SECONDS / 0.3) + 1)[(t // 0.3).astype(int)]]
    phase = 2 * np.pi * np.cumsum(f0) / R
    partials = sum((np.sin(k * phase) / k for k in range(1, 6)), np.zeros_like(t))
    out["melody: harmonic notes every 0.3 s"] = _at(partials * np.exp(-4 * (t % 0.3)), -12)
    return out


def spans(x: F32, cfg: VadConfig) -> Spans:
    """Utterances (start, end) in seconds, fed in the daemon's capture blocks."""
    gate = VadGate(cfg)
    events = []
    for i in range(0, x.size, BLOCK):
        events += gate.process(x[i : i + BLOCK])
    events += gate.flush()
    starts = [e.t_s for e in events if isinstance(e, SpeechStart)]
    ends = [e.t_s for e in events if isinstance(e, SpeechEnd)]
    return list(zip(starts, ends, strict=True))


def _seconds(s: Spans) -> float:
    return sum(b - a for a, b in s)


def _overlap(a: Spans, b: Spans) -> float:
    return sum(max(0.0, min(e1, e2) - max(s1, s2)) for s1, e1 in a for s2, e2 in b)


def _configs() -> tuple[Config, Config]:
    return (Config.model_validate({"vad": {"steady_veto": False}}), Config.model_validate({}))


def sound_table(model_path: Path) -> list[str]:
    model = OnnxModel(model_path)
    lines = ["| sound (30 s) | veto off: utterances / speech / events | on |", "|---|---|---|"]
    for name, x in sounds().items():
        cells = []
        for cfg in _configs():
            pipe, results = EmotionPipeline(cfg, model), []
            for i in range(0, x.size, BLOCK):
                results += pipe.process(x[i : i + BLOCK])
            results += pipe.flush()
            s = spans(x, cfg.vad)
            cells.append(f"{len(s)} / {_seconds(s):.1f} s / {len(results)}")
        lines.append(f"| {name} | {cells[0]} | {cells[1]} |")
    return lines


def mixture_table() -> list[str]:
    note = read_wav(EXAMPLES / "voice-note.wav")
    level = np.sqrt(np.mean(note[np.abs(note) > 0.01] ** 2))
    off, on = (c.vad for c in _configs())
    base = spans(note, on)
    lines = [f"voice note alone: {len(base)} utterances, {_seconds(base):.2f} s",
             "", "| background | SNR | veto off: utterances / s of the note's kept | on |",
             "|---|---|---|---|"]
    all_sounds = sounds()
    for name in ("pink noise -20 dBFS", "fan: low-passed noise + 100 Hz hum",
                 "band noise 300-3000 Hz", "mains hum 50 Hz + harmonics", "sine 1000 Hz",
                 "square 440 Hz, clipping", "smoke alarm 3.1 kHz 0.5 s on/off"):
        for snr in (20, 10, 5):
            bg = all_sounds[name][: note.size]
            x = (note + bg / np.sqrt(np.mean(bg**2)) * level * 10 ** (-snr / 20)).astype(
                np.float32)
            cells = [f"{len(s)} / {_overlap(s, base):.2f} s" for s in (spans(x, off),
                                                                       spans(x, on))]
            lines.append(f"| {name} | {snr} dB | {cells[0]} | {cells[1]} |")
    return lines


def corpus_table(data: Path) -> list[str]:
    off, on = (c.vad for c in _configs())
    lines = ["| corpus | clips | speech, veto off | on | kept | utterances off -> on | "
             "clips left without speech |", "|---|---|---|---|---|---|---|"]
    total = np.zeros(3)
    for manifest in sorted(data.glob("*/manifest.csv")):
        with manifest.open(newline="", encoding="utf-8") as fh:
            rows = list(csv.DictReader(fh))
        c = np.zeros(6)
        for row in rows:
            x = read_wav(manifest.parent / row["file"])
            a, b = spans(x, off), spans(x, on)
            c += [_seconds(a), _seconds(b), _overlap(a, b), len(a), len(b), bool(a) and not b]
        lines.append(f"| {manifest.parent.name} | {len(rows)} | {c[0]:.1f} s | {c[1]:.1f} s | "
                     f"{100 * c[2] / c[0]:.2f} % | {int(c[3])} -> {int(c[4])} | {int(c[5])} |")
        total += c[:3]
    lines.append(f"| all | | {total[0]:.1f} s | {total[1]:.1f} s | "
                 f"{100 * total[2] / total[0]:.2f} % | | |")
    return lines


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.nonspeech", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data",
                    help="corpora root, one folder with a manifest.csv per corpus")
    ap.add_argument("--model", type=Path, default=DEFAULT_MODEL)
    ap.add_argument("--skip", action="append", default=[],
                    choices=["sounds", "mixtures", "corpora"], help="leave a table out")
    args = ap.parse_args(argv)
    tables = {"sounds": lambda: sound_table(args.model), "mixtures": mixture_table,
              "corpora": lambda: corpus_table(args.data)}
    for name, make in tables.items():
        if name not in args.skip:
            print("\n".join(make()), end="\n\n", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
