#!/usr/bin/python3
"""What reading a JSON tensor costs cairn-infer, for two builds side by side.

    bench/infer_json_ab.py OLD_CAIRN_INFER NEW_CAIRN_INFER [ROUNDS]   (default 150 rounds)

Starts both programs on loopback with the tiny MLP of tests/models/make_onnx_models.py (input
FP32 [N, 16]) and sends each, in random order every round, the same two bodies holding a PP-OCR
det sized tensor (FP32 [1, 3, 256, 256], 196,608 numbers, about 2 MB of JSON): a v2 request
(flat `data`) and a /score body (nested). The model refuses the shape after the body has been
read in full, so a request costs HTTP and JSON reading only, no engine run. One keep-alive
connection per program; the first 3 rounds are warm-up. Prints, per program and body, the
latency (median, quartiles, minimum) and the CPU time the server spent per request (utime +
stime from /proc, which other load on the machine distorts less than wall time).
"""
import argparse
import http.client
import os
import pathlib
import random
import statistics
import subprocess
import sys
import tempfile
import time

SOURCE = pathlib.Path(__file__).resolve().parent.parent
WARMUP_ROUNDS = 3


def bodies():
    rng = random.Random(1)
    values = [f"{rng.uniform(-3, 3):.7f}" for _ in range(3 * 256 * 256)]
    rows = [values[i:i + 256] for i in range(0, len(values), 256)]
    planes = [rows[c * 256:(c + 1) * 256] for c in range(3)]
    nested = "[[" + ",".join(
        "[" + ",".join("[" + ",".join(row) + "]" for row in plane) + "]" for plane in planes) + "]]"
    v2 = ('{"inputs":[{"name":"x","datatype":"FP32","shape":[1,3,256,256],"data":[' +
          ",".join(values) + "]}]}")
    return {"v2": ("/v2/models/tiny/infer", v2), "score": ("/score/tiny", '{"data":' + nested + "}")}


def cpu_seconds(pid):
    fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     epilog=__doc__.split("\n\n", 1)[1],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("old", help="one cairn-infer build")
    parser.add_argument("new", help="the other")
    parser.add_argument("rounds", type=int, nargs="?", default=150)
    args = parser.parse_args()
    programs = {"old": args.old, "new": args.new}
    rounds = args.rounds
    requests = bodies()
    with tempfile.TemporaryDirectory() as models:
        subprocess.run(["/usr/bin/python3", str(SOURCE / "tests/models/make_onnx_models.py"), models],
                       check=True, stdout=subprocess.DEVNULL)
        servers, connections = {}, {}
        try:
            for name, path in programs.items():
                proc = subprocess.Popen(
                    [path, "--http", "127.0.0.1:0", "--model", f"tiny={models}/tiny_mlp.onnx"],
                    stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
                servers[name] = proc
                line = proc.stdout.readline().decode()
                if "listening on" not in line:
                    sys.exit(f"{path} did not start")
                connections[name] = http.client.HTTPConnection(
                    "127.0.0.1", int(line.strip().rsplit(":", 1)[1]), timeout=60)
            latency = {(n, b): [] for n in programs for b in requests}
            cpu = {(n, b): 0.0 for n in programs for b in requests}
            answers = {}
            order = list(programs)
            for round_ in range(rounds):
                for body_name, (target, body) in requests.items():
                    random.shuffle(order)
                    for name in order:
                        cpu_before = cpu_seconds(servers[name].pid)
                        start = time.perf_counter()
                        connections[name].request("POST", target, body,
                                                  {"Content-Type": "application/json"})
                        response = connections[name].getresponse()
                        answer = response.read()
                        elapsed = time.perf_counter() - start
                        answers[(name, body_name)] = (response.status, answer[:100])
                        if round_ >= WARMUP_ROUNDS:
                            latency[(name, body_name)].append(elapsed * 1000)
                            cpu[(name, body_name)] += cpu_seconds(servers[name].pid) - cpu_before
        finally:
            for proc in servers.values():
                proc.terminate()
                proc.wait()
    print(f"bodies: {', '.join(f'{b} {len(r[1])} bytes' for b, r in requests.items())}; answers:")
    for key, answer in sorted(answers.items()):
        print(f"  {key[0]} {key[1]}: {answer[0]} {answer[1].decode(errors='replace')}")
    print("| body | build | p50 ms | p25 - p75 ms | min ms | server CPU per request ms |")
    print("|---|---|---:|---:|---:|---:|")
    for body_name in requests:
        for name in programs:
            t = sorted(latency[(name, body_name)])
            q = statistics.quantiles(t, n=4)
            print(f"| {body_name} | {name} | {statistics.median(t):.1f} | {q[0]:.1f} - {q[2]:.1f} "
                  f"| {t[0]:.1f} | {cpu[(name, body_name)] * 1000 / len(t):.2f} |")


if __name__ == "__main__":
    main()
