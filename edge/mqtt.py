"""--mqtt: results to an MQTT broker, with Home Assistant discovery (paho-mqtt 2.x, the `mqtt` extra).

Topics, under the base topic (--mqtt_topic, default edge-classify/<device id>, the device id being
the host name):
- availability: `online` (retained) while connected; `offline` as the last will, which the broker
  publishes when the process dies or the network goes; `stopped` at a clean exit.
- state (retained): the debounced label with its scores, on each change and every --heartbeat.
- event: each debounced change, with the previous label.
- snapshot (retained, with --mqtt_snapshot): a JPEG of the region classified (--crop) at each change.
Payloads are `--json`'s fields plus `schema`, `model` and `score` (see docs/home-assistant.md).

Three threads share the work, so that the classify loop never waits on the network: the loop's
`add()` only records what changed (O(1); a frame copy at a change with snapshots); our publisher
thread turns that into messages; paho's network thread (`loop_start`) sends them and reconnects,
backing off. While the broker is away the latest state and snapshot are kept and sent on reconnect,
with the discovery configs, and events wait in a bounded queue that drops the oldest (counted).
"""

from __future__ import annotations

import io
import json
import logging
import os
import re
import socket
import threading
import time
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

import numpy as np
from PIL import Image

from . import UserError
from .health import Health
from .results import UNKNOWN_LABEL, Result, region_of

if TYPE_CHECKING:  # only an annotation needs the classify loop; importing it would tie MQTT to it
    from .classify import Summary

logger = logging.getLogger(__name__)

SCHEMA_VERSION = 1  # the `schema` field of every JSON payload; raised when a field changes meaning
DEFAULT_DISCOVERY_PREFIX = "homeassistant"  # Home Assistant's default
DEFAULT_DEBOUNCE = 3  # identical results in a row before the state changes, as Frigate's state classification
DEFAULT_HEARTBEAT_S = 60.0
PASSWORD_ENV = "EDGE_CLASSIFY_MQTT_PASSWORD"  # the password, unless --mqtt_password_file names a file
PORTS = {"mqtt": 1883, "mqtts": 8883}
EVENT_QUEUE_MAX = 100  # events kept while the broker is away; older ones are dropped and counted
PAHO_QUEUE_MAX = 1000  # messages paho holds unacknowledged: bounds memory when a broker stops answering
SNAPSHOT_MAX_BYTES = 64 * 1024  # a retained message every client receives at subscription: kept small
SNAPSHOT_QUALITIES = (85, 70, 50)  # JPEG qualities tried in turn, then the frame is halved and retried
QOS = 1  # at least once: a state or event is not lost between the client and the broker
KEEPALIVE_S = 30  # the broker publishes `offline` within 1.5x this of the device going silent
CONNECT_TIMEOUT_S = 10.0  # for the broker's answer at start
RECONNECT_DELAY_S = (1, 30)  # paho's back-off: first wait, doubling up to the second
CLOSE_TIMEOUT_S = 5.0  # at exit, for the last messages to reach the broker
HA_STATUS_TOPIC = "status"  # under the discovery prefix: Home Assistant's birth message (`online`)


@dataclass
class MqttOptions:
    """--mqtt and its companions; each field is one flag."""

    url: str  # mqtt[s]://[user@]host[:port]
    topic: str | None = None  # base topic; None: edge-classify/<host name>
    password_file: Path | None = None  # None: the PASSWORD_ENV variable, if set
    ca_file: Path | None = None  # with mqtts://; None: the system's certificate authorities
    cert_file: Path | None = None  # client certificate (PEM), for brokers that ask for one
    key_file: Path | None = None  # its private key, when not in cert_file
    debounce: int = DEFAULT_DEBOUNCE
    heartbeat: float = DEFAULT_HEARTBEAT_S  # seconds between republished states
    snapshot: bool = False
    discovery: bool = True
    discovery_prefix: str = DEFAULT_DISCOVERY_PREFIX


@dataclass(frozen=True)
class Broker:
    """Where --mqtt points."""

    host: str
    port: int
    tls: bool
    username: str | None

    def __str__(self) -> str:
        return f"{self.host}:{self.port}"


def parse_url(url: str) -> Broker:
    """mqtt[s]://[user@]host[:port] -> Broker; anything else is a UserError."""
    usage = f"--mqtt takes mqtt[s]://[user@]host[:port], not {url!r}"
    parts = urlsplit(url)
    try:
        port = parts.port
    except ValueError:
        raise UserError(usage) from None
    if parts.scheme not in PORTS or not parts.hostname or parts.path not in ("", "/") or parts.query or parts.fragment:
        raise UserError(usage)
    if parts.password is not None:
        raise UserError(f"--mqtt must not carry a password (argv is visible to every user): put it in ${PASSWORD_ENV} "
                        "or a file named by --mqtt_password_file")
    return Broker(parts.hostname, port or PORTS[parts.scheme], parts.scheme == "mqtts", parts.username or None)


def device_id() -> str:
    """This device's id in the default topic: its host name, in the characters a topic and Home Assistant accept."""
    return re.sub(r"[^a-z0-9_-]", "_", socket.gethostname().split(".")[0].lower()) or "device"


def check_options(options: MqttOptions) -> Broker:
    """The broker, once the options hold together and paho is installed (before the model is loaded)."""
    broker = parse_url(options.url)
    try:
        import paho.mqtt.client  # noqa: F401
    except ImportError:
        raise UserError("--mqtt needs paho-mqtt: pip install 'retrain-edge[mqtt]'") from None
    if options.debounce < 1:
        raise UserError("--debounce must be at least 1")
    if options.heartbeat <= 0:
        raise UserError("--heartbeat must be more than 0 seconds")
    if (options.ca_file or options.cert_file or options.key_file) and not broker.tls:
        raise UserError("--mqtt_ca, --mqtt_cert and --mqtt_key are for TLS: use an mqtts:// URL")
    if options.key_file and not options.cert_file:
        raise UserError("--mqtt_key goes with --mqtt_cert")
    for path in (options.password_file, options.ca_file, options.cert_file, options.key_file):
        if path is not None and not path.is_file():
            raise UserError(f"{path} is not a file")
    if options.topic is not None and (not options.topic.strip("/") or any(c in options.topic for c in "+#")):
        raise UserError(f"--mqtt_topic must be a topic name without wildcards, not {options.topic!r}")
    return broker


def _password(options: MqttOptions) -> str | None:
    if options.password_file is not None:
        try:
            return options.password_file.read_text(encoding="utf-8").rstrip("\r\n")
        except OSError as error:
            raise UserError(f"cannot read --mqtt_password_file {options.password_file}: {error.strerror}") from None
        except UnicodeDecodeError:
            raise UserError(f"--mqtt_password_file {options.password_file} is not UTF-8 text") from None
    return os.environ.get(PASSWORD_ENV)


def snapshot_jpeg(frame: np.ndarray, max_bytes: int = SNAPSHOT_MAX_BYTES) -> bytes:
    """BGR uint8 (H, W, 3) -> JPEG of at most max_bytes: lower qualities first, then half the size."""
    image = Image.fromarray(np.ascontiguousarray(frame[..., ::-1]))
    while True:
        for quality in SNAPSHOT_QUALITIES:
            buffer = io.BytesIO()
            image.save(buffer, "JPEG", quality=quality)
            if buffer.tell() <= max_bytes or min(image.size) <= 16:
                return buffer.getvalue()
        image = image.reduce(2)


class MqttPublisher:
    """A frame consumer publishing debounced states, events and snapshots to a broker.

    Connects at construction: a broker that cannot be reached or refuses the login is a UserError.
    `connected` and `status()` tell the live view how the link is; `close()` says `stopped`.
    """

    def __init__(self, options: MqttOptions, labels: list[str], model_name: str, summary: Summary,
                 health: Health | None = None):
        """labels: the model's; summary: the run's, whose broker_outages and events_dropped close() fills in;
        health: the live view's, whose `mqtt` says whether the broker is connected."""
        import paho.mqtt.client as mqtt

        self.broker = check_options(options)
        self.options = options
        self.topic = (options.topic or f"edge-classify/{device_id()}").strip("/")
        self.node_id = re.sub(r"[^a-zA-Z0-9_-]", "_", self.topic)
        self.labels = list(dict.fromkeys([*labels, UNKNOWN_LABEL]))
        self.model_name, self.summary, self.health = model_name, summary, health
        self.events_dropped = 0
        self.outages = 0  # times the broker went away after the start
        # Shared between the classify loop, the publisher thread and paho's thread, under `changed`.
        self.changed = threading.Condition()
        self.state = None  # the latest result with the debounced label
        self.state_due = False
        self.events: deque = deque(maxlen=EVENT_QUEUE_MAX)  # (result, previous label), oldest first
        self.snapshot_frame: np.ndarray | None = None
        self.snapshot_due = False
        self.announce_due = False  # availability, discovery, state and snapshot: after each (re)connection
        self.discovery_due = False  # Home Assistant came online
        self.closing = False
        self._connected = False
        self.lost_at: float | None = None
        # The classify loop's own: the debounce.
        self.candidate, self.run_length, self.state_label = None, 0, None

        self.connack = threading.Event()
        self.failure: str | None = None  # why the first connection failed, once the broker answered or hung up
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"edge-classify-{self.node_id}",
                                  protocol=mqtt.MQTTv311)
        if self.broker.username:
            self.client.username_pw_set(self.broker.username, _password(options))
        if self.broker.tls:
            try:
                self.client.tls_set(ca_certs=options.ca_file and str(options.ca_file),
                                    certfile=options.cert_file and str(options.cert_file),
                                    keyfile=options.key_file and str(options.key_file))
            except OSError as error:  # ssl.SSLError too: not PEM, or a key that is not the certificate's
                raise UserError(f"cannot use --mqtt_ca/--mqtt_cert/--mqtt_key: {error.strerror or error}") from None
        self.client.will_set(self.topic_of("availability"), "offline", qos=QOS, retain=True)
        self.client.reconnect_delay_set(*RECONNECT_DELAY_S)
        self.client.max_queued_messages_set(PAHO_QUEUE_MAX)
        self.queue_full = mqtt.MQTT_ERR_QUEUE_SIZE
        self.client.on_connect, self.client.on_disconnect = self._on_connect, self._on_disconnect
        self.client.on_message = self._on_message
        self._connect()
        self.thread = threading.Thread(target=self._publish_loop, name="mqtt-publisher", daemon=True)
        self.thread.start()

    def topic_of(self, name: str) -> str:
        return f"{self.topic}/{name}"

    @property
    def connected(self) -> bool:
        return self._connected

    def _connect(self) -> None:
        try:
            self.client.connect(self.broker.host, self.broker.port, KEEPALIVE_S)
        except OSError as error:  # DNS, refused, unreachable, TLS
            raise UserError(f"cannot connect to the MQTT broker {self.broker}: {error.strerror or error}") from None
        self.client.loop_start()
        if not self.connack.wait(CONNECT_TIMEOUT_S) or self.failure:
            self.client.loop_stop()
            self.client.disconnect()
            raise UserError(self.failure
                            or f"no answer from the MQTT broker {self.broker} within {CONNECT_TIMEOUT_S:.0f} s")

    # paho's network thread

    def _on_connect(self, client, userdata, flags, reason_code, properties) -> None:
        if reason_code.is_failure:
            if not self.connack.is_set():
                self.failure = f"the MQTT broker {self.broker} refused the connection: {reason_code}"
                self.connack.set()
            else:
                logger.warning(f"the MQTT broker {self.broker} refused the reconnection: {reason_code}")
            return
        if self.options.discovery:
            client.subscribe(f"{self.options.discovery_prefix}/{HA_STATUS_TOPIC}", qos=QOS)
        with self.changed:
            self._connected = True
            self.announce_due = True
            self.changed.notify()
        self._tell_health()
        if self.lost_at is not None:
            logger.warning(f"MQTT broker {self.broker} is back after {time.monotonic() - self.lost_at:.1f} s")
            self.lost_at = None
        self.connack.set()

    def _on_disconnect(self, client, userdata, flags, reason_code, properties) -> None:
        if not self.connack.is_set():  # e.g. a TLS broker that wants a client certificate
            hint = ("; does it require a client certificate (--mqtt_cert)?"
                    if self.broker.tls and not self.options.cert_file else "")
            self.failure = (f"the MQTT broker {self.broker} closed the connection before accepting it "
                            f"({reason_code}){hint}")
            self.connack.set()
            return
        with self.changed:
            was_connected, self._connected = self._connected, False
            if self.closing or not was_connected:
                return
            self.outages += 1
            self.lost_at = time.monotonic()
        self._tell_health()
        logger.warning(f"MQTT broker {self.broker} lost ({reason_code}); reconnecting, keeping the latest state "
                       f"and up to {EVENT_QUEUE_MAX} events")

    def _tell_health(self) -> None:
        if self.health is not None:
            self.health.mqtt = "connected" if self._connected else "disconnected"

    def _on_message(self, client, userdata, message) -> None:
        if message.payload == b"online":  # Home Assistant (re)started: it has to hear the configs again
            with self.changed:
                self.discovery_due = True
                self.changed.notify()

    # the classify loop

    def add(self, frame: np.ndarray, result: Result) -> None:
        """Debounce `result`'s label; on a change, hand the state, event and snapshot to the publisher thread."""
        label = result.label
        self.run_length = self.run_length + 1 if label == self.candidate else 1
        self.candidate = label
        if label == self.state_label:
            self.state = result  # the heartbeat publishes the freshest scores of the current state
            return
        if self.run_length < self.options.debounce:
            return
        previous, self.state_label = self.state_label, label
        with self.changed:
            self.state, self.state_due = result, True
            if previous is not None:
                if len(self.events) == self.events.maxlen:
                    self.events_dropped += 1
                self.events.append((result, previous))
            if self.options.snapshot:
                self.snapshot_frame, self.snapshot_due = region_of(frame, result).copy(), True
            self.changed.notify()

    # the publisher thread

    def _publish_loop(self) -> None:
        next_heartbeat = time.monotonic() + self.options.heartbeat
        while True:
            with self.changed:
                while not (self.closing or self._connected and (
                        self.announce_due or self.discovery_due or self.state_due or self.snapshot_due or self.events)):
                    if not self.changed.wait(max(0.0, next_heartbeat - time.monotonic())):
                        break
                heartbeat = time.monotonic() >= next_heartbeat
                if heartbeat:
                    next_heartbeat = time.monotonic() + self.options.heartbeat
                if not self._connected:
                    if self.closing:
                        return
                    continue  # what is due stays due until the broker is back
                announce, self.announce_due = self.announce_due, False
                discovery, self.discovery_due = self.discovery_due or announce, False
                state = self.state if self.state_due or announce or heartbeat else None
                snapshot = self.snapshot_frame if self.snapshot_due or announce else None
                self.state_due = self.snapshot_due = False
                events = list(self.events)
                self.events.clear()
                closing = self.closing
            if announce:
                self.client.publish(self.topic_of("availability"), "online", qos=QOS, retain=True)
            if discovery and self.options.discovery:
                self._publish_discovery()
            if state is not None:
                self.client.publish(self.topic_of("state"), self.payload(state), qos=QOS, retain=True)
            for result, previous in events:
                message = self.client.publish(self.topic_of("event"), self.payload(
                    result, event_type=result.label, previous=previous), qos=QOS)
                if message.rc == self.queue_full:
                    with self.changed:
                        self.events_dropped += 1
            if snapshot is not None:
                self.client.publish(self.topic_of("snapshot"), snapshot_jpeg(snapshot), qos=QOS, retain=True)
            if closing:
                return

    def payload(self, result: Result, **extra) -> str:
        """`--json`'s fields of `result` with the schema version, the model and the top score, and `extra`."""
        return json.dumps({"schema": SCHEMA_VERSION, **result.to_json(), "model": self.model_name,
                           "score": round(result.top_k[0][1], 6) if result.top_k else None, **extra})

    def discovery_configs(self) -> dict[str, dict | None]:
        """Home Assistant discovery topic -> config: label, score, change event and snapshot under one device.

        The snapshot's config is None (an empty retained message, which removes the entity) without snapshots.
        """
        device = {"identifiers": [self.node_id], "name": f"edge-classify {self.topic.rsplit('/', 1)[-1]}",
                  "manufacturer": "retrain-edge", "model": self.model_name}
        # `stopped` (a clean exit) is not Home Assistant's `offline`: map it, so the entities show unavailable.
        common = {"device": device, "availability_topic": self.topic_of("availability"),
                  "availability_template": "{{ 'online' if value == 'online' else 'offline' }}", "qos": QOS}
        state = self.topic_of("state")
        components = {
            ("sensor", "label"): {"name": "Label", "state_topic": state, "value_template": "{{ value_json.label }}",
                                  "device_class": "enum", "options": self.labels, "json_attributes_topic": state,
                                  "icon": "mdi:image-search"},
            ("sensor", "score"): {"name": "Score", "state_topic": state, "value_template": "{{ value_json.score }}",
                                  "state_class": "measurement", "entity_category": "diagnostic"},
            ("event", "change"): {"name": "Change", "state_topic": self.topic_of("event"), "event_types": self.labels},
            ("image", "snapshot"): {"name": "Snapshot", "image_topic": self.topic_of("snapshot"),
                                    "content_type": "image/jpeg"},
        }
        prefix = self.options.discovery_prefix
        return {f"{prefix}/{component}/{self.node_id}/{name}/config":
                None if component == "image" and not self.options.snapshot
                else {**config, **common, "unique_id": f"{self.node_id}_{name}"}
                for (component, name), config in components.items()}

    def _publish_discovery(self) -> None:
        for topic, config in self.discovery_configs().items():
            self.client.publish(topic, "" if config is None else json.dumps(config), qos=QOS, retain=True)

    def close(self) -> None:
        """Publish what is pending and `stopped`, then disconnect: the broker keeps `stopped`, not the will."""
        with self.changed:
            self.closing = True
            self.changed.notify()
        self.thread.join(CLOSE_TIMEOUT_S)
        if self._connected:
            message = self.client.publish(self.topic_of("availability"), "stopped", qos=QOS, retain=True)
            if message.rc == 0:  # the broker may have gone since
                message.wait_for_publish(CLOSE_TIMEOUT_S)
        self.client.disconnect()
        self.client.loop_stop()
        self.summary.broker_outages, self.summary.events_dropped = self.outages, self.events_dropped
