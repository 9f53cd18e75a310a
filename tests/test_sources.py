"""Audio sources: file (fast and real time), stdin (a real pipe), mic (a PyAudio-shaped fake
device that fails, disappears and comes back under a new index), and the streaming resampler."""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from scipy.io import wavfile

from edge_ser import SAMPLE_RATE
from edge_ser.audio import read_wav, resample, write_wav
from edge_ser.capture import QueueClosed
from edge_ser.commands.devices import describe
from edge_ser.config import SourceConfig
from edge_ser.errors import AudioError, EdgeSerError
from edge_ser.sources import FileSource, MicSource, StdinSource, StreamResampler, make_source
from edge_ser.sources.devices import choose_rate, find_device

CLIP = Path(__file__).resolve().parent.parent / "examples" / "clips" / "anger-ravdess-03.wav"


class Collector:
    def __init__(self) -> None:
        self.blocks: list[np.ndarray] = []
        self.done = threading.Event()
        self.error: EdgeSerError | None = None

    def push(self, block: np.ndarray) -> None:
        self.blocks.append(np.asarray(block))

    def finish(self, error: EdgeSerError | None) -> None:
        self.error = error
        self.done.set()

    @property
    def audio(self) -> np.ndarray:
        return np.concatenate(self.blocks) if self.blocks else np.zeros(0, np.float32)


def _to_pcm(x: np.ndarray, channels: int = 1) -> bytes:
    pcm = np.clip(x * 32768.0, -32768, 32767).astype("<i2")
    return np.repeat(pcm[:, None], channels, axis=1).tobytes()


# --- resampler -----------------------------------------------------------------------------

@pytest.mark.parametrize("rate", [44100, 48000, 8000])
def test_stream_resampler_matches_whole_signal(rate: int) -> None:
    x = resample(read_wav(CLIP)[: SAMPLE_RATE * 2], SAMPLE_RATE, rate)
    whole = resample(x, rate, SAMPLE_RATE)
    rs = StreamResampler(rate)
    step = rate * 30 // 1000
    parts = [rs.process(x[i : i + step]) for i in range(0, x.size, step)] + [rs.flush()]
    chunked = np.concatenate(parts)
    assert chunked.size == whole.size
    assert np.max(np.abs(chunked - whole)) < 1e-3  # no clicks at chunk edges


# --- file ----------------------------------------------------------------------------------

def test_file_source_fast_plays_everything_then_ends() -> None:
    col = Collector()
    src = FileSource(CLIP, realtime=False, chunk_ms=30)
    src.start(col.push, col.finish)
    assert col.done.wait(10)
    assert col.error is None
    expected = read_wav(CLIP)
    np.testing.assert_array_equal(col.audio, expected)
    assert all(b.size <= 480 for b in col.blocks)
    assert src.stats()["source_state"] == "ended"


def test_file_source_real_time_is_paced_and_loops(tmp_path: Path) -> None:
    short = tmp_path / "short.wav"
    write_wav(short, read_wav(CLIP)[: SAMPLE_RATE // 2])  # 0.5 s
    col = Collector()
    src = FileSource(short, realtime=True, loop=True, chunk_ms=20)
    t0 = time.monotonic()
    src.start(col.push, col.finish)
    while col.audio.size < SAMPLE_RATE * 1.2 and time.monotonic() - t0 < 20:
        time.sleep(0.02)
    elapsed = time.monotonic() - t0
    src.stop()
    assert col.audio.size >= SAMPLE_RATE * 1.2  # looped past its 0.5 s end
    assert src.loops >= 2
    assert elapsed >= 1.2 * 0.9  # paced by the clock, not as fast as possible
    assert not col.done.is_set()  # a stop is not an end of input


def test_file_source_bad_file_is_one_line_error(tmp_path: Path) -> None:
    bad = tmp_path / "not.wav"
    bad.write_text("hello")
    with pytest.raises(AudioError, match="not.wav"):
        FileSource(bad).start(Collector().push, Collector().finish)


# --- stdin ---------------------------------------------------------------------------------

@pytest.mark.parametrize(("rate", "channels"), [(16000, 1), (48000, 2)])
def test_stdin_source_reads_real_pcm_from_a_pipe(tmp_path: Path, rate: int, channels: int) -> None:
    clip = read_wav(CLIP)
    raw = tmp_path / "clip.raw"
    raw.write_bytes(_to_pcm(resample(clip, SAMPLE_RATE, rate), channels))
    proc = subprocess.Popen(["cat", str(raw)], stdout=subprocess.PIPE)
    assert proc.stdout is not None
    col = Collector()
    src = StdinSource(rate=rate, channels=channels, live=False, stream=proc.stdout)
    src.start(col.push, col.finish)
    assert col.done.wait(20) and col.error is None
    proc.wait(5)
    got = col.audio
    assert abs(got.size - clip.size) <= 2
    n = min(got.size, clip.size)
    assert np.corrcoef(got[:n], clip[:n])[0, 1] > 0.995
    assert src.stats()["source_read_s"] == pytest.approx(clip.size / SAMPLE_RATE, abs=0.01)


def test_make_source_picks_by_type(tmp_path: Path) -> None:
    assert isinstance(make_source(SourceConfig(type="file", path=CLIP)), FileSource)
    assert isinstance(make_source(SourceConfig(type="stdin", rate=8000)), StdinSource)
    assert isinstance(make_source(SourceConfig(type="mic", device="usb")), MicSource)
    assert make_source(SourceConfig(type="file", path=CLIP, realtime=False)).live is False


# --- mic, with a PyAudio-shaped device that fails and comes back ----------------------------

class FakeWorld:
    """The "hardware": one USB mic at 48 kHz only, which dies, vanishes, then returns."""

    def __init__(self, audio48: np.ndarray, fail_after_chunks: int, absent_opens: int) -> None:
        self.pcm = _to_pcm(audio48)
        self.pos = 0
        self.fail_after = fail_after_chunks
        self.absent_opens = absent_opens
        self.replugged = False
        self.attempts: list[float] = []
        self.failed = False
        self.streams = 0

    def devices(self, absent: bool) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = [{"name": "bcm2835 Headphones", "maxInputChannels": 0,
                                      "defaultSampleRate": 44100.0, "index": 0}]
        if absent:
            return out  # unplugged
        if self.replugged:  # comes back with a new index, as USB devices do
            out.append({"name": "HDMI", "maxInputChannels": 0, "defaultSampleRate": 48000.0})
        out.append({"name": "USB PnP Sound Device: Audio (hw:2,0)", "maxInputChannels": 1,
                    "defaultSampleRate": 48000.0})
        return [dict(d, index=i) for i, d in enumerate(out)]


class FakeStream:
    def __init__(self, world: FakeWorld, callback: Any, frames: int, dies: bool) -> None:
        self.world, self.callback, self.frames = world, callback, frames
        self.active = True
        self.dies = dies
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        sent = 0
        nbytes = self.frames * 2
        while self.active:
            w = self.world
            data = w.pcm[w.pos : w.pos + nbytes]
            if len(data) < nbytes:
                w.pos, data = 0, w.pcm[:nbytes]
            w.pos += nbytes
            _, flag = self.callback(data, self.frames, {}, 0)
            sent += 1
            if flag != 0 or (self.dies and sent >= w.fail_after):
                self.active = False  # the device errored: PortAudio stops the stream
                w.failed = True
                return
            time.sleep(0.003)

    def is_active(self) -> bool:
        return self.active

    def stop_stream(self) -> None:
        self.active = False

    def close(self) -> None:
        self.active = False
        self._thread.join(1)


class FakePyAudio:
    def __init__(self, world: FakeWorld) -> None:
        self.world = world
        world.attempts.append(time.monotonic())
        absent = world.failed and world.absent_opens > 0
        if absent:
            world.absent_opens -= 1
            world.replugged = world.absent_opens == 0
        self._devices = world.devices(absent)

    def get_device_count(self) -> int:
        return len(self._devices)

    def get_device_info_by_index(self, index: int) -> Mapping[str, Any]:
        if not 0 <= index < len(self._devices):
            raise OSError("Invalid device index")
        return self._devices[index]

    def get_default_input_device_info(self) -> Mapping[str, Any]:
        for d in self._devices:
            if d["maxInputChannels"]:
                return d
        raise OSError("No Default Input Device Available")

    def is_format_supported(self, rate: float, **kw: Any) -> bool:
        d = self.get_device_info_by_index(kw["input_device"])
        if d["maxInputChannels"] < kw.get("input_channels", 1) or rate not in (44100, 48000):
            raise ValueError("Invalid sample rate")
        return True

    def open(self, **kw: Any) -> FakeStream:
        assert kw["rate"] in (44100, 48000) and kw["input"] is True
        self.world.streams += 1
        return FakeStream(self.world, kw["stream_callback"], kw["frames_per_buffer"],
                          dies=self.world.streams == 1)

    def terminate(self) -> None:
        pass


def test_mic_resamples_fails_and_is_reopened_with_backoff() -> None:
    clip = read_wav(CLIP)
    world = FakeWorld(resample(clip, SAMPLE_RATE, 48000), fail_after_chunks=40, absent_opens=2)
    col = Collector()
    src = MicSource(device="usb pnp", chunk_ms=30, reopen_min_s=0.1, reopen_max_s=1.0,
                    backend=lambda: FakePyAudio(world))
    src.start(col.push, col.finish)
    deadline = time.monotonic() + 20
    while (src.reopens < 1 or col.audio.size < SAMPLE_RATE * 2) and time.monotonic() < deadline:
        time.sleep(0.05)
    stats = src.stats()
    src.stop()
    assert stats["source_state"] == "capturing", stats
    assert stats["source_reopens"] == 1
    assert stats["source_failures"] == 3  # the stream died, then two opens found no device
    assert stats["source_rate_hz"] == 48000 and "USB PnP" in stats["source_device"]
    gaps = np.diff(world.attempts)
    assert len(gaps) == 3
    assert gaps[1] >= 0.1 * 0.9 and gaps[2] >= 0.2 * 0.9  # exponential backoff: 0.1 s, 0.2 s
    assert not col.done.is_set()  # a live source never "ends"
    # what came out is the clip, back at 16 kHz
    first = col.audio[: 40 * 480 - 480]
    assert np.corrcoef(first, clip[: first.size])[0, 1] > 0.995


def test_mic_device_lookup_and_rate_choice() -> None:
    world = FakeWorld(np.zeros(48000, np.float32), fail_after_chunks=10**9, absent_opens=0)
    pa = FakePyAudio(world)
    index, info = find_device(pa, "usb")
    assert index == 1
    assert choose_rate(pa, index, info, 1, None) == 48000  # 16 kHz unsupported: device rate
    with pytest.raises(AudioError, match="does not capture at 16000 Hz"):
        choose_rate(pa, index, info, 1, 16000)
    with pytest.raises(AudioError, match="no input device name contains 'webcam'"):
        find_device(pa, "webcam")
    with pytest.raises(AudioError, match="has no input"):
        find_device(pa, 0)
    text, rc = describe(pa)
    assert rc == 0 and "USB PnP" in text and "44100,48000" in text
    assert "Headphones" not in text  # output-only devices are not listed


def test_devices_command_without_any_input_device() -> None:
    world = FakeWorld(np.zeros(10, np.float32), fail_after_chunks=1, absent_opens=1)
    world.failed = True
    text, rc = describe(FakePyAudio(world))
    assert rc == 1 and "no audio input devices found" in text


def test_devices_command_real_pyaudio() -> None:
    """The real command: this machine may have no sound card, then it says so (exit 1)."""
    proc = subprocess.run([sys.executable, "-m", "edge_ser", "devices"], capture_output=True,
                          text=True, timeout=60)
    if proc.returncode == 2:
        assert "PyAudio is not installed" in proc.stderr
    elif proc.returncode == 1:
        assert "no audio input devices found" in proc.stdout
    else:
        assert proc.returncode == 0 and "supported Hz" in proc.stdout


def test_file_source_bad_samples_later_in_the_file_end_it_with_the_error(tmp_path: Path) -> None:
    x = np.concatenate([read_wav(CLIP), np.zeros(SAMPLE_RATE * 5, dtype=np.float32)])
    x[-10] = np.nan  # in the last 4-s block: found after the blocks before it were played
    path = tmp_path / "nan-late.wav"
    wavfile.write(str(path), SAMPLE_RATE, x)
    col = Collector()
    FileSource(path, realtime=False).start(col.push, col.finish)
    assert col.done.wait(10)
    assert isinstance(col.error, AudioError) and "NaN" in str(col.error)
    block = 4 * SAMPLE_RATE  # audio.BLOCK_S
    assert col.audio.size >= (x.size - 1) // block * block  # the blocks before it were played


@pytest.mark.parametrize("kind", ["file", "stdin"])
def test_a_stopping_consumer_is_quiet_and_a_bug_is_an_error_not_an_end(
    tmp_path: Path, kind: str, caplog: pytest.LogCaptureFixture
) -> None:
    def make() -> FileSource | StdinSource:
        if kind == "file":
            return FileSource(CLIP, realtime=False)
        pcm = tmp_path / "in.raw"
        pcm.write_bytes(_to_pcm(read_wav(CLIP)))
        return StdinSource(stream=pcm.open("rb"), rate=SAMPLE_RATE, channels=1, live=False)

    def closed(block: np.ndarray) -> None:
        raise QueueClosed("stopping")

    col = Collector()
    src = make()
    with caplog.at_level("DEBUG"):
        src.start(closed, col.finish)
        assert src._thread is not None
        src._thread.join(5)
    assert not col.done.is_set() and src.state == "stopped"  # not an end of input
    assert not [r for r in caplog.records if r.levelno >= 30], caplog.text

    def broken(block: np.ndarray) -> None:
        raise RuntimeError("boom")

    col = Collector()
    make().start(broken, col.finish)
    assert col.done.wait(5)
    assert isinstance(col.error, AudioError) and "RuntimeError: boom" in str(col.error)


def test_a_playing_file_replaced_or_cut_to_nothing(tmp_path: Path) -> None:
    """The file is read from the inode opened at start: replacing the name changes nothing;
    a looping file cut to its header ends with an error instead of spinning."""
    path = tmp_path / "note.wav"
    write_wav(path, read_wav(CLIP))
    col = Collector()
    src = FileSource(path, realtime=True)  # still playing when the name is replaced
    src.start(col.push, col.finish)
    other = tmp_path / "other.wav"
    write_wav(other, np.ones(SAMPLE_RATE, np.float32) * 0.5)
    other.replace(path)
    assert col.done.wait(10) and col.error is None
    np.testing.assert_array_equal(col.audio, read_wav(CLIP))

    write_wav(path, read_wav(CLIP))
    col = Collector()
    src = FileSource(path, realtime=True, loop=True)
    src.start(col.push, col.finish)
    with path.open("r+b") as f:
        f.truncate(44)
    assert col.done.wait(20)
    assert isinstance(col.error, AudioError) and "no samples left" in str(col.error)
    assert src.loops <= 2
