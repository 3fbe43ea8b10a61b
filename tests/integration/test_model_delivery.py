"""Model delivery end to end: `cairn model pack` into a directory, served by a real HTTP server
on loopback (Python's http.server, HTTP/1.1 keep-alive), fetched with `cairn model fetch`.

Every failure case checks three things: exit code 1, an error naming what was wrong (the chunk
and its URL where there is one), and the previous model file left byte-for-byte untouched.
"""
import functools
import hashlib
import http.server
import json
import os
import socket
import subprocess
import threading
from pathlib import Path

import pytest

from conftest import CAIRN, HOST, REPO
import model_fixtures



class StaticServer:
    """Serves a directory over HTTP/1.1 and records every request path. `fail_after` makes
    chunk requests beyond that many answer 503, as a link that dropped would."""

    def __init__(self, root, host=HOST):
        self.root = Path(root)
        self.host = host
        self.requests = []
        self.connections = 0
        self.fail_after = None
        self.lock = threading.Lock()
        server = self

        class Handler(http.server.SimpleHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def setup(self):
                super().setup()
                with server.lock:
                    server.connections += 1

            def do_GET(self):
                with server.lock:
                    server.requests.append(self.path)
                    chunk_requests = sum(1 for p in server.requests if "/chunks/" in p)
                if (server.fail_after is not None and "/chunks/" in self.path and
                        chunk_requests > server.fail_after):
                    self.send_response(503)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                super().do_GET()

            def log_message(self, *args):
                pass

        class Server(http.server.ThreadingHTTPServer):
            address_family = socket.AF_INET6 if ":" in host else socket.AF_INET

        self.httpd = Server((host, 0), functools.partial(Handler, directory=str(self.root)))
        self.port = self.httpd.server_address[1]
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def url(self, name):
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}/{name}"

    def reset(self):
        with self.lock:
            self.requests = []
            self.connections = 0

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def publish(tmp_path):
    d = tmp_path / "pub"
    d.mkdir()
    return d


@pytest.fixture
def server(publish):
    s = StaticServer(publish)
    yield s
    s.close()


def pack(model, publish, name, version, *extra):
    r = subprocess.run([str(CAIRN), "model", "pack", str(model), "--name", name, "--version",
                        version, "--out", str(publish), *extra],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


def fetch(url, out, store, *extra, expect_rc=0):
    r = subprocess.run([str(CAIRN), "model", "fetch", url, "--out", str(out), "--store",
                        str(store), *extra],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == expect_rc, f"rc={r.returncode}\n{r.stdout}\n{r.stderr}"
    if expect_rc == 0:
        return json.loads(r.stdout.strip().splitlines()[-1])
    return r.stderr


def zstd(args, data):
    return subprocess.run(["zstd", *args], input=data, capture_output=True, check=True).stdout


def index_delta_path(index_file, held_index):
    """Where the publisher puts `index_file` as a delta against the index file `held_index`."""
    return f"deltas/{index_file}/{hashlib.sha256(Path(held_index).read_bytes()).hexdigest()[:16]}"


def held_index(store, index_file):
    """The index the device kept for the version `index_file` (a file of the publish dir)."""
    sha = json.loads(zstd(["-d", "-c"], Path(index_file).read_bytes()))["sha256"]
    return Path(store) / "indexes" / f"{sha}.cidx"


def test_fetch_then_identical_republish_downloads_only_the_index(tmp_path, publish, server):
    model = tmp_path / "m.onnx"
    data = model_fixtures.make_onnx(model, seed=1)
    info = pack(model, publish, "net", "1")
    assert info["format"] == "onnx" and info["tensors"] == 14
    out, store = tmp_path / "device" / "m.onnx", tmp_path / "device" / "store"
    out.parent.mkdir()
    first = fetch(server.url("net-1.cidx"), out, store)
    assert out.read_bytes() == data
    assert first["needed"] == len(data) and first["reused"] == 0
    assert first["chunks_downloaded"] == first["chunks"] > 1
    assert first["requests"] == len(server.requests)
    # Kept connections: one per worker at most, not one per request.
    assert server.connections == first["connections"] <= 4 < first["requests"], first

    pack(model, publish, "net", "2")  # the same file, published again
    server.reset()
    second = fetch(server.url("net-2.cidx"), out, store)
    # The index travels as a delta against version 1's, which the device holds.
    assert server.requests == [f"/{index_delta_path('net-2.cidx', publish / 'net-1.cidx')}"]
    assert second["downloaded"] == second["index_delta_bytes"] < second["index_bytes"] / 4
    assert second["reused"] == len(data) and second["chunks_downloaded"] == 0
    assert out.read_bytes() == data


def test_without_keep_alive_every_request_opens_a_connection(tmp_path, publish, server):
    model = tmp_path / "m.onnx"
    data = model_fixtures.make_onnx(model, seed=1)
    pack(model, publish, "net", "1")
    out, store = tmp_path / "m.out", tmp_path / "store"
    s = fetch(server.url("net-1.cidx"), out, store, "--no-keep-alive")
    assert out.read_bytes() == data
    assert server.connections == s["connections"] == s["requests"] > 1, s


def test_retrained_head_travels_as_a_small_delta(tmp_path, publish, server):
    v1, v2 = tmp_path / "v1.onnx", tmp_path / "v2.onnx"
    model_fixtures.make_onnx(v1, seed=1)
    new = model_fixtures.make_onnx(v2, seed=1, variant="head")
    pack(v1, publish, "net", "1")
    info = pack(v2, publish, "net", "2")
    assert info["deltas"] >= 1
    out, store = tmp_path / "m.onnx", tmp_path / "store"
    fetch(server.url("net-1.cidx"), out, store)
    server.reset()
    s = fetch(server.url("net-2.cidx"), out, store)
    assert out.read_bytes() == new
    assert s["deltas_applied"] >= 1
    assert any("/deltas/" in p for p in server.requests)
    assert s["downloaded"] < s["full_download"] / 10, s


def update_with_and_without_deltas(tmp_path, publish, server, variant):
    """Publishes the generated model and its `variant` as versions 1 and 2, and updates two
    devices holding version 1: one with --no-deltas, one without. Returns both summaries."""
    v1, v2 = tmp_path / "v1.onnx", tmp_path / "v2.onnx"
    model_fixtures.make_onnx(v1, seed=1)
    new = model_fixtures.make_onnx(v2, seed=1, variant=variant)
    pack(v1, publish, "net", "1")
    pack(v2, publish, "net", "2")
    results = {}
    for mode, extra in (("chunks", ["--no-deltas"]), ("deltas", [])):
        out, store = tmp_path / f"{mode}.onnx", tmp_path / f"store-{mode}"
        fetch(server.url("net-1.cidx"), out, store)
        results[mode] = fetch(server.url("net-2.cidx"), out, store, *extra)
        assert out.read_bytes() == new
    return results


def test_every_weight_scaled_is_cheaper_with_deltas_than_chunks(tmp_path, publish, server):
    results = update_with_and_without_deltas(tmp_path, publish, server, "scale")
    assert results["chunks"]["deltas_applied"] == 0
    assert results["deltas"]["deltas_applied"] > 0
    assert results["deltas"]["downloaded"] < results["chunks"]["downloaded"] * 0.8, results


def test_reordered_onnx_reuses_chunks(tmp_path, publish, server):
    v1, v2 = tmp_path / "v1.onnx", tmp_path / "v2.onnx"
    model_fixtures.make_onnx(v1, seed=1)
    new = model_fixtures.make_onnx(v2, seed=1, variant="reorder")
    assert new != v1.read_bytes()
    pack(v1, publish, "net", "1")
    pack(v2, publish, "net", "2")
    out, store = tmp_path / "m.onnx", tmp_path / "store"
    fetch(server.url("net-1.cidx"), out, store)
    s = fetch(server.url("net-2.cidx"), out, store, "--no-deltas")
    assert out.read_bytes() == new
    assert s["reused"] > 0.97 * len(new), s
    assert s["downloaded"] < 0.05 * s["full_download"], s


def test_interrupted_fetch_resumes_without_refetching_completed_chunks(tmp_path, publish, server):
    model = tmp_path / "m.onnx"
    data = model_fixtures.make_onnx(model, seed=2)
    info = pack(model, publish, "net", "1")
    assert info["chunks"] >= 6
    out, store = tmp_path / "m.onnx.serving", tmp_path / "store"
    out.write_bytes(b"the model serving now")
    server.fail_after = 3
    err = fetch(server.url("net-1.cidx"), out, store, "--parallel", "1", expect_rc=1)
    assert "HTTP 503" in err and "/chunks/" in err, err
    assert out.read_bytes() == b"the model serving now"
    first_run = [p for p in server.requests if "/chunks/" in p]
    completed = first_run[:3]
    server.fail_after = None
    server.reset()
    s = fetch(server.url("net-1.cidx"), out, store)
    assert out.read_bytes() == data
    second_run = [p for p in server.requests if "/chunks/" in p]
    assert not set(completed) & set(second_run)
    assert s["chunks_reused"] == 3 and s["chunks_downloaded"] == s["chunks"] - 3


def published_with_old_model(tmp_path, publish, server):
    """Publishes version 1, fetches it, then publishes version 2 (a different model). Returns
    (out, store, old bytes) so a broken version 2 can be fetched over a serving version 1."""
    v1, v2 = tmp_path / "v1.onnx", tmp_path / "v2.onnx"
    old = model_fixtures.make_onnx(v1, seed=1)
    model_fixtures.make_onnx(v2, seed=5)
    pack(v1, publish, "net", "1")
    pack(v2, publish, "net", "2")
    out, store = tmp_path / "serving.onnx", tmp_path / "store"
    fetch(server.url("net-1.cidx"), out, store)
    return out, store, old


def remove_tree(path):
    for p in sorted(Path(path).rglob("*"), reverse=True):
        p.unlink() if p.is_file() else p.rmdir()
    Path(path).rmdir()


def chunk_files(publish, version_index):
    raw = zstd(["-d", "-c"], (publish / version_index).read_bytes())
    return [c[0] for c in json.loads(raw)["chunks"]]


def test_corrupted_chunk_is_rejected(tmp_path, publish, server):
    out, store, old = published_with_old_model(tmp_path, publish, server)
    victim = chunk_files(publish, "net-2.cidx")[2]
    path = publish / "chunks" / victim[:2] / victim
    damaged = bytearray(path.read_bytes())
    damaged[len(damaged) // 2] ^= 0xFF
    path.write_bytes(bytes(damaged))
    # The chunk path (with deltas allowed, version 1 in the store makes deltas the cheaper way).
    err = fetch(server.url("net-2.cidx"), out, store, "--no-deltas", expect_rc=1)
    assert victim in err and server.url(f"chunks/{victim[:2]}/{victim}") in err, err
    assert out.read_bytes() == old


def test_corrupted_deltas_fall_back_to_chunks(tmp_path, publish, server):
    out, store, _ = published_with_old_model(tmp_path, publish, server)
    deltas = [p for p in (publish / "deltas").rglob("*") if p.is_file()]
    assert deltas, "version 2 was packed with deltas against version 1"
    for path in deltas:
        damaged = bytearray(path.read_bytes())
        damaged[len(damaged) // 2] ^= 0xFF
        path.write_bytes(bytes(damaged))
    summary = fetch(server.url("net-2.cidx"), out, store)
    assert summary["deltas_applied"] == 0 and summary["chunks_downloaded"] > 0, summary
    assert hashlib.sha256(out.read_bytes()).hexdigest() == summary["sha256"]


def test_missing_chunk_is_rejected(tmp_path, publish, server):
    out, store, old = published_with_old_model(tmp_path, publish, server)
    victim = chunk_files(publish, "net-2.cidx")[-1]
    (publish / "chunks" / victim[:2] / victim).unlink()
    err = fetch(server.url("net-2.cidx"), out, store, "--no-deltas", expect_rc=1)
    assert victim in err and "HTTP 404" in err, err
    assert out.read_bytes() == old


def test_truncated_index_is_rejected(tmp_path, publish, server):
    out, store, old = published_with_old_model(tmp_path, publish, server)
    # Without its delta the index travels whole (the delta would still make the good one).
    remove_tree(publish / "deltas" / "net-2.cidx")
    index = publish / "net-2.cidx"
    index.write_bytes(index.read_bytes()[:-20])
    err = fetch(server.url("net-2.cidx"), out, store, expect_rc=1)
    assert "net-2.cidx" in err and "index is invalid" in err, err
    assert out.read_bytes() == old


def test_wrong_whole_file_hash_is_rejected(tmp_path, publish, server):
    out, store, old = published_with_old_model(tmp_path, publish, server)
    remove_tree(publish / "deltas" / "net-2.cidx")
    index = publish / "net-2.cidx"
    j = json.loads(zstd(["-d", "-c"], index.read_bytes()))
    j["sha256"] = "0" * 64
    index.write_bytes(zstd(["-19", "-c"], json.dumps(j).encode()))
    err = fetch(server.url("net-2.cidx"), out, store, expect_rc=1)
    assert "SHA-256" in err and "0" * 64 in err and "left unchanged" in err, err
    assert out.read_bytes() == old
    assert not [p for p in out.parent.iterdir() if p.name.startswith(".serving.onnx.part")]


def test_signed_index_is_required_when_a_key_is_configured(tmp_path, publish, server):
    keys = tmp_path / "keys"
    keys.mkdir()
    for name in ("a", "b"):
        subprocess.run([str(CAIRN), "model", "keygen", "--private", str(keys / name),
                        "--public", str(keys / f"{name}.pub")], check=True, timeout=30)
    v1 = tmp_path / "v1.onnx"
    data = model_fixtures.make_onnx(v1, seed=1)
    pack(v1, publish, "net", "1", "--sign-key", str(keys / "a"))
    pack(v1, publish, "net", "unsigned")
    out, store = tmp_path / "m.onnx", tmp_path / "store"
    out.write_bytes(b"old")
    fetch(server.url("net-1.cidx"), out, store, "--public-key", str(keys / "a.pub"))
    assert out.read_bytes() == data
    out.write_bytes(b"old")
    err = fetch(server.url("net-1.cidx"), out, store, "--public-key", str(keys / "b.pub"),
                expect_rc=1)
    assert "signature does not match" in err, err
    err = fetch(server.url("net-unsigned.cidx"), out, store, "--public-key",
                str(keys / "a.pub"), expect_rc=1)
    assert "not signed" in err, err
    # A signature that belongs to another index.
    (publish / "net-unsigned.cidx.sig").write_bytes((publish / "net-1.cidx.sig").read_bytes())
    err = fetch(server.url("net-unsigned.cidx"), out, store, "--public-key",
                str(keys / "a.pub"), expect_rc=1)
    assert "signature does not match" in err, err
    assert out.read_bytes() == b"old"


def signed_head_update(tmp_path, publish, server):
    """Publishes versions 1 and 2 (retrained head) signed, and fetches version 1 onto a device
    that requires signatures. Returns (key file, out, store, version 2's bytes)."""
    keys = tmp_path / "keys"
    keys.mkdir()
    subprocess.run([str(CAIRN), "model", "keygen", "--private", str(keys / "k"), "--public",
                    str(keys / "k.pub")], check=True, timeout=30)
    v1, v2 = tmp_path / "v1.onnx", tmp_path / "v2.onnx"
    model_fixtures.make_onnx(v1, seed=1)
    new = model_fixtures.make_onnx(v2, seed=1, variant="head")
    pack(v1, publish, "net", "1", "--sign-key", str(keys / "k"))
    info = pack(v2, publish, "net", "2", "--sign-key", str(keys / "k"))
    assert info["index_deltas"] == 1
    out, store = tmp_path / "m.onnx", tmp_path / "store"
    fetch(server.url("net-1.cidx"), out, store, "--public-key", str(keys / "k.pub"))
    return keys, out, store, new


def test_index_travels_as_a_delta_when_the_device_holds_an_earlier_version(
        tmp_path, publish, server):
    keys, out, store, new = signed_head_update(tmp_path, publish, server)
    server.reset()
    s = fetch(server.url("net-2.cidx"), out, store, "--public-key", str(keys / "k.pub"))
    assert out.read_bytes() == new
    delta = index_delta_path("net-2.cidx", publish / "net-1.cidx")
    assert server.requests[:2] == [f"/{delta}", "/net-2.cidx.sig"], server.requests
    assert "/net-2.cidx" not in server.requests
    assert 0 < s["index_delta_bytes"] == (publish / delta).stat().st_size
    assert s["index_delta_bytes"] < s["index_bytes"] / 4, s
    # The device keeps the exact bytes published (and signed): the base of the next delta.
    assert held_index(store, publish / "net-2.cidx").read_bytes() == \
        (publish / "net-2.cidx").read_bytes()


@pytest.mark.parametrize("damage", ["absent", "corrupt"])
def test_index_comes_whole_when_its_delta_is_absent_or_corrupt(tmp_path, publish, server, damage):
    keys, out, store, new = signed_head_update(tmp_path, publish, server)
    delta = publish / index_delta_path("net-2.cidx", publish / "net-1.cidx")
    if damage == "absent":
        delta.unlink()
    else:
        damaged = bytearray(delta.read_bytes())
        damaged[-3] ^= 0x5A
        delta.write_bytes(bytes(damaged))
    server.reset()
    s = fetch(server.url("net-2.cidx"), out, store, "--public-key", str(keys / "k.pub"))
    assert out.read_bytes() == new
    assert "/net-2.cidx" in server.requests and s["index_delta_bytes"] == 0, s
    assert held_index(store, publish / "net-2.cidx").read_bytes() == \
        (publish / "net-2.cidx").read_bytes()


def test_index_delta_that_fails_the_signature_is_not_trusted(tmp_path, publish, server):
    """A delta that makes another validly encoded index (here: a republished version 2's old
    index) is refused by the signature check; the index as published is fetched and checked."""
    keys = tmp_path / "keys"
    keys.mkdir()
    subprocess.run([str(CAIRN), "model", "keygen", "--private", str(keys / "k"), "--public",
                    str(keys / "k.pub")], check=True, timeout=30)
    v1, v2, v3 = (tmp_path / f"v{i}.onnx" for i in (1, 2, 3))
    model_fixtures.make_onnx(v1, seed=1)
    model_fixtures.make_onnx(v2, seed=1, variant="head")
    new = model_fixtures.make_onnx(v3, seed=1, variant="scale")
    pack(v1, publish, "net", "1", "--sign-key", str(keys / "k"))
    pack(v2, publish, "net", "2", "--sign-key", str(keys / "k"))
    delta = publish / index_delta_path("net-2.cidx", publish / "net-1.cidx")
    stale = delta.read_bytes()
    pack(v3, publish, "net", "2", "--sign-key", str(keys / "k"))  # version 2 republished
    delta.write_bytes(stale)  # a mirror still serving the delta of the first publication
    out, store = tmp_path / "m.onnx", tmp_path / "store"
    fetch(server.url("net-1.cidx"), out, store, "--public-key", str(keys / "k.pub"))
    server.reset()
    s = fetch(server.url("net-2.cidx"), out, store, "--public-key", str(keys / "k.pub"))
    assert out.read_bytes() == new
    assert "/net-2.cidx" in server.requests and s["index_delta_bytes"] == 0, s


def test_reordered_onnx_sends_the_bytes_between_tensors_as_deltas(tmp_path, publish, server):
    results = update_with_and_without_deltas(tmp_path, publish, server, "reorder")
    d = results["deltas"]
    assert d["deltas_applied"] >= 1 and d["index_delta_bytes"] > 0, d
    # The moved framing and names come from the old file the device holds.
    assert d["downloaded"] < results["chunks"]["downloaded"] / 3, results


def test_store_cap_evicts_unreferenced_chunks(tmp_path, publish, server):
    models = []
    for seed in (1, 2, 3):
        m = tmp_path / f"s{seed}.onnx"
        model_fixtures.make_onnx(m, seed=seed)
        pack(m, publish, "net", str(seed))
        models.append(m)
    out, store = tmp_path / "m.onnx", tmp_path / "store"
    for seed in (1, 2, 3):
        fetch(server.url(f"net-{seed}.cidx"), out, store, "--store-max-bytes", "1")
    chunks = {p.name for p in (store / "chunks").rglob("*") if p.is_file()}
    # Only the two kept indexes' chunks remain (current and previous version).
    kept = set(chunk_files(publish, "net-3.cidx")) | set(chunk_files(publish, "net-2.cidx"))
    assert chunks == kept
    assert not (set(chunk_files(publish, "net-1.cidx")) - kept) & chunks
    assert len(list((store / "indexes").iterdir())) == 2


def shared_dir():
    d = Path(os.environ.get("CAIRN_SHARED_DIR", REPO.parent / "shared"))
    tflite = d / "models" / "tflite"
    if not tflite.is_dir():
        pytest.fail(f"TFLite test models missing: {tflite} (set CAIRN_SHARED_DIR)")
    return tflite


def test_tflite_one_layer_change_moves_only_that_layer(tmp_path, publish, server):
    src = shared_dir() / "person_detect.tflite"
    changed = tmp_path / "changed.tflite"
    model_fixtures.tflite_change_one_layer(str(src), str(changed))
    info = pack(src, publish, "pd", "1")
    assert info["format"] == "tflite" and info["tensors"] > 10
    pack(changed, publish, "pd", "2")
    out, store = tmp_path / "pd.tflite", tmp_path / "store"
    fetch(server.url("pd-1.cidx"), out, store)
    s = fetch(server.url("pd-2.cidx"), out, store)
    assert out.read_bytes() == changed.read_bytes()
    assert s["reused"] > 0.5 * s["needed"], s


def ipv6_loopback():
    try:
        with socket.socket(socket.AF_INET6) as s:
            s.bind(("::1", 0))
        return True
    except OSError:
        return False


@pytest.mark.skipif(not ipv6_loopback(), reason="no IPv6 loopback (::1) on this machine")
def test_fetch_from_an_ipv6_url_in_brackets(tmp_path, publish):
    v1, v2 = tmp_path / "v1.onnx", tmp_path / "v2.onnx"
    model_fixtures.make_onnx(v1, seed=3)
    data2 = model_fixtures.make_onnx(v2, seed=3, variant="head")
    pack(v1, publish, "net", "1")
    pack(v2, publish, "net", "2")
    server = StaticServer(publish, host="::1")
    try:
        assert server.url("net-1.cidx").startswith("http://[::1]:")
        out, store = tmp_path / "m.onnx", tmp_path / "store"
        fetch(server.url("net-1.cidx"), out, store)
        server.reset()
        s = fetch(server.url("net-2.cidx"), out, store)
        assert out.read_bytes() == data2 and s["deltas_applied"] > 0, s
        # Kept connections over IPv6 too, and every request reached the ::1 server.
        assert s["connections"] <= 4 and len(server.requests) == s["requests"], s
    finally:
        server.close()
    err = fetch("http://[::1:80/net-1.cidx", out, store, expect_rc=2)
    assert "unclosed '['" in err, err
