"""VAD gate on real speech: utterances of the bundled voice note, word edges, silence, streaming."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from edge_ser import SAMPLE_RATE
from edge_ser.audio import read_wav
from edge_ser.config import VadConfig
from edge_ser.vad import SpeechAudio, SpeechEnd, SpeechStart, VadEvent, VadGate


def _vad(**kw: object) -> VadConfig:
    return VadConfig.model_validate(kw)


def _run(x: np.ndarray, cfg: VadConfig, chunk: int | None = None) -> list[VadEvent]:
    gate = VadGate(cfg)
    events: list[VadEvent] = []
    if chunk is None:
        events += gate.process(x)
    else:
        for i in range(0, len(x), chunk):
            events += gate.process(x[i : i + chunk])
    return events + gate.flush()


def _spans(events: list[VadEvent]) -> list[tuple[float, float]]:
    starts = [e.t_s for e in events if isinstance(e, SpeechStart)]
    ends = [e.t_s for e in events if isinstance(e, SpeechEnd)]
    assert len(starts) == len(ends)
    return list(zip(starts, ends, strict=True))


def _loud_regions(
    x: np.ndarray, db: float = -45.0, gap_s: float = 0.5
) -> list[tuple[float, float]]:
    """Ground truth from energy: 10 ms frames above ``db`` dBFS, merged across short gaps."""
    n = len(x) // 160
    rms = np.sqrt(np.mean(x[: n * 160].reshape(n, 160).astype(np.float64) ** 2, axis=1))
    loud = np.flatnonzero(20 * np.log10(rms + 1e-12) > db)
    regions: list[list[float]] = []
    for i in loud:
        t = i * 0.01
        if regions and t - regions[-1][1] <= gap_s:
            regions[-1][1] = t + 0.01
        else:
            regions.append([t, t + 0.01])
    return [(a, b) for a, b in regions]


@pytest.fixture(scope="module")
def note(examples: Path) -> np.ndarray:
    return read_wav(examples / "voice-note.wav")


@pytest.mark.parametrize("frame_ms", [10, 20, 30])
def test_voice_note_has_three_utterances_covering_the_speech(
    note: np.ndarray, frame_ms: int
) -> None:
    spans = _spans(_run(note, _vad(frame_ms=frame_ms)))
    truth = _loud_regions(note)
    assert len(truth) == 3, truth  # the note: three anger utterances with noise between
    assert len(spans) == 3, spans
    for (start, end), (t0, t1) in zip(spans, truth, strict=True):
        assert start <= t0 - 0.1, (start, t0)  # onset kept, with pre-roll before the loud part
        assert end >= t1, (end, t1)  # the last word is not cut
        assert end - start < (t1 - t0) + 2.0  # but the noise between utterances is not speech


def test_preroll_moves_onset_earlier_and_hangover_keeps_tail(note: np.ndarray) -> None:
    base = _spans(_run(note, _vad(preroll_ms=0, hangover_ms=300)))
    pre = _spans(_run(note, _vad(preroll_ms=300, hangover_ms=300)))
    hang = _spans(_run(note, _vad(preroll_ms=0, hangover_ms=900)))
    for (s0, e0), (s1, _), (_, e2) in zip(base, pre, hang, strict=True):
        assert s1 == pytest.approx(s0 - 0.3, abs=0.031)
        assert e2 >= e0 + 0.2


def test_speech_audio_is_the_original_samples_without_gaps(note: np.ndarray) -> None:
    events = _run(note, _vad(), chunk=777)
    audio = [e for e in events if isinstance(e, SpeechAudio)]
    for start, end in _spans(events):
        parts = [a for a in audio if start - 1e-9 <= a.start_s < end]
        assert parts[0].start_s == pytest.approx(start)
        for a, b in zip(parts, parts[1:], strict=False):
            assert b.start_s == pytest.approx(a.end_s)  # contiguous blocks
        joined = np.concatenate([p.audio for p in parts])
        i0 = round(start * SAMPLE_RATE)
        assert len(joined) == round((end - start) * SAMPLE_RATE)
        np.testing.assert_array_equal(joined, note[i0 : i0 + len(joined)])


@pytest.mark.parametrize("chunk", [37, 160, 333, 480, 1440, 4096])
def test_chunking_does_not_change_events(note: np.ndarray, chunk: int) -> None:
    assert _spans(_run(note, _vad(), chunk=chunk)) == _spans(_run(note, _vad()))


def test_silence_and_faint_noise_give_no_speech() -> None:
    rng = np.random.default_rng(1)
    silence = np.zeros(5 * SAMPLE_RATE, dtype=np.float32)
    hiss = (rng.standard_normal(5 * SAMPLE_RATE) * 10 ** (-62 / 20)).astype(np.float32)
    for x in (silence, hiss, np.concatenate([silence, hiss, silence, hiss])):
        assert _run(x, _vad()) == []


def test_min_speech_drops_short_blips(note: np.ndarray) -> None:
    t0, _ = _loud_regions(note)[0]
    i = int((t0 + 0.3) * SAMPLE_RATE)
    blip = np.zeros(3 * SAMPLE_RATE, dtype=np.float32)
    blip[SAMPLE_RATE : SAMPLE_RATE + 2400] = note[i : i + 2400]  # 150 ms of a word
    assert _spans(_run(blip, _vad(min_speech_ms=250))) == []
    assert len(_spans(_run(blip, _vad(min_speech_ms=0, aggressiveness=0)))) == 1


def test_max_utterance_splits_long_speech(note: np.ndarray) -> None:
    spans = _spans(_run(note, _vad(max_utterance_s=1.0)))
    assert len(spans) >= 6
    assert all(e - s <= 1.0 + 0.031 for s, e in spans)


def test_reset_restarts_the_clock(note: np.ndarray) -> None:
    gate = VadGate(_vad())
    gate.process(note[: 3 * SAMPLE_RATE])
    gate.reset()
    assert gate.time_s == 0.0 and not gate.in_speech
    events = gate.process(note) + gate.flush()
    assert _spans(events) == _spans(_run(note, _vad()))


def test_white_hiss_is_not_speech_even_when_loud(note: np.ndarray) -> None:
    rng = np.random.default_rng(2)
    hiss = (rng.standard_normal(3 * SAMPLE_RATE) * 10 ** (-35 / 20)).astype(np.float32)
    silence = np.zeros(SAMPLE_RATE, dtype=np.float32)
    assert _spans(_run(np.concatenate([silence, hiss, silence, hiss]), _vad())) == []
    # ... while the same speech with that hiss mixed in is still found
    noisy = note + (rng.standard_normal(len(note)) * 10 ** (-55 / 20)).astype(np.float32)
    assert len(_spans(_run(noisy, _vad()))) == 3


def test_quieter_speech_is_still_found_and_the_floor_applies(note: np.ndarray) -> None:
    assert len(_spans(_run(note * np.float32(0.2), _vad()))) == 3  # 14 dB quieter
    gate = VadGate(_vad(), energy_floor_dbfs=-20.0)  # louder than any frame of the note
    assert gate.process(note) + gate.flush() == []


@pytest.mark.corpus
def test_corpus_clips_each_give_speech(shared_data: Path) -> None:
    import csv

    with open(shared_data / "ravdess" / "manifest.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    with open(shared_data / "urdu" / "manifest.csv", newline="") as fh:
        rows += list(csv.DictReader(fh))[::50]
    for row in rows[::60]:
        x = read_wav(shared_data / row["corpus"] / row["file"])
        spans = _spans(_run(x, _vad()))
        assert spans, row["file"]
        speech = sum(e - s for s, e in spans)
        assert 0.3 < speech <= len(x) / SAMPLE_RATE + 1e-6, row["file"]


def _speech_end(x: np.ndarray) -> float:
    """End of the last 10-ms frame within 40 dB of the clip's loudest frame."""
    n = len(x) // 160
    rms = np.sqrt(np.mean(x[: n * 160].reshape(n, 160).astype(np.float64) ** 2, axis=1))
    return (int(np.flatnonzero(rms > rms.max() * 10 ** (-40 / 20))[-1]) + 1) * 0.01


@pytest.mark.parametrize("clip", ["anger-ravdess-03.wav", "happiness-ravdess-03.wav"])
def test_noise_tail_under_the_voice_does_not_hold_the_utterance_open(
    examples: Path, clip: str
) -> None:
    x = read_wav(examples / "clips" / clip)
    end = _speech_end(x)
    tail = x[int((end + 0.03) * SAMPLE_RATE) :]  # the clip's own room noise after the last word
    assert len(tail) > 0.2 * SAMPLE_RATE
    noisy = np.concatenate([x, np.resize(tail, 2 * SAMPLE_RATE), np.zeros(SAMPLE_RATE, np.float32)])
    hang = 0.6
    on = _spans(_run(noisy, _vad(hangover_ms=600)))
    off = _spans(_run(noisy, _vad(hangover_ms=600, peak_range_db=0)))
    assert len(on) == 1, on  # the tail neither holds the utterance open nor opens a new one
    assert on[0][1] <= end + hang + 0.15, (on, end)
    assert off[-1][1] >= end + hang + 0.3, (off, end)  # webrtcvad alone calls that tail speech
    assert on[0][0] == off[0][0]
    for chunk in (160, 333, 4096):  # the held peak is per frame: chunking changes nothing
        assert _spans(_run(noisy, _vad(hangover_ms=600), chunk=chunk)) == on


def test_peak_range_keeps_a_quieter_phrase_after_a_loud_one(note: np.ndarray) -> None:
    # the note's third utterance 20 dB quieter, 1 s after the first: still speech, not vetoed
    (a0, b0), _, (a2, b2) = _loud_regions(note)
    first = note[int((a0 - 0.3) * SAMPLE_RATE) : int((b0 + 0.2) * SAMPLE_RATE)]
    third = note[int((a2 - 0.3) * SAMPLE_RATE) : int((b2 + 0.2) * SAMPLE_RATE)] * np.float32(0.1)
    gap = np.zeros(SAMPLE_RATE, dtype=np.float32)
    x = np.concatenate([gap, first, gap, third, gap])
    on = _spans(_run(x, _vad()))
    off = _spans(_run(x, _vad(peak_range_db=0)))
    assert len(on) == 2, on
    assert on[1][1] - on[1][0] >= 0.8 * (off[1][1] - off[1][0])


@pytest.mark.parametrize("bad", [-1.0, 91.0])
def test_peak_range_bounds(bad: float) -> None:
    with pytest.raises(ValueError):
        _vad(peak_range_db=bad)


def test_a_reused_input_buffer_does_not_change_the_speech(note: np.ndarray) -> None:
    """Pre-roll and candidate frames are kept: they must be copies, not views of the caller's
    buffer (a capture loop that refills one buffer)."""
    def speech(reuse: bool) -> np.ndarray:
        gate, buf, out = VadGate(), np.empty(480, np.float32), []
        for i in range(0, note.size - 480 + 1, 480):
            if reuse:
                buf[:] = note[i : i + 480]
            evs = gate.process(buf if reuse else note[i : i + 480].copy())
            out += [e.audio for e in evs if isinstance(e, SpeechAudio)]
        out += [e.audio for e in gate.flush() if isinstance(e, SpeechAudio)]
        return np.concatenate(out)

    np.testing.assert_array_equal(speech(reuse=True), speech(reuse=False))


def test_preroll_is_whole_after_a_dropped_blip() -> None:
    """A blip shorter than min_speech_ms is dropped; speech right after it still gets its full
    pre-roll (the frames before it, which were the blip's candidate frames)."""
    gate = VadGate()  # 30 ms frames, pre-roll 300 ms, hangover 600 ms, min speech 250 ms
    events: list[VadEvent] = []
    pattern = [False] * 30 + [True] * 2 + [False] * 24 + [True] * 40 + [False] * 30
    for voiced in pattern:
        gate._step(np.zeros(gate.frame_len, np.float32), voiced, events)
        gate._pos += gate.frame_len
    start = next(e.t_s for e in events if isinstance(e, SpeechStart))
    onset = (30 + 2 + 24) * 0.03
    assert onset - start == pytest.approx(0.3, abs=1e-6)


def test_skip_ends_the_utterance_at_the_gap_and_moves_the_clock(note: np.ndarray) -> None:
    gate = VadGate()
    events = gate.process(note[: SAMPLE_RATE * 3])  # inside the first utterance (1.7-4.7 s)
    assert gate.in_speech
    events += gate.skip(SAMPLE_RATE * 10)
    assert isinstance(events[-1], SpeechEnd) and events[-1].t_s == pytest.approx(3.0, abs=0.03)
    assert not gate.in_speech and gate.time_s == pytest.approx(13.0, abs=0.03)
    later = gate.process(note[SAMPLE_RATE * 13 :]) + gate.flush()  # inside the third (12.2-)
    start = next(e.t_s for e in later if isinstance(e, SpeechStart))
    assert 13.0 <= start <= 13.1, start  # stream time, and no pre-roll from before the gap


@pytest.mark.parametrize("rate", [8000, 11025, 22050])
def test_pauses_stay_pauses_whatever_the_source_rate(note: np.ndarray, rate: int) -> None:
    """A voice note recorded at 8 kHz (resampled to 16) has no energy above 4 kHz: its room tone
    must not pass for speech (before: six utterances instead of three)."""
    from edge_ser.audio import resample

    via = resample(resample(note, SAMPLE_RATE, rate), rate, SAMPLE_RATE)
    want = _spans(_run(note, _vad()))
    got = _spans(_run(via, _vad()))
    assert len(got) == len(want) == 3
    for (a, b), (c, d) in zip(got, want, strict=True):
        assert abs(a - c) < 0.1 and abs(b - d) < 0.1


def _steady_sounds(seconds: float = 20.0) -> dict[str, np.ndarray]:
    """Home sounds that webrtcvad calls speech: an alarm buzzer, a beeper, hum, fan, noise."""
    t = np.arange(int(seconds * SAMPLE_RATE)) / SAMPLE_RATE
    rng = np.random.default_rng(3)
    spec = np.fft.rfft(rng.standard_normal(t.size))
    f = np.fft.rfftfreq(t.size, 1 / SAMPLE_RATE)
    pink = np.fft.irfft(spec / np.sqrt(np.maximum(f, f[1])), t.size)
    fan = np.convolve(rng.standard_normal(t.size), np.hanning(40), "same")  # low-passed noise
    sounds = {
        "square 440 Hz, clipping": np.clip(1.2 * np.sign(np.sin(2 * np.pi * 440 * t)), -1, 1),
        "sine 1 kHz": np.sin(2 * np.pi * 1000 * t),
        "smoke alarm 3.1 kHz, 0.5 s on/off": np.sin(2 * np.pi * 3100 * t) * ((t % 1.0) < 0.5),
        "hum 50 Hz + harmonics": sum(np.sin(2 * np.pi * 50 * k * t) / k for k in range(1, 12)),
        "pink noise": pink,
        "fan": fan,
    }
    return {k: (0.25 * v / np.max(np.abs(v))).astype(np.float32) if k != "square 440 Hz, clipping"
            else v.astype(np.float32) for k, v in sounds.items()}


STEADY = _steady_sounds()


@pytest.mark.parametrize("name", list(STEADY))
def test_steady_tones_and_stationary_noise_are_not_speech(name: str) -> None:
    x = STEADY[name]
    assert _spans(_run(x, _vad(steady_veto=False))), "webrtcvad alone calls it speech"
    assert _spans(_run(x, _vad())) == []
    assert _spans(_run(x, _vad(), chunk=1440)) == []


@pytest.mark.parametrize(("name", "snr_db"), [("pink noise", 5), ("fan", 5),
                                              ("square 440 Hz, clipping", 10), ("sine 1 kHz", 5)])
def test_speech_over_a_steady_sound_is_kept(note: np.ndarray, name: str, snr_db: float) -> None:
    bg = STEADY[name][: note.size]
    level = np.sqrt(np.mean(note[np.abs(note) > 0.01] ** 2))
    x = (note + bg / np.sqrt(np.mean(bg**2)) * level * 10 ** (-snr_db / 20)).astype(np.float32)
    assert _spans(_run(x, _vad())) == _spans(_run(x, _vad(steady_veto=False)))
    assert len(_spans(_run(x, _vad()))) == 3


def test_speech_after_a_steady_sound_is_found(note: np.ndarray) -> None:
    """The alarm's frames are vetoed; the voice that follows is heard from its onset."""
    x = np.concatenate([STEADY["smoke alarm 3.1 kHz, 0.5 s on/off"][: 5 * SAMPLE_RATE], note])
    got = [(a - 5, b - 5) for a, b in _spans(_run(x, _vad()))]
    want = _spans(_run(note, _vad()))
    assert len(got) == len(want) == 3
    for (a, b), (c, d) in zip(got, want, strict=True):
        assert abs(a - c) < 0.1 and abs(b - d) < 0.1


@pytest.mark.corpus
def test_the_steady_veto_keeps_every_utterance_of_the_corpora(shared_data: Path) -> None:
    """A sample of each corpus (the whole: ``python -m benchmarks.nonspeech``, docs/daemon.md)."""
    import csv

    for manifest in sorted(shared_data.glob("*/manifest.csv")):
        with manifest.open(newline="") as fh:
            rows = list(csv.DictReader(fh))[::25]
        for row in rows:
            x = read_wav(manifest.parent / row["file"])
            assert _spans(_run(x, _vad())) == _spans(_run(x, _vad(steady_veto=False))), row


def test_an_undecided_sound_is_never_held_longer_than_an_utterance() -> None:
    """Pink noise whose level swings by about a decibel is neither steady enough to veto nor
    lively enough to confirm: its audio piled up unbounded while the gate waited (22 s seen)."""
    rng = np.random.default_rng(3)
    n = 60 * 16000
    t = np.arange(n) / 16000
    spec = np.fft.rfft(rng.standard_normal(n))
    f = np.fft.rfftfreq(n, 1 / 16000)
    pink = np.fft.irfft(spec / np.sqrt(np.maximum(f, f[1])), n)
    x = (0.25 * pink / np.max(np.abs(pink)) * 10 ** (1.2 * np.sin(2 * np.pi * 0.7 * t) / 20))
    gate = VadGate(_vad(max_utterance_s=5.0))
    held = 0
    for i in range(0, n, 1440):
        gate.process(x[i : i + 1440].astype(np.float32))
        held = max(held, sum(len(f) for _, f in gate._pending))
    assert held <= 5.0 * 16000 + gate.frame_len
