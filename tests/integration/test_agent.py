"""The agent inside cairnd: deployments with `cairn deploy`, the process runtime, restart policy,
identities, the workload API and adoption of running modules after `kill -9`.

Modules are real processes: the official Node SDK module tests/node/edge_module.js (only
ModuleClient.fromEnvironment(Mqtt)), /bin/sleep and small Python scripts.
"""
import json
import os
import signal
import sys
import time
from pathlib import Path

import pytest

from conftest import DEFAULT_TIMEOUT, unix_http, wait_for
from node_sdk import NODE, NODE_DIR, skip_without_node_sdk

SLOW = max(DEFAULT_TIMEOUT, 60.0)


def manifest(modules, routes=None, twins=None, agent_extra=None):
    agent = {"schemaVersion": "1.1",
             "runtime": {"type": "docker", "settings": {"minDockerVersion": "v1.25"}},
             "systemModules": {
                 "edgeAgent": {"type": "docker", "settings": {"image": "cairnd", "createOptions": ""}},
                 "edgeHub": {"type": "docker", "status": "running", "restartPolicy": "always",
                             "settings": {"image": "cairnd", "createOptions": ""}}},
             "modules": modules}
    agent.update(agent_extra or {})
    content = {"$edgeAgent": {"properties.desired": agent},
               "$edgeHub": {"properties.desired": {
                   "schemaVersion": "1.1", "routes": routes or {},
                   "storeAndForwardConfiguration": {"timeToLiveSecs": 7200}}}}
    for name, desired in (twins or {}).items():
        content[name] = {"properties.desired": desired}
    return {"modulesContent": content}


def process_module(image, args=(), env=None, restart="always", status="running", order=None,
                   version="1.0"):
    m = {"version": version, "type": "docker", "status": status, "restartPolicy": restart,
         "settings": {"image": image, "createOptions": json.dumps({"Cmd": list(args)})},
         "env": {k: {"value": v} for k, v in (env or {}).items()}}
    if order is not None:
        m["startupOrder"] = order
    return m


def sleeper(tag):
    """A module that only runs: /bin/sleep with an argument unique to the test, so its processes
    can be counted."""
    return process_module("/bin/sleep", [f"{100000 + tag}.{os.getpid() % 1000}"])


def deploy(cairnd, doc, check=True):
    path = cairnd.home / f"deploy-{time.monotonic_ns()}.json"
    path.write_text(json.dumps(doc) if not isinstance(doc, str) else doc)
    return cairnd.cli("deploy", str(path), check=check)


def modules(cairnd):
    return {m["name"]: m for m in cairnd.mgmt("GET", "/modules")["modules"]}


def wait_running(cairnd, names, timeout=SLOW):
    def ok():
        mods = modules(cairnd)
        return all(mods.get(n, {}).get("runtimeStatus") == "running" for n in names) and mods
    return wait_for(ok, timeout=timeout, interval=0.1, what=f"modules {names} running")


def module_pid(cairnd, name):
    path = cairnd.home / "modules" / name / "process.json"
    try:
        return json.loads(path.read_text())["pid"]
    except (FileNotFoundError, json.JSONDecodeError, KeyError):
        return None


def alive(pid):
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        return state != "Z"
    except (FileNotFoundError, IndexError):
        return False


def processes_with_arg(arg):
    out = []
    for p in Path("/proc").iterdir():
        if not p.name.isdigit():
            continue
        try:
            cmd = (p / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if arg.encode() in cmd and alive(int(p.name)):
            out.append(int(p.name))
    return out


def agent_reported(cairnd):
    return {"modules": {}, **cairnd.twin_view("$edgeAgent")["reported"]}


@pytest.fixture
def edge(cairnd_factory):
    d = cairnd_factory(manifest=False)
    yield d
    # Modules of a cairnd that was killed (not stopped) are still running: end them here.
    for p in (d.home / "modules").glob("*/process.json"):
        try:
            os.killpg(json.loads(p.read_text())["pid"], signal.SIGKILL)
        except (OSError, ValueError, KeyError):
            pass


# --------------------------------------------------------------------------------------------


@skip_without_node_sdk
def test_node_sdk_module_runs_on_the_workload_api_only(edge):
    """Two Node SDK modules started by the agent: a's output reaches b's input through a route,
    b reports in its twin, gets its desired properties from the manifest and a patch, and
    answers a direct method. Their only configuration is the IoT Edge environment."""
    connect = f"localhost:8883=127.0.0.1:{edge.tls_port}"
    script = str(NODE_DIR / "edge_module.js")
    env = {"CAIRN_TEST_CONNECT_MAP": connect}
    doc = manifest(
        {"a": process_module(NODE, [script], env={**env, "CAIRN_TEST_HELLO_MS": "1000"}, order=2),
         "b": process_module(NODE, [script], env=env, order=1)},
        routes={"aToB": 'FROM /messages/modules/a/outputs/hello '
                        'INTO BrokeredEndpoint("/modules/b/inputs/in")'},
        twins={"b": {"threshold": 30}})
    deploy(edge, doc)
    wait_running(edge, ["a", "b"])

    def reported_b():
        rep = edge.twin_view("b")["reported"]
        return rep if "lastInput" in rep and "started" in rep else None
    rep = wait_for(reported_b, timeout=SLOW, interval=0.2, what="b to report a's message")
    assert json.loads(rep["lastInput"]["body"]) == {"hello": "a"}
    assert rep["started"]["moduleId"] == "b"
    _, ident = unix_http(edge.home / "run" / "mgmt.sock", "GET", "/identities")
    gens = {i["moduleId"]: i.get("generationId") for i in ident}
    assert rep["started"]["generationId"] == gens["b"]

    # Desired properties: the manifest's, then a local patch.
    wait_for(lambda: edge.twin_view("b")["reported"].get("seenDesired", {}).get("threshold") == 30,
             timeout=SLOW, interval=0.2, what="b to see the manifest's desired properties")
    edge.cli("twin", "update-desired", "b", json.dumps({"threshold": 31}))
    wait_for(lambda: edge.twin_view("b")["reported"].get("seenDesired", {}).get("threshold") == 31,
             timeout=SLOW, interval=0.2, what="b to see the desired patch")

    # A direct method.
    r = json.loads(edge.cli("method", "b", "echo", json.dumps({"x": 1})).stdout)
    assert r["status"] == 200
    assert r["payload"] == {"echo": {"x": 1}, "module": "b"}

    # The $edgeAgent reported properties describe both modules (PROTOCOL shape).
    rep = agent_reported(edge)
    for name in ("a", "b"):
        m = rep["modules"][name]
        assert m["runtimeStatus"] == "running"
        for key in ("exitCode", "statusDescription", "lastStartTimeUtc", "lastExitTimeUtc",
                    "restartCount", "lastRestartTimeUtc", "version", "restartPolicy"):
            assert key in m, key
    assert rep["lastDesiredStatus"]["code"] == 200
    assert "hello sent" in edge.cli("logs", "a", "--tail", "50").stdout


def test_bad_manifests_change_nothing(edge):
    deploy(edge, manifest({"keep": sleeper(1)}))
    wait_running(edge, ["keep"])
    pid = module_pid(edge, "keep")
    before = json.loads(edge.cli("list", "--json").stdout)

    good = manifest({"keep": sleeper(1), "extra": sleeper(2)})
    bad = []
    m = json.loads(json.dumps(good))
    m["modulesContent"]["$edgeAgent"]["properties.desired"]["schemaVersion"] = "2.0"
    bad.append((m, "schemaVersion"))
    m = json.loads(json.dumps(good))
    m["modulesContent"]["$edgeAgent"]["properties.desired"]["modules"]["extra"]["restartPolicy"] = "sometimes"
    bad.append((m, "modules.extra.restartPolicy"))
    m = json.loads(json.dumps(good))
    m["modulesContent"]["$edgeAgent"]["properties.desired"]["modules"]["extra"]["settings"]["createOptions"] = "{oops"
    bad.append((m, "modules.extra.settings.createOptions"))
    m = json.loads(json.dumps(good))
    m["modulesContent"]["$edgeHub"]["properties.desired"]["routes"] = {"r": "FROM nowhere INTO"}
    bad.append((m, "$edgeHub.properties.desired"))
    m = json.loads(json.dumps(good))
    del m["modulesContent"]["$edgeHub"]
    bad.append((m, "$edgeHub"))
    m = json.loads(json.dumps(good))
    m["modulesContent"]["$edgeAgent"]["properties.desired"]["modules"]["bad name!"] = sleeper(3)
    bad.append((m, "modules.bad name!"))
    bad.append(('{"modulesContent": ', "not valid JSON"))
    bad.append((b"\xff\xfe".decode("latin-1"), "not valid JSON"))
    for doc, where in bad:
        r = deploy(edge, doc, check=False)
        assert r.returncode == 1, (where, r.stdout, r.stderr)
        assert where in r.stderr, (where, r.stderr)
    time.sleep(1.0)  # give a wrongly applied deployment the chance to show (not a timing check)
    assert json.loads(edge.cli("list", "--json").stdout) == before
    assert module_pid(edge, "keep") == pid and alive(pid)
    assert not (edge.home / "modules" / "extra").exists()


def test_crashing_module_is_restarted_with_backoff(cairnd_factory, monkeypatch):
    monkeypatch.setenv("CAIRN_AGENT_COOL_OFF_MS", "200")
    edge = cairnd_factory(manifest=False)
    crash = process_module("/bin/sh", ["-c", "echo crashing; exit 3"], restart="on-failure")
    deploy(edge, manifest({"crash": crash, "fine": sleeper(4)}))

    def restarted_twice():
        m = agent_reported(edge)["modules"].get("crash", {})
        return m if m.get("restartCount", 0) >= 2 and m.get("runtimeStatus") != "running" else None
    m = wait_for(restarted_twice, timeout=SLOW, interval=0.1, what="two restarts")
    assert m["runtimeStatus"] in ("backoff", "failed")
    assert m["exitCode"] == 3
    assert m["lastRestartTimeUtc"] > m["lastStartTimeUtc"] or m["restartCount"] >= 2
    assert "crashing" in edge.cli("logs", "crash").stdout
    # Back-off grows: with a 200 ms unit the waits are 200, 400, 800 ms..., so the restart count
    # climbs ever more slowly; it is never above what the elapsed time allows.
    assert agent_reported(edge)["modules"]["fine"]["restartCount"] == 0


def test_never_policy_leaves_a_failed_module_alone(cairnd_factory, monkeypatch):
    monkeypatch.setenv("CAIRN_AGENT_COOL_OFF_MS", "100")
    edge = cairnd_factory(manifest=False)
    deploy(edge, manifest({"once": process_module("/bin/sh", ["-c", "exit 5"], restart="never")}))
    m = wait_for(lambda: (agent_reported(edge)["modules"].get("once", {}).get("runtimeStatus")
                          == "failed") and agent_reported(edge)["modules"]["once"],
                 timeout=SLOW, interval=0.1, what="the module to fail")
    time.sleep(1.0)  # ten cool-off units: a restart would have happened
    m = agent_reported(edge)["modules"]["once"]
    assert m["restartCount"] == 0 and m["exitCode"] == 5


def test_removed_module_is_stopped_and_its_identity_removed(edge):
    deploy(edge, manifest({"stay": sleeper(5), "go": sleeper(6)}))
    wait_running(edge, ["stay", "go"])
    go_pid = module_pid(edge, "go")
    stay_pid = module_pid(edge, "stay")
    ids = edge.cli("identity", "list").stdout.split()
    assert "go" in ids and "stay" in ids

    deploy(edge, manifest({"stay": sleeper(5)}))
    wait_for(lambda: not alive(go_pid), timeout=SLOW, interval=0.1, what="go to stop")
    wait_for(lambda: "go" not in [i["moduleId"] for i in edge.mgmt("GET", "/identities")],
             timeout=SLOW, interval=0.1, what="go's identity to go")
    assert "go" not in modules(edge)
    assert not (edge.home / "run" / "mnt" / "go.sock").exists()
    assert module_pid(edge, "stay") == stay_pid and alive(stay_pid)
    assert "go" not in agent_reported(edge)["modules"]


def test_changed_env_recreates_the_module(edge):
    m = sleeper(7)
    deploy(edge, manifest({"m": m}))
    wait_running(edge, ["m"])
    pid = module_pid(edge, "m")
    m2 = json.loads(json.dumps(m))
    m2["env"]["NEW"] = {"value": "1"}
    deploy(edge, manifest({"m": m2}))
    wait_for(lambda: module_pid(edge, "m") not in (None, pid), timeout=SLOW, interval=0.1,
             what="a new process")
    wait_running(edge, ["m"])
    assert not alive(pid)
    environ = Path(f"/proc/{module_pid(edge, 'm')}/environ").read_bytes().split(b"\0")
    assert b"NEW=1" in environ
    assert b"IOTEDGE_MODULEID=m" in environ
    assert any(e.startswith(b"IOTEDGE_WORKLOADURI=unix://") for e in environ)


def test_kill9_of_cairnd_adopts_running_modules(edge):
    deploy(edge, manifest({"x": sleeper(8), "y": sleeper(9)}))
    wait_running(edge, ["x", "y"])
    pids = {n: module_pid(edge, n) for n in ("x", "y")}
    args = {n: f"{100000 + t}.{os.getpid() % 1000}" for n, t in (("x", 8), ("y", 9))}
    edge.kill9()
    assert all(alive(p) for p in pids.values())
    edge.start()
    wait_running(edge, ["x", "y"])
    time.sleep(1.5)  # several reconcile passes: a duplicate start would show now
    for n in ("x", "y"):
        assert module_pid(edge, n) == pids[n]
        assert processes_with_arg(args[n]) == [pids[n]], n


def test_a_module_cannot_sign_as_another(edge):
    probe = (
        "import http.client, json, socket, sys, os\n"
        "def call(sock, target, body):\n"
        "    c = http.client.HTTPConnection('localhost')\n"
        "    c.sock = socket.socket(socket.AF_UNIX); c.sock.connect(sock)\n"
        "    c.request('POST', target, body=json.dumps(body),\n"
        "              headers={'Content-Type': 'application/json'})\n"
        "    return c.getresponse().status\n"
        "own = os.environ['IOTEDGE_WORKLOADURI'][len('unix://'):]\n"
        "other = os.path.join(os.path.dirname(own), 'victim.sock')\n"
        "gen = os.environ['IOTEDGE_MODULEGENERATIONID']\n"
        "body = {'keyId': 'primary', 'algo': 'HMACSHA256', 'data': 'aGVsbG8='}\n"
        "q = '?api-version=2018-06-28'\n"
        "print('own', call(own, '/modules/prober/genid/' + gen + '/sign' + q, body))\n"
        "print('path', call(own, '/modules/victim/genid/x/sign' + q, body))\n"
        "print('socket', call(other, '/modules/victim/genid/x/sign' + q, body))\n"
        "sys.stdout.flush()\n"
        "import time; time.sleep(100000)\n")
    deploy(edge, manifest({"prober": process_module(sys.executable, ["-c", probe]),
                           "victim": sleeper(10)}))
    wait_running(edge, ["prober", "victim"])
    out = wait_for(lambda: (lambda t: t if "socket" in t else None)(edge.cli("logs", "prober").stdout),
                   timeout=SLOW, interval=0.2, what="the probe's output")
    assert "own 200" in out
    assert "path 403" in out
    assert "socket 403" in out
    # And a process that is no module at all (this test) is refused too.
    status, body = unix_http(edge.home / "run" / "mnt" / "victim.sock", "POST",
                                 "/modules/victim/genid/x/sign?api-version=2018-06-28",
                                 json.dumps({"data": "aGVsbG8="}))
    assert status == 403 and "message" in body
    status, body = unix_http(edge.home / "run" / "mnt" / "victim.sock", "GET",
                                 "/trust-bundle?api-version=2018-06-28")
    assert status == 200 and "BEGIN CERTIFICATE" in body["certificate"]


def test_last_good_deployment_runs_after_a_restart(edge):
    deploy(edge, manifest({"persist": sleeper(11)}))
    wait_running(edge, ["persist"])
    edge.stop()
    pid = module_pid(edge, "persist")
    assert pid is None or not alive(pid)  # a clean stop stops the modules
    edge.start()  # no manifest given: the one on disk runs
    wait_running(edge, ["persist"])


def test_cli_restart_and_logs(edge):
    deploy(edge, manifest({"talk": process_module(
        "/bin/sh", ["-c", "for i in 1 2 3 4 5; do echo line$i; done; exec sleep 100000"])}))
    wait_running(edge, ["talk"])
    wait_for(lambda: "line5" in edge.cli("logs", "talk").stdout, timeout=SLOW, interval=0.1,
             what="output")
    assert edge.cli("logs", "talk", "--tail", "2").stdout.splitlines() == ["line4", "line5"]
    pid = module_pid(edge, "talk")
    edge.cli("restart", "talk")
    wait_running(edge, ["talk"])
    assert module_pid(edge, "talk") != pid and not alive(pid)
    r = edge.cli("list")
    assert "talk" in r.stdout and "running" in r.stdout
    assert edge.cli("logs", "nosuch", check=False).returncode == 1
