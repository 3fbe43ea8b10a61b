"""The official Azure IoT Node SDKs against cairnd: ModuleClient.fromEnvironment(Mqtt) with the
connection string `cairn identity create` prints and the edge CA (docs/protocol.md §6.2 step 1).

Each NodeModule is a real `node tests/node/module.js` process using azure-iot-device and
azure-iot-device-mqtt unmodified; see node_sdk.py for how it is driven.
"""
import base64
import http.server
import json
import ssl
import subprocess
import threading

import pytest

from conftest import HOST, wait_for
from node_sdk import (NodeError, ServiceError, node_module,  # noqa: F401 (node_module: fixture)
                      service, skip_without_node_sdk)

pytestmark = skip_without_node_sdk

ROUTES = {
    "senderToReceiver":
        'FROM /messages/modules/sender/outputs/out1 '
        'INTO BrokeredEndpoint("/modules/receiver/inputs/in1")',
    "paho":
        'FROM /messages/modules/pahosender/outputs/* '
        'INTO BrokeredEndpoint("/modules/receiver/inputs/fromPaho")',
    "toPaho":
        'FROM /messages/modules/sender/outputs/toPaho '
        'INTO BrokeredEndpoint("/modules/pahoreceiver/inputs/fromNode")',
}

@pytest.fixture
def hub(cairnd_factory):
    return cairnd_factory(routes=ROUTES)


def require_node_input_subscription(hub, module_client):
    """The Node SDK subscribes to its inputs with devices/{d}/modules/{m}/inputs/#, which
    edgeHub takes as a module-messages subscription (^devices/.+/modules/.+/#$, docs/protocol.md
    §3.4). The SDK ignores a refused SUBACK, so where cairnd refuses that filter a Node module
    never gets an input and the test would only time out: probe once with paho instead."""
    probe = module_client(hub, "inputsprobe")
    granted = probe.subscribe(f"devices/{hub.device_id}/modules/inputsprobe/inputs/#")
    probe.disconnect()
    if granted != [1]:
        pytest.xfail("cairnd refuses the Node SDK's input subscription "
                     "devices/{d}/modules/{m}/inputs/# (SUBACK 0x80)")


def _pair(hub, node_module, module_client):
    require_node_input_subscription(hub, module_client)
    receiver = node_module(hub, "receiver")
    receiver.open()
    sender = node_module(hub, "sender")
    sender.open()
    return sender, receiver


# --------------------------------------------------------------------------------------------
# messages: these work today


def test_output_event_is_routed_with_properties_and_ids(hub, node_module, module_client):
    sender, receiver = _pair(hub, node_module, module_client)
    body = json.dumps({"temperature": 21.5})
    reply = sender.send_output(
        "out1", body, properties={"level": "high", "odd key": "a&b=c/d%", "unicode": "é✓"},
        messageId="msg-1", correlationId="corr-1", contentType="application/json",
        contentEncoding="utf-8")
    assert reply["messageId"] == "msg-1"

    got = receiver.wait_event("input")
    assert got["input"] == "in1"
    assert got["body"] == body
    assert got["messageId"] == "msg-1"
    assert got["correlationId"] == "corr-1"
    assert got["contentType"] == "application/json"
    assert got["contentEncoding"] == "utf-8"
    props = got["properties"]
    assert props["level"] == "high"
    assert props["odd key"] == "a&b=c/d%"
    assert props["unicode"] == "é✓"
    # The SDK keeps the hub's connection ids among the application properties.
    assert props["$.cdid"] == hub.device_id
    assert props["$.cmid"] == "sender"
    assert "$.on" not in props

    # Completed by the receiver: nothing left queued, nothing counted as unrouted.
    wait_for(lambda: hub.queue_length("receiver/in1") == 0, what="receiver queue drained")
    assert hub.counter("messagesReceived") == 1
    assert hub.counter("messagesUnrouted") == 0
    assert not receiver.events("error") and not sender.events("error")


def test_batch_keeps_order_and_message_ids(hub, node_module, module_client):
    sender, receiver = _pair(hub, node_module, module_client)
    reply = sender.send("send_batch", count=40, output="out1", prefix="seq",
                        properties={"batch": "a"})
    assert reply["sent"] == 40 and reply["failed"] == 0, reply
    got = receiver.wait_events("input", 40)
    assert [m["messageId"] for m in got] == [f"seq-{i}" for i in range(40)]
    assert [json.loads(m["body"])["seq"] for m in got] == list(range(40))
    assert all(m["properties"]["batch"] == "a" for m in got)


def test_windowed_batch_delivers_every_message_once(hub, node_module, module_client):
    sender, receiver = _pair(hub, node_module, module_client)
    reply = sender.send("send_batch", count=300, output="out1", prefix="w", window=16,
                        timeout=120)
    assert reply["sent"] == 300 and reply["failed"] == 0, reply
    got = receiver.wait_events("input", 300, timeout=120)
    ids = [m["messageId"] for m in got]
    assert sorted(ids) == sorted(f"w-{i}" for i in range(300))
    wait_for(lambda: hub.queue_length("receiver/in1") == 0, what="receiver queue drained")
    assert not receiver.events("input")[300:], "a message was delivered twice"


def test_messages_wait_for_a_receiver_that_connects_later(hub, node_module, module_client):
    require_node_input_subscription(hub, module_client)
    sender = node_module(hub, "sender")
    sender.open()
    for i in range(5):
        sender.send_output("out1", f"early {i}", messageId=f"early-{i}")
    assert hub.queue_length("receiver/in1") == 5
    receiver = node_module(hub, "receiver")
    receiver.open()
    got = receiver.wait_events("input", 5)
    assert [m["body"] for m in got] == [f"early {i}" for i in range(5)]


def test_unrouted_output_is_still_acknowledged(hub, node_module):
    sender = node_module(hub, "sender")
    sender.open()
    sender.send_output("nowhere", "dropped", messageId="x")
    wait_for(lambda: hub.counter("messagesUnrouted") == 1, what="unrouted counter")


def test_paho_sender_to_node_receiver(hub, node_module, module_client):
    require_node_input_subscription(hub, module_client)
    receiver = node_module(hub, "receiver")
    receiver.open()
    paho = module_client(hub, "pahosender")
    paho.publish_acked(b"from paho", output="any",
                       props={"$.mid": "p-1", "$.ct": "text/plain", "k": "v w"})
    got = receiver.wait_event("input")
    assert got["input"] == "fromPaho"
    assert got["body"] == "from paho"
    assert got["messageId"] == "p-1"
    assert got["contentType"] == "text/plain"
    assert got["properties"]["k"] == "v w"
    assert got["properties"]["$.cmid"] == "pahosender"


def test_node_sender_to_paho_receiver(hub, node_module, module_client):
    paho = module_client(hub, "pahoreceiver")
    paho.subscribe_inputs()
    sender = node_module(hub, "sender")
    sender.open()
    sender.send_output("toPaho", "from node", properties={"k": "v"}, messageId="n-1",
                       contentType="text/plain")
    [m] = paho.expect(1)
    assert m.input == "fromNode"
    assert m.payload == b"from node"
    assert m.props["k"] == "v"
    assert m.props["$.mid"] == "n-1"
    assert m.props["$.ct"] == "text/plain"
    assert m.props["$.cmid"] == "sender"


def test_wrong_key_is_refused(hub, node_module):
    good = hub.create_identity("sender")
    bad = dict(good, SharedAccessKey="AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=")
    m = node_module(hub, "sender", connection_string=";".join(f"{k}={v}" for k, v in bad.items()))
    with pytest.raises(NodeError) as e:
        m.open()
    assert "authori" in json.dumps(e.value.error).lower(), e.value.error


def test_unknown_ca_is_refused(hub, cairnd_factory, node_module):
    other = cairnd_factory(routes={})
    m = node_module(hub, "sender", ca_file=other.ca_path)
    with pytest.raises(NodeError):
        m.open()
    assert hub.status()["counters"]["messagesReceived"] == 0


def test_close_and_reopen(hub, node_module, module_client):
    sender, receiver = _pair(hub, node_module, module_client)
    sender.send_output("out1", "before", messageId="b")
    sender.send("close")
    sender.open()
    sender.send_output("out1", "after", messageId="a")
    got = receiver.wait_events("input", 2)
    assert [m["body"] for m in got] == ["before", "after"]


# --------------------------------------------------------------------------------------------
# twin (more in test_twins.py)


def test_twin_get_and_reported_patch(hub, node_module):
    m = node_module(hub, "sender")
    m.open()
    twin = m.send("twin_get")
    assert "$version" in twin["desired"]
    m.send("twin_patch", patch={"status": "running", "nested": {"a": 1}})
    twin = m.send("twin_get")
    assert twin["reported"]["status"] == "running"
    assert twin["reported"]["nested"] == {"a": 1}
    m.send("twin_patch", patch={"nested": {"a": None}})
    twin = m.send("twin_get")
    assert twin["reported"]["nested"] == {}


def test_desired_properties_from_the_deployment(cairnd_factory, node_module):
    d = cairnd_factory(routes=ROUTES, start=False)
    manifest = json.loads(d.manifest_path.read_text())
    manifest["modulesContent"]["sender"] = {"properties.desired": {"threshold": 30}}
    d.manifest_path.write_text(json.dumps(manifest))
    d.start()
    # The agent applies the --manifest deployment once cairnd runs: a module connecting before
    # that gets the properties as a desired patch instead; this test reads them with GET.
    wait_for(lambda: d.twin_view("sender")["desired"].get("threshold") == 30,
             what="the deployment's desired properties in sender's twin")
    m = node_module(d, "sender")
    m.open()
    twin = m.send("twin_get")
    assert twin["desired"]["threshold"] == 30
    # The SDK announces the desired properties it got to its listener.
    event = m.wait_event("desired")
    assert event["patch"]["threshold"] == 30


# --------------------------------------------------------------------------------------------
# direct methods, module to module over cairnd's HTTPS head (docs/protocol.md §9.2; more in
# test_methods.py)


def test_module_to_module_method(hub, node_module):
    target = node_module(hub, "receiver")
    target.open()
    caller = node_module(hub, "sender")
    caller.open()
    r = caller.send("invoke", deviceId=hub.device_id, moduleId="receiver", methodName="echo",
                    payload={"n": 1}, responseTimeoutInSeconds=10)
    assert r["status"] == 200
    assert r["payload"] == {"echo": {"n": 1}, "module": "receiver"}
    assert target.wait_event("method")["payload"] == {"n": 1}


def test_module_method_error_status_is_passed_back(hub, node_module):
    target = node_module(hub, "receiver")
    target.open()
    caller = node_module(hub, "sender")
    caller.open()
    # (A null payload is test_methods.py::test_node_method_with_null_payload.)
    r = caller.send("invoke", deviceId=hub.device_id, moduleId="receiver", methodName="fail",
                    payload={"why": "test"}, responseTimeoutInSeconds=10)
    assert r["status"] == 500
    assert r["payload"] == {"error": "asked to fail"}


def test_method_to_absent_module_is_404(hub, node_module):
    caller = node_module(hub, "sender")
    caller.open()
    r = caller.request("invoke", deviceId=hub.device_id, moduleId="nobody", methodName="echo",
                       payload={}, responseTimeoutInSeconds=5)
    assert not r["ok"]
    assert r["error"].get("statusCode") == 404, r["error"]


# --------------------------------------------------------------------------------------------
# service SDK harness: service.js against a recording HTTPS server on loopback. This checks the
# harness itself (port redirect, CA, error mapping) and shows which requests the SDK makes; the
# SDK against cairn-cloud is in test_cloud_rest.py and test_methods.py.


@pytest.fixture
def recorder(tmp_path):
    """An HTTPS server for "cairn.local" on a free loopback port that records each request
    and answers from `routes`: {(method, path-without-query): (status, json body)}."""
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
         "-nodes", "-days", "1", "-subj", "/CN=cairn.local",
         "-addext", "subjectAltName=DNS:cairn.local",
         "-keyout", str(key), "-out", str(cert)], check=True, capture_output=True)

    class Handler(http.server.BaseHTTPRequestHandler):
        def _serve(self):
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else b""
            path, _, query = self.path.partition("?")
            server.requests.append({"method": self.command, "path": path, "query": query,
                                    "headers": dict(self.headers),
                                    "body": json.loads(body) if body else None})
            status, reply = server.routes.get((self.command, path),
                                              (404, {"Message": "ErrorCode:NotFound;no route"}))
            data = json.dumps(reply).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json; charset=utf-8")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        do_GET = do_PUT = do_POST = do_PATCH = do_DELETE = _serve

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer((HOST, 0), Handler)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(cert, key)
    server.socket = ctx.wrap_socket(server.socket, server_side=True)
    server.requests, server.routes, server.ca_file = [], {}, cert
    server.port = server.server_address[1]
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


SERVICE_CS = ("HostName=cairn.local;SharedAccessKeyName=iothubowner;"
              "SharedAccessKey=" + base64.b64encode(b"k" * 32).decode())


def test_service_harness_reaches_the_server_by_hub_name(recorder):
    twin = {"deviceId": "dev1", "etag": "AAAA", "properties": {"desired": {"$version": 2, "a": 1},
                                                               "reported": {"$version": 1}}}
    recorder.routes[("GET", "/twins/dev1")] = (200, twin)
    recorder.routes[("PATCH", "/twins/dev1/modules/m1")] = (200, {**twin, "moduleId": "m1"})
    recorder.routes[("POST", "/twins/dev1/modules/m1/methods")] = (
        200, {"status": 201, "payload": {"done": True}})

    r = service(SERVICE_CS, "get_twin", {"deviceId": "dev1"}, ca_file=recorder.ca_file,
                port=recorder.port)
    assert r["ok"] and r["statusCode"] == 200
    assert r["result"]["properties"]["desired"]["a"] == 1

    patch = {"properties": {"desired": {"b": 2}}}
    r = service(SERVICE_CS, "update_module_twin",
                {"deviceId": "dev1", "moduleId": "m1", "patch": patch},
                ca_file=recorder.ca_file, port=recorder.port)
    assert r["result"]["moduleId"] == "m1"

    r = service(SERVICE_CS, "invoke_module_method",
                {"deviceId": "dev1", "moduleId": "m1", "methodName": "echo", "payload": {"x": 1},
                 "responseTimeoutInSeconds": 7}, ca_file=recorder.ca_file, port=recorder.port)
    assert r["result"] == {"status": 201, "payload": {"done": True}}

    get, patch, invoke = recorder.requests
    for req in (get, patch, invoke):
        assert req["query"] == "api-version=2021-04-12"
        assert req["headers"]["Host"] == "cairn.local"
        assert req["headers"]["Authorization"].startswith(
            "SharedAccessSignature sr=cairn.local&sig=")
        assert "skn=iothubowner" in req["headers"]["Authorization"]
    assert patch["method"] == "PATCH" and patch["headers"]["If-Match"] == '"*"'
    assert patch["body"] == {"properties": {"desired": {"b": 2}}}
    assert invoke["body"] == {"methodName": "echo", "payload": {"x": 1},
                              "responseTimeoutInSeconds": 7, "connectTimeoutInSeconds": 0}


def test_service_harness_reports_http_errors(recorder):
    # IoT Hub's error body; the SDK picks its error class from the ErrorCode in it.
    recorder.routes[("GET", "/devices/nobody")] = (
        404, {"Message": "ErrorCode:DeviceNotFound;device nobody is not registered"})
    with pytest.raises(ServiceError) as e:
        service(SERVICE_CS, "get_device", {"deviceId": "nobody"}, ca_file=recorder.ca_file,
                port=recorder.port)
    assert e.value.status_code == 404
    assert e.value.reply["name"] == "DeviceNotFoundError"
    assert e.value.reply["error"] == "device nobody is not registered"
    r = service(SERVICE_CS, "get_device", {"deviceId": "nobody"}, ca_file=recorder.ca_file,
                port=recorder.port, check=False)
    assert r["statusCode"] == 404 and "ok" not in r
    # Without the server's CA the SDK refuses the TLS connection: no HTTP status at all.
    with pytest.raises(ServiceError) as e:
        service(SERVICE_CS, "get_device", {"deviceId": "dev1"}, port=recorder.port)
    assert e.value.status_code is None
    assert not recorder.requests[2:]
