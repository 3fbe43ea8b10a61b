"""The ML pipeline as `make demo` runs it, deployed by the agent from one manifest:
cairn-sensor -> cairn-infer -> $upstream. Both are process modules whose only configuration is
the IoT Edge environment (SAS tokens signed by the workload API). infer's model, the project's
anomaly model (examples/anomaly_model), is named in its desired properties in the manifest,
fetched by URL from `cairn model pack` packages, and fed the sensor's raw JSON through its
inputMapping. Version 2 then comes through the twin while readings keep flowing; the alerts kept
for $upstream drain to a cairn-cloud once the device is linked to it."""
import json
import subprocess

import pytest

from conftest import HOST, REPO, wait_for
from test_agent import SLOW, deploy, edge, manifest, process_module, wait_running  # noqa: F401
from test_model_delivery import StaticServer, pack
from test_sdk_workload import SENSOR
from infer_fixtures import CAIRN_INFER

FIELDS = ["machine.temperature", "machine.pressure", "ambient.temperature", "ambient.humidity"]
ROUTES = {
    "readingsToInfer": 'FROM /messages/modules/sensor/outputs/temperatureOutput '
                       'INTO BrokeredEndpoint("/modules/infer/inputs/score")',
    "alertsToCloud": {"route": 'FROM /messages/modules/infer/outputs/results '
                               'WHERE $body.anomaly[0] = true INTO $upstream', "priority": 0},
    # The test watches every result, and sends requests of its own.
    "resultsToMonitor": 'FROM /messages/modules/infer/outputs/results '
                        'INTO BrokeredEndpoint("/modules/monitor/inputs/results")',
    "monitorToInfer": 'FROM /messages/modules/monitor/outputs/requests '
                      'INTO BrokeredEndpoint("/modules/infer/inputs/score")',
}
# Every spike (+100 °C) leaves the envelope of normal readings the model knows.
SENSOR_DESIRED = {"SendInterval": 0.05, "SpikeProbability": 0.25, "SpikeMagnitude": 100}


@pytest.fixture
def anomaly_packages(tmp_path):
    """The demo's anomaly model, versions 1 and 2, packed and served over HTTP."""
    models, publish = tmp_path / "models", tmp_path / "publish"
    publish.mkdir()
    subprocess.run(["/usr/bin/python3", str(REPO / "examples" / "anomaly_model" /
                                            "make_anomaly_model.py"), str(models)],
                   check=True, capture_output=True, timeout=300)
    for v in ("1", "2"):
        pack(models / f"anomaly-{v}.onnx", publish, "anomaly", v)
    server = StaticServer(publish)
    yield server, models
    server.close()


def model_entry(server, version, mapping=None):
    return {"version": version, "url": server.url(f"anomaly-{version}.cidx"), "default": True,
            "inputMapping": mapping or {"reading": FIELDS}}


def reported_model(cairnd):
    return (cairnd.twin_view("infer")["reported"].get("models") or {}).get("anomaly") or {}


def collect(monitor, predicate, timeout=SLOW, what="results"):
    """Results received until `predicate(all so far)` holds; returns them all."""
    got = []
    wait_for(lambda: (got.extend(drain(monitor)), predicate(got))[1], timeout=timeout,
             interval=0.05, what=what)
    return got


def drain(monitor):
    out = []
    while not monitor.messages.empty():
        out.append(monitor.messages.get_nowait())
    return out


def check_scored_reading(msg):
    """A result of a sensor reading: correlated, the sensor's properties kept, and the model's
    verdict agreeing with the spike the sensor says it injected."""
    assert msg.input == "results"
    assert msg.props["status"] == "200", msg.payload
    assert msg.props["model"] == "anomaly"
    assert msg.props["$.cid"], msg.props  # the sensor's message id
    assert msg.props["$.ct"] == "application/json"
    body = json.loads(msg.payload)
    assert set(body) == {"score", "anomaly"}
    assert len(body["score"]) == 1 and len(body["anomaly"]) == 1
    injected = msg.props["anomaly"] == "true"
    assert body["anomaly"][0] is injected, (msg.props, body)
    assert (body["score"][0] > 50) is injected, body


def test_sensor_infer_upstream_deployed_by_the_agent_with_a_model_update(
        edge, module_client, cloud_factory, anomaly_packages):
    server, models = anomaly_packages
    monitor = module_client(edge, "monitor")
    monitor.subscribe_inputs()
    common = ["--connect-host", HOST, "--port", str(edge.tls_port), "--log-level", "debug"]
    doc = manifest(
        {"infer": process_module(str(CAIRN_INFER), common, order=1),
         "sensor": process_module(str(SENSOR), common, order=2)},
        routes=ROUTES,
        twins={"sensor": SENSOR_DESIRED,
               "infer": {"models": {"anomaly": model_entry(server, "1")}}})
    deploy(edge, doc)
    wait_running(edge, ["infer", "sensor"])

    # Version 1 comes from the manifest's desired properties, by URL, as a package.
    v1 = wait_for(lambda: (lambda m: m if m.get("status") == "ready" else None)(
        reported_model(edge)), timeout=SLOW, interval=0.2, what="anomaly v1 ready")
    assert v1["version"] == "1" and v1.get("error") is None
    assert v1["delivery"]["source"] == "package" and v1["delivery"]["status"] == "done"
    assert v1["delivery"]["bytesNeeded"] == (models / "anomaly-1.onnx").stat().st_size
    assert v1["inputs"] == [{"name": "reading", "datatype": "FP32", "shape": [-1, 4]}]
    assert v1["inputMapping"] == {"reading": {"fields": FIELDS, "datatype": "FP32",
                                              "shape": [1, 4]}}

    # Readings flow sensor -> infer with no tensors anywhere; spikes are flagged, others not.
    # (Readings sent while the model was still downloading were answered with an error; from
    # the first scored one on, every reading is scored.)
    collect(monitor, lambda got: any(m.props.get("status") == "200" for m in got),
            what="a first scored reading")
    first = collect(monitor, lambda got: sum(json.loads(m.payload).get("anomaly") == [True]
                                             for m in got) >= 3 and len(got) >= 20,
                    what="20 results with 3 alerts")
    for msg in first:
        check_scored_reading(msg)
        assert msg.props["modelVersion"] == "1"
    logs = edge.cli("logs", "infer", "--tail", "all").stdout
    assert f"module mode: {edge.device_id}/infer" in logs
    # Alerts, and only alerts, wait on disk for the cloud (no cloud is configured yet).
    wait_for(lambda: edge.queue_length("$upstream") >= 3, timeout=SLOW,
             what="alerts queued for $upstream")

    # A record that does not fit the mapping is refused with the field, correlated.
    monitor.publish_acked(json.dumps({"machine": {"temperature": 30}, "ambient": {}}),
                          props={"$.mid": "bad-reading", "$.ct": "application/json"},
                          output="requests")
    refused = [m for m in collect(
        monitor, lambda got: any(m.props.get("$.cid") == "bad-reading" for m in got),
        what="the refusal") if m.props.get("$.cid") == "bad-reading"][0]
    assert refused.props["status"] == "400"
    assert "machine.pressure" in json.loads(refused.payload)["error"]

    # Version 2 through the twin while the sensor keeps sending: no reading fails, results turn
    # from version 1 to version 2 once, and the update moves a fraction of a full download.
    edge.cli("twin", "update-desired", "infer",
             json.dumps({"models": {"anomaly": {"version": "2",
                                                "url": server.url("anomaly-2.cidx")}}}))
    def v2_results(got):
        return [m for m in got if m.props.get("modelVersion") == "2"]
    swap = collect(monitor, lambda got: len(v2_results(got)) >= 20 and sum(
        json.loads(m.payload).get("anomaly") == [True] for m in v2_results(got)) >= 2,
        what="20 results of version 2, 2 alerts among them")
    for msg in swap:
        check_scored_reading(msg)
    versions = [m.props["modelVersion"] for m in swap]
    assert versions == sorted(versions), versions  # 1s, then 2s
    v2 = reported_model(edge)
    assert v2["version"] == "2" and v2["status"] == "ready"
    d1, d2 = v1["delivery"], v2["delivery"]
    assert d2["bytesReused"] > 0 and d2["chunksReused"] >= 1
    assert d2["bytesDownloaded"] * 4 < d1["bytesDownloaded"], (d1, d2)

    # A mapping that does not fit the model is the model's error; version 2 keeps scoring.
    edge.cli("twin", "update-desired", "infer", json.dumps(
        {"models": {"anomaly": {"inputMapping": {"reading": FIELDS[:3]}}}}))
    failed = wait_for(lambda: (lambda m: m if m.get("status") == "failed" else None)(
        reported_model(edge)), timeout=SLOW, interval=0.2, what="the bad mapping reported")
    assert failed["version"] == "2"
    assert "3 fields do not fill the model's input shape [-1,4]" in failed["error"], failed
    drain(monitor)
    for msg in collect(monitor, lambda got: len(got) >= 10, what="results after the bad mapping"):
        check_scored_reading(msg)
        assert msg.props["modelVersion"] == "2"

    # Linked to a cloud, the device sends the alerts it kept (store and forward).
    cloud = cloud_factory()
    cloud.create_device(edge.device_id, edge=True)
    queued = edge.queue_length("$upstream")
    for key, value in cloud.upstream_config(cloud.device_key(edge.device_id)).items():
        edge.upstream_config[key.split(".", 1)[1]] = value
    edge.write_config()
    edge.restart()
    alerts = wait_for(lambda: (lambda ms: ms if len(ms) >= queued else None)(
        cloud.all_messages(device_id=edge.device_id)), timeout=SLOW, interval=0.2,
        what=f"{queued} alerts in the cloud")
    for m in alerts:
        assert m["moduleId"] == "infer"
        assert m["properties"]["status"] == "200" and m["properties"]["anomaly"] == "true"
        assert m["properties"]["modelVersion"] in ("1", "2")
        assert m["systemProperties"].get("correlationId")
        assert json.loads(m["body"])["anomaly"] == [True]
    assert {m["properties"]["modelVersion"] for m in alerts} == {"1", "2"}
