"""Deployments from the cloud: cairn-cloud's applyConfigurationContent, called through the
official azure-iothub service SDK for Node (Registry.applyConfigurationContentOnDevice), reaches
cairnd's agent over the $edgeAgent/$edgeHub cloud links; the agent's reported properties come
back to the cloud twins (Registry.getModuleTwin). Modules run on the process runtime: the
official Node SDK module tests/node/edge_module.js and /bin/sleep.
"""
import json
import os
import signal
import time

import pytest

from conftest import CLOUD_HOST, DEFAULT_TIMEOUT, edge_device, wait_for
from node_sdk import NODE, NODE_DIR, service, skip_without_node_sdk
from test_agent import (alive, deploy, manifest, module_pid, modules, process_module,
                        wait_running)

SLOW = max(DEFAULT_TIMEOUT, 60.0)

pytestmark = skip_without_node_sdk


def sdk(cloud, op, args=None, **kw):
    return service(cloud.connection_string, op, args, ca_file=cloud.ca_path,
                   port=cloud.https_port, host=CLOUD_HOST, **kw)


def apply(cloud, device_id, doc):
    r = sdk(cloud, "apply_configuration", {"deviceId": device_id, "content": doc})
    assert r["statusCode"] == 204, r


def cloud_twin(cloud, device_id, module_id):
    """The module twin as the service SDK's Registry.getModuleTwin returns it."""
    return sdk(cloud, "get_module_twin", {"deviceId": device_id, "moduleId": module_id})["result"]


def reported(cloud, device_id, module_id):
    return cloud_twin(cloud, device_id, module_id)["properties"]["reported"]


def sleeper(tag):
    return process_module("/bin/sleep", [f"{200000 + tag}.{os.getpid() % 1000}"])


def wait_cloud_reported(cloud, device_id, module_id, predicate, what):
    box = {}

    def check():
        rep = reported(cloud, device_id, module_id)
        box["last"] = rep
        return predicate(rep) and rep
    try:
        return wait_for(check, timeout=SLOW, interval=0.5, what=what)
    except AssertionError as e:
        raise AssertionError(f"{e}; last reported: {json.dumps(box.get('last'))[:3000]}")


@pytest.fixture
def linked_edge(cloud, cairnd_factory, tcp_proxy):
    """An edge device of `cloud` with no local manifest, its cloud link through a TcpProxy."""
    proxy = tcp_proxy(cloud.mqtt_port)
    d = edge_device(cloud, cairnd_factory, proxy=proxy, manifest=False)
    d.proxy = proxy
    yield d
    # Modules of a cairnd that was not stopped cleanly are still running: end them here.
    for p in (d.home / "modules").glob("*/process.json"):
        try:
            os.killpg(json.loads(p.read_text())["pid"], signal.SIGKILL)
        except (OSError, ValueError, KeyError):
            pass


def test_deployments_from_the_cloud(cloud, linked_edge):
    edge = linked_edge
    dev = edge.device_id
    for system_module in ("$edgeAgent", "$edgeHub"):
        edge.wait_link(system_module, timeout=SLOW)

    # 1. Two modules: a Node SDK module sending to the other through a route, and a sleeper.
    script = str(NODE_DIR / "edge_module.js")
    env = {"CAIRN_TEST_CONNECT_MAP": f"localhost:8883=127.0.0.1:{edge.tls_port}"}
    first = manifest(
        {"a": process_module(NODE, [script], env={**env, "CAIRN_TEST_HELLO_MS": "1000"}),
         "b": sleeper(1)},
        routes={"aToB": 'FROM /messages/modules/a/outputs/hello '
                        'INTO BrokeredEndpoint("/modules/b/inputs/in")'})
    apply(cloud, dev, first)
    wait_running(edge, ["a", "b"])
    b_pid = module_pid(edge, "b")
    a_pid = module_pid(edge, "a")

    def both_running(rep):
        mods = rep.get("modules", {})
        return all(mods.get(n, {}).get("runtimeStatus") == "running" for n in ("a", "b"))
    rep = wait_cloud_reported(cloud, dev, "$edgeAgent", both_running,
                              "$edgeAgent reported: a and b running")
    agent_desired_version = cloud_twin(cloud, dev, "$edgeAgent")["properties"]["desired"]["$version"]
    assert rep["lastDesiredStatus"]["code"] == 200
    assert rep["lastDesiredVersion"] == agent_desired_version
    assert rep["modules"]["a"]["settings"]["image"] == NODE
    hub_rep = wait_cloud_reported(cloud, dev, "$edgeHub",
                                  lambda r: r.get("lastDesiredStatus", {}).get("code") == 200,
                                  "$edgeHub reported 200")
    assert hub_rep["lastDesiredVersion"] == \
        cloud_twin(cloud, dev, "$edgeHub")["properties"]["desired"]["$version"]
    # The Node module connected through cairnd; its own twin reaches the cloud too.
    wait_cloud_reported(cloud, dev, "a", lambda r: "started" in r, "a's reported 'started'")

    # 2. a removed, the routes changed.
    second = manifest({"b": sleeper(1)},
                      routes={"bUp": "FROM /messages/modules/b/* INTO $upstream",
                              "cUp": "FROM /messages/modules/c/* INTO $upstream"})
    apply(cloud, dev, second)
    wait_for(lambda: "a" not in modules(edge), timeout=SLOW, interval=0.2, what="a removed")
    wait_for(lambda: not alive(a_pid), timeout=SLOW, interval=0.2, what="a's process to end")
    wait_for(lambda: edge.status()["routes"] == 2, timeout=SLOW, interval=0.2,
             what="the two new routes")
    rep = wait_cloud_reported(
        cloud, dev, "$edgeAgent",
        lambda r: ("a" not in r.get("modules", {})
                   and r.get("modules", {}).get("b", {}).get("runtimeStatus") == "running"),
        "$edgeAgent reported without a")
    assert rep["lastDesiredStatus"]["code"] == 200
    assert module_pid(edge, "b") == b_pid and alive(b_pid)
    good_version = rep["lastDesiredVersion"]

    # 3. A broken deployment: refused with the reason; the previous one keeps running.
    # Same routes as in force: the outcome does not depend on which twin's patch comes first.
    broken = manifest({"b": sleeper(1), "c": sleeper(2)}, routes=second["modulesContent"][
        "$edgeHub"]["properties.desired"]["routes"])
    broken["modulesContent"]["$edgeAgent"]["properties.desired"]["modules"]["c"][
        "restartPolicy"] = "sometimes"
    apply(cloud, dev, broken)
    rep = wait_cloud_reported(cloud, dev, "$edgeAgent",
                              lambda r: r.get("lastDesiredStatus", {}).get("code") == 400,
                              "lastDesiredStatus 400")
    assert "modules.c.restartPolicy" in rep["lastDesiredStatus"]["description"]
    assert rep["lastDesiredVersion"] > good_version
    assert "c" not in modules(edge) and not (edge.home / "modules" / "c").exists()
    assert module_pid(edge, "b") == b_pid and alive(b_pid)
    assert edge.status()["routes"] == 2

    # 4. A deployment made while the device is offline is applied when the link comes back.
    edge.proxy.cut()
    wait_for(lambda: edge.link_state("$edgeAgent") != "online", timeout=SLOW,
             what="the $edgeAgent link to drop")
    fourth = manifest({"b": sleeper(1), "c": sleeper(2)},
                      routes={"bUp": "FROM /messages/modules/b/* INTO $upstream"})
    apply(cloud, dev, fourth)
    assert "c" not in modules(edge)  # offline: nothing can have arrived
    edge.proxy.restore()
    wait_running(edge, ["b", "c"])
    wait_for(lambda: edge.status()["routes"] == 1, timeout=SLOW, interval=0.2,
             what="the offline deployment's route")
    rep = wait_cloud_reported(
        cloud, dev, "$edgeAgent",
        lambda r: (r.get("lastDesiredStatus", {}).get("code") == 200
                   and r.get("modules", {}).get("c", {}).get("runtimeStatus") == "running"),
        "the offline deployment reported")
    last_version = rep["lastDesiredVersion"]

    # 5. Cloud gone, cairnd restarted: the last good deployment runs from disk.
    cloud.stop()
    edge.stop()  # a clean stop stops the modules
    assert not alive(b_pid)
    edge.start()
    wait_running(edge, ["b", "c"])
    assert edge.status()["routes"] == 1
    assert not edge.upstream_status()["online"]
    before_restart = rep["modules"]["c"]["lastStartTimeUtc"]

    def local_reported():
        r = edge.twin_view("$edgeAgent")["reported"]
        started = r.get("modules", {}).get("c", {}).get("lastStartTimeUtc")
        return r if started not in (None, before_restart) else None
    local = wait_for(local_reported, timeout=SLOW, interval=0.2,
                     what="the restarted modules reported locally")
    assert local["lastDesiredVersion"] == last_version
    assert local["lastDesiredStatus"]["code"] == 200
    # The cloud comes back: the links resync, the reports made offline go up, and nothing is
    # deployed again.
    c_pid = module_pid(edge, "c")
    cloud.start()
    edge.wait_link("$edgeAgent", timeout=SLOW)
    rep = wait_cloud_reported(
        cloud, dev, "$edgeAgent",
        lambda r: (r.get("modules", {}).get("c", {}).get("lastStartTimeUtc")
                   == local["modules"]["c"]["lastStartTimeUtc"]),
        "the restarted modules reported to the cloud")
    assert rep["lastDesiredVersion"] == last_version
    assert module_pid(edge, "c") == c_pid


def test_forty_modules_fit_the_reported_twin(cloud, linked_edge):
    """IoT Hub takes at most 32 KiB of reported properties: 40 modules with settings and env
    are reported in less detail rather than refused."""
    edge = linked_edge
    dev = edge.device_id
    edge.wait_link("$edgeAgent", timeout=SLOW)
    mods = {}
    for i in range(40):
        m = sleeper(100 + i)
        m["env"] = {f"SETTING_{k}": {"value": "x" * 40} for k in range(4)}
        # A createOptions the size of a real module's (ports, binds, labels): ~300 characters.
        create = json.loads(m["settings"]["createOptions"])
        create["Labels"] = {f"com.example.label{k}": "v" * 40 for k in range(5)}
        m["settings"]["createOptions"] = json.dumps(create)
        mods[f"module{i:02d}"] = m
    apply(cloud, dev, manifest(mods))
    names = list(mods)
    wait_running(edge, names, timeout=SLOW * 2)
    rep = wait_cloud_reported(
        cloud, dev, "$edgeAgent",
        lambda r: all(r.get("modules", {}).get(n, {}).get("runtimeStatus") == "running"
                      for n in names),
        "40 modules reported running")
    assert rep["lastDesiredStatus"]["code"] == 200
    assert "reported properties: 400" not in edge.log_text()
    assert "cloud refused a reported patch" not in edge.log_text()
    assert "detail (40 modules)" in edge.log_text()
    # Every module is there, with its state; the settings echo is what was left out.
    assert rep["modules"]["module07"]["settings"]["image"] == "/bin/sleep"
    assert "createOptions" not in rep["modules"]["module07"]["settings"]


def test_a_local_deployment_registers_its_modules_in_the_cloud(cloud, linked_edge):
    """`cairn deploy` on a connected device: the cloud has never heard of the module, and the
    module never connects (a sleeper); its identity appears in the cloud registry all the same,
    as the official service SDK's Registry.getModule sees it."""
    edge = linked_edge
    dev = edge.device_id
    edge.wait_link("$edgeAgent", timeout=SLOW)
    name = f"solo{os.getpid() % 1000}"
    missing = sdk(cloud, "get_module", {"deviceId": dev, "moduleId": name}, check=False)
    assert missing.get("statusCode") == 404, missing
    deploy(edge, manifest({name: sleeper(30)}))
    wait_running(edge, [name])

    def registered():
        r = sdk(cloud, "get_module", {"deviceId": dev, "moduleId": name}, check=False)
        return r.get("result") if r.get("ok") else None
    module = wait_for(registered, timeout=SLOW, interval=0.5, what=f"{name} in the cloud registry")
    assert module["moduleId"] == name and module["deviceId"] == dev
    assert module["managedBy"] == "iotEdge"
    edge.wait_link(name, timeout=SLOW)
