#!/usr/bin/python3
"""Writes the small ONNX models cairn-infer's tests and benchmark use, with known outputs.

    /usr/bin/python3 tests/models/make_onnx_models.py OUT_DIR

affine_v{1,2,3}.onnx  x: FP32 [N, 4] -> y = x * scale + bias (scale, bias = v, 10 * v): each
                      version gives different outputs, and N is open so requests batch.
sum_int64.onnx        a, b: INT64 [N, 3] -> sum = a + b, two named inputs.
fixed_shape.onnx      x: FP32 [1, 4] -> y = x + 1 (no open dimension: never batched).
slow.onnx             x: FP32 [N, 256] -> 200 chained 256x256 MatMuls: milliseconds per run,
                      so tests can fill a queue.
tiny_mlp.onnx         x: FP32 [N, 16] -> relu(x W1 + b1) W2 + b2, 16-32-4, fixed weights:
                      the benchmark's "tiny model".
cube.onnx             x: FP32 [N, N] -> y = x x x: microseconds at N = 1, about
                      half a second at N = 2048: a run can outlast what recent runs promised.
Needs Debian's python3-onnx and python3-numpy.
"""
import argparse
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

OPSET = [helper.make_opsetid("", 13)]


def save(graph, path):
    model = helper.make_model(graph, opset_imports=OPSET, producer_name="cairn-tests")
    model.ir_version = 8  # readable by every ONNX Runtime cairn supports
    onnx.checker.check_model(model)
    onnx.save(model, str(path))


def affine(path, scale, bias):
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 4])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 4])
    inits = [numpy_helper.from_array(np.array([scale], np.float32), "scale"),
             numpy_helper.from_array(np.array([bias], np.float32), "bias")]
    nodes = [helper.make_node("Mul", ["x", "scale"], ["t"]),
             helper.make_node("Add", ["t", "bias"], ["y"])]
    save(helper.make_graph(nodes, "affine", [x], [y], inits), path)


def sum_int64(path):
    a = helper.make_tensor_value_info("a", TensorProto.INT64, ["N", 3])
    b = helper.make_tensor_value_info("b", TensorProto.INT64, ["N", 3])
    s = helper.make_tensor_value_info("sum", TensorProto.INT64, ["N", 3])
    save(helper.make_graph([helper.make_node("Add", ["a", "b"], ["sum"])], "sum", [a, b], [s]),
         path)


def fixed_shape(path):
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])
    one = numpy_helper.from_array(np.array([1.0], np.float32), "one")
    save(helper.make_graph([helper.make_node("Add", ["x", "one"], ["y"])], "fixed", [x], [y],
                           [one]), path)


def tiny_mlp(path):
    rng = np.random.default_rng(7)
    w1 = rng.standard_normal((16, 32)).astype(np.float32)
    b1 = rng.standard_normal(32).astype(np.float32)
    w2 = rng.standard_normal((32, 4)).astype(np.float32)
    b2 = rng.standard_normal(4).astype(np.float32)
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 16])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 4])
    inits = [numpy_helper.from_array(a, n) for a, n in ((w1, "w1"), (b1, "b1"), (w2, "w2"), (b2, "b2"))]
    nodes = [helper.make_node("MatMul", ["x", "w1"], ["h0"]),
             helper.make_node("Add", ["h0", "b1"], ["h1"]),
             helper.make_node("Relu", ["h1"], ["h2"]),
             helper.make_node("MatMul", ["h2", "w2"], ["h3"]),
             helper.make_node("Add", ["h3", "b2"], ["y"])]
    save(helper.make_graph(nodes, "tiny_mlp", [x], [y], inits), path)
    return w1, b1, w2, b2


def slow(path, layers=200):
    rng = np.random.default_rng(3)
    w = (rng.standard_normal((256, 256)) / 16).astype(np.float32)
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 256])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 256])
    nodes = []
    prev = "x"
    for i in range(layers):
        out = "y" if i == layers - 1 else f"h{i}"
        nodes.append(helper.make_node("MatMul", [prev, "w"], [out]))
        prev = out
    save(helper.make_graph(nodes, "slow", [x], [y], [numpy_helper.from_array(w, "w")]), path)


def cube(path):
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", "N"])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", "N"])
    nodes = [helper.make_node("MatMul", ["x", "x"], ["x2"]),
             helper.make_node("MatMul", ["x2", "x"], ["y"])]
    save(helper.make_graph(nodes, "cube", [x], [y]), path)


def tiny_mlp_reference(x, weights):
    w1, b1, w2, b2 = weights
    return np.maximum(x @ w1 + b1, 0) @ w2 + b2


def make_all(out_dir):
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    for v in (1, 2, 3):
        affine(out / f"affine_v{v}.onnx", float(v), 10.0 * v)
    sum_int64(out / "sum_int64.onnx")
    fixed_shape(out / "fixed_shape.onnx")
    tiny_mlp(out / "tiny_mlp.onnx")
    slow(out / "slow.onnx")
    cube(out / "cube.onnx")
    return out


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     epilog=__doc__.split("\n\n", 1)[1],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("out_dir", help="where the models are written (created if missing)")
    make_all(parser.parse_args().out_dir)
