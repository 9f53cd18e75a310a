"""The daemon: source -> capture queue -> worker -> pipeline -> sink, inside its budgets.

The worker loop runs in the main thread (so signals reach it between blocks): it takes every
queued chunk, feeds the pipeline, publishes each utterance's event and the retained ``state``,
pings the systemd watchdog (each window and each :data:`TICK_S` of duty-cycle rest), polls the
thermal zone and publishes ``stats`` periodically.
SIGTERM/SIGINT/SIGHUP finish the current window, publish ``offline`` and return 0; a hard deadline
(``mqtt.stop_flush_s`` + :data:`STOP_GRACE_S`, :mod:`edge_ser.stopping`) makes sure the
process is gone even if something hangs.
A file or stdin source that ends is flushed and the daemon returns 0.
"""

from __future__ import annotations

import logging
import threading
import time
from datetime import datetime, timezone
from typing import IO, Any

import numpy as np

from edge_ser import SAMPLE_RATE
from edge_ser.aggregate import EmotionResult
from edge_ser.capture import Chunk, DropOldestQueue, QueueClosed, split_at_gaps
from edge_ser.config import Config
from edge_ser.errors import EdgeSerError, OutputClosed, PublishError
from edge_ser.memory import MemoryGuard, limit_malloc_arenas
from edge_ser.model import EmotionModel
from edge_ser.publish.sink import EventSink, make_sink, resolve_device_id, state_from_event
from edge_ser.sdnotify import Notifier
from edge_ser.sources import AudioSource, make_source
from edge_ser.stats import CpuMeter, LatencyWindow, StreamClock, build_stats
from edge_ser.stopping import StopControl
from edge_ser.thermal import DutyCycle, TemperatureSensor, ThermalController, ThermalState

log = logging.getLogger(__name__)

TICK_S = 0.25  # longest the worker waits for audio before its housekeeping (s)
STOP_GRACE_S = 5.0  # after a stop signal: exit within mqtt.stop_flush_s + this, whatever happens


def _utc_now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


class Daemon:
    """One run of the service. Parts default to the real ones built from ``cfg``."""

    def __init__(
        self,
        cfg: Config,
        *,
        model: EmotionModel | None = None,
        source: AudioSource | None = None,
        sink: EventSink | None = None,
        sensor: TemperatureSensor | None = None,
        notifier: Notifier | None = None,
        memory: MemoryGuard | None = None,
        stdin: IO[bytes] | None = None,
    ) -> None:
        cfg.check_daemon()
        self.cfg = cfg
        self._model = model
        self.source = source or make_source(cfg.source, stdin=stdin)
        self._sink = sink
        self.notifier = notifier or Notifier.from_env()
        self.memory = memory or MemoryGuard(cfg.budgets.memory.rss_mb)
        self.thermal = ThermalController(cfg.budgets.thermal, sensor)
        self.thermal.listeners.append(self._on_thermal)
        self.duty = DutyCycle(cfg.budgets.duty_cycle)
        self.queue = DropOldestQueue(cfg.source.queue_s)
        self.latency = LatencyWindow()
        marks = int(cfg.source.queue_s * 1000 / cfg.source.chunk_ms) + 1000
        self.clock = StreamClock(keep=max(4000, marks))  # one mark per queued chunk
        self.events = 0
        self._wake = threading.Event()  # set by a stop request only: cuts a rest short
        self.stopper = StopControl(cfg.mqtt.stop_flush_s + STOP_GRACE_S, self._wake)
        self.stopper.undelivered = self._undelivered_now
        self._source_error: EdgeSerError | None = None
        self._sink_error: PublishError | None = None
        self._stopping = False
        self._windows_after_stop = 0
        self._threads = cfg.model.threads
        self._started = time.monotonic()

    # --- control ---------------------------------------------------------------------------
    @property
    def stop_reason(self) -> str | None:
        return self.stopper.reason

    def request_stop(self, reason: str) -> None:
        """Ask the worker to stop after the current block (safe from any thread)."""
        self.stopper.request(reason)

    def _undelivered_now(self) -> int:
        """Events the sink still holds, read without its locks (for a signal handler)."""
        sink = getattr(self, "sink", None)
        return int(getattr(sink, "buffered_now", 0))

    def _source_done(self, error: EdgeSerError | None) -> None:
        if error is not None:
            self._source_error = error
            log.error("audio source failed: %s", error)
        else:
            log.info("audio source %s ended", self.source.name)
        self.queue.close()  # wakes the worker's get_all; a duty-cycle rest still runs out

    def _push(self, audio: Any) -> None:
        if self.source.live:
            self.queue.put(audio)
        else:
            while not self.queue.put_wait(audio, timeout=0.5):
                if self.stop_reason is not None:
                    raise QueueClosed("stopping")

    # --- budgets ---------------------------------------------------------------------------
    def _gate(self) -> bool:
        """Asked by the pipeline before each window: may it run?"""
        if self._stopping:  # after a stop signal: finish at most the current window
            self._windows_after_stop += 1
            return self._windows_after_stop <= 1
        if not self.thermal.allow_window():
            return False
        return self.memory.ok()

    def _wanted_threads(self, state: ThermalState) -> int:
        threads = self.cfg.model.threads
        return threads if state is ThermalState.NORMAL else max(1, threads // 2)

    def _set_hop(self, state: ThermalState) -> None:
        """Throttled or paused: windows no longer overlap."""
        windower = self.pipeline.windower
        hop = max(1, int(round(self.cfg.windows.hop_s * SAMPLE_RATE)))
        windower.hop = max(hop, windower.length) if state is not ThermalState.NORMAL else hop

    def _on_thermal(self, old: ThermalState, new: ThermalState) -> None:
        pipe = getattr(self, "pipeline", None)
        if pipe is None:  # at start: run() loads the model with the threads for this state
            return
        self._set_hop(new)
        want = self._wanted_threads(new)
        if want != self._threads and self._model is None:  # never replace a caller's model
            try:
                pipe.model = self._load_model(want)
                self._threads = want
            except EdgeSerError as exc:
                log.warning("could not reload the model with %d threads: %s", want, exc)
        self.notifier.status(f"thermal {new.value}")

    def _load_model(self, threads: int) -> EmotionModel:
        from edge_ser.model import OnnxModel  # onnxruntime only when a model is really loaded

        return OnnxModel.from_config(self.cfg.model, threads)

    # --- the run ---------------------------------------------------------------------------
    def run(self, install_signals: bool = True) -> int:
        """Run until stopped or the source ends; 0 on a clean stop, 1 when events were still
        undelivered at the end (broker away). EdgeSerError on failure."""
        from edge_ser.pipeline import EmotionPipeline

        limit_malloc_arenas(2)
        if install_signals:
            self.stopper.install()
        self.thermal.poll(force=True)  # before the model: a hot board starts with fewer threads
        self._threads = self._wanted_threads(self.thermal.state)
        model = self._model or self._load_model(self._threads)
        self.model_name = model.info.name
        self.pipeline = EmotionPipeline(self.cfg, model, gate=self._gate)
        self._set_hop(self.thermal.state)
        self.sink = self._sink or make_sink(
            self.cfg.mqtt, resolve_device_id(self.cfg.mqtt), self.model_name
        )
        self.cpu = CpuMeter()
        self.sink.start(wait_s=self.cfg.mqtt.connect_wait_s if self.cfg.mqtt.host else 0.0,
                        cancel=lambda: self.stop_reason is not None)
        try:
            if self.stop_reason is None:  # stopped while waiting for the broker: no source
                self.source.start(self._push, self._source_done)
                self.notifier.ready(f"listening on {self.source.name}")
                log.info("edge-ser running: %s -> %s, model %s", self.source.name,
                         self.cfg.mqtt.host or "stdout", self.model_name)
                self._loop()
        except OutputClosed:  # `| head`: the reader has what it wanted
            self.request_stop("stdout closed")
            raise
        finally:
            self._shutdown()
        if self._source_error is not None:
            raise self._source_error
        if self._sink_error is not None:  # exit 2: systemd restarts the service
            raise self._sink_error
        if self.sink.undelivered:  # logged by the sink; a script must not read success
            return 1
        return 0

    def _loop(self) -> None:
        interval = self.cfg.mqtt.stats_interval_s
        next_stats = time.monotonic() + interval
        while self.stop_reason is None:
            chunks = self.queue.get_all(timeout=TICK_S)
            for gap, run in split_at_gaps(chunks):
                if gap:  # the queue dropped audio here: the utterance before it ends
                    self.clock.skip(gap)
                    self._emit(self.pipeline.skip(gap))
                self._feed(run)
                if self.stop_reason is not None:
                    break  # what is left was queued before the stop: the flush ends it
            if not chunks and self.queue.drained:
                self._emit(self.pipeline.flush())
                self.stopper.request("end of input")
            self.notifier.watchdog()
            self._check_sink()
            self.thermal.poll()
            if time.monotonic() >= next_stats:
                next_stats = time.monotonic() + interval
                self.sink.publish_stats(self.stats())

    def _check_sink(self) -> None:
        """A sink that can never deliver again (paho's network thread died) stops the run:
        buffering for a broker it will never reach would look like a healthy daemon."""
        failure = self.sink.failure
        if failure is not None and self._sink_error is None:
            self._sink_error = PublishError(failure)
            self.request_stop("mqtt client failed")

    def _feed(self, run: list[Chunk]) -> None:
        for c in run:
            self.clock.advance(c.audio.size, c.arrived)
        audio = np.concatenate([c.audio for c in run])
        step = self.pipeline.windower.length  # a backlog: one window's audio at a time
        for at in range(0, audio.size, step):
            self._process(audio[at:at + step])
            if self.stop_reason is not None:
                return

    def _process(self, audio: np.ndarray) -> None:
        """Feed one piece, publish what it completes, rest for the duty cycle, ping."""
        t0 = time.perf_counter()
        results = self.pipeline.process(audio)
        rest = self.duty.rest_after(time.perf_counter() - t0)
        self._emit(results)
        self.notifier.watchdog()
        until = time.monotonic() + rest
        while rest > 0 and self.stop_reason is None:  # in ticks: the watchdog keeps its pings
            self._wake.wait(min(TICK_S, rest))
            self.notifier.watchdog()
            rest = until - time.monotonic()

    def _emit(self, results: list[EmotionResult]) -> None:
        for r in results:
            if r.emotion is None:  # voice-note mode with no speech, or every window shed
                log.info("%.2f-%.2f s: no event (%s)", r.start_s, r.end_s, r.reason)
                continue
            event = r.to_dict()
            event["model"] = self.model_name
            event["time"] = _utc_now()
            latency = self.clock.latency_s(r.end_s)
            if latency is not None:
                self.latency.add(latency)
            self.events += 1
            log.info("utterance %.2f-%.2f s: %s (%.2f)", r.start_s, r.end_s, r.emotion,
                     r.confidence)
            self.sink.publish_event(event)
            self.sink.publish_state(state_from_event(event))

    def _shutdown(self) -> None:
        reason = self.stop_reason or "error"
        self.notifier.stopping()
        self.source.stop()
        self.queue.close()
        if reason in ("SIGTERM", "SIGINT", "SIGHUP"):
            self._stopping = True
            try:
                self._emit(self.pipeline.flush())  # the open utterance, at most one window
            except EdgeSerError as exc:
                log.warning("could not flush the last utterance: %s", exc)
        try:
            self.sink.publish_stats(self.stats())
        except EdgeSerError as exc:
            log.warning("could not publish the last stats: %s", exc)
        self.sink.stop()
        self.notifier.close()
        log.info("edge-ser stopped (%s): %d events, %d windows run, %d skipped", reason,
                 self.events, self.pipeline.windows_run, self.pipeline.windows_skipped)

    def stats(self) -> dict[str, Any]:
        p = self.pipeline
        return build_stats(
            [
                self.source.stats(), self.queue.stats(), self.memory.stats(),
                self.thermal.stats(), self.latency.stats(),
            ],
            time=_utc_now(),
            uptime_s=round(time.monotonic() - self._started, 1),
            events=self.events,
            events_dropped=self.sink.dropped,
            mqtt_connected=self.sink.connected if self.cfg.mqtt.host else None,  # null: stdout
            windows_run=p.windows_run,
            windows_dropped=p.windows_skipped,
            inference_s=round(p.timings["model"].total_s, 3),
            duty_rest_s=round(self.duty.rested_s, 3),
            cpu_percent=self.cpu.percent(),
            stream_s=round(self.clock.position_s, 2),
        )
