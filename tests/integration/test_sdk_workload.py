"""The SDK's IoT Edge environment path: cairn-sensor deployed as a process module by cairnd's
agent gets only the IOTEDGE_* variables, signs its SAS token through the workload API on its
own socket and trusts the workload API's trust bundle. A process the agent did not start is
refused by the same socket, and the SDK says why."""
import json
import os
import signal
import subprocess

import pytest

from conftest import BIN_DIR, DIE_WITH_TESTS, HOST, IOTHUB_HOSTNAME, wait_for
from test_agent import SLOW, deploy, edge, manifest, process_module, wait_running  # noqa: F401

SENSOR = BIN_DIR / "cairn-sensor"

ROUTES = {"sensorToReceiver": 'FROM /messages/modules/sensor/outputs/temperatureOutput '
                              'INTO BrokeredEndpoint("/modules/receiver/inputs/readings")'}


def sensor_module(cairnd, *extra):
    return process_module(str(SENSOR), ["--connect-host", HOST, "--port", str(cairnd.tls_port),
                                        "--log-level", "debug", *extra])


def test_sensor_deployed_by_the_agent_connects_through_the_workload_api(edge, module_client):
    receiver = module_client(edge, "receiver")
    receiver.subscribe_inputs()
    deploy(edge, manifest({"sensor": sensor_module(edge, "--interval", "0.05")}, routes=ROUTES,
                          twins={"sensor": {"SpikeProbability": 0, "SpikeMagnitude": 10}}))
    wait_running(edge, ["sensor"])
    got = receiver.expect(3, timeout=SLOW)
    for msg in got:
        body = json.loads(msg.payload)
        assert set(body) == {"machine", "ambient", "timeCreated"}
        assert msg.props["$.cmid"] == "sensor"
    # The deployment's desired properties reached it and were reported back.
    wait_for(lambda: edge.twin_view("sensor")["reported"].get("SpikeMagnitude") == 10,
             timeout=SLOW, interval=0.2, what="the sensor to report its desired properties")
    # It had no key and no CA file: only the environment the agent gives modules.
    assert "edge1/sensor: connected" in edge.cli("logs", "sensor", "--tail", "200").stdout


def test_a_process_the_agent_did_not_start_is_refused_by_the_workload_api(edge, tmp_path):
    deploy(edge, manifest({"sensor": sensor_module(edge, "--interval", "3600")}, routes=ROUTES))
    wait_running(edge, ["sensor"])
    socket_path = edge.home / "run" / "mnt" / "sensor.sock"
    wait_for(socket_path.exists, what="the sensor's workload socket")
    env = {k: v for k, v in os.environ.items() if not k.startswith("IOTEDGE_")}
    env.update({"IOTEDGE_WORKLOADURI": f"unix://{socket_path}", "IOTEDGE_DEVICEID": edge.device_id,
                "IOTEDGE_MODULEID": "sensor", "IOTEDGE_IOTHUBHOSTNAME": IOTHUB_HOSTNAME,
                "IOTEDGE_MODULEGENERATIONID": "x", "IOTEDGE_AUTHSCHEME": "sasToken",
                "IOTEDGE_GATEWAYHOSTNAME": "localhost"})
    log_path = tmp_path / "intruder.log"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen([*DIE_WITH_TESTS, str(SENSOR), "--connect-host", HOST, "--port",
                                 str(edge.tls_port)], stdout=log, stderr=subprocess.STDOUT,
                                env=env)
    try:
        wait_for(lambda: "403" in log_path.read_text(errors="replace"),
                 what="the workload API's refusal in the log")
        text = log_path.read_text(errors="replace")
        assert "cannot get credentials" in text and "reconnecting in" in text
        assert proc.poll() is None  # it keeps trying; it does not crash
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(30)
    assert proc.returncode == 0
