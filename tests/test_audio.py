"""Reading any WAV a user has: rates, channels, sample formats, a real resampler."""

from __future__ import annotations

import struct
import tracemalloc
import wave
from pathlib import Path

import numpy as np
import pytest
from scipy.io import wavfile

from edge_ser import SAMPLE_RATE, audio
from edge_ser.audio import WavFile, pcm_to_float, read_wav, resample, to_mono, write_wav
from edge_ser.errors import AudioError


@pytest.fixture(scope="module")
def clip(examples: Path) -> np.ndarray:
    return read_wav(examples / "clips" / "happiness-ravdess-03.wav")


def _corr(a: np.ndarray, b: np.ndarray) -> float:
    n = min(len(a), len(b))
    return float(np.corrcoef(a[:n], b[:n])[0, 1])


def _write_24bit(path: Path, x: np.ndarray, rate: int, channels: int = 1) -> None:
    ints = np.clip(np.round(x * 2**23), -(2**23), 2**23 - 1).astype("<i4")
    raw = ints.reshape(-1, 1).view(np.uint8).reshape(-1, 4)[:, :3].tobytes()
    with wave.open(str(path), "wb") as w:
        w.setnchannels(channels)
        w.setsampwidth(3)
        w.setframerate(rate)
        w.writeframes(raw)


def _encode(x: np.ndarray, fmt: str) -> np.ndarray:
    if fmt == "int16":
        return np.clip(np.round(x * 32768), -32768, 32767).astype(np.int16)
    if fmt == "int32":
        return np.clip(np.round(x.astype(np.float64) * 2**31), -(2**31), 2**31 - 1).astype(np.int32)
    return x.astype(np.float32)


@pytest.mark.parametrize("rate", [8000, 22050, 44100, 48000])
@pytest.mark.parametrize("fmt", ["int16", "int24", "int32", "float32"])
def test_rates_and_formats_round_trip(
    tmp_path: Path, clip: np.ndarray, rate: int, fmt: str
) -> None:
    x = resample(clip, SAMPLE_RATE, rate) * np.float32(0.9)
    path = tmp_path / f"{rate}-{fmt}.wav"
    if fmt == "int24":
        _write_24bit(path, x, rate)
    else:
        wavfile.write(str(path), rate, _encode(x, fmt))
    y = read_wav(path)
    assert y.dtype == np.float32 and y.ndim == 1
    assert abs(len(y) - len(clip)) <= 2
    reference = clip * np.float32(0.9)
    if rate == 8000:  # the band above 4 kHz is gone: compare with a 4 kHz band-limited clip
        reference = resample(resample(reference, SAMPLE_RATE, 8000), 8000, SAMPLE_RATE)
    assert _corr(y, reference) > 0.995
    n = min(len(y), len(reference))
    assert np.sqrt(np.mean((y[:n] - reference[:n]) ** 2)) < 0.05 * np.sqrt(np.mean(reference**2))


def test_stereo_is_downmixed(tmp_path: Path, clip: np.ndarray) -> None:
    x = resample(clip, SAMPLE_RATE, 44100)
    stereo = np.stack([x, 0.5 * x], axis=1)
    path = tmp_path / "stereo.wav"
    wavfile.write(str(path), 44100, _encode(stereo, "int16"))
    y = read_wav(path)
    assert _corr(y, clip) > 0.995
    assert np.max(np.abs(y)) == pytest.approx(0.75 * np.max(np.abs(clip)), rel=0.05)
    _write_24bit(tmp_path / "stereo24.wav", stereo.reshape(-1), 44100, channels=2)
    assert _corr(read_wav(tmp_path / "stereo24.wav"), y) > 0.999


def test_tone_above_the_new_nyquist_is_removed(tmp_path: Path, clip: np.ndarray) -> None:
    """A real resampler low-passes; dropping samples would fold 10 kHz down to 6 kHz."""
    rate = 48000
    t = np.arange(3 * rate) / rate
    tone = (0.5 * np.sin(2 * np.pi * 10_000 * t)).astype(np.float32)
    wavfile.write(str(tmp_path / "tone.wav"), rate, _encode(tone, "int16"))
    y = read_wav(tmp_path / "tone.wav")
    assert np.sqrt(np.mean(y[1000:-1000] ** 2)) < 0.005  # tone RMS was 0.35
    decimated = tone[::3]
    assert np.sqrt(np.mean(decimated**2)) > 0.3  # what naive decimation would have kept
    # ... while speech plus the tone keeps the speech
    x = resample(clip, SAMPLE_RATE, rate)
    mix = x + tone[: len(x)] if len(x) <= len(tone) else x
    wavfile.write(str(tmp_path / "mix.wav"), rate, _encode(mix, "float32"))
    assert _corr(read_wav(tmp_path / "mix.wav"), clip) > 0.99


def test_pcm_helpers() -> None:
    assert pcm_to_float(np.array([-32768, 0, 16384], dtype=np.int16)).tolist() == [-1.0, 0.0, 0.5]
    assert pcm_to_float(np.array([0, 128, 255], dtype=np.uint8))[1] == 0.0
    assert to_mono(np.array([[1.0, 0.0], [0.5, 0.5]], dtype=np.float32)).tolist() == [0.5, 0.5]
    with pytest.raises(AudioError):
        pcm_to_float(np.array([1 + 1j]))


def test_write_wav_round_trip(tmp_path: Path, clip: np.ndarray) -> None:
    write_wav(tmp_path / "c.wav", clip)
    np.testing.assert_allclose(read_wav(tmp_path / "c.wav"), clip, atol=1 / 32768)


_FMT_MONO = struct.pack("<IHHIIHH", 16, 1, 1, 16000, 32000, 2, 16)  # PCM, 16 kHz, 16-bit
_FMT_0CH = struct.pack("<IHHIIHH", 16, 1, 0, 16000, 0, 0, 16)


@pytest.mark.parametrize(
    ("name", "content", "what"),
    [
        ("missing.wav", None, "no such file"),
        ("text.wav", b"hello, this is not audio\n" * 20, "not a readable WAV"),
        ("truncated.wav", b"RIFF\x24\x00\x00\x00WAVEfmt ", "its header is cut short"),
        ("empty.wav", b"", "the file is empty"),
        ("no-channels.wav", b"RIFF\x28\x00\x00\x00WAVEfmt " + _FMT_0CH + b"data\x04\x00\x00\x00"
         + bytes(4), "0 channels or 0 bytes per sample frame"),
        ("no-data.wav", b"RIFF\x1c\x00\x00\x00WAVEfmt " + _FMT_MONO, "no data chunk"),
    ],
)
def test_bad_files_give_one_line_errors(
    tmp_path: Path, name: str, content: bytes | None, what: str
) -> None:
    path = tmp_path / name
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(AudioError) as err:
        read_wav(path)
    assert what in str(err.value) and str(path) in str(err.value)
    assert "\n" not in str(err.value)


def test_empty_and_nan_wavs(tmp_path: Path) -> None:
    wavfile.write(str(tmp_path / "empty.wav"), 16000, np.zeros(0, dtype=np.int16))
    with pytest.raises(AudioError, match="no samples"):
        read_wav(tmp_path / "empty.wav")
    bad = np.zeros(1600, dtype=np.float32)
    bad[10] = np.nan
    wavfile.write(str(tmp_path / "nan.wav"), 16000, bad)
    with pytest.raises(AudioError, match="NaN"):
        read_wav(tmp_path / "nan.wav")


# --- reading block by block ----------------------------------------------------------------

@pytest.mark.parametrize(
    ("rate", "fmt", "channels"),
    [(44100, "int16", 2), (48000, "float32", 1), (22050, "int24", 1), (8000, "int32", 2)],
)
def test_blocks_match_the_whole_file(
    tmp_path: Path, clip: np.ndarray, monkeypatch: pytest.MonkeyPatch,
    rate: int, fmt: str, channels: int,
) -> None:
    monkeypatch.setattr(audio, "BLOCK_S", 0.37)  # many blocks, edges at odd places
    x = resample(clip, SAMPLE_RATE, rate) * np.float32(0.9)
    path = tmp_path / f"{rate}-{fmt}.wav"
    if fmt == "int24":
        _write_24bit(path, x, rate)
    else:
        data = np.stack([x, 0.5 * x], axis=1) if channels == 2 else x
        wavfile.write(str(path), rate, _encode(data, fmt))
    with WavFile(path) as wav:
        assert (wav.rate_in, wav.channels) == (rate, channels)
        blocks = list(wav.blocks())
    assert len(blocks) >= 8
    _, raw = wavfile.read(str(path))
    whole = resample(to_mono(pcm_to_float(raw)), rate, SAMPLE_RATE)
    got = np.concatenate(blocks)
    assert abs(got.size - whole.size) <= 1
    n = min(got.size, whole.size)
    assert np.max(np.abs(got[:n] - whole[:n])) < 1e-3  # no clicks at block edges


@pytest.mark.parametrize(("fmt", "cut"), [("int16", False), ("int24", False), ("int16", True),
                                          ("int24", True)])
def test_a_long_file_is_never_in_memory_whole(tmp_path: Path, fmt: str, cut: bool) -> None:
    """Opening and reading hold a few blocks, whatever the sample format, and also when the
    header promises more than the file holds (a recorder that lost power)."""
    rate, seconds = 48000, 180
    t = np.arange(rate * seconds) / rate
    tone = (0.3 * np.sin(2 * np.pi * 220 * t)).astype(np.float32)
    path = tmp_path / "long.wav"
    if fmt == "int24":
        _write_24bit(path, np.stack([tone, tone], axis=1).reshape(-1), rate, channels=2)
    else:
        wavfile.write(str(path), rate, _encode(np.stack([tone, tone], axis=1), "int16"))
    del t, tone
    if cut:  # the header still promises 180 s
        with path.open("r+b") as f:
            f.truncate(path.stat().st_size * 2 // 3)
    size = path.stat().st_size  # 23-52 MB; the whole file as float64 would be 46-69 MB
    tracemalloc.start()
    try:
        with WavFile(path) as wav:
            samples = sum(b.size for b in wav.blocks())
            notes = list(wav.notes)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    expected = SAMPLE_RATE * seconds * 2 // 3 if cut else SAMPLE_RATE * seconds
    assert abs(samples - expected) <= 2
    assert peak < size / 4, f"peak {peak / 1e6:.1f} MB while reading a {size / 1e6:.1f} MB file"
    assert [n.startswith("cut short (EOF): its header promises 180.00 s") for n in notes] == (
        [True] if cut else [])


@pytest.mark.parametrize(("fmt", "channels"), [("int24", 1), ("int24", 2), ("int16", 2),
                                               ("float32", 1)])
def test_a_file_cut_short_reads_what_is_there(
    tmp_path: Path, clip: np.ndarray, monkeypatch: pytest.MonkeyPatch, fmt: str, channels: int
) -> None:
    monkeypatch.setattr(audio, "BLOCK_S", 0.37)
    x = resample(clip, SAMPLE_RATE, 22050) * np.float32(0.9)
    data = np.stack([x, 0.5 * x], axis=1) if channels == 2 else x
    path = tmp_path / "whole.wav"
    if fmt == "int24":
        _write_24bit(path, data.reshape(-1), 22050, channels=channels)
    else:
        wavfile.write(str(path), 22050, _encode(data, fmt))
    whole = read_wav(path)
    cut = tmp_path / "cut.wav"
    width = {"int24": 3, "int16": 2, "float32": 4}[fmt] * channels
    content = path.read_bytes()
    start = content.index(b"data") + 8
    cut.write_bytes(content[: start + width * 22050 + width // 2])  # 1 s and a half frame
    with WavFile(cut) as wav:
        assert wav.frames == 22050 and wav.notes and "EOF" in wav.notes[0]
        got = np.concatenate(list(wav.blocks()))
    assert abs(got.size - SAMPLE_RATE) <= 1
    n = SAMPLE_RATE - 100  # the resampler's last few samples see the cut
    assert np.max(np.abs(got[:n] - whole[:n])) < 1e-3


def test_big_endian_24_bit_rifx(tmp_path: Path, clip: np.ndarray) -> None:
    """RIFX (big-endian) 24-bit: scipy reads it whole; read block by block here."""
    ints = np.clip(np.round(clip * 0.9 * 2**23), -(2**23), 2**23 - 1).astype(">i4")
    raw = ints.view(np.uint8).reshape(-1, 4)[:, 1:].tobytes()
    fmt = struct.pack(">HHIIHH", 1, 1, SAMPLE_RATE, SAMPLE_RATE * 3, 3, 24)
    body = b"WAVE" + b"fmt " + struct.pack(">I", 16) + fmt + b"data" + struct.pack(
        ">I", len(raw)) + raw
    path = tmp_path / "rifx24.wav"
    path.write_bytes(b"RIFX" + struct.pack(">I", len(body)) + body)
    np.testing.assert_allclose(read_wav(path), clip * np.float32(0.9), atol=1e-4)


def test_nan_later_in_the_file_is_found_after_the_audio_before_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(audio, "BLOCK_S", 1.0)
    x = np.zeros(SAMPLE_RATE * 3, dtype=np.float32)
    x[SAMPLE_RATE * 2 + 5] = np.inf
    wavfile.write(str(tmp_path / "inf.wav"), SAMPLE_RATE, x)
    with WavFile(tmp_path / "inf.wav") as wav:
        blocks = wav.blocks()
        assert next(blocks).size == SAMPLE_RATE and next(blocks).size == SAMPLE_RATE
        with pytest.raises(AudioError, match=r"inf.wav: .*NaN or infinite samples \(after 2.00"):
            next(blocks)


def test_a_file_cut_short_while_it_is_read_ends_early(
    tmp_path: Path, clip: np.ndarray, monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    monkeypatch.setattr(audio, "BLOCK_S", 0.5)
    path = tmp_path / "shrinks.wav"
    write_wav(path, clip)
    with WavFile(path) as wav:
        with path.open("r+b") as f:
            f.truncate(44 + SAMPLE_RATE)  # 0.5 s of 16-bit samples left
        with caplog.at_level("WARNING"):
            got = np.concatenate(list(wav.blocks()))
    assert abs(got.size - SAMPLE_RATE // 2) <= 1
    assert "ends early at 0.50 s" in caplog.text


def test_an_empty_file_name_is_named_as_such() -> None:
    with pytest.raises(AudioError, match="an empty file name"):
        read_wav("")


def test_a_huge_metadata_chunk_is_skipped_not_read(tmp_path: Path) -> None:
    """A 24-bit file with a 40 MB LIST chunk before its samples: the header walk read every
    chunk body into memory; it now seeks past what it does not need."""
    plain = tmp_path / "plain.wav"
    _write_24bit(plain, np.zeros(16000, np.float32), 16000)
    raw = plain.read_bytes()
    data = raw.index(b"data")
    junk = b"LIST" + struct.pack("<I", 40_000_000) + bytes(40_000_000)
    body = raw[12:data] + junk + raw[data:]
    path = tmp_path / "tagged.wav"
    path.write_bytes(b"RIFF" + struct.pack("<I", 4 + len(body)) + b"WAVE" + body)
    tracemalloc.start()
    try:
        with WavFile(path) as wav:
            samples = sum(b.size for b in wav.blocks())
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert samples == 16000
    assert peak < 10_000_000, f"peak {peak / 1e6:.1f} MB"
