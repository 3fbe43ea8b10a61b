"""Revocation and identity limits, with real daemons and paho clients.

Deleting, disabling or re-keying an identity (cairnd's module identities, cairn-cloud's devices
and modules) closes its live MQTT sessions at once and its credentials stop working on the
HTTPS APIs; tokens valid for longer than the configured maximum are refused; in cairn-cloud an
edge device registers a bounded number of modules by connecting them and holds a bounded number
of connections; an edge device deletes its own modules' cloud identities (and only those), which
cairnd's agent does when a deployment drops a module.

"At once" is checked as "within a generous timeout far shorter than the keep-alive (600 s) and
the token's expiry (an hour)": no time is asserted.
"""
import time

import pytest

from conftest import (CLOUD_HOST, DEFAULT_TIMEOUT, CloudDevice, edge_device, https_request,
                      sas_token, wait_for)
from test_agent import manifest, modules, process_module, wait_running
from test_methods import gateway

KEEPALIVE = 600  # the client would not notice a dead connection for 15 minutes by itself
DAY = 24 * 3600
SLOW = max(DEFAULT_TIMEOUT, 60.0)


def wait_logged(daemon, text):
    """Waits for `text` in the daemon's log: the line is written as the answer goes out and may
    reach the file a moment after the client has the answer."""
    wait_for(lambda: text in daemon.log_text(), what=f"{text!r} in the log")


def assert_dropped(client, what):
    assert client.disconnected.wait(DEFAULT_TIMEOUT), f"{what}: the client is still connected"


def assert_alive(client):
    """Still connected and served: a twin GET round-trips."""
    assert not client.disconnected.is_set()
    status, _ = client.twin_request("GET")
    assert status == 200


# --------------------------------------------------------------------------------------------
# cairnd


def test_cairnd_deleted_identity_is_disconnected_at_once(cairnd, module_client):
    sensor = module_client(cairnd, "sensor", keepalive=KEEPALIVE)
    other = module_client(cairnd, "other", keepalive=KEEPALIVE)
    other.enable_twin()
    caller_token = cairnd.token("sensor")
    cairnd.cli("identity", "delete", "sensor")
    assert_dropped(sensor, "deleted identity")
    # Its token no longer opens a connection...
    module_client(cairnd, "sensor", expect_rc=5, password=caller_token)
    # ...nor calls methods through the HTTPS gateway.
    other.serve_methods()
    r = gateway(cairnd, "sensor", "other", {"methodName": "ping", "responseTimeoutInSeconds": 5},
                token=caller_token)
    assert r.status == 401 and "message" in r.json, r
    assert_alive(other)
    wait_logged(cairnd, "identity deleted")


def test_cairnd_refuses_tokens_valid_longer_than_the_maximum(cairnd, module_client):
    long_lived = cairnd.token("sensor", expiry=int(time.time()) + 2 * DAY)
    module_client(cairnd, "sensor", expect_rc=5, password=long_lived)
    wait_logged(cairnd, "longer than the maximum")
    target = module_client(cairnd, "target")
    target.serve_methods()
    r = gateway(cairnd, "sensor", "target", {"methodName": "ping", "responseTimeoutInSeconds": 5},
                token=long_lived)
    assert r.status == 401 and "maximum" in r.json["message"], r
    # The CLI does not mint what would be refused.
    r = cairnd.cli("identity", "token", "sensor", "--ttl", str(2 * DAY), check=False)
    assert r.returncode != 0 and "auth.max_token_lifetime_secs" in r.stderr
    # Within the maximum is fine.
    module_client(cairnd, "sensor", password=cairnd.token("sensor",
                                                          expiry=int(time.time()) + DAY - 60))


def test_cairnd_maximum_token_lifetime_is_configurable(cairnd_factory, module_client):
    d = cairnd_factory(config={"auth.max_token_lifetime_secs": 120})
    module_client(d, "sensor", expect_rc=5, password=d.token("sensor",
                                                             expiry=int(time.time()) + 600))
    module_client(d, "sensor", password=d.token("sensor", expiry=int(time.time()) + 60))


# --------------------------------------------------------------------------------------------
# cairn-cloud


def regenerate(cloud, path, key="primary"):
    return cloud.call("POST", f"/cairn/devices/{path}/regenerateKey", {"key": key})


def cloud_clients(cloud, module_client):
    """dev1 (a device) with module m1 (its own key), and dev2, all connected."""
    for d in ("dev1", "dev2"):
        cloud.create_device(d)
    m1 = cloud.call("PUT", "/devices/dev1/modules/m1", {"deviceId": "dev1", "moduleId": "m1"},
                    expect=201)
    dev1 = CloudDevice(cloud, "dev1",
                       module_keys={"m1": m1["authentication"]["symmetricKey"]["primaryKey"]})
    dev2 = CloudDevice(cloud, "dev2")
    return (dev1, dev2, module_client(dev1, None, keepalive=KEEPALIVE),
            module_client(dev1, "m1", keepalive=KEEPALIVE),
            module_client(dev2, None, keepalive=KEEPALIVE))


@pytest.mark.parametrize("change", ["delete module", "regenerate module key",
                                    "update module keys"])
def test_cloud_module_revocation(cloud, module_client, change):
    dev1, _, device, module, other = cloud_clients(cloud, module_client)
    old_token = dev1.token("m1")
    if change == "delete module":
        cloud.call("DELETE", "/devices/dev1/modules/m1", expect=204)
    elif change == "regenerate module key":
        regenerate(cloud, "dev1/modules/m1")
    else:
        new_key = "bmV3LWtleS1mb3ItbTEtb2YtMzItYnl0ZXMtbG9uZyE="
        cloud.call("PUT", "/devices/dev1/modules/m1",
                   {"deviceId": "dev1", "moduleId": "m1", "authentication": {
                       "type": "sas", "symmetricKey": {"primaryKey": new_key,
                                                       "secondaryKey": new_key}}},
                   headers={"If-Match": "*"})
    assert_dropped(module, change)
    module_client(dev1, "m1", expect_rc=5, password=old_token)
    assert_alive(device)
    assert_alive(other)


@pytest.mark.parametrize("change", ["delete device", "disable device", "regenerate device key"])
def test_cloud_device_revocation(cloud, module_client, change):
    dev1, _, device, module, other = cloud_clients(cloud, module_client)
    old_token = dev1.token(None)
    if change == "delete device":
        cloud.call("DELETE", "/devices/dev1", expect=204)
    elif change == "disable device":
        cloud.call("PUT", "/devices/dev1", {"deviceId": "dev1", "status": "disabled"},
                   headers={"If-Match": "*"})
    else:
        regenerate(cloud, "dev1")
    assert_dropped(device, change)
    module_client(dev1, None, expect_rc=5, password=old_token)
    if change == "regenerate device key":
        # Not an edge device: its module has a key of its own and stays.
        assert_alive(module)
    else:
        assert_dropped(module, change + " (its module)")
    assert_alive(other)


def test_cloud_cli_revokes(cloud, module_client):
    """`cairn cloud regenerate-key`, `disable`, `enable` and `delete`."""
    dev1, _, device, module, other = cloud_clients(cloud, module_client)
    cloud.cli("regenerate-key", "dev1/m1", "--key", "secondary")
    assert_dropped(module, "cairn cloud regenerate-key")
    assert_alive(device)
    cloud.cli("disable", "dev1")
    assert_dropped(device, "cairn cloud disable")
    module_client(dev1, None, expect_rc=5)
    cloud.cli("enable", "dev1")
    device = module_client(dev1, None, keepalive=KEEPALIVE)
    cloud.cli("delete", "dev1")
    assert_dropped(device, "cairn cloud delete")
    assert cloud.request("GET", "/devices/dev1").status == 404
    r = cloud.cli("delete", "dev1", check=False)
    assert r.returncode == 1 and "HTTP 404" in r.stderr, r.stderr
    assert_alive(other)


def test_cloud_edge_device_key_change_drops_its_modules(cloud, module_client):
    cloud.create_device("edge1", edge=True)
    edge = CloudDevice(cloud, "edge1")
    # Modules connected "on behalf" with the device key, as cairnd's upstream link does.
    mods = [module_client(edge, m, keepalive=KEEPALIVE, password=edge.token(m, key=edge.key))
            for m in ("a", "b")]
    regenerate(cloud, "edge1")
    for c in mods:
        assert_dropped(c, "edge device key regenerated")
    module_client(edge, "a", expect_rc=5, password=edge.token("a", key=edge.key))


def test_cloud_refuses_tokens_valid_longer_than_the_maximum(cloud, module_client):
    cloud.create_device("dev1")
    dev1 = CloudDevice(cloud, "dev1")
    module_client(dev1, None, expect_rc=5,
                  password=dev1.token(None, expiry=int(time.time()) + 2 * DAY))
    wait_logged(cloud, "longer than the maximum")
    module_client(dev1, None, password=dev1.token(None, expiry=int(time.time()) + DAY - 60))
    r = cloud.request("GET", "/devices", token=cloud.service_token(
        expiry=int(time.time()) + 2 * DAY))
    assert r.status == 401 and r.error_code == "IotHubUnauthorizedAccess", r
    assert "--max-token-lifetime-secs" in r.message
    assert cloud.request("GET", "/devices").status == 200


def test_cloud_module_quota_and_connection_limit(cloud_factory, module_client):
    cloud = cloud_factory(extra_args=("--max-modules-per-device", "3",
                                      "--max-connections-per-device", "4"))
    cloud.create_device("edge1", edge=True)
    cloud.create_device("dev2")
    edge = CloudDevice(cloud, "edge1")

    def on_behalf(module, **kw):
        return module_client(edge, module, password=edge.token(module, key=edge.key), **kw)
    clients = [on_behalf(f"m{i}") for i in range(3)]  # registers m0..m2
    on_behalf("m3", expect_rc=5)  # a fourth registration is beyond the quota
    r = cloud.request("GET", "/devices/edge1/modules/m3")
    assert r.status == 404, r
    auth = cloud.status()["auth"]
    assert auth["modulesRefusedQuota"] == 1 and auth["maxModulesPerDevice"] == 3
    wait_logged(cloud, "quota")
    metrics = cloud.request("GET", "/cairn/metrics")
    assert metrics.status == 200, metrics
    assert "cairn_cloud_modules_refused_quota_total 1" in metrics.text

    # Three modules and the device itself fill the device's four connections.
    clients.append(module_client(edge, None))
    # A reconnection takes its own session's place, so it fits.
    on_behalf("m0")
    assert clients[0].disconnected.wait(DEFAULT_TIMEOUT)
    created = cloud.call("PUT", "/devices/edge1/modules/own",
                         {"deviceId": "edge1", "moduleId": "own"}, expect=201)
    edge.module_keys["own"] = created["authentication"]["symmetricKey"]["primaryKey"]
    module_client(edge, "own", expect_rc=5)  # a fifth connection
    assert cloud.status()["auth"]["connectionsRefusedDeviceLimit"] == 1
    wait_logged(cloud, "already holds")
    # Other devices still get in.
    assert_alive(module_client(CloudDevice(cloud, "dev2"), None))


def device_request(cloud, method, target, device_id, key, audience=None):
    sr = audience or f"{cloud.hostname}/devices/{device_id}"
    return https_request(CLOUD_HOST, cloud.https_port, method, target, cloud.ca_path,
                         server_name=cloud.hostname, headers={"Authorization": sas_token(sr, key, int(time.time()) + 300)})


def test_edge_device_deletes_only_its_own_modules(cloud, module_client):
    cloud.create_device("edge1", edge=True)
    cloud.create_device("edge2", edge=True)
    cloud.create_device("leaf")
    edge = CloudDevice(cloud, "edge1")
    a = module_client(edge, "a", keepalive=KEEPALIVE, password=edge.token("a", key=edge.key))
    b = module_client(edge, "b", keepalive=KEEPALIVE, password=edge.token("b", key=edge.key))
    edge2 = CloudDevice(cloud, "edge2")
    module_client(edge2, "x", password=edge2.token("x", key=edge2.key))
    cloud.call("PUT", "/devices/leaf/modules/y", {"deviceId": "leaf", "moduleId": "y"},
               expect=201)

    r = device_request(cloud, "DELETE", "/devices/edge1/modules/a", "edge1", edge.key)
    assert r.status == 204, r
    assert cloud.request("GET", "/devices/edge1/modules/a").status == 404
    assert_dropped(a, "module deleted by its edge device")
    assert_alive(b)

    refused = [
        # another device's module
        device_request(cloud, "DELETE", "/devices/edge2/modules/x", "edge1", edge.key),
        # anything but a module delete
        device_request(cloud, "GET", "/devices/edge1/modules/b", "edge1", edge.key),
        device_request(cloud, "DELETE", "/devices/edge1", "edge1", edge.key),
        # a device that is not an edge device
        device_request(cloud, "DELETE", "/devices/leaf/modules/y", "leaf",
                       cloud.device_key("leaf")),
        # a token signed with another key
        device_request(cloud, "DELETE", "/devices/edge1/modules/b", "edge1", edge2.key),
        # a module-scoped token
        device_request(cloud, "DELETE", "/devices/edge1/modules/b", "edge1", edge.key,
                       audience=f"{cloud.hostname}/devices/edge1/modules/b"),
    ]
    for r in refused:
        assert r.status == 401 and r.error_code == "IotHubUnauthorizedAccess", r
    for path in ("/devices/edge2/modules/x", "/devices/edge1/modules/b", "/devices/leaf/modules/y",
                 "/devices/edge1"):
        assert cloud.request("GET", path).status == 200, path
    assert_alive(b)


# --------------------------------------------------------------------------------------------
# cairnd and cairn-cloud: the agent removes a module


def sleeper(tag):
    return process_module("/bin/sleep", [f"{300000 + tag}"])


def apply(cloud, device_id, doc):
    """A deployment through cairn-cloud's applyConfigurationContent."""
    cloud.call("POST", f"/devices/{device_id}/applyConfigurationContent", doc, expect=204)


def test_agent_removing_a_module_deletes_its_cloud_identity(cloud, cairnd_factory,
                                                           module_client):
    edge = edge_device(cloud, cairnd_factory, manifest=False)
    dev = edge.device_id
    edge.wait_link("$edgeAgent", timeout=SLOW)

    apply(cloud, dev, manifest({"keep": sleeper(1), "gone": sleeper(2)}))
    wait_running(edge, ["keep", "gone"])
    # The agent opened both modules' cloud links: registered and connected in the cloud.
    for m in ("keep", "gone"):
        edge.wait_link(m, timeout=SLOW)
        assert cloud.call("GET", f"/devices/{dev}/modules/{m}")["connectionState"] == "Connected"

    # A client of the module's identity on the hub (what the module would run).
    local = module_client(edge, "gone", keepalive=KEEPALIVE,
                          password=edge.cli("identity", "token", "gone").stdout.strip())
    apply(cloud, dev, manifest({"keep": sleeper(1)}))
    assert_dropped(local, "the module's local session")
    wait_for(lambda: "gone" not in modules(edge), timeout=SLOW, interval=0.2, what="gone removed")
    wait_for(lambda: cloud.request("GET", f"/devices/{dev}/modules/gone").status == 404,
             timeout=SLOW, interval=0.2, what="the cloud identity of 'gone' deleted")
    assert edge.link_state("gone") is None
    wait_logged(cloud, "edge device edge1 deleted its module gone")
    # Its session went with it and nothing registers it again; the kept module is untouched.
    assert not cloud_connected(cloud, f"{dev}/gone")
    assert edge.link_state("keep") == "online"
    assert cloud.call("GET", f"/devices/{dev}/modules/keep")["connectionState"] == "Connected"
    assert cloud.request("GET", f"/devices/{dev}/modules/gone").status == 404


def cloud_connected(cloud, client_id):
    """Whether cairn-cloud's log says `client_id` is connected now (its last word on it)."""
    last = None
    for line in cloud.log_text().splitlines():
        if f"[{client_id}@" in line:
            if "] connected" in line:
                last = True
            elif "] closed" in line:
                last = False
    return bool(last)


def test_a_module_removed_while_the_cloud_is_unreachable_loses_its_cloud_identity_later(
        cloud, cairnd_factory, module_client, tcp_proxy):
    """The removal reaches the device while the cloud's HTTPS port is cut off: the deletion is
    retried in the background (the agent goes on) and made once the cloud answers. The removed
    module's telemetry still waiting for the cloud neither holds up the other modules' nor brings
    its cloud identity back."""
    mqtt_proxy = tcp_proxy(cloud.mqtt_port)
    https_proxy = tcp_proxy(cloud.https_port)
    edge = edge_device(cloud, cairnd_factory, proxy=mqtt_proxy, manifest=False,
                       upstream={"https_port": https_proxy.port})
    dev = edge.device_id
    edge.wait_link("$edgeAgent", timeout=SLOW)
    routes = {"up": "FROM /messages/* INTO $upstream"}

    apply(cloud, dev, manifest({"keep": sleeper(1), "gone": sleeper(2)}, routes=routes))
    wait_running(edge, ["keep", "gone"])
    for m in ("keep", "gone"):
        edge.wait_link(m, timeout=SLOW)

    def local(module):
        return module_client(edge, module, keepalive=KEEPALIVE, tls=False, max_inflight=100,
                             password=edge.cli("identity", "token", module).stdout.strip())
    keep, gone = local("keep"), local("gone")

    # Offline: the cloud's MQTT and HTTPS ports are cut off; both modules' telemetry waits.
    mqtt_proxy.cut()
    https_proxy.cut()
    wait_for(lambda: edge.link_state("$edgeAgent") != "online", timeout=SLOW,
             what="the $edgeAgent link to drop")
    for i in range(200):
        gone.publish(f"gone-{i}".encode(), props={"$.mid": f"gone-{i}"})
    gone.publish_acked(b"gone-last", props={"$.mid": "gone-last"})
    for i in range(5):
        keep.publish_acked(f"keep-{i}".encode(), props={"$.mid": f"keep-{i}"})
    apply(cloud, dev, manifest({"keep": sleeper(1)}, routes=routes))

    # MQTT back, HTTPS still cut: the deployment arrives, the module goes, the deletion waits.
    mqtt_proxy.restore()
    wait_for(lambda: "gone" not in modules(edge), timeout=SLOW, interval=0.2, what="gone removed")
    assert_dropped(gone, "the removed module's local session")
    wait_logged(edge, "module gone: its cloud identity was not deleted")
    assert cloud.request("GET", f"/devices/{dev}/modules/gone").status == 200
    # The kept module's telemetry reaches the cloud past the removed one's.
    wait_for(lambda: {m["messageId"] for m in cloud.all_messages(device_id=dev, module_id="keep")}
             >= {f"keep-{i}" for i in range(5)}, timeout=SLOW, interval=0.5,
             what="keep's messages in the cloud")
    assert edge.link_state("keep") == "online"

    # HTTPS back: the next attempt deletes the identity, and nothing registers it again.
    https_proxy.restore()
    wait_for(lambda: cloud.request("GET", f"/devices/{dev}/modules/gone").status == 404,
             timeout=SLOW, interval=0.2, what="the cloud identity of 'gone' deleted")
    wait_logged(edge, "module gone: cloud identity deleted")
    keep.publish_acked(b"keep-after", props={"$.mid": "keep-after"})
    wait_for(lambda: "keep-after" in {m["messageId"] for m in cloud.all_messages(
        device_id=dev, module_id="keep")}, timeout=SLOW, interval=0.5, what="keep-after stored")
    assert cloud.request("GET", f"/devices/{dev}/modules/gone").status == 404
    assert edge.link_state("gone") is None
    assert not cloud_connected(cloud, f"{dev}/gone")


def test_a_pending_cloud_identity_deletion_survives_a_restart_and_a_redeploy_cancels_it(
        cloud, cairnd_factory, tcp_proxy):
    https_proxy = tcp_proxy(cloud.https_port)
    edge = edge_device(cloud, cairnd_factory, manifest=False,
                       upstream={"https_port": https_proxy.port})
    dev = edge.device_id
    edge.wait_link("$edgeAgent", timeout=SLOW)


    def registered(module):
        return cloud.request("GET", f"/devices/{dev}/modules/{module}").status == 200
    apply(cloud, dev, manifest({"a": sleeper(1), "b": sleeper(2)}))
    wait_running(edge, ["a", "b"])
    for m in ("a", "b"):
        edge.wait_link(m, timeout=SLOW)
    https_proxy.cut()
    apply(cloud, dev, manifest({}))
    wait_for(lambda: not modules(edge), timeout=SLOW, interval=0.2, what="a and b removed")
    for m in ("a", "b"):
        wait_logged(edge, f"module {m}: its cloud identity was not deleted")
    # Restarted with both deletions pending; b is deployed again before the cloud answers.
    edge.stop()
    edge.start()
    wait_logged(edge, "module a: its cloud identity is still to be deleted")
    apply(cloud, dev, manifest({"b": sleeper(2)}))
    wait_running(edge, ["b"])
    wait_logged(edge, "module b is deployed again: its cloud identity is kept")
    https_proxy.restore()
    wait_for(lambda: not registered("a"), timeout=SLOW, interval=0.2,
             what="the cloud identity of 'a' deleted")
    edge.wait_link("b", timeout=SLOW)
    assert registered("b")
    assert "module b: cloud identity deleted" not in edge.log_text()
