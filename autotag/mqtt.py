"""Store outbox → paho-mqtt (QoS 1, oldest first) → PUBACK → marked sent; Home Assistant discovery.

    connect ─► <prefix>/status online (the daemon's; its last will says offline, both retained)
            ─► discovery configs (retained; an empty one for a tag gone from the vocabulary)
            ─► events waiting in the outbox, oldest first ─► PUBACK ─► sent
            ─► <prefix>/state (retained): the last clip and its tags, counts, runtime
    <discovery_prefix>/status online (Home Assistant restarted) ─► discovery configs again

The tagging step writes each event with the clip's record (Store, autotag/events.py); this module
only delivers them, from a thread of its own, so tagging never waits for the broker and never
fails because of it. A broker that is away (or refuses the login) is one warning line with the
number of events waiting; paho-mqtt reconnects every RECONNECT_MAX seconds at most and the
waiting events go out as soon as it is back. Events published and not yet acknowledged when the
connection drops are sent again by paho on reconnect; those of a process that ended stay unsent
in the store and the next process sends them. A consumer drops the rare duplicate by event id.
"""

from __future__ import annotations

import collections
import hashlib
import json
import logging
import os
import re
import socket
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path

import paho.mqtt.client as paho

from autotag import __version__
from autotag.config import Config, ConfigError, MqttConfig
from autotag.events import NEW, TAGGED
from autotag.store import Store, StoreError

log = logging.getLogger(__name__)

KEEPALIVE = 60  # s between pings on an idle connection (MQTT keep alive)
RECONNECT_MIN, RECONNECT_MAX = 1, 5  # s between attempts to reach a broker that is away
WINDOW = 100  # events published and not yet acknowledged, at most (memory while it is slow)
POLL_SECONDS = 30.0  # events written by another process (autotag retag, review) found this often
STATE_SECONDS = 1.0  # <prefix>/state is published at most this often (a burst of clips)
DRAIN_SECONDS = 5.0  # how long `autotag --once` waits at its end for the broker's PUBACKs
STOP_DRAIN_SECONDS = 1.0  # the daemon's, on SIGTERM (systemd waits; the outbox keeps the rest)
CONNECT_GRACE = 3.0  # s a draining publisher waits for a first answer from the broker
ONLINE, OFFLINE = "online", "offline"
TAG_EVENT = "tagged"  # the event_type of a tag's Home Assistant event entity
_ID_CHARACTERS = re.compile(r"[^a-zA-Z0-9_-]+")  # Home Assistant's node and object ids


def sanitise(text: str) -> str:
    """Text → an id of [a-zA-Z0-9_-] (Home Assistant's discovery topics allow no other)."""
    return _ID_CHARACTERS.sub("_", text).strip("_") or "x"


def node_id(store_path: Path, host: str | None = None) -> str:
    """This autotag instance: the machine and its state store (two stores on one machine are
    two devices), stable from run to run."""
    digest = hashlib.sha256(str(store_path).encode()).hexdigest()[:8]
    return sanitise(f"autotag_{host or socket.gethostname()}_{digest}")


def tag_object_id(label: str) -> str:
    """A tag's entity id: readable, and unique even for tags that sanitise alike
    ('dog playing' and 'dog_playing')."""
    return f"tag_{sanitise(label.lower())[:40]}_{hashlib.sha256(label.encode()).hexdigest()[:6]}"


def topics(mqtt: MqttConfig) -> dict[str, str]:
    prefix = mqtt.topic_prefix
    return {"status": f"{prefix}/status", "state": f"{prefix}/state",
            "tagged": f"{prefix}/{TAGGED}"}


# -- Home Assistant discovery ----------------------------------------------------------------

def discovery(mqtt: MqttConfig, node: str, labels: Sequence[str]) -> dict[str, dict]:
    """Discovery topic → retained config, one per entity of this instance's device: the last
    clip tagged (its tags as attributes), clips tagged today, clips waiting, failures, the
    runtime and precision in use, whether the daemon runs, and an event entity per tag that
    fires when a new clip with that tag arrives. Empty when discovery is off."""
    if mqtt.discovery_prefix is None:
        return {}
    named = topics(mqtt)
    device = {"identifiers": [node], "name": f"autotag {socket.gethostname()}",
              "manufacturer": "autotag", "model": "video clip tagger", "sw_version": __version__}
    origin = {"name": "autotag", "sw_version": __version__}

    def entity(component: str, object_id: str, **config) -> tuple[str, dict]:
        topic = f"{mqtt.discovery_prefix}/{component}/{node}/{object_id}/config"
        return topic, {"unique_id": f"{node}_{object_id}", "device": device, "origin": origin,
                       **config}

    def sensor(object_id: str, name: str, field: str, **extra) -> tuple[str, dict]:
        return entity("sensor", object_id, name=name, state_topic=named["state"],
                      value_template=f"{{{{ value_json.{field} }}}}", **extra)

    entities = [
        entity("sensor", "last_clip", name="Last clip tagged", icon="mdi:filmstrip",
               state_topic=named["state"],
               # Home Assistant refuses a state past 255 characters
               value_template="{{ value_json.last.name[:255] if value_json.last else None }}",
               json_attributes_topic=named["state"],
               json_attributes_template="{{ (value_json.last or {}) | tojson }}"),
        sensor("tagged_today", "Clips tagged today", "tagged_today", icon="mdi:tag-multiple",
               unit_of_measurement="clips", state_class="total_increasing"),
        sensor("waiting", "Clips waiting", "waiting", icon="mdi:tray-full",
               unit_of_measurement="clips", state_class="measurement"),
        sensor("failures", "Failures", "failures", icon="mdi:alert-circle",
               unit_of_measurement="clips", state_class="measurement"),
        sensor("precision", "Precision", "precision", icon="mdi:chip",
               entity_category="diagnostic"),
        sensor("runtime", "Runtime", "runtime", icon="mdi:cog", entity_category="diagnostic"),
        entity("binary_sensor", "running", name="Running", device_class="running",
               state_topic=named["status"], payload_on=ONLINE, payload_off=OFFLINE,
               entity_category="diagnostic"),
    ]
    for label in labels:
        entities.append(entity(
            "event", tag_object_id(label), name=f"Tag {label}", icon="mdi:tag",
            state_topic=named["tagged"], event_types=[TAG_EVENT],
            value_template=_tag_template(label)))
    return dict(entities)


def _tag_template(label: str) -> str:
    """Renders a JSON event for Home Assistant when a new clip has `label`, and nothing (an
    empty render, which Home Assistant's event entity ignores) otherwise. The label is a JSON
    string literal, which Jinja reads as its own string literal."""
    return (f"{{% if value_json.why == '{NEW}' and {json.dumps(label)} in value_json.labels %}}"
            f"{{{{ {{'event_type': '{TAG_EVENT}', 'path': value_json.path, "
            "'clip': value_json.name, 'labels': value_json.labels, "
            "'event_id': value_json.id} | tojson }}{% endif %}")


# -- the state sensors read ----------------------------------------------------------------------

def model_status(config: Config, embedder: object | None) -> dict:
    """The runtime and precision in use: the loaded model's runtime when it has loaded (auto
    resolves to one), else what the config asks for."""
    runtime = getattr(embedder, "runtime", None) or config.model.runtime
    return {"runtime": runtime, "precision": _precision(config, embedder)}


def _precision(config: Config, embedder: object | None) -> str:
    """The precision the video model runs (auto has chosen one once it loaded: f32, bf16 or
    int8; a TensorFlow model runs f32), else what the config asks for."""
    running = getattr(embedder, "running_precision", None)
    value = running() if callable(running) else running
    if value is None and embedder is not None and not hasattr(embedder, "loaded_model"):
        value = getattr(embedder, "precision", None) or "f32"  # a model, not a lazy one
    return value if isinstance(value, str) and value != "auto" else config.model.precision


def _midnight(now: float) -> float:
    """time.time() of the last local midnight: where 'today' starts."""
    day = datetime.fromtimestamp(now).replace(hour=0, minute=0, second=0, microsecond=0)
    return day.timestamp()


def state(store: Store, status: dict, now: float | None = None) -> dict:
    """<prefix>/state: the last clip tagged (from the outbox), clips tagged today (new ones),
    failures (clips whose last attempt failed), events waiting, and the owner's status
    (waiting clips, runtime, precision)."""
    now = time.time() if now is None else now
    last = store.last_event(TAGGED)
    body = json.loads(last.payload) if last else None
    return {
        "last": {k: body[k] for k in ("id", "path", "name", "labels", "top", "tags", "time",
                                      "why", "sidecar")} if body else None,
        "tagged_today": store.events_since(TAGGED, _midnight(now), why=NEW),
        "failures": store.counts().get("failed", 0),
        "events_waiting": store.events_waiting(),
        "waiting": status.get("waiting", 0),
        "runtime": status.get("runtime"),
        "precision": status.get("precision"),
    }


# -- the publisher -------------------------------------------------------------------------------

class Publisher:
    """Delivers the store's outbox to the broker from a thread it owns (stop Event; paho's
    network thread is started and joined with it).

    persistent: this process is the instance (the daemon): `<prefix>/status` is its online,
    and its last will offline. Short runs (--once) leave the status alone: they would say
    offline while a daemon runs. status(): the owner's waiting clips, runtime and precision."""

    def __init__(self, config: MqttConfig, store_path: Path, labels: Sequence[str],
                 status: Callable[[], dict] = dict, persistent: bool = False) -> None:
        self.config = config
        self.store_path = store_path
        self.labels = tuple(labels)
        self.status = status
        self.persistent = persistent
        self.node = node_id(store_path)
        self.topics = topics(config)
        self.broker = f"{config.host}:{config.port}"
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None
        self._acked: collections.deque[int] = collections.deque()  # mids, from paho's thread
        self._inflight: dict[int, str] = {}  # mid → event id, this thread's
        self._cursor = 0  # the last outbox seq published by this process
        self._connected = False
        self._answered = threading.Event()  # the broker accepted or refused, or cannot be reached
        self._problem: str | None = None  # why the broker is not reached now
        self._warned = False  # this outage was reported (the daemon's one line)
        self._announce = False  # discovery (and status) due: connected, or Home Assistant back
        self._state_due = True
        self._state_at = 0.0
        self._polled = time.monotonic()
        self._day = _midnight(time.time())  # today's count starts again after midnight
        self._drain_until: float | None = None
        self._started = 0.0
        self.left = 0  # events still waiting when it stopped

    @property
    def problem(self) -> str | None:
        """Why the broker is not reached now (None: connected, or no answer yet)."""
        return self._problem

    # -- the owner's side ----------------------------------------------------------------------

    def start(self) -> None:
        self._started = time.monotonic()
        self._thread = threading.Thread(target=self._run, name="autotag-mqtt")
        self._thread.start()

    def wake(self) -> None:
        """Something was written to the outbox (a clip's result): look now."""
        self._state_due = True
        self._wake.set()

    def set_labels(self, labels: Sequence[str]) -> None:
        """The vocabulary changed (a reload): announce its tags, remove the ones gone."""
        self.labels = tuple(labels)
        self._announce = True
        self._wake.set()

    def stop(self, drain: float = 0.0) -> int:
        """Stop, first waiting up to `drain` seconds for the events waiting to be acknowledged
        (not at all for a broker that is away or refused); returns the events still waiting."""
        self._drain_until = time.monotonic() + drain
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        return self.left

    # -- the thread ---------------------------------------------------------------------------

    def _run(self) -> None:
        try:
            store = Store(self.store_path)
        except StoreError as exc:  # the app that opened it first has said so already
            log.debug("MQTT: no events sent: %s", exc)
            return
        client = None
        try:
            client = self._client()
            client.connect_async(self.config.host, self.config.port, KEEPALIVE)
            client.loop_start()
            while not self._done(store):
                self._step(client, store)
                self._wake.wait(self._timeout())
                self._wake.clear()
            self._step(client, store, final=True)
        except (ConfigError, OSError, ValueError) as exc:  # a password file gone; a bad CA
            self._problem = f"cannot be used: {exc}"
            if self.persistent:
                log.warning("MQTT broker %s %s; events wait in the state store", self.broker,
                            self._problem)
        finally:
            self.left = store.events_waiting()
            if client is not None:
                self._close(client)
            store.close()

    def _client(self) -> paho.Client:
        client = paho.Client(paho.CallbackAPIVersion.VERSION2, protocol=paho.MQTTv311,
                             client_id=f"autotag-{self.node}-{os.getpid()}", clean_session=True)
        if self.config.username is not None:
            client.username_pw_set(self.config.username, self.config.password())
        if self.config.tls is not False:
            client.tls_set(ca_certs=None if self.config.tls is True else str(self.config.tls))
        client.reconnect_delay_set(RECONNECT_MIN, RECONNECT_MAX)
        if self.persistent:
            client.will_set(self.topics["status"], OFFLINE, qos=1, retain=True)
        client.on_connect = self._on_connect
        client.on_connect_fail = self._on_connect_fail
        client.on_disconnect = self._on_disconnect
        client.on_publish = self._on_publish
        client.on_message = self._on_message
        return client

    def _done(self, store: Store) -> bool:
        """Stopping, and nothing more to wait for: no drain left, nothing waiting, or a broker
        that is away (a draining run does not wait for one; a first answer it waits for)."""
        if not self._stop.is_set():
            return False
        now = time.monotonic()
        if self._drain_until is None or now >= self._drain_until:
            return True
        if not self._connected:
            unanswered = not self._answered.is_set() and now - self._started < CONNECT_GRACE
            return not unanswered
        return not self._inflight and not self._acked and store.events_waiting() == 0

    def _timeout(self) -> float | None:
        """Seconds until the thread must look again with nothing woken: the state's throttle,
        the poll for other processes' events, local midnight (today's count starts again)."""
        waits = [_midnight(time.time()) + 86400.0 - time.time() + 1.0]
        if self._connected:
            waits.append(max(0.0, self._polled + POLL_SECONDS - time.monotonic()))
            if self._state_due:
                waits.append(max(0.0, self._state_at + STATE_SECONDS - time.monotonic()))
        if self._drain_until is not None:
            waits.append(0.05)  # draining: PUBACKs wake it; this bounds a missed one
        return min(waits)

    def _step(self, client: paho.Client, store: Store, final: bool = False) -> None:
        """final: the last step before stopping: the state goes out now, throttle or not."""
        self._mark_acked(store)
        if self._connected:
            if self._announce:
                self._announce = False
                self._publish_announcements(client, store)
            if time.monotonic() - self._polled >= POLL_SECONDS:
                self._polled = time.monotonic()
                self._state_due = True
            if _midnight(time.time()) != self._day:
                self._day = _midnight(time.time())
                self._state_due = True
            self._send_waiting(client, store)
            self._publish_state(client, store, final)
        self._report(store)

    def _mark_acked(self, store: Store) -> None:
        ids = []
        while self._acked:
            event_id = self._inflight.pop(self._acked.popleft(), None)
            if event_id is not None:
                ids.append(event_id)
        if ids:
            store.mark_sent(ids)
            self._state_due = True

    def _send_waiting(self, client: paho.Client, store: Store) -> None:
        """The outbox's waiting events after the last one this process published, oldest
        first, up to WINDOW in flight. Those in flight are paho's to send again after a
        reconnect: publishing them again here would send each twice."""
        room = WINDOW - len(self._inflight)
        if room <= 0:
            return
        for event in store.waiting_events(after=self._cursor, limit=room):
            info = client.publish(f"{self.config.topic_prefix}/{event.kind}", event.payload,
                                  qos=1)
            self._inflight[info.mid] = event.id
            self._cursor = event.seq

    def _publish_announcements(self, client: paho.Client, store: Store) -> None:
        """The status (the daemon's), then every discovery config, and an empty retained
        config for each entity announced before and gone now (Home Assistant removes it)."""
        if self.persistent:
            client.publish(self.topics["status"], ONLINE, qos=1, retain=True)
        configs = discovery(self.config, self.node, self.labels)
        for topic, config in configs.items():
            client.publish(topic, json.dumps(config), qos=1, retain=True)
        gone = store.announced() - set(configs)
        for topic in sorted(gone):
            client.publish(topic, b"", qos=1, retain=True)
        store.set_announced(set(configs), gone)
        self._state_due = True

    def _publish_state(self, client: paho.Client, store: Store, final: bool = False) -> None:
        now = time.monotonic()
        if not self._state_due or (now - self._state_at < STATE_SECONDS and not final):
            return
        self._state_due, self._state_at = False, now
        info = client.publish(self.topics["state"], json.dumps(state(store, self.status())),
                              qos=1, retain=True)
        if final:
            info.wait_for_publish(timeout=STOP_DRAIN_SECONDS)

    def _report(self, store: Store) -> None:
        """The daemon's: one warning line per outage (broker away, login refused) once an
        event waits for it, one info line when it is back. A short run says it once, at its
        end, with the number left (publishing)."""
        problem = self._problem
        if not self.persistent:
            return
        if problem is not None and not self._warned and store.events_waiting():
            self._warned = True
            log.warning("MQTT broker %s %s; %d event(s) waiting in the state store, sent when "
                        "it is reached", self.broker, problem, store.events_waiting())
        elif problem is None and self._warned and self._connected:
            self._warned = False
            log.info("MQTT broker %s reached; sending the %d event(s) waiting", self.broker,
                     store.events_waiting())

    def _close(self, client: paho.Client) -> None:
        """The daemon says offline itself (a clean stop sends no last will); then paho's
        thread is joined."""
        if self.persistent and self._connected:
            info = client.publish(self.topics["status"], OFFLINE, qos=1, retain=True)
            info.wait_for_publish(timeout=1.0)
        client.disconnect()
        client.loop_stop()

    # -- paho's callbacks (its network thread): flags and a wake, nothing more -------------------

    def _on_connect(self, client, userdata, flags, reason, properties) -> None:
        self._answered.set()
        if reason.is_failure:
            self._problem = f"refused the login ({reason}); check mqtt.username and " \
                            "mqtt.password_file"
        else:
            self._connected, self._problem = True, None
            self._announce = self._state_due = True
            if self.config.discovery_prefix is not None:  # Home Assistant's birth message
                client.subscribe(f"{self.config.discovery_prefix}/status", qos=1)
        self._wake.set()

    def _on_connect_fail(self, client, userdata) -> None:
        self._answered.set()
        self._problem = "cannot be reached"
        self._wake.set()

    def _on_disconnect(self, client, userdata, flags, reason, properties) -> None:
        if self._connected and not self._stop.is_set():
            self._problem = "lost the connection"  # its reason code says no more than that
        self._connected = False
        self._wake.set()

    def _on_publish(self, client, userdata, mid, reason, properties) -> None:
        self._acked.append(mid)  # no lock: paho holds its own here (the thread maps mids)
        self._wake.set()

    def _on_message(self, client, userdata, message) -> None:
        if message.payload == ONLINE.encode():
            self._announce = True  # Home Assistant started: it reads discovery again
            self._wake.set()


def start_run(config: Config, status: Callable[[], dict] = dict) -> Publisher | None:
    """A short run's publisher (--once, retag, review), started first: what earlier runs left
    goes out at once. None: MQTT is off."""
    if not config.mqtt.enabled:
        return None
    publisher = Publisher(config.mqtt, config.state.store_path, config.labels, status)
    publisher.start()
    return publisher


def end_run(publisher: Publisher | None, drain: float = DRAIN_SECONDS) -> None:
    """Stop a short run's publisher after up to `drain` seconds for the broker's
    acknowledgements; the events it could not send wait for the next run, and one line says
    so (the broker, why, how many)."""
    if publisher is None:
        return
    left = publisher.stop(drain)
    if left:
        log.warning("MQTT broker %s %s; %d event(s) waiting in the state store, sent by the "
                    "next autotag run that reaches it", publisher.broker,
                    publisher.problem or "did not acknowledge them in time", left)


@contextmanager
def publishing(config: Config, status: Callable[[], dict] = dict,
               drain: float = DRAIN_SECONDS) -> Iterator[Publisher | None]:
    """start_run … end_run around a block."""
    publisher = start_run(config, status)
    try:
        yield publisher
    finally:
        end_run(publisher, drain)
