"""The docker runtime against a real engine: Podman's Docker-compatible service with runc and
two local registries (one open, one with a user and password), all started by the fixtures in
containers.py. The C++ side runs as the DockerLive* GoogleTest cases of agent_tests, given the
engine and registries through CAIRN_TEST_* variables; a skipped case is a failure here."""
import json
import os
import re
import socket
import subprocess

import pytest

from conftest import BIN_DIR, free_port, wait_for


def run_live_tests(container_engine, test_registries, tmp_path, gtest_filter):
    binary = BIN_DIR / "agent_tests"
    assert binary.exists(), f"{binary} not built (cmake --build --preset asan --target agent_tests)"
    env = dict(os.environ,
               CAIRN_TEST_DOCKER_SOCKET=str(container_engine.socket),
               CAIRN_TEST_REGISTRY=test_registries.open.address,
               CAIRN_TEST_AUTH_REGISTRY=test_registries.auth.address,
               CAIRN_TEST_REGISTRY_USER=test_registries.auth.username,
               CAIRN_TEST_REGISTRY_PASSWORD=test_registries.auth.password,
               CAIRN_TEST_IMAGE_REPO="cairn-test/busybox:1",
               CAIRN_TEST_TMP=str(tmp_path),
               CAIRN_TEST_FREE_PORT=str(free_port()))
    out = subprocess.run([str(binary), f"--gtest_filter={gtest_filter}", "--gtest_color=no"],
                         env=env, capture_output=True, text=True, timeout=600)
    text = out.stdout + out.stderr
    assert out.returncode == 0, text
    ran = re.search(r"\[  PASSED  \] (\d+) test", text)
    assert ran and int(ran.group(1)) > 0, text
    assert "[  SKIPPED ]" not in text, text
    return text


def test_client_pull_auth_and_errors(container_engine, test_registries, tmp_path):
    run_live_tests(container_engine, test_registries, tmp_path, "DockerLiveClient.*")


def test_runtime_create_options_events_adoption(container_engine, test_registries, tmp_path):
    run_live_tests(container_engine, test_registries, tmp_path, "DockerLiveRuntime.*")


def test_node_sdk_image_runs(container_engine, node_module_image):
    """The image the Node SDK end-to-end test runs as a container module: Debian's node and
    tests/node, from local files only."""
    out = container_engine.podman(
        "run", "--rm", node_module_image, "node", "-e",
        "const {ModuleClient} = require('azure-iot-device');"
        "const {Mqtt} = require('azure-iot-device-mqtt');"
        "console.log(typeof ModuleClient.fromEnvironment, typeof Mqtt)")
    assert out.stdout.strip() == "function function", out.stdout + out.stderr


# --------------------------------------------------------------------------------------------
# cairnd with the docker runtime: `cairnd --docker-uri`, `cairn deploy`, `cairn list`


def test_cairnd_runs_and_restarts_a_container_module(container_engine, test_registries,
                                                     cairnd_factory, monkeypatch, tmp_path):
    """A busybox module from the local registry, deployed with `cairn deploy` to a cairnd
    whose --docker-uri is the Podman service: it runs, and after it exits with a failure the
    agent starts it again (restartPolicy on-failure). Each start appends a line to a file in a
    bind-mounted directory, so the restarts are the container's own doing."""
    monkeypatch.setenv("CAIRN_AGENT_COOL_OFF_MS", "200")
    edge = cairnd_factory(manifest=False, start=False)
    edge.extra_args = ["--docker-uri", f"unix://{container_engine.socket}"]
    edge.start()
    assert "docker runtime: Podman" in edge.log_text()
    out = tmp_path / "out"
    out.mkdir()
    image = f"{test_registries.open.address}/cairn-test/busybox:1"
    name = f"cairnbb{os.getpid() % 100000}"
    module = {"version": "1.0", "type": "docker", "status": "running",
              "restartPolicy": "on-failure",
              "settings": {"image": image, "createOptions": json.dumps({
                  "Cmd": ["sh", "-c", "echo start >> /out/starts; sleep 6; exit 4"],
                  "HostConfig": {"Binds": [f"{out}:/out"]}})}}
    doc = {"modulesContent": {
        "$edgeAgent": {"properties.desired": {"schemaVersion": "1.1",
                                              "modules": {name: module}}},
        "$edgeHub": {"properties.desired": {"schemaVersion": "1.1", "routes": {}}}}}
    path = tmp_path / "deployment.json"
    path.write_text(json.dumps(doc))
    edge.cli("deploy", str(path))

    def listed():
        return {m["name"]: m for m in edge.mgmt("GET", "/modules")["modules"]}.get(name, {})

    def starts():
        try:
            return (out / "starts").read_text().count("start")
        except FileNotFoundError:
            return 0

    wait_for(lambda: listed().get("runtimeStatus") == "running", timeout=300, interval=0.2,
             what=f"{name} running (last: {listed()})")
    assert name in edge.cli("list").stdout
    assert starts() >= 1
    wait_for(lambda: starts() >= 2 and listed().get("restartCount", 0) >= 1, timeout=120,
             interval=0.2, what=f"{name} restarted after its exit (last: {listed()})")
    m = listed()
    assert m["exitCode"] == 4 or m["runtimeStatus"] == "running", m
    ps = container_engine.podman("ps", "--all", "--filter", f"name=^{name}$",
                                 "--format", "{{.Names}} {{.Labels}}").stdout
    assert name in ps and "net.cairn.owner" in ps, ps

    # `cairn check`: the engine answers and the image is there; an image the engine lacks with
    # imagePullPolicy never is an error that says to load it.
    absent = f"{test_registries.open.address}/cairn-test/absent:{os.getpid()}"
    doc["modulesContent"]["$edgeAgent"]["properties.desired"]["modules"]["absent"] = {
        "version": "1.0", "type": "docker", "status": "running", "restartPolicy": "always",
        "imagePullPolicy": "never", "settings": {"image": absent, "createOptions": ""}}
    path.write_text(json.dumps(doc))
    edge.cli("deploy", str(path))
    r = edge.cli("check", "--json", check=False)
    c = {x["id"]: x for x in json.loads(r.stdout)["checks"]}
    assert r.returncode == 1
    assert c["runtime-docker"]["status"] == "ok" and "Podman" in c["runtime-docker"]["message"]
    assert c[f"image-{name}"]["status"] == "ok", c[f"image-{name}"]
    assert c["image-absent"]["status"] == "error"
    assert "imagePullPolicy is never" in c["image-absent"]["message"], c["image-absent"]
    edge.stop()


def test_unreachable_engine_fails_docker_modules_only(cairnd_factory, tmp_path):
    """--docker-uri naming a socket nobody serves: the docker module is reported failed with
    the reason, the process module next to it runs."""
    edge = cairnd_factory(manifest=False, start=False)
    edge.extra_args = ["--docker-uri", f"unix://{tmp_path}/nobody.sock"]
    edge.start()
    sleeper = {"version": "1.0", "type": "docker", "restartPolicy": "always",
               "settings": {"image": "/bin/sleep", "createOptions": json.dumps(
                   {"Cmd": [f"{300000 + os.getpid() % 1000}"]})}}
    boxed = {"version": "1.0", "type": "docker", "restartPolicy": "always",
             "settings": {"image": "busybox:1", "createOptions": ""}}
    doc = {"modulesContent": {
        "$edgeAgent": {"properties.desired": {"schemaVersion": "1.1",
                                              "modules": {"sleeper": sleeper, "boxed": boxed}}},
        "$edgeHub": {"properties.desired": {"schemaVersion": "1.1", "routes": {}}}}}
    path = tmp_path / "deployment.json"
    path.write_text(json.dumps(doc))
    edge.cli("deploy", str(path))

    def listed():
        return {m["name"]: m for m in edge.mgmt("GET", "/modules")["modules"]}

    mods = wait_for(lambda: (lambda m: m if m.get("sleeper", {}).get("runtimeStatus") == "running"
                             and m.get("boxed", {}).get("runtimeStatus") == "failed" else None)(
                                 listed()), timeout=60, interval=0.2, what="sleeper running, boxed failed")
    assert "nobody.sock" in mods["boxed"]["statusDescription"], mods["boxed"]
    edge.stop()


def test_a_stalled_image_pull_holds_up_neither_the_agent_nor_other_modules(
        container_engine, cairnd_factory, tmp_path):
    """A registry that accepts connections and never answers: the pull waits in the
    background. Meanwhile `cairn list` answers (the module shows what it waits for) and the
    process module deployed with it starts; when the registry goes away the module fails with
    the pull's error."""
    registry = StalledRegistry()
    sleeper = {"version": "1.0", "type": "docker", "restartPolicy": "always",
               "settings": {"image": "/bin/sleep", "createOptions": json.dumps(
                   {"Cmd": [f"{330000 + os.getpid() % 1000}"]})}}
    try:
        # "astuck" comes first in the deployment: the agent reaches it before "zsleeper".
        edge = deploy_beside_stalled_registry(
            container_engine, cairnd_factory, tmp_path / "deployment.json",
            {"astuck": registry.module("1"), "zsleeper": sleeper}, registry)

        def listed():
            return {m["name"]: m for m in edge.mgmt("GET", "/modules")["modules"]}
        mods = wait_for(lambda: (lambda m: m if m.get("zsleeper", {}).get("runtimeStatus")
                                 == "running" else None)(listed()),
                        timeout=60, interval=0.2, what="zsleeper running")
        assert "preparing" in mods["astuck"]["statusDescription"], mods["astuck"]
        assert mods["astuck"]["runtimeStatus"] != "running"
    finally:
        registry.close()
    mods = wait_for(lambda: (lambda m: m if m.get("astuck", {}).get("runtimeStatus") == "failed"
                             else None)(listed()), timeout=120, interval=0.5,
                    what="astuck failed once the registry is gone")
    assert "preparing" not in mods["astuck"]["statusDescription"], mods["astuck"]
    edge.stop()


def test_stopping_cairnd_ends_a_stalled_image_pull(container_engine, cairnd_factory, tmp_path):
    """SIGTERM while a pull waits on a registry that never answers: cairnd exits at once
    (cleanly) instead of waiting out the pull's 600 s limit."""
    registry = StalledRegistry()
    try:
        edge = deploy_beside_stalled_registry(
            container_engine, cairnd_factory, tmp_path / "deployment.json",
            {"stuck": registry.module("2")}, registry)
        wait_for(lambda: "preparing" in {m["name"]: m
                                          for m in edge.mgmt("GET", "/modules")["modules"]}
                 .get("stuck", {}).get("statusDescription", ""),
                 timeout=30, interval=0.2, what="stuck preparing")
        edge.stop(timeout=30)
    finally:
        registry.close()


class StalledRegistry:
    """A registry address on loopback that accepts connections and never answers."""

    def __init__(self):
        self.listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(16)
        self.listener.settimeout(0.05)
        self.accepted = []

    def module(self, tag):
        """A docker module whose image is to be pulled from here."""
        port = self.listener.getsockname()[1]
        return {"version": "1.0", "type": "docker", "restartPolicy": "always",
                "settings": {"image": f"127.0.0.1:{port}/cairn-test/stalled:{tag}",
                             "createOptions": ""}}

    def connected(self):
        """Accepts (and keeps, never answering) a waiting connection; True once one came."""
        try:
            conn, _ = self.listener.accept()
            self.accepted.append(conn)
        except (socket.timeout, OSError):
            pass
        return bool(self.accepted)

    def close(self):
        self.listener.close()
        for conn in self.accepted:
            conn.close()


def deploy_beside_stalled_registry(container_engine, cairnd_factory, path, modules, registry):
    """Starts a cairnd with the container engine, deploys `modules` and waits until the engine
    has connected to `registry`."""
    edge = cairnd_factory(manifest=False, start=False)
    edge.extra_args = ["--docker-uri", f"unix://{container_engine.socket}"]
    edge.start()
    doc = {"modulesContent": {
        "$edgeAgent": {"properties.desired": {"schemaVersion": "1.1", "modules": modules}},
        "$edgeHub": {"properties.desired": {"schemaVersion": "1.1", "routes": {}}}}}
    path.write_text(json.dumps(doc))
    edge.cli("deploy", str(path))
    wait_for(registry.connected, timeout=60, interval=0.1,
             what="the engine to connect to the stalled registry")
    return edge


def test_node_sdk_module_as_a_container(container_engine, node_module_image, cairnd_factory):
    """The official Node SDK module (tests/node/edge_module.js) deployed twice as container
    modules through the Docker API: a's output reaches b's input through a route, b reports in
    its twin, sees its desired properties from the manifest and answers a direct method. Their
    only configuration is the IoT Edge environment and the workload socket the agent mounts."""
    from test_agent import manifest, wait_running
    edge = cairnd_factory(manifest=False, start=False)
    edge.extra_args = ["--docker-uri", f"unix://{container_engine.socket}"]
    edge.start()
    # The module dials the gateway host on 8883 (the SDK's fixed port): on the host's network
    # the test's connect map points that at this cairnd's TLS port.
    env = {"CAIRN_TEST_CONNECT_MAP": {"value": f"localhost:8883=127.0.0.1:{edge.tls_port}"}}

    def container(extra_env=None):
        return {"version": "1.0", "type": "docker", "status": "running",
                "restartPolicy": "always", "imagePullPolicy": "never",
                "settings": {"image": node_module_image, "createOptions": json.dumps(
                    {"Cmd": ["node", "/opt/cairn-node/edge_module.js"],
                     "HostConfig": {"NetworkMode": "host"}})},
                "env": {**env, **(extra_env or {})}}
    doc = manifest({"a": container({"CAIRN_TEST_HELLO_MS": {"value": "1000"}}), "b": container()},
                   routes={"aToB": 'FROM /messages/modules/a/outputs/hello '
                                   'INTO BrokeredEndpoint("/modules/b/inputs/in")'},
                   twins={"b": {"threshold": 30}})
    path = edge.home / "deployment.json"
    path.write_text(json.dumps(doc))
    try:
        edge.cli("deploy", str(path))
        wait_running(edge, ["a", "b"], timeout=300)

        def reported_b():
            rep = edge.twin_view("b")["reported"]
            return rep if "lastInput" in rep and "started" in rep else None
        rep = wait_for(reported_b, timeout=120, interval=0.2, what="b to report a's message")
        assert json.loads(rep["lastInput"]["body"]) == {"hello": "a"}
        assert rep["started"]["moduleId"] == "b"
        wait_for(lambda: edge.twin_view("b")["reported"].get("seenDesired", {}).get("threshold")
                 == 30, timeout=60, interval=0.2, what="b to see the manifest's desired properties")
        r = json.loads(edge.cli("method", "b", "echo", json.dumps({"x": 1})).stdout)
        assert r == {"status": 200, "payload": {"echo": {"x": 1}, "module": "b"}}
        ps = container_engine.podman("ps", "--filter", "label=net.cairn.module=b",
                                     "--format", "{{.Names}}").stdout
        assert ps.strip(), "b does not run as a container"
    finally:
        edge.stop()  # a clean stop stops (and keeps) the containers
