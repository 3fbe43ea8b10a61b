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

The engine and the images are podman_engine.py's (shared with bench/agent_containers.py).
No image comes from the internet: images are assembled from host binaries (`podman import` of a
rootfs holding the binaries and the libraries ldd lists). Tests skip, with the reason shown,
only where the machine cannot run containers (no podman/runc/docker-registry, not root, not
Linux). Anything else that fails here is a failure. Set up a machine with `scripts/setup`
(packages) and `scripts/containers.sh` (podman and registry configuration).
"""
import socket
import subprocess
import warnings
from pathlib import Path

import pytest

from conftest import DIE_WITH_TESTS
from podman_engine import (ContainerEngine, build_node_module_image, busybox_links,
                           cannot_run_containers, ensure_host_config, terminate, wait_until)

REGISTRY_HOST = "127.0.0.1"
# scripts/containers.sh marks exactly these ports insecure (plain HTTP) for podman.
REGISTRY_PORTS = range(5000, 5010)
REGISTRY_USER = "cairn"
REGISTRY_PASSWORD = "registry-secret-1"
BUSYBOX_IMAGE = "localhost/cairn-test-busybox:1"


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
        self.proc = subprocess.Popen(
            [*DIE_WITH_TESTS, "docker-registry", "serve", str(self.dir / "config.yml")],
            stdout=self.log, stderr=subprocess.STDOUT)
        wait_until(lambda: _port_accepts(port) or self.proc.poll() is not None, 30,
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
        terminate(self.proc, grace=10)
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
    ensure_host_config()
    engine = ContainerEngine(tmp_path_factory.mktemp("podman"))
    engine.start()
    try:
        yield engine
    finally:
        engine.stop()


@pytest.fixture(scope="session")
def busybox_image(container_engine):
    return container_engine.build_rootfs_image(
        BUSYBOX_IMAGE, binaries=["/bin/busybox"], links=busybox_links(), env={"PATH": "/bin:/usr/bin"},
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
    """NODE_IMAGE (podman_engine.build_node_module_image), built on first use."""
    return build_node_module_image(container_engine)
