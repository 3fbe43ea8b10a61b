"""Tensor marshalling against ONNX's node conformance cases (Debian's libonnx-testdata): every
case ONNX Runtime can load and run is scored through cairn-infer's /v2 infer, with JSON
tensors and with the binary extension. Both must agree exactly with each other and with the
case's expected outputs (within ONNX's backend-test tolerance for floating types)."""
import json
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

from infer_fixtures import infer_factory, wait_status  # noqa: F401

NODE_CASES = Path("/usr/share/libonnx-testdata/data/node")
# Cases whose outputs are random by definition.
NONDETERMINISTIC = ("bernoulli", "random", "training_dropout")
# Cases where ONNX Runtime's own result differs from ONNX's reference output beyond the
# backend-test tolerance: float-to-string formatting, DFT/STFT rounding, align_corners resizes,
# MaxUnpool with an output shape. Those are the engine's numerics, not marshalling: for them the
# JSON and binary answers must still agree exactly with each other.
ENGINE_DEVIATES = ("cast_FLOAT_to_STRING", "castlike_FLOAT_to_STRING", "test_dft", "test_stft",
                   "maxunpool_export_with_output_shape", "align_corners")
ONNX_TO_NP_OK = {onnx.TensorProto.FLOAT, onnx.TensorProto.DOUBLE, onnx.TensorProto.FLOAT16,
                 onnx.TensorProto.INT8, onnx.TensorProto.INT16, onnx.TensorProto.INT32,
                 onnx.TensorProto.INT64, onnx.TensorProto.UINT8, onnx.TensorProto.UINT16,
                 onnx.TensorProto.UINT32, onnx.TensorProto.UINT64, onnx.TensorProto.BOOL,
                 onnx.TensorProto.STRING}


def tensor_values(graph_values):
    """True when every value is a tensor of a type the test can build with numpy."""
    for v in graph_values:
        t = v.type
        if not t.HasField("tensor_type") or t.tensor_type.elem_type not in ONNX_TO_NP_OK:
            return False
    return True


def load_case(case):
    model = onnx.load(str(case / "model.onnx"))
    graph = model.graph
    initializers = {i.name for i in graph.initializer}
    inputs = [i for i in graph.input if i.name not in initializers]
    if not tensor_values(inputs) or not tensor_values(graph.output):
        return None
    data_dir = case / "test_data_set_0"
    feeds, expected = {}, []
    for i, inp in enumerate(inputs):
        t = onnx.TensorProto()
        t.ParseFromString((data_dir / f"input_{i}.pb").read_bytes())
        feeds[inp.name] = numpy_helper.to_array(t)
    for i, out in enumerate(graph.output):
        t = onnx.TensorProto()
        t.ParseFromString((data_dir / f"output_{i}.pb").read_bytes())
        expected.append((out.name, numpy_helper.to_array(t)))
    if any(name == "" for name in feeds) or not expected:
        return None
    return feeds, expected


def same(a, b, exact):
    a, b = np.asarray(a), np.asarray(b)
    if a.shape != b.shape:
        return f"shape {a.shape} != {b.shape}"
    if a.dtype.kind in ("O", "U", "S") or b.dtype.kind in ("O", "U", "S"):
        left = [x.decode() if isinstance(x, bytes) else str(x) for x in a.reshape(-1)]
        right = [x.decode() if isinstance(x, bytes) else str(x) for x in b.reshape(-1)]
        return None if left == right else "strings differ"
    if a.dtype.kind == "f" or b.dtype.kind == "f":
        a64, b64 = a.astype(np.float64), b.astype(np.float64)
        if exact:
            ok = np.array_equal(a64, b64, equal_nan=True)
        else:
            ok = np.allclose(a64, b64, rtol=1e-3, atol=1e-7, equal_nan=True)
        return None if ok else f"max diff {np.nanmax(np.abs(a64 - b64))}"
    return None if np.array_equal(a, b) else "values differ"


def test_onnx_node_cases_round_trip_json_and_binary(infer_factory, tmp_path):
    if not NODE_CASES.is_dir():
        pytest.fail(f"ONNX conformance cases not found at {NODE_CASES} (Debian libonnx-testdata)")
    cases = {}
    for case in sorted(NODE_CASES.iterdir()):
        if any(word in case.name for word in NONDETERMINISTIC):
            continue
        loaded = load_case(case)
        if loaded:
            cases[case.name] = (case, *loaded)
    config = tmp_path / "models.json"
    config.write_text(json.dumps({
        name: {"version": "1", "path": str(case / "model.onnx"), "warmup": False}
        for name, (case, _, _) in cases.items()}))
    server = infer_factory("--models", config, "--max-models", "5000", "--max-body-bytes",
                           str(64 * 1024 * 1024))
    last = sorted(cases)[-1]
    wait_status(server, last, lambda m: m and m["status"] in ("ready", "failed"),
                "every conformance model to load", timeout=1200)
    _, states = server.json("GET", "/status")
    problems, ran, dtypes = [], 0, set()
    for name, (case, feeds, expected) in cases.items():
        state = states.get(name)
        if not state or state["status"] != "ready":
            continue  # ONNX Runtime cannot load this one: not a marshalling case
        status_json, out_json = server.infer_json(name, feeds)
        status_bin, out_bin = server.infer_binary(name, feeds)
        if status_json != 200 and status_bin != 200 and status_json == status_bin:
            continue  # ONNX Runtime refuses to run it either way
        if status_json != 200 or status_bin != 200:
            problems.append(f"{name}: json {status_json} {out_json}, binary {status_bin} {out_bin}")
            continue
        ran += 1
        for out_name, want in expected:
            dtypes.add(str(want.dtype))
            for path, got in (("json", out_json), ("binary", out_bin)):
                if out_name not in got:
                    problems.append(f"{name}: {path} lacks output {out_name}")
                    continue
                why = same(got[out_name], want, exact=False)
                if why and not any(word in name for word in ENGINE_DEVIATES):
                    problems.append(f"{name}/{out_name} via {path} vs expected: {why}")
            if out_name in out_json and out_name in out_bin:
                why = same(out_json[out_name], out_bin[out_name], exact=True)
                if why:
                    problems.append(f"{name}/{out_name}: json vs binary: {why}")
    assert not problems, "\n".join(problems[:50])
    # Most cases run, and they cover the element types cairn-infer marshals.
    assert ran > len(cases) // 2, (ran, len(cases))
    for dtype in ("float32", "float64", "float16", "int8", "int32", "int64", "uint8", "bool"):
        assert dtype in dtypes, (dtype, sorted(dtypes))
