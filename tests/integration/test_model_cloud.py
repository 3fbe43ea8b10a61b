"""Models published through cairn-cloud (`cairn cloud model push|list`) and fetched from its
HTTPS server with `cairn model fetch`: the cloud packs each version (chunks, deltas against the
versions before it, a signed index) into HOME/models and serves the files as they are."""
import json
import subprocess

from conftest import CAIRN
import model_fixtures


def cloud_cli(cloud, *args, expect_rc=0):
    r = subprocess.run([str(CAIRN), "cloud", "--connection-string", cloud.connection_string,
                        "--ca", str(cloud.ca_path), "--port", str(cloud.https_port), *args],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == expect_rc, f"rc={r.returncode}\n{r.stdout}\n{r.stderr}"
    return r


def fetch(cloud, url, out, store, *extra, expect_rc=0):
    r = subprocess.run([str(CAIRN), "model", "fetch", url, "--out", str(out), "--store",
                        str(store), "--ca", str(cloud.ca_path), "-q", *extra],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == expect_rc, f"rc={r.returncode}\n{r.stdout}\n{r.stderr}"
    return json.loads(r.stdout.strip().splitlines()[-1]) if expect_rc == 0 else r.stderr


def test_push_list_and_fetch_over_https_with_deltas(tmp_path, cloud_factory):
    keys = tmp_path / "keys"
    keys.mkdir()
    subprocess.run([str(CAIRN), "model", "keygen", "--private", str(keys / "k"), "--public",
                    str(keys / "k.pub")], check=True, timeout=30)
    cloud = cloud_factory(extra_args=["--model-signing-key", str(keys / "k")])
    v1, v2 = tmp_path / "v1.onnx", tmp_path / "v2.onnx"
    old = model_fixtures.make_onnx(v1, seed=3)
    new = model_fixtures.make_onnx(v2, seed=3, variant="head")

    pushed = json.loads(cloud_cli(cloud, "model", "push", str(v1), "--name", "det", "--version",
                                  "1").stdout)
    assert pushed["size"] == len(old) and pushed["chunks"] > 1
    url1 = pushed["index_url"]
    assert url1.startswith("https://") and url1.endswith("/models/det-1.cidx")

    out, store = tmp_path / "device" / "det.onnx", tmp_path / "device" / "store"
    out.parent.mkdir()
    first = fetch(cloud, url1, out, store, "--public-key", str(keys / "k.pub"))
    assert out.read_bytes() == old and first["chunks_downloaded"] == first["chunks"]

    pushed2 = json.loads(cloud_cli(cloud, "model", "push", str(v2), "--name", "det", "--version",
                                   "2").stdout)
    assert pushed2["deltas"] >= 1
    second = fetch(cloud, pushed2["index_url"], out, store, "--public-key", str(keys / "k.pub"))
    assert out.read_bytes() == new
    assert second["deltas_applied"] >= 1
    assert second["downloaded"] < second["full_download"] / 10, second

    listing = cloud_cli(cloud, "model", "list").stdout.splitlines()
    assert [line.split("\t")[:2] for line in listing] == [["det", "1"], ["det", "2"]]
    assert all("\tsigned\t" in line for line in listing)

    # Bad names are refused; static paths outside the publish tree are not served.
    r = cloud_cli(cloud, "model", "push", str(v1), "--name", "../x", "--version", "1",
                  expect_rc=1)
    assert "must be" in r.stderr
    bad = fetch(cloud, url1.replace("/models/det-1.cidx", "/models/..%2Fdata%2Fcloud.db"), out,
                store, expect_rc=1)
    assert "HTTP 404" in bad
    assert out.read_bytes() == new
