"""Model files for the model-delivery tests and `cairn-bench model-delta`.

Generated ONNX models come from Debian's python3-onnx and python3-numpy: a small convolutional
network whose weights are seeded, so every variant (retrained head, every weight scaled,
fine-tune-like noise, initializers in another order) is reproducible.

Usage as a script (the bench calls it):
  model_fixtures.py onnx OUT --seed N [--variant base|head|scale|finetune|reorder]
  model_fixtures.py perturb IN OUT --variant head|scale|finetune   (an existing ONNX file)
  model_fixtures.py tflite-layer IN OUT                               (changes one TFLite buffer)
"""
import argparse
import sys

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

# (name, shape) of each conv layer's weight; the last one is the "head".
LAYERS = [
    ("backbone.conv1", (32, 3, 3, 3)),
    ("backbone.conv2", (64, 32, 3, 3)),
    ("backbone.conv3", (128, 64, 3, 3)),
    ("backbone.conv4", (128, 128, 3, 3)),
    ("neck.conv5", (96, 128, 3, 3)),
    ("neck.conv6", (64, 96, 3, 3)),
    ("head.conv", (8, 64, 3, 3)),
]


def base_weights(seed):
    rng = np.random.default_rng(seed)
    weights = {}
    for name, shape in LAYERS:
        fan_in = float(np.prod(shape[1:]))
        weights[name + ".weight"] = (rng.standard_normal(shape) / np.sqrt(fan_in)).astype(
            np.float32)
        weights[name + ".bias"] = (rng.standard_normal(shape[0]) * 0.01).astype(np.float32)
    return weights


def perturb(weights, variant, seed):
    rng = np.random.default_rng(seed + 1000)
    out = dict(weights)
    if variant == "head":
        for key in list(out):
            if key.startswith("head."):
                out[key] = (out[key] + rng.standard_normal(out[key].shape).astype(np.float32) *
                            np.float32(0.05)).astype(np.float32)
    elif variant == "scale":
        out = {k: (v * np.float32(1.001)).astype(np.float32) for k, v in out.items()}
    elif variant == "finetune":
        # Small relative updates, as a few epochs of fine-tuning at a low learning rate leave.
        out = {
            k: (v * (1 + rng.standard_normal(v.shape).astype(np.float32) * np.float32(1e-3)))
            .astype(np.float32) for k, v in out.items()
        }
    return out


def build_onnx(weights, order=None):
    nodes = []
    previous = "input"
    for i, (name, shape) in enumerate(LAYERS):
        out = "output" if i == len(LAYERS) - 1 else f"act{i}"
        conv_out = out if i == len(LAYERS) - 1 else f"conv{i}"
        nodes.append(
            helper.make_node("Conv", [previous, name + ".weight", name + ".bias"], [conv_out],
                             pads=[1, 1, 1, 1], name=name))
        if i != len(LAYERS) - 1:
            nodes.append(helper.make_node("Relu", [conv_out], [out], name=name + ".relu"))
        previous = out
    names = list(weights)
    if order == "reverse":
        names = names[::-1]
    initializers = [numpy_helper.from_array(weights[n], n) for n in names]
    graph = helper.make_graph(
        nodes, "cairn-test-net",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, 3, 32, 32])],
        [helper.make_tensor_value_info("output", TensorProto.FLOAT, [1, 8, 32, 32])],
        initializer=initializers)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.producer_name = "cairn-tests"
    return model.SerializeToString()


def make_onnx(path, seed=1, variant="base"):
    weights = base_weights(seed)
    order = None
    if variant == "reorder":
        order = "reverse"
    elif variant != "base":
        weights = perturb(weights, variant, seed)
    data = build_onnx(weights, order)
    with open(path, "wb") as f:
        f.write(data)
    return data


def float_tensors(model):
    """{name: TensorProto} of every float tensor with raw data: initializers, and tensors in
    node attributes (Paddle2ONNX exports, such as PP-OCR's, keep weights in Constant nodes)."""
    out = {}
    for t in model.graph.initializer:
        if t.data_type == TensorProto.FLOAT and t.raw_data:
            out[t.name] = t
    for node in model.graph.node:
        for attr in node.attribute:
            if attr.HasField("t") and attr.t.data_type == TensorProto.FLOAT and attr.t.raw_data:
                out[node.output[0] if node.output else attr.t.name] = attr.t
    return out


def perturb_onnx_file(src, dst, variant, seed=7):
    """Changes an existing ONNX model's float weights: the head's (the tensors feeding the last
    nodes, back to the last big one) or all of them."""
    model = onnx.load(src)
    tensors = float_tensors(model)
    if variant == "head":
        targets = []
        for node in reversed(model.graph.node):
            inputs = [tensors[n] for n in node.input if n in tensors]
            targets += inputs
            if any(len(t.raw_data) >= 4096 for t in inputs):
                break
    else:
        targets = list(tensors.values())
    rng = np.random.default_rng(seed)
    for t in targets:
        arr = numpy_helper.to_array(t).astype(np.float32)
        if variant == "head":
            arr = arr + rng.standard_normal(arr.shape).astype(np.float32) * np.float32(0.05)
        elif variant == "scale":
            arr = arr * np.float32(1.001)
        else:
            arr = arr * (1 + rng.standard_normal(arr.shape).astype(np.float32) * np.float32(1e-3))
        t.raw_data = arr.astype(np.float32).tobytes()
    with open(dst, "wb") as f:
        f.write(model.SerializeToString())


def tflite_change_one_layer(src, dst):
    """Flips the values of the largest constant buffer of a TFLite file (as a retrained layer).

    Reads the flatbuffer offsets directly: Model.buffers (field 4) -> Buffer.data (field 0).
    """
    data = bytearray(open(src, "rb").read())

    def u32(p):
        return int.from_bytes(data[p:p + 4], "little")

    def field(table, index):
        vtable = table - int.from_bytes(data[table:table + 4], "little", signed=True)
        vsize = int.from_bytes(data[vtable:vtable + 2], "little")
        entry = 4 + 2 * index
        if entry + 2 > vsize:
            return 0
        off = int.from_bytes(data[vtable + entry:vtable + entry + 2], "little")
        return table + off if off else 0

    root = u32(0)
    buffers = field(root, 4)
    vec = buffers + u32(buffers)
    best = (0, 0)
    for i in range(u32(vec)):
        elem = vec + 4 + 4 * i
        table = elem + u32(elem)
        f = field(table, 0)
        if not f:
            continue
        d = f + u32(f)
        n = u32(d)
        if n > best[1]:
            best = (d + 4, n)
    start, n = best
    if n == 0:
        raise SystemExit(f"{src}: no constant buffer to change")
    rng = np.random.default_rng(3)
    noise = rng.integers(0, 256, size=n, dtype=np.uint8)
    # Keep it plausible: change the low bits only, as a retrained int8/float layer would.
    for i in range(n):
        data[start + i] ^= int(noise[i]) & 0x0F
    open(dst, "wb").write(bytes(data))


def main(argv):
    p = argparse.ArgumentParser()
    sub = p.add_subparsers(dest="cmd", required=True)
    o = sub.add_parser("onnx")
    o.add_argument("out")
    o.add_argument("--seed", type=int, default=1)
    o.add_argument("--variant", default="base")
    q = sub.add_parser("perturb")
    q.add_argument("src")
    q.add_argument("dst")
    q.add_argument("--variant", required=True)
    t = sub.add_parser("tflite-layer")
    t.add_argument("src")
    t.add_argument("dst")
    a = p.parse_args(argv)
    if a.cmd == "onnx":
        make_onnx(a.out, a.seed, a.variant)
    elif a.cmd == "perturb":
        perturb_onnx_file(a.src, a.dst, a.variant)
    else:
        tflite_change_one_layer(a.src, a.dst)


if __name__ == "__main__":
    main(sys.argv[1:])
