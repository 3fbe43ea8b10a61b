"""Direct methods (docs/protocol.md §9): from the command line (`cairn method`, cairnd's
management socket), module to module (ModuleClient.invokeMethod over cairnd's HTTPS head) and
cloud to module (cairn-cloud's REST API, the official service SDK, cairnd's upstream link).

Targets are paho modules (conftest.ModuleClient.serve_methods) or Node SDK modules (module.js:
"echo" answers 200, "fail" 500, "slow" after 10 s).
"""
import json
import subprocess
import time

import pytest

from conftest import (CAIRN, CLOUD_HOST, HOST, edge_device, error_code, https_request,
                      wait_for)
from node_sdk import (NODE_SDK_SKIP, ServiceError, node_module,  # noqa: F401 (fixture)
                      service)

CLOUD_TIMEOUT = 30.0

skip_without_node_sdk = pytest.mark.skipif(NODE_SDK_SKIP is not None, reason=NODE_SDK_SKIP or "")


def method_cli(cairnd, module, name, payload="null", *extra, check=False, timeout=60):
    r = cairnd.cli("method", module, name, payload, *extra, check=check, timeout=timeout)
    reply = json.loads(r.stdout) if r.stdout.strip() else None
    return r, reply


# --------------------------------------------------------------------------------------------
# cairn method (management socket) to a paho module


def test_cli_method_round_trip(cairnd, module_client):
    m = module_client(cairnd, "filter")
    m.serve_methods()
    r, reply = method_cli(cairnd, "filter", "reset", '{"n": 1, "s": "x"}')
    assert r.returncode == 0, r.stderr
    assert reply == {"status": 200, "payload": {"echo": {"n": 1, "s": "x"}, "name": "reset"}}
    name, payload, rid = m.method_calls.get(timeout=1)
    assert (name, payload) == ("reset", {"n": 1, "s": "x"})
    assert len(rid) == 36  # a GUID, as edgeHub uses


def test_cli_method_passes_the_module_status_back(cairnd, module_client):
    m = module_client(cairnd, "filter")
    m.serve_methods(lambda name, payload: (503, {"busy": True}))
    r, reply = method_cli(cairnd, "filter", "work")
    assert r.returncode == 1  # not a 2xx
    assert reply == {"status": 503, "payload": {"busy": True}}
    # A module may answer with an empty body: payload null.
    m.method_handler = lambda name, payload: (200, None)
    r, reply = method_cli(cairnd, "filter", "work")
    assert r.returncode == 0 and reply == {"status": 200, "payload": None}


def test_cli_method_to_unknown_module_is_404(cairnd):
    r, reply = method_cli(cairnd, "nobody", "echo")
    assert r.returncode == 1 and reply is None
    assert "404" in r.stderr and "nobody" in r.stderr, r.stderr
    assert cairnd.status()["methods"] == {"inFlight": 0, "waiting": 0}


def test_cli_method_to_module_without_method_subscription_is_404(cairnd, module_client):
    m = module_client(cairnd, "filter")
    m.subscribe_inputs()
    r, _ = method_cli(cairnd, "filter", "echo")
    assert r.returncode == 1 and "404" in r.stderr, r.stderr
    assert m.method_calls.empty()


def test_cli_method_timeout_is_504_and_late_answer_is_ignored(cairnd, module_client):
    m = module_client(cairnd, "filter")
    m.serve_methods(lambda name, payload: None)  # never answers
    r, reply = method_cli(cairnd, "filter", "hang", "{}", "--timeout", "5")
    assert r.returncode == 1 and reply is None
    assert "504" in r.stderr, r.stderr
    # The answer that comes too late goes nowhere; the next call works.
    _, _, rid = m.method_calls.get(timeout=1)
    m.answer_method(rid, 200, {"late": True})
    m.method_handler = lambda name, payload: (200, {"ok": name})
    r, reply = method_cli(cairnd, "filter", "next")
    assert r.returncode == 0 and reply == {"status": 200, "payload": {"ok": "next"}}
    assert cairnd.status()["methods"] == {"inFlight": 0, "waiting": 0}


def test_cli_method_waits_for_a_module_that_connects_in_time(cairnd, module_client):
    cairnd.create_identity("late")
    proc = subprocess.Popen([str(CAIRN), "--home", str(cairnd.home), "method", "late", "hello",
                             '"early"', "--connect-timeout", "30"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        wait_for(lambda: cairnd.status()["methods"]["waiting"] == 1,
                 what="the call to wait for its target")
        m = module_client(cairnd, "late")
        m.serve_methods()
        out, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 0, err
    assert json.loads(out) == {"status": 200, "payload": {"echo": "early", "name": "hello"}}


def test_cli_method_gives_up_after_the_connect_timeout(cairnd):
    r, _ = method_cli(cairnd, "absent", "hello", "null", "--connect-timeout", "1")
    assert r.returncode == 1 and "404" in r.stderr, r.stderr
    assert cairnd.status()["methods"] == {"inFlight": 0, "waiting": 0}


@pytest.mark.parametrize("args,why", [
    (["m" * 101, "null"], "methodName"),
    (["echo", "null", "--timeout", "4"], "responseTimeoutInSeconds"),
    (["echo", "null", "--timeout", "301"], "responseTimeoutInSeconds"),
    (["echo", "null", "--connect-timeout", "301"], "connectTimeoutInSeconds"),
    (["a/b", "null"], "methodName"),
])
def test_cli_bad_method_request_is_400(cairnd, module_client, args, why):
    m = module_client(cairnd, "filter")
    m.serve_methods()
    r, _ = method_cli(cairnd, "filter", *args)
    assert r.returncode == 1
    assert "400" in r.stderr and why in r.stderr, r.stderr
    assert m.method_calls.empty()


def test_oversize_method_payload_is_400(cairnd, module_client):
    # 128 KB is the limit each way (docs/protocol.md §9.1); too big for a command-line argument, so
    # through the gateway.
    target = module_client(cairnd, "filter")
    target.serve_methods()
    r = gateway(cairnd, "caller", "filter", {"methodName": "big",
                                             "payload": {"blob": "x" * (128 * 1024)}})
    assert r.status == 400, r
    assert "payload" in r.json["message"], r
    assert target.method_calls.empty()
    r = gateway(cairnd, "caller", "filter", {"methodName": "big",
                                             "payload": {"blob": "x" * (100 * 1024)}})
    assert r.status == 200 and r.json["payload"]["echo"]["blob"] == "x" * (100 * 1024)


def test_cli_payload_must_be_json(cairnd):
    r, _ = method_cli(cairnd, "filter", "echo", "not json")
    assert r.returncode == 2 and "JSON" in r.stderr


# --------------------------------------------------------------------------------------------
# module to module over cairnd's HTTPS head (raw requests, then the Node SDK)


def gateway(cairnd, caller, target, body, device=None, headers=None, token=None, raw=None,
            method="POST"):
    """A ModuleClient.invokeMethod request made by hand."""
    device = device or cairnd.device_id
    all_headers = {"x-ms-edge-moduleId": f"{cairnd.device_id}/{caller}",
                   "Authorization": token if token is not None else cairnd.token(caller)}
    all_headers.update(headers or {})
    all_headers = {k: v for k, v in all_headers.items() if v is not None}
    return https_request(HOST, cairnd.https_port, method,
                         f"/twins/{device}/modules/{target}/methods", cairnd.ca_path,
                         server_name="localhost", body=body, raw=raw, headers=all_headers,
                         timeout=40)


def test_gateway_method_round_trip(cairnd, module_client):
    target = module_client(cairnd, "filter")
    target.serve_methods()
    r = gateway(cairnd, "caller", "filter", {"methodName": "ping", "payload": [1, 2],
                                             "responseTimeoutInSeconds": 10})
    assert r.status == 200, r
    assert r.json == {"status": 200, "payload": {"echo": [1, 2], "name": "ping"}}


@pytest.mark.parametrize("case", ["no module header", "module header without device",
                                  "no token", "expired token", "token of another module",
                                  "other device in path", "not JSON", "no methodName",
                                  "unknown target", "GET"])
def test_gateway_refuses_bad_requests(cairnd, module_client, case):
    target = module_client(cairnd, "filter")
    target.serve_methods()
    body = {"methodName": "ping", "payload": None, "responseTimeoutInSeconds": 10}
    expected = {
        "no module header": (400, lambda: gateway(cairnd, "caller", "filter", body,
                                                  headers={"x-ms-edge-moduleId": None})),
        "module header without device": (400, lambda: gateway(
            cairnd, "caller", "filter", body, headers={"x-ms-edge-moduleId": "caller"})),
        "no token": (401, lambda: gateway(cairnd, "caller", "filter", body, token="")),
        "expired token": (401, lambda: gateway(
            cairnd, "caller", "filter", body,
            token=cairnd.token("caller", expiry=int(time.time()) - 10))),
        "token of another module": (401, lambda: gateway(
            cairnd, "caller", "filter", body, token=cairnd.token("other"))),
        "other device in path": (401, lambda: gateway(cairnd, "caller", "filter", body,
                                                      device="edge2")),
        "not JSON": (400, lambda: gateway(cairnd, "caller", "filter", None, raw="{oops")),
        "no methodName": (400, lambda: gateway(cairnd, "caller", "filter", {"payload": 1})),
        "unknown target": (404, lambda: gateway(cairnd, "caller", "nobody", body)),
        "GET": (405, lambda: gateway(cairnd, "caller", "filter", None, method="GET")),
    }
    status, call = expected[case]
    r = call()
    assert r.status == status, r
    assert r.json and r.json.get("message"), f"the error must say why: {r}"
    assert target.method_calls.empty()


def test_gateway_timeout_is_504(cairnd, module_client):
    target = module_client(cairnd, "filter")
    target.serve_methods(lambda name, payload: None)
    r = gateway(cairnd, "caller", "filter", {"methodName": "hang",
                                             "responseTimeoutInSeconds": 5})
    assert r.status == 504, r
    assert "hang" in r.json["message"]


@skip_without_node_sdk
def test_node_module_to_node_module(cairnd, node_module):
    target = node_module(cairnd, "receiver")
    target.open()
    caller = node_module(cairnd, "sender")
    caller.open()
    r = caller.send("invoke", deviceId=cairnd.device_id, moduleId="receiver", methodName="echo",
                    payload={"n": 1}, responseTimeoutInSeconds=10)
    assert r["status"] == 200
    assert r["payload"] == {"echo": {"n": 1}, "module": "receiver"}
    assert target.wait_event("method")["payload"] == {"n": 1}
    r = caller.send("invoke", deviceId=cairnd.device_id, moduleId="receiver", methodName="fail",
                    payload={}, responseTimeoutInSeconds=10)
    assert r["status"] == 500 and r["payload"] == {"error": "asked to fail"}


@skip_without_node_sdk
def test_node_method_with_null_payload(cairnd, node_module):
    target = node_module(cairnd, "receiver")
    target.open()
    caller = node_module(cairnd, "sender")
    caller.open()
    r = caller.send("invoke", deviceId=cairnd.device_id, moduleId="receiver", methodName="echo",
                    payload=None, responseTimeoutInSeconds=10)
    assert r["status"] == 200, r
    assert r["payload"] == {"echo": None, "module": "receiver"}


@skip_without_node_sdk
def test_node_module_to_paho_module(cairnd, node_module, module_client):
    target = module_client(cairnd, "filter")
    target.serve_methods(lambda name, payload: (201, {"got": payload}))
    caller = node_module(cairnd, "sender")
    caller.open()
    r = caller.send("invoke", deviceId=cairnd.device_id, moduleId="filter", methodName="store",
                    payload="text", responseTimeoutInSeconds=10)
    assert r == {"op": "invoke", "id": r["id"], "ok": True, "status": 201,
                 "payload": {"got": "text"}}


@skip_without_node_sdk
def test_node_method_to_unknown_module_is_404(cairnd, node_module):
    caller = node_module(cairnd, "sender")
    caller.open()
    r = caller.request("invoke", deviceId=cairnd.device_id, moduleId="nobody",
                       methodName="echo", payload={}, responseTimeoutInSeconds=5)
    assert not r["ok"]
    assert r["error"].get("statusCode") == 404, r["error"]


@skip_without_node_sdk
def test_node_method_timeout_is_504(cairnd, node_module):
    target = node_module(cairnd, "receiver")
    target.open()
    caller = node_module(cairnd, "sender")
    caller.open()
    r = caller.request("invoke", deviceId=cairnd.device_id, moduleId="receiver",
                       methodName="slow", payload={}, responseTimeoutInSeconds=5)
    assert not r["ok"]
    assert r["error"].get("statusCode") == 504, r["error"]


# --------------------------------------------------------------------------------------------
# cloud to module: cairn-cloud REST / service SDK -> cairnd upstream link -> module


@pytest.fixture
def edge(cloud, cairnd_factory):
    return edge_device(cloud, cairnd_factory)


def method_target(edge, module_client, module, handler=None):
    m = module_client(edge, module)
    if handler is None:
        m.serve_methods()
    else:
        m.serve_methods(handler)
    edge.wait_link(module, timeout=CLOUD_TIMEOUT)
    return m


def test_cloud_to_paho_module(cloud, edge, module_client):
    m = method_target(edge, module_client, "filter")
    r = cloud.invoke(edge.device_id, "filter", "reboot", {"delay": 3})
    assert r.status == 200, r
    assert r.json == {"status": 200, "payload": {"echo": {"delay": 3}, "name": "reboot"}}
    assert m.method_calls.get(timeout=1)[:2] == ("reboot", {"delay": 3})


def test_cloud_method_status_and_empty_payload_pass_through(cloud, edge, module_client):
    method_target(edge, module_client, "filter", lambda name, payload: (418, None))
    r = cloud.invoke(edge.device_id, "filter", "tea")
    assert r.status == 200, r
    assert r.json == {"status": 418, "payload": None}


def test_cloud_method_timeout_is_504(cloud, edge, module_client):
    method_target(edge, module_client, "filter", lambda name, payload: None)
    r = cloud.invoke(edge.device_id, "filter", "hang", response_timeout=5)
    assert r.status == 504 and r.error_code == "GatewayTimeout", r


def test_cloud_method_to_unknown_module_is_404(cloud, edge):
    r = cloud.invoke(edge.device_id, "nobody", "echo")
    assert r.status == 404 and r.error_code == "ModuleNotFound", r
    r = cloud.invoke("nodevice", None, "echo")
    assert r.status == 404 and r.error_code == "DeviceNotFound", r
    r = cloud.invoke("nodevice", "m", "echo")
    assert r.status == 404 and r.error_code in ("DeviceNotFound", "ModuleNotFound"), r


def test_cloud_method_to_disconnected_module_is_404(cloud, edge, module_client):
    m = method_target(edge, module_client, "filter")
    m.disconnect()
    edge.stop()  # the module's cloud link goes with cairnd
    wait_for(lambda: cloud.twin(edge.device_id, "filter")["connectionState"] == "Disconnected",
             CLOUD_TIMEOUT, what="the module to show as disconnected")
    r = cloud.invoke(edge.device_id, "filter", "echo")
    assert r.status == 404 and r.error_code == "DeviceNotOnline", r


def test_cloud_method_while_device_offline_is_404(cloud, cairnd_factory, tcp_proxy,
                                                 module_client):
    proxy = tcp_proxy(cloud.mqtt_port)
    edge = edge_device(cloud, cairnd_factory, proxy=proxy)
    m = method_target(edge, module_client, "filter")
    proxy.cut()
    wait_for(lambda: edge.link_state("filter") != "online", CLOUD_TIMEOUT,
             what="the link to drop")
    r = cloud.invoke(edge.device_id, "filter", "echo")
    assert r.status == 404 and r.error_code == "DeviceNotOnline", r
    assert m.method_calls.empty()
    # Back online, calls go through again.
    proxy.restore()
    edge.wait_link("filter", timeout=CLOUD_TIMEOUT)
    wait_for(lambda: cloud.invoke(edge.device_id, "filter", "echo").status == 200,
             CLOUD_TIMEOUT, what="a method call after reconnection")


def test_cloud_method_to_module_not_listening_for_methods_is_404(cloud, edge, module_client):
    m = module_client(edge, "filter")
    m.subscribe_inputs()
    edge.wait_link("filter", timeout=CLOUD_TIMEOUT)
    r = cloud.invoke(edge.device_id, "filter", "echo")
    assert r.status == 404 and r.error_code == "DeviceNotOnline", r


@skip_without_node_sdk
def test_service_sdk_invokes_node_module(cloud, edge, node_module):
    target = node_module(edge, "receiver")
    target.open()
    edge.wait_link("receiver", timeout=CLOUD_TIMEOUT)
    args = {"deviceId": edge.device_id, "moduleId": "receiver", "methodName": "echo",
            "payload": {"from": "service"}, "responseTimeoutInSeconds": 10}
    r = service(cloud.connection_string, "invoke_module_method", args, ca_file=cloud.ca_path,
                port=cloud.https_port, host=CLOUD_HOST)
    assert r["statusCode"] == 200
    assert r["result"] == {"status": 200, "payload": {"echo": {"from": "service"},
                                                      "module": "receiver"}}
    assert target.wait_event("method")["payload"] == {"from": "service"}
    r = service(cloud.connection_string, "invoke_module_method", {**args, "methodName": "fail"},
                ca_file=cloud.ca_path, port=cloud.https_port, host=CLOUD_HOST)
    assert r["result"] == {"status": 500, "payload": {"error": "asked to fail"}}


@skip_without_node_sdk
def test_service_sdk_method_errors(cloud, edge, node_module):
    target = node_module(edge, "receiver")
    target.open()
    edge.wait_link("receiver", timeout=CLOUD_TIMEOUT)
    base = {"deviceId": edge.device_id, "moduleId": "receiver", "payload": {}}
    with pytest.raises(ServiceError) as e:
        service(cloud.connection_string, "invoke_module_method",
                {**base, "methodName": "slow", "responseTimeoutInSeconds": 5},
                ca_file=cloud.ca_path, port=cloud.https_port, host=CLOUD_HOST)
    assert e.value.status_code == 504, e.value.reply
    with pytest.raises(ServiceError) as e:
        service(cloud.connection_string, "invoke_module_method",
                {**base, "moduleId": "nobody", "methodName": "echo"},
                ca_file=cloud.ca_path, port=cloud.https_port, host=CLOUD_HOST)
    assert e.value.status_code == 404, e.value.reply
    # The SDK has no class for ModuleNotFound (a plain Error); the body names the code.
    assert error_code(e.value.reply["body"]) == "ModuleNotFound", e.value.reply


def test_cloud_registers_modules_of_the_edge_device(cloud, edge, module_client):
    # cairnd signs its modules' upstream connections with the edge device's key; the cloud
    # registers each module as managed by the edge device.
    method_target(edge, module_client, "filter")
    module = cloud.call("GET", f"/devices/{edge.device_id}/modules/filter")
    assert module.get("managedBy") == "iotEdge", module
    assert module["connectionState"] == "Connected", module
