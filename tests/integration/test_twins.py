"""Module twins through cairnd (docs/protocol.md §3.4, §4 and §8.3).

Standalone: no cloud, desired properties come from `cairn twin update-desired` (or the
deployment manifest) and everything is cached on the device.
With a cloud: cairnd's upstream link keeps each module twin in step with cairn-cloud, the twin
of record; a TcpProxy between the two takes the device offline while the cloud stays up.

Clients: paho (conftest.ModuleClient) and the official Node device SDK (node_sdk.NodeModule).
"""
import json

import pytest

from conftest import edge_device, wait_for
from node_sdk import NODE_SDK_SKIP, node_module  # noqa: F401 (node_module: fixture)

# Sync takes a resync round trip through the cloud after the link is back (back-off up to 2 s).
CLOUD_TIMEOUT = 30.0

skip_without_node_sdk = pytest.mark.skipif(NODE_SDK_SKIP is not None, reason=NODE_SDK_SKIP or "")


def nest(levels, leaf=None):
    """`levels` objects nested below the section root, the innermost holding "p": leaf; IoT
    Hub's own example of the deepest allowed patch is nest(10)."""
    doc = {"p": "v" if leaf is None else leaf}
    for i in range(levels, 0, -1):
        doc = {f"l{i}": doc}
    return doc


def without_meta(section):
    return {k: v for k, v in section.items() if not k.startswith("$")}


# --------------------------------------------------------------------------------------------
# standalone: paho


def test_fresh_twin_is_empty_with_version_1(cairnd, module_client):
    m = module_client(cairnd, "filter")
    m.enable_twin()
    assert m.twin_get() == {"desired": {"$version": 1}, "reported": {"$version": 1}}


def test_reported_patch_round_trip(cairnd, module_client):
    m = module_client(cairnd, "filter")
    m.enable_twin()
    assert m.patch_reported({"status": "running", "nested": {"a": 1, "b": [1, 2]},
                             "ratio": 0.5}) == 204
    twin = m.twin_get()
    assert twin["reported"] == {"status": "running", "nested": {"a": 1, "b": [1, 2]},
                                "ratio": 0.5, "$version": 2}
    # Merge patch: null deletes, absent members stay, objects merge.
    assert m.patch_reported({"nested": {"a": None, "c": "x"}, "status": "idle"}) == 204
    twin = m.twin_get()
    assert twin["reported"] == {"status": "idle", "nested": {"b": [1, 2], "c": "x"},
                                "ratio": 0.5, "$version": 3}
    assert twin["desired"] == {"$version": 1}
    # The command line shows the same cached twin.
    assert cairnd.twin_view("filter")["reported"] == twin["reported"]
    assert cairnd.status()["twins"]["reportedPatches"] == 2


def test_twins_are_per_module(cairnd, module_client):
    a = module_client(cairnd, "filter")
    b = module_client(cairnd, "sensor")
    for m in (a, b):
        m.enable_twin()
    assert a.patch_reported({"who": "filter"}) == 204
    assert b.twin_get()["reported"] == {"$version": 1}
    assert a.twin_get()["reported"]["who"] == "filter"


def test_twin_survives_restart_and_kill9(cairnd, module_client):
    m = module_client(cairnd, "filter")
    m.enable_twin()
    assert m.patch_reported({"generation": 1}) == 204
    cairnd.cli("twin", "update-desired", "filter", '{"rate": 5}')
    m.close()
    cairnd.restart()
    m = module_client(cairnd, "filter")
    m.enable_twin()
    twin = m.twin_get()
    assert twin["reported"] == {"generation": 1, "$version": 2}
    assert twin["desired"] == {"rate": 5, "$version": 2}
    # 204 means on disk: a kill -9 right after the answer loses nothing.
    assert m.patch_reported({"generation": 2}) == 204
    m.close()
    cairnd.kill9()
    cairnd.start()
    m = module_client(cairnd, "filter")
    m.enable_twin()
    assert m.twin_get()["reported"] == {"generation": 2, "$version": 3}


def test_local_desired_update_reaches_module(cairnd, module_client):
    m = module_client(cairnd, "filter")
    m.enable_twin()
    assert m.twin_get()["desired"] == {"$version": 1}
    out = cairnd.cli("twin", "update-desired", "filter", '{"rate": 5, "cfg": {"a": 1, "b": 2}}')
    delivered = json.loads(out.stdout)
    assert delivered == {"rate": 5, "cfg": {"a": 1, "b": 2}, "$version": 2}
    [patch] = m.expect_desired(1)
    assert patch == delivered
    cairnd.cli("twin", "update-desired", "filter", '{"cfg": {"a": null}}')
    [patch] = m.expect_desired(1)
    assert patch == {"cfg": {"a": None}, "$version": 3}
    assert m.twin_get()["desired"] == {"rate": 5, "cfg": {"b": 2}, "$version": 3}
    assert cairnd.twin_view("filter")["desired"] == {"rate": 5, "cfg": {"b": 2}, "$version": 3}


def test_local_desired_before_the_module_connects(cairnd, module_client):
    cairnd.cli("twin", "update-desired", "late", '{"threshold": 30}')
    m = module_client(cairnd, "late")
    m.enable_twin()
    assert m.twin_get()["desired"] == {"threshold": 30, "$version": 2}
    assert m.desired.empty()  # nothing was pushed before it subscribed


def test_twin_get_of_unknown_module_is_an_error(cairnd):
    r = cairnd.cli("twin", "get", "nobody", check=False)
    assert r.returncode == 1
    assert "nobody" in r.stderr and "404" in r.stderr, r.stderr


# --------------------------------------------------------------------------------------------
# bad input: refused with 400, nothing stored


BAD_REPORTED = {
    "too deep": nest(11),
    "string too long": {"s": "x" * 4097},
    "patch over 32 KiB": {f"k{i}": "x" * 4000 for i in range(9)},
    "dot in name": {"a.b": 1},
    "dollar name": {"$secret": 1},
    "space in name": {"a b": 1},
    "hash in name": {"a#b": 1},
    "integer over 2^52": {"n": 2 ** 52},
    "null in array": {"arr": [1, None]},
    "null member of an object in an array": {"arr": [{"a": None}]},
    "not an object": [1, 2],
    "not JSON": b"{\"status\": ",
    "name over 1024 bytes": {"n" * 1025: 1},
}


@pytest.mark.parametrize("case", sorted(BAD_REPORTED))
def test_bad_reported_patch_is_refused_and_changes_nothing(cairnd, module_client, case):
    m = module_client(cairnd, "filter")
    m.enable_twin()
    assert m.patch_reported({"keep": "me"}) == 204
    before = m.twin_get()
    status, body = m.twin_request("PATCH", BAD_REPORTED[case])
    assert status == 400, (status, body)
    message = json.loads(body)["message"]
    assert message, "the 400 must say what is wrong"
    assert m.twin_get() == before
    assert cairnd.twin_view("filter") == before
    assert cairnd.status()["twins"]["reportedRejected"] == 1
    # Still usable afterwards, and the version continues from where it was.
    assert m.patch_reported({"after": 1}) == 204
    assert m.twin_get()["reported"]["$version"] == before["reported"]["$version"] + 1


def test_limits_accept_the_boundary_values(cairnd, module_client):
    m = module_client(cairnd, "filter")
    m.enable_twin()
    assert m.patch_reported(nest(10)) == 204
    assert m.patch_reported({"s": "x" * 4096, "n": 2 ** 52 - 1, "m": -2 ** 52}) == 204
    assert m.patch_reported({"n" * 1024: 1}) == 204
    twin = m.twin_get()["reported"]
    assert twin["l1"] == nest(10)["l1"]
    assert twin["n"] == 2 ** 52 - 1 and twin["m"] == -2 ** 52


def test_reported_section_over_32k_is_refused(cairnd, module_client):
    # Each patch is small; the section they add up to may not pass 32 KiB.
    m = module_client(cairnd, "filter")
    m.enable_twin()
    for i in range(8):
        assert m.patch_reported({f"k{i}": "x" * 4000}) == 204
    before = m.twin_get()
    status, body = m.twin_request("PATCH", {"k8": "x" * 4000})
    assert status == 400, body
    assert m.twin_get() == before
    # Replacing a member with a smaller one still fits.
    assert m.patch_reported({"k0": "small"}) == 204


@pytest.mark.parametrize("patch,why", [
    ("{not json", "JSON"),
    (json.dumps(nest(11)), "deep"),
    (json.dumps({"s": "x" * 4097}), "4096"),
    (json.dumps({"a.b": 1}), "a.b"),
])
def test_bad_local_desired_is_refused_and_changes_nothing(cairnd, module_client, patch, why):
    m = module_client(cairnd, "filter")
    m.enable_twin()
    cairnd.cli("twin", "update-desired", "filter", '{"rate": 1}')
    [first] = m.expect_desired(1)
    assert first["$version"] == 2
    r = cairnd.cli("twin", "update-desired", "filter", patch, check=False)
    assert r.returncode == 1
    assert "400" in r.stderr and why.lower() in r.stderr.lower(), r.stderr
    assert m.twin_get()["desired"] == {"rate": 1, "$version": 2}
    # The next valid patch is the next version: the refused one was never applied.
    cairnd.cli("twin", "update-desired", "filter", '{"rate": 2}')
    [patch_] = m.expect_desired(1)
    assert patch_ == {"rate": 2, "$version": 3}


# --------------------------------------------------------------------------------------------
# standalone: the Node device SDK


@skip_without_node_sdk
def test_node_twin_get_and_reported_patch(cairnd, node_module):
    m = node_module(cairnd, "sender")
    m.open()
    twin = m.send("twin_get")
    assert twin["desired"]["$version"] == 1
    m.send("twin_patch", patch={"status": "running", "nested": {"a": 1}})
    twin = m.send("twin_get")
    assert twin["reported"]["status"] == "running"
    assert twin["reported"]["nested"] == {"a": 1}
    m.send("twin_patch", patch={"nested": {"a": None}})
    assert m.send("twin_get")["reported"]["nested"] == {}
    assert cairnd.twin_view("sender")["reported"] == {"status": "running", "nested": {},
                                                      "$version": 3}


@skip_without_node_sdk
def test_node_gets_local_desired_updates(cairnd, node_module):
    cairnd.cli("twin", "update-desired", "sender", '{"rate": 5}')
    m = node_module(cairnd, "sender")
    m.open()
    assert m.send("twin_get")["desired"]["rate"] == 5
    # The SDK first announces the whole desired section it got...
    assert m.wait_event("desired")["patch"]["rate"] == 5
    # ...then each patch cairnd pushes.
    cairnd.cli("twin", "update-desired", "sender", '{"rate": 6, "mode": "eco"}')
    event = m.wait_event("desired")
    assert event["patch"]["rate"] == 6 and event["patch"]["mode"] == "eco"
    assert event["patch"]["$version"] == 3


@skip_without_node_sdk
def test_node_bad_reported_patch_fails_and_changes_nothing(cairnd, node_module):
    m = node_module(cairnd, "sender")
    m.open()
    m.send("twin_patch", patch={"ok": 1})
    r = m.request("twin_patch", patch=nest(11))
    # cairnd refuses it either way; the SDK must hear about it.
    assert cairnd.twin_view("sender")["reported"] == {"ok": 1, "$version": 2}
    assert cairnd.status()["twins"]["reportedRejected"] == 1
    assert not r["ok"], f"the SDK reported success for a patch cairnd refused: {r}"


# --------------------------------------------------------------------------------------------
# with the cloud


@pytest.fixture
def edge(cloud, cairnd_factory):
    return edge_device(cloud, cairnd_factory)


def connect_twin_client(edge, module_client, module):
    """A paho module with twin subscriptions whose cloud link is up."""
    m = module_client(edge, module)
    m.enable_twin()
    edge.wait_link(module, timeout=CLOUD_TIMEOUT)
    return m


def cloud_reported(cloud, device, module):
    return without_meta(cloud.twin(device, module)["properties"]["reported"])


def test_module_is_registered_in_the_cloud_on_connect(cloud, edge, module_client):
    connect_twin_client(edge, module_client, "filter")
    module = cloud.call("GET", f"/devices/{edge.device_id}/modules/filter")
    assert module["moduleId"] == "filter" and module["deviceId"] == edge.device_id
    twin = cloud.twin(edge.device_id, "filter")
    assert twin["moduleId"] == "filter"
    assert twin["connectionState"] == "Connected"


def test_cloud_desired_reaches_module_and_get_matches_cloud(cloud, edge, module_client):
    m = connect_twin_client(edge, module_client, "filter")
    assert m.twin_get()["desired"]["$version"] == 1
    written = cloud.set_desired(edge.device_id, "filter", {"rate": 7, "cfg": {"a": 1}})
    version = written["properties"]["desired"]["$version"]
    [patch] = m.expect_desired(1, timeout=CLOUD_TIMEOUT)
    assert patch == {"rate": 7, "cfg": {"a": 1}, "$version": version}
    cloud.set_desired(edge.device_id, "filter", {"cfg": {"a": None}})
    [patch] = m.expect_desired(1, timeout=CLOUD_TIMEOUT)
    assert patch == {"cfg": {"a": None}, "$version": version + 1}
    twin = m.twin_get()
    assert twin["desired"] == {"rate": 7, "cfg": {}, "$version": version + 1}
    assert edge.twin_view("filter")["desired"] == twin["desired"]


def test_reported_patch_reaches_cloud(cloud, edge, module_client):
    m = connect_twin_client(edge, module_client, "filter")
    assert m.patch_reported({"fw": "1.2.3", "sensors": {"t": 21.5}}) == 204
    assert m.patch_reported({"sensors": {"h": 40}}) == 204
    expected = {"fw": "1.2.3", "sensors": {"t": 21.5, "h": 40}}
    wait_for(lambda: cloud_reported(cloud, edge.device_id, "filter") == expected,
             CLOUD_TIMEOUT, what="reported properties in the cloud")
    assert m.twin_get()["reported"] == {**expected, "$version": 3}


def test_get_fetches_the_cloud_twin(cloud, edge, module_client):
    # Desired set in the cloud before the module ever asked: a GET brings it.
    first = connect_twin_client(edge, module_client, "filter")
    first.disconnect()
    cloud.set_desired(edge.device_id, "filter", {"mode": "cloud"})
    m = connect_twin_client(edge, module_client, "filter")
    assert m.twin_get()["desired"]["mode"] == "cloud"
    assert edge.status()["twins"]["getsFromCloud"] >= 1


def test_local_desired_update_is_refused_with_a_cloud(cloud, edge, module_client):
    m = connect_twin_client(edge, module_client, "filter")
    r = edge.cli("twin", "update-desired", "filter", '{"rate": 1}', check=False)
    assert r.returncode == 1
    assert "409" in r.stderr and "cloud" in r.stderr, r.stderr
    assert m.twin_get()["desired"] == {"$version": 1}
    assert without_meta(cloud.twin(edge.device_id, "filter")["properties"]["desired"]) == {}


@pytest.fixture
def offline_edge(cloud, cairnd_factory, tcp_proxy):
    """An edge device whose cloud link runs through a TcpProxy (edge.proxy)."""
    proxy = tcp_proxy(cloud.mqtt_port)
    d = edge_device(cloud, cairnd_factory, proxy=proxy)
    d.proxy = proxy
    return d


def go_offline(edge, module):
    edge.proxy.cut()
    wait_for(lambda: edge.link_state(module) not in ("online", None), CLOUD_TIMEOUT,
             what=f"the link of {module} to drop")
    assert not edge.upstream_status()["online"]


def test_desired_changed_while_offline_arrives_after_reconnect(cloud, offline_edge,
                                                               module_client):
    edge = offline_edge
    m = connect_twin_client(edge, module_client, "filter")
    cloud.set_desired(edge.device_id, "filter", {"keep": 1, "drop": 2, "nested": {"x": 1}})
    [first] = m.expect_desired(1, timeout=CLOUD_TIMEOUT)
    go_offline(edge, "filter")
    # Two changes while offline: the device missed both and must catch up with one patch.
    cloud.set_desired(edge.device_id, "filter", {"drop": None, "nested": {"y": 2}})
    written = cloud.set_desired(edge.device_id, "filter", {"mode": "eco"})
    version = written["properties"]["desired"]["$version"]
    assert version == first["$version"] + 2
    # Offline, the module is served from the cache: the old desired.
    assert m.twin_get()["desired"] == first
    assert m.desired.empty()
    edge.proxy.restore()
    [patch] = m.expect_desired(1, timeout=CLOUD_TIMEOUT)
    assert patch == {"drop": None, "nested": {"y": 2}, "mode": "eco", "$version": version}
    assert m.twin_get()["desired"] == {"keep": 1, "nested": {"x": 1, "y": 2}, "mode": "eco",
                                       "$version": version}


def test_reported_changes_made_offline_arrive_in_cloud(cloud, offline_edge, module_client):
    edge = offline_edge
    m = connect_twin_client(edge, module_client, "filter")
    assert m.patch_reported({"state": "online", "gone": 1}) == 204
    wait_for(lambda: cloud_reported(cloud, edge.device_id, "filter") == {"state": "online",
                                                                          "gone": 1},
             CLOUD_TIMEOUT, what="first reported patch in the cloud")
    go_offline(edge, "filter")
    # Accepted at once while offline, and applied locally in order.
    assert m.patch_reported({"state": "offline-1", "count": 1}) == 204
    assert m.patch_reported({"count": 2, "gone": None}) == 204
    assert m.patch_reported({"state": "offline-3", "list": [1, 2, 3]}) == 204
    expected = {"state": "offline-3", "count": 2, "list": [1, 2, 3]}
    assert without_meta(m.twin_get()["reported"]) == expected
    assert cloud_reported(cloud, edge.device_id, "filter") == {"state": "online", "gone": 1}
    edge.proxy.restore()
    wait_for(lambda: cloud_reported(cloud, edge.device_id, "filter") == expected,
             CLOUD_TIMEOUT, what="offline reported patches in the cloud")
    # Once synchronised, device and cloud agree on the version too.
    cloud_version = cloud.twin(edge.device_id, "filter")["properties"]["reported"]["$version"]
    assert m.twin_get()["reported"] == {**expected, "$version": cloud_version}


def waiting_reported_patches(edge, module):
    """The reported patches the hub keeps for the cloud, read from its store."""
    import sqlite3
    db = sqlite3.connect(str(edge.home / "data" / "hub.db"), timeout=30)
    try:
        row = db.execute("SELECT value FROM kv WHERE tbl = 'twins' AND key = ?",
                         (f"{edge.device_id}/{module}",)).fetchone()
    finally:
        db.close()
    return json.loads(row[0])["pending"]


def test_many_offline_reported_patches_wait_as_one(cloud, offline_edge, module_client):
    # Each offline patch used to be queued and rewritten with all the others: the pending
    # state grew without a bound. They are folded into one patch, as edgeHub does.
    edge = offline_edge
    m = connect_twin_client(edge, module_client, "filter")
    other = connect_twin_client(edge, module_client, "other")
    go_offline(edge, "filter")
    for i in range(300):
        assert m.patch_reported({"count": i, f"k{i % 7}": i, "gone": None if i % 2 else i}) == 204
    expected = {"count": 299, "gone": None, **{f"k{i}": 294 + i for i in range(6)}, "k6": 293}
    expected = {k: v for k, v in expected.items() if v is not None}
    assert without_meta(m.twin_get()["reported"]) == expected
    assert len(waiting_reported_patches(edge, "filter")) == 1
    # Another module's twin is served meanwhile.
    assert other.patch_reported({"fine": True}) == 204
    edge.proxy.restore()
    wait_for(lambda: cloud_reported(cloud, edge.device_id, "filter") == expected,
             CLOUD_TIMEOUT, what="the folded reported patch in the cloud")
    cloud_version = cloud.twin(edge.device_id, "filter")["properties"]["reported"]["$version"]
    assert m.twin_get()["reported"] == {**expected, "$version": cloud_version}


def test_offline_reported_patches_survive_kill9(cloud, offline_edge, module_client):
    edge = offline_edge
    m = connect_twin_client(edge, module_client, "filter")
    go_offline(edge, "filter")
    assert m.patch_reported({"a": 1}) == 204
    assert m.patch_reported({"b": 2}) == 204
    m.close()
    edge.kill9()
    edge.proxy.restore()
    # No module connects: the pending patches alone make cairnd open the link.
    edge.start()
    wait_for(lambda: cloud_reported(cloud, edge.device_id, "filter") == {"a": 1, "b": 2},
             CLOUD_TIMEOUT, what="reported patches of an earlier run in the cloud")


def test_desired_changed_while_cairnd_was_down(cloud, edge, module_client):
    m = connect_twin_client(edge, module_client, "filter")
    cloud.set_desired(edge.device_id, "filter", {"rate": 1})
    m.expect_desired(1, timeout=CLOUD_TIMEOUT)
    m.close()
    edge.stop()
    written = cloud.set_desired(edge.device_id, "filter", {"rate": 2})
    edge.start()
    m = connect_twin_client(edge, module_client, "filter")
    twin = m.twin_get()
    assert twin["desired"] == {"rate": 2, "$version": written["properties"]["desired"]["$version"]}


def test_cloud_refuses_bad_desired_and_module_gets_nothing(cloud, edge, module_client):
    m = connect_twin_client(edge, module_client, "filter")
    before = cloud.twin(edge.device_id, "filter")
    r = cloud.update_twin(edge.device_id, "filter", {"properties": {"desired": nest(11)}})
    assert r.status == 400 and r.error_code == "ArgumentInvalid", r
    after = cloud.twin(edge.device_id, "filter")
    assert after["etag"] == before["etag"]
    assert after["properties"]["desired"]["$version"] == before["properties"]["desired"]["$version"]
    # The next valid change is the next version and the only patch the module sees.
    cloud.set_desired(edge.device_id, "filter", {"ok": True})
    [patch] = m.expect_desired(1, timeout=CLOUD_TIMEOUT)
    assert patch == {"ok": True, "$version": before["properties"]["desired"]["$version"] + 1}


@skip_without_node_sdk
def test_node_twin_with_the_cloud(cloud, edge, node_module):
    m = node_module(edge, "sender")
    m.open()
    edge.wait_link("sender", timeout=CLOUD_TIMEOUT)
    written = cloud.set_desired(edge.device_id, "sender", {"threshold": 30})
    twin = m.send("twin_get")
    assert twin["desired"]["threshold"] == 30
    assert twin["desired"]["$version"] == written["properties"]["desired"]["$version"]
    m.wait_event("desired", lambda e: e["patch"].get("threshold") == 30)
    cloud.set_desired(edge.device_id, "sender", {"threshold": 31})
    event = m.wait_event("desired", lambda e: e["patch"].get("threshold") == 31,
                         timeout=CLOUD_TIMEOUT)
    assert event["patch"]["$version"] == written["properties"]["desired"]["$version"] + 1
    m.send("twin_patch", patch={"seen": 31, "ok": True})
    wait_for(lambda: cloud_reported(cloud, edge.device_id, "sender") == {"seen": 31, "ok": True},
             CLOUD_TIMEOUT, what="the Node module's reported patch in the cloud")


@skip_without_node_sdk
def test_node_desired_changed_while_offline(cloud, offline_edge, node_module):
    edge = offline_edge
    m = node_module(edge, "sender")
    m.open()
    edge.wait_link("sender", timeout=CLOUD_TIMEOUT)
    m.send("twin_get")
    m.wait_event("desired")  # the SDK's announcement of the GET
    go_offline(edge, "sender")
    cloud.set_desired(edge.device_id, "sender", {"a": 1})
    written = cloud.set_desired(edge.device_id, "sender", {"b": 2})
    m.send("twin_patch", patch={"offline": True})
    edge.proxy.restore()
    event = m.wait_event("desired", timeout=CLOUD_TIMEOUT)
    assert event["patch"]["a"] == 1 and event["patch"]["b"] == 2
    assert event["patch"]["$version"] == written["properties"]["desired"]["$version"]
    wait_for(lambda: cloud_reported(cloud, edge.device_id, "sender") == {"offline": True},
             CLOUD_TIMEOUT, what="the reported patch made offline in the cloud")
