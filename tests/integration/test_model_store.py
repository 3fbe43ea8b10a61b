"""cairn-cloud's model store: `cairn cloud model push` uploads only the chunks the store lacks,
cairn-cloud computes deltas and serves the package over HTTPS, and a cairn-infer module on a
cairnd connected to that cloud fetches it when its twin (set in the cloud) names a new version.
Bad input to the store gets a 4xx JSON error and changes nothing on disk."""
import hashlib
import http.client
import json
import os
import re
import socket
import ssl
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from conftest import CLOUD_HOST, HOST, edge_device, wait_for
import model_fixtures
from test_model_delivery import CAIRN, fetch, pack, zstd
from test_infer_module import TIMEOUT, infer_module  # noqa: F401


def push(cloud, path, name, version, *extra, check=True):
    r = cloud.cli("model", "push", str(path), "--name", name, "--version", version, "-q",
                  *extra, check=check, timeout=300)
    return json.loads(r.stdout.strip().splitlines()[-1]) if check else r


def public_get(cloud, target, token=None):
    """GET of a published file as a device does it: TLS against the cloud's CA, no token."""
    ctx = ssl.create_default_context(cafile=str(cloud.ca_path))
    sock = socket.create_connection((CLOUD_HOST, cloud.https_port), 30)
    conn = http.client.HTTPSConnection(CLOUD_HOST, cloud.https_port, context=ctx, timeout=30)
    conn.sock = ctx.wrap_socket(sock, server_hostname=cloud.hostname)
    try:
        conn.request("GET", target, headers={"Authorization": token} if token else {})
        r = conn.getresponse()
        return r.status, r.read()
    finally:
        conn.close()


def store_snapshot(cloud):
    root = cloud.home / "models"
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def cloud_reported_model(cloud, device_id, name):
    twin = cloud.twin(device_id, "infer")
    return (twin.get("properties", {}).get("reported", {}).get("models") or {}).get(name)


def test_pushed_versions_reach_an_infer_module_through_cairnd_moving_only_changed_bytes(
        cloud, cairnd_factory, infer_module, tmp_path):  # noqa: F811
    v1, v2 = tmp_path / "net-v1.onnx", tmp_path / "net-v2.onnx"
    model_fixtures.make_onnx(v1, seed=1)
    model_fixtures.make_onnx(v2, seed=1, variant="head")

    first_push = push(cloud, v1, "net", "1")
    assert first_push["chunksUploaded"] == first_push["chunks"] > 1, first_push
    assert first_push["size"] == v1.stat().st_size and first_push["deltas"] == 0
    url1 = first_push["url"]
    assert url1 == f"https://{cloud.hostname}:{cloud.https_port}/models/net-1.cidx"

    edge = edge_device(cloud, cairnd_factory)
    data_dir = tmp_path / "data"
    module = infer_module(edge, data_dir, "--http", f"{HOST}:0",
                          "--delivery-ca-file", cloud.ca_path)
    edge.wait_link("infer", timeout=60)

    def ready(version):
        def check():
            assert module.proc.poll() is None, f"cairn-infer exited:\n{module.log()[-4000:]}"
            entry = cloud_reported_model(cloud, edge.device_id, "net")
            return entry if entry and entry.get("status") == "ready" and \
                entry.get("version") == version else None
        return wait_for(check, timeout=TIMEOUT, interval=0.3, what=f"net v{version} serving")

    cloud.set_desired(edge.device_id, "infer", {"models": {"net": {"version": "1", "url": url1}}})
    d1 = ready("1")["delivery"]
    assert d1["status"] == "done" and d1["source"] == "package", d1
    assert d1["bytesNeeded"] == v1.stat().st_size and d1["bytesReused"] == 0
    assert d1["bytesDownloaded"] > 0

    # The second push uploads only the chunks of the changed head; the store adds deltas.
    second_push = push(cloud, v2, "net", "2")
    assert 0 < second_push["chunksUploaded"] < second_push["chunks"], second_push
    assert second_push["bytesUploaded"] < first_push["bytesUploaded"] / 2, (first_push,
                                                                           second_push)
    assert second_push["deltas"] >= 1, second_push

    cloud.set_desired(edge.device_id, "infer",
                      {"models": {"net": {"version": "2", "url": second_push["url"]}}})
    d2 = ready("2")["delivery"]
    full = v2.stat().st_size
    assert d2["status"] == "done" and d2["bytesNeeded"] == full, d2
    assert d2["bytesReused"] > 0 and d2["bytesDownloaded"] < full / 4, d2
    assert d2["bytesSaved"] > 0 and d2["deltasApplied"] >= 1, d2
    assert (data_dir / "models" / "net" / "2.model").read_bytes() == v2.read_bytes()

    # The same figures in cairn-infer's metrics.
    line = module.proc.stdout.readline().decode()
    port = int(line.strip().rsplit(":", 1)[1])
    conn = http.client.HTTPConnection(HOST, port, timeout=30)
    conn.request("GET", "/metrics")
    metrics = conn.getresponse().read().decode()
    conn.close()
    for figure, key in (("needed", "bytesNeeded"), ("reused", "bytesReused"),
                        ("downloaded", "bytesDownloaded"), ("saved", "bytesSaved")):
        m = re.search(r'^cairn_infer_model_delivery_bytes\{model="net",version="2",'
                      rf'figure="{figure}"\}} (\d+)$', metrics, re.M)
        assert m and int(m.group(1)) == d2[key], (figure, metrics)
    total = re.search(r'^cairn_infer_model_delivery_downloaded_bytes_total\{model="net"\} (\d+)$',
                      metrics, re.M)
    assert total and int(total.group(1)) == d1["bytesDownloaded"] + d2["bytesDownloaded"]

    listing = cloud.cli("model", "list").stdout.splitlines()
    assert [ln.split("\t")[:2] for ln in listing] == [["net", "1"], ["net", "2"]], listing


@pytest.fixture
def stored(cloud, tmp_path):
    """A cloud whose store holds net version 1; returns (cloud, model bytes, push summary)."""
    m = tmp_path / "m.onnx"
    data = model_fixtures.make_onnx(m, seed=2)
    return cloud, data, push(cloud, m, "net", "1")


def put(cloud, target, raw, token=None):
    return cloud.request("PUT", target, raw=raw, api_version=False, token=token,
                         headers={"Content-Type": "application/octet-stream"})


def test_published_files_are_served_without_a_token_and_nothing_else_is(stored):
    cloud, data, _ = stored
    status, body = public_get(cloud, "/models/net-1.cidx")
    assert status == 200 and body == (cloud.home / "models" / "net-1.cidx").read_bytes()
    chunk = next(p for p in (cloud.home / "models" / "chunks").rglob("*") if p.is_file())
    status, body = public_get(cloud, f"/models/chunks/{chunk.parent.name}/{chunk.name}")
    assert status == 200 and body == chunk.read_bytes()
    for target in ("/models/%2e%2e/data/cloud.db", "/models/chunks/../../data/cloud.db",
                   "/models/..%2fdata%2fcloud.db", "/models/certs/edge-ca.key.pem",
                   "/models/", "/models/net-9.cidx", "/models/%ff.cidx"):
        status, body = public_get(cloud, target)
        assert status in (400, 404), (target, status)
        assert json.loads(body)["Message"].startswith("ErrorCode:"), body
    # Writing is for the service: no token, no push.
    r = put(cloud, "/cairn/models/chunks/" + "0" * 64, b"x", token="")
    assert r.status == 401


@pytest.mark.parametrize("case", ["truncated chunk", "chunk of other bytes", "bad hash",
                                  "truncated index", "index of another version",
                                  "traversal in name", "bad version", "non-UTF-8 name",
                                  "index with chunks the store lacks",
                                  "missing query with a truncated index"])
def test_bad_input_gets_a_4xx_json_error_and_changes_nothing(stored, tmp_path, case):
    cloud, data, _ = stored
    before = store_snapshot(cloud)
    cidx = (cloud.home / "models" / "net-1.cidx").read_bytes()
    chunk = next(p for p in (cloud.home / "models" / "chunks").rglob("*") if p.is_file())
    new_hash = hashlib.sha256(b"new chunk bytes").hexdigest()
    if case == "truncated chunk":
        r = put(cloud, f"/cairn/models/chunks/{new_hash}", b"new chunk by")
        expect, text = 400, "truncated or damaged"
    elif case == "chunk of other bytes":
        r = put(cloud, f"/cairn/models/chunks/{new_hash}", chunk.read_bytes())
        expect, text = 400, "SHA-256"
    elif case == "bad hash":
        r = put(cloud, "/cairn/models/chunks/..%2F..%2Fdata%2Fcloud.db", b"x")
        expect, text = 400, "64 lowercase hex"
    elif case == "truncated index":
        r = put(cloud, "/cairn/models/net/versions/3", cidx[:-20])
        expect, text = 400, "not a model index"
    elif case == "index of another version":
        r = put(cloud, "/cairn/models/net/versions/3", cidx)
        expect, text = 400, "the path names net version 3"
    elif case == "traversal in name":
        r = put(cloud, "/cairn/models/..%2F..%2Fdata/versions/1", cidx)
        expect, text = 400, "model name"
    elif case == "bad version":
        r = put(cloud, "/cairn/models/net/versions/.hidden", cidx)
        expect, text = 400, "model version"
    elif case == "non-UTF-8 name":
        r = put(cloud, "/cairn/models/n%FF%FEt/versions/1", cidx)
        expect, text = 400, "model name"
    elif case == "index with chunks the store lacks":
        other, out = tmp_path / "other.onnx", tmp_path / "pub"
        model_fixtures.make_onnx(other, seed=9)
        pack(other, out, "tmp", "1")  # packed here, its chunks never uploaded
        r = put(cloud, "/cairn/models/tmp/versions/1", (out / "tmp-1.cidx").read_bytes())
        expect, text = 400, "upload them first"
    elif case == "missing query with a truncated index":
        r = cloud.request("POST", "/cairn/models/net/versions/3/missing", raw=cidx[:-20],
                          api_version=False)
        expect, text = 400, "not a model index"
    assert r.status == expect, (case, r)
    assert r.json and r.message.startswith("ErrorCode:") and text in r.message, (case, r.message)
    assert store_snapshot(cloud) == before, case
    assert cloud.status()["devices"] >= 0  # still serving


def test_versions_are_immutable(stored, tmp_path):
    cloud, data, summary = stored
    again = push(cloud, tmp_path / "m.onnx", "net", "1")
    assert again["unchanged"] is True and again["chunksUploaded"] == 0
    other = tmp_path / "other.onnx"
    model_fixtures.make_onnx(other, seed=7)
    before = store_snapshot(cloud)
    r = push(cloud, other, "net", "1", check=False)
    assert r.returncode == 1 and "immutable" in r.stderr and "HTTP 409" in r.stderr, r.stderr
    # Refused before any upload.
    assert store_snapshot(cloud) == before


def test_size_limits_refuse_a_push_with_a_clear_error(cloud_factory, tmp_path):
    m = tmp_path / "m.onnx"
    model_fixtures.make_onnx(m, seed=3)
    small_models = cloud_factory(extra_args=["--model-max-bytes", "1000"])
    r = push(small_models, m, "net", "1", check=False)
    assert r.returncode == 1 and "--model-max-bytes" in r.stderr and "HTTP 413" in r.stderr, \
        r.stderr
    assert store_snapshot(small_models) == {}
    small_store = cloud_factory(extra_args=["--model-store-max-bytes", "20000"])
    r = push(small_store, m, "net", "1", check=False)
    assert r.returncode == 1 and "model store is full" in r.stderr and "HTTP 413" in r.stderr, \
        r.stderr
    assert store_snapshot(small_store) == {}


def test_a_signed_push_is_accepted_by_a_device_with_the_key_and_a_tampered_one_is_not(
        cloud, tmp_path):
    keys = tmp_path / "keys"
    keys.mkdir()
    for name in ("pub", "other"):
        subprocess.run([str(CAIRN), "model", "keygen", "--private", str(keys / name),
                        "--public", str(keys / f"{name}.pem")], check=True, timeout=30)
    v1, v2 = tmp_path / "v1.onnx", tmp_path / "v2.onnx"
    data1 = model_fixtures.make_onnx(v1, seed=4)
    data2 = model_fixtures.make_onnx(v2, seed=4, variant="head")
    signed = push(cloud, v1, "net", "1", "--sign-key", str(keys / "pub"))
    assert signed["signed"] is True, signed
    # v2 gets deltas from v1: the store rewrote the index after the push packed it.
    signed2 = push(cloud, v2, "net", "2", "--sign-key", str(keys / "pub"))
    assert signed2["deltas"] > 0 and signed2["signed"] is True, signed2
    unsigned = push(cloud, v1, "net", "1u")
    assert "signed" not in unsigned

    out, store = tmp_path / "device" / "m.onnx", tmp_path / "device" / "store"
    out.parent.mkdir()
    key = ("--public-key", str(keys / "pub.pem"), "--ca", str(cloud.ca_path))
    fetch(signed["url"], out, store, *key)
    assert out.read_bytes() == data1
    summary = fetch(signed2["url"], out, store, *key)
    assert out.read_bytes() == data2 and summary["deltas_applied"] > 0, summary

    out.write_bytes(b"old")
    err = fetch(unsigned["url"], out, store, *key, expect_rc=1)
    assert "not signed" in err, err
    err = fetch(signed["url"], out, store, "--public-key", str(keys / "other.pem"), "--ca",
                str(cloud.ca_path), expect_rc=1)
    assert "signature does not match" in err, err
    # The stored index changed after signing (here: its format field), as a compromised store
    # or a mirror could: refused, the old model stays.
    models = cloud.home / "models"
    text = json.loads(zstd(["-dc"], (models / "net-1.cidx").read_bytes()))
    text["model_format"] = "opaque"
    (models / "net-1.cidx").write_bytes(zstd(["-19", "-c"], json.dumps(text).encode()))
    err = fetch(signed["url"], out, store, *key, expect_rc=1)
    assert "signature does not match" in err, err
    assert out.read_bytes() == b"old"


@pytest.mark.parametrize("body", [b"", b"not base64!", b"c2hvcnQ=\n"])
def test_a_signature_that_is_not_one_is_refused(stored, body):
    cloud, _, _ = stored
    before = store_snapshot(cloud)
    r = put(cloud, "/cairn/models/net/versions/1/signature", body)
    assert r.status == 400 and "not a signature" in r.message, r
    r = put(cloud, "/cairn/models/net/versions/9/signature", b"A" * 86 + b"==\n")
    assert r.status == 404 and "push it first" in r.message, r
    assert store_snapshot(cloud) == before


def stored_files(cloud, top):
    root = cloud.home / "models" / top
    return {str(p.relative_to(root)) for p in root.rglob("*") if p.is_file()} \
        if root.exists() else set()


def test_removing_versions_sweeps_the_chunks_and_deltas_no_other_version_uses(
        cloud_factory, tmp_path):
    cloud = cloud_factory(extra_args=["--model-orphan-grace", "0"])
    v1, v2, other = tmp_path / "v1.onnx", tmp_path / "v2.onnx", tmp_path / "other.onnx"
    model_fixtures.make_onnx(v1, seed=5)
    data2 = model_fixtures.make_onnx(v2, seed=5, variant="head")
    data_other = model_fixtures.make_onnx(other, seed=6)
    push(cloud, v1, "net", "1")
    chunks_v1 = stored_files(cloud, "chunks")
    second = push(cloud, v2, "net", "2")
    assert second["deltas"] > 0, second
    push(cloud, other, "other", "1")
    chunks_all, deltas_all = stored_files(cloud, "chunks"), stored_files(cloud, "deltas")
    used_before = json.loads(cloud.cli("model", "list", "--json").stdout)["usedBytes"]

    r = json.loads(cloud.cli("model", "delete", "--name", "net", "--version", "1").stdout)
    left = stored_files(cloud, "chunks")
    # Only chunks of v1 alone went; v2's deltas from v1 stay (v2's index references them, and a
    # device holding v1 still uses them).
    assert r["removedChunks"] == len(chunks_all - left) > 0, r
    assert chunks_all - left <= chunks_v1 and stored_files(cloud, "deltas") == deltas_all
    assert not (cloud.home / "models" / "net-1.cidx").exists()
    used_after = json.loads(cloud.cli("model", "list", "--json").stdout)["usedBytes"]
    assert used_before - used_after == r["freedBytes"] > 0, (used_before, used_after, r)
    for url, data in ((second["url"], data2),
                      (f"https://{cloud.hostname}:{cloud.https_port}/models/other-1.cidx",
                       data_other)):
        out, store = tmp_path / "dev" / "m", tmp_path / "dev" / "store"
        fetch(url, out, store, "--ca", str(cloud.ca_path))
        assert out.read_bytes() == data

    r = json.loads(cloud.cli("model", "delete", "--name", "net", "--version", "2").stdout)
    assert r["removedDeltas"] == len(deltas_all) and stored_files(cloud, "deltas") == set(), r
    other_index = modelpkg_chunks(cloud, "other-1.cidx")
    assert stored_files(cloud, "chunks") == other_index
    r = cloud.cli("model", "delete", "--name", "net", "--version", "2", check=False)
    assert r.returncode == 1 and "HTTP 404" in r.stderr, r.stderr


def modelpkg_chunks(cloud, index_file):
    text = json.loads(zstd(["-dc"], (cloud.home / "models" / index_file).read_bytes()))
    return {f"{h[:2]}/{h}" for h, *_ in text["chunks"]}


def test_young_orphans_are_kept_for_pushes_in_progress_and_deltas_have_a_cap(
        cloud_factory, tmp_path):
    cloud = cloud_factory(extra_args=["--model-delta-max-bytes", "1"])
    v1, v2 = tmp_path / "v1.onnx", tmp_path / "v2.onnx"
    model_fixtures.make_onnx(v1, seed=8)
    model_fixtures.make_onnx(v2, seed=8, variant="head")
    push(cloud, v1, "net", "1")
    # Changed segments exist, but each is over the 1-byte cap: no delta is made.
    assert push(cloud, v2, "net", "2")["deltas"] == 0
    # A chunk uploaded by a push that has not committed yet (default grace: an hour).
    pending = tmp_path / "pending"
    model_fixtures.make_onnx(pending, seed=9)
    pack(pending, tmp_path / "pub", "p", "1")
    chunk = next(p for p in (tmp_path / "pub" / "chunks").rglob("*") if p.is_file())
    assert put(cloud, f"/cairn/models/chunks/{chunk.name}", chunk.read_bytes()).status == 200
    before = stored_files(cloud, "chunks")
    r = json.loads(cloud.cli("model", "delete", "--name", "net", "--version", "1").stdout)
    assert r["removedChunks"] == 0 and stored_files(cloud, "chunks") == before, r


def pushed_over_http(cloud, tmp_path, model, name, version):
    """The steps of a push, one REST call each: returns (index bytes, chunk paths) of the pack."""
    out = tmp_path / f"pub-{name}-{version}-{model.stem}"
    pack(model, out, name, version)
    cidx = next(out.glob("*.cidx")).read_bytes()
    chunks = [p for p in (out / "chunks").rglob("*") if p.is_file()]
    return cidx, chunks


def age(paths, seconds=7200):
    """Sets files' modification time `seconds` back, as a push slower than the grace leaves."""
    when = time.time() - seconds
    for p in paths:
        os.utime(p, (when, when))


def test_chunks_sent_again_survive_a_sweep_until_their_push_commits(cloud, tmp_path):
    m, other = tmp_path / "m.onnx", tmp_path / "other.onnx"
    model_fixtures.make_onnx(m, seed=11)
    model_fixtures.make_onnx(other, seed=12)
    cidx, chunks = pushed_over_http(cloud, tmp_path, m, "net", "1")
    r = cloud.request("POST", "/cairn/models/net/versions/1/missing", raw=cidx, api_version=False)
    assert r.status == 200 and len(r.json["missing"]) == len(chunks), r
    for c in chunks:
        assert put(cloud, f"/cairn/models/chunks/{c.name}", c.read_bytes()).json["new"] is True
    # The push is slow: its chunks are older than the grace (an hour) when it sends them again.
    age(p for p in (cloud.home / "models" / "chunks").rglob("*") if p.is_file())
    for c in chunks:
        assert put(cloud, f"/cairn/models/chunks/{c.name}", c.read_bytes()).json["new"] is False
    # A removal sweeps the store meanwhile.
    push(cloud, other, "other", "1")
    cloud.cli("model", "delete", "--name", "other", "--version", "1")
    r = put(cloud, "/cairn/models/net/versions/1", cidx)
    assert r.status == 200, r


def test_a_symlinked_store_and_chunks_directory_keep_referenced_chunks_when_swept(
        cloud_factory, tmp_path):
    cloud = cloud_factory(start=False, extra_args=["--model-orphan-grace", "0"])
    real, disk = tmp_path / "real-models", tmp_path / "disk-chunks"
    real.mkdir()
    disk.mkdir()
    (real / "chunks").symlink_to(disk)
    (cloud.home / "models").symlink_to(real)
    cloud.start()
    kept, gone = tmp_path / "kept.onnx", tmp_path / "gone.onnx"
    data = model_fixtures.make_onnx(kept, seed=13)
    model_fixtures.make_onnx(gone, seed=14)
    summary = push(cloud, kept, "kept", "1")
    push(cloud, gone, "gone", "1")
    r = json.loads(cloud.cli("model", "delete", "--name", "gone", "--version", "1").stdout)
    assert r["removedChunks"] > 0, r
    assert {f"{p.parent.name}/{p.name}" for p in disk.rglob("*") if p.is_file()} == \
        modelpkg_chunks(cloud, "kept-1.cidx")
    out, store = tmp_path / "dev" / "m", tmp_path / "dev" / "store"
    fetch(summary["url"], out, store, "--ca", str(cloud.ca_path))
    assert out.read_bytes() == data


def test_names_that_join_to_the_same_text_are_separate_versions(cloud, tmp_path):
    first, second = tmp_path / "first.onnx", tmp_path / "second.onnx"
    data1 = model_fixtures.make_onnx(first, seed=15)
    data2 = model_fixtures.make_onnx(second, seed=16)
    dashed_name = push(cloud, first, "a-b", "c")
    dashed_version = push(cloud, second, "a", "b-c")
    assert dashed_name["url"].endswith("/models/a-b~c.cidx"), dashed_name
    assert dashed_version["url"].endswith("/models/a-b-c.cidx"), dashed_version
    r = json.loads(cloud.cli("model", "delete", "--name", "a", "--version", "b-c").stdout)
    assert r["name"] == "a" and r["version"] == "b-c", r
    listing = json.loads(cloud.cli("model", "list", "--json").stdout)["models"]
    assert [(m["name"], m["version"]) for m in listing] == [("a-b", "c")], listing
    out, store = tmp_path / "dev" / "m", tmp_path / "dev" / "store"
    fetch(dashed_name["url"], out, store, "--ca", str(cloud.ca_path))
    assert out.read_bytes() == data1
    again = push(cloud, second, "a", "b-c")
    fetch(again["url"], out, store, "--ca", str(cloud.ca_path))
    assert out.read_bytes() == data2


def test_a_re_push_never_serves_an_old_signature(cloud, tmp_path):
    m = tmp_path / "m.onnx"
    model_fixtures.make_onnx(m, seed=17)
    push(cloud, m, "net", "1")
    cloud.cli("model", "delete", "--name", "net", "--version", "1")
    # A signature left beside no index, as a signature write racing the removal left it.
    (cloud.home / "models" / "net-1.cidx.sig").write_text("A" * 86 + "==\n")
    push(cloud, m, "net", "1")
    status, _ = public_get(cloud, "/models/net-1.cidx.sig")
    assert status == 404


def test_a_signature_of_an_index_no_longer_stored_is_refused(cloud, tmp_path):
    first, second = tmp_path / "first.onnx", tmp_path / "second.onnx"
    model_fixtures.make_onnx(first, seed=18)
    model_fixtures.make_onnx(second, seed=19)
    push(cloud, first, "net", "1")
    signed_sha = hashlib.sha256((cloud.home / "models" / "net-1.cidx").read_bytes()).hexdigest()
    # Removed and pushed again with other content between reading the index and signing it.
    cloud.cli("model", "delete", "--name", "net", "--version", "1")
    push(cloud, second, "net", "1")
    signature = b"A" * 86 + b"==\n"
    r = cloud.request("PUT", "/cairn/models/net/versions/1/signature", raw=signature,
                      api_version=False, headers={"If-Match": f'"{signed_sha}"'})
    assert r.status == 412 and "sign it again" in r.message, r
    assert not (cloud.home / "models" / "net-1.cidx.sig").exists()
    stored_sha = hashlib.sha256((cloud.home / "models" / "net-1.cidx").read_bytes()).hexdigest()
    r = cloud.request("PUT", "/cairn/models/net/versions/1/signature", raw=signature,
                      api_version=False, headers={"If-Match": f'"{stored_sha}"'})
    assert r.status == 200, r


def test_of_two_concurrent_pushes_of_one_version_the_first_commit_wins(cloud, tmp_path):
    models = [tmp_path / "a.onnx", tmp_path / "b.onnx"]
    hashes = []
    for i, m in enumerate(models):
        model_fixtures.make_onnx(m, seed=20 + i, variant="head" if i else "base")
        hashes.append(hashlib.sha256(m.read_bytes()).hexdigest())
    with ThreadPoolExecutor(2) as pool:
        results = list(pool.map(lambda m: push(cloud, m, "net", "1", check=False), models))
    won = [i for i, r in enumerate(results) if r.returncode == 0]
    assert len(won) == 1, [(r.returncode, r.stderr) for r in results]
    lost = results[1 - won[0]]
    assert lost.returncode == 1 and "HTTP 409" in lost.stderr and "immutable" in lost.stderr, \
        lost.stderr
    stored = json.loads(zstd(["-dc"], (cloud.home / "models" / "net-1.cidx").read_bytes()))
    assert stored["sha256"] == hashes[won[0]]


def test_a_store_from_before_the_tilde_names_is_renamed_and_old_urls_still_work(cloud, tmp_path):
    m = tmp_path / "m.onnx"
    data = model_fixtures.make_onnx(m, seed=22)
    summary = push(cloud, m, "ppocr-det", "4")
    assert summary["url"].endswith("/models/ppocr-det~4.cidx"), summary
    models = cloud.home / "models"
    index = (models / "ppocr-det~4.cidx").read_bytes()
    cloud.stop()
    # The names an earlier release gave the index and its signature.
    (models / "ppocr-det~4.cidx").rename(models / "ppocr-det-4.cidx")
    (models / "ppocr-det-4.cidx.sig").write_text("A" * 86 + "==\n")
    cloud.start()
    assert (models / "ppocr-det~4.cidx").read_bytes() == index
    assert (models / "ppocr-det~4.cidx.sig").exists()
    assert not (models / "ppocr-det-4.cidx").exists()
    assert public_get(cloud, "/models/ppocr-det-4.cidx") == (200, index)
    out, store = tmp_path / "dev" / "m", tmp_path / "dev" / "store"
    legacy_url = summary["url"].replace("~", "-")
    fetch(legacy_url, out, store, "--ca", str(cloud.ca_path))
    assert out.read_bytes() == data
    listing = json.loads(cloud.cli("model", "list", "--json").stdout)["models"]
    assert [m["index"] for m in listing] == ["models/ppocr-det~4.cidx"], listing
