"""`make demo`'s script, end to end on free ports: it must deploy the pipeline, update the model
with a fraction of a full download, drain the alerts to the cloud, and leave nothing running."""
import os
import re
import subprocess

from conftest import BIN_DIR, REPO, free_port


def test_demo_script_runs_the_pipeline_and_cleans_up():
    env = dict(os.environ,
               CAIRN_BIN_DIR=str(BIN_DIR),
               CAIRN_DEMO_PORT=str(free_port()),
               CAIRN_DEMO_CLOUD_MQTT_PORT=str(free_port("127.0.0.2")),
               CAIRN_DEMO_CLOUD_HTTPS_PORT=str(free_port()),
               CAIRN_DEMO_MODELS_PORT=str(free_port()))
    env.pop("CAIRN_DEMO_KEEP", None)
    r = subprocess.run(["bash", str(REPO / "scripts" / "demo")], capture_output=True, text=True,
                       timeout=280, env=env)
    out = r.stdout
    assert r.returncode == 0, f"rc {r.returncode}\n{out}\n{r.stderr[-4000:]}"
    for step in ("[1/4]", "[2/4]", "[3/4]", "[4/4]", "demo: done in"):
        assert step in out, out
    # The update moved a small part of what a full download moves.
    moved = re.search(r"the update moved (\d+) bytes where a full download moves (\d+)", out)
    assert moved, out
    assert 0 < int(moved.group(1)) * 4 < int(moved.group(2)), moved.group(0)
    # Alerts of both versions reached the cloud; the last ones after the cloud set the model.
    assert re.search(r"cloud: alert from demo-edge/infer .* model anomaly v1 \(the sensor injected "
                     r"a spike: true\)", out), out
    assert re.search(r"cloud: alert from demo-edge/infer .* model anomaly v2", out), out
    # Its home directory is gone and no process of it is left.
    home = re.search(r"home (/tmp/cairn-demo\.\w+)", out)
    assert home and not os.path.exists(home.group(1)), out
    leftovers = subprocess.run(["pgrep", "-f", home.group(1)], capture_output=True, text=True)
    assert leftovers.stdout == "", leftovers.stdout
