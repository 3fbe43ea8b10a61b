#!/usr/bin/python3
"""Writes the anomaly model of the demo pipeline (cairn-sensor -> cairn-infer -> $upstream).

    /usr/bin/python3 examples/anomaly_model/make_anomaly_model.py OUT_DIR

OUT_DIR/anomaly-1.onnx and OUT_DIR/anomaly-2.onnx: a kernel density model of cairn-sensor's
normal readings. Input `reading`, FP32 [N, 4]: machine temperature (°C), machine pressure (bar),
ambient temperature (°C), ambient humidity (%), in that order (cairn-infer's inputMapping takes
them from the sensor's JSON). Outputs, per row:

    score    FP32 [N]  -log of the mean Gaussian kernel over 4096 reference readings of normal
                       operation: >= 0, small inside the envelope of normal readings, growing
                       with the squared distance (in bandwidths) to the nearest of them
    anomaly  BOOL [N]  score > threshold

Normal operation, as cairn-sensor simulates it: the machine warms from 21 to about 100 °C and
stays there, pressure follows the temperature (1 bar at 21 °C, 10 bar at 100 °C), the ambient
temperature stays within 21 ± 0.5 °C and the humidity within 24..27 %. A spike (the sensor's
SpikeMagnitude added to the machine temperature, pressure following) is flagged once it leaves
that envelope: the demo's spikes of +100 °C always do.

Version 2 is a recalibration: the same reference readings (the 64 KB tensor every version shares,
so an update moves only what changed), narrower kernel bandwidths and its own threshold. Each
threshold sits above every score of 5,000 simulated normal readings with a margin; the script
prints them. A fixed seed makes the output the same bytes on every run with the same numpy and
onnx, so the demo generates the models (about 3 s) instead of keeping binaries in the
repository: the script is what reviews and diffs show.

Needs Debian's python3-onnx and python3-numpy.
"""
import argparse
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

REFERENCE_READINGS = 4096
FIELDS = ["machine.temperature", "machine.pressure", "ambient.temperature", "ambient.humidity"]
# Kernel bandwidths per feature (same units as the reading) of each version.
BANDWIDTHS = {1: [2.0, 0.25, 0.25, 0.6], 2: [1.5, 0.2, 0.2, 0.5]}
# Threshold = margin + the highest score of normal readings.
MARGIN = {1: 6.0, 2: 4.0}


def normal_readings(rng, n):
    temperature = rng.uniform(21.0, 100.5, n)
    pressure = 1 + (temperature - 21) * 9.0 / 79.0
    ambient = 21 + rng.uniform(-0.5, 0.5, n)
    humidity = 24 + rng.uniform(0, 3, n)
    return np.stack([temperature, pressure, ambient, humidity], axis=1).astype(np.float32)


def scores(readings, reference, bandwidth):
    """What the graph computes, in numpy (float64)."""
    out = np.empty(len(readings))
    inv = 1.0 / np.asarray(bandwidth, np.float64)
    for start in range(0, len(readings), 512):
        x = readings[start:start + 512].astype(np.float64)
        z = (x[:, None, :] - reference[None, :, :]) * inv
        e = -0.5 * np.sum(z * z, axis=2)
        m = e.max(axis=1)
        lse = m + np.log(np.exp(e - m[:, None]).sum(axis=1))
        out[start:start + 512] = np.log(len(reference)) - lse
    return out


def build(reference, bandwidth, threshold):
    reading = helper.make_tensor_value_info("reading", TensorProto.FLOAT, ["N", 4])
    score = helper.make_tensor_value_info("score", TensorProto.FLOAT, ["N"])
    anomaly = helper.make_tensor_value_info("anomaly", TensorProto.BOOL, ["N"])
    inits = [
        numpy_helper.from_array(reference, "reference_readings"),
        numpy_helper.from_array((1.0 / np.asarray(bandwidth)).astype(np.float32),
                                "inverse_bandwidth"),
        numpy_helper.from_array(np.array(-0.5, np.float32), "minus_half"),
        numpy_helper.from_array(np.array(np.log(len(reference)), np.float32), "log_count"),
        numpy_helper.from_array(np.array(threshold, np.float32), "threshold"),
        numpy_helper.from_array(np.array([1], np.int64), "axis_1"),
        numpy_helper.from_array(np.array([2], np.int64), "axis_2"),
    ]
    nodes = [
        helper.make_node("Unsqueeze", ["reading", "axis_1"], ["reading_3d"]),
        helper.make_node("Sub", ["reading_3d", "reference_readings"], ["difference"]),
        helper.make_node("Mul", ["difference", "inverse_bandwidth"], ["z"]),
        helper.make_node("Mul", ["z", "z"], ["z_squared"]),
        helper.make_node("ReduceSum", ["z_squared", "axis_2"], ["distance"], keepdims=0),
        helper.make_node("Mul", ["distance", "minus_half"], ["log_kernel"]),
        helper.make_node("ReduceLogSumExp", ["log_kernel"], ["log_sum"], axes=[1], keepdims=0),
        helper.make_node("Sub", ["log_count", "log_sum"], ["score"]),
        helper.make_node("Greater", ["score", "threshold"], ["anomaly"]),
    ]
    graph = helper.make_graph(nodes, "sensor_anomaly", [reading], [score, anomaly], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)],
                              producer_name="cairn-examples")
    model.ir_version = 8  # readable by every ONNX Runtime cairn supports
    onnx.checker.check_model(model)
    return model


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     epilog=__doc__.split("\n\n", 1)[1],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("out_dir", help="where the models are written (created if missing)")
    out = Path(parser.parse_args().out_dir)
    out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(20261202)
    reference = normal_readings(rng, REFERENCE_READINGS)
    held_out = normal_readings(rng, 5_000)
    for version, bandwidth in BANDWIDTHS.items():
        normal = scores(held_out, reference, bandwidth)
        threshold = float(np.ceil(normal.max() + MARGIN[version]))
        path = out / f"anomaly-{version}.onnx"
        onnx.save(build(reference, bandwidth, threshold), str(path))
        print(f"{path}: {path.stat().st_size} bytes, bandwidths {bandwidth}, threshold "
              f"{threshold:g} (normal readings score at most {normal.max():.2f})")


if __name__ == "__main__":
    main()
