"""Drives the official Azure IoT Node SDKs (tests/node) from integration tests.

  NodeModule(cairnd, "m1")      a ModuleClient (azure-iot-device + azure-iot-device-mqtt) in a
                                `node tests/node/module.js` process, connected to cairnd over
                                TLS with the connection string `cairn identity create` prints
  node_module                   fixture: make(cairnd, module, **kw) -> NodeModule, all closed
                                (and their stderr shown on failure) at teardown
  service(connstr, op, args, ca_file, port=...)
                                one azure-iothub call through `node tests/node/service.js`
  NODE_SDK_SKIP / skip_without_node_sdk
                                why the Node SDK tests cannot run here, if they cannot

The SDKs connect to fixed ports (MQTT 8883 and HTTPS 443 on the gateway host; 443 on the IoT
Hub host for the service SDK). The test servers listen on free loopback ports instead, so the
Node side is given CAIRN_TEST_CONNECT_MAP (tests/node/connect_map.js), which moves the TCP
connection and nothing else: host names, TLS server name checks and SAS audiences stay what the
SDK makes them.
"""
import collections
import json
import os
import shutil
import subprocess
import threading
import time
from pathlib import Path

import pytest

from conftest import DEFAULT_TIMEOUT, DIE_WITH_TESTS, HOST, parse_connection_string

REPO = Path(__file__).resolve().parents[2]
NODE_DIR = REPO / "tests" / "node"
NODE = shutil.which("node")

MQTT_PORT = 8883   # what the device SDK dials for mqtts://{GatewayHostName}
HTTPS_PORT = 443   # ModuleClient.invokeMethod and every service SDK call

# Opening a ModuleClient is a TLS handshake plus CONNECT and two SUBSCRIBEs; under ASan on a
# shared 2-core box that can take a while, so operations get more time than paho calls.
OP_TIMEOUT = max(DEFAULT_TIMEOUT, 30.0)
STDERR_LINES_KEPT = 400


def _skip_reason():
    if NODE is None:
        return "node is not installed (scripts/setup installs Debian's nodejs)"
    for package in ("azure-iot-device", "azure-iot-device-mqtt", "azure-iothub"):
        if not (NODE_DIR / "node_modules" / package / "package.json").exists():
            return (f"tests/node/node_modules/{package} is missing: run scripts/setup "
                    f"(it runs `npm ci` in tests/node)")
    return None


NODE_SDK_SKIP = _skip_reason()
skip_without_node_sdk = pytest.mark.skipif(NODE_SDK_SKIP is not None,
                                           reason=NODE_SDK_SKIP or "")


def connect_map(pairs):
    """CAIRN_TEST_CONNECT_MAP text for {(host, port): (to_host, to_port)}."""
    return ",".join(f"{h}:{p}={th}:{tp}" for (h, p), (th, tp) in pairs.items())


class NodeError(AssertionError):
    """An op answered ok=false. `.error` is module.js's error object (message, name,
    statusCode when the SDK saw an HTTP status)."""

    def __init__(self, text, reply):
        super().__init__(text)
        self.reply = reply
        self.error = reply.get("error") or {}
        self.status_code = self.error.get("statusCode")


class NodeModule:
    """One module.js process: a ModuleClient driven with JSON lines.

    `send(op, **args)` writes a request and waits for its reply; `wait_event(kind, pred)` waits
    for an announcement ("input", "method", "desired", "error", "disconnect", ...). Nothing is
    connected until `open()`.
    """

    def __init__(self, cairnd, module, methods=None, retry="none", env=None, https_port=None,
                 connection_string=None, ca_file=None):
        if NODE_SDK_SKIP:
            pytest.skip(NODE_SDK_SKIP)
        self.cairnd = cairnd
        self.module = module
        if connection_string is None:
            fields = cairnd.create_identity(module)
            connection_string = ";".join(f"{k}={v}" for k, v in fields.items())
        self.connection_string = connection_string
        fields = parse_connection_string(connection_string)
        gateway = fields.get("GatewayHostName") or fields["HostName"]
        ports = {(gateway, MQTT_PORT): (HOST, cairnd.tls_port)}
        # cairnd's HTTPS head (module-to-module methods, docs/protocol.md §9.2) is not there yet; when
        # the fixture grows a port for it, calls to the gateway's 443 are sent there.
        https_port = https_port or getattr(cairnd, "https_port", None)
        if https_port:
            ports[(gateway, HTTPS_PORT)] = (HOST, https_port)

        full_env = {k: v for k, v in os.environ.items()
                    if not k.startswith("IOTEDGE_") and k not in ("IotHubConnectionString",)}
        full_env.update({
            "EdgeHubConnectionString": connection_string,
            "EdgeModuleCACertificateFile": str(ca_file or cairnd.ca_path),
            "CAIRN_TEST_CONNECT_MAP": connect_map(ports),
            "CAIRN_TEST_RETRY": retry,
        })
        if methods is not None:
            full_env["CAIRN_TEST_METHODS"] = ",".join(methods)
        full_env.update(env or {})

        self._lock = threading.Condition(threading.RLock())  # describe() runs under it too
        self._replies = {}
        self._events = []
        self._next_event = 0   # events before this index were all handed out by wait_event
        self._taken = set()    # indexes at or after _next_event handed out by wait_event
        self._next_id = 0
        self._stderr = collections.deque(maxlen=STDERR_LINES_KEPT)
        self._stdout_noise = collections.deque(maxlen=50)
        self.proc = subprocess.Popen(
            [*DIE_WITH_TESTS, NODE, str(NODE_DIR / "module.js")], cwd=str(NODE_DIR), env=full_env,
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            text=True, bufsize=1)
        self._readers = [threading.Thread(target=self._read_stdout, daemon=True),
                         threading.Thread(target=self._read_stderr, daemon=True)]
        for t in self._readers:
            t.start()
        self.wait_event("ready", timeout=OP_TIMEOUT)

    # -- process output, on reader threads

    def _read_stdout(self):
        for line in self.proc.stdout:
            line = line.strip()
            if not line:
                continue
            try:
                obj = json.loads(line)
            except ValueError:
                obj = None
            with self._lock:
                if not isinstance(obj, dict):
                    self._stdout_noise.append(line)
                elif "event" in obj:
                    self._events.append(obj)
                else:
                    self._replies[obj.get("id")] = obj
                self._lock.notify_all()
        with self._lock:
            self._lock.notify_all()

    def _read_stderr(self):
        for line in self.proc.stderr:
            with self._lock:
                self._stderr.append(line.rstrip("\n"))

    # -- diagnostics

    def stderr_text(self):
        with self._lock:
            return "\n".join(self._stderr)

    def describe(self):
        """What a failure message should show: exit status, recent events, stderr."""
        with self._lock:
            events = self._events[-15:]
            noise = list(self._stdout_noise)
        rc = self.proc.poll()
        parts = [f"node module {self.module!r}: " +
                 ("running" if rc is None else f"exited with {rc}")]
        parts.append("last events: " + "\n  ".join(json.dumps(e) for e in events))
        if noise:
            parts.append("non-JSON stdout:\n  " + "\n  ".join(noise))
        parts.append("stderr:\n" + (self.stderr_text()[-6000:] or "(empty)"))
        return "\n".join(parts)

    # -- requests

    def request(self, op, timeout=OP_TIMEOUT, **args):
        """Sends one op and returns its reply, ok or not."""
        with self._lock:
            self._next_id += 1
            rid = self._next_id
        line = json.dumps({"op": op, "id": rid, **args})
        try:
            self.proc.stdin.write(line + "\n")
            self.proc.stdin.flush()
        except (BrokenPipeError, ValueError):
            raise AssertionError(f"cannot send {op}: module.js is gone\n{self.describe()}")
        deadline = time.monotonic() + timeout
        with self._lock:
            while rid not in self._replies:
                remaining = deadline - time.monotonic()
                if self.proc.poll() is not None and not self._readers[0].is_alive():
                    raise AssertionError(f"module.js exited during {op}\n{self.describe()}")
                if remaining <= 0:
                    raise AssertionError(f"no reply to {op} within {timeout}s\n"
                                         f"{self.describe()}")
                self._lock.wait(min(remaining, 0.5))
            return self._replies.pop(rid)

    def send(self, op, timeout=OP_TIMEOUT, **args):
        """Sends one op; returns the reply, or raises NodeError when it answered ok=false."""
        reply = self.request(op, timeout=timeout, **args)
        if not reply.get("ok"):
            raise NodeError(f"{self.module}: {op} failed: {json.dumps(reply.get('error'))}\n"
                            f"{self.describe()}", reply)
        return reply

    # shorthands for the common ops
    def open(self, **kw):
        return self.send("open", **kw)

    def send_output(self, output, body, properties=None, **kw):
        return self.send("send", output=output, body=body, properties=properties or {}, **kw)

    # -- events

    def events(self, kind=None):
        with self._lock:
            return [e for e in self._events if kind is None or e["event"] == kind]

    def wait_event(self, kind, predicate=None, timeout=OP_TIMEOUT):
        """Returns the next event of `kind` (matching `predicate`) not yet returned."""
        return self.wait_events(kind, 1, predicate, timeout)[0]

    def wait_events(self, kind, n, predicate=None, timeout=OP_TIMEOUT):
        """Returns the next n events of `kind` matching `predicate`, in arrival order.
        Events of other kinds, or not matching, stay available to later calls."""
        deadline = time.monotonic() + timeout
        taken = []
        with self._lock:
            while True:
                for i in range(self._next_event, len(self._events)):
                    e = self._events[i]
                    if i in self._taken or e["event"] != kind:
                        continue
                    if predicate is not None and not predicate(e):
                        continue
                    self._taken.add(i)
                    taken.append(e)
                    if len(taken) == n:
                        break
                while self._next_event in self._taken:
                    self._taken.discard(self._next_event)
                    self._next_event += 1
                if len(taken) >= n:
                    return taken
                remaining = deadline - time.monotonic()
                exited = self.proc.poll() is not None and not self._readers[0].is_alive()
                if remaining <= 0 or exited:
                    why = "module.js exited" if exited else f"timed out after {timeout}s"
                    raise AssertionError(f"{self.module}: {why} waiting for {n} {kind!r} events"
                                         f" (got {len(taken)})\n{self.describe()}")
                self._lock.wait(min(remaining, 0.5))

    # -- end

    def close(self, timeout=10.0):
        """Closes the client (best effort), ends module.js, and kills it if it lingers."""
        if self.proc.poll() is None:
            try:
                self.proc.stdin.close()   # module.js closes its client and exits on EOF
            except (BrokenPipeError, OSError):
                pass
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        for t in self._readers:
            t.join(2)
        return self.proc.returncode

    def kill(self):
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


@pytest.fixture
def node_module():
    """make(cairnd, module, **kw) -> NodeModule; every one is ended at teardown and, when the
    test failed, its stderr and last events are printed (pytest shows them with the failure)."""
    modules = []

    def make(cairnd, module, **kwargs):
        m = NodeModule(cairnd, module, **kwargs)
        modules.append(m)
        return m

    yield make
    for m in modules:
        m.close()
        # Captured output: pytest shows it only when the test failed.
        print(m.describe())


# --------------------------------------------------------------------------------------------
# service SDK

class ServiceError(AssertionError):
    """service.js reported a failure. `.reply` is its JSON line, `.status_code` the HTTP status
    the SDK got (None when the call never got an HTTP answer)."""

    def __init__(self, text, reply):
        super().__init__(text)
        self.reply = reply
        self.status_code = reply.get("statusCode")


def service(connstr, op, args=None, ca_file=None, port=None, host=HOST, check=True,
            timeout=90.0, env=None):
    """Runs one azure-iothub call (tests/node/service.js) and returns its JSON reply:
    {"ok": true, "statusCode": N, "result": ...}. With check=False a failure is returned too
    ({"error", "name", "statusCode", "body"}) instead of raising ServiceError.

    ca_file: PEM the SDK must trust for the server (NODE_EXTRA_CA_CERTS).
    port: where the service API really listens; the SDK's https://{HostName}:443 is sent to
          host:port (HostName itself stays the TLS name and the SAS audience).
    """
    if NODE_SDK_SKIP:
        pytest.skip(NODE_SDK_SKIP)
    full_env = dict(os.environ)
    if ca_file is not None:
        full_env["NODE_EXTRA_CA_CERTS"] = str(ca_file)
    if port is not None:
        hostname = parse_connection_string(connstr)["HostName"]
        full_env["CAIRN_TEST_CONNECT_MAP"] = connect_map({(hostname, HTTPS_PORT): (host, port)})
    full_env.update(env or {})
    cmd = [NODE, str(NODE_DIR / "service.js"), connstr, op, json.dumps(args or {})]
    r = subprocess.run(cmd, cwd=str(NODE_DIR), env=full_env, capture_output=True, text=True,
                       timeout=timeout)
    lines = [ln for ln in r.stdout.splitlines() if ln.strip()]
    try:
        reply = json.loads(lines[-1]) if lines else None
    except ValueError:
        reply = None
    if not isinstance(reply, dict):
        raise AssertionError(f"service.js {op}: no JSON reply (exit {r.returncode})\n"
                             f"stdout: {r.stdout}\nstderr: {r.stderr}")
    if r.returncode != 0 and check:
        raise ServiceError(f"service.js {op} failed (exit {r.returncode}): {json.dumps(reply)}\n"
                           f"stderr: {r.stderr[-4000:]}", reply)
    return reply
