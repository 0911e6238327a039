"""A real MQTT broker for the tests (Debian's mosquitto on a free loopback port, with a config
each test writes), a collecting consumer (paho-mqtt, as Home Assistant's integration uses), and
a CA with a server certificate made by `openssl` for the TLS test."""

from __future__ import annotations

import getpass
import json
import shutil
import socket
import subprocess
import threading
import time
from pathlib import Path
from typing import Self

import paho.mqtt.client as paho
import pytest

MOSQUITTO = Path("/usr/sbin/mosquitto")
MOSQUITTO_PASSWD = shutil.which("mosquitto_passwd") or "/usr/bin/mosquitto_passwd"
DEADLINE = 30.0  # s: generous bound for anything to happen on a loaded machine


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(condition, deadline: float = DEADLINE, what: str = "condition") -> None:
    end = time.monotonic() + deadline
    while not condition():
        assert time.monotonic() < end, f"timed out waiting for {what}"
        time.sleep(0.02)


class Broker:
    """mosquitto with a generated config: anonymous or with users, plain or TLS, its state
    persisted in its folder so that a restart keeps a consumer's session (as a real one)."""

    def __init__(self, folder: Path, users: dict[str, str] | None = None,
                 tls: tuple[Path, Path, Path] | None = None) -> None:
        if not MOSQUITTO.exists():
            pytest.fail(f"{MOSQUITTO} is missing: these tests need Debian's broker "
                        "(apt-get install mosquitto; the README's test command installs it)")
        self.folder = folder
        folder.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.proc: subprocess.Popen | None = None
        lines = [f"user {getpass.getuser()}", f"listener {self.port} 127.0.0.1",
                 f"allow_anonymous {'false' if users else 'true'}", "persistence true",
                 f"persistence_location {folder}/", f"log_dest file {folder / 'broker.log'}"]
        if users:
            passwords = folder / "passwords"
            for i, (user, password) in enumerate(users.items()):
                subprocess.run([MOSQUITTO_PASSWD, "-b", *(["-c"] if i == 0 else []),
                                str(passwords), user, password], check=True,
                               capture_output=True)
            lines.append(f"password_file {passwords}")
        if tls:
            ca, cert, key = tls
            lines += [f"cafile {ca}", f"certfile {cert}", f"keyfile {key}"]
        self.config = folder / "mosquitto.conf"
        self.config.write_text("\n".join(lines) + "\n")

    def start(self) -> Self:
        self.proc = subprocess.Popen([str(MOSQUITTO), "-c", str(self.config)],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        end = time.monotonic() + DEADLINE
        while True:
            assert self.proc.poll() is None, f"mosquitto exited: {self.proc.stderr.read()!r}"
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                return self
            except OSError:
                assert time.monotonic() < end, "mosquitto did not listen"
                time.sleep(0.02)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=DEADLINE)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self.proc is not None:
            self.proc.stderr.close()
        self.proc = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


class Consumer:
    """A subscriber collecting (topic, payload, retain) as they come, on paho's network thread
    (joined on exit). persistent: a fixed client id and a kept session, so messages published
    while it reconnects after a broker restart are queued for it, as for Home Assistant."""

    def __init__(self, broker: Broker, *topics: str, client_id: str = "",
                 persistent: bool = False, auth: tuple[str, str] | None = None,
                 ca: Path | None = None) -> None:
        self.topics = topics or ("#",)
        self.messages: list[tuple[str, bytes, bool]] = []
        self.lock = threading.Lock()
        self.subscribed = threading.Event()
        self.client = paho.Client(paho.CallbackAPIVersion.VERSION2, protocol=paho.MQTTv311,
                                  client_id=client_id, clean_session=not persistent)
        if auth:
            self.client.username_pw_set(*auth)
        if ca:
            self.client.tls_set(ca_certs=str(ca))
        self.client.reconnect_delay_set(0.1, 0.5)
        self.client.on_connect = self._on_connect
        self.client.on_subscribe = lambda *a: self.subscribed.set()
        self.client.on_message = self._on_message
        self.broker = broker

    def _on_connect(self, client, userdata, flags, reason, properties) -> None:
        if not reason.is_failure:
            client.subscribe([(t, 1) for t in self.topics])

    def _on_message(self, client, userdata, message) -> None:
        with self.lock:
            self.messages.append((message.topic, message.payload, bool(message.retain)))

    def __enter__(self) -> Self:
        self.client.connect_async("127.0.0.1", self.broker.port, 30)
        self.client.loop_start()
        assert self.subscribed.wait(DEADLINE), "the consumer did not subscribe"
        return self

    def __exit__(self, *exc) -> None:
        self.client.disconnect()
        self.client.loop_stop()

    def on(self, topic: str) -> list[bytes]:
        with self.lock:
            return [payload for t, payload, _ in self.messages if t == topic]

    def json(self, topic: str) -> list[dict]:
        return [json.loads(p) for p in self.on(topic)]

    def retained(self) -> dict[str, bytes]:
        """The retained messages it was sent on subscribing: topic → payload."""
        with self.lock:
            return {t: p for t, p, retain in self.messages if retain}


def retained_now(broker: Broker, pattern: str, **kw) -> dict[str, bytes]:
    """What the broker holds retained under `pattern` now, read by a fresh subscriber (a
    marker topic published after subscribing says the retained ones have all come)."""
    marker = f"test/marker/{time.monotonic_ns()}"
    with Consumer(broker, pattern, marker, **kw) as consumer:
        consumer.client.publish(marker, b"x", qos=1)
        wait_for(lambda: consumer.on(marker), what="the marker")
        return {t: p for t, p in consumer.retained().items() if p}


def make_tls(folder: Path) -> tuple[Path, Path, Path]:
    """A CA and a server certificate for localhost and 127.0.0.1 it signed, by openssl's CLI:
    (ca.crt, server.crt, server.key)."""
    folder.mkdir(parents=True, exist_ok=True)
    ca_key, ca, key, csr, cert = (folder / n for n in ("ca.key", "ca.crt", "server.key",
                                                         "server.csr", "server.crt"))
    ext = folder / "server.ext"
    ext.write_text("subjectAltName=DNS:localhost,IP:127.0.0.1\nbasicConstraints=CA:FALSE\n"
                   "keyUsage=critical,digitalSignature\nextendedKeyUsage=serverAuth\n"
                   "authorityKeyIdentifier=keyid\nsubjectKeyIdentifier=hash\n")
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]

    def run(*args: str) -> None:
        subprocess.run(["openssl", *args], check=True, capture_output=True)

    run("req", "-x509", *ec, "-keyout", str(ca_key), "-out", str(ca), "-days", "2",
        "-subj", "/CN=autotag test CA", "-addext", "basicConstraints=critical,CA:TRUE",
        "-addext", "keyUsage=critical,keyCertSign,cRLSign")
    run("req", *ec, "-keyout", str(key), "-out", str(csr), "-subj", "/CN=localhost")
    run("x509", "-req", "-in", str(csr), "-CA", str(ca), "-CAkey", str(ca_key),
        "-CAcreateserial", "-out", str(cert), "-days", "2", "-extfile", str(ext))
    return ca, cert, key
