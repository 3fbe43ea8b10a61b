"""The C++ module SDK end to end: cairn-sensor and the example filter module (both written with
include/cairn/module_client.hpp) against a real cairnd over MQTT/TLS, with connection strings
from `cairn identity create`, and paho clients as the other modules."""
import json
import os
import signal
import subprocess
import time

import pytest

from conftest import BIN_DIR, DIE_WITH_TESTS, HOST, DEFAULT_TIMEOUT, wait_for

SENSOR = BIN_DIR / "cairn-sensor"
EXAMPLE = BIN_DIR / "example-filter-module"

ROUTES = {
    "sensorToReceiver":
        'FROM /messages/modules/sensor/outputs/temperatureOutput '
        'INTO BrokeredEndpoint("/modules/receiver/inputs/readings")',
    "sensorToFilter":
        'FROM /messages/modules/sensor/outputs/temperatureOutput '
        'INTO BrokeredEndpoint("/modules/filter/inputs/input1")',
    "filterToReceiver":
        'FROM /messages/modules/filter/outputs/* '
        'INTO BrokeredEndpoint("/modules/receiver/inputs/alerts")',
}


class Module:
    """A module program (cairn-sensor, the example) started with a connection string."""

    def __init__(self, cairnd, program, module, extra=()):
        self.cairnd = cairnd
        self.module = module
        self.log_path = cairnd.home / f"{module}.{int(time.monotonic() * 1000)}.log"
        conn = cairnd.cli("identity", "create", module).stdout.strip()
        self.connection_string = conn
        cmd = [str(program), "--connection-string", conn, "--ca-file", str(cairnd.ca_path),
               "--connect-host", HOST, "--port", str(cairnd.tls_port)]
        if program == SENSOR:
            cmd += ["--log-level", "debug"]
        cmd += list(extra)
        env = dict(os.environ)
        env.setdefault("ASAN_OPTIONS", "detect_leaks=1:abort_on_error=0")
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen([*DIE_WITH_TESTS, *cmd], stdout=log,
                                         stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                         env=env)

    def log_text(self):
        return self.log_path.read_text(errors="replace")

    def wait_log(self, text, timeout=DEFAULT_TIMEOUT, count=1):
        wait_for(lambda: self.log_text().count(text) >= count or self.proc.poll() is not None,
                 timeout, what=f"{self.module} to log {text!r}")
        assert self.log_text().count(text) >= count, \
            f"{self.module} exited with {self.proc.poll()}:\n{self.log_text()[-4000:]}"

    def stop(self, expect_rc=0):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
                raise AssertionError(f"{self.module} did not stop on SIGTERM:\n"
                                     f"{self.log_text()[-4000:]}")
        text = self.log_text()
        for marker in ("ERROR: AddressSanitizer", "runtime error:", "ERROR: LeakSanitizer"):
            assert marker not in text, f"sanitizer report in {self.module}:\n{text[-8000:]}"
        assert self.proc.returncode == expect_rc, f"{self.module} rc {self.proc.returncode}"


@pytest.fixture
def modules():
    started = []

    def start(cairnd, program, module, *extra):
        m = Module(cairnd, program, module, extra)
        started.append(m)
        return m

    yield start
    errors = []
    for m in started:
        try:
            m.stop()
        except AssertionError as e:
            errors.append(str(e))
    if errors:
        pytest.fail("\n".join(errors))


def reported(cairnd, module):
    """The module's reported properties as cairnd holds them ({} before it has a twin)."""
    return cairnd.twin_view(module)["reported"]


def method(cairnd, module, name, payload="null", *extra, timeout=60):
    r = cairnd.cli("method", module, name, payload, *extra, check=False, timeout=timeout)
    reply = json.loads(r.stdout) if r.stdout.strip() else None
    return r, reply


def readings(receiver, n, timeout=DEFAULT_TIMEOUT):
    out = []
    for msg in receiver.expect(n, timeout=timeout):
        out.append((msg, json.loads(msg.payload)))
    return out


# --------------------------------------------------------------------------------------------

def test_programs_have_help_and_version():
    for program in (SENSOR,):
        r = subprocess.run([str(program), "--help"], capture_output=True, text=True, timeout=30)
        assert r.returncode == 0 and "--connection-string" in r.stdout
        r = subprocess.run([str(program), "--version"], capture_output=True, text=True, timeout=30)
        assert r.returncode == 0 and "cairn-sensor" in r.stdout
        r = subprocess.run([str(program), "--no-such-flag"], capture_output=True, text=True,
                           timeout=30)
        assert r.returncode == 2
    r = subprocess.run([str(EXAMPLE), "--help"], capture_output=True, text=True, timeout=30)
    assert r.returncode == 0 and "--connection-string" in r.stdout


def test_sensor_without_identity_is_a_usage_error():
    env = {k: v for k, v in os.environ.items() if not k.startswith("IOTEDGE_")
           and k != "EdgeHubConnectionString"}
    r = subprocess.run([str(SENSOR)], capture_output=True, text=True, timeout=30, env=env)
    assert r.returncode == 2
    assert "IOTEDGE_WORKLOADURI" in r.stderr and "EdgeHubConnectionString" in r.stderr
    r = subprocess.run([str(SENSOR), "--connection-string", "HostName=h;DeviceId=d"],
                       capture_output=True, text=True, timeout=30, env=env)
    assert r.returncode == 2 and "ModuleId" in r.stderr and "SharedAccessKey" in r.stderr


def test_sensor_readings_reach_another_module_through_a_route(cairnd_factory, module_client,
                                                               modules):
    cairnd = cairnd_factory(routes=ROUTES)
    receiver = module_client(cairnd, "receiver")
    receiver.subscribe_inputs()
    sensor = modules(cairnd, SENSOR, "sensor", "--interval", "0.05")
    got = readings(receiver, 5)
    for msg, body in got:
        assert msg.input == "readings"
        assert set(body) == {"machine", "ambient", "timeCreated"}
        assert set(body["machine"]) == {"temperature", "pressure"}
        assert set(body["ambient"]) == {"temperature", "humidity"}
        assert all(isinstance(v, (int, float)) for part in ("machine", "ambient")
                   for v in body[part].values())
        assert body["timeCreated"].endswith("Z")
        # System properties travel as the SDK set them; the hub adds the sender.
        assert msg.props["$.ct"] == "application/json"
        assert msg.props["$.ce"] == "utf-8"
        assert msg.props["$.cdid"] == cairnd.device_id
        assert msg.props["$.cmid"] == "sensor"
        assert msg.props["anomaly"] == "false"
        assert msg.props["$.mid"]
    assert len({m.props["$.mid"] for m, _ in got}) == len(got)
    # The machine warms up: temperatures never go down without a reset.
    temps = [b["machine"]["temperature"] for _, b in got]
    assert temps == sorted(temps)
    sensor.wait_log(": connected")


def test_twin_desired_changes_rate_and_spikes_and_is_reported(cairnd_factory, module_client,
                                                              modules):
    cairnd = cairnd_factory(routes=ROUTES)
    receiver = module_client(cairnd, "receiver")
    receiver.subscribe_inputs()
    # One message every hour: after the first, nothing more comes until the twin says so.
    sensor = modules(cairnd, SENSOR, "sensor", "--interval", "3600")
    readings(receiver, 1)
    wait_for(lambda: reported(cairnd, "sensor").get("SendInterval") == 3600,
             what="the initial settings reported")
    cairnd.cli("twin", "update-desired", "sensor",
               '{"SendInterval": 0.02, "SpikeProbability": 1, "SpikeMagnitude": 500}')
    # 20 more readings could only come at the new rate (at the old one they take 20 hours).
    got = readings(receiver, 20, timeout=30)
    assert all(m.props["anomaly"] == "true" for m, _ in got[1:])
    assert all(b["machine"]["temperature"] > 500 for _, b in got[1:])
    rep = wait_for(lambda: (lambda r: r if r.get("SendInterval") == 0.02 else None)(
        reported(cairnd, "sensor")), what="the new interval reported")
    assert rep["SpikeProbability"] == 1 and rep["SpikeMagnitude"] == 500
    assert rep["lastDesiredStatus"]["code"] == 200
    # MessageCount: the sensor stops sending after that many messages (counted since start).
    cairnd.cli("twin", "update-desired", "sensor", '{"MessageCount": 1, "SpikeProbability": 0}')
    sensor.wait_log("messages; waiting")
    wait_for(lambda: reported(cairnd, "sensor").get("MessageCount") == 1,
             what="MessageCount reported")


def test_bad_desired_values_are_refused_and_reported(cairnd_factory, module_client, modules):
    cairnd = cairnd_factory(routes=ROUTES)
    receiver = module_client(cairnd, "receiver")
    receiver.subscribe_inputs()
    sensor = modules(cairnd, SENSOR, "sensor", "--interval", "3600")
    readings(receiver, 1)
    cairnd.cli("twin", "update-desired", "sensor",
               '{"SendInterval": "fast", "MessageCount": -3, "SpikeProbability": 7}')
    rep = wait_for(lambda: (lambda r: r if r.get("lastDesiredStatus", {}).get("code") == 400
                            else None)(reported(cairnd, "sensor")),
                   what="the refusal reported")
    text = rep["lastDesiredStatus"]["description"]
    assert "SendInterval" in text and "MessageCount" in text and "SpikeProbability" in text
    assert rep["SendInterval"] == 3600 and rep["MessageCount"] == 0
    # Still working: a valid change afterwards applies.
    cairnd.cli("twin", "update-desired", "sensor", '{"SendInterval": 0.05}')
    readings(receiver, 3, timeout=30)
    assert sensor.proc.poll() is None


def test_reset_method_restarts_the_simulation(cairnd_factory, module_client, modules):
    cairnd = cairnd_factory(routes=ROUTES)
    receiver = module_client(cairnd, "receiver")
    receiver.subscribe_inputs()
    modules(cairnd, SENSOR, "sensor", "--interval", "0.05")
    readings(receiver, 3)
    r, reply = method(cairnd, "sensor", "reset", "{}")
    assert r.returncode == 0, r.stderr
    assert reply["status"] == 200
    assert reply["payload"] == {"reset": True, "messagesSent": 0}
    r, reply = method(cairnd, "sensor", "calibrate", "{}")
    assert r.returncode == 1
    assert reply["status"] == 501 and "calibrate" in reply["payload"]["message"]


def test_example_filter_module_forwards_alerts_and_answers_methods(cairnd_factory, module_client,
                                                                  modules):
    cairnd = cairnd_factory(routes=ROUTES)
    receiver = module_client(cairnd, "receiver")
    receiver.subscribe_inputs()
    filt = modules(cairnd, EXAMPLE, "filter")
    filt.wait_log(": connected")
    # Threshold from the twin, reported back.
    cairnd.cli("twin", "update-desired", "filter", '{"TemperatureThreshold": 40}')
    wait_for(lambda: reported(cairnd, "filter").get("TemperatureThreshold") == 40,
             what="threshold reported")
    sender = module_client(cairnd, "sensor")
    for t in (30, 45):
        sender.publish_acked(json.dumps({"machine": {"temperature": t, "pressure": 1},
                                         "ambient": {"temperature": 20, "humidity": 25}}),
                             output="temperatureOutput", props={"$.mid": f"m{t}"})
    # Both readings reach the receiver's "readings" input straight from the route; only the
    # hot one comes through the filter to "alerts".
    got = receiver.expect(3)
    assert sorted(m.input for m in got) == ["alerts", "readings", "readings"]
    alerts = [m for m in got if m.input == "alerts"]
    assert json.loads(alerts[0].payload)["machine"]["temperature"] == 45
    assert alerts[0].props["MessageType"] == "Alert"
    assert alerts[0].props["$.cid"] == "m45"
    assert alerts[0].props["$.cmid"] == "filter"
    r, reply = method(cairnd, "filter", "ping")
    assert r.returncode == 0, r.stderr
    assert reply["payload"] == {"received": 2, "forwarded": 1, "threshold": 40}


def test_oversized_message_is_refused_and_the_module_keeps_going(cairnd_factory, module_client,
                                                                 modules):
    cairnd = cairnd_factory(routes=ROUTES)
    receiver = module_client(cairnd, "receiver")
    receiver.subscribe_inputs()
    filt = modules(cairnd, EXAMPLE, "filter")
    filt.wait_log(": connected")
    r, reply = method(cairnd, "filter", "emit", '{"output": "big", "bytes": 300000}')
    assert reply["status"] == 413, reply
    assert "limit" in reply["payload"]["message"]
    r, reply = method(cairnd, "filter", "emit", '{"output": "bad/name", "bytes": 10}')
    assert reply["status"] == 503 and "bad/name" in reply["payload"]["message"]
    # The connection was never touched: a normal message goes through.
    r, reply = method(cairnd, "filter", "emit", '{"output": "small", "bytes": 1000}')
    assert reply == {"status": 200, "payload": {"sent": True}}
    msg = receiver.expect(1)[0]
    assert msg.input == "alerts" and msg.payload == b"x" * 1000
    assert "connection lost" not in filt.log_text()


def test_sensor_reconnects_after_cairnd_is_killed(cairnd_factory, module_client, modules):
    cairnd = cairnd_factory(routes=ROUTES)
    receiver = module_client(cairnd, "receiver")
    receiver.subscribe_inputs()
    sensor = modules(cairnd, SENSOR, "sensor", "--interval", "0.1")
    readings(receiver, 2)
    receiver.close()
    cairnd.kill9()
    sensor.wait_log("connection lost")
    sensor.wait_log("reconnecting in")
    cairnd.start()
    sensor.wait_log("/sensor: connected", count=2, timeout=60)
    # Readings sent after the restart reach a receiver that connects now.
    receiver2 = module_client(cairnd, "receiver")
    receiver2.subscribe_inputs()
    readings(receiver2, 3, timeout=30)
    assert sensor.proc.poll() is None
    # Its twin still works on the new connection (the settings are reported again).
    cairnd.cli("twin", "update-desired", "sensor", '{"SendInterval": 0.2}')
    wait_for(lambda: reported(cairnd, "sensor").get("SendInterval") == 0.2,
             what="interval reported after reconnection")
