"""Container engine fixtures: Podman's Docker-compatible service and local registries.

Loaded from conftest.py (pytest_plugins), so every test file can use:

  container_engine -> ContainerEngine (session): a `podman system service` on a unix socket in a
                      temporary directory, with its own image/container storage (nothing leaks
                      into the host's podman, concurrent runs do not meet), runc as the runtime.
                      .socket, .podman(*args) (the CLI on the same storage), .build_rootfs_image()
  test_registries  -> Registries (session): two Debian `docker-registry` instances on free ports
                      in 127.0.0.1:5000-5009 (the ports scripts/containers.sh marks insecure), one
                      open and one requiring a user and password (htpasswd, bcrypt), each holding
                      the busybox test image pushed by the engine.
  busybox_image    -> "localhost/cairn-test-busybox:1" built from Debian's static busybox (sh,
                      env, httpd, nc, ...) in the engine's storage.
  node_module_image-> "localhost/cairn-test-node:1": Debian's node with the shared libraries it
                      links, plus tests/node (the official Azure IoT SDK packages), so a module
                      written with the Node SDK runs as a container. Built on first use.

No image comes from the internet: images are assembled from host binaries (`podman import` of a
rootfs holding the binaries and the libraries ldd lists). Tests skip, with the reason shown,
only where the machine cannot run containers (no podman/runc/docker-registry, not root, not
Linux). Anything else that fails here is a failure. Set up a machine with `scripts/setup`
(packages) and `scripts/containers.sh` (podman and registry configuration).
"""
import os
import shutil
import socket
import subprocess
import tarfile
import tempfile
import time
import warnings
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
REGISTRY_HOST = "127.0.0.1"
# scripts/containers.sh marks exactly these ports insecure (plain HTTP) for podman.
REGISTRY_PORTS = range(5000, 5010)
REGISTRY_USER = "cairn"
REGISTRY_PASSWORD = "registry-secret-1"
BUSYBOX_IMAGE = "localhost/cairn-test-busybox:1"
NODE_IMAGE = "localhost/cairn-test-node:1"
BUSYBOX_APPLETS = ("sh", "env", "cat", "echo", "sleep", "ls", "mkdir", "printf", "httpd", "nc",
                   "wget", "true", "false", "kill", "trap", "test", "id", "hostname", "date")


def _wait(predicate, timeout, what):
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.05)


def _port_free(port):
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        try:
            s.bind((REGISTRY_HOST, port))
            return True
        except OSError:
            return False


def _port_accepts(port):
    try:
        with socket.create_connection((REGISTRY_HOST, port), timeout=0.5):
            return True
    except OSError:
        return False


def _unix_socket_accepts(path):
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        try:
            s.connect(str(path))
            return True
        except OSError:
            return False


def cannot_run_containers():
    """The reason this machine cannot run the container tests, or None."""
    if not os.path.exists("/proc/self/cgroup"):
        return "not Linux"
    missing = [b for b in ("podman", "runc", "docker-registry") if shutil.which(b) is None]
    if missing:
        return f"{', '.join(missing)} not installed (scripts/setup installs them)"
    if os.geteuid() != 0:
        return "container tests need root (rootful podman with runc)"
    return None


def _ensure_host_config():
    """Runs scripts/containers.sh (idempotent, cheap) so a fresh machine needs no extra step."""
    subprocess.run(["bash", str(REPO / "scripts" / "containers.sh")], check=True,
                   stdout=subprocess.DEVNULL)


def _libraries_of(binary):
    """Absolute paths of the shared libraries (and the loader) `binary` needs, from ldd."""
    out = subprocess.run(["ldd", str(binary)], capture_output=True, text=True)
    if out.returncode != 0:  # static binary
        return []
    libs = []
    for line in out.stdout.splitlines():
        parts = line.split()
        if "=>" in parts:
            target = parts[parts.index("=>") + 1]
            if target.startswith("/"):
                libs.append(target)
        elif parts and parts[0].startswith("/"):
            libs.append(parts[0])  # the dynamic loader
    return libs


class ContainerEngine:
    def __init__(self, base):
        self.base = Path(base)
        self.socket = self.base / "podman.sock"
        # Events go to a file: Podman's default backend is journald, and without a running
        # journal (containers, minimal machines) the events endpoint stays silent.
        self.storage_flags = ["--root", str(self.base / "storage"), "--runroot",
                              str(self.base / "run"), "--tmpdir", str(self.base / "tmp"),
                              "--events-backend", "file"]
        self.log_path = self.base / "service.log"
        self.proc = None

    def podman(self, *args, check=True, timeout=300, input=None):
        """The podman CLI on this engine's storage; returns CompletedProcess (text)."""
        out = subprocess.run(["podman", *self.storage_flags, *args], capture_output=True,
                             text=True, timeout=timeout, input=input)
        if check and out.returncode != 0:
            raise AssertionError(f"podman {' '.join(args)} failed ({out.returncode}):\n"
                                 f"{out.stderr.strip()}")
        return out

    def start(self):
        self.log = open(self.log_path, "w")
        self.proc = subprocess.Popen(
            ["podman", *self.storage_flags, "system", "service", "--time=0",
             f"unix://{self.socket}"], stdout=self.log, stderr=subprocess.STDOUT)
        _wait(lambda: _unix_socket_accepts(self.socket) or self.proc.poll() is not None, 30,
              "podman system service")
        if self.proc.poll() is not None:
            raise AssertionError(f"podman system service exited:\n{self.log_path.read_text()}")

    def stop(self):
        if self.proc is None:
            return
        # Containers first (they hold mounts in the storage directory), then the service.
        self.podman("rm", "--all", "--force", "--time", "0", check=False, timeout=120)
        self.proc.terminate()
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.proc = None
        self.log.close()
        # Overlay layers stay mounted until podman itself unmounts them.
        self.podman("system", "reset", "--force", check=False, timeout=120)

    def build_rootfs_image(self, tag, binaries=(), trees=(), links=(), env=None, cmd=None,
                           workdir="/"):
        """Imports an image whose root holds `binaries` (host paths, copied to the same path,
        with every shared library ldd lists), `trees` ((host_dir, image_dir) pairs copied
        whole) and `links` ((link_path, target) symlinks). No base image is needed."""
        with tempfile.TemporaryDirectory(dir=self.base) as tmp:
            root = Path(tmp) / "rootfs"
            for d in ("tmp", "etc", "bin", "usr/bin"):
                (root / d).mkdir(parents=True, exist_ok=True)
            os.chmod(root / "tmp", 0o1777)
            (root / "etc" / "passwd").write_text("root:x:0:0:root:/:/bin/sh\n")
            (root / "etc" / "group").write_text("root:x:0:\n")
            (root / "etc" / "hosts").write_text("127.0.0.1 localhost\n")
            files = set()
            for b in binaries:
                real = os.path.realpath(b)
                files.add((real, b))
                for lib in _libraries_of(real):
                    files.add((os.path.realpath(lib), lib))
            for real, dest in sorted(files):
                target = root / dest.lstrip("/")
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(real, target)
            for src, dest in trees:
                shutil.copytree(src, root / dest.lstrip("/"), symlinks=True, dirs_exist_ok=True)
            for link, target in links:
                path = root / link.lstrip("/")
                path.parent.mkdir(parents=True, exist_ok=True)
                if not path.exists():
                    path.symlink_to(target)
            archive = Path(tmp) / "rootfs.tar"
            with tarfile.open(archive, "w") as tar:
                tar.add(root, arcname=".")
            changes = []
            for k, v in (env or {}).items():
                changes += ["--change", f"ENV {k}={v}"]
            if cmd:
                changes += ["--change", "CMD " + str(list(cmd)).replace("'", '"')]
            changes += ["--change", f"WORKDIR {workdir}"]
            self.podman("import", *changes, str(archive), tag)
        return tag


class Registry:
    def __init__(self, base, port, auth):
        self.port = port
        self.address = f"{REGISTRY_HOST}:{port}"
        self.auth = auth
        self.dir = Path(base) / f"registry-{port}"
        self.dir.mkdir(parents=True)
        config = ["version: 0.1", "log:", "  level: warn", "storage:", "  filesystem:",
                  f"    rootdirectory: {self.dir / 'data'}", "  delete:", "    enabled: true",
                  "http:", f"  addr: {self.address}"]
        if auth:
            with warnings.catch_warnings():  # crypt: the stdlib's only bcrypt on Debian 12
                warnings.simplefilter("ignore", DeprecationWarning)
                import crypt  # pylint: disable=import-outside-toplevel
                hashed = crypt.crypt(REGISTRY_PASSWORD, crypt.mksalt(crypt.METHOD_BLOWFISH))
            (self.dir / "htpasswd").write_text(f"{REGISTRY_USER}:{hashed}\n")
            config += ["auth:", "  htpasswd:", "    realm: cairn-test",
                       f"    path: {self.dir / 'htpasswd'}"]
        (self.dir / "config.yml").write_text("\n".join(config) + "\n")
        self.log = open(self.dir / "registry.log", "w")
        self.proc = subprocess.Popen(["docker-registry", "serve", str(self.dir / "config.yml")],
                                     stdout=self.log, stderr=subprocess.STDOUT)
        _wait(lambda: _port_accepts(port) or self.proc.poll() is not None, 30,
              f"docker-registry on {self.address}")
        if self.proc.poll() is not None:
            raise AssertionError(f"docker-registry exited:\n{(self.dir / 'registry.log').read_text()}")

    @property
    def username(self):
        return REGISTRY_USER if self.auth else ""

    @property
    def password(self):
        return REGISTRY_PASSWORD if self.auth else ""

    def push(self, engine, local_tag, repo_tag):
        """Pushes `local_tag` from the engine's storage as ADDRESS/repo_tag; returns that name."""
        name = f"{self.address}/{repo_tag}"
        args = ["push", "--tls-verify=false"]
        if self.auth:
            args += ["--creds", f"{REGISTRY_USER}:{REGISTRY_PASSWORD}"]
        engine.podman(*args, local_tag, name)
        return name

    def stop(self):
        self.proc.terminate()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.log.close()


class Registries:
    def __init__(self, open_registry, auth_registry):
        self.open = open_registry
        self.auth = auth_registry


def _free_registry_port(taken):
    for port in REGISTRY_PORTS:
        if port not in taken and _port_free(port):
            return port
    raise AssertionError(f"no free port in {REGISTRY_PORTS.start}-{REGISTRY_PORTS.stop - 1} "
                         "for a test registry (scripts/containers.sh marks those insecure)")


@pytest.fixture(scope="session")
def container_engine(tmp_path_factory):
    reason = cannot_run_containers()
    if reason:
        pytest.skip(f"cannot run containers here: {reason}")
    _ensure_host_config()
    engine = ContainerEngine(tmp_path_factory.mktemp("podman"))
    engine.start()
    try:
        yield engine
    finally:
        engine.stop()


@pytest.fixture(scope="session")
def busybox_image(container_engine):
    links = [(f"/bin/{applet}", "busybox") for applet in BUSYBOX_APPLETS]
    return container_engine.build_rootfs_image(
        BUSYBOX_IMAGE, binaries=["/bin/busybox"], links=links, env={"PATH": "/bin:/usr/bin"},
        cmd=["/bin/sh"])


@pytest.fixture(scope="session")
def test_registries(container_engine, busybox_image, tmp_path_factory):
    base = tmp_path_factory.mktemp("registries")
    started = []
    try:
        open_registry = Registry(base, _free_registry_port(set()), auth=False)
        started.append(open_registry)
        auth_registry = Registry(base, _free_registry_port({open_registry.port}), auth=True)
        started.append(auth_registry)
        for r in started:
            r.push(container_engine, busybox_image, "cairn-test/busybox:1")
        yield Registries(open_registry, auth_registry)
    finally:
        for r in started:
            r.stop()


@pytest.fixture(scope="session")
def node_module_image(container_engine):
    """Debian's node (with its libraries) and tests/node, whose node_modules hold the official
    Azure IoT SDK packages (scripts/setup installs them). The module file is given at run time
    (Cmd), e.g. ["node", "/opt/cairn-node/module.js"]."""
    node = shutil.which("node")
    node_dir = REPO / "tests" / "node"
    if node is None or not (node_dir / "node_modules").is_dir():
        raise AssertionError("node or tests/node/node_modules missing: run scripts/setup")
    links = [(f"/bin/{applet}", "busybox") for applet in BUSYBOX_APPLETS]
    return container_engine.build_rootfs_image(
        NODE_IMAGE, binaries=[node, "/bin/busybox"], trees=[(node_dir, "/opt/cairn-node")],
        links=links, env={"PATH": "/bin:/usr/bin", "NODE_PATH": "/opt/cairn-node/node_modules"},
        cmd=["node", "/opt/cairn-node/module.js"], workdir="/opt/cairn-node")
