"""cairn-cloud's service REST API (docs/cloud_api.md): identities, twins, methods, stored
telemetry; bad input and bad tokens (a clear IoT Hub error, nothing stored); `cairn cloud`;
and the official service SDK (azure-iothub, through tests/node/service.js) driving it.
"""
import json
import queue
import subprocess
import threading
import time

import pytest

from conftest import (CAIRN, CLOUD_HOST, DEFAULT_TIMEOUT, CairnCloud, CloudDevice, https_request,
                      wait_for)
from node_sdk import NODE_SDK_SKIP, ServiceError, service

skip_without_node_sdk = pytest.mark.skipif(NODE_SDK_SKIP is not None, reason=NODE_SDK_SKIP or "")


@pytest.fixture(scope="module")
def _shared_cloud(tmp_path_factory):
    c = CairnCloud(tmp_path_factory.mktemp("shared-cloud"))
    c.start()
    c.create_device("d1")
    yield c
    c.stop()


@pytest.fixture
def shared_cloud(_shared_cloud, request):
    """One cairn-cloud (with device d1) for the many refusal cases: each compares the state
    before and after, so they need no cloud of their own."""
    request.node._cloud_instances = [_shared_cloud]
    assert _shared_cloud.running(), "the shared cairn-cloud died in an earlier test"
    return _shared_cloud


def nest(levels):
    doc = {"p": "v"}
    for i in range(levels, 0, -1):
        doc = {f"l{i}": doc}
    return doc


# --------------------------------------------------------------------------------------------
# identities


def test_device_lifecycle(cloud):
    created = cloud.create_device("d1")
    keys = created["authentication"]["symmetricKey"]
    assert created["deviceId"] == "d1" and created["status"] == "enabled"
    assert created["capabilities"] == {"iotEdge": False}
    assert keys["primaryKey"] and keys["secondaryKey"]
    assert keys["primaryKey"] != keys["secondaryKey"]
    assert created["connectionState"] == "Disconnected"
    got = cloud.call("GET", "/devices/d1")
    assert got["etag"] == created["etag"] and got["authentication"] == created["authentication"]
    cloud.create_device("e1", edge=True)
    listed = cloud.call("GET", "/devices")
    assert [d["deviceId"] for d in listed] == ["d1", "e1"]
    assert listed[1]["capabilities"] == {"iotEdge": True}
    twin = cloud.twin("d1")
    assert twin["properties"] == {"desired": {"$version": 1}, "reported": {"$version": 1}}
    r = cloud.request("DELETE", "/devices/d1")
    assert r.status == 204 and r.text == ""
    r = cloud.request("GET", "/devices/d1")
    assert r.status == 404 and r.error_code == "DeviceNotFound", r
    r = cloud.request("GET", "/twins/d1")
    assert r.status == 404, r
    assert cloud.status()["devices"] == 1


def test_create_existing_device_is_409_and_keeps_it(cloud):
    first = cloud.create_device("d1")
    r = cloud.request("PUT", "/devices/d1", body={"deviceId": "d1"})
    assert r.status == 409 and r.error_code == "DeviceAlreadyExists", r
    assert cloud.call("GET", "/devices/d1")["authentication"] == first["authentication"]


def test_device_update_with_etag(cloud):
    d = cloud.create_device("d1")
    r = cloud.request("PUT", "/devices/d1", body={"deviceId": "d1", "status": "disabled"},
                      headers={"If-Match": f'"{d["etag"]}"'})
    assert r.status == 200 and r.json["status"] == "disabled", r
    assert r.headers["etag"] == f'"{r.json["etag"]}"'
    # The old etag no longer matches: 412, nothing changes.
    r2 = cloud.request("PUT", "/devices/d1", body={"deviceId": "d1", "status": "enabled"},
                       headers={"If-Match": f'"{d["etag"]}"'})
    assert r2.status == 412 and r2.error_code == "PreconditionFailed", r2
    assert cloud.call("GET", "/devices/d1")["status"] == "disabled"


def test_module_identities(cloud):
    cloud.create_device("e1", edge=True)
    m = cloud.call("PUT", "/devices/e1/modules/filter", {"moduleId": "filter"}, expect=201)
    assert m["deviceId"] == "e1" and m["moduleId"] == "filter"
    assert m["authentication"]["symmetricKey"]["primaryKey"]
    assert [x["moduleId"] for x in cloud.call("GET", "/devices/e1/modules")] == ["filter"]
    r = cloud.request("PUT", "/devices/e1/modules/filter", body={"moduleId": "filter"})
    assert r.status == 409 and r.error_code == "ModuleAlreadyExistsOnDevice", r
    r = cloud.request("PUT", "/devices/nobody/modules/filter", body={})
    assert r.status == 404 and r.error_code == "DeviceNotFound", r
    twin = cloud.twin("e1", "filter")
    assert twin["moduleId"] == "filter" and "capabilities" not in twin
    # $-names travel %-encoded.
    cloud.call("PUT", "/devices/e1/modules/%24edgeHub", {}, expect=201)
    assert cloud.twin("e1", "%24edgeHub")["moduleId"] == "$edgeHub"
    assert cloud.request("DELETE", "/devices/e1/modules/filter").status == 204
    r = cloud.request("GET", "/twins/e1/modules/filter")
    assert r.status == 404 and r.error_code == "ModuleNotFound", r


# --------------------------------------------------------------------------------------------
# twins


def test_twin_patch_etag_and_versions(cloud):
    cloud.create_device("d1")
    t0 = cloud.twin("d1")
    r = cloud.request("PATCH", "/twins/d1", body={"tags": {"site": "north"},
                                                  "properties": {"desired": {"rate": 5}}},
                      headers={"If-Match": f'"{t0["etag"]}"'})
    assert r.status == 200, r
    t1 = r.json
    assert t1["tags"] == {"site": "north"}
    assert t1["properties"]["desired"] == {"rate": 5, "$version": 2}
    assert t1["version"] > t0["version"] and t1["etag"] != t0["etag"]
    # A stale etag: 412 and nothing changes.
    r = cloud.request("PATCH", "/twins/d1", body={"properties": {"desired": {"rate": 6}}},
                      headers={"If-Match": f'"{t0["etag"]}"'})
    assert r.status == 412 and r.error_code == "PreconditionFailed", r
    assert cloud.twin("d1") == t1
    # Merge: null deletes; PUT replaces desired and tags whole.
    t2 = cloud.update_twin("d1", None, {"properties": {"desired": {"rate": None, "a": {"b": 1}}}})
    assert t2.json["properties"]["desired"] == {"a": {"b": 1}, "$version": 3}
    r = cloud.request("PUT", "/twins/d1", body={"tags": {}, "properties": {"desired": {"z": 1}}})
    assert r.status == 200, r
    assert r.json["properties"]["desired"] == {"z": 1, "$version": 4}
    assert r.json["tags"] == {}


def invalid_twin_patches():
    return {
        "too deep": {"properties": {"desired": nest(11)}},
        "string too long": {"properties": {"desired": {"s": "x" * 4097}}},
        "patch over 32 KiB": {"properties": {"desired": {f"k{i}": "x" * 4000
                                                          for i in range(9)}}},
        "dot in name": {"properties": {"desired": {"a.b": 1}}},
        "dollar in name": {"properties": {"desired": {"a$b": 1}}},
        "integer over 2^52": {"properties": {"desired": {"n": 2 ** 53}}},
        "null in array": {"properties": {"desired": {"a": [None]}}},
        "reported by the service": {"properties": {"reported": {"a": 1}}},
        "desired not an object": {"properties": {"desired": [1]}},
        "tags not an object": {"tags": "x"},
        "tags over 8 KiB": {"tags": {f"t{i}": "x" * 3000 for i in range(3)}},
        "not an object": [1, 2],
    }


@pytest.mark.parametrize("case", sorted(invalid_twin_patches()))
def test_invalid_twin_patch_is_400_and_changes_nothing(shared_cloud, case):
    cloud = shared_cloud
    cloud.set_desired("d1", None, {"keep": 1})
    before = cloud.twin("d1")
    r = cloud.update_twin("d1", None, invalid_twin_patches()[case])
    assert r.status == 400 and r.error_code == "ArgumentInvalid", r
    assert len(r.message) > len("ErrorCode:ArgumentInvalid;") + 5, r
    assert cloud.twin("d1") == before


def test_desired_section_over_32k_is_refused(cloud):
    cloud.create_device("d1")
    for i in range(8):
        cloud.set_desired("d1", None, {f"k{i}": "x" * 4000})
    before = cloud.twin("d1")
    r = cloud.update_twin("d1", None, {"properties": {"desired": {"k8": "x" * 4000}}})
    assert r.status == 400 and r.error_code == "ArgumentInvalid", r
    assert cloud.twin("d1") == before


# --------------------------------------------------------------------------------------------
# bad requests: a clear error and nothing stored


BAD_REQUESTS = [
    # (name, method, target, raw body, status, code, path that must still be 404 after)
    ("device body not JSON", "PUT", "/devices/d2", "{bad", 400, "ArgumentInvalid", "/devices/d2"),
    ("device body empty", "PUT", "/devices/d2", "", 400, "ArgumentInvalid", "/devices/d2"),
    ("device body an array", "PUT", "/devices/d2", "[]", 400, "ArgumentInvalid", "/devices/d2"),
    ("device id differs", "PUT", "/devices/d2", '{"deviceId": "d3"}', 400, "ArgumentInvalid",
     "/devices/d2"),
    ("bad status", "PUT", "/devices/d2", '{"status": "sleepy"}', 400, "ArgumentInvalid",
     "/devices/d2"),
    ("iotEdge not a bool", "PUT", "/devices/d2", '{"capabilities": {"iotEdge": "yes"}}', 400,
     "ArgumentInvalid", "/devices/d2"),
    ("key not base64", "PUT", "/devices/d2",
     '{"authentication": {"type": "sas", "symmetricKey": {"primaryKey": "not base64!"}}}', 400,
     "ArgumentInvalid", "/devices/d2"),
    ("bad device id", "PUT", "/devices/a%20b", "{}", 400, "ArgumentInvalid", "/devices/a%20b"),
    ("module body not JSON", "PUT", "/devices/d1/modules/m2", "{bad", 400, "ArgumentInvalid",
     "/devices/d1/modules/m2"),
    ("twin patch not JSON", "PATCH", "/twins/d1", "{\"properties\":", 400, "ArgumentInvalid",
     None),
    ("method body not JSON", "POST", "/twins/d1/methods", "nope", 400, "ArgumentInvalid", None),
    ("method without name", "POST", "/twins/d1/methods", '{"payload": 1}', 400,
     "ArgumentInvalid", None),
    ("method timeout too long", "POST", "/twins/d1/methods",
     '{"methodName": "m", "responseTimeoutInSeconds": 301}', 400, "ArgumentInvalid", None),
    ("method timeout too short", "POST", "/twins/d1/methods",
     '{"methodName": "m", "responseTimeoutInSeconds": 4}', 400, "ArgumentInvalid", None),
    ("method name too long", "POST", "/twins/d1/methods", json.dumps({"methodName": "m" * 101}),
     400, "ArgumentInvalid", None),
    ("method payload too big", "POST", "/twins/d1/methods",
     json.dumps({"methodName": "m", "payload": "x" * (128 * 1024 + 1)}), 400, "ArgumentInvalid",
     None),
    ("deployment to a plain device", "POST", "/devices/d1/applyConfigurationContent",
     json.dumps({"modulesContent": {"m": {"properties.desired": {"a": 1}}}}), 400,
     "ArgumentInvalid", "/devices/d1/modules/m"),
    ("messages limit 0", "GET", "/cairn/messages?limit=0", None, 400, "ArgumentInvalid", None),
    ("messages limit not a number", "GET", "/cairn/messages?limit=ten", None, 400,
     "ArgumentInvalid", None),
    ("messages after negative", "GET", "/cairn/messages?after=-1", None, 400, "ArgumentInvalid",
     None),
    ("bad %-escape", "GET", "/devices/%zz", None, 400, "ArgumentInvalid", None),
    ("unknown path", "GET", "/nothing/here", None, 404, "NotFound", None),
    ("wrong verb", "DELETE", "/devices", None, 405, "MethodNotAllowed", None),
    ("method on unknown device", "POST", "/twins/ghost/methods", '{"methodName": "m"}', 404,
     "DeviceNotFound", None),
    ("twin of unknown device", "PATCH", "/twins/ghost", '{"tags": {"a": 1}}', 404,
     "DeviceNotFound", "/devices/ghost"),
]


@pytest.mark.parametrize("case", BAD_REQUESTS, ids=[c[0] for c in BAD_REQUESTS])
def test_bad_request_is_a_clear_error_and_stores_nothing(shared_cloud, case):
    cloud = shared_cloud
    _, method, target, raw, status, code, absent = case
    before = (cloud.call("GET", "/devices"), cloud.twin("d1"), cloud.status())
    r = cloud.request(method, target, raw=raw)
    assert r.status == status and r.error_code == code, r
    assert r.message.split(";", 1)[1].strip(), f"no explanation in {r}"
    if status == 405:
        assert r.headers.get("allow") == "GET", r.headers
    assert (cloud.call("GET", "/devices"), cloud.twin("d1"), cloud.status()) == before
    if absent:
        assert cloud.request("GET", absent).status == 404


# --------------------------------------------------------------------------------------------
# service tokens


def bad_tokens(cloud):
    now = int(time.time())
    wrong_key = "QUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUE="
    return {
        "missing": "",
        "not a SAS token": "Bearer abc",
        "expired": cloud.service_token(expiry=now - 1),
        "wrong key": cloud.service_token(key=wrong_key),
        "unknown policy": cloud.service_token(policy="nobody"),
        "no policy": cloud.service_token(policy=None),
        "wrong audience": cloud.service_token(audience="other.example"),
        "device key": None,  # filled in by the test: a device's own key is not a service key
        "garbled signature": cloud.service_token().replace("sig=", "sig=AA"),
    }


@pytest.mark.parametrize("case", ["missing", "not a SAS token", "expired", "wrong key",
                                  "unknown policy", "no policy", "wrong audience", "device key",
                                  "garbled signature"])
def test_bad_service_token_is_401_and_stores_nothing(shared_cloud, case):
    cloud = shared_cloud
    token = bad_tokens(cloud)[case]
    if case == "device key":
        token = cloud.service_token(key=cloud.device_key("d1"))
    before = (cloud.status(), cloud.twin("d1"))
    for method, target, body in [("PUT", "/devices/d2", {"deviceId": "d2"}),
                                 ("PATCH", "/twins/d1", {"properties": {"desired": {"a": 1}}}),
                                 ("DELETE", "/devices/d1", None),
                                 ("GET", "/devices/d1", None),
                                 ("GET", "/devices/nobody", None)]:
        r = cloud.request(method, target, body=body, token=token)
        # Unauthenticated callers learn nothing, not even whether "nobody" exists.
        assert r.status == 401 and r.error_code == "IotHubUnauthorizedAccess", (method, r)
    assert (cloud.status(), cloud.twin("d1")) == before
    assert cloud.request("GET", "/devices/d2").status == 404


def test_expired_token_says_so(shared_cloud):
    cloud = shared_cloud
    r = cloud.request("GET", "/devices", token=cloud.service_token(expiry=int(time.time()) - 60))
    assert r.status == 401 and "expired" in r.message, r


def test_audience_with_trailing_slash_is_accepted(shared_cloud):
    cloud = shared_cloud
    token = cloud.service_token(audience=cloud.hostname + "/")
    assert cloud.request("GET", "/devices", token=token).status == 200


# --------------------------------------------------------------------------------------------
# telemetry and twins from a device connected straight to the cloud


def test_device_telemetry_is_stored_and_listed(cloud, module_client):
    cloud.create_device("dev1")
    dev = CloudDevice(cloud, "dev1")
    c = module_client(dev, None)
    for i in range(5):
        c.publish_acked(json.dumps({"i": i}).encode(),
                        props={"$.mid": f"m{i}", "$.ct": "application/json", "k": str(i)})
    c.publish_acked(b"\xff\xfe", props={"$.mid": "bin"})
    # A re-send with a known messageId is stored once.
    c.publish_acked(b'{"i": 0}', props={"$.mid": "m0", "$.ct": "application/json"})
    wait_for(lambda: cloud.status()["telemetry"] == {"stored": 6, "duplicates": 1,
                                                     "duplicatesByKey": 0},
             what="6 stored and 1 duplicate")
    stored = cloud.all_messages(device_id="dev1")
    assert [m["messageId"] for m in stored] == ["m0", "m1", "m2", "m3", "m4", "bin"]
    assert [json.loads(m["body"])["i"] for m in stored[:5]] == list(range(5))
    assert stored[1]["properties"] == {"k": "1"}
    assert stored[1]["deviceId"] == "dev1" and stored[1]["moduleId"] == ""
    assert stored[5]["bodyEncoding"] == "base64"
    # Paging with after/limit.
    page = cloud.messages("dev1", limit=2)
    assert [m["messageId"] for m in page] == ["m0", "m1"]
    page = cloud.messages("dev1", after=page[-1]["seq"], limit=2)
    assert [m["messageId"] for m in page] == ["m2", "m3"]
    assert cloud.messages("nobody") == []
    # The JSON-lines file has the same messages.
    assert [m["messageId"] for m in cloud.messages_file()] == [m["messageId"] for m in stored]
    assert cloud.call("GET", "/devices/dev1")["connectionState"] == "Connected"


def test_device_telemetry_with_a_dedupe_key_is_stored_once(cloud, module_client):
    # What cairnd's cloud link sends: no messageId, the key as an application property.
    cloud.create_device("dev1")
    c = module_client(CloudDevice(cloud, "dev1"), None)
    TEXT = {"$.ct": "text/plain"}
    c.publish_acked(b"first", props={"cairn-dedupe-key": "s.0.1.2027", "k": "1", **TEXT})
    c.publish_acked(b"first again", props={"cairn-dedupe-key": "s.0.1.2027", **TEXT})
    c.publish_acked(b"second", props={"cairn-dedupe-key": "s.0.2.2027", **TEXT})
    # A value no cairnd makes is not a key: an ordinary property, stored every time.
    too_long = "x" * 81
    c.publish_acked(b"long", props={"cairn-dedupe-key": too_long, **TEXT})
    c.publish_acked(b"long", props={"cairn-dedupe-key": too_long, **TEXT})
    wait_for(lambda: cloud.status()["telemetry"] == {"stored": 4, "duplicates": 1,
                                                     "duplicatesByKey": 1},
             what="4 stored and 1 duplicate by key")
    stored = cloud.all_messages(device_id="dev1")
    assert [m["body"] for m in stored] == ["first", "second", "long", "long"]
    assert [m.get("dedupeKey") for m in stored] == ["s.0.1.2027", "s.0.2.2027", None, None]
    assert stored[0]["properties"] == {"k": "1"}
    assert stored[2]["properties"] == {"cairn-dedupe-key": too_long}
    assert all(m["messageId"] == "" for m in stored)
    assert [m["body"] for m in cloud.messages_file()] == ["first", "second", "long", "long"]


def test_device_twin_over_mqtt_and_rest(cloud, module_client):
    cloud.create_device("dev1")
    c = module_client(CloudDevice(cloud, "dev1"), None)
    c.enable_twin()
    cloud.set_desired("dev1", None, {"rate": 3})
    [patch] = c.expect_desired(1)
    assert patch == {"rate": 3, "$version": 2}
    assert c.twin_get()["desired"] == {"rate": 3, "$version": 2}
    assert c.patch_reported({"rate": 3, "ok": True}) == 204
    reported = cloud.twin("dev1")["properties"]["reported"]
    assert reported == {"rate": 3, "ok": True, "$version": 2}
    # Bad reported patches: 400 over MQTT, nothing stored, counted.
    for bad in (nest(11), {"a.b": 1}, {"s": "x" * 4097}, b"{nope"):
        status, _ = c.twin_request("PATCH", bad)
        assert status == 400
    assert cloud.twin("dev1")["properties"]["reported"] == reported
    assert cloud.status()["twins"] == {"reportedPatches": 1, "reportedRejected": 4}


def test_disabled_device_cannot_connect(cloud, module_client):
    d = cloud.create_device("dev1")
    cloud.call("PUT", "/devices/dev1", {"deviceId": "dev1", "status": "disabled"},
               headers={"If-Match": "*"})
    c = module_client(CloudDevice(cloud, "dev1", key=d["authentication"]["symmetricKey"]
                                  ["primaryKey"]), None, expect_rc=5)
    assert not c.is_connected()


def test_device_token_for_unknown_device_is_refused(cloud, module_client):
    d = cloud.create_device("dev1")
    key = d["authentication"]["symmetricKey"]["primaryKey"]
    # A key that is valid for dev1 signs nothing for a device the registry does not know.
    module_client(CloudDevice(cloud, "ghost", key=key), None, expect_rc=5)
    assert cloud.request("GET", "/devices/ghost").status == 404


def test_module_of_plain_device_cannot_sign_with_device_key(cloud, module_client):
    # Only edge devices may sign for their modules (and so register them).
    d = cloud.create_device("dev1")
    key = d["authentication"]["symmetricKey"]["primaryKey"]
    module_client(CloudDevice(cloud, "dev1", key=key, module_keys={"m": key}), "m",
                  expect_rc=5)
    assert cloud.request("GET", "/devices/dev1/modules/m").status == 404


def test_edge_device_key_registers_its_modules(cloud, module_client):
    d = cloud.create_device("e1", edge=True)
    key = d["authentication"]["symmetricKey"]["primaryKey"]
    c = module_client(CloudDevice(cloud, "e1", key=key, module_keys={"m": key}), "m")
    assert c.is_connected()
    m = cloud.call("GET", "/devices/e1/modules/m")
    assert m["managedBy"] == "iotEdge" and m["connectionState"] == "Connected"


# --------------------------------------------------------------------------------------------
# cairn cloud (the command line)


def test_cli_device_create_list_and_tail(cloud, module_client):
    out = json.loads(cloud.cli("device-create", "e9", "--edge").stdout)
    assert out["deviceId"] == "e9" and out["capabilities"] == {"iotEdge": True}
    cloud.create_device("d1")
    lines = cloud.cli("devices").stdout.splitlines()
    assert lines == ["d1\tDisconnected", "e9\tDisconnected"]
    c = module_client(CloudDevice(cloud, "d1"), None)
    for i in range(3):
        c.publish_acked(json.dumps({"i": i}).encode(),
                        props={"$.mid": f"m{i}", "$.ct": "application/json"})
    wait_for(lambda: cloud.stored_count() == 3, what="3 messages stored")
    tail = [json.loads(x) for x in cloud.cli("messages", "tail", "--device", "d1").stdout
            .splitlines()]
    assert [m["messageId"] for m in tail] == ["m0", "m1", "m2"]
    r = cloud.cli("device-create", "d1", check=False)
    assert r.returncode == 1 and "409" in r.stderr and r.stdout == "", r


def test_cli_refuses_bad_connection_string_and_wrong_ca(cloud, tmp_path):
    r = subprocess.run([str(CAIRN), "cloud", "--connection-string", "HostName=x", "devices"],
                       capture_output=True, text=True, timeout=30)
    assert r.returncode == 2 and "SharedAccessKeyName" in r.stderr, r.stderr
    other_ca = tmp_path / "other.pem"
    other_ca.write_text(open("/etc/ssl/certs/ca-certificates.crt").read())
    r = subprocess.run([str(CAIRN), "cloud", "--connection-string", cloud.connection_string,
                        "--ca", str(other_ca), "--port", str(cloud.https_port), "devices"],
                       capture_output=True, text=True, timeout=30)
    assert r.returncode == 1 and r.stderr.strip(), r


def test_cli_tail_follow_prints_each_message_once(cloud, module_client):
    cloud.create_device("d1")
    c = module_client(CloudDevice(cloud, "d1"), None)
    for i in range(2):
        c.publish_acked(b"{}", props={"$.mid": f"m{i}", "$.ct": "application/json"})
    wait_for(lambda: cloud.stored_count() == 2, what="2 messages stored")
    proc = subprocess.Popen([str(CAIRN), "cloud", "--connection-string", cloud.connection_string,
                             "--ca", str(cloud.ca_path), "--port", str(cloud.https_port),
                             "messages", "tail", "--device", "d1", "--follow"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    lines = queue.Queue()
    threading.Thread(target=lambda: [lines.put(x) for x in proc.stdout], daemon=True).start()

    def next_id():
        return json.loads(lines.get(timeout=DEFAULT_TIMEOUT))["messageId"]

    try:
        assert [next_id(), next_id()] == ["m0", "m1"]
        c.publish_acked(b"{}", props={"$.mid": "m2", "$.ct": "application/json"})
        # The next line must be the new message, not a repeat of an old one.
        assert next_id() == "m2"
    finally:
        proc.kill()
        proc.communicate()


# --------------------------------------------------------------------------------------------
# the official service SDK (azure-iothub) driving the REST API


def sdk(cloud, op, args=None, **kw):
    return service(cloud.connection_string, op, args, ca_file=cloud.ca_path,
                   port=cloud.https_port, host=CLOUD_HOST, **kw)


@skip_without_node_sdk
def test_service_sdk_registry_and_twins(cloud):
    r = sdk(cloud, "create_device", {"deviceId": "e1", "capabilities": {"iotEdge": True}})
    assert r["statusCode"] == 200
    device = r["result"]
    assert device["deviceId"] == "e1" and device["capabilities"]["iotEdge"] is True
    assert device["authentication"]["symmetricKey"]["primaryKey"]
    # What the SDK made is what the REST API holds.
    assert cloud.device_key("e1") == device["authentication"]["symmetricKey"]["primaryKey"]
    assert sdk(cloud, "get_device", {"deviceId": "e1"})["result"]["etag"] == device["etag"]
    assert [d["deviceId"] for d in sdk(cloud, "list_devices")["result"]] == ["e1"]

    r = sdk(cloud, "add_module", {"deviceId": "e1", "moduleId": "filter"})
    assert r["statusCode"] in (200, 201) and r["result"]["moduleId"] == "filter"
    assert sdk(cloud, "get_module", {"deviceId": "e1", "moduleId": "filter"})["result"][
        "moduleId"] == "filter"

    twin = sdk(cloud, "get_twin", {"deviceId": "e1"})["result"]
    assert twin["deviceId"] == "e1" and twin["properties"]["desired"]["$version"] == 1
    updated = sdk(cloud, "update_twin", {"deviceId": "e1", "etag": twin["etag"],
                                         "patch": {"tags": {"site": "n"},
                                                   "properties": {"desired": {"rate": 4}}}})
    assert updated["result"]["properties"]["desired"]["rate"] == 4
    assert updated["result"]["tags"] == {"site": "n"}
    assert cloud.twin("e1")["properties"]["desired"] == {"rate": 4, "$version": 2}

    sdk(cloud, "update_module_twin", {"deviceId": "e1", "moduleId": "filter",
                                      "patch": {"properties": {"desired": {"th": 30}}}})
    mt = sdk(cloud, "get_module_twin", {"deviceId": "e1", "moduleId": "filter"})["result"]
    assert mt["moduleId"] == "filter" and mt["properties"]["desired"]["th"] == 30

    assert sdk(cloud, "delete_device", {"deviceId": "e1"})["statusCode"] == 204
    assert cloud.request("GET", "/devices/e1").status == 404


@skip_without_node_sdk
def test_service_sdk_sees_typed_errors(cloud):
    sdk(cloud, "create_device", {"deviceId": "d1"})
    cases = [
        ("create_device", {"deviceId": "d1"}, 409, "DeviceAlreadyExistsError"),
        ("get_device", {"deviceId": "ghost"}, 404, "DeviceNotFoundError"),
        ("update_twin", {"deviceId": "d1", "etag": "stale",
                         "patch": {"properties": {"desired": {"a": 1}}}}, 412,
         "InvalidEtagError"),
        ("update_twin", {"deviceId": "d1", "patch": {"properties": {"desired": nest(11)}}}, 400,
         "ArgumentError"),
        ("invoke_device_method", {"deviceId": "d1", "methodName": "m",
                                  "responseTimeoutInSeconds": 4}, 400, "ArgumentError"),
    ]
    for op, args, status, name in cases:
        with pytest.raises(ServiceError) as e:
            sdk(cloud, op, args)
        assert (e.value.status_code, e.value.reply.get("name")) == (status, name), (op, e.value)
        assert e.value.reply["error"], "the SDK's error must carry the explanation"
    assert cloud.twin("d1")["properties"]["desired"] == {"$version": 1}


@skip_without_node_sdk
def test_service_sdk_with_wrong_key_is_unauthorized(cloud):
    fields = dict(p.split("=", 1) for p in cloud.connection_string.split(";"))
    fields["SharedAccessKey"] = "QUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUE="
    bad = ";".join(f"{k}={v}" for k, v in fields.items())
    with pytest.raises(ServiceError) as e:
        service(bad, "create_device", {"deviceId": "d9"}, ca_file=cloud.ca_path,
                port=cloud.https_port, host=CLOUD_HOST)
    assert e.value.status_code == 401 and e.value.reply["name"] == "UnauthorizedError"
    assert cloud.request("GET", "/devices/d9").status == 404


@skip_without_node_sdk
def test_service_sdk_applies_a_deployment(cloud):
    sdk(cloud, "create_device", {"deviceId": "e1", "capabilities": {"iotEdge": True}})
    content = {"modulesContent": {
        "$edgeAgent": {"properties.desired": {"schemaVersion": "1.1", "modules": {}}},
        "$edgeHub": {"properties.desired": {"schemaVersion": "1.1",
                                            "routes": {"r": "FROM /messages/* INTO $upstream"}}},
        "filter": {"properties.desired": {"threshold": 30}}}}
    r = sdk(cloud, "apply_configuration", {"deviceId": "e1", "content": content})
    assert r["statusCode"] == 204
    hub_twin = cloud.twin("e1", "%24edgeHub")["properties"]["desired"]
    assert hub_twin["routes"] == {"r": "FROM /messages/* INTO $upstream"}
    assert cloud.twin("e1", "filter")["properties"]["desired"]["threshold"] == 30
    deployment = cloud.call("GET", "/cairn/devices/e1/deployment")
    assert deployment["version"] == 1 and deployment["content"] == content
    # To a device that is not an edge device: refused, nothing created.
    sdk(cloud, "create_device", {"deviceId": "plain"})
    with pytest.raises(ServiceError) as e:
        sdk(cloud, "apply_configuration", {"deviceId": "plain", "content": content})
    assert e.value.status_code == 400
    assert cloud.request("GET", "/devices/plain/modules/filter").status == 404


def test_rest_api_requires_tls_with_the_cloud_ca(cloud, tmp_path):
    # The CA of another cloud does not verify this one.
    other = tmp_path / "other-ca.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt",
                    "ec_paramgen_curve:P-256", "-nodes", "-days", "1", "-subj", "/CN=x",
                    "-keyout", str(tmp_path / "k.pem"), "-out", str(other)],
                   check=True, capture_output=True)
    with pytest.raises(Exception) as e:
        https_request(CLOUD_HOST, cloud.https_port, "GET", "/devices", other,
                      headers={"Authorization": cloud.service_token()})
    assert "CERTIFICATE_VERIFY_FAILED" in str(e.value) or "certificate" in str(e.value).lower()
