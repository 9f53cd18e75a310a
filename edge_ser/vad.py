"""Voice-activity gate: webrtcvad over a stream of 16 kHz float32 audio.

:class:`VadGate` cuts 16-bit frames of 10/20/30 ms from whatever block sizes it is fed (the
remainder of a partial frame waits for the next call), asks webrtcvad about each frame and turns
the decisions into events:

* :class:`SpeechStart` once an utterance is *confirmed*: at least ``min_speech_ms`` of voiced
  frames before the hangover expired (shorter blips are dropped without any event) and, with
  ``steady_veto``, a spectrum that changes as speech does (see below);
* :class:`SpeechAudio` blocks of the utterance's audio (original float samples), the first one
  starting ``preroll_ms`` before the first voiced frame so word onsets are kept;
* :class:`SpeechEnd` after ``hangover_ms`` of non-speech (the hangover audio is part of the
  utterance, so word endings are kept), after ``max_utterance_s``, or on :meth:`VadGate.flush`.

Two cheap checks veto webrtcvad's "speech" (webrtcvad still sees every frame, so its adaptive
noise model is unchanged): a frame whose RMS level is below ``energy_floor_dbfs`` (default
:data:`ENERGY_FLOOR_DBFS`) or whose spectral flatness is above :data:`MAX_FLATNESS` (white-ish
hiss; voiced speech stays below ~0.3, Gaussian noise is ~0.56) is not speech. Without the
flatness veto webrtcvad, after a stretch of digital silence, calls faint hiss (-61 dBFS in
``examples/voice-note.wav``) speech; an absolute level floor high enough to reject that hiss
would also reject quiet recordings (RAVDESS neutral clips peak near -50 dBFS).

A third, relative veto: a frame more than ``peak_range_db`` below the held speech peak (the
loudest frame accepted as speech, decaying by :data:`PEAK_DECAY_DB_S`) is not speech. webrtcvad
calls the room-noise or reverb tail after the last word speech (RAVDESS clips: -50 to -68 dBFS
after words peaking near -10), which kept utterances open up to a second past the last word.
Over the RAVDESS and URDU corpora the 35 dB default removes 1.3 % / 0.01 % of the detected
speech time, all of it such tails. The peak survives the end of an utterance (decaying), so a
tail cannot open a new utterance either; the price is that a voice 35 dB quieter than one heard
a moment before is missed until the peak has decayed.

A fourth, ``steady_veto`` (on by default): a frame is not speech when the voiced frames of the
last 2 s are a steady tone (the spectrum hardly changes from frame to frame: buzzers, beepers,
hum) or a stationary sound (band levels of four 240-ms blocks within 1 dB: fan, noise), and a
candidate utterance is confirmed only once its spectrum changes as speech does, or when it ends
without a steady frame. webrtcvad calls all of these speech; a 30-s buzzer became an emotion.

Times are seconds since the start of the stream (or the last :meth:`VadGate.reset`).
Chunking never changes the result: feeding a file in one block or in 30 ms blocks gives the
same events (apart from how :class:`SpeechAudio` is split into blocks).
"""

from __future__ import annotations

import functools
import logging
import math
from collections import deque
from dataclasses import dataclass, field

import numpy as np
import webrtcvad
from numpy.typing import NDArray

from edge_ser import SAMPLE_RATE
from edge_ser.config import VadConfig

log = logging.getLogger(__name__)

Float32Array = NDArray[np.float32]


@dataclass(frozen=True)
class SpeechStart:
    """A confirmed utterance begins at ``t_s`` (pre-roll included)."""

    t_s: float


@dataclass(frozen=True, eq=False)
class SpeechAudio:
    """A block of utterance audio whose first sample is at ``start_s``."""

    audio: Float32Array = field(repr=False)
    start_s: float

    @property
    def end_s(self) -> float:
        return self.start_s + len(self.audio) / SAMPLE_RATE


@dataclass(frozen=True)
class SpeechEnd:
    """The utterance ends at ``t_s`` (just after its last sample)."""

    t_s: float


VadEvent = SpeechStart | SpeechAudio | SpeechEnd

_IDLE, _CANDIDATE, _SPEECH = 0, 1, 2

#: Frames quieter than this (RMS, dB re full scale) are never speech.
ENERGY_FLOOR_DBFS = -70.0
#: Frames with a spectral flatness (geometric / arithmetic mean of the power spectrum, 0-4 kHz)
#: above this are never speech (measured on 120 corpus clips: voiced speech 99th percentile 0.31,
#: white hiss median 0.56). 0-4 kHz because audio resampled from 8 kHz has nothing above: over the
#: full band its room tone looked like speech (flatness 0.001) and pauses became utterances.
MAX_FLATNESS = 0.4
#: How fast the held speech peak (the reference of ``peak_range_db``) decays, dB per second.
PEAK_DECAY_DB_S = 3.0
#: A steady tone: the median change of the 0-4 kHz power spectrum (total-variation distance of
#: the spectra scaled to sum 1) from one voiced frame to the next, over :data:`TONE_MS`, below
#: this (measured in docs/daemon.md, "What the VAD lets through").
TONE_CHANGE = 0.02
TONE_MS = 270
#: Stationary sound: band levels of :data:`STEADY_BLOCKS` successive blocks of
#: :data:`STEADY_BLOCK_MS` of voiced frames within this many dB (RMS over 16 bands of 250 Hz and
#: the blocks) of their mean.
STEADY_DB = 1.0
#: ... and a spectrum that changes as speech does: that spread at least this (dB), over two or
#: more blocks. An utterance is confirmed once one of its frames shows it (or when it ends).
LIVELY_DB = 1.5
STEADY_BLOCK_MS = 240
STEADY_BLOCKS = 4
#: Voiced frames older than this (s) no longer count for the two tests above.
CHARACTER_S = 2.0
_BANDS = 16
_FEATURE_BLOCK = 256  # frames per vectorised feature computation
_VOICE, _NOT_VOICE = 1, 2  # what a voiced frame's recent past says (see VadGate._character)


def _to_pcm16(x: Float32Array) -> bytes:
    return np.clip(np.round(x * 32768.0), -32768, 32767).astype("<i2").tobytes()


@functools.lru_cache(maxsize=4)
def _hann(n: int) -> NDArray[np.float64]:
    w = np.hanning(n)
    w.flags.writeable = False
    return w


def _spectra(frames: NDArray[np.float32]) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """Mean square and the 0-4 kHz power spectrum of each row of ``frames``."""
    f = frames.astype(np.float64)
    power = np.mean(f * f, axis=1)
    n_fft = 1 << int(np.ceil(np.log2(f.shape[1])))
    spec = np.abs(np.fft.rfft(f * _hann(f.shape[1]), n_fft, axis=1)) ** 2 + 1e-12
    return power, spec[:, : n_fft // 4 + 1]  # 0-4 kHz: audio resampled from 8 kHz has no more


def _flatness(spec: NDArray[np.float64]) -> NDArray[np.float64]:
    return np.asarray(np.exp(np.mean(np.log(spec), axis=1)) / np.mean(spec, axis=1))


def frame_features(frames: NDArray[np.float32]) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """Mean square and spectral flatness of each row of ``frames`` ``[F, frame_len]``."""
    power, spec = _spectra(frames)
    return power, _flatness(spec)


class VadGate:
    """Streaming webrtcvad gate with pre-roll, hangover, minimum speech and maximum length."""

    def __init__(
        self,
        cfg: VadConfig | None = None,
        rate: int = SAMPLE_RATE,
        energy_floor_dbfs: float | None = None,
    ) -> None:
        self.cfg = cfg if cfg is not None else VadConfig.model_validate({})
        self.rate = rate
        if energy_floor_dbfs is None:
            energy_floor_dbfs = getattr(self.cfg, "energy_floor_dbfs", None)
        if energy_floor_dbfs is None:
            energy_floor_dbfs = ENERGY_FLOOR_DBFS
        self.energy_floor_dbfs = float(energy_floor_dbfs)
        self._floor_ms = 10.0 ** (self.energy_floor_dbfs / 10.0)  # mean square at the floor
        self.frame_len = rate * self.cfg.frame_ms // 1000
        self._preroll_frames = self.cfg.preroll_ms // self.cfg.frame_ms
        self._hangover_frames = self.cfg.hangover_ms // self.cfg.frame_ms
        self._min_voiced = max(1, -(-self.cfg.min_speech_ms // self.cfg.frame_ms))
        self._max_len = int(round(self.cfg.max_utterance_s * rate))
        self._peak_decay = PEAK_DECAY_DB_S * self.cfg.frame_ms / 1000.0  # dB per frame
        self._tone_frames = max(3, round(TONE_MS / self.cfg.frame_ms))
        self._block_frames = max(2, round(STEADY_BLOCK_MS / self.cfg.frame_ms))
        self._character_span = int(CHARACTER_S * rate)  # samples
        self.reset()

    # --- public API ---------------------------------------------------------------------------
    def reset(self) -> None:
        """Forget all state (webrtcvad's adaptive noise model too); the clock restarts at 0."""
        self._vad = webrtcvad.Vad(self.cfg.aggressiveness)
        self._rest = np.zeros(0, dtype=np.float32)
        self._pos = 0  # samples consumed into frames so far (stream clock)
        self._state = _IDLE
        self._ring: deque[tuple[int, Float32Array]] = deque(maxlen=max(1, self._preroll_frames))
        self._pending: list[tuple[int, Float32Array]] = []  # candidate utterance frames
        self._pending_len = 0  # samples in _pending
        self._chunk: list[Float32Array] = []  # confirmed audio not yet emitted
        self._chunk_start = 0
        self._utt_len = 0
        self._voiced = 0
        self._silence_run = 0
        self._peak_db = -math.inf  # held speech peak, dBFS (decays by PEAK_DECAY_DB_S)
        # recent voiced frames: (stream position, 16 band powers, change from the one before)
        self._recent: deque[tuple[int, NDArray[np.float64], float]] = deque()
        self._last_shape: NDArray[np.float64] | None = None  # spectrum of the newest of them
        self._lively = False  # the candidate utterance showed a changing spectrum
        self._not_voice = False  # ... or a frame of a steady tone or stationary sound
        self.not_voice_frames = 0  # frames webrtcvad called speech that _character vetoed

    @property
    def time_s(self) -> float:
        """Stream time consumed so far, in seconds (partial frames excluded)."""
        return self._pos / self.rate

    @property
    def in_speech(self) -> bool:
        return self._state == _SPEECH

    def process(self, samples: Float32Array) -> list[VadEvent]:
        """Feed mono float32 samples at the gate's rate; return the events they complete."""
        x = np.asarray(samples, dtype=np.float32).reshape(-1)
        # frames are kept (pre-roll, candidates): never views of the caller's buffer
        x = np.concatenate([self._rest, x]) if self._rest.size else x.copy()
        n_frames = len(x) // self.frame_len
        if n_frames == 0:
            self._rest = x  # already a copy
            return []
        frames = x[: n_frames * self.frame_len].reshape(n_frames, self.frame_len)
        events: list[VadEvent] = []
        for b in range(0, n_frames, _FEATURE_BLOCK):  # bounded memory for long inputs
            block = frames[b : b + _FEATURE_BLOCK]
            power, spec = _spectra(block)
            flatness = _flatness(spec)
            level = 10.0 * np.log10(np.maximum(power, 1e-20))
            for i, frame in enumerate(block):
                voiced = bool(self._vad.is_speech(_to_pcm16(frame), self.rate))
                voiced = voiced and power[i] >= self._floor_ms and flatness[i] <= MAX_FLATNESS
                character = 0
                if voiced and self.cfg.steady_veto:
                    character = self._character(spec[i])
                    if character == _NOT_VOICE:
                        voiced = False
                        self.not_voice_frames += 1
                if self.cfg.peak_range_db > 0:
                    voiced = self._peak_veto(voiced, float(level[i]))
                self._step(frame, voiced, events, character)
                self._pos += self.frame_len
        self._rest = x[n_frames * self.frame_len :].copy()
        self._emit_chunk(events)
        return events

    def flush(self) -> list[VadEvent]:
        """End of stream: close an open utterance (a partial trailing frame is dropped)."""
        events: list[VadEvent] = []
        self._pos += len(self._rest)
        self._rest = np.zeros(0, dtype=np.float32)
        if self._state == _CANDIDATE and self._voiced >= self._min_voiced and not self._not_voice:
            self._confirm(events)  # as when its hangover expires (_close)
        if self._state == _SPEECH:
            self._end(events)
        self._pending = []
        self._ring.clear()
        self._state = _IDLE
        return events

    def skip(self, n_samples: int) -> list[VadEvent]:
        """``n_samples`` of audio went missing (dropped by the capture queue): the open
        utterance ends before the gap, and the clock moves past it."""
        events = self.flush()
        self._pos += n_samples
        return events

    def _character(self, spec: NDArray[np.float64]) -> int:
        """What the voiced frames of the last :data:`CHARACTER_S` (this one included) say:
        ``_NOT_VOICE`` for a steady tone or a stationary sound, ``_VOICE`` for a spectrum that
        changes as speech does, 0 while too few frames tell."""
        while self._recent and self._recent[0][0] < self._pos - self._character_span:
            self._recent.popleft()
        shape = spec / spec.sum()
        change = (0.5 * float(np.abs(shape - self._last_shape).sum())
                  if self._last_shape is not None and self._recent else math.nan)
        n = shape.size - 1
        edges = 1 + np.arange(_BANDS + 1) * n // _BANDS  # 16 bands above DC
        self._recent.append((self._pos, np.add.reduceat(spec[1:], edges[:-1] - 1), change))
        self._last_shape = shape
        tone = [c for _, _, c in list(self._recent)[-self._tone_frames:] if c == c]
        if len(tone) >= self._tone_frames - 1 and float(np.median(tone)) < TONE_CHANGE:
            return _NOT_VOICE
        k = self._block_frames
        blocks = min(STEADY_BLOCKS, len(self._recent) // k)
        if blocks < 2:
            return 0
        bands = np.stack([b for _, b, _ in list(self._recent)[-blocks * k:]])
        db = 10.0 * np.log10(bands.reshape(blocks, k, _BANDS).mean(axis=1))
        spread = float(np.sqrt(np.mean((db - db.mean(axis=0)) ** 2)))
        if spread >= LIVELY_DB:
            return _VOICE
        return _NOT_VOICE if blocks == STEADY_BLOCKS and spread < STEADY_DB else 0

    def _peak_veto(self, voiced: bool, level_db: float) -> bool:
        """``voiced`` unless the frame is over ``peak_range_db`` below the held speech peak."""
        self._peak_db -= self._peak_decay
        if not voiced or level_db < self._peak_db - self.cfg.peak_range_db:
            return False
        self._peak_db = max(self._peak_db, level_db)
        return True

    # --- state machine ------------------------------------------------------------------------
    def _step(self, frame: Float32Array, voiced: bool, events: list[VadEvent],
              character: int = 0) -> None:
        if self._state == _IDLE:
            if not voiced:
                if self._preroll_frames:
                    self._ring.append((self._pos, frame))
                return
            self._pending = list(self._ring) if self._preroll_frames else []
            self._pending_len = sum(len(f) for _, f in self._pending)
            self._ring.clear()
            self._state = _CANDIDATE
            self._voiced = 0
            self._silence_run = 0
            self._lively = self._not_voice = False
        if self._state == _CANDIDATE:
            self._lively = self._lively or character == _VOICE
            self._not_voice = self._not_voice or character == _NOT_VOICE
        if voiced:
            self._voiced += 1
            self._silence_run = 0
        else:
            self._silence_run += 1
            if self._silence_run > self._hangover_frames:
                self._close(frame, events)
                return
        if self._state == _CANDIDATE:
            self._pending.append((self._pos, frame))
            self._pending_len += len(frame)
            if self._voiced >= self._min_voiced and (self._lively or not self.cfg.steady_veto):
                self._confirm(events)
            elif self._pending_len >= self._max_len:
                self._overdue(events)
        else:
            self._chunk.append(frame)
            self._utt_len += len(frame)
        if self._state == _SPEECH and self._utt_len >= self._max_len:
            log.debug("utterance reached max_utterance_s=%s", self.cfg.max_utterance_s)
            self._end(events)
            self._state = _IDLE

    def _overdue(self, events: list[VadEvent]) -> None:
        """A candidate still undecided after max_utterance_s: never hold more audio than an
        utterance may have. With a steady (vetoed) frame in it, it is dropped as not a voice;
        otherwise it is speech, as before the veto."""
        if self._not_voice:
            log.debug("dropped %.1f s that never sounded like a voice",
                      self._pending_len / self.rate)
            self._pending = []
            self._pending_len = 0
            self._state = _IDLE
            self._ring.clear()
            return
        self._confirm(events)

    def _confirm(self, events: list[VadEvent]) -> None:
        start = self._pending[0][0]
        events.append(SpeechStart(start / self.rate))
        self._chunk = [f for _, f in self._pending]
        self._chunk_start = start
        self._utt_len = sum(len(f) for f in self._chunk)
        self._pending = []
        self._state = _SPEECH

    def _close(self, frame: Float32Array, events: list[VadEvent]) -> None:
        """Hangover expired at ``frame`` (not part of the utterance)."""
        before: list[tuple[int, Float32Array]] = []  # audio that may be the next pre-roll
        if self._state == _CANDIDATE and self._voiced >= self._min_voiced and not self._not_voice:
            self._confirm(events)  # too short to tell by its spectrum: speech, as before the veto
        if self._state == _SPEECH:
            self._end(events)
        else:
            log.debug("dropped %d voiced frames (< min_speech_ms)", self._voiced)
            before = self._pending
        self._pending = []
        self._state = _IDLE
        self._ring.clear()
        if self._preroll_frames:
            self._ring.extend(before)  # the ring keeps the newest preroll frames of them
            self._ring.append((self._pos, frame))

    def _emit_chunk(self, events: list[VadEvent]) -> None:
        if self._state == _SPEECH and self._chunk:
            audio = np.concatenate(self._chunk).astype(np.float32, copy=False)
            events.append(SpeechAudio(audio, self._chunk_start / self.rate))
            self._chunk_start += len(audio)
            self._chunk = []

    def _end(self, events: list[VadEvent]) -> None:
        self._emit_chunk(events)
        events.append(SpeechEnd(self._chunk_start / self.rate))
        self._chunk = []
        self._utt_len = 0
