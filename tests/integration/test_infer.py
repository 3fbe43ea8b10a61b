"""cairn-infer end to end: a real cairn-infer on loopback serving real ONNX and TFLite models,
driven over HTTP (KServe v2 JSON and binary, /score, /metrics)."""
import json
import shutil
import signal
import socket
import subprocess
import threading
import time

import numpy as np
import pytest

from conftest import HOST, wait_for
from infer_fixtures import (CAIRN_INFER, InferServer, infer_factory, ocr_models,  # noqa: F401
                            onnx_models, tflite_dir, wait_status)


def affine_expected(x, version):
    return x * version + 10.0 * version


# --------------------------------------------------------------------------------------------
# the program

def test_help_version_and_usage_errors(tmp_path):
    out = subprocess.run([str(CAIRN_INFER), "--help"], capture_output=True, text=True, timeout=30)
    assert out.returncode == 0 and "--model" in out.stdout and "--http" in out.stdout
    out = subprocess.run([str(CAIRN_INFER), "--version"], capture_output=True, text=True,
                         timeout=30)
    assert out.returncode == 0 and "cairn-infer" in out.stdout
    out = subprocess.run([str(CAIRN_INFER), "--model", "noequals"], capture_output=True,
                         text=True, timeout=30)
    assert out.returncode == 2 and "NAME=PATH" in out.stderr
    out = subprocess.run([str(CAIRN_INFER)], capture_output=True, text=True, timeout=30)
    assert out.returncode == 2 and "nothing to serve" in out.stderr


def test_unloadable_model_on_command_line_fails_with_engine_reason(infer_factory, tmp_path):
    junk = tmp_path / "random.onnx"
    junk.write_bytes(b"\x08" + bytes(range(256)) * 8)
    server = infer_factory("--model", f"bad={junk}", expect_ready=False)
    assert server.proc.wait(timeout=60) == 1
    assert "onnxruntime" in server.log() and "random.onnx" in server.log()


def test_sigterm_stops_cleanly(infer_factory, onnx_models):
    server = infer_factory("--model", f"affine={onnx_models / 'affine_v1.onnx'}")
    server.proc.send_signal(signal.SIGTERM)
    assert server.proc.wait(timeout=60) == 0
    assert "stopped" in server.log()


# --------------------------------------------------------------------------------------------
# the v2 protocol

def test_v2_server_health_and_metadata(infer_factory, onnx_models):
    server = infer_factory("--model", f"affine={onnx_models / 'affine_v1.onnx'}@1",
                           "--model", f"affine={onnx_models / 'affine_v2.onnx'}@2")
    status, body = server.json("GET", "/v2")
    assert status == 200 and body["name"] == "cairn-infer"
    assert "binary_tensor_data" in body["extensions"]
    assert server.json("GET", "/v2/health/live")[0] == 200
    assert server.json("GET", "/v2/health/ready")[0] == 200
    status, meta = server.json("GET", "/v2/models/affine")
    assert status == 200
    assert sorted(meta["versions"]) == ["1", "2"]
    assert meta["platform"] == "onnxruntime_onnx"
    assert meta["inputs"] == [{"name": "x", "datatype": "FP32", "shape": [-1, 4]}]
    assert meta["outputs"] == [{"name": "y", "datatype": "FP32", "shape": [-1, 4]}]
    assert server.json("GET", "/v2/models/affine/versions/1")[0] == 200
    assert server.json("GET", "/v2/models/affine/versions/1/ready")[0] == 200
    status, body = server.json("GET", "/v2/models/affine/versions/9")
    assert status == 404 and "version '9'" in body["error"]
    status, body = server.json("GET", "/v2/models/nope/ready")
    assert status == 404 and "nope" in body["error"]
    status, index = server.json("POST", "/v2/repository/index")
    assert status == 200 and index[0]["name"] == "affine" and index[0]["state"] == "READY"


def test_v2_infer_json_and_binary_give_known_outputs(infer_factory, onnx_models):
    server = infer_factory("--model", f"affine={onnx_models / 'affine_v1.onnx'}@1",
                           "--model", f"affine={onnx_models / 'affine_v3.onnx'}@3",
                           "--model", f"sum={onnx_models / 'sum_int64.onnx'}")
    x = np.arange(12, dtype=np.float32).reshape(3, 4) / 7
    for version in (1, 3):
        status, out = server.infer_json("affine", {"x": x}, version=str(version))
        assert status == 200, out
        np.testing.assert_array_equal(out["y"], affine_expected(x, np.float32(version)))
        status, out_bin = server.infer_binary("affine", {"x": x}, version=str(version))
        assert status == 200, out_bin
        np.testing.assert_array_equal(out_bin["y"], out["y"])
    # Unversioned requests go to the serving (last loaded) version.
    status, out = server.infer_json("affine", {"x": x})
    np.testing.assert_array_equal(out["y"], affine_expected(x, np.float32(3)))
    a = np.array([[1, -2, 3], [2**40, 0, -(2**62)]], dtype=np.int64)
    b = np.array([[10, 20, 30], [1, 1, 2**61]], dtype=np.int64)
    status, out = server.infer_json("sum", {"a": a, "b": b})
    assert status == 200, out
    np.testing.assert_array_equal(out["sum"], a + b)
    status, out = server.infer_binary("sum", {"b": b, "a": a})  # order does not matter
    np.testing.assert_array_equal(out["sum"], a + b)
    # The id comes back, and "outputs" selects.
    status, body = server.json("POST", "/v2/models/sum/infer", {
        "id": "req-7",
        "inputs": [{"name": "a", "datatype": "INT64", "shape": [1, 3], "data": [1, 2, 3]},
                   {"name": "b", "datatype": "INT64", "shape": [1, 3], "data": [[1, 1, 1]]}],
        "outputs": [{"name": "sum"}]})
    assert status == 200 and body["id"] == "req-7" and body["model_name"] == "sum"
    assert body["outputs"][0]["data"] == [2, 3, 4]


def test_score_routes(infer_factory, onnx_models):
    server = infer_factory("--model", f"affine={onnx_models / 'affine_v2.onnx'}@2",
                           "--model", f"sum={onnx_models / 'sum_int64.onnx'}",
                           "--default", "affine")
    status, body = server.json("POST", "/score", {"data": [[1, 2, 3, 4]]})
    assert status == 200, body
    assert body == {"y": [[22.0, 24.0, 26.0, 28.0]]}
    status, body = server.json("POST", "/score/sum", {"a": [[1, 2, 3]], "b": [[4, 5, 6]]})
    assert status == 200 and body == {"sum": [[5, 7, 9]]}
    status, body = server.json("POST", "/score/sum", {"data": [[1, 2, 3]]})
    assert status == 400 and "name them" in body["error"]
    status, body = server.json("POST", "/score/missing", {"data": [1]})
    assert status == 404 and "missing" in body["error"]


def test_bad_requests_get_clear_errors_and_server_keeps_serving(infer_factory, onnx_models):
    server = infer_factory("--model", f"affine={onnx_models / 'affine_v1.onnx'}",
                           "--max-body-bytes", str(8 * 1024 * 1024))
    url = "/v2/models/affine/infer"

    def post(body, headers=None):
        status, _, data = server.request("POST", url, body, headers)
        return status, json.loads(data)

    good = {"inputs": [{"name": "x", "datatype": "FP32", "shape": [1, 4], "data": [1, 2, 3, 4]}]}
    cases = {
        "wrong shape": ({"inputs": [{"name": "x", "datatype": "FP32", "shape": [1, 3],
                                     "data": [1, 2, 3]}]}, 400, "shape"),
        "wrong dtype": ({"inputs": [{"name": "x", "datatype": "INT32", "shape": [1, 4],
                                     "data": [1, 2, 3, 4]}]}, 400, "FP32"),
        "data/shape mismatch": ({"inputs": [{"name": "x", "datatype": "FP32", "shape": [1, 4],
                                             "data": [1, 2]}]}, 400, "elements"),
        "unknown input": ({"inputs": [{"name": "z", "datatype": "FP32", "shape": [1, 4],
                                       "data": [1, 2, 3, 4]}]}, 400, "missing"),
        "unknown datatype": ({"inputs": [{"name": "x", "datatype": "FP128", "shape": [1],
                                          "data": [1]}]}, 400, "datatype"),
        "not json": (b"{\"inputs\": [", 400, "JSON"),
        "non-utf8": (b"\xff\xfe\x00garbage", 400, "JSON"),
        "no inputs": ({"outputs": []}, 400, "inputs"),
        "huge shape": ({"inputs": [{"name": "x", "datatype": "FP32",
                                    "shape": [2**40, 2**40, 2**40], "data": [1]}]}, 400, "shape"),
    }
    for name, (body, want_status, want_text) in cases.items():
        status, reply = post(body)
        assert status == want_status, (name, reply)
        assert want_text in reply["error"], (name, reply)
    # A JSON bomb: deeply nested brackets are refused before parsing.
    status, reply = post(b"[" * 500000 + b"]" * 500000)
    assert status == 400 and "nested deeper" in reply["error"]
    # Binary extension: header length past the body, and data past the end.
    status, reply = post(b"{}", {"Inference-Header-Content-Length": "99"})
    assert status == 400 and "Inference-Header-Content-Length" in reply["error"]
    head = json.dumps({"inputs": [{"name": "x", "datatype": "FP32", "shape": [1, 4],
                                   "parameters": {"binary_data_size": 16}}]}).encode()
    status, reply = post(head + b"\0" * 8, {"Inference-Header-Content-Length": str(len(head))})
    assert status == 400 and "past the end" in reply["error"]
    # Unknown model and version.
    status, _, data = server.request("POST", "/v2/models/nope/infer", good)
    assert status == 404 and "nope" in json.loads(data)["error"]
    status, _, data = server.request("POST", "/v2/models/affine/versions/5/infer", good)
    assert status == 404
    # A 1 GB Content-Length is refused before the body is read.
    with socket.create_connection((HOST, server.port), timeout=30) as s:
        s.sendall(b"POST " + url.encode() + b" HTTP/1.1\r\nHost: x\r\nContent-Type: "
                  b"application/json\r\nContent-Length: 1073741824\r\n\r\n{")
        reply = s.recv(4096).decode(errors="replace")
        assert reply.startswith("HTTP/1.1 413"), reply
    # Still serving.
    status, reply = post(good)
    assert status == 200 and reply["outputs"][0]["data"] == [11.0, 12.0, 13.0, 14.0]
    assert 'cairn_infer_http_responses_total{code="400"}' in server.metrics()


def test_queue_limit_answers_429_and_keeps_serving(infer_factory, onnx_models):
    server = infer_factory("--model", f"slow={onnx_models / 'slow.onnx'}", "--max-queue", "4",
                           "--max-connections", "2000")
    body = json.dumps({"inputs": [{"name": "x", "datatype": "FP32", "shape": [1, 256],
                                   "data": [0.5] * 256}]}).encode()
    request = (b"POST /v2/models/slow/infer HTTP/1.1\r\nHost: x\r\nContent-Type: "
               b"application/json\r\nConnection: close\r\nContent-Length: " +
               str(len(body)).encode() + b"\r\n\r\n" + body)
    statuses = []
    lock = threading.Lock()
    start = threading.Barrier(1000 + 1, timeout=120)

    def client():
        s = socket.create_connection((HOST, server.port), timeout=300)
        try:
            start.wait()
            s.sendall(request)
            data = b""
            while True:
                chunk = s.recv(65536)
                if not chunk:
                    break
                data += chunk
            head, _, payload = data.partition(b"\r\n\r\n")
            code = int(head.split()[1])
            with lock:
                statuses.append((code, json.loads(payload)))
        finally:
            s.close()

    threads = [threading.Thread(target=client) for _ in range(1000)]
    for t in threads:
        t.start()
    start.wait()
    for t in threads:
        t.join(timeout=600)
    assert len(statuses) == 1000
    codes = [c for c, _ in statuses]
    assert set(codes) <= {200, 429}, set(codes)
    assert codes.count(429) > 0 and codes.count(200) > 0
    refused = next(b for c, b in statuses if c == 429)
    assert "max_queue" in refused["error"]
    assert all("outputs" in b for c, b in statuses if c == 200)
    metrics = server.metrics()
    assert f'cairn_infer_rejected_total{{model="slow"}} {codes.count(429)}' in metrics
    status, _, _ = server.request("POST", "/v2/models/slow/infer", body)
    assert status == 200


def metric_value(metrics, name):
    for line in metrics.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[-1])
    return 0.0


def test_a_run_that_outlasts_the_recent_ones_hands_the_io_over(infer_factory, onnx_models):
    # cube.onnx at N = 1 takes microseconds: once its recent runs are that short, a request
    # that finds the model idle runs on the HTTP thread that read it. One at N = 2048 takes far
    # longer: the inline-run watch wakes another HTTP thread to take the I/O over, and /metrics
    # written between the run's start and its end shows the server kept answering meanwhile.
    server = infer_factory("--model", f"cube={onnx_models / 'cube.onnx'}")
    inline = 'cairn_infer_inline_requests_total{model="cube"}'
    handovers = "cairn_infer_inline_handovers_total"
    small = np.ones((1, 1), np.float32)
    n = 2048
    x = np.full((n, n), 1.0 / n, np.float32)  # x x x is 1/n everywhere
    finished = 'cairn_infer_request_duration_seconds_count{model="cube"}'

    def attempt():
        # The first runs of a session (the warm-up among them) are slow: run small requests
        # until they run inline, as a short model's do.
        ran_inline = metric_value(server.metrics(), inline)
        for _ in range(200):
            assert server.infer_binary("cube", {"x": small})[0] == 200
            if metric_value(server.metrics(), inline) > ran_inline:
                break
        before = server.metrics()
        answer = {}
        client = threading.Thread(
            target=lambda: answer.update(r=server.infer_binary("cube", {"x": x})))
        client.start()
        # Metrics written while the run is under way: it has begun (counted inline) and not
        # ended (its duration not yet observed).
        seen_under_way = False
        while client.is_alive() and not seen_under_way:
            metrics = server.metrics()
            seen_under_way = (metric_value(metrics, inline) > metric_value(before, inline) and
                              metric_value(metrics, finished) == metric_value(before, finished))
            time.sleep(0.01)
        client.join(timeout=300)
        status, out = answer["r"]
        assert status == 200, out
        assert np.allclose(out["y"], 1.0 / n)
        return before, server.metrics(), seen_under_way

    # On a loaded machine one of the small runs may itself take long enough to make the model's
    # runs long again, and the large request then goes to the worker: try again.
    for _ in range(3):
        before, after, seen_under_way = attempt()
        if metric_value(after, inline) > metric_value(before, inline):
            break
    assert metric_value(after, inline) == metric_value(before, inline) + 1
    assert seen_under_way, ("no /metrics answer while the run was under way; hand-overs "
                            f"{metric_value(before, handovers)} -> {metric_value(after, handovers)}")
    assert metric_value(after, handovers) >= metric_value(before, handovers) + 1


def test_metrics_exposition(infer_factory, onnx_models):
    server = infer_factory("--model", f"affine={onnx_models / 'affine_v1.onnx'}@7")
    for _ in range(3):
        server.infer_json("affine", {"x": np.ones((1, 4), np.float32)})
    text = server.metrics()
    assert 'cairn_infer_requests_total{model="affine"} 3' in text
    assert 'cairn_infer_request_duration_seconds_count{model="affine"} 3' in text
    assert 'cairn_infer_model_version_info{model="affine",version="7",serving="true"} 1' in text
    assert 'cairn_infer_queue_depth{model="affine"} 0' in text
    assert "# TYPE cairn_infer_batch_size histogram" in text


def test_batching_merges_concurrent_requests(infer_factory, onnx_models):
    server = infer_factory("--model", f"affine={onnx_models / 'affine_v2.onnx'}@2",
                           "--max-batch-size", "16", "--max-queue-delay-us", "100000")
    results = {}

    def one(i):
        x = np.full((1, 4), i, np.float32)
        results[i] = server.infer_binary("affine", {"x": x})

    threads = [threading.Thread(target=one, args=(i,)) for i in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for i, (status, out) in results.items():
        assert status == 200, out
        np.testing.assert_array_equal(out["y"], np.full((1, 4), i * 2 + 20, np.float32))
    text = server.metrics()
    runs = int(text.split('cairn_infer_engine_runs_total{model="affine"} ')[1].split()[0])
    assert runs < 16


# --------------------------------------------------------------------------------------------
# hot swap

def test_hot_swap_under_load_and_failed_update(infer_factory, onnx_models, tmp_path):
    config = tmp_path / "models.json"

    def desire(version, path):
        config.write_text(json.dumps({"affine": {"version": str(version), "path": str(path)}}))

    desire(1, onnx_models / "affine_v1.onnx")
    server = infer_factory("--models", config)
    wait_status(server, "affine", lambda m: m and m["status"] == "ready", "version 1 ready")

    x = np.arange(4, dtype=np.float32).reshape(1, 4)
    answers = {str(v): affine_expected(x, np.float32(s)) for v, s in
               (("1", 1), ("2", 2), ("3", 3), ("4", 1))}
    failures, seen = [], []
    stop = threading.Event()

    def client():
        while not stop.is_set():
            status, out = server.infer_binary("affine", {"x": x})
            if status != 200:
                failures.append(out)
                continue
            for version, expected in answers.items():
                if np.array_equal(out["y"], expected):
                    if not seen or seen[-1] != (version, expected[0][0]):
                        seen.append((version, expected[0][0]))

    threads = [threading.Thread(target=client) for _ in range(4)]
    for t in threads:
        t.start()
    try:
        for version, file in (("2", "affine_v2.onnx"), ("3", "affine_v3.onnx"),
                              ("4", "affine_v1.onnx")):
            desire(version, onnx_models / file)
            server.proc.send_signal(signal.SIGHUP)
            wait_status(server, "affine", lambda m, v=version: m["version"] == v,
                        f"version {version} serving")
            # After the swap every new request sees the new version's outputs.
            status, out = server.infer_json("affine", {"x": x})
            assert status == 200
            np.testing.assert_array_equal(out["y"], answers[version])
        # A corrupt update: truncated model bytes. The old version keeps serving.
        corrupt = tmp_path / "affine_v5.onnx"
        corrupt.write_bytes((onnx_models / "affine_v2.onnx").read_bytes()[:60])
        desire(5, corrupt)
        server.proc.send_signal(signal.SIGHUP)
        state = wait_status(server, "affine", lambda m: m["status"] == "failed",
                            "the corrupt update to fail")
        assert state["version"] == "4"
        assert "version 5" in state["error"] and "affine_v5.onnx" in state["error"]
        status, out = server.infer_json("affine", {"x": x})
        np.testing.assert_array_equal(out["y"], answers["4"])
    finally:
        stop.set()
        for t in threads:
            t.join()
    assert failures == []
    assert [v for v, _ in seen][-1] == "4"


# --------------------------------------------------------------------------------------------
# TFLite through Arm NN, and PP-OCR

def test_tflite_models_load_or_fail_clearly(infer_factory, tmp_path):
    models = tflite_dir()
    config = tmp_path / "models.json"
    config.write_text(json.dumps({
        name: {"version": "1", "path": str(models / f"{name}.tflite")}
        for name in ("hello_world_float", "hello_world_int8", "micro_speech_quantized",
                     "keyword_scrambled", "person_detect")}))
    server = infer_factory("--models", config)
    for name in ("keyword_scrambled", "person_detect"):
        state = wait_status(server, name, lambda m: m and m["status"] == "failed",
                            f"{name} to fail")
        assert f"{name}.tflite" in state["error"] and state["version"] is None
        status, body = server.json("POST", f"/v2/models/{name}/infer", {"inputs": []})
        assert status == 503 and name in body["error"]
    for name in ("hello_world_float", "hello_world_int8", "micro_speech_quantized"):
        wait_status(server, name, lambda m: m and m["status"] == "ready", f"{name} ready")
        status, meta = server.json("GET", f"/v2/models/{name}")
        assert status == 200 and meta["platform"] == "tflite"
    # hello_world approximates sin(x).
    xs = np.array([[0.5]], np.float32), np.array([[1.5707964]], np.float32)
    for x in xs:
        status, out = server.infer_json("hello_world_float", {meta_input(server, "hello_world_float"): x})
        assert status == 200, out
        (y,) = out.values()
        assert abs(float(y.reshape(-1)[0]) - float(np.sin(x[0][0]))) < 0.1
    # The quantized models score; the same input gives the same output by JSON and binary.
    for name in ("hello_world_int8", "micro_speech_quantized"):
        status, meta = server.json("GET", f"/v2/models/{name}")
        inp = meta["inputs"][0]
        x = np.zeros(inp["shape"], dtype={"INT8": np.int8, "UINT8": np.uint8}[inp["datatype"]])
        status, out = server.infer_json(name, {inp["name"]: x})
        assert status == 200, out
        status, out_bin = server.infer_binary(name, {inp["name"]: x})
        for k in out:
            np.testing.assert_array_equal(out[k], out_bin[k])
            assert list(out[k].shape) == meta["outputs"][0]["shape"]


def meta_input(server, name):
    return server.json("GET", f"/v2/models/{name}")[1]["inputs"][0]["name"]


def test_ppocr_det_model(infer_factory):
    assets = ocr_models()
    server = infer_factory("--model", f"det={assets / 'ch_PP-OCRv4_det_infer.onnx'}",
                           "--intra-op-threads", "2", "--no-warmup")
    status, meta = server.json("GET", "/v2/models/det")
    assert status == 200
    assert meta["inputs"][0]["datatype"] == "FP32" and len(meta["inputs"][0]["shape"]) == 4
    name = meta["inputs"][0]["name"]
    rng = np.random.default_rng(1)
    x = rng.random((1, 3, 64, 96), dtype=np.float32)
    status, out_bin = server.infer_binary("det", {name: x})
    assert status == 200, out_bin
    status, out_json = server.infer_json("det", {name: x})
    assert status == 200
    (y,) = out_bin.values()
    assert y.shape == (1, 1, 64, 96)
    assert float(y.min()) >= 0.0 and float(y.max()) <= 1.0  # a probability map
    np.testing.assert_array_equal(y, next(iter(out_json.values())))
    # A wrong rank is a 400, and the server keeps serving.
    status, body = server.infer_json("det", {name: np.zeros((3, 64, 96), np.float32)})
    assert status == 400 and "shape" in body["error"]
