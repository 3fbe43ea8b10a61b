"""`cairn check` on the module runtime: the container engine reachable, the images of deployed
modules present, the modules healthy (running, not in a restart loop); each check a verdict and
what to do. Real cairnd, real modules (process runtime), and a --docker-uri nobody serves for
the unreachable engine; the reachable engine is covered with Podman in test_docker_runtime.py.
"""
import json
import os

from conftest import wait_for
from test_agent import SLOW, deploy, manifest, process_module, sleeper, wait_running


def checks(edge):
    r = edge.cli("check", "--json", check=False)
    out = json.loads(r.stdout)
    assert (r.returncode == 0) == out["healthy"], r
    return r.returncode, {c["id"]: c for c in out["checks"]}


def test_check_reports_engine_images_and_module_health(cairnd_factory, monkeypatch, tmp_path):
    monkeypatch.setenv("CAIRN_AGENT_COOL_OFF_MS", "500")
    edge = cairnd_factory(manifest=False, start=False)
    edge.extra_args = ["--docker-uri", f"unix://{tmp_path}/nobody.sock"]
    edge.start()
    boxed = {"version": "1.0", "type": "docker", "restartPolicy": "always",
             "settings": {"image": "busybox:1", "createOptions": ""}}
    deploy(edge, manifest({
        "fine": sleeper(40),
        "crash": process_module("/bin/sh", ["-c", "echo crashing; exit 3"],
                                restart="on-failure"),
        "missing": process_module(f"/nonexistent/{os.getpid()}/module"),
        "boxed": boxed}))
    wait_running(edge, ["fine"])

    def crash_looping():
        rc, c = checks(edge)
        return (rc, c) if "restart loop" in c.get("module-crash", {}).get("message", "") else None
    rc, c = wait_for(crash_looping, timeout=SLOW, interval=0.2, what="crash in a restart loop")
    assert rc == 1
    # The engine: down, and docker modules are deployed, so an error naming the socket and the fix.
    assert c["runtime-process"]["status"] == "ok"
    assert c["runtime-docker"]["status"] == "error"
    assert "nobody.sock" in c["runtime-docker"]["message"]
    assert "start it" in c["runtime-docker"]["message"]
    # Images.
    assert c["image-fine"]["status"] == "ok" and "/bin/sleep is present" in c["image-fine"]["message"]
    assert c["image-missing"]["status"] == "error"
    assert "/nonexistent/" in c["image-missing"]["message"]
    assert "install it, or fix settings.image" in c["image-missing"]["message"]
    assert c["image-boxed"]["status"] == "warning" and "not checked" in c["image-boxed"]["message"]
    # Modules.
    assert c["module-fine"]["status"] == "ok"
    assert c["module-crash"]["status"] == "error"
    assert "exited with 3" in c["module-crash"]["message"]
    assert "cairn logs crash" in c["module-crash"]["message"]
    assert c["module-missing"]["status"] == "error"
    assert c["module-boxed"]["status"] == "error" and "nobody.sock" in c["module-boxed"]["message"]
    # The human form names the failures.
    out = edge.cli("check", check=False)
    assert out.returncode == 1
    for failing in ("runtime-docker", "image-missing", "module-crash", "module-missing"):
        assert f"FAIL  {failing}:" in out.stdout, out.stdout
    assert "ok    module-fine:" in out.stdout

    # Only process modules, all running: the silent engine is a warning, and all is well.
    deploy(edge, manifest({"fine": sleeper(40)}))
    wait_for(lambda: set(k for k in checks(edge)[1] if k.startswith("module-")) == {"module-fine"},
             timeout=SLOW, interval=0.2, what="the old modules gone from the checks")
    rc, c = checks(edge)
    assert c["runtime-docker"]["status"] == "warning"
    assert rc == 0, c
