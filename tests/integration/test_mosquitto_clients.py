"""Interoperability with the stock mosquitto_pub / mosquitto_sub clients over TLS."""
import shutil
import subprocess

import pytest

from conftest import HOST, decode_bag, wait_for

pytestmark = pytest.mark.skipif(shutil.which("mosquitto_pub") is None,
                                reason="mosquitto-clients not installed")


def _common(d, module, password=None):
    return ["-h", HOST, "-p", str(d.tls_port), "--cafile", str(d.ca_path), "-V", "mqttv311",
            "-i", d.client_id(module), "-u", d.username(module),
            "-P", password or d.token(module)]


def _pub(d, topic, *extra, module="sensor", input_text=None, password=None):
    cmd = ["mosquitto_pub", *_common(d, module, password), "-q", "1", "-t", topic, *extra]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=60, input=input_text)


def test_mosquitto_pub_to_mosquitto_sub(cairnd):
    topic = cairnd.events_topic("sensor", {"$.on": "temp", "$.ct": "text/plain", "src": "mosq"})
    for i in range(3):
        r = _pub(cairnd, topic, "-m", f"hello {i}")
        assert r.returncode == 0, r.stderr
    # PUBACKed means stored: they wait for filter.
    assert cairnd.queue_length("filter/in") == 3

    sub = subprocess.run(
        ["mosquitto_sub", *_common(cairnd, "filter"), "-q", "1", "-t",
         cairnd.inputs_filter("filter"), "-C", "3", "-W", "60", "-v"],
        capture_output=True, text=True, timeout=90)
    assert sub.returncode == 0, sub.stderr
    lines = sub.stdout.strip().splitlines()
    assert len(lines) == 3, sub.stdout
    for i, line in enumerate(lines):
        topic_out, _, payload = line.partition(" ")
        assert payload == f"hello {i}"
        prefix = "devices/edge1/modules/filter/inputs/in/"
        assert topic_out.startswith(prefix)
        props = decode_bag(topic_out[len(prefix):])
        assert props["src"] == "mosq"
        assert props["$.ct"] == "text/plain"
        assert props["$.cmid"] == "sensor"
        assert props["$.cdid"] == "edge1"
    wait_for(lambda: cairnd.queue_length("filter/in") == 0, what="acknowledged and deleted")


def test_mosquitto_sub_live_then_pub_lines(cairnd):
    cairnd.create_identity("sensor")
    sub = subprocess.Popen(
        ["mosquitto_sub", *_common(cairnd, "filter"), "-q", "1", "-t",
         cairnd.inputs_filter("filter"), "-C", "5", "-W", "60"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        wait_for(lambda: cairnd.status()["endpoints"]["filter/in"]["attached"],
                 timeout=30, what="mosquitto_sub attached")
        r = _pub(cairnd, cairnd.events_topic("sensor", {"$.on": "temp"}), "-l",
                 input_text="".join(f"line{i}\n" for i in range(5)))
        assert r.returncode == 0, r.stderr
        out, err = sub.communicate(timeout=60)
    finally:
        if sub.poll() is None:
            sub.kill()
            sub.wait()
    assert sub.returncode == 0, err
    assert out.split() == [f"line{i}" for i in range(5)]


def test_mosquitto_pub_bad_token_refused(cairnd):
    cairnd.create_identity("sensor")
    r = _pub(cairnd, cairnd.events_topic("sensor"), "-m", "x",
             password="SharedAccessSignature sr=a&sig=b&se=1")
    assert r.returncode != 0
    assert "not authori" in (r.stderr + r.stdout).lower() or "refused" in r.stderr.lower()
    assert cairnd.counter("messagesReceived") == 0


def test_mosquitto_pub_wrong_ca_fails(cairnd, tmp_path):
    cairnd.create_identity("sensor")
    other = tmp_path / "other-ca.pem"
    # Another cairnd home's CA is a different CA.
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-subj",
                    "/CN=other", "-keyout", str(tmp_path / "k.pem"), "-out", str(other),
                    "-days", "1"], check=True, capture_output=True)
    cmd = ["mosquitto_pub", "-h", HOST, "-p", str(cairnd.tls_port), "--cafile", str(other),
           "-V", "mqttv311", "-i", cairnd.client_id("sensor"), "-u", cairnd.username("sensor"),
           "-P", cairnd.token("sensor"), "-q", "1", "-t", cairnd.events_topic("sensor"),
           "-m", "x"]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
    assert r.returncode != 0
    assert cairnd.counter("messagesReceived") == 0
