"""The docker runtime against a real engine: Podman's Docker-compatible service with runc and
two local registries (one open, one with a user and password), all started by the fixtures in
containers.py. The C++ side runs as the DockerLive* GoogleTest cases of agent_tests, given the
engine and registries through CAIRN_TEST_* variables; a skipped case is a failure here."""
import os
import re
import subprocess

import pytest

from conftest import BIN_DIR, free_port


def run_live_tests(container_engine, test_registries, tmp_path, gtest_filter):
    binary = BIN_DIR / "agent_tests"
    assert binary.exists(), f"{binary} not built (cmake --build --preset asan --target agent_tests)"
    env = dict(os.environ,
               CAIRN_TEST_DOCKER_SOCKET=str(container_engine.socket),
               CAIRN_TEST_REGISTRY=test_registries.open.address,
               CAIRN_TEST_AUTH_REGISTRY=test_registries.auth.address,
               CAIRN_TEST_REGISTRY_USER=test_registries.auth.username,
               CAIRN_TEST_REGISTRY_PASSWORD=test_registries.auth.password,
               CAIRN_TEST_IMAGE_REPO="cairn-test/busybox:1",
               CAIRN_TEST_TMP=str(tmp_path),
               CAIRN_TEST_FREE_PORT=str(free_port()))
    out = subprocess.run([str(binary), f"--gtest_filter={gtest_filter}", "--gtest_color=no"],
                         env=env, capture_output=True, text=True, timeout=600)
    text = out.stdout + out.stderr
    assert out.returncode == 0, text
    ran = re.search(r"\[  PASSED  \] (\d+) test", text)
    assert ran and int(ran.group(1)) > 0, text
    assert "[  SKIPPED ]" not in text, text
    return text


def test_client_pull_auth_and_errors(container_engine, test_registries, tmp_path):
    run_live_tests(container_engine, test_registries, tmp_path, "DockerLiveClient.*")


def test_runtime_create_options_events_adoption(container_engine, test_registries, tmp_path):
    run_live_tests(container_engine, test_registries, tmp_path, "DockerLiveRuntime.*")


def test_node_sdk_image_runs(container_engine, node_module_image):
    """The image the Node SDK end-to-end test runs as a container module: Debian's node and
    tests/node, from local files only."""
    out = container_engine.podman(
        "run", "--rm", node_module_image, "node", "-e",
        "const {ModuleClient} = require('azure-iot-device');"
        "const {Mqtt} = require('azure-iot-device-mqtt');"
        "console.log(typeof ModuleClient.fromEnvironment, typeof Mqtt)")
    assert out.stdout.strip() == "function function", out.stdout + out.stderr
