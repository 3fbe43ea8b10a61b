#!/usr/bin/python3
"""Where one large request's time goes in a running cairn-infer.

Sends --requests KServe v2 binary requests with an FP32 [1, 3, S, S] input (or --shape) to
--model on one kept connection, then the same body to a model that does not exist (a 404 once
the body is read: what moving the body costs), and prints each p50 and the CPU each server
thread spent per model request (/proc/PID/task/*/stat, clock ticks). --touch-mib times a first
touch of fresh anonymous memory, which some virtual machines make costly.

  /usr/bin/python3 bench/infer_probe.py --port 8000 --pid $(pgrep -f cairn-infer) --model det
  /usr/bin/python3 bench/infer_probe.py --touch-mib 1024
"""
import argparse
import http.client
import json
import math
import mmap
import os
import random
import statistics
import struct
import time


def thread_ticks(pid):
    ticks = {}
    for tid in os.listdir(f"/proc/{pid}/task"):
        with open(f"/proc/{pid}/task/{tid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        ticks[tid] = int(fields[11]) + int(fields[12])  # utime + stime
    return ticks


def p50_us(conn, target, header, body, n):
    times = []
    for _ in range(n):
        start = time.perf_counter()
        conn.request("POST", target, body=body, headers={
            "Inference-Header-Content-Length": str(len(header)),
            "Content-Type": "application/octet-stream"})
        response = conn.getresponse()
        response.read()
        times.append(time.perf_counter() - start)
    return statistics.median(times[n // 10:]) * 1e6, response.status


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--port", type=int)
    ap.add_argument("--pid", type=int, help="cairn-infer's process id (per-thread CPU)")
    ap.add_argument("--model", default="det")
    ap.add_argument("--input", default="x", help="the model's input name")
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--shape", help="the input's shape, e.g. 1,16 for the tiny model of "
                    "tests/models (default: 1,3,SIZE,SIZE)")
    ap.add_argument("--unknown-model", action=argparse.BooleanOptionalAction, default=True,
                    help="also send the same body to a model that does not exist")
    ap.add_argument("--requests", type=int, default=300)
    ap.add_argument("--touch-mib", type=int, default=0)
    a = ap.parse_args()
    if a.touch_mib:
        size = a.touch_mib << 20
        start = time.perf_counter()
        memory = mmap.mmap(-1, size)
        for offset in range(0, size, mmap.PAGESIZE):
            memory[offset] = 1
        seconds = time.perf_counter() - start
        print(f"first touch of {a.touch_mib} MiB: {seconds:.3f} s, "
              f"{seconds * 1e6 / (size // mmap.PAGESIZE):.2f} µs per page")
    if not a.port:
        return
    shape = [int(d) for d in a.shape.split(",")] if a.shape else [1, 3, a.size, a.size]
    count = math.prod(shape)
    rng = random.Random(42)
    data = struct.pack(f"<{count}f", *(rng.random() for _ in range(count)))
    header = json.dumps({"inputs": [{"name": a.input, "datatype": "FP32",
                                     "shape": shape,
                                     "parameters": {"binary_data_size": len(data)}}],
                         "parameters": {"binary_data_output": True}})
    body = header.encode() + data
    conn = http.client.HTTPConnection("127.0.0.1", a.port)
    p50_us(conn, f"/v2/models/{a.model}/infer", header, body, 10)  # warm-up
    before = thread_ticks(a.pid) if a.pid else {}
    p50, status = p50_us(conn, f"/v2/models/{a.model}/infer", header, body, a.requests)
    after = thread_ticks(a.pid) if a.pid else {}
    print(f"{a.model}: HTTP {status}, p50 {p50:.1f} µs over {a.requests} requests")
    tick_ms = 1000 / os.sysconf("SC_CLK_TCK")
    for tid, t in sorted(after.items()):
        spent = (t - before.get(tid, 0)) * tick_ms / a.requests
        if spent > 0:
            print(f"  thread {tid}: {spent:.2f} ms CPU per request")
    if a.unknown_model:
        p50, status = p50_us(conn, "/v2/models/no-such-model/infer", header, body, a.requests)
        print(f"same body to an unknown model: HTTP {status}, p50 {p50:.1f} µs")


if __name__ == "__main__":
    main()
