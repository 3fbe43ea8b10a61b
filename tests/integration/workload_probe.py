"""A module that calls the workload API on a test's behalf: the agent starts it as a process
module, so its calls carry a module's peer credentials. The test drops numbered requests into the
directory $CAIRN_TEST_BOX ({"method", "path", "body", "socket"?}) and reads the answers back
({"status", "body"}); the module also writes its IoT Edge environment to env.json.

Only the standard library: this is what a module without an SDK does.
"""
import http.client
import json
import os
import socket
import time
from pathlib import Path


def call(socket_path, method, path, body):
    conn = http.client.HTTPConnection("localhost", timeout=30)
    conn.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    conn.sock.settimeout(30)
    conn.sock.connect(socket_path)
    conn.request(method, path, body=body, headers={"Content-Type": "application/json"})
    r = conn.getresponse()
    data = r.read().decode()
    conn.close()
    return r.status, data


def main():
    box = Path(os.environ["CAIRN_TEST_BOX"])
    box.mkdir(parents=True, exist_ok=True)
    own = os.environ["IOTEDGE_WORKLOADURI"][len("unix://"):]
    env = {k: v for k, v in os.environ.items() if k.startswith("IOTEDGE_")}
    (box / "env.tmp").write_text(json.dumps(env))
    (box / "env.tmp").rename(box / "env.json")
    n = 0
    while True:
        request = box / f"{n}.request.json"
        if not request.exists():
            time.sleep(0.02)
            continue
        r = json.loads(request.read_text())
        try:
            status, text = call(r.get("socket") or own, r["method"], r["path"], r.get("body"))
        except OSError as e:
            status, text = 0, str(e)
        (box / f"{n}.tmp").write_text(json.dumps({"status": status, "body": text}))
        (box / f"{n}.tmp").rename(box / f"{n}.answer.json")
        n += 1


if __name__ == "__main__":
    main()
