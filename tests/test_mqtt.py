"""MQTT events and Home Assistant discovery against a real broker (Debian's mosquitto, started
here on a free loopback port): the messages and their schema, discovery as Home Assistant reads
it, the status and its last will, a broker that goes away and comes back, passwords, TLS, a
refused login, and the outbox written with the clip's record."""

from __future__ import annotations

import json
import os
import re
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import jsonschema
import pytest
from jinja2.sandbox import ImmutableSandboxedEnvironment

from autotag import cli
from autotag.app import open_app
from autotag.config import ConfigError, load_config, parse_config
from autotag.events import tagged_event
from autotag.mqtt import Publisher, discovery, node_id, tag_object_id
from autotag.reviews import Verdicts, review
from autotag.store import Store
from tests.broker import Broker, Consumer, make_tls, retained_now, wait_for
from tests.clips import GREEN, RED, write_video
from tests.helpers import Running, tagged, write_config

REPO = Path(__file__).resolve().parents[1]
SCHEMA = json.loads((REPO / "autotag" / "schemas" / "events.schema.json").read_text())
HA_TOPIC = r"^homeassistant/(sensor|binary_sensor|event)/[a-zA-Z0-9_-]+/[a-zA-Z0-9_-]+/config$"


def validate(message: dict, definition: str | None = None) -> None:
    schema = SCHEMA if definition is None else {**SCHEMA, "$ref": f"#/$defs/{definition}",
                                                "oneOf": None}
    schema = {k: v for k, v in schema.items() if v is not None}
    jsonschema.Draft202012Validator(schema, format_checker=jsonschema.FormatChecker()) \
        .validate(message)


def mqtt_block(broker_port: int, extra: str = "") -> str:
    return f"mqtt: {{host: 127.0.0.1, port: {broker_port}{extra}}}\n"


@pytest.fixture
def clips(tmp_path) -> Path:
    root = tmp_path / "clips"
    root.mkdir()
    write_video(root / "red.mp4", [(RED, 3)])
    return root


@pytest.fixture
def broker(tmp_path):
    with Broker(tmp_path / "broker") as running:
        yield running


def outbox(config: Path) -> list[tuple]:
    with sqlite3.connect(config.parent / "state.sqlite3") as db:
        return db.execute("SELECT id, kind, sent FROM outbox ORDER BY seq").fetchall()


# -- the messages ---------------------------------------------------------------------------------

def test_tagged_and_failed_events_follow_the_schema(tmp_path, model_dir, clips, broker,
                                                     run_once):
    (clips / "broken.mp4").write_bytes(b"not a video at all" * 100)
    config = write_config(tmp_path, model_dir, mqtt_block(broker.port))
    with Consumer(broker, "autotag/#") as consumer:
        assert run_once(config, clips) == 1  # the broken clip fails the run, as without MQTT
        wait_for(lambda: consumer.on("autotag/tagged") and consumer.on("autotag/failed"),
                 what="both events")
        wait_for(lambda: consumer.json("autotag/state")
                 and consumer.json("autotag/state")[-1]["last"] is not None, what="the state")
    (event,) = consumer.json("autotag/tagged")
    validate(event)
    assert event["why"] == "new" and event["path"] == str(clips / "red.mp4")
    assert event["labels"][0] == "red" and event["top"] == "red"
    assert event["tags"][0]["segments"] and event["tags"][0]["score"] > 3.0
    store = Store(tmp_path / "state.sqlite3")
    try:
        assert event["sha256"] == store.file(clips / "red.mp4").sha256
    finally:
        store.close()
    assert event["sidecar"] == f"{clips / 'red.mp4'}.autotag.json"
    assert Path(event["sidecar"]).is_file()
    (failed,) = consumer.json("autotag/failed")
    validate(failed)
    assert failed["path"] == str(clips / "broken.mp4") and failed["reason"]
    assert failed["attempts"] == 1
    state = consumer.json("autotag/state")[-1]
    validate(state, "state")
    assert state["last"]["id"] == event["id"] and state["tagged_today"] == 1
    assert state["failures"] == 1 and state["events_waiting"] == 0
    assert state["precision"] == "f32"
    assert all(sent is not None for _, _, sent in outbox(config))  # each PUBACK marked


def test_a_retag_that_changes_no_tag_sends_nothing_and_a_review_says_so(tmp_path, model_dir,
                                                                         clips,
                                                                         broker, run_once,
                                                                         embedder, capsys):
    config = write_config(tmp_path, model_dir, mqtt_block(broker.port))
    assert run_once(config, clips) == 0
    assert len(outbox(config)) == 1
    app = open_app(load_config(config), embedder)
    try:
        from autotag.retagging import retag

        records = [app.store.file(clips / "red.mp4")]
        assert [r.status for r in retag(app.tagger, app.store, records)] == ["reused"]
        assert len(outbox(config)) == 1  # the same tags: nothing to tell
        review(app.tagger, app.store, records[0], Verdicts(reject=("red",)))
    finally:
        app.close()
    rows = outbox(config)
    assert len(rows) == 2 and rows[1][2] is None  # written by review, no publisher ran
    # the next run sends what another command left, at its start, with nothing to tag
    with Consumer(broker, "autotag/tagged") as consumer:
        assert run_once(config, clips) == 0
        wait_for(lambda: consumer.on("autotag/tagged"), what="the review's event")
    (event,) = consumer.json("autotag/tagged")
    validate(event)
    assert event["why"] == "review" and event["id"] == rows[1][0]
    assert "red" not in event["labels"]
    assert all(sent is not None for _, _, sent in outbox(config))


def test_the_event_is_written_with_the_record_or_not_at_all(tmp_path):
    """Both in one transaction: an event that cannot be written takes the record with it."""
    store = Store(tmp_path / "state.sqlite3")
    try:
        clip = tmp_path / "a.mp4"
        event = tagged_event(tagged(clip, "red"), "new")
        store.record_tagged(tagged(clip, "red").clip.source, "m", "v", event=event)
        assert store.file(clip) is not None and store.events_waiting() == 1
        other = tmp_path / "b.mp4"
        source = tagged(other, "red").clip.source
        with pytest.raises(sqlite3.IntegrityError):  # the same event id again
            store.record_tagged(source.__class__(other, 1, 1.0, "1" * 64), "m", "v",
                                event=event)
        assert store.file(other) is None and store.events_waiting() == 1
        store.mark_sent([event.id])
        assert store.events_waiting() == 0 and store.waiting_events() == []
    finally:
        store.close()


def test_a_store_of_the_schema_before_gains_the_outbox(tmp_path):
    from autotag.store import SCHEMA_VERSION

    path = tmp_path / "state.sqlite3"
    Store(path).close()
    with sqlite3.connect(path) as db:  # the store as the schema before the outbox left it
        db.execute("DROP TABLE outbox")
        db.execute("DROP TABLE mqtt_entities")
        db.execute(f"PRAGMA user_version = {SCHEMA_VERSION - 1}")
    store = Store(path)
    try:
        assert store.events_waiting() == 0 and store.announced() == set()
    finally:
        store.close()


# -- Home Assistant discovery ------------------------------------------------------------------------

def render(template: str, payload: bytes) -> str:
    """A value template rendered as Home Assistant's MQTT integration does: Jinja in a sandbox,
    `value` the payload and `value_json` the payload parsed."""
    env = ImmutableSandboxedEnvironment()
    return env.from_string(template).render(value=payload.decode(),
                                            value_json=json.loads(payload)).strip()


def test_discovery_configs_as_home_assistant_reads_them(tmp_path, model_dir, clips, broker,
                                                        run_once):
    config = write_config(tmp_path, model_dir, mqtt_block(broker.port))
    with Consumer(broker, "autotag/#") as consumer:
        assert run_once(config, clips) == 0
        wait_for(lambda: consumer.on("autotag/tagged"), what="the event")
        wait_for(lambda: consumer.json("autotag/state")
                 and consumer.json("autotag/state")[-1]["last"], what="the state")
    configs = {t: json.loads(p) for t, p in retained_now(broker, "homeassistant/#").items()}
    node = node_id(tmp_path / "state.sqlite3")
    assert len(configs) == 7 + 3  # six sensors, the running binary sensor, a tag each
    unique = [c["unique_id"] for c in configs.values()]
    assert len(set(unique)) == len(unique)
    for topic, entity in configs.items():
        assert re.match(HA_TOPIC, topic), topic
        assert topic.split("/")[2] == node
        assert entity["device"]["identifiers"] == [node]
        assert entity["state_topic"].startswith("autotag/")
    tagged_msg = consumer.on("autotag/tagged")[0]
    state_msg = consumer.on("autotag/state")[-1]
    sensors = {t.split("/")[3]: c for t, c in configs.items() if "/sensor/" in t}
    assert render(sensors["last_clip"]["value_template"], state_msg) == "red.mp4"
    attributes = json.loads(render(sensors["last_clip"]["json_attributes_template"], state_msg))
    assert attributes["labels"][0] == "red" and attributes["path"] == str(clips / "red.mp4")
    assert render(sensors["tagged_today"]["value_template"], state_msg) == "1"
    assert render(sensors["failures"]["value_template"], state_msg) == "0"
    assert render(sensors["waiting"]["value_template"], state_msg) == "0"
    assert render(sensors["precision"]["value_template"], state_msg) == "f32"
    assert render(sensors["runtime"]["value_template"], state_msg)
    events = {c["name"]: c for t, c in configs.items() if "/event/" in t}
    assert set(events) == {"Tag red", "Tag green", "Tag sea"}
    fired = json.loads(render(events["Tag red"]["value_template"], tagged_msg))
    assert fired["event_type"] in events["Tag red"]["event_types"]
    assert fired["path"] == str(clips / "red.mp4")
    assert render(events["Tag green"]["value_template"], tagged_msg) == ""  # ignored by HA
    retag = json.dumps({**json.loads(tagged_msg), "why": "retag"}).encode()
    assert render(events["Tag red"]["value_template"], retag) == ""  # arrivals only


def test_a_tag_name_with_quotes_renders_in_its_template():
    from autotag.config import MqttConfig

    label = 'the "big" one\'s'
    (config,) = [c for c in discovery(MqttConfig(host="h"), "n", [label]).values()
                 if "event_types" in c]
    message = json.dumps({"why": "new", "labels": [label], "path": "/p", "name": "p",
                          "id": "x"}).encode()
    assert json.loads(render(config["value_template"], message))["event_type"] == "tagged"
    assert tag_object_id("dog playing") != tag_object_id("dog_playing")


def publisher_for(tmp_path: Path, port: int, labels, persistent: bool = False) -> Publisher:
    config = parse_config(f"vocabulary: [x]\n{mqtt_block(port)}", tmp_path)
    publisher = Publisher(config.mqtt, tmp_path / "state.sqlite3", labels, persistent=persistent)
    publisher.start()
    return publisher


def test_home_assistant_coming_online_gets_the_configs_again(tmp_path, broker):
    with Consumer(broker, "homeassistant/+/+/+/config") as consumer:
        publisher = publisher_for(tmp_path, broker.port, ["red", "green"])
        try:
            wait_for(lambda: len(consumer.messages) == 9, what="the first announcement")
            consumer.client.publish("homeassistant/status", b"online", qos=1)
            wait_for(lambda: len(consumer.messages) == 18, what="the second announcement")
        finally:
            publisher.stop()
    assert {t for t, _, _ in consumer.messages[:9]} == {t for t, _, _ in consumer.messages[9:]}


def test_a_tag_leaving_the_vocabulary_loses_its_entity(tmp_path, broker):
    publisher = publisher_for(tmp_path, broker.port, ["red", "green"])
    node = node_id(tmp_path / "state.sqlite3")
    green = f"homeassistant/event/{node}/{tag_object_id('green')}/config"
    try:
        wait_for(lambda: green in retained_now(broker, "homeassistant/#"), what="green")
    finally:
        publisher.stop()
    with Consumer(broker, green) as consumer:
        publisher = publisher_for(tmp_path, broker.port, ["red"])
        try:
            wait_for(lambda: b"" in consumer.on(green), what="the empty config")
        finally:
            publisher.stop()
    held = retained_now(broker, "homeassistant/#")
    assert green not in held
    assert f"homeassistant/event/{node}/{tag_object_id('red')}/config" in held


def test_the_daemon_is_online_and_its_last_will_says_offline(tmp_path, broker):
    code = (f"import sys, time; sys.path.insert(0, {str(REPO)!r})\n"
            "from tests.test_mqtt import publisher_for\n"
            "from pathlib import Path\n"
            f"publisher_for(Path({str(tmp_path)!r}), {broker.port}, ['red'], persistent=True)\n"
            "time.sleep(120)\n")
    child = subprocess.Popen([sys.executable, "-c", code], env={**os.environ})
    try:
        wait_for(lambda: retained_now(broker, "autotag/status").get("autotag/status")
                 == b"online", what="online")
        child.kill()  # no clean disconnect: the broker sends the last will
        child.wait()
        wait_for(lambda: retained_now(broker, "autotag/status").get("autotag/status")
                 == b"offline", what="the last will")
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
    publisher = publisher_for(tmp_path, broker.port, ["red"], persistent=True)
    wait_for(lambda: retained_now(broker, "autotag/status").get("autotag/status") == b"online",
             what="online again")
    publisher.stop()  # a clean stop says offline itself
    assert retained_now(broker, "autotag/status")["autotag/status"] == b"offline"


# -- a broker that goes away, passwords, TLS ------------------------------------------------------------

def test_broker_stopped_mid_run_and_restarted_loses_nothing_sends_nothing_twice(
        tmp_path, model_dir, embedder, caplog):
    broker = Broker(tmp_path / "broker").start()
    root = tmp_path / "inbox"
    root.mkdir()
    config = tmp_path / "config.yaml"
    config.write_text(
        f"model: {{handle: '{model_dir}'}}\nvocabulary: [red, green]\n"
        f"state: {{path: '{tmp_path / 'state.sqlite3'}'}}\n"
        "watch: {stability_seconds: 0.3, rescan_seconds: 0}\n"
        "outputs: {log: matches.jsonl, previews: null}\n" + mqtt_block(broker.port))
    # a persistent session, as Home Assistant's: what arrives while it reconnects is kept
    consumer = Consumer(broker, "autotag/tagged", client_id="ha-like", persistent=True)
    try:
        with consumer, Running(config, root, embedder) as run:
            for i in range(3):
                write_video(root / f"before {i}.mp4", [(RED, 2)])
            wait_for(lambda: len(consumer.on("autotag/tagged")) == 3, what="3 events")
            wait_for(lambda: all(s is not None for _, _, s in outbox(config)), what="acks")
            broker.stop()
            for i in range(3):
                write_video(root / f"during {i}.mp4", [(GREEN, 2)])
            # tagging goes on with the broker away: every clip tagged, events waiting
            wait_for(lambda: len(outbox(config)) == 6, what="tagging without the broker")
            assert run.daemon.wait_idle(30)
            assert sum(s is None for _, _, s in outbox(config)) == 3
            broker.start()  # the same port: the daemon is back within seconds
            wait_for(lambda: len(consumer.on("autotag/tagged")) >= 6, what="6 events")
            wait_for(lambda: all(s is not None for _, _, s in outbox(config)), what="acks")
            time.sleep(0.5)  # a duplicate would arrive now
    finally:
        broker.stop()
    received = [e["id"] for e in consumer.json("autotag/tagged")]
    assert sorted(received) == sorted(i for i, _, _ in outbox(config))  # every event
    assert len(set(received)) == len(received) == 6  # none twice
    warnings = [r.getMessage() for r in caplog.records
                if r.name == "autotag.mqtt" and r.levelname == "WARNING"]
    assert len(warnings) == 1, warnings  # one line for the outage, however long
    # the connection lost, or the next attempt failing: which one comes first is the kernel's
    assert re.match(rf"MQTT broker 127\.0\.0\.1:{broker.port} (lost the connection|cannot be "
                    r"reached); [1-3] event\(s\) waiting", warnings[0]), warnings[0]


def test_a_broker_with_a_password(tmp_path, model_dir, clips, run_once):
    secret = tmp_path / "mqtt-password"
    secret.write_text("s3cret\n")
    with Broker(tmp_path / "broker", users={"autotag": "s3cret"}) as broker, \
            Consumer(broker, "autotag/tagged", auth=("autotag", "s3cret")) as consumer:
        config = write_config(tmp_path, model_dir, mqtt_block(
            broker.port, f", username: autotag, password_file: '{secret}'"))
        assert run_once(config, clips) == 0
        wait_for(lambda: consumer.on("autotag/tagged"), what="the event")
    assert consumer.json("autotag/tagged")[0]["name"] == "red.mp4"
    assert "s3cret" not in config.read_text()


def test_a_broker_with_tls_and_a_ca_made_here(tmp_path, model_dir, clips, run_once):
    ca, cert, key = make_tls(tmp_path / "tls")
    with Broker(tmp_path / "broker", tls=(ca, cert, key)) as broker, \
            Consumer(broker, "autotag/tagged", ca=ca) as consumer:
        config = write_config(tmp_path, model_dir, mqtt_block(broker.port, f", tls: '{ca}'"))
        assert run_once(config, clips) == 0
        wait_for(lambda: consumer.on("autotag/tagged"), what="the event over TLS")
    assert consumer.json("autotag/tagged")[0]["labels"][0] == "red"


def test_a_refused_login_is_one_clear_line_and_tagging_goes_on(tmp_path, model_dir, clips,
                                                               run_once,
                                                               capsys):
    secret = tmp_path / "mqtt-password"
    secret.write_text("wrong\n")
    with Broker(tmp_path / "broker", users={"autotag": "right"}) as broker:
        config = write_config(tmp_path, model_dir, mqtt_block(
            broker.port, f", username: autotag, password_file: '{secret}'"))
        assert run_once(config, clips) == 0
    assert (clips / "red.mp4.autotag.json").is_file()  # tagged all the same
    lines = [line for line in capsys.readouterr().err.splitlines() if "MQTT" in line]
    refused = [line for line in lines if "refused the login" in line]
    assert len(refused) == 1, lines
    assert f"127.0.0.1:{broker.port}" in refused[0] and "1 event(s) waiting" in refused[0]
    assert "mqtt.password_file" in refused[0]
    assert [sent for _, _, sent in outbox(config)] == [None]  # kept for a run that gets in


def test_a_broker_that_is_away_does_not_hold_up_a_run(tmp_path, model_dir, clips, run_once,
                                                      capsys):
    from tests.broker import free_port

    port = free_port()  # nobody listens
    config = write_config(tmp_path, model_dir, mqtt_block(port))
    started = time.monotonic()
    assert run_once(config, clips) == 0
    assert (clips / "red.mp4.autotag.json").is_file()
    err = capsys.readouterr().err
    assert "cannot be reached; 1 event(s) waiting" in err and f"127.0.0.1:{port}" in err
    assert time.monotonic() - started < 60
    with Broker(tmp_path / "broker") as broker:
        config.write_text(config.read_text().replace(f"port: {port}", f"port: {broker.port}"))
        with Consumer(broker, "autotag/tagged") as consumer:
            assert run_once(config, clips) == 0  # nothing to tag; the waiting event goes out
            wait_for(lambda: consumer.on("autotag/tagged"), what="the waiting event")
    assert consumer.json("autotag/tagged")[0]["id"] == outbox(config)[0][0]


# -- config ------------------------------------------------------------------------------------

def test_mqtt_config_is_validated_like_every_key(tmp_path):
    base = "vocabulary: [x]\n"
    config = parse_config(base, tmp_path)
    assert config.mqtt.host is None and not config.mqtt.enabled
    assert config.mqtt.discovery_prefix == "homeassistant" and config.mqtt.port == 1883
    for text, key in [("mqtt: {hots: x}", "mqtt.hots"), ("mqtt: {port: 0}", "mqtt.port"),
                      ("mqtt: {port: '1883'}", "mqtt.port"), ("mqtt: {tls: nope.pem}", "mqtt.tls"),
                      ("mqtt: {topic_prefix: 'a/#'}", "mqtt.topic_prefix"),
                      ("mqtt: {password_file: x}", "mqtt.password_file")]:
        with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
            parse_config(base + text, tmp_path)
    ca = tmp_path / "ca.pem"
    ca.write_text("x")
    assert parse_config(base + "mqtt: {tls: ca.pem}", tmp_path).mqtt.tls == ca
    assert parse_config(base + "mqtt: {tls: true}", tmp_path).mqtt.tls is True


def test_an_unreadable_password_file_is_a_startup_error(tmp_path, model_dir, clips, capsys):
    config = write_config(tmp_path, model_dir, mqtt_block(
        1883, f", username: u, password_file: '{tmp_path / 'none'}'"))
    assert cli.main(["--once", "--config", str(config), str(clips)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "mqtt.password_file" in err[0] and "Traceback" not in err[0]
    assert not (clips / "red.mp4.autotag.json").exists()


def test_the_daemon_announces_a_reloaded_vocabulary_and_says_offline_at_its_end(
        tmp_path, model_dir, embedder, broker):
    from tests.helpers import write_daemon_config

    root = tmp_path / "inbox"
    root.mkdir()
    config = write_daemon_config(tmp_path, model_dir, "[red, green]")
    config.write_text(config.read_text() + mqtt_block(broker.port))
    node = node_id(tmp_path / "state.sqlite3")
    green = f"homeassistant/event/{node}/{tag_object_id('green')}/config"
    with Running(config, root, embedder) as run:
        wait_for(lambda: {green, "autotag/status"} <= set(retained_now(broker, "#")),
                 what="the announcement")
        assert retained_now(broker, "autotag/status")["autotag/status"] == b"online"
        config.write_text(config.read_text().replace("[red, green]", "[red]"))
        run.daemon.request_reload()
        wait_for(lambda: green not in retained_now(broker, "homeassistant/#"),
                 what="green's entity removed")
    assert retained_now(broker, "autotag/status")["autotag/status"] == b"offline"
    assert run.code == 0


def test_clips_tagged_today_counts_new_clips_since_local_midnight(tmp_path):
    from autotag.mqtt import _midnight, state
    from autotag.store import Event

    store = Store(tmp_path / "state.sqlite3")
    try:
        now = time.time()
        midnight = _midnight(now)
        for i, (created, why) in enumerate([(midnight - 60, "new"), (midnight + 1, "new"),
                                            (midnight + 2, "retag"), (midnight + 3, "new")]):
            payload = json.dumps({"id": f"{i}", "why": why, "path": f"/c/{i}.mp4",
                                  "name": f"{i}.mp4", "labels": [], "top": None, "tags": [],
                                  "time": "t", "sidecar": None})
            store.record_tagged(tagged(tmp_path / f"{i}.mp4").clip.source.__class__(
                tmp_path / f"{i}.mp4", 1, 1.0, f"{i}" * 64), "m", "v",
                event=Event(f"{i}", "tagged", payload, created))
        found = state(store, {"waiting": 2, "runtime": "openvino", "precision": "bf16"}, now)
    finally:
        store.close()
    assert found["tagged_today"] == 2  # the retag and yesterday's clip are not today's new ones
    assert found["last"]["id"] == "3" and found["events_waiting"] == 4
    assert (found["waiting"], found["runtime"], found["precision"]) == (2, "openvino", "bf16")


def test_autotag_review_and_retag_send_their_events_before_they_exit(tmp_path, model_dir, clips,
                                                                      broker, run_once,
                                                                      embedder):
    config = write_config(tmp_path, model_dir, mqtt_block(broker.port))
    assert run_once(config, clips) == 0
    with Consumer(broker, "autotag/tagged") as consumer:
        assert cli.main(["review", "--config", str(config), "--reject", "red",
                         str(clips / "red.mp4")], embedder=embedder) == 0
        wait_for(lambda: consumer.on("autotag/tagged"), what="the review's event")
        assert all(sent is not None for _, _, sent in outbox(config))  # acknowledged, at exit
        assert cli.main(["retag", "--config", str(config), str(clips)], embedder=embedder) == 0
    (event,) = consumer.json("autotag/tagged")  # the retag changed no tag: nothing more
    assert event["why"] == "review" and "red" not in event["labels"]
    assert len(outbox(config)) == 2
