"""cairn-infer as an IoT Edge module against a real cairnd over MQTT/TLS: models from the module
twin (set with `cairn twin update-desired`), state in reported properties, scoring requests
routed from another module (paho) and answered on output `results`, hot swap with a broken
version refused, and models delivered by URL from `cairn model pack` packages on a local HTTP
server (chunks reused by an update, signatures required when a key is configured)."""
import http.client
import json
import os
import signal
import subprocess
import time

import numpy as np
import pytest

from conftest import CAIRN, DIE_WITH_TESTS, HOST, SANITIZER_MARKERS, wait_for
from infer_fixtures import CAIRN_INFER, onnx_models  # noqa: F401
import model_fixtures
from test_model_delivery import StaticServer, pack

ROUTES = {
    "toInfer": 'FROM /messages/modules/client/outputs/requests '
               'INTO BrokeredEndpoint("/modules/infer/inputs/score")',
    "fromInfer": 'FROM /messages/modules/infer/outputs/results '
                 'INTO BrokeredEndpoint("/modules/client/inputs/results")',
}
TIMEOUT = 120  # model loads under ASan on a shared machine


class InferModule:
    """cairn-infer started as module `infer` with a connection string from cairnd."""

    def __init__(self, cairnd, data_dir, *extra, via_environment=False):
        self.cairnd = cairnd
        self.log_path = cairnd.home / f"infer.{int(time.monotonic() * 1000)}.log"
        conn = cairnd.cli("identity", "create", "infer").stdout.strip()
        env = {k: v for k, v in os.environ.items() if not k.startswith("IOTEDGE_")
               and k not in ("EdgeHubConnectionString", "EdgeModuleCACertificateFile")}
        if via_environment:
            # What IoT Edge (and the Azure SDKs) hand a module: no identity on the command line.
            env["EdgeHubConnectionString"] = conn
            env["EdgeModuleCACertificateFile"] = str(cairnd.ca_path)
            identity = []
        else:
            identity = ["--connection-string", conn, "--ca-file", str(cairnd.ca_path)]
        cmd = [str(CAIRN_INFER), *identity, "--connect-host", HOST, "--port",
               str(cairnd.tls_port), "--data-dir", str(data_dir), "--log-level", "debug",
               *map(str, extra)]
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen([*DIE_WITH_TESTS, *cmd], stdout=subprocess.PIPE,
                                         stderr=log, stdin=subprocess.DEVNULL, env=env)

    def log(self):
        return self.log_path.read_text(errors="replace")

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
                raise AssertionError(f"cairn-infer did not stop on SIGTERM:\n{self.log()[-4000:]}")
        text = self.log()
        for marker in SANITIZER_MARKERS:
            assert marker not in text, f"sanitizer report in cairn-infer:\n{text[-8000:]}"
        assert self.proc.returncode == 0, f"rc {self.proc.returncode}:\n{text[-4000:]}"


@pytest.fixture
def infer_module():
    started = []

    def start(cairnd, data_dir, *extra, via_environment=False):
        m = InferModule(cairnd, data_dir, *extra, via_environment=via_environment)
        started.append(m)
        return m

    yield start
    for m in started:
        m.stop()


def desired(cairnd, patch):
    cairnd.cli("twin", "update-desired", "infer", json.dumps(patch))


def reported_models(cairnd):
    return cairnd.twin_view("infer")["reported"].get("models") or {}


def wait_model(cairnd, module, name, predicate, what):
    def check():
        assert module.proc.poll() is None, f"cairn-infer exited:\n{module.log()[-4000:]}"
        entry = reported_models(cairnd).get(name)
        return entry if entry and predicate(entry) else None
    return wait_for(check, timeout=TIMEOUT, interval=0.2, what=what)


def v2_request(x):
    return {"inputs": [{"name": "x", "datatype": "FP32", "shape": list(x.shape),
                        "data": [float(v) for v in x.reshape(-1)]}]}


def score(client, body, mid, props=None, timeout=TIMEOUT):
    """Sends a request on output `requests`; returns (message, parsed body) of the answer."""
    bag = {"$.mid": mid, "$.ct": "application/json", **(props or {})}
    client.publish_acked(json.dumps(body) if not isinstance(body, bytes) else body,
                         props=bag, output="requests")
    (msg,) = client.expect(1, timeout=timeout)
    return msg, json.loads(msg.payload)


def entry_for(path, version, **extra):
    return {"version": str(version), "path": str(path), **extra}


# --------------------------------------------------------------------------------------------

def test_twin_models_are_reported_and_routed_messages_scored(cairnd_factory, module_client,
                                                             infer_module, onnx_models, tmp_path):
    cairnd = cairnd_factory(routes=ROUTES)
    cairnd.cli("identity", "create", "infer")
    desired(cairnd, {"models": {"affine": entry_for(onnx_models / "affine_v1.onnx", 1)}})
    client = module_client(cairnd, "client")
    client.subscribe_inputs()
    module = infer_module(cairnd, tmp_path / "data")

    ready = wait_model(cairnd, module, "affine", lambda e: e.get("status") == "ready",
                       "affine reported ready")
    assert ready["version"] == "1" and ready.get("error") is None
    assert ready["engine"] == "onnxruntime" and ready["loadTimeMs"] > 0
    assert ready["inputs"] == [{"name": "x", "datatype": "FP32", "shape": [-1, 4]}]
    assert ready["outputs"] == [{"name": "y", "datatype": "FP32", "shape": [-1, 4]}]

    # KServe v2 JSON request: the answer carries the request's message id as correlation id.
    x = np.array([[1, 2, 3, 4]], np.float32)
    msg, body = score(client, v2_request(x) | {"id": "req-1"}, "mid-1")
    assert msg.input == "results"
    assert msg.props["$.cid"] == "mid-1" and msg.props["status"] == "200"
    assert msg.props["model"] == "affine" and msg.props["modelVersion"] == "1"
    assert msg.props["$.cmid"] == "infer" and msg.props["$.ct"] == "application/json"
    assert body["id"] == "req-1" and body["model_version"] == "1"
    assert np.allclose(body["outputs"][0]["data"], (x * 1 + 10).reshape(-1))

    # A correlation id on the request wins over its message id; /score style bodies work too.
    msg, body = score(client, {"data": [[0, 0, 0, 1]]}, "mid-2", {"$.cid": "corr-2"})
    assert msg.props["$.cid"] == "corr-2"
    assert body == {"y": [[10.0, 10.0, 10.0, 11.0]]}

    # Errors are results too, with the same correlation and the REST error object.
    msg, body = score(client, b"{not json", "mid-3")
    assert msg.props["$.cid"] == "mid-3" and msg.props["status"] == "400"
    assert "JSON" in body["error"]
    msg, body = score(client, {"data": [[1, 2, 3, 4]]}, "mid-4", {"model": "nope"})
    assert msg.props["status"] == "404" and "nope" in body["error"]
    msg, body = score(client, {"data": [[1, 2, 3]]}, "mid-5")
    assert msg.props["status"] == "400", body
    # A result too big for one message (IoT Hub's 256 KiB) becomes an error result: 20000 rows
    # of "1" (about 200 KB in) come back as about 440 KB of "11.0".
    rows = json.dumps({"data": [[1, 1, 1, 1]] * 20000}, separators=(",", ":")).encode()
    assert len(rows) < 250 * 1024
    msg, body = score(client, rows, "mid-big")
    assert msg.props["$.cid"] == "mid-big" and msg.props["status"] == "413", body
    assert "message size limit" in body["error"]

    # A second model arrives by patch; the first keeps serving.
    desired(cairnd, {"models": {"mlp": entry_for(onnx_models / "tiny_mlp.onnx", 7)}})
    wait_model(cairnd, module, "mlp", lambda e: e.get("status") == "ready", "mlp ready")
    msg, body = score(client, {"data": [[0.5] * 16]}, "mid-6", {"model": "mlp"})
    assert msg.props["status"] == "200" and msg.props["modelVersion"] == "7"
    assert np.array(body["y"]).shape == (1, 4)

    # Removing it from the twin unloads it; its reported entry goes away.
    desired(cairnd, {"models": {"mlp": None}})
    wait_for(lambda: "mlp" not in reported_models(cairnd), timeout=TIMEOUT, what="mlp removed")
    msg, body = score(client, {"data": [[0.5] * 16]}, "mid-7", {"model": "mlp"})
    assert msg.props["status"] == "404"


def test_broken_version_is_reported_failed_and_the_old_one_keeps_scoring(
        cairnd_factory, module_client, infer_module, onnx_models, tmp_path):
    cairnd = cairnd_factory(routes=ROUTES)
    cairnd.cli("identity", "create", "infer")
    client = module_client(cairnd, "client")
    client.subscribe_inputs()
    module = infer_module(cairnd, tmp_path / "data")
    desired(cairnd, {"models": {"affine": entry_for(onnx_models / "affine_v1.onnx", 1)}})
    wait_model(cairnd, module, "affine", lambda e: e.get("status") == "ready", "v1 ready")

    corrupt = tmp_path / "affine_v2.onnx"
    corrupt.write_bytes(b"\x08" + bytes(range(256)) * 8)  # an ONNX tag, then garbage
    desired(cairnd, {"models": {"affine": entry_for(corrupt, 2)}})
    failed = wait_model(cairnd, module, "affine", lambda e: e.get("status") == "failed",
                        "v2 reported failed")
    assert failed["version"] == "1" and "version 2" in failed["error"]
    msg, body = score(client, {"data": [[1, 1, 1, 1]]}, "after-fail")
    assert msg.props["status"] == "200" and msg.props["modelVersion"] == "1"
    assert body == {"y": [[11.0, 11.0, 11.0, 11.0]]}

    # A wrong sha256 is refused the same way; the right file then swaps in.
    desired(cairnd, {"models": {"affine": entry_for(onnx_models / "affine_v2.onnx", 2,
                                                    sha256="00" * 32)}})
    failed = wait_model(cairnd, module, "affine",
                        lambda e: e.get("status") == "failed" and "sha256" in (e["error"] or ""),
                        "sha256 mismatch reported")
    assert failed["version"] == "1"
    desired(cairnd, {"models": {"affine": {"sha256": None}}})
    wait_model(cairnd, module, "affine",
               lambda e: e.get("status") == "ready" and e.get("version") == "2", "v2 serving")
    msg, body = score(client, {"data": [[1, 1, 1, 1]]}, "after-swap")
    assert msg.props["modelVersion"] == "2" and body == {"y": [[22.0, 22.0, 22.0, 22.0]]}


def test_models_removed_while_the_module_was_down_leave_the_reported_twin(
        cairnd_factory, infer_module, onnx_models, tmp_path):
    cairnd = cairnd_factory(routes=ROUTES)
    cairnd.cli("identity", "create", "infer")
    desired(cairnd, {"models": {"a": entry_for(onnx_models / "affine_v1.onnx", 1),
                                "b": entry_for(onnx_models / "affine_v2.onnx", 2)}})
    module = infer_module(cairnd, tmp_path / "data")
    wait_for(lambda: all(reported_models(cairnd).get(n, {}).get("status") == "ready"
                         for n in ("a", "b")), timeout=TIMEOUT, what="a and b ready")
    module.stop()
    desired(cairnd, {"models": {"b": None}})
    module = infer_module(cairnd, tmp_path / "data")
    wait_for(lambda: "b" not in reported_models(cairnd), timeout=TIMEOUT,
             what="b gone from reported")
    wait_model(cairnd, module, "a", lambda e: e.get("status") == "ready", "a ready again")


def test_too_many_pending_requests_get_an_error_result(cairnd_factory, module_client,
                                                       infer_module, onnx_models, tmp_path):
    cairnd = cairnd_factory(routes=ROUTES)
    cairnd.cli("identity", "create", "infer")
    desired(cairnd, {"models": {"slow": entry_for(onnx_models / "slow.onnx", 1)}})
    client = module_client(cairnd, "client")
    client.subscribe_inputs()
    module = infer_module(cairnd, tmp_path / "data", "--max-pending-messages", "1")
    wait_model(cairnd, module, "slow", lambda e: e.get("status") == "ready", "slow ready")
    # 16 rows: each request keeps the model busy long enough for the next ones to arrive.
    req = json.dumps({"data": [[0.1] * 256] * 16})
    n = 8
    for i in range(n):
        client.publish(req, props={"$.mid": f"m{i}"}, output="requests")
    got = client.expect(n, timeout=TIMEOUT)
    statuses = sorted(m.props["status"] for m in got)
    assert {m.props["$.cid"] for m in got} == {f"m{i}" for i in range(n)}
    assert "200" in statuses and "429" in statuses, statuses
    refused = next(json.loads(m.payload) for m in got if m.props["status"] == "429")
    assert "max_pending_messages" in refused["error"]


def test_url_models_come_through_model_delivery_and_updates_reuse_chunks(
        cairnd_factory, module_client, infer_module, tmp_path):
    publish = tmp_path / "pub"
    publish.mkdir()
    server = StaticServer(publish)
    try:
        v1, v2 = tmp_path / "net-v1.onnx", tmp_path / "net-v2.onnx"
        model_fixtures.make_onnx(v1, seed=1)
        model_fixtures.make_onnx(v2, seed=1, variant="head")
        pack(v1, publish, "net", "1")
        pack(v2, publish, "net", "2")
        (publish / "raw.onnx").write_bytes(v1.read_bytes())
        (publish / "notes.txt").write_text("not a model")

        cairnd = cairnd_factory(routes=ROUTES)
        cairnd.cli("identity", "create", "infer")
        client = module_client(cairnd, "client")
        client.subscribe_inputs()
        data_dir = tmp_path / "data"
        module = infer_module(cairnd, data_dir, "--http", f"{HOST}:0")
        desired(cairnd, {"models": {"net": {"version": "1", "url": server.url("net-1.cidx")}}})
        first = wait_model(cairnd, module, "net", lambda e: e.get("status") == "ready",
                           "net v1 ready")
        d1 = first["delivery"]
        assert d1["status"] == "done" and d1["source"] == "package" and d1["version"] == "1"
        assert d1["bytesNeeded"] == v1.stat().st_size and d1["bytesReused"] == 0
        assert d1["bytesDownloaded"] > 0
        assert first["inputs"][0]["shape"] == [1, 3, 32, 32]
        assert any(p.endswith("net-1.cidx") for p in server.requests)
        assert (data_dir / "chunks").is_dir()

        # The update shares every chunk but the head's with v1: only those travel.
        desired(cairnd, {"models": {"net": {"version": "2", "url": server.url("net-2.cidx")}}})
        second = wait_model(cairnd, module, "net",
                            lambda e: e.get("status") == "ready" and e.get("version") == "2",
                            "net v2 ready")
        d2 = second["delivery"]
        assert d2["version"] == "2" and d2["status"] == "done"
        assert d2["bytesReused"] > 0 and d2["bytesNeeded"] == v2.stat().st_size
        assert d2["bytesDownloaded"] < d1["bytesDownloaded"], (d1, d2)
        assert d2["bytesSaved"] > 0

        # Module mode serves REST too when --http is given.
        line = module.proc.stdout.readline().decode()
        assert "listening on http://" in line
        port = int(line.strip().rsplit(":", 1)[1])
        conn = http.client.HTTPConnection(HOST, port, timeout=30)
        conn.request("GET", "/v2/models/net/ready")
        assert conn.getresponse().status == 200
        conn.close()

        # A raw model file at a URL is downloaded whole (decided by its bytes, not its name).
        desired(cairnd, {"models": {"raw": {"version": "1", "url": server.url("raw.onnx")}}})
        raw = wait_model(cairnd, module, "raw", lambda e: e.get("status") in ("ready", "failed"),
                         "raw model loaded")
        assert raw["status"] == "ready" and raw["delivery"]["source"] == "file", raw
        # A URL serving neither is refused with what it served.
        desired(cairnd, {"models": {"txt": {"version": "1", "url": server.url("notes.txt")}}})
        txt = wait_model(cairnd, module, "txt", lambda e: e.get("status") == "failed",
                         "text URL refused")
        assert "neither a model package index nor" in txt["error"]
    finally:
        server.close()


def test_signed_packages_are_required_once_a_public_key_is_configured(
        cairnd_factory, module_client, infer_module, tmp_path):
    publish = tmp_path / "pub"
    publish.mkdir()
    server = StaticServer(publish)
    try:
        key, pub = tmp_path / "sign.key", tmp_path / "sign.pub"
        subprocess.run([str(CAIRN), "model", "keygen", "--private", str(key), "--public",
                        str(pub)], check=True, capture_output=True, timeout=60)
        m = tmp_path / "m.onnx"
        model_fixtures.make_onnx(m, seed=3)
        pack(m, publish, "unsigned", "1")
        pack(m, publish, "signed", "1", "--sign-key", str(key))

        cairnd = cairnd_factory(routes=ROUTES)
        cairnd.cli("identity", "create", "infer")
        module = infer_module(cairnd, tmp_path / "data")
        desired(cairnd, {"modelDelivery": {"publicKey": pub.read_text()},
                         "models": {"a": {"version": "1", "url": server.url("unsigned-1.cidx")},
                                    "b": {"version": "1", "url": server.url("signed-1.cidx")}}})
        a = wait_model(cairnd, module, "a", lambda e: e.get("status") == "failed",
                       "unsigned package refused")
        assert "not signed" in a["error"] and a.get("version") is None
        b = wait_model(cairnd, module, "b", lambda e: e.get("status") == "ready",
                       "signed package loaded")
        assert b["delivery"]["status"] == "done"
        twin = json.loads(cairnd.cli("twin", "get", "infer").stdout)["reported"]
        assert twin["modelDelivery"]["signedOnly"] is True
    finally:
        server.close()


def test_module_mode_from_the_iot_edge_environment(cairnd_factory, infer_module, onnx_models,
                                                   tmp_path):
    cairnd = cairnd_factory(routes=ROUTES)
    cairnd.cli("identity", "create", "infer")
    desired(cairnd, {"models": {"affine": entry_for(onnx_models / "affine_v3.onnx", 3)}})
    module = infer_module(cairnd, tmp_path / "data", via_environment=True)
    ready = wait_model(cairnd, module, "affine", lambda e: e.get("status") == "ready",
                       "affine ready")
    assert ready["version"] == "3"
    assert f"module mode: {cairnd.device_id}/infer" in module.log()


def test_module_without_identity_is_a_usage_error():
    env = {k: v for k, v in os.environ.items() if not k.startswith("IOTEDGE_")
           and k != "EdgeHubConnectionString"}
    r = subprocess.run([str(CAIRN_INFER), "--connection-string", "HostName=h;DeviceId=d"],
                       capture_output=True, text=True, timeout=30, env=env)
    assert r.returncode == 2 and "ModuleId" in r.stderr
    r = subprocess.run([str(CAIRN_INFER), "--help"], capture_output=True, text=True, timeout=30)
    assert r.returncode == 0 and "--connection-string" in r.stdout and "--data-dir" in r.stdout
