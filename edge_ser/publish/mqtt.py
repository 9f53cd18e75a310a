"""``MqttSink``: events to an MQTT broker with paho-mqtt 2.x (async connect, loop thread).

Topics (``Topics``): ``<prefix>/<device_id>/availability`` (retained ``online``/``offline``, the
last will), ``/emotion`` (events, QoS ``mqtt.qos``), ``/state`` (retained mood), ``/stats``.
Events go through the bounded :class:`~edge_ser.publish.outbox.Outbox`; a small publisher thread
(:mod:`edge_ser.publish.pump`) hands them to paho in order while the broker is there. After a
(re)connect it waits for the broker's PUBACK of ``online``: by then paho has re-sent what was in
flight when the connection dropped, so buffered events follow them and the order is kept.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any

import paho.mqtt.client as paho
from paho.mqtt.reasoncodes import ReasonCode

from edge_ser.config import MqttConfig
from edge_ser.errors import PublishError
from edge_ser.publish.client import (
    NOT_CONNECTED,
    RecordingClient,
    TakeoverWatch,
    connect_failed,
    dropped_before_connack,
    lost_because,
    new_client,
    power_of_ten,
    refused,
    taken_over,
    thread_died,
)
from edge_ser.publish.discovery import Announcer, discovery_messages
from edge_ser.publish.outbox import Outbox
from edge_ser.publish.pump import Pump
from edge_ser.publish.sink import Topics, to_json

log = logging.getLogger(__name__)
_paho_log = logging.getLogger("edge_ser.publish.paho")

INFLIGHT_MAX = 20  # events handed to paho and not yet acknowledged
CANCEL_POLL_S = 0.25  # a wait for the broker asks its cancel() this often (s)
LOOP_STOP_S = 1.0  # stop() waits this long (s) for paho's network thread to end


class MqttSink:
    """The :class:`~edge_ser.publish.sink.EventSink` for an MQTT broker."""

    def __init__(self, cfg: MqttConfig, device_id: str, model_name: str = "") -> None:
        if cfg.host is None:
            raise PublishError("mqtt.host: no broker configured")
        self._cfg = cfg
        self.device_id = device_id
        self.model_name = model_name
        self.topics = Topics.of(cfg, device_id)
        self.broker = f"{cfg.host}:{cfg.port}"
        self._outbox = Outbox(cfg.buffer_events)
        self.undelivered = 0  # events still in the outbox when stop() gave up
        self._announcer = Announcer(
            discovery_messages(self.topics, cfg.discovery_prefix, device_id, model_name,
                               mood_expire_s=cfg.mood_expire_s),
            self.topics.ha_status,
        ) if cfg.discovery else None
        self._cond = threading.Condition()
        self._connected = False
        self._online_mid: int | None = None
        self._fatal: str | None = None
        self.failure: str | None = None  # set when paho's network thread is gone for good
        self._last_problem: str | None = None
        self._client_error: str | None = None  # paho's last error log line
        self._connack = False  # the broker answered this connection attempt
        self.takeovers = TakeoverWatch(reconnect_s=cfg.reconnect_min_s)
        self._started = self._closing = self._closed = False
        self._client = self._make_client()
        self._pump = Pump(self._client, self._outbox, self.topics.state,
                          min(INFLIGHT_MAX, cfg.buffer_events), self._cond)

    # --- set-up ------------------------------------------------------------------------------

    def _make_client(self) -> RecordingClient:
        self.client_id = self._cfg.client_id or f"edge-ser-{self.device_id}"
        client = new_client(self._cfg, self.client_id, self.topics.availability)
        client.on_log = self._on_log
        client.on_loop_end = self._on_loop_end
        client.on_connect = self._on_connect
        client.on_connect_fail = self._on_connect_fail
        client.on_disconnect = self._on_disconnect
        client.on_publish = self._on_publish
        if self._announcer is not None:
            self._announcer.attach(client)
        return client

    # --- EventSink ---------------------------------------------------------------------------

    def start(self, wait_s: float = 0.0, cancel: Callable[[], bool] | None = None) -> None:
        if self._started:
            return
        self._started = True
        try:
            self._client.connect_async(self._cfg.host or "", self._cfg.port, self._cfg.keepalive_s)
        except (OSError, ValueError) as exc:
            raise PublishError(f"mqtt broker {self.broker}: {exc}") from exc
        log.info("mqtt: connecting to %s as %s", self.broker, self.device_id)
        self._client.loop_start()
        self._pump.start()
        if wait_s > 0:
            try:
                ok = self.wait_connected(wait_s, cancel)
            except PublishError:
                self.stop()
                raise
            if not ok and not (cancel is not None and cancel()):
                log.warning("mqtt broker %s not reachable after %.1f s; events are buffered "
                            "and sent once it is", self.broker, wait_s)

    def wait_connected(self, timeout: float, cancel: Callable[[], bool] | None = None) -> bool:
        deadline = time.monotonic() + timeout
        with self._cond:
            while not self._connected and self._fatal is None:
                left = deadline - time.monotonic()
                if left <= 0 or (cancel is not None and cancel()):
                    return False
                self._cond.wait(min(left, CANCEL_POLL_S))
            if not self._connected and self._fatal is not None:
                raise PublishError(self._fatal)
            return True

    def publish_event(self, event: dict[str, Any]) -> None:
        payload = dict(event)
        if self.model_name:
            payload.setdefault("model", self.model_name)
        data = to_json(payload).encode("utf-8")
        if self._closed:
            log.warning("mqtt: sink stopped, event not sent")
            return
        victim = self._outbox.put(self.topics.emotion, data, self._cfg.qos)
        if victim is not None and power_of_ten(self._outbox.dropped):
            log.warning("mqtt: event buffer full (%d) while %s is away: dropping the oldest "
                        "(%d dropped so far)", self._outbox.capacity, self.broker,
                        self._outbox.dropped)
        with self._cond:
            self._cond.notify_all()

    def publish_state(self, state: dict[str, Any]) -> None:
        self._pump.put_state(to_json(state).encode("utf-8"))

    def publish_stats(self, stats: dict[str, Any]) -> None:
        payload = {**stats}
        payload.setdefault("events_dropped", self._outbox.dropped)
        payload.setdefault("events_buffered", len(self._outbox))
        if not self._pump.ready:
            log.debug("mqtt: not connected, stats skipped")
            return
        self._client.publish(self.topics.stats, to_json(payload), qos=0, retain=False)

    def stop(self) -> None:
        with self._cond:
            if self._closing:
                return
            self._closing = True
            deadline = time.monotonic() + self._cfg.stop_flush_s
            if self._started and self._fatal is None and len(self._outbox) > 0:
                log.info("mqtt: waiting up to %g s (mqtt.stop_flush_s) for %d buffered events",
                         self._cfg.stop_flush_s, len(self._outbox))
            while self._started and self._fatal is None and len(self._outbox) > 0:  # maybe soon
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                self._cond.wait(min(left, 0.1))
        if self._started:
            if self._connected:
                info = self._client.publish(self.topics.availability, "offline", qos=1,
                                            retain=True)
                try:
                    info.wait_for_publish(timeout=min(2.0, self._cfg.stop_flush_s + 0.5))
                except (RuntimeError, ValueError):
                    log.debug("mqtt: offline not acknowledged")
            self._client.disconnect()
            # paho's thread may sit in a TCP connect for its 5-s timeout (a broker that drops
            # packets): wait for it briefly, then leave it to end by itself (a daemon thread)
            stopper = threading.Thread(target=self._client.loop_stop, daemon=True)
            stopper.start()
            stopper.join(LOOP_STOP_S)
        self._closed = True
        self._pump.close()
        lost = self.undelivered = len(self._outbox)
        if lost:
            log.warning("mqtt: %d events were not delivered to %s", lost, self.broker)
        log.info("mqtt: stopped (%s)", self.broker)

    @property
    def dropped(self) -> int:
        return self._outbox.dropped

    @property
    def connected(self) -> bool:
        return self._connected

    @property
    def buffered(self) -> int:
        """Events waiting for the broker or for its acknowledgement (count)."""
        return len(self._outbox)

    @property
    def buffered_now(self) -> int:
        """:attr:`buffered` without locks: for a signal handler."""
        return self._outbox.size_now()

    # --- paho callbacks (loop thread) --------------------------------------------------------

    def _on_connect(self, client: paho.Client, userdata: Any, flags: Any,
                    reason: ReasonCode, properties: Any) -> None:
        self._client_error = None
        self._connack = True  # answered, even if with a refusal
        if reason.is_failure:
            self._problem(*refused(self.broker, reason))
            return
        lost = self._outbox.forget_qos0()  # unsent QoS 0 events died with the old connection
        if lost:
            log.warning("mqtt: %d QoS 0 events were lost with the connection", lost)
        info = client.publish(self.topics.availability, "online", qos=1, retain=True)
        with self._cond:
            self._connected = True
            self._pump.set_ready(False)
            self._online_mid = info.mid
            self._fatal = self._last_problem = None
            self._cond.notify_all()
        self.takeovers.connected()
        log.log(logging.DEBUG if self.takeovers.backoff_s else logging.INFO,
                "mqtt: connected to %s (%d events buffered)", self.broker, len(self._outbox))
        if self._announcer is not None:
            self._announcer.on_connect(client)

    def _on_connect_fail(self, client: paho.Client, userdata: Any) -> None:
        backed_off = self.takeovers.backoff_s
        self.takeovers.unreachable()  # the broker is away: not a session taken
        if backed_off:
            self._reconnect_after(0)
        self._problem(*connect_failed(self.broker, self._client.last_error,
                                      tls=self._cfg.tls is not None))

    def _on_disconnect(self, client: paho.Client, userdata: Any, flags: Any,
                       reason: ReasonCode, properties: Any) -> None:
        with self._cond:
            was = self._connected
            self._connected = False
            self._pump.set_ready(False)
            self._online_mid = None
            self._cond.notify_all()
        error, self._client_error = self._client_error, None
        answered, self._connack = self._connack, False
        keepalive = self._cfg.keepalive_s
        if not was and not answered and not self._closing:
            self._problem(*dropped_before_connack(self.broker, error, reason, keepalive))
        elif was and not self._closing:
            why = lost_because(reason, error, keepalive)
            # a takeover reads as EOF, a reset or a broken pipe, depending on timing
            self._session_ended(closed_by_broker=str(reason) != "Keep alive timeout")
            log.log(logging.DEBUG if self.takeovers.backoff_s else logging.WARNING,
                    "mqtt: lost the connection to %s (%s); reconnecting, events are buffered",
                    self.broker, why)

    def _session_ended(self, closed_by_broker: bool) -> None:
        """Back off from a session another client keeps taking (see TakeoverWatch)."""
        watch = self.takeovers
        before = watch.backoff_s
        backoff = watch.ended(closed_by_broker)
        if backoff != before:
            self._reconnect_after(backoff)
        if backoff and (not before or power_of_ten(watch.total)):
            key = "mqtt.client_id" if self._cfg.client_id else "mqtt.device_id"
            log.warning("%s", taken_over(self.broker, self.client_id, key, watch.total, backoff))

    def _reconnect_after(self, backoff_s: int) -> None:
        """paho's next reconnect waits ``backoff_s`` (0: back to mqtt.reconnect_min_s/max_s)."""
        low = backoff_s or self._cfg.reconnect_min_s
        self._client.reconnect_delay_set(low, max(low, self._cfg.reconnect_max_s))

    def _on_publish(self, client: paho.Client, userdata: Any, mid: int,
                    reason: ReasonCode, properties: Any) -> None:
        self._outbox.acked(mid)
        with self._cond:
            if mid == self._online_mid:
                self._pump.set_ready(True)
                self._online_mid = None
            self._cond.notify_all()

    def _on_loop_end(self, exc: BaseException | None) -> None:
        """paho's network thread is ending. After stop() that is the plan; otherwise it died (an
        exception paho does not catch) and must not pass for a broker that is away."""
        if exc is None and self._closing:
            return
        message = thread_died(self.broker, exc)
        with self._cond:
            self.failure = self._fatal = message
            self._connected = False
            self._pump.set_ready(False)
            self._cond.notify_all()
        # said once, by whoever reads it: wait_connected() raises it, the daemon exits with it
        log.debug("mqtt: network thread ended", exc_info=exc)

    def _on_log(self, client: paho.Client, userdata: Any, level: int, text: str) -> None:
        if level == paho.MQTT_LOG_ERR and text.startswith("Caught exception"):
            log.error("mqtt client: %s", text)
        elif level == paho.MQTT_LOG_ERR and not text.startswith(NOT_CONNECTED):
            self._client_error = text  # explained by the disconnect callback
        _paho_log.debug("%s", text)

    def _problem(self, message: str, fatal: bool) -> None:
        with self._cond:
            repeated = message == self._last_problem
            self._last_problem = message
            if fatal:
                self._fatal = message
            self._cond.notify_all()
        if repeated:
            log.debug("%s", message)
        else:
            log.log(logging.ERROR if fatal else logging.WARNING, "%s", message)

