"""What a module written with the C++ SDK does with bad input from its hub. cairnd validates what
it relays, so it cannot send a malformed desired patch or a non-UTF-8 method payload; here a real
mosquitto broker (TLS, with cairnd's certificates) takes the hub's place and a paho client plays
the hub's side of the IoT Hub topics."""
import json
import os
import queue
import shutil
import signal
import ssl
import subprocess
import time

import paho.mqtt.client as mqtt
import pytest

from conftest import (BIN_DIR, DIE_WITH_TESTS, HOST, DEFAULT_TIMEOUT, free_port, port_accepts,
                      wait_for)

pytestmark = pytest.mark.skipif(shutil.which("mosquitto") is None,
                                reason="mosquitto (the broker) not installed")

EXAMPLE = BIN_DIR / "example-filter-module"
KEY = "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY="


class Broker:
    def __init__(self, home, certs):
        self.port = free_port()
        conf = home / "mosquitto.conf"
        conf.write_text(
            f"listener {self.port} {HOST}\n"
            f"cafile {certs / 'edge-ca.pem'}\n"
            f"certfile {certs / 'server.pem'}\n"
            f"keyfile {certs / 'server.key.pem'}\n"
            "allow_anonymous true\n"
            # Started as root, mosquitto drops to its own user, which cannot read the test's
            # certificates under a private temporary directory: stay root.
            + ("user root\n" if os.geteuid() == 0 else ""))
        self.log = open(home / "mosquitto.log", "wb")
        self.proc = subprocess.Popen([*DIE_WITH_TESTS, "mosquitto", "-c", str(conf)],
                                     stdout=self.log, stderr=subprocess.STDOUT)
        wait_for(lambda: port_accepts(self.port), what="mosquitto to listen")

    def stop(self):
        self.proc.terminate()
        self.proc.wait(10)
        self.log.close()


class HubSide:
    """A paho client that sees what the module publishes on $iothub/... and answers."""

    def __init__(self, broker, ca):
        self.received = queue.Queue()
        self.client = mqtt.Client(client_id="hub-side", protocol=mqtt.MQTTv311)
        self.client.tls_set(ca_certs=str(ca), cert_reqs=ssl.CERT_REQUIRED)
        self.client.tls_insecure_set(True)  # the certificate names localhost; we dial 127.0.0.1
        self.client.on_message = lambda c, u, m: self.received.put((m.topic, m.payload))
        self.subacks = []
        self.client.on_subscribe = lambda c, u, mid, granted: self.subacks.append(mid)
        self.client.connect(HOST, broker.port)
        self.client.loop_start()
        topics = ("$iothub/twin/GET/#", "$iothub/twin/PATCH/properties/reported/#",
                  "$iothub/methods/res/#")
        for topic in topics:
            self.client.subscribe(topic, 1)
        # Subscribed before the module starts: the broker keeps nothing for absent subscribers.
        wait_for(lambda: len(self.subacks) == len(topics), what="the hub side's SUBACKs")

    def expect(self, prefix, timeout=DEFAULT_TIMEOUT):
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError(f"nothing published on {prefix}")
            try:
                topic, payload = self.received.get(timeout=remaining)
            except queue.Empty:
                continue
            if topic.startswith(prefix):
                return topic, payload

    def publish(self, topic, payload):
        self.client.publish(topic, payload, qos=1).wait_for_publish()

    def call(self, name, payload, rid):
        self.publish(f"$iothub/methods/POST/{name}/?$rid={rid}", payload)
        topic, body = self.expect(f"$iothub/methods/res/")
        assert topic.endswith(f"?$rid={rid}"), topic
        status = int(topic.split("/")[3])
        return status, (json.loads(body) if body else None)

    def answer_twin_get(self, desired):
        topic, _ = self.expect("$iothub/twin/GET/")
        rid = topic.split("$rid=")[1]
        self.publish(f"$iothub/twin/res/200/?$rid={rid}",
                     json.dumps({"desired": desired, "reported": {}}))

    def expect_reported(self):
        topic, body = self.expect("$iothub/twin/PATCH/properties/reported/")
        rid = topic.split("$rid=")[1]
        self.publish(f"$iothub/twin/res/204/?$rid={rid}", b"")
        return json.loads(body)

    def close(self):
        self.client.loop_stop()
        self.client.disconnect()


def test_bad_input_from_the_hub_gets_clear_errors_and_the_module_goes_on(cairnd, tmp_path):
    certs = cairnd.home / "certs"
    broker = Broker(tmp_path, certs)
    hub = HubSide(broker, certs / "edge-ca.pem")
    log_path = tmp_path / "filter.log"
    conn = ("HostName=cairn.local;DeviceId=edge1;ModuleId=filter;"
            f"SharedAccessKey={KEY};GatewayHostName=localhost")
    env = dict(os.environ)
    env.setdefault("ASAN_OPTIONS", "detect_leaks=1:abort_on_error=0")
    with open(log_path, "wb") as log:
        proc = subprocess.Popen([*DIE_WITH_TESTS, str(EXAMPLE), "--connection-string", conn,
                                 "--ca-file", str(certs / "edge-ca.pem"),
                                 "--connect-host", HOST, "--port", str(broker.port)],
                                stdout=log, stderr=subprocess.STDOUT, env=env)
    log_text = lambda: log_path.read_text(errors="replace")
    try:
        # The module reads its twin at connection and reports the threshold.
        hub.answer_twin_get({"TemperatureThreshold": 30, "$version": 1})
        assert hub.expect_reported()["TemperatureThreshold"] == 30

        # A desired patch that is not JSON: logged, ignored.
        hub.publish("$iothub/twin/PATCH/properties/desired/?$version=2", b"{not json")
        wait_for(lambda: "malformed desired patch" in log_text(), what="the patch refused")

        # Method payloads: not UTF-8, not JSON, too big, unknown method.
        status, body = hub.call("ping", b"\"\xff\xfe\"", "m1")
        assert status == 400 and "UTF-8" in body["message"]
        status, body = hub.call("ping", b"{bad", "m2")
        assert status == 400 and "not JSON" in body["message"]
        status, body = hub.call("ping", json.dumps({"x": "y" * 200_000}).encode(), "m3")
        assert status == 413 and "limit" in body["message"]
        status, body = hub.call("selfdestruct", b"{}", "m4")
        assert status == 501 and "selfdestruct" in body["message"]

        # Inputs: one without a handler, one whose property bag does not decode.
        hub.publish("devices/edge1/modules/filter/inputs/other/", b"{}")
        hub.publish("devices/edge1/modules/filter/inputs/input1/%zz=1", b"{}")
        wait_for(lambda: "has no handler" in log_text(), what="the unhandled input logged")
        wait_for(lambda: "unexpected topic" in log_text(), what="the bad bag logged")

        # A valid patch after all that applies, and the module still answers.
        hub.publish("$iothub/twin/PATCH/properties/desired/?$version=2",
                    json.dumps({"TemperatureThreshold": 50, "$version": 2}))
        assert hub.expect_reported()["TemperatureThreshold"] == 50
        status, body = hub.call("ping", b"{}", "m5")
        assert status == 200 and body["threshold"] == 50

        # Patches missed (version 2 -> 9): the module reads the whole twin again.
        hub.publish("$iothub/twin/PATCH/properties/desired/?$version=9",
                    json.dumps({"TemperatureThreshold": 60, "$version": 9}))
        hub.answer_twin_get({"TemperatureThreshold": 70, "$version": 9})
        assert hub.expect_reported()["TemperatureThreshold"] == 70
        assert proc.poll() is None
        # One connection all along: nothing above made the client reconnect.
        assert log_text().count("filter: connected") == 1, log_text()
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            proc.wait(30)
        hub.close()
        broker.stop()
    text = log_text()
    for marker in ("ERROR: AddressSanitizer", "runtime error:", "ERROR: LeakSanitizer"):
        assert marker not in text, text[-8000:]
    assert proc.returncode == 0, text[-4000:]
