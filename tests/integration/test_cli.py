"""cairnd and cairn command lines: help, version, configuration errors, identities."""
import json
import re
import subprocess
import time

from conftest import CAIRN, CAIRND, Cairnd, parse_connection_string


def run(*cmd, timeout=60, **kw):
    return subprocess.run([str(c) for c in cmd], capture_output=True, text=True,
                          timeout=timeout, **kw)


def test_cairnd_help_and_version():
    r = run(CAIRND, "--help")
    assert r.returncode == 0
    assert "--home" in r.stdout and "--manifest" in r.stdout
    r = run(CAIRND, "--version")
    assert r.returncode == 0
    assert re.match(r"cairnd \S+", r.stdout.strip()), r.stdout


def test_cairnd_bad_option():
    r = run(CAIRND, "--no-such-option")
    assert r.returncode == 2


def test_cairn_help_and_version():
    r = run(CAIRN, "--help")
    assert r.returncode == 0
    assert "identity" in r.stdout and "status" in r.stdout
    r = run(CAIRN, "--version")
    assert r.returncode == 0
    assert r.stdout.startswith("cairn ")
    r = run(CAIRN)
    assert r.returncode == 2  # a subcommand is required


def test_bad_config_key_exit2(tmp_path):
    d = Cairnd(tmp_path / "h")
    text = d.config_path.read_text().splitlines()
    # Put an unknown key into [mqtt] and note its line.
    idx = text.index("[mqtt]") + 2
    text.insert(idx, "max_conections = 5")
    d.config_path.write_text("\n".join(text) + "\n")
    r = run(*d.command())
    assert r.returncode == 2, r.stdout + r.stderr
    out = r.stdout + r.stderr
    assert f"{d.config_path}:{idx + 1}" in out, out
    assert "max_conections" in out
    # Nothing was started: no socket, no certificates.
    assert not (d.home / "run" / "mgmt.sock").exists()


def test_bad_top_level_key_and_bad_types(tmp_path):
    d = Cairnd(tmp_path / "h")
    d.config_path.write_text('device_id = "e"\nbogus = 1\n')
    r = run(*d.command())
    assert r.returncode == 2
    assert f"{d.config_path}:2" in r.stdout + r.stderr
    d.config_path.write_text('[mqtt]\ntls_port = "8883"\n')
    r = run(*d.command())
    assert r.returncode == 2
    assert f"{d.config_path}:2" in r.stdout + r.stderr
    d.config_path.write_text('[mqtt\n')
    r = run(*d.command())
    assert r.returncode == 2
    assert str(d.config_path) in r.stdout + r.stderr


def test_bad_manifest_route_exit2(tmp_path):
    routes = {
        "good": 'FROM /messages/* INTO $upstream',
        "broken": 'FROM /messages/* WHERE a = INTO $upstream',
    }
    d = Cairnd(tmp_path / "h", routes=routes)
    r = run(*d.command())
    out = r.stdout + r.stderr
    assert r.returncode == 2, out
    assert "broken" in out
    assert re.search(r"column \d+", out), out
    assert not (d.home / "run" / "mgmt.sock").exists()


def test_bad_manifest_sink_and_priority(tmp_path):
    d = Cairnd(tmp_path / "h", routes={"r9": 'FROM /messages/* INTO BrokeredEndpoint("/x")'})
    r = run(*d.command())
    assert r.returncode == 2
    assert "r9" in r.stdout + r.stderr
    d = Cairnd(tmp_path / "h2", routes={"p": {"route": "FROM /messages/* INTO $upstream",
                                              "priority": 10}})
    r = run(*d.command())
    assert r.returncode == 2
    assert "priority" in r.stdout + r.stderr


def test_manifest_not_json_or_missing(tmp_path):
    d = Cairnd(tmp_path / "h")
    d.manifest_path.write_text("{not json")
    r = run(*d.command())
    assert r.returncode == 2
    assert str(d.manifest_path) in r.stdout + r.stderr
    d.manifest_path.unlink()
    r = run(*d.command())
    assert r.returncode == 2
    assert str(d.manifest_path) in r.stdout + r.stderr


def test_cairn_without_cairnd(tmp_path):
    r = run(CAIRN, "--home", tmp_path, "status")
    assert r.returncode == 1
    assert "cairnd" in r.stderr and str(tmp_path) in r.stderr
    assert r.stdout == ""
    r = run(CAIRN, "--home", tmp_path, "identity", "create", "m")
    assert r.returncode == 1
    assert "cairn:" in r.stderr


def test_identity_create_idempotent_and_token_works(cairnd, module_client):
    a = cairnd.cli("identity", "create", "sensor").stdout.strip()
    b = cairnd.cli("identity", "create", "sensor").stdout.strip()
    assert a == b
    cs = parse_connection_string(a)
    assert cs["HostName"] == "cairn.local"
    assert cs["DeviceId"] == "edge1"
    assert cs["ModuleId"] == "sensor"
    assert cs["GatewayHostName"] == "localhost"
    assert len(cs["SharedAccessKey"]) >= 40
    other = parse_connection_string(cairnd.cli("identity", "create", "other").stdout)
    assert other["SharedAccessKey"] != cs["SharedAccessKey"]
    assert cairnd.cli("identity", "list").stdout.split() == ["other", "sensor"]
    # The CLI's token logs in.
    token = cairnd.cli("identity", "token", "sensor").stdout.strip()
    c = module_client(cairnd, "sensor", password=token)
    assert c.is_connected()
    # Identities survive a restart with the same key.
    c.disconnect()
    cairnd.restart()
    assert cairnd.cli("identity", "create", "sensor").stdout.strip() == a


def test_identity_errors(cairnd):
    r = cairnd.cli("identity", "create", "bad/name", check=False)
    assert r.returncode == 1
    assert "bad/name" in r.stderr
    r = cairnd.cli("identity", "token", "ghost", check=False)
    assert r.returncode == 1
    assert "ghost" in r.stderr
    r = cairnd.cli("identity", "delete", "ghost", check=False)
    assert r.returncode == 1
    r = cairnd.cli("identity", "token", "x", "--ttl", "0", check=False)
    assert r.returncode == 2
    cairnd.create_identity("m1")
    cairnd.cli("identity", "delete", "m1")
    assert cairnd.cli("identity", "list").stdout.split() == []


def test_status_json(cairnd):
    st = json.loads(cairnd.cli("status").stdout)
    assert st["deviceId"] == "edge1"
    assert st["counters"]["connectionsTotal"] == 0


def test_cairnd_runs_without_manifest_or_config(tmp_path, cairnd_factory):
    d = cairnd_factory(manifest=False)
    assert d.status()["routes"] == 0
    assert d.ca_path.exists()


def test_port_in_use_exit1(tmp_path, cairnd):
    d2 = Cairnd(tmp_path / "h2")
    d2.mqtt_config["tls_port"] = cairnd.tls_port
    d2.write_config()
    r = run(*d2.command())
    assert r.returncode == 1
    assert str(cairnd.tls_port) in r.stdout + r.stderr


def test_sigterm_exits_zero(cairnd_factory):
    d = cairnd_factory()
    t0 = time.monotonic()
    assert d.stop() == 0
    assert time.monotonic() - t0 < 10
    assert "stopped" in d.log_text()


def test_explicit_missing_config_exit2(tmp_path):
    missing = tmp_path / "nope.toml"
    r = run(CAIRND, "--home", tmp_path / "h", "--config", missing)
    assert r.returncode == 2, r.stdout + r.stderr
    assert str(missing) in r.stdout + r.stderr


def test_explicit_config_is_used(tmp_path, cairnd_factory):
    d = cairnd_factory(start=False)
    other = tmp_path / "elsewhere.toml"
    other.write_text(d.config_path.read_text().replace('device_id = "edge1"',
                                                        'device_id = "edgeX"'))
    d.config_path.unlink()
    r = run(CAIRND, "--home", d.home, "--config", other, "--manifest", d.manifest_path,
            "--no-such-flag")
    assert r.returncode == 2
    # Run it for real: the device id comes from the explicit file.
    p = subprocess.Popen([str(CAIRND), "--home", str(d.home), "--config", str(other)],
                         stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + 30
        while not (d.home / "run" / "mgmt.sock").exists():
            assert p.poll() is None and time.monotonic() < deadline
            time.sleep(0.05)
        st = json.loads(run(CAIRN, "--home", d.home, "status").stdout)
        assert st["deviceId"] == "edgeX"
    finally:
        p.terminate()
        assert p.wait(30) == 0
