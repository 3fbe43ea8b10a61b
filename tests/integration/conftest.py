"""Fixtures for cairn integration tests: a real cairnd on loopback, real MQTT clients.

Run with Debian's interpreter: /usr/bin/python3 -m pytest tests/integration
Binaries come from $CAIRN_BIN_DIR (default: build-asan/bin under the repository).

Fixtures
  cairnd_factory  -> make(routes=..., config=..., start=True) -> Cairnd
  cairnd          -> a started Cairnd with the default routes (sensor -> filter)
  module_client   -> connect(cairnd, module, **kw) -> ModuleClient (paho, TLS, SAS auth; twin
                     and direct-method helpers: enable_twin, twin_get, patch_reported,
                     expect_desired, serve_methods)
  raw_mqtt        -> open(cairnd, tls=False) -> RawMqtt (hand-made packets)
  cloud_factory   -> make(start=True) -> CairnCloud (cairn-cloud on CLOUD_HOST, free ports;
                     REST helpers with service SAS tokens)
  cloud           -> a started CairnCloud
  tcp_proxy       -> make(target_port) -> TcpProxy (cut()/restore() a cloud link)
  edge_device(cloud, cairnd_factory, ...) -> a Cairnd registered as an edge device of the cloud
  CloudDevice(cloud, device_id)           -> lets module_client connect straight to the cloud

Every test's cairnd and cairn-cloud logs are attached to the report when the test fails, and a
sanitizer report in a log fails the test that produced it.
"""
import base64
import hashlib
import hmac
import http.client
import json
import os
import queue
import random
import select
import signal
import socket
import ssl
import struct
import subprocess
import threading
import time
import urllib.parse
import uuid
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest

# Container engine and registry fixtures (container_engine, test_registries, busybox_image,
# node_module_image): see containers.py.
pytest_plugins = ["containers"]

REPO = Path(__file__).resolve().parents[2]
BIN_DIR = Path(os.environ.get("CAIRN_BIN_DIR", REPO / "build-asan" / "bin"))
CAIRND = BIN_DIR / "cairnd"
CAIRN = BIN_DIR / "cairn"

HOST = "127.0.0.1"
IOTHUB_HOSTNAME = "cairn.local"
API_VERSION = "2021-04-12"

# ASan/UBSan under a shared 2-core box: generous but bounded waits.
START_TIMEOUT = 30.0
DEFAULT_TIMEOUT = 15.0

# The prefix of every daemon a test starts: the kernel kills it when the test process dies
# (a ctest timeout, ^C, pytest killed), where it would otherwise live on holding its ports and
# CPU. The signal comes when the thread that started it ends, so start daemons from the test's
# own thread, not from a helper thread.
DIE_WITH_TESTS = ["setpriv", "--pdeathsig", "KILL", "--"]

SANITIZER_MARKERS = ("ERROR: AddressSanitizer", "runtime error:", "ERROR: LeakSanitizer",
                     "WARNING: ThreadSanitizer")

DEFAULT_ROUTES = {
    "sensorToFilter":
        'FROM /messages/modules/sensor/outputs/temp '
        'INTO BrokeredEndpoint("/modules/filter/inputs/in")',
}


# --------------------------------------------------------------------------------------------
# small helpers

def wait_for(predicate, timeout=DEFAULT_TIMEOUT, interval=0.02, what="condition"):
    """Polls `predicate` until it returns a truthy value; returns it. Fails after `timeout`."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)


def _ephemeral_ports_start():
    """The lowest port the kernel hands out itself (to port 0, to outgoing connections)."""
    try:
        with open("/proc/sys/net/ipv4/ip_local_port_range") as f:
            return int(f.read().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768  # Linux's default


# Its own source of ports: tests that seed the module's generator for their data would
# otherwise pick the same ports as each other when run side by side.
_port_picker = random.SystemRandom()


def _bind_and_release(host, port):
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, port))
        return s.getsockname()[1]


def free_port(host=HOST):
    """A port that was free a moment ago, below the kernel's ephemeral range: one the kernel
    picked and we closed can go to any other socket (an outgoing connection, another test's
    port 0) before our server binds it; below the range only a program naming the port can."""
    below = _ephemeral_ports_start()
    if below - 10000 >= 1000:
        for _ in range(64):
            try:
                return _bind_and_release(host, _port_picker.randint(10000, below - 1))
            except OSError:
                continue
    return _bind_and_release(host, 0)


def port_accepts(port, host=HOST):
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


def unix_http(socket_path, method, target, body=None, timeout=10):
    """One HTTP request over a unix socket (cairnd's management and workload APIs): returns
    (status, parsed JSON body or None)."""
    conn = http.client.HTTPConnection("localhost", timeout=timeout)
    conn.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    conn.sock.settimeout(timeout)
    try:
        conn.sock.connect(str(socket_path))
        conn.request(method, target, body=body, headers={"Content-Type": "application/json"})
        r = conn.getresponse()
        data = r.read()
    finally:
        conn.close()
    return r.status, json.loads(data) if data else None


def sas_token(resource, key_b64, expiry):
    """SAS token as IoT Hub SDKs build it (docs/protocol.md §3.2)."""
    sr = urllib.parse.quote(resource, safe="")
    to_sign = f"{sr}\n{expiry}".encode()
    sig = base64.b64encode(hmac.new(base64.b64decode(key_b64), to_sign, hashlib.sha256).digest())
    return (f"SharedAccessSignature sr={sr}&sig={urllib.parse.quote(sig.decode(), safe='')}"
            f"&se={expiry}")


def parse_connection_string(text):
    out = {}
    for part in text.strip().split(";"):
        k, _, v = part.partition("=")
        out[k] = v
    return out


def encode_bag(props):
    """Property bag as SDKs encode it: k=v&k2=v2, URL-encoded ('$' becomes %24)."""
    return "&".join(f"{urllib.parse.quote(k, safe='')}={urllib.parse.quote(v, safe='')}"
                    for k, v in props.items())


def decode_bag(bag):
    out = {}
    if not bag:
        return out
    for pair in bag.split("&"):
        if not pair:
            continue
        k, eq, v = pair.partition("=")
        out[urllib.parse.unquote(k)] = urllib.parse.unquote(v) if eq else None
    return out


# --------------------------------------------------------------------------------------------
# cairnd

class _Daemon:
    """What Cairnd and CairnCloud share: stopping, killing and the sanitizer check of a
    process whose output lands in log_text(). Subclasses set `name` and `proc`."""

    name = "daemon"

    def stop(self, timeout=30.0, expect_rc=0):
        """SIGTERM and wait; asserts a clean exit (rc 0, no sanitizer report)."""
        if self.proc is None:
            return None
        self.proc.send_signal(signal.SIGTERM)
        try:
            rc = self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            self.proc = None
            raise AssertionError(f"{self.name} did not stop within {timeout}s after SIGTERM")
        self.proc = None
        self.check_sanitizers()
        if expect_rc is not None:
            assert rc == expect_rc, f"{self.name} exited with {rc}:\n{self.log_text()[-4000:]}"
        return rc

    def kill9(self):
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()
        self.proc = None
        self.check_sanitizers()

    def running(self):
        return self.proc is not None and self.proc.poll() is None

    def check_sanitizers(self):
        text = self.log_text()
        for marker in SANITIZER_MARKERS:
            assert marker not in text, f"sanitizer report in {self.name} log:\n{text[-8000:]}"


class Cairnd(_Daemon):
    """One cairnd with its own home directory and free ports."""

    name = "cairnd"

    def __init__(self, home, routes=None, config=None, top=None, ttl_secs=7200, manifest=True,
                 device_id="edge1", extra_desired=None):
        self.home = Path(home)
        self.home.mkdir(parents=True, exist_ok=True)
        self.device_id = device_id
        self.routes = DEFAULT_ROUTES if routes is None else routes
        self.mqtt_config = {
            "listen": HOST, "tls_port": free_port(), "plain_port": free_port(),
            "max_message_bytes": 262144, "max_inflight_in": 128, "max_inflight_out": 64,
            "max_keepalive_secs": 600, "connect_timeout_secs": 30, "max_connections": 1000,
        }
        self.store_config = {"fsync": False, "max_bytes": 1 << 30, "expire_interval_secs": 30}
        # Module-to-module methods over HTTPS; a free port (443 in production).
        self.http_config = {"port": free_port()}
        # The cloud link: empty unless a test connects this device to a cairn-cloud.
        self.upstream_config = {}
        self.auth_config = {}  # [auth]: the built-in defaults unless a test sets some
        self.top_config = {"device_id": device_id, "hostname": "localhost",
                           "iothub_hostname": IOTHUB_HOSTNAME, "default_ttl_secs": 7200}
        for key, value in (config or {}).items():
            section, _, name = key.partition(".")
            {"mqtt": self.mqtt_config, "store": self.store_config, "http": self.http_config,
             "upstream": self.upstream_config, "auth": self.auth_config}[section][name] = value
        self.top_config.update(top or {})
        self.ttl_secs = ttl_secs
        self.extra_desired = extra_desired or {}
        self.use_manifest = manifest
        self.extra_args = []  # more cairnd options, e.g. ["--docker-uri", ...]
        self.proc = None
        self.runs = 0
        self.log_paths = []
        self.keys = {}
        self.write_config()
        if manifest:
            self.write_manifest()

    # -- files

    @property
    def config_path(self):
        return self.home / "config.toml"

    @property
    def manifest_path(self):
        return self.home / "manifest.json"

    @property
    def ca_path(self):
        return self.home / "certs" / "edge-ca.pem"

    @property
    def tls_port(self):
        return self.mqtt_config["tls_port"]

    @property
    def plain_port(self):
        return self.mqtt_config["plain_port"]

    @property
    def https_port(self):
        return self.http_config["port"]

    def write_config(self):
        def value(v):
            if isinstance(v, bool):
                return "true" if v else "false"
            if isinstance(v, str):
                return json.dumps(v)
            return str(v)

        lines = [f"{k} = {value(v)}" for k, v in self.top_config.items()]
        lines.append("[mqtt]")
        lines += [f"{k} = {value(v)}" for k, v in self.mqtt_config.items()]
        lines.append("[store]")
        lines += [f"{k} = {value(v)}" for k, v in self.store_config.items()]
        lines.append("[http]")
        lines += [f"{k} = {value(v)}" for k, v in self.http_config.items()]
        if self.auth_config:
            lines.append("[auth]")
            lines += [f"{k} = {value(v)}" for k, v in self.auth_config.items()]
        if self.upstream_config:
            lines.append("[upstream]")
            lines += [f"{k} = {value(v)}" for k, v in self.upstream_config.items()]
        self.config_path.write_text("\n".join(lines) + "\n")

    def write_manifest(self):
        desired = {"schemaVersion": "1.1", "routes": self.routes}
        if self.ttl_secs is not None:
            desired["storeAndForwardConfiguration"] = {"timeToLiveSecs": self.ttl_secs}
        desired.update(self.extra_desired)
        manifest = {"modulesContent": {
            "$edgeAgent": {"properties.desired": {"schemaVersion": "1.1"}},
            "$edgeHub": {"properties.desired": desired}}}
        self.manifest_path.write_text(json.dumps(manifest, indent=2))

    # -- process

    def command(self):
        cmd = [str(CAIRND), "--home", str(self.home), "--log-level", "debug"]
        if self.use_manifest:
            cmd += ["--manifest", str(self.manifest_path)]
        return cmd + list(self.extra_args)

    @property
    def log_path(self):
        return self.log_paths[-1]

    def log_text(self, all_runs=False):
        paths = self.log_paths if all_runs else self.log_paths[-1:]
        out = []
        for p in paths:
            try:
                out.append(p.read_text(errors="replace"))
            except FileNotFoundError:
                pass
        return "".join(out)

    def start(self, timeout=START_TIMEOUT):
        assert self.proc is None, "cairnd already running"
        for attempt in range(3):
            self.runs += 1
            log_path = self.home / f"cairnd.{self.runs}.log"
            self.log_paths.append(log_path)
            log = open(log_path, "wb")
            env = dict(os.environ)
            env.setdefault("ASAN_OPTIONS", "detect_leaks=1:abort_on_error=0")
            self.proc = subprocess.Popen(DIE_WITH_TESTS + self.command(), stdout=log,
                                         stderr=subprocess.STDOUT,
                                         stdin=subprocess.DEVNULL, env=env)
            log.close()
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline:
                if self.proc.poll() is not None:
                    break
                if "ready:" in self.log_text() and (self.home / "run" / "mgmt.sock").exists():
                    break
                time.sleep(0.02)
            if self.proc.poll() is None and "ready:" in self.log_text():
                for port in (self.tls_port, self.plain_port):
                    if port:
                        wait_for(lambda: port_accepts(port), what=f"port {port} to accept")
                return self
            rc = self.proc.poll()
            text = self.log_text()
            if rc is None:
                self.proc.kill()
                self.proc.wait()
                self.proc = None
                raise AssertionError(f"cairnd did not become ready in {timeout}s:\n{text}")
            self.proc = None
            # A free port taken by a parallel test between free_port() and bind: pick others.
            if "cannot listen" in text and self.runs == attempt + 1:
                self.mqtt_config["tls_port"] = free_port()
                self.mqtt_config["plain_port"] = free_port()
                self.write_config()
                continue
            raise AssertionError(f"cairnd exited with {rc} during start:\n{text}")
        raise AssertionError("cairnd could not find free ports")

    def restart(self):
        self.stop()
        return self.start()

    # -- CLI

    def cli(self, *args, check=True, timeout=30):
        r = subprocess.run([str(CAIRN), "--home", str(self.home), *args], capture_output=True,
                           text=True, timeout=timeout)
        if check:
            assert r.returncode == 0, (f"cairn {' '.join(args)} -> {r.returncode}\n"
                                       f"stdout: {r.stdout}\nstderr: {r.stderr}")
        return r

    def mgmt(self, method, target, body=None, expect=200):
        """A request to the management API straight over its socket: what `cairn` does, without
        starting a sanitized process per call (about 150 ms of CPU each), so polling stays
        cheap. The CLI itself is tested in test_cli.py."""
        status, reply = unix_http(self.home / "run" / "mgmt.sock", method, target, body)
        assert expect is None or status == expect, f"{method} {target} -> {status}: {reply}"
        return reply

    def status(self):
        return self.mgmt("GET", "/status")

    def queue_length(self, endpoint, priority=None):
        total = 0
        for q in self.status()["queues"]:
            if q["endpoint"] == endpoint and (priority is None or q["priority"] == priority):
                total += q["length"]
        return total

    def counter(self, name):
        return self.status()["counters"][name]

    def create_identity(self, module):
        reply = self.mgmt("POST", "/identities", json.dumps({"moduleId": module}))
        cs = parse_connection_string(reply["connectionString"])
        self.keys[module] = cs["SharedAccessKey"]
        return cs

    def token(self, module, expiry=None, key=None, resource=None):
        """A SAS token computed in Python (fast; no CLI process under ASan)."""
        if key is None:
            if module not in self.keys:
                self.create_identity(module)
            key = self.keys[module]
        if resource is None:
            resource = f"{IOTHUB_HOSTNAME}/devices/{self.device_id}/modules/{module}"
        if expiry is None:
            expiry = int(time.time()) + 3600
        return sas_token(resource, key, expiry)

    def username(self, module):
        return f"{IOTHUB_HOSTNAME}/{self.device_id}/{module}/?api-version={API_VERSION}"

    def client_id(self, module):
        return f"{self.device_id}/{module}"

    def events_topic(self, module, props=None):
        base = f"devices/{self.device_id}/modules/{module}/messages/events/"
        return base + encode_bag(props) if props else base

    def inputs_filter(self, module):
        return f"devices/{self.device_id}/modules/{module}/#"

    # -- the cloud link

    def upstream_status(self):
        return self.status()["upstream"]

    def link_state(self, module):
        """State of the upstream link of `module` ("online", "backoff", ...), None if none."""
        link = self.upstream_status().get("links", {}).get(self.client_id(module))
        return link["state"] if link else None

    def wait_link(self, module, state="online", timeout=DEFAULT_TIMEOUT):
        wait_for(lambda: self.link_state(module) == state, timeout,
                 what=f"upstream link of {module} to be {state} "
                      f"(now {self.link_state(module)})")

    def twin_view(self, module):
        """The twin cached for `module` (what `cairn twin get` prints); an empty one while it has
        none, so a test can poll for what it expects before the twin exists."""
        target = f"/twins/{urllib.parse.quote(module, safe='')}"
        status, reply = unix_http(self.home / "run" / "mgmt.sock", "GET", target)
        if status == 404:
            return {"desired": {}, "reported": {}}
        assert status == 200, f"GET {target} -> {status}: {reply}"
        return reply


@pytest.fixture
def cairnd_factory(tmp_path, request):
    instances = []

    def make(start=True, **kwargs):
        home = tmp_path / f"home{len(instances)}"
        d = Cairnd(home, **kwargs)
        instances.append(d)
        if start:
            d.start()
        return d

    request.node._cairnd_instances = instances
    yield make
    errors = []
    for d in instances:
        try:
            if d.running():
                d.stop()
        except AssertionError as e:
            errors.append(str(e))
    if errors:
        pytest.fail("cairnd shutdown problems:\n" + "\n".join(errors))


@pytest.fixture
def cairnd(cairnd_factory):
    return cairnd_factory()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    if report.failed:
        for i, d in enumerate(getattr(item, "_cairnd_instances", [])):
            text = d.log_text(all_runs=True)
            if len(text) > 30000:
                text = "...\n" + text[-30000:]
            report.sections.append((f"cairnd[{i}] log ({d.home})", text))
        for i, c in enumerate(getattr(item, "_cloud_instances", [])):
            text = c.log_text(all_runs=True)
            if len(text) > 30000:
                text = "...\n" + text[-30000:]
            report.sections.append((f"cairn-cloud[{i}] log ({c.home})", text))


# --------------------------------------------------------------------------------------------
# cairn-cloud

CAIRN_CLOUD = BIN_DIR / "cairn-cloud"
# The cloud listens on its own loopback address so that it never competes with cairnd (which
# keeps 127.0.0.1) for ports; the whole 127/8 reaches the loopback interface on Linux.
CLOUD_HOST = "127.0.0.2"
SERVICE_POLICY = "iothubowner"


def error_code(body):
    """The code of an IoT Hub error body {"Message": "ErrorCode:<Code>;<text>"}, or None."""
    if isinstance(body, dict) and isinstance(body.get("Message"), str):
        message = body["Message"]
        if message.startswith("ErrorCode:"):
            return message[len("ErrorCode:"):].split(";", 1)[0]
    return None


class RestReply:
    """One HTTP answer: status, headers (lower-case names), text and parsed JSON (or None)."""

    def __init__(self, status, headers, text):
        self.status = status
        self.headers = headers
        self.text = text
        try:
            self.json = json.loads(text) if text else None
        except ValueError:
            self.json = None

    @property
    def error_code(self):
        return error_code(self.json)

    @property
    def message(self):
        if isinstance(self.json, dict):
            return self.json.get("Message") or self.json.get("message") or ""
        return self.text

    def __repr__(self):
        return f"RestReply({self.status}, {self.text[:300]!r})"


class _TlsConnection(http.client.HTTPSConnection):
    """HTTPS to an address, with the certificate checked against `server_name`."""

    def __init__(self, host, port, server_name, context, timeout):
        super().__init__(host, port, context=context, timeout=timeout)
        self._server_name = server_name
        self._tls_context = context

    def connect(self):
        sock = socket.create_connection((self.host, self.port), self.timeout)
        self.sock = self._tls_context.wrap_socket(sock, server_hostname=self._server_name)


def https_request(host, port, method, target, ca_file, server_name=None, body=None, raw=None,
                  headers=None, timeout=DEFAULT_TIMEOUT):
    """One HTTPS request; `body` is sent as JSON, `raw` (bytes or str) as it is."""
    ctx = ssl.create_default_context(cafile=str(ca_file))
    conn = _TlsConnection(host, port, server_name or host, ctx, timeout)
    data = None
    if raw is not None:
        data = raw.encode() if isinstance(raw, str) else raw
    elif body is not None:
        data = json.dumps(body).encode()
    all_headers = {"Content-Type": "application/json"}
    all_headers.update(headers or {})
    try:
        conn.request(method, target, body=data, headers=all_headers)
        r = conn.getresponse()
        text = r.read().decode("utf-8", errors="replace")
        return RestReply(r.status, {k.lower(): v for k, v in r.getheaders()}, text)
    finally:
        conn.close()


class CairnCloud(_Daemon):
    """One cairn-cloud with its own home directory and free ports on CLOUD_HOST. Restarts keep
    the home and the ports, as a cloud coming back would."""

    name = "cairn-cloud"

    def __init__(self, home, hostname=None, fsync=False, extra_args=()):
        self.home = Path(home)
        self.extra_args = list(extra_args)  # more command-line options (limits under test)
        self.home.mkdir(parents=True, exist_ok=True)
        self.listen = CLOUD_HOST
        self.hostname = hostname or CLOUD_HOST
        self.mqtt_port = free_port(CLOUD_HOST)
        self.https_port = free_port(CLOUD_HOST)
        self.fsync = fsync
        self.proc = None
        self.runs = 0
        self.log_paths = []
        self.connection_string = None
        self.service_key = None

    @property
    def ca_path(self):
        return self.home / "certs" / "edge-ca.pem"

    @property
    def messages_path(self):
        return self.home / "data" / "messages.jsonl"

    def command(self):
        return [str(CAIRN_CLOUD), "--home", str(self.home), "--listen", self.listen,
                "--hostname", self.hostname, "--mqtt-port", str(self.mqtt_port),
                "--https-port", str(self.https_port), "--fsync", "true" if self.fsync else "false",
                "--log-level", "debug", *self.extra_args]

    # -- process

    @property
    def log_path(self):
        return self.log_paths[-1]

    def _out_path(self, run):
        return self.home / f"cloud.{run}.out"

    def log_text(self, all_runs=False):
        runs = range(1, self.runs + 1) if all_runs else [self.runs]
        out = []
        for run in runs:
            for p in (self.home / f"cloud.{run}.log", self._out_path(run)):
                try:
                    out.append(p.read_text(errors="replace"))
                except FileNotFoundError:
                    pass
        return "".join(out)

    def stdout_text(self):
        try:
            return self._out_path(self.runs).read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def start(self, timeout=START_TIMEOUT):
        assert self.proc is None, "cairn-cloud already running"
        if not CAIRN_CLOUD.exists():
            pytest.fail(f"{CAIRN_CLOUD} is missing: build the cairn-cloud target")
        for attempt in range(3):
            try:
                return self._start_once(timeout)
            except AssertionError:
                # A free port taken by a parallel test between free_port() and bind: on the
                # first start only (a restart must come back on the same ports).
                if self.runs > attempt + 1 or "cannot listen" not in self.log_text():
                    raise
                self.mqtt_port = free_port(CLOUD_HOST)
                self.https_port = free_port(CLOUD_HOST)
        raise AssertionError("cairn-cloud could not find free ports")

    def _start_once(self, timeout):
        self.runs += 1
        log_path = self.home / f"cloud.{self.runs}.log"
        self.log_paths.append(log_path)
        env = dict(os.environ)
        env.setdefault("ASAN_OPTIONS", "detect_leaks=1:abort_on_error=0")
        with open(log_path, "wb") as log, open(self._out_path(self.runs), "wb") as out:
            self.proc = subprocess.Popen(DIE_WITH_TESTS + self.command(), stdout=out, stderr=log,
                                         stdin=subprocess.DEVNULL, env=env)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                break
            text = self.stdout_text()
            if "cairn-cloud ready" in text and "SharedAccessKey=" in text and text.endswith("\n"):
                break
            time.sleep(0.02)
        rc = self.proc.poll()
        if rc is not None or "cairn-cloud ready" not in self.stdout_text():
            if rc is None:
                self.proc.kill()
                self.proc.wait()
            self.proc = None
            raise AssertionError(f"cairn-cloud did not become ready (exit {rc}):\n"
                                 f"{self.log_text()[-6000:]}")
        for line in self.stdout_text().splitlines():
            line = line.strip()
            if line.startswith("HostName="):
                self.connection_string = line
        assert self.connection_string, f"no connection string printed:\n{self.stdout_text()}"
        fields = parse_connection_string(self.connection_string)
        assert fields["HostName"] == self.hostname, fields
        assert fields["SharedAccessKeyName"] == SERVICE_POLICY, fields
        self.service_key = fields["SharedAccessKey"]
        for port in (self.mqtt_port, self.https_port):
            wait_for(lambda: port_accepts(port, CLOUD_HOST), what=f"cloud port {port}")
        return self

    # -- REST (the IoT Hub service API)

    def service_token(self, expiry=None, key=None, policy=SERVICE_POLICY, audience=None):
        """`SharedAccessSignature sr={hostname}&sig=…&se=…&skn={policy}`."""
        if expiry is None:
            expiry = int(time.time()) + 3600
        token = sas_token(audience or self.hostname, key or self.service_key, expiry)
        return token + (f"&skn={policy}" if policy else "")

    def request(self, method, target, body=None, raw=None, token=None, headers=None,
                api_version=True, timeout=DEFAULT_TIMEOUT):
        """One REST call; returns a RestReply whatever the status. `token=""` sends no
        Authorization header."""
        if api_version and "api-version=" not in target:
            target += ("&" if "?" in target else "?") + f"api-version={API_VERSION}"
        all_headers = dict(headers or {})
        if token is None:
            token = self.service_token()
        if token:
            all_headers["Authorization"] = token
        return https_request(CLOUD_HOST, self.https_port, method, target, self.ca_path,
                             server_name=self.hostname, body=body, raw=raw, headers=all_headers,
                             timeout=timeout)

    def call(self, method, target, body=None, expect=200, **kw):
        """A REST call that must answer `expect`; returns the JSON body."""
        r = self.request(method, target, body=body, **kw)
        assert r.status == expect, f"{method} {target} -> {r.status}: {r.text[:2000]}"
        return r.json

    def create_device(self, device_id, edge=False):
        return self.call("PUT", f"/devices/{device_id}",
                         {"deviceId": device_id, "capabilities": {"iotEdge": edge}})

    def device_key(self, device_id):
        d = self.call("GET", f"/devices/{device_id}")
        return d["authentication"]["symmetricKey"]["primaryKey"]

    def twin(self, device_id, module_id=None):
        path = f"/twins/{device_id}" + (f"/modules/{module_id}" if module_id else "")
        return self.call("GET", path)

    def update_twin(self, device_id, module_id, patch, etag="*"):
        path = f"/twins/{device_id}" + (f"/modules/{module_id}" if module_id else "")
        return self.request("PATCH", path, body=patch, headers={"If-Match": f'"{etag}"'})

    def set_desired(self, device_id, module_id, desired):
        r = self.update_twin(device_id, module_id, {"properties": {"desired": desired}})
        assert r.status == 200, r
        return r.json

    def invoke(self, device_id, module_id, method_name, payload=None, response_timeout=10,
               connect_timeout=0, timeout=None):
        path = f"/twins/{device_id}" + (f"/modules/{module_id}" if module_id else "") + "/methods"
        body = {"methodName": method_name, "payload": payload,
                "responseTimeoutInSeconds": response_timeout,
                "connectTimeoutInSeconds": connect_timeout}
        return self.request("POST", path, body=body,
                            timeout=timeout or response_timeout + connect_timeout + 15)

    def messages(self, device_id=None, module_id=None, after=0, limit=1000):
        query = [f"after={after}", f"limit={limit}"]
        if device_id:
            query.append(f"deviceId={urllib.parse.quote(device_id, safe='')}")
        if module_id:
            query.append(f"moduleId={urllib.parse.quote(module_id, safe='')}")
        return self.call("GET", "/cairn/messages?" + "&".join(query))

    def all_messages(self, device_id=None, module_id=None):
        """Every stored message (paged through with `after`), in store order."""
        out, after = [], 0
        while True:
            page = self.messages(device_id, module_id, after=after)
            if not page:
                return out
            out += page
            after = page[-1]["seq"]

    def status(self):
        return self.call("GET", "/cairn/status")

    def stored_count(self):
        return self.status()["telemetry"]["stored"]

    def messages_file(self):
        """The JSON lines the file sink wrote, parsed."""
        try:
            text = self.messages_path.read_text()
        except FileNotFoundError:
            return []
        return [json.loads(line) for line in text.splitlines() if line.strip()]

    def cli(self, *args, check=True, timeout=60):
        """`cairn cloud …` against this cloud."""
        r = subprocess.run([str(CAIRN), "cloud", "--connection-string", self.connection_string,
                            "--ca", str(self.ca_path), "--port", str(self.https_port), *args],
                           capture_output=True, text=True, timeout=timeout)
        if check:
            assert r.returncode == 0, (f"cairn cloud {' '.join(args)} -> {r.returncode}\n"
                                       f"stdout: {r.stdout}\nstderr: {r.stderr}")
        return r

    def upstream_config(self, device_key, port=None, **overrides):
        """cairnd config keys for an edge device of this cloud (fast back-off for tests)."""
        cfg = {"upstream.hostname": CLOUD_HOST,
               "upstream.port": port or self.mqtt_port,
               "upstream.https_port": self.https_port,
               "upstream.iothub_hostname": self.hostname,
               "upstream.ca_file": str(self.ca_path),
               "upstream.device_key": device_key,
               "upstream.min_backoff_ms": 200,
               "upstream.max_backoff_secs": 2,
               "upstream.operation_timeout_secs": 10}
        cfg.update({f"upstream.{k}": v for k, v in overrides.items()})
        return cfg


class CloudDevice:
    """A device (or a module with its own key) of a cairn-cloud, in the shape ModuleClient
    expects of a Cairnd: connect with module_client(CloudDevice(cloud, "dev1"), None) for a
    device, or module_client(CloudDevice(cloud, "dev1"), "m1") for a module."""

    host = CLOUD_HOST

    def __init__(self, cloud, device_id, key=None, module_keys=None):
        self.cloud = cloud
        self.device_id = device_id
        self.key = key or cloud.device_key(device_id)
        self.module_keys = dict(module_keys or {})
        self.ca_path = cloud.ca_path
        self.tls_port = cloud.mqtt_port
        self.plain_port = None

    def _identity(self, module):
        return self.device_id if module is None else f"{self.device_id}/{module}"

    def token(self, module, expiry=None, key=None, resource=None):
        if resource is None:
            resource = f"{self.cloud.hostname}/devices/{self.device_id}"
            if module is not None:
                resource += f"/modules/{module}"
        if key is None:
            key = self.key if module is None else self.module_keys[module]
        return sas_token(resource, key, expiry or int(time.time()) + 3600)

    def username(self, module):
        return f"{self.cloud.hostname}/{self._identity(module)}/?api-version={API_VERSION}"

    def client_id(self, module):
        return self._identity(module)

    def events_topic(self, module, props=None):
        base = (f"devices/{self.device_id}/messages/events/" if module is None else
                f"devices/{self.device_id}/modules/{module}/messages/events/")
        return base + encode_bag(props) if props else base


@pytest.fixture
def cloud_factory(tmp_path, request):
    instances = []

    def make(start=True, **kwargs):
        c = CairnCloud(tmp_path / f"cloud{len(instances)}", **kwargs)
        instances.append(c)
        if start:
            c.start()
        return c

    request.node._cloud_instances = instances
    yield make
    errors = []
    for c in instances:
        try:
            if c.running():
                c.stop()
        except AssertionError as e:
            errors.append(str(e))
    if errors:
        pytest.fail("cairn-cloud shutdown problems:\n" + "\n".join(errors))


@pytest.fixture
def cloud(cloud_factory):
    return cloud_factory()


def edge_device(cloud, cairnd_factory, device_id="edge1", proxy=None, upstream=None,
                config=None, **kwargs):
    """Registers `device_id` in `cloud` as an edge device and makes a cairnd for it whose
    upstream link goes to the cloud, or through `proxy` (a TcpProxy) when given. `upstream`:
    more [upstream] keys; other keyword arguments go to cairnd_factory (start=False too)."""
    existing = cloud.request("GET", f"/devices/{device_id}")
    if existing.status == 404:
        cloud.create_device(device_id, edge=True)
    key = cloud.device_key(device_id)
    cfg = cloud.upstream_config(key, port=proxy.port if proxy else None, **(upstream or {}))
    cfg.update(config or {})
    return cairnd_factory(device_id=device_id, config=cfg, **kwargs)


class TcpProxy:
    """A TCP relay on CLOUD_HOST to a cairn-cloud port: takes a device offline while the cloud
    stays up. cut() closes every relayed connection and refuses new ones (accepted, then
    closed at once) until restore(). drop_replies() throws away what the cloud sends while
    the device's bytes still pass (the cloud stores messages whose PUBACKs never arrive, as
    when a link dies with acknowledgements in flight), until cut(). hold_replies() keeps what
    the cloud sends, per connection, and release_replies() passes it on in order: a cloud
    that is slow to acknowledge."""

    def __init__(self, target_port, target_host=CLOUD_HOST):
        self.target = (target_host, target_port)
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind((CLOUD_HOST, 0))
        self.sock.listen(64)
        self.sock.settimeout(0.1)
        self.port = self.sock.getsockname()[1]
        self.relayed = 0   # connections passed on
        self.refused = 0   # connections closed because the proxy was cut
        self._cut = False
        self._drop_replies = False
        self._hold_replies = False
        self.replies_dropped = 0  # bytes from the cloud thrown away by drop_replies()
        self._closed = False
        self._lock = threading.Lock()
        self._pairs = []
        self._thread = threading.Thread(target=self._accept_loop, daemon=True)
        self._thread.start()

    def _accept_loop(self):
        while not self._closed:
            try:
                conn, _ = self.sock.accept()
            except socket.timeout:
                continue
            except OSError:
                return
            with self._lock:
                cut = self._cut
            if cut:
                self.refused += 1
                conn.close()
                continue
            try:
                upstream = socket.create_connection(self.target, timeout=5)
            except OSError:
                conn.close()
                continue
            conn.settimeout(None)
            upstream.settimeout(None)
            with self._lock:
                self._pairs.append((conn, upstream))
                self.relayed += 1
            for src, dst, replies in ((conn, upstream, False), (upstream, conn, True)):
                threading.Thread(target=self._pump, args=(src, dst, replies),
                                 daemon=True).start()

    def _pump(self, src, dst, replies):
        held = []  # replies kept by hold_replies(), in order
        try:
            while True:
                if replies:
                    with self._lock:
                        holding = self._hold_replies
                    if held and not holding:
                        for chunk in held:
                            dst.sendall(chunk)
                        held = []
                    # Wakes up now and then to pass on what was held once it is released.
                    ready, _, _ = select.select([src], [], [], 0.05)
                    if not ready:
                        continue
                data = src.recv(65536)
                if not data:
                    break
                if replies:
                    with self._lock:
                        dropping = self._drop_replies
                        holding = self._hold_replies
                        if dropping:
                            self.replies_dropped += len(data)
                    if dropping:
                        continue
                    if holding or held:
                        held.append(data)
                        continue
                dst.sendall(data)
        except (OSError, ValueError):  # ValueError: select() on a socket cut() closed
            pass
        for s in (src, dst):
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def connections(self):
        with self._lock:
            return len(self._pairs)

    def drop_replies(self):
        with self._lock:
            self._drop_replies = True

    def hold_replies(self):
        with self._lock:
            self._hold_replies = True

    def release_replies(self):
        with self._lock:
            self._hold_replies = False

    def cut(self):
        with self._lock:
            self._cut = True
            self._drop_replies = False
            self._hold_replies = False
            pairs, self._pairs = self._pairs, []
        for pair in pairs:
            for s in pair:
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
                s.close()

    def restore(self):
        with self._lock:
            self._cut = False

    def close(self):
        self._closed = True
        self.cut()
        self._thread.join(2)
        self.sock.close()


@pytest.fixture
def tcp_proxy():
    proxies = []

    def make(target_port, **kwargs):
        p = TcpProxy(target_port, **kwargs)
        proxies.append(p)
        return p

    yield make
    for p in proxies:
        p.close()


# --------------------------------------------------------------------------------------------
# paho module clients

class Received:
    def __init__(self, msg):
        self.topic = msg.topic
        self.payload = msg.payload
        self.qos = msg.qos
        self.dup = bool(msg.dup)
        self.retain = bool(msg.retain)
        parts = msg.topic.split("/")
        # devices/{d}/modules/{m}/inputs/{input}/{bag}
        self.input = parts[5] if len(parts) > 5 and parts[4] == "inputs" else None
        self.props = decode_bag("/".join(parts[6:])) if len(parts) > 6 else {}

    def __repr__(self):
        return f"Received({self.topic!r}, {self.payload[:40]!r})"


class ModuleClient:
    """A paho client logged in as a module, with its own network thread and no reconnects."""

    def __init__(self, cairnd, module, clean_session=True, tls=True, keepalive=60, will=None,
                 password=None, username=None, client_id=None, max_inflight=20):
        self.cairnd = cairnd
        self.module = module
        self.client_id = client_id if client_id is not None else cairnd.client_id(module)
        self.client = mqtt.Client(client_id=self.client_id, clean_session=clean_session,
                                  protocol=mqtt.MQTTv311)
        self.client.max_inflight_messages_set(max_inflight)
        self.client.max_queued_messages_set(0)
        if password is None:
            password = cairnd.token(module)
        self.client.username_pw_set(username if username is not None else cairnd.username(module),
                                    password)
        if tls:
            self.client.tls_set(ca_certs=str(cairnd.ca_path), cert_reqs=ssl.CERT_REQUIRED)
        if will is not None:
            self.client.will_set(**will)
        self.messages = queue.Queue()
        self.received = []
        self.connack = None
        self.session_present = None
        self.connected = threading.Event()
        self.connack_event = threading.Event()
        self.disconnected = threading.Event()
        self.disconnect_rc = None
        self.acked_mids = set()
        self.suback = {}
        # Twin and method traffic ($iothub/...) is kept apart from input messages.
        self.twin_replies = {}           # $rid -> (status, body bytes)
        self.desired = queue.Queue()     # desired patches (parsed JSON), in arrival order
        self.method_calls = queue.Queue()  # (name, payload JSON or None, rid)
        self.method_handler = None
        self.lock = threading.Lock()
        self.client.on_connect = self._on_connect
        self.client.on_disconnect = self._on_disconnect
        self.client.on_message = self._on_message
        self.client.on_publish = self._on_publish
        self.client.on_subscribe = self._on_subscribe
        self.port = cairnd.tls_port if tls else cairnd.plain_port
        self.keepalive = keepalive
        self._stop = threading.Event()
        self._thread = None

    # callbacks run on the network thread
    def _on_connect(self, client, userdata, flags, rc):
        self.connack = rc
        self.session_present = bool(flags.get("session present"))
        if rc == 0:
            self.connected.set()
        self.connack_event.set()

    def _on_disconnect(self, client, userdata, rc):
        self.disconnect_rc = rc
        self.disconnected.set()

    def _on_message(self, client, userdata, msg):
        if msg.topic.startswith("$iothub/"):
            self._on_iothub(msg)
            return
        r = Received(msg)
        with self.lock:
            self.received.append(r)
        self.messages.put(r)

    def _on_publish(self, client, userdata, mid):
        with self.lock:
            self.acked_mids.add(mid)

    def _on_subscribe(self, client, userdata, mid, granted):
        with self.lock:
            self.suback[mid] = list(granted)

    def _loop(self):
        while not self._stop.is_set():
            try:
                rc = self.client.loop(timeout=0.05)
            except (OSError, ssl.SSLError, ValueError):
                rc = mqtt.MQTT_ERR_CONN_LOST  # paho lets some TLS errors escape loop()
            if rc != mqtt.MQTT_ERR_SUCCESS:
                if not self.disconnected.is_set():
                    self.disconnect_rc = rc
                    self.disconnected.set()
                return

    def connect(self, expect_rc=0, timeout=DEFAULT_TIMEOUT):
        self.client.connect(getattr(self.cairnd, "host", HOST), self.port,
                            keepalive=self.keepalive)
        self._thread = threading.Thread(target=self._loop, daemon=True)
        # What loop_start() does: with a network thread registered, publish() from another
        # thread only queues (and wakes the loop) instead of writing to the TLS socket
        # concurrently with the loop, which corrupts TLS records. (paho 1.6; loop_start
        # itself is not used because its loop reconnects after the hub closes a connection.)
        self.client._thread = self._thread
        self._thread.start()
        if not self.connack_event.wait(timeout) and not self.disconnected.is_set():
            raise AssertionError(f"{self.client_id}: no CONNACK within {timeout}s")
        if expect_rc is not None:
            assert self.connack == expect_rc, f"CONNACK {self.connack}, expected {expect_rc}"
        return self

    # -- twin and direct methods (docs/protocol.md §3.4), as the device SDKs do them

    def _on_iothub(self, msg):
        topic = msg.topic
        query = decode_bag(topic.partition("?")[2])
        if topic.startswith("$iothub/twin/res/"):
            status = int(topic[len("$iothub/twin/res/"):].split("/", 1)[0])
            with self.lock:
                self.twin_replies[query.get("$rid")] = (status, msg.payload)
        elif topic.startswith("$iothub/twin/PATCH/properties/desired/"):
            self.desired.put(json.loads(msg.payload))
        elif topic.startswith("$iothub/methods/POST/"):
            name = topic[len("$iothub/methods/POST/"):].split("/", 1)[0]
            payload = json.loads(msg.payload) if msg.payload else None
            rid = query.get("$rid")
            self.method_calls.put((name, payload, rid))
            handler = self.method_handler
            answer = handler(name, payload) if handler else None
            if answer is not None:
                self.answer_method(rid, *answer)

    def answer_method(self, rid, status, payload):
        body = b"" if payload is None else json.dumps(payload).encode()
        self.client.publish(f"$iothub/methods/res/{status}/?$rid={rid}", body, qos=0)

    def enable_twin(self, desired=True, timeout=DEFAULT_TIMEOUT):
        """Subscribes to twin responses (and desired patches), QoS 0 as the SDKs do."""
        self.subscribe("$iothub/twin/res/#", 0, timeout)
        if desired:
            self.subscribe("$iothub/twin/PATCH/properties/desired/#", 0, timeout)

    def serve_methods(self, handler=lambda name, payload: (200, {"echo": payload,
                                                                 "name": name}),
                      timeout=DEFAULT_TIMEOUT):
        """Subscribes to direct methods; `handler(name, payload)` returns (status, payload)
        or None to leave the call unanswered."""
        self.method_handler = handler
        return self.subscribe("$iothub/methods/POST/#", 0, timeout)

    def twin_request(self, kind, body=b"", timeout=DEFAULT_TIMEOUT):
        """kind "GET" or "PATCH" (reported). Returns (status, body bytes)."""
        rid = str(uuid.uuid4())
        prefix = ("$iothub/twin/GET/" if kind == "GET"
                  else "$iothub/twin/PATCH/properties/reported/")
        if not isinstance(body, (bytes, str)):
            body = json.dumps(body)
        self.client.publish(f"{prefix}?$rid={rid}", body, qos=0)
        wait_for(lambda: rid in self.twin_replies or self.disconnected.is_set(), timeout,
                 what=f"{self.client_id}: twin {kind} answer")
        assert rid in self.twin_replies, f"{self.client_id}: disconnected during twin {kind}"
        with self.lock:
            return self.twin_replies.pop(rid)

    def twin_get(self, timeout=DEFAULT_TIMEOUT):
        status, body = self.twin_request("GET", timeout=timeout)
        assert status == 200, f"twin GET answered {status}: {body!r}"
        return json.loads(body)

    def patch_reported(self, patch, timeout=DEFAULT_TIMEOUT):
        """Returns the status (204 when accepted)."""
        return self.twin_request("PATCH", patch, timeout=timeout)[0]

    def expect_desired(self, n=1, timeout=DEFAULT_TIMEOUT):
        out = []
        deadline = time.monotonic() + timeout
        while len(out) < n:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError(f"{self.client_id}: got {len(out)} of {n} desired patches:"
                                     f" {out}")
            try:
                out.append(self.desired.get(timeout=remaining))
            except queue.Empty:
                pass
        return out

    def subscribe_inputs(self, qos=1, timeout=DEFAULT_TIMEOUT):
        return self.subscribe(self.cairnd.inputs_filter(self.module), qos, timeout)

    def subscribe(self, topic, qos=1, timeout=DEFAULT_TIMEOUT):
        rc, mid = self.client.subscribe(topic, qos)
        assert rc == mqtt.MQTT_ERR_SUCCESS, f"subscribe failed locally: {rc}"
        granted = wait_for(lambda: self.suback.get(mid), timeout, what=f"SUBACK for {topic}")
        return granted

    def publish(self, payload, props=None, output=None, qos=1, retain=False, topic=None):
        """Publishes telemetry; returns paho's MessageInfo (mid, wait_for_publish)."""
        bag = dict(props or {})
        if output is not None:
            bag = {"$.on": output, **bag}
        if topic is None:
            topic = self.cairnd.events_topic(self.module, bag)
        info = self.client.publish(topic, payload, qos=qos, retain=retain)
        return info

    def try_publish(self, payload, **kw):
        """publish(), or None when the connection is already gone (the hub closed it)."""
        try:
            return self.publish(payload, **kw)
        except (OSError, ssl.SSLError, ValueError):
            return None

    def publish_expect_disconnect(self, payload, timeout=DEFAULT_TIMEOUT, **kw):
        """Publishes something the hub must answer by closing the connection (no PUBACK)."""
        try:
            info = self.publish(payload, **kw)
        except (OSError, ssl.SSLError):
            info = None  # closed while paho was still writing the packet
        self.wait_disconnected(timeout)
        if info is not None:
            assert info.mid not in self.acked_mids, "the hub acknowledged a refused publish"
        return info

    def publish_acked(self, payload, timeout=DEFAULT_TIMEOUT, **kw):
        info = self.publish(payload, **kw)
        mid = info.mid
        wait_for(lambda: mid in self.acked_mids or self.disconnected.is_set(), timeout,
                 what=f"PUBACK of mid {mid}")
        assert mid in self.acked_mids, f"{self.client_id}: disconnected before PUBACK of {mid}"
        return info

    def expect(self, n=1, timeout=DEFAULT_TIMEOUT):
        """Waits for the next n delivered messages and returns them."""
        out = []
        deadline = time.monotonic() + timeout
        while len(out) < n:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError(f"{self.client_id}: got {len(out)} of {n} messages: {out}")
            try:
                out.append(self.messages.get(timeout=remaining))
            except queue.Empty:
                pass
        return out

    def wait_disconnected(self, timeout=DEFAULT_TIMEOUT):
        assert self.disconnected.wait(timeout), \
            f"{self.client_id}: still connected after {timeout}s"
        return self.disconnect_rc

    def is_connected(self):
        return self.connected.is_set() and not self.disconnected.is_set()

    def disconnect(self):
        """Clean DISCONNECT, then stops the network thread."""
        if self.is_connected():
            self.client.disconnect()
            self.disconnected.wait(5)
        self.close()

    def drop(self):
        """Unclean: closes the TCP connection without DISCONNECT."""
        self._stop.set()
        if self._thread:
            self._thread.join(5)
        sock = self.client.socket()
        if sock is not None:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            sock.close()

    def close(self):
        self._stop.set()
        if self._thread and self._thread is not threading.current_thread():
            self._thread.join(5)
        try:
            sock = self.client.socket()
            if sock is not None:
                sock.close()
        except Exception:
            pass


@pytest.fixture
def module_client():
    clients = []

    def connect(cairnd, module, expect_rc=0, connect=True, **kwargs):
        c = ModuleClient(cairnd, module, **kwargs)
        clients.append(c)
        if connect:
            c.connect(expect_rc=expect_rc)
        return c

    yield connect
    for c in clients:
        c.close()


# --------------------------------------------------------------------------------------------
# raw MQTT over a socket

def _remaining_length(n):
    out = bytearray()
    while True:
        b = n % 128
        n //= 128
        if n:
            b |= 0x80
        out.append(b)
        if not n:
            return bytes(out)


def _str(s):
    b = s.encode() if isinstance(s, str) else s
    return struct.pack("!H", len(b)) + b


def packet(first_byte, body):
    return bytes([first_byte]) + _remaining_length(len(body)) + body


def connect_packet(client_id, username=None, password=None, keepalive=60, clean=True,
                   level=4, will=None, protocol_name="MQTT"):
    flags = 0x02 if clean else 0
    payload = _str(client_id)
    if will is not None:
        flags |= 0x04 | ((will.get("qos", 0) & 3) << 3) | (0x20 if will.get("retain") else 0)
        payload += _str(will["topic"]) + _str(will["payload"])
    if username is not None:
        flags |= 0x80
        payload += _str(username)
    if password is not None:
        flags |= 0x40
        payload += _str(password)
    var = _str(protocol_name) + bytes([level, flags]) + struct.pack("!H", keepalive)
    if level == 5:
        var += b"\x00"  # no properties
    return packet(0x10, var + payload)


def publish_packet(topic, payload, qos=0, packet_id=1, retain=False, dup=False):
    first = 0x30 | (qos << 1) | (1 if retain else 0) | (0x08 if dup else 0)
    body = _str(topic)
    if qos:
        body += struct.pack("!H", packet_id)
    return packet(first, body + (payload.encode() if isinstance(payload, str) else payload))


def subscribe_packet(packet_id, filters):
    body = struct.pack("!H", packet_id)
    for f, q in filters:
        body += _str(f) + bytes([q])
    return packet(0x82, body)


def puback_packet(packet_id):
    return packet(0x40, struct.pack("!H", packet_id))


PINGREQ = b"\xc0\x00"
DISCONNECT = b"\xe0\x00"


class RawMqtt:
    """MQTT by hand over a plain (or TLS) socket, for malformed and edge-case traffic."""

    def __init__(self, cairnd, tls=False):
        self.cairnd = cairnd
        port = cairnd.tls_port if tls else cairnd.plain_port
        sock = socket.create_connection((HOST, port), timeout=10)
        if tls:
            ctx = ssl.create_default_context(cafile=str(cairnd.ca_path))
            sock = ctx.wrap_socket(sock, server_hostname="localhost")
        self.sock = sock
        self.buf = b""
        self.eof = False

    def send(self, data):
        self.sock.sendall(data)

    def _fill(self, timeout):
        self.sock.settimeout(max(timeout, 0.001))
        try:
            chunk = self.sock.recv(65536)
        except socket.timeout:
            return False
        except (ConnectionResetError, BrokenPipeError, ssl.SSLError):
            chunk = b""
        if not chunk:
            self.eof = True
            return False
        self.buf += chunk
        return True

    def _parse(self):
        if len(self.buf) < 2:
            return None
        mult, length, i = 1, 0, 1
        while True:
            if i >= len(self.buf):
                return None
            b = self.buf[i]
            length += (b & 0x7F) * mult
            mult *= 128
            i += 1
            if not b & 0x80:
                break
        if len(self.buf) < i + length:
            return None
        first, body = self.buf[0], self.buf[i:i + length]
        self.buf = self.buf[i + length:]
        return first, body

    def recv_packet(self, timeout=DEFAULT_TIMEOUT):
        """Next packet as (first_byte, body), or None on EOF. Fails on timeout."""
        deadline = time.monotonic() + timeout
        while True:
            p = self._parse()
            if p is not None:
                return p
            if self.eof:
                return None
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError(f"no packet within {timeout}s")
            self._fill(remaining)

    def expect_connack(self, timeout=DEFAULT_TIMEOUT):
        p = self.recv_packet(timeout)
        assert p is not None, "connection closed instead of CONNACK"
        first, body = p
        assert first == 0x20 and len(body) == 2, f"expected CONNACK, got {p}"
        return body[0] & 1, body[1]  # session present, return code

    def wait_closed(self, timeout=DEFAULT_TIMEOUT):
        """Waits for EOF; returns the packets that arrived before it."""
        deadline = time.monotonic() + timeout
        packets = []
        while True:
            p = self._parse()
            if p is not None:
                packets.append(p)
                continue
            if self.eof:
                return packets
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError(f"connection still open after {timeout}s")
            self._fill(remaining)

    def login(self, module, keepalive=60, clean=True, will=None):
        self.send(connect_packet(self.cairnd.client_id(module), self.cairnd.username(module),
                                 self.cairnd.token(module), keepalive=keepalive, clean=clean,
                                 will=will))
        sp, rc = self.expect_connack()
        assert rc == 0, f"CONNACK rc {rc}"
        return sp

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass


@pytest.fixture
def raw_mqtt():
    conns = []

    def open_(cairnd, tls=False):
        c = RawMqtt(cairnd, tls=tls)
        conns.append(c)
        return c

    yield open_
    for c in conns:
        c.close()
