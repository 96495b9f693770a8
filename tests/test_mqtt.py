"""edge-classify --mqtt against a real broker: Debian's mosquitto, started here on a free 127.0.0.1 port.

Read back with paho (a subscriber that keeps every message) and with mosquitto_sub (the retained ones).
The camera is scripts/soak_edge.py's stand-in MJPEG server; edge-classify runs as a subprocess, so
that the broker sees it die, stop, and lose its connection.
"""

from __future__ import annotations

import io
import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from conftest import COLORS, REPO, TEST_TIMEOUT_S
from test_edge import invoke, json_lines, write_video
from test_service import solid_jpeg, soak

from edge.classify import Summary
from edge.health import Health
from edge.mqtt import EVENT_QUEUE_MAX, SNAPSHOT_MAX_BYTES, MqttOptions, MqttPublisher, snapshot_jpeg
from edge.results import Result

mqtt = pytest.importorskip("paho.mqtt.client")
if not (Path(soak.MOSQUITTO).is_file() and shutil.which("mosquitto_sub")):
    pytest.skip("Debian's mosquitto and mosquitto-clients are not installed (.ci/run installs them)",
                allow_module_level=True)

TOPIC = "test/garage"
NODE_ID = "test_garage"
PREFIX = "homeassistant"
LABELS = [*COLORS, "unknown"]
WAIT_S = 20.0  # for any one message


@pytest.fixture
def broker(tmp_path):
    broker = soak.Mosquitto(tmp_path)
    yield broker
    broker.stop()


class Subscriber:
    """A paho client keeping every (topic, payload, retained) it receives on `topics`, in order."""

    def __init__(self, port: int, topics=(f"{TOPIC}/#", f"{PREFIX}/#")):
        self.messages: list[tuple[str, bytes, bool]] = []
        self.changed = threading.Condition()
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2)
        subscribed = threading.Event()
        self.client.on_connect = lambda client, *_: client.subscribe([(topic, 1) for topic in topics])
        self.client.on_subscribe = lambda *_: subscribed.set()
        self.client.on_message = self._on_message
        self.client.connect("127.0.0.1", port)
        self.client.loop_start()
        assert subscribed.wait(WAIT_S), "the test's subscriber could not subscribe"

    def _on_message(self, client, userdata, message) -> None:
        with self.changed:
            self.messages.append((message.topic, message.payload, message.retain))
            self.changed.notify_all()

    def on(self, name: str) -> list[bytes]:
        """Payloads received on TOPIC/name, in order."""
        with self.changed:
            return [payload for topic, payload, _ in self.messages if topic == f"{TOPIC}/{name}"]

    def wait_for(self, condition, what: str, timeout: float = WAIT_S) -> None:
        with self.changed:
            if not self.changed.wait_for(condition, timeout):
                raise AssertionError(f"no {what} within {timeout} s; received {[m[:2] for m in self.messages][-20:]}")

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def retained(port: int, topic: str, *login: str) -> dict[str, bytes]:
    """The retained messages under `topic` (a filter), as mosquitto_sub reads them; login: -u USER -P PASSWORD."""
    completed = subprocess.run(["mosquitto_sub", "-h", "127.0.0.1", "-p", str(port), "-t", topic, "--retained-only",
                                "-W", "2", "-F", "%t %p", *login], capture_output=True, timeout=WAIT_S)
    return dict(line.split(b" ", 1) for line in completed.stdout.splitlines() if b" " in line)


class EdgeRun:
    """`edge-classify --camera URL --json --mqtt ...` in a subprocess; its results counted on a thread."""

    def __init__(self, model: Path, camera_url: str, broker: soak.Mosquitto, *args: str, setup: str = ""):
        code = f"{setup}\nfrom edge.cli import main; main()"
        self.process = subprocess.Popen(
            [sys.executable, "-c", code, "--model", str(model), "--camera", camera_url, "--json",
             "--mqtt", broker.url, "--mqtt_topic", TOPIC, *args],
            cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        self.results = 0
        self.watchdog = threading.Timer(TEST_TIMEOUT_S, self.process.kill)
        self.watchdog.start()
        threading.Thread(target=self._count, daemon=True).start()

    def _count(self) -> None:
        for _ in self.process.stdout:
            self.results += 1

    def stop(self, signal_number: int) -> tuple[int, str]:
        """Send the signal; the exit code and stderr."""
        self.process.send_signal(signal_number)
        try:
            stderr = self.process.stderr.read()
            return self.process.wait(timeout=WAIT_S), stderr
        finally:
            self.watchdog.cancel()
            self.process.kill()


@pytest.fixture
def camera():
    camera = soak.StandInCamera([solid_jpeg("red")], fps=50)
    yield camera
    camera.close()


def test_discovery_and_a_state_that_changes_only_after_the_debounce(broker, color_models, tmp_path):
    subscriber = Subscriber(broker.port)
    # Debounce 3: red is the state from frame 2; two blue frames are not enough; green is, from frame 15.
    clip = write_video(tmp_path / "clip.avi", ["red"] * 5 + ["blue"] * 2 + ["red"] * 6 + ["green"] * 5)
    result = invoke("--model", color_models["float"], "--camera", clip, "--json", "--mqtt", broker.url,
                    "--mqtt_topic", TOPIC, "--debounce", "3", "--heartbeat", "600")
    assert result.exit_code == 0, result.output
    assert [line["label"] for line in json_lines(result.stdout)][5:7] == ["blue", "blue"]
    subscriber.wait_for(lambda: subscriber.on("availability")[-1:] == [b"stopped"], "`stopped`")
    subscriber.close()

    states = [json.loads(payload) for payload in subscriber.on("state")]
    # A state carries the freshest result of its label: the change's, or a later one if the publisher came later.
    assert [state["label"] for state in states] == ["red", "green"] and states[1]["frame"] >= 15
    state = states[-1]
    assert state["schema"] == 1 and state["model"] == "float.tflite" and state["score"] == state["top_k"][0]["score"]
    assert set(json_lines(result.stdout)[0]) <= set(state), "the payload carries --json's fields"
    events = [json.loads(payload) for payload in subscriber.on("event")]
    assert [(event["event_type"], event["previous"], event["frame"]) for event in events] == [("green", "red", 15)]
    assert subscriber.on("availability") == [b"online", b"stopped"]

    kept = retained(broker.port, "#")
    assert json.loads(kept[f"{TOPIC}/state".encode()])["label"] == "green"
    assert kept[f"{TOPIC}/availability".encode()] == b"stopped"
    configs = {topic.decode(): json.loads(payload) for topic, payload in kept.items()
               if topic.startswith(PREFIX.encode())}
    # Without --mqtt_snapshot no image entity: its config is an empty retained message, which removes it.
    assert set(configs) == {f"{PREFIX}/sensor/{NODE_ID}/label/config", f"{PREFIX}/sensor/{NODE_ID}/score/config",
                            f"{PREFIX}/event/{NODE_ID}/change/config"}
    check_discovery(configs)


def check_discovery(configs: dict[str, dict]) -> None:
    """The fields Home Assistant requires of each component, one device, its availability."""
    for topic, config in configs.items():
        component = topic.split("/")[1]
        assert config["unique_id"] and config["unique_id"].startswith(NODE_ID)
        assert config["device"]["identifiers"] == [NODE_ID]
        assert config["availability_topic"] == f"{TOPIC}/availability"
        # `stopped` and `offline` both make the entities unavailable; `online` available.
        assert "'online' if value == 'online' else 'offline'" in config["availability_template"]
        required = {"sensor": {"state_topic"}, "event": {"state_topic", "event_types"},
                    "image": {"image_topic", "content_type"}}[component]
        assert required <= set(config), (topic, config)
    label = configs[f"{PREFIX}/sensor/{NODE_ID}/label/config"]
    assert label["device_class"] == "enum" and label["options"] == LABELS
    assert label["state_topic"] == f"{TOPIC}/state" and label["value_template"] == "{{ value_json.label }}"
    assert configs[f"{PREFIX}/sensor/{NODE_ID}/score/config"]["value_template"] == "{{ value_json.score }}"
    event = configs[f"{PREFIX}/event/{NODE_ID}/change/config"]
    assert event["state_topic"] == f"{TOPIC}/event" and event["event_types"] == LABELS


@pytest.mark.parametrize("signal_number, exit_code, availability", [(signal.SIGTERM, 0, b"stopped"),
                                                                    (signal.SIGKILL, -signal.SIGKILL, b"offline")])
def test_sigterm_says_stopped_and_sigkill_leaves_the_will_offline(
        broker, camera, color_models, signal_number, exit_code, availability):
    subscriber = Subscriber(broker.port)
    run = EdgeRun(color_models["float"], camera.url, broker, "--debounce", "2", "--heartbeat", "0.5",
                  "--mqtt_snapshot")
    subscriber.wait_for(lambda: len(subscriber.on("state")) >= 3, "three states (the heartbeat)")
    assert {json.loads(payload)["label"] for payload in subscriber.on("state")} == {"red"}
    snapshot = subscriber.on("snapshot")[-1]
    assert snapshot.startswith(b"\xff\xd8") and len(snapshot) <= SNAPSHOT_MAX_BYTES
    configs = {topic: payload for topic, payload, _ in subscriber.messages if topic.startswith(PREFIX)}
    check_discovery({topic: json.loads(payload) for topic, payload in configs.items()})
    assert json.loads(configs[f"{PREFIX}/image/{NODE_ID}/snapshot/config"])["image_topic"] == f"{TOPIC}/snapshot"

    # Home Assistant restarted: its broker lost the configs; its birth message has them published again.
    label_config = f"{PREFIX}/sensor/{NODE_ID}/label/config"
    subscriber.client.publish(label_config, b"", qos=1, retain=True).wait_for_publish(WAIT_S)
    subscriber.client.publish(f"{PREFIX}/status", b"online", qos=1).wait_for_publish(WAIT_S)
    subscriber.wait_for(lambda: [p for t, p, _ in subscriber.messages if t == label_config][-1] != b"",
                        "discovery after homeassistant/status online")

    returncode, stderr = run.stop(signal_number)
    assert returncode == exit_code, stderr
    subscriber.wait_for(lambda: subscriber.on("availability")[-1:] == [availability], availability.decode())
    subscriber.close()
    assert retained(broker.port, f"{TOPIC}/availability") == {f"{TOPIC}/availability".encode(): availability}
    assert "Traceback" not in stderr


def test_broker_away_for_5_s_the_run_goes_on_and_catches_up(broker, camera, color_models):
    queue_max = 20  # the run's event queue, made small so that 5 s of changes overflow it
    subscriber = Subscriber(broker.port)
    run = EdgeRun(color_models["float"], camera.url, broker, "--debounce", "1",
                  setup=f"import edge.mqtt; edge.mqtt.EVENT_QUEUE_MAX = {queue_max}")
    subscriber.wait_for(lambda: subscriber.on("state"), "a state")
    subscriber.close()

    # While the broker is away the scene flips between red and blue: more events than the queue holds.
    camera.seconds_per_jpeg = 0.05
    camera.show([solid_jpeg("red"), solid_jpeg("blue")])
    broker.stop()
    results_before = run.results
    time.sleep(5)
    camera.show([solid_jpeg("green")])
    time.sleep(0.5)  # green is the state before the broker is back
    results_during = run.results - results_before
    broker.start()
    subscriber = Subscriber(broker.port)  # before edge-classify's reconnection: its back-off waits >= 1 s
    subscriber.wait_for(lambda: any(json.loads(p)["label"] == "green" for p in subscriber.on("state")),
                        "the state republished after the reconnection")
    subscriber.wait_for(lambda: len({t for t, _, _ in subscriber.messages if t.startswith(PREFIX)}) == 4,
                        "discovery republished after the reconnection")
    time.sleep(1)  # for the queued events, sent right after the state
    events = [json.loads(payload) for payload in subscriber.on("event")]
    returncode, stderr = run.stop(signal.SIGTERM)
    subscriber.close()

    assert returncode == 0, stderr
    assert results_during > 50, "the classify loop stalled while the broker was away"
    assert b"online" in subscriber.on("availability")
    # The queue kept the newest queue_max events of the outage, then the change to green came.
    assert queue_max <= len(events) <= queue_max + 2, [event["event_type"] for event in events]
    assert events[-1]["event_type"] == "green"
    # paho resends one it had in flight when the broker went, possibly after newer ones: frames tell the order.
    assert len({event["frame"] for event in events}) == len(events)
    summary = stderr.strip().splitlines()[-1]
    dropped = int(summary.split(" events dropped")[0].rsplit(" ", 1)[-1])
    assert "MQTT broker away 1 time, " in summary and dropped > 0, summary
    assert f"warning: MQTT broker 127.0.0.1:{broker.port} lost" in stderr
    assert f"warning: MQTT broker 127.0.0.1:{broker.port} is back after" in stderr


def test_while_the_broker_is_away_the_newest_events_wait_and_the_oldest_are_dropped_and_counted(broker):
    summary, health = Summary(), Health()
    publisher = MqttPublisher(MqttOptions(broker.url, TOPIC, debounce=1, snapshot=True), list(COLORS), "m.tflite",
                              summary, health)
    frame = np.zeros((48, 64, 3), np.uint8)
    region = (8, 4, 20, 10)  # x, y, width, height: the --crop region, which the snapshot shows
    try:
        assert health.mqtt == "connected"
        broker.stop()
        deadline = time.monotonic() + WAIT_S
        while publisher.connected and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not publisher.connected and health.mqtt == "disconnected"
        changes = 3 * EVENT_QUEUE_MAX
        for index in range(changes + 1):  # the first result is the state; each one after it a change
            label = COLORS[index % 2]
            publisher.add(frame, Result("camera", index, time.time(), label, [(label, 1.0)], 1.0, 1.0, region=region))
        assert publisher.events_dropped == changes - EVENT_QUEUE_MAX
        broker.start()
        subscriber = Subscriber(broker.port)  # before the publisher's reconnection: its back-off waits >= 1 s
        subscriber.wait_for(lambda: len(subscriber.on("event")) >= EVENT_QUEUE_MAX, "the queued events")
        subscriber.wait_for(lambda: subscriber.on("state") and subscriber.on("snapshot"), "the state and snapshot")
        subscriber.close()
        assert health.mqtt == "connected"
    finally:
        publisher.close()
    assert Image.open(io.BytesIO(subscriber.on("snapshot")[-1])).size == region[2:]
    events = [json.loads(payload) for payload in subscriber.on("event")]
    # The newest EVENT_QUEUE_MAX changes, in order; the state is the last result.
    assert [event["frame"] for event in events] == list(range(changes + 1 - EVENT_QUEUE_MAX, changes + 1))
    assert all(event["previous"] != event["event_type"] for event in events)
    assert json.loads(subscriber.on("state")[-1])["frame"] == changes
    assert (summary.broker_outages, summary.events_dropped) == (1, changes - EVENT_QUEUE_MAX)


def test_password_from_a_file_or_the_environment_never_argv(color_models, tmp_path):
    password_file = tmp_path / "passwords"
    subprocess.run(["mosquitto_passwd", "-c", "-b", str(password_file), "edge", "s3cret"], check=True, timeout=WAIT_S)
    os.chmod(password_file, 0o600)
    broker = soak.Mosquitto(tmp_path, f"allow_anonymous false\npassword_file {password_file}")
    clip = write_video(tmp_path / "clip.avi", ["blue"] * 4)
    secret = tmp_path / "secret"
    secret.write_text("s3cret\n")
    url = f"mqtt://edge@127.0.0.1:{broker.port}"
    try:
        result = invoke("--model", color_models["float"], "--camera", clip, "--mqtt", url, "--mqtt_topic", TOPIC,
                        "--mqtt_password_file", secret)
        assert result.exit_code == 0, result.output
        state = retained(broker.port, f"{TOPIC}/state", "-u", "edge", "-P", "s3cret")[f"{TOPIC}/state".encode()]
        assert json.loads(state)["label"] == "blue"
        refused = f"error: the MQTT broker 127.0.0.1:{broker.port} refused the connection: Not authorized\n"
        for password in (None, "wrong"):
            if password:
                os.environ["EDGE_CLASSIFY_MQTT_PASSWORD"] = password
            result = invoke("--model", color_models["float"], "--camera", clip, "--mqtt", url)
            assert result.exit_code == 2 and result.stderr == refused, result.output
        os.environ["EDGE_CLASSIFY_MQTT_PASSWORD"] = "s3cret"
        result = invoke("--model", color_models["float"], "--camera", clip, "--mqtt", url, "--mqtt_topic", TOPIC)
        assert result.exit_code == 0, result.output
        secret.write_bytes(b"\xffs3cret\n")
        result = invoke("--model", color_models["float"], "--camera", clip, "--mqtt", url, "--mqtt_password_file", secret)
        assert result.exit_code == 2 and result.stderr == f"error: --mqtt_password_file {secret} is not UTF-8 text\n", \
            result.output
    finally:
        os.environ.pop("EDGE_CLASSIFY_MQTT_PASSWORD", None)
        broker.stop()


def make_certificates(folder: Path) -> None:
    """ca.pem, the broker's server.pem/server.key for 127.0.0.1, and client.pem/client.key, signed by the CA."""
    def openssl(*args: str) -> None:
        subprocess.run(["openssl", *args], cwd=folder, check=True, capture_output=True, timeout=WAIT_S)

    openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=test CA",
            "-keyout", "ca.key", "-out", "ca.pem")
    for name, extension in (("server", "subjectAltName=IP:127.0.0.1"), ("client", "extendedKeyUsage=clientAuth")):
        openssl("req", "-newkey", "rsa:2048", "-nodes", "-subj", f"/CN={name}", "-keyout", f"{name}.key",
                "-out", f"{name}.csr")
        (folder / f"{name}.ext").write_text(extension + "\n")
        openssl("x509", "-req", "-in", f"{name}.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial",
                "-days", "2", "-extfile", f"{name}.ext", "-out", f"{name}.pem")


def test_tls_with_a_ca_file_and_a_client_certificate(color_models, tmp_path):
    if not shutil.which("openssl"):
        pytest.skip("openssl is not installed")
    make_certificates(tmp_path)
    broker = soak.Mosquitto(tmp_path, f"allow_anonymous true\ncafile {tmp_path / 'ca.pem'}\n"
                                      f"certfile {tmp_path / 'server.pem'}\nkeyfile {tmp_path / 'server.key'}\n"
                                      "require_certificate true")
    clip = write_video(tmp_path / "clip.avi", ["green"] * 4)
    url = f"mqtts://127.0.0.1:{broker.port}"
    client = ["--mqtt_cert", tmp_path / "client.pem", "--mqtt_key", tmp_path / "client.key"]
    try:
        result = invoke("--model", color_models["float"], "--camera", clip, "--mqtt", url, "--mqtt_topic", TOPIC,
                        "--mqtt_ca", tmp_path / "ca.pem", *client)
        assert result.exit_code == 0, result.output
        state = retained(broker.port, f"{TOPIC}/state", "--cafile", str(tmp_path / "ca.pem"),
                         "--cert", str(tmp_path / "client.pem"), "--key", str(tmp_path / "client.key"))
        assert json.loads(state[f"{TOPIC}/state".encode()])["label"] == "green"
        # The system's authorities do not know this CA; without a client certificate the broker hangs up.
        for args, expected in (
                (client, f"cannot connect to the MQTT broker 127.0.0.1:{broker.port}: "
                         "[SSL: CERTIFICATE_VERIFY_FAILED]"),
                (["--mqtt_ca", tmp_path / "ca.pem"],
                 f"the MQTT broker 127.0.0.1:{broker.port} closed the connection before accepting it"),
                (["--mqtt_ca", tmp_path / "ca.key"], "cannot use --mqtt_ca/--mqtt_cert/--mqtt_key: "),
                (["--mqtt_cert", tmp_path / "client.pem", "--mqtt_key", tmp_path / "server.key"],
                 "cannot use --mqtt_ca/--mqtt_cert/--mqtt_key: ")):
            result = invoke("--model", color_models["float"], "--camera", clip, "--mqtt", url, *args)
            assert result.exit_code == 2, result.output
            assert result.stderr.startswith(f"error: {expected}") and result.stderr.count("\n") == 1, result.stderr
    finally:
        broker.stop()


@pytest.mark.parametrize("url, expected", [
    ("http://127.0.0.1", "--mqtt takes mqtt[s]://[user@]host[:port], not 'http://127.0.0.1'"),
    ("mqtt://127.0.0.1:99999", "--mqtt takes mqtt[s]://[user@]host[:port]"),
    ("mqtt://edge:s3cret@127.0.0.1", "--mqtt must not carry a password"),
    ("", "--mqtt takes mqtt[s]://[user@]host[:port], not ''"),
    ("mqtt://no-such-host.invalid", "cannot connect to the MQTT broker no-such-host.invalid:1883: "),
    ("mqtt://127.0.0.1:{closed}", "cannot connect to the MQTT broker 127.0.0.1:{closed}: Connection refused"),
])
def test_bad_broker_is_one_error_line(url, expected, color_models, tmp_path):
    closed = soak.free_port()
    clip = write_video(tmp_path / "clip.avi", ["red"] * 2)
    result = invoke("--model", color_models["float"], "--camera", clip, "--mqtt", url.format(closed=closed))
    assert result.exit_code == 2, result.output
    assert result.stderr.startswith(f"error: {expected.format(closed=closed)}"), result.stderr
    assert result.stderr.count("\n") == 1 and result.stdout == ""


def test_mqtt_without_paho_is_one_sentence(color_models, tmp_path):
    code = "import sys; sys.modules['paho'] = None\nfrom edge.cli import main; main()"
    completed = subprocess.run([sys.executable, "-c", code, "--model", str(color_models["float"]), "--camera", "0",
                                "--mqtt", "mqtt://127.0.0.1"], capture_output=True, text=True, timeout=WAIT_S)
    assert completed.returncode == 2
    assert completed.stderr == "error: --mqtt needs paho-mqtt: pip install 'retrain-edge[mqtt]'\n"


def test_the_garage_example_of_the_unit_and_the_docs_runs(broker, color_models, tmp_path):
    unit = (REPO / "scripts" / "edge-classify.service").read_text()
    options = re.search(r'^#   Environment="EDGE_CLASSIFY_OPTIONS=(.*)"$', unit, re.MULTILINE).group(1)
    assert f'Environment="EDGE_CLASSIFY_OPTIONS={options}"' in (REPO / "docs" / "home-assistant.md").read_text()
    if "--crop" not in invoke("--help").stdout:
        pytest.skip("--crop, --motion and --interval are not in this build (issue 19, items 1 and 2)")
    args = shlex.split(options)
    assert {"--crop", "--motion", "--interval", "--emit", "--mqtt"} <= set(args)
    args[args.index("--mqtt") + 1] = broker.url  # the example's broker and port, as in test_service.py
    args[args.index("--serve") + 1] = "127.0.0.1:0"
    topic = args[args.index("--mqtt_topic") + 1]
    clip = write_video(tmp_path / "clip.avi", ["red"] * 10 + ["blue"] * 10)
    result = invoke("--model", color_models["float"], "--camera", clip, *args)
    assert result.exit_code == 0, result.output
    kept = retained(broker.port, "#")
    assert kept[f"{topic}/availability".encode()] == b"stopped"
    assert f"{PREFIX}/sensor/{topic.replace('/', '_')}/label/config".encode() in kept


def test_snapshot_stays_under_its_limit_for_a_noisy_frame():
    noise = np.random.default_rng(0).integers(0, 256, (720, 1280, 3), np.uint8)  # JPEG's worst case
    jpeg = snapshot_jpeg(noise)
    assert jpeg.startswith(b"\xff\xd8") and len(jpeg) <= SNAPSHOT_MAX_BYTES
