"""The paho client: how it is built from the config, and why a connection failed.

paho retries every failure quietly; the helpers here turn what it saw into the one line the
sink logs (naming the broker and the cause) and tell permanent refusals (credentials, TLS
set-up), which fail the daemon's start, from network trouble, which is retried with backoff.
"""

from __future__ import annotations

import math
import re
import ssl
import time
from collections.abc import Callable

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode
from paho.mqtt.reasoncodes import ReasonCode

from edge_ser.config import MqttConfig
from edge_ser.publish.credentials import apply_credentials

#: CONNACK reasons that retrying will not fix (v5 codes; paho maps MQTT 3.1.1 codes onto them):
#: unsupported protocol, client id not valid, bad user name or password, not authorised, banned,
#: bad authentication method.
FATAL_REASONS = frozenset({132, 133, 134, 135, 138, 140})
_SOCKET_ERROR = "failed to receive on socket: "
#: paho's log line when its loop finds no socket: its state, not a cause (it comes after the
#: disconnect it would be taken to explain)
NOT_CONNECTED = "Client is not connected"


class RecordingClient(paho.Client):
    """paho's client, remembering why the last connection attempt raised (paho does not say),
    and telling ``on_loop_end`` when its network thread's loop ends, with the exception that
    ended it (paho lets any other than OSError end the thread: nothing is sent after that)."""

    last_error: OSError | None = None
    on_loop_end: Callable[[BaseException | None], None] | None = None

    def loop_forever(self, timeout: float = 1.0,
                     retry_first_connection: bool = False) -> MQTTErrorCode:
        try:
            rc = super().loop_forever(timeout, retry_first_connection)
        except Exception as exc:  # noqa: BLE001 - whatever it is, the thread is over
            if self.on_loop_end is None:
                raise
            self.on_loop_end(exc)  # instead of threading's traceback on stderr
            return MQTTErrorCode.MQTT_ERR_UNKNOWN
        if self.on_loop_end is not None:
            self.on_loop_end(None)
        return rc

    def reconnect(self) -> MQTTErrorCode:
        try:
            rc = super().reconnect()
        except OSError as exc:
            self.last_error = exc
            raise
        self.last_error = None
        return rc


def new_client(cfg: MqttConfig, client_id: str, will_topic: str) -> RecordingClient:
    """An MQTT 3.1.1 clean-session client with backoff, credentials, TLS and the last will
    (``offline``, retained, on ``will_topic``); callbacks are the caller's to set."""
    client = RecordingClient(CallbackAPIVersion.VERSION2, client_id=client_id,
                             clean_session=True, protocol=paho.MQTTv311)
    client.reconnect_delay_set(cfg.reconnect_min_s, cfg.reconnect_max_s)
    client.max_inflight_messages_set(0)  # the sink's outbox bounds what it hands over
    apply_credentials(client, cfg)
    client.will_set(will_topic, "offline", qos=1, retain=True)
    return client


def refused(broker: str, reason: ReasonCode) -> tuple[str, bool]:
    """A CONNACK with a failure reason."""
    return f"mqtt broker {broker} refused the connection: {reason}", reason.value in FATAL_REASONS


def connect_failed(broker: str, exc: OSError | None, tls: bool = False) -> tuple[str, bool]:
    """The TCP connect or the TLS handshake (``tls``: mqtt.tls is set) raised ``exc``."""
    if isinstance(exc, ssl.SSLCertVerificationError):
        return (f"mqtt broker {broker}: TLS certificate check failed ({exc.verify_message}); "
                "check mqtt.tls.ca", True)
    if isinstance(exc, ssl.SSLError):
        return f"mqtt broker {broker}: TLS handshake failed ({exc.reason or exc})", True
    why = (exc.strerror or str(exc)) if exc is not None else "connection failed"
    if tls and isinstance(exc, (ConnectionResetError, ConnectionAbortedError)):
        # a plain-MQTT port answers a TLS ClientHello by closing: the reverse of the hint in
        # dropped_before_connack
        why += (" during the TLS handshake: mqtt.tls is set, does that port speak TLS "
                "(usually 8883; 1883 is plain MQTT)?")
    return f"mqtt broker {broker} unreachable: {why}; retrying with backoff", False


def dropped_before_connack(broker: str, client_error: str | None, reason: ReasonCode,
                           keepalive_s: int) -> tuple[str, bool]:
    """The broker closed a fresh connection before its CONNACK: a TLS session it refused (e.g.
    it wants a client cert), or plain MQTT sent to a TLS port, or no MQTT broker there; or
    paho gave up waiting for the CONNACK (a port that accepts TCP and never answers)."""
    if _keepalive_timeout(reason):
        return no_connack(broker, keepalive_s)
    detail = (client_error or "").removeprefix(_SOCKET_ERROR)
    if "SSL" in detail:
        return (f"mqtt broker {broker}: TLS session refused by the broker ({detail}); check "
                "mqtt.tls.certfile and mqtt.tls.keyfile", True)
    why = f" ({detail})" if detail else ""
    return (f"mqtt broker {broker} closed the connection before accepting it{why}: is it an "
            "MQTT broker, and does that port want TLS (mqtt.tls)? retrying with backoff", False)


def thread_died(broker: str, exc: BaseException | None) -> str:
    """paho's network thread ended by itself: nothing more can be sent."""
    why = f"{type(exc).__name__}: {exc}" if exc is not None else "its loop returned"
    return (f"mqtt client for {broker}: its network thread stopped ({' '.join(why.split())}); "
            "nothing more can be delivered")


def _keepalive_timeout(reason: ReasonCode) -> bool:
    return str(reason) == "Keep alive timeout"


def no_connack(broker: str, keepalive_s: int) -> tuple[str, bool]:
    """paho gave up on a connection whose CONNACK never came (after ``keepalive_s``)."""
    return (f"mqtt broker {broker} accepted the TCP connection but never answered MQTT's "
            f"CONNECT (waited mqtt.keepalive_s, {keepalive_s} s): is it an MQTT broker, is it "
            "stuck, does that port want TLS (mqtt.tls)? retrying with backoff", False)


def lost_because(reason: ReasonCode, client_error: str | None, keepalive_s: int) -> str:
    """Why an accepted connection ended, in words: paho says only 'Unspecified error' for a
    socket that closed or failed, and logs the socket's error separately."""
    if _keepalive_timeout(reason):
        return f"the broker stopped answering: nothing within mqtt.keepalive_s, {keepalive_s} s"
    detail = (client_error or "").removeprefix(_SOCKET_ERROR)
    if detail:
        return re.sub(r"^\[Errno \d+\] ", "", detail)
    if str(reason) == "Unspecified error":  # recv() read the end of the stream
        return "the broker closed it"
    return str(reason)


#: a session the broker ends sooner than this after accepting it (s) may have been taken over
SHORT_SESSION_S = 10.0
#: that many short sessions in a row: another client uses our client id
TAKEOVERS_IN_A_ROW = 3
#: then wait this long (s) before reconnecting, doubling per further takeover up to the max
TWIN_BACKOFF_S = 30
TWIN_BACKOFF_MAX_S = 600


class TakeoverWatch:
    """Counts sessions that the broker ended by closing the socket soon after accepting them.

    That is all MQTT 3.1.1 shows a client whose id another client has just used: the broker
    closes the older connection without a word. Two boards with the same id then take the
    session from each other at every reconnect, forever, unless they back off.
    """

    def __init__(self, clock: Callable[[], float] = time.monotonic,
                 reconnect_s: float = 1.0) -> None:
        self._clock = clock
        # twins each wait their reconnect delay before taking the session back, so a taken
        # session lives about that long: "short" must allow for it
        self.short_s = max(SHORT_SESSION_S, 3.0 * reconnect_s)
        self._since: float | None = None
        self.in_a_row = 0
        self.total = 0  # short sessions closed by the broker since start (count)
        self.backoff_s = 0  # the reconnect delay it asks for (s); 0: the configured one

    def connected(self) -> None:
        self._since = self._clock()

    def ended(self, closed_by_broker: bool) -> int:
        """A session ended; returns the reconnect delay to use (s, 0 = the configured one)."""
        lived = self._clock() - self._since if self._since is not None else math.inf
        self._since = None
        if closed_by_broker and lived < self.short_s:
            self.in_a_row += 1
            self.total += 1
        else:
            self.in_a_row = 0
        extra = self.in_a_row - TAKEOVERS_IN_A_ROW
        self.backoff_s = min(TWIN_BACKOFF_MAX_S, TWIN_BACKOFF_S * 2 ** extra) if extra >= 0 else 0
        return self.backoff_s

    def unreachable(self) -> None:
        """A connection attempt failed: the broker is away, not taken."""
        self.in_a_row = 0
        self.backoff_s = 0


def taken_over(broker: str, client_id: str, key: str, count: int, backoff_s: int) -> str:
    return (f"mqtt broker {broker} closed our session {count} times within seconds of "
            f"accepting it: another client is probably connected with the same client id "
            f"'{client_id}' (a second board with the same {key}?): give each board its own "
            f"{key}; reconnecting every {backoff_s} s meanwhile instead of taking the session "
            "back at once")


def power_of_ten(n: int) -> bool:
    """1, 10, 100, ...: when to repeat a warning about a growing count."""
    while n >= 10 and n % 10 == 0:
        n //= 10
    return n == 1
