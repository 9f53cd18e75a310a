"""Configuration schema: pydantic models, one per section of the YAML file.

Every field's description carries its unit; unknown keys are refused (``extra="forbid"``).
The broker's section is in :mod:`edge_ser.config.mqtt`; loading (with file:line errors) is in
:mod:`edge_ser.config.loader`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, PrivateAttr, model_validator

from edge_ser import CHUNK_MS
from edge_ser.config.base import Strict as _Strict
from edge_ser.config.mqtt import EVENT_KIB, MqttConfig
from edge_ser.errors import ConfigError

REPO_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_MODEL = REPO_ROOT / "models" / "edge-ser-whisper-tiny.int8.onnx"


class SourceConfig(_Strict):
    type: Literal["mic", "file", "stdin"] = Field(
        "mic", description="Where audio comes from: microphone, a WAV file, or raw PCM on stdin."
    )
    device: str | int | None = Field(
        None,
        description="mic: device name substring (case-insensitive) or PortAudio index; "
        "null = the default input device.",
    )
    rate: int | None = Field(
        None, ge=8000, le=192000,
        description="mic/stdin: capture rate in Hz; null = 16000 if the device supports it, "
        "else its default rate (resampled to 16000 Hz).",
    )
    channels: int = Field(1, ge=1, le=8, description="Captured channels (count), downmixed.")
    path: Path | None = Field(None, description="file: path of the WAV file to play.")
    realtime: bool = Field(
        True,
        description="file: play at real time (true) or as fast as possible (false). "
        "stdin: live input that may drop the oldest audio when the worker falls behind (true), "
        "or a recording read with back-pressure, nothing dropped (false).",
    )
    loop: bool = Field(False, description="file: start again at the end (true) or stop (false).")
    chunk_ms: int = Field(
        CHUNK_MS, ge=10, le=1000,
        description="Capture block length in milliseconds: audio reaches the VAD this often; "
        "shorter blocks cost idle CPU (one wake-up each), longer ones add up to one block of "
        "event latency.",
    )
    queue_s: float = Field(
        10.0, gt=0, le=600,
        description="Capacity of the capture queue in seconds of audio; when full the oldest "
        "audio is dropped and counted.",
    )
    reopen_min_s: float = Field(
        1.0, gt=0, description="First delay before reopening a failed device, in seconds."
    )
    reopen_max_s: float = Field(
        30.0, gt=0, description="Largest delay between reopen attempts, in seconds."
    )

    @model_validator(mode="after")
    def _file_needs_path(self) -> SourceConfig:
        if self.type == "file" and self.path is None:
            raise ValueError("source.type 'file' needs source.path")
        if self.type != "file" and self.path is not None:  # it would be ignored, silently
            raise ValueError(f"source.path is only read by source.type 'file', not "
                             f"'{self.type}' (set type: file, or path: null)")
        if self.type != "mic" and self.device is not None:
            raise ValueError(f"source.device is only read by source.type 'mic', not "
                             f"'{self.type}' (set type: mic, or device: null)")
        if self.reopen_min_s > self.reopen_max_s:
            raise ValueError("source.reopen_min_s must not exceed source.reopen_max_s")
        if self.queue_s * 1000 < 2 * self.chunk_ms:  # a smaller queue cuts every chunk
            raise ValueError("source.queue_s must hold at least two source.chunk_ms blocks "
                             f"({2 * self.chunk_ms / 1000:g} s)")
        return self

    @property
    def endless(self) -> bool:
        """A microphone or a looping file: input that never ends by itself."""
        return self.type == "mic" or (self.type == "file" and self.loop)


class VadConfig(_Strict):
    aggressiveness: int = Field(
        2, ge=0, le=3, description="webrtcvad aggressiveness, 0 (lenient) to 3 (strict), no unit."
    )
    frame_ms: Literal[10, 20, 30] = Field(30, description="VAD frame length in milliseconds.")
    preroll_ms: int = Field(
        300, ge=0, le=2000, description="Audio kept before speech onset, in milliseconds."
    )
    hangover_ms: int = Field(
        600, ge=0, le=5000,
        description="Non-speech tolerated inside an utterance before it ends, in milliseconds.",
    )
    min_speech_ms: int = Field(
        250, ge=0, le=10000,
        description="Utterances shorter than this are ignored, in milliseconds.",
    )
    max_utterance_s: float = Field(
        60.0, ge=1, le=3600,
        description="Speech longer than this (seconds) is closed and reported as one utterance "
        "and a new one begins; checked from the onset, so an utterance whose pre-roll and onset "
        "frames already exceed it is closed at once, at that length.",
    )
    energy_floor_dbfs: float = Field(
        -70.0, le=0, description="Frames below this RMS level (dBFS) are never speech."
    )
    peak_range_db: float = Field(
        35.0, ge=0, le=90,
        description="Frames more than this many dB below the held speech peak (the loudest "
        "speech frame, decaying 3 dB per second) are never speech, in dB (0 disables).",
    )
    steady_veto: bool = Field(
        True, description="Frames of a steady tone (beeper, alarm, hum) or of a stationary sound "
        "(fan, noise) over the last second are never speech, and an utterance is confirmed only "
        "once its spectrum changes as speech does (about 0.5 s); true or false, no unit.",
    )


class WindowConfig(_Strict):
    length_s: float = Field(8.0, ge=1, le=30, description="Analysis window length in seconds "
                            "(at most the model's window).")
    hop_s: float = Field(
        8.0, ge=0.5, le=30, description="Step between window starts in seconds (<= length_s)."
    )
    min_s: float = Field(
        1.0, ge=0, description="A trailing piece shorter than this (seconds) is dropped unless "
        "it is the utterance's only window.",
    )

    span_utterances: bool = Field(
        False,
        description="voice_note mode: cut windows from the speech of the whole input joined "
        "together (true, the paper) or per utterance (false: no window spans a pause).",
    )

    @model_validator(mode="after")
    def _hop_le_length(self) -> WindowConfig:
        if self.hop_s > self.length_s:
            raise ValueError("windows.hop_s must not exceed windows.length_s")
        return self


class ModelConfig(_Strict):
    path: Path = Field(DEFAULT_MODEL, description="ONNX model file (the edge-ser model contract).")
    threads: int = Field(1, ge=1, le=64, description="onnxruntime intra-op threads (count).")
    arena: bool = Field(
        True, description="onnxruntime CPU memory arena on (faster) or off (flatter RSS)."
    )
    low_memory: bool = Field(
        False,
        description="Smallest RSS (MiB) at a latency cost: arena off, no weight prepacking, "
        "and glibc returns every buffer over 64 KiB to the kernel when freed.",
    )


class AggregateConfig(_Strict):
    mode: Literal["utterance", "voice_note"] = Field(
        "utterance",
        description="Pool window scores per utterance (daemon) or over the whole input (a note).",
    )


class MemoryBudget(_Strict):
    rss_mb: float = Field(
        400.0, gt=0,
        description="Resident memory budget in MiB; above it windows are skipped (load shed).",
    )


class ThermalBudget(_Strict):
    zone: Path = Field(
        Path("/sys/class/thermal/thermal_zone0/temp"),
        description="Thermal zone file (millidegrees Celsius); missing = no thermal control.",
    )
    soft_c: float = Field(70.0, description="Throttle above this temperature, degrees Celsius.")
    hard_c: float = Field(80.0, description="Pause inference above this, degrees Celsius.")
    hysteresis_c: float = Field(
        5.0, ge=0, description="Resume once this far below a limit, degrees Celsius."
    )
    poll_s: float = Field(2.0, gt=0, description="Temperature sampling period, seconds.")

    @model_validator(mode="after")
    def _soft_below_hard(self) -> ThermalBudget:
        if self.soft_c >= self.hard_c:
            raise ValueError("budgets.thermal.soft_c must be below hard_c")
        return self


class Budgets(_Strict):
    memory: MemoryBudget = Field(default_factory=MemoryBudget, description="Memory budget.")
    thermal: ThermalBudget = Field(default_factory=ThermalBudget, description="Thermal budget.")
    duty_cycle: float = Field(
        1.0, ge=0.05, le=1.0,
        description="Largest share of wall time spent in inference (0-1, fraction).",
    )


class LoggingConfig(_Strict):
    level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = Field("INFO", description="Log level.")


class Config(_Strict):
    source: SourceConfig = Field(default_factory=SourceConfig, description="Audio source.")
    vad: VadConfig = Field(default_factory=VadConfig, description="Voice-activity gate.")
    windows: WindowConfig = Field(default_factory=WindowConfig, description="Windowing.")
    model: ModelConfig = Field(default_factory=ModelConfig, description="Emotion model.")
    aggregate: AggregateConfig = Field(
        default_factory=AggregateConfig, description="Score pooling."
    )
    mqtt: MqttConfig = Field(default_factory=MqttConfig, description="Event output.")
    budgets: Budgets = Field(default_factory=Budgets, description="Resource budgets.")
    logging: LoggingConfig = Field(default_factory=LoggingConfig, description="Logging.")
    _origin: str = PrivateAttr("<config>")
    _lines: dict[str, int] = PrivateAttr(default_factory=dict)

    @model_validator(mode="after")
    def _buffer_fits_the_budget(self) -> Config:
        """The offline buffer may take at most half the memory budget: beyond it the memory
        guard would shed every window (no more events) before the buffer dropped its oldest."""
        need_mb = self.mqtt.buffer_events * EVENT_KIB / 1024
        if need_mb > self.budgets.memory.rss_mb / 2:
            fits = int(self.budgets.memory.rss_mb / 2 * 1024 / EVENT_KIB)
            raise ValueError(
                f"mqtt.buffer_events {self.mqtt.buffer_events} can take {need_mb:.0f} MiB "
                f"({EVENT_KIB} KiB each), more than half of budgets.memory.rss_mb "
                f"({self.budgets.memory.rss_mb:g} MiB): at most {fits} with that budget")
        return self

    def where(self, key: str) -> str:
        """``file:line`` of a dotted key (or of its nearest parent) in the YAML it came from."""
        parts = key.split(".")
        while parts:
            line = self._lines.get(".".join(parts))
            if line is not None:
                return f"{self._origin}:{line}"
            parts.pop()
        return self._origin

    def check_daemon(self) -> None:
        """Raise :class:`ConfigError` for settings the daemon cannot run with (classify can)."""
        if self.aggregate.mode == "voice_note" and self.source.endless:
            raise ConfigError(
                f"{self.where('aggregate.mode')}: aggregate.mode: 'voice_note' pools the whole "
                f"input into one event, which a source that never ends ({self.source.type}"
                f"{' with loop' if self.source.loop else ''}) would never publish: use "
                "'utterance'"
            )
