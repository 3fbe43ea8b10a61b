"""Podman's Docker-compatible service on private storage, and images built from host files.

Shared by the container test fixtures (tests/integration/containers.py) and the container
benchmark (bench/agent_containers.py); no pytest here.

  ContainerEngine(base)      `podman system service` on BASE/podman.sock with its own
                             image/container storage under BASE (nothing leaks into the host's
                             podman, concurrent runs do not meet), runc as the runtime. .start(),
                             .stop(), .socket, .podman(*args) (the CLI on the same storage),
                             .build_rootfs_image()
  build_node_module_image(e) "localhost/cairn-test-node:1": Debian's node with the shared
                             libraries it links, busybox, and tests/node (the official Azure IoT
                             SDK packages), so a module written with the Node SDK runs as a
                             container.
  cannot_run_containers()    why this machine cannot, or None.
  ensure_host_config()       scripts/containers.sh (idempotent).

No image comes from the internet: images are assembled from host binaries (`podman import` of a
rootfs holding the binaries and the libraries ldd lists).
"""
import os
import shutil
import socket
import subprocess
import tarfile
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
NODE_IMAGE = "localhost/cairn-test-node:1"
BUSYBOX_APPLETS = ("sh", "env", "cat", "echo", "sleep", "ls", "mkdir", "printf", "httpd", "nc",
                   "wget", "true", "false", "kill", "trap", "test", "id", "hostname", "date")


def wait_until(predicate, timeout, what):
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.05)


def terminate(proc, grace):
    """SIGTERM, then SIGKILL if `proc` has not exited after `grace` seconds; waits for it."""
    proc.terminate()
    try:
        proc.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def _unix_socket_accepts(path):
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        try:
            s.connect(str(path))
            return True
        except OSError:
            return False


def cannot_run_containers(need_registry=True):
    """The reason this machine cannot run containers (with a local registry when
    `need_registry`), or None."""
    if not os.path.exists("/proc/self/cgroup"):
        return "not Linux"
    needed = ("podman", "runc") + (("docker-registry",) if need_registry else ())
    missing = [b for b in needed if shutil.which(b) is None]
    if missing:
        return f"{', '.join(missing)} not installed (scripts/setup installs them)"
    if os.geteuid() != 0:
        return "container tests need root (rootful podman with runc)"
    return None


def ensure_host_config():
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
        # SIGTERM if the test run or bench dies first: the service stops with it, as every other
        # program the tests start does (conftest.DIE_WITH_TESTS), and exits cleanly.
        self.proc = subprocess.Popen(
            ["setpriv", "--pdeathsig", "TERM", "--",
             "podman", *self.storage_flags, "system", "service", "--time=0",
             f"unix://{self.socket}"], stdout=self.log, stderr=subprocess.STDOUT)
        wait_until(lambda: _unix_socket_accepts(self.socket) or self.proc.poll() is not None, 30,
              "podman system service")
        if self.proc.poll() is not None:
            raise AssertionError(f"podman system service exited:\n{self.log_path.read_text()}")

    def stop(self):
        if self.proc is None:
            return
        # Containers first (they hold mounts in the storage directory), then the service.
        self.podman("rm", "--all", "--force", "--time", "0", check=False, timeout=120)
        terminate(self.proc, grace=30)
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


def busybox_links():
    """(link, target) pairs that make /bin/APPLET run the image's /bin/busybox."""
    return [(f"/bin/{applet}", "busybox") for applet in BUSYBOX_APPLETS]


def build_node_module_image(engine):
    """Debian's node (with its libraries) and tests/node, whose node_modules hold the official
    Azure IoT SDK packages (scripts/setup installs them). The module file is given at run time
    (Cmd), e.g. ["node", "/opt/cairn-node/module.js"]. Returns the tag."""
    node = shutil.which("node")
    node_dir = REPO / "tests" / "node"
    if node is None or not (node_dir / "node_modules").is_dir():
        raise AssertionError("node or tests/node/node_modules missing: run scripts/setup")
    return engine.build_rootfs_image(
        NODE_IMAGE, binaries=[node, "/bin/busybox"], trees=[(node_dir, "/opt/cairn-node")],
        links=busybox_links(), env={"PATH": "/bin:/usr/bin",
                                    "NODE_PATH": "/opt/cairn-node/node_modules"},
        cmd=["node", "/opt/cairn-node/module.js"], workdir="/opt/cairn-node")
