"""cairn-bench runs end to end, briefly, so the benchmarks `make bench` and docs/benchmarks.md rely
on keep working: mqtt, infer, link, agent (process modules) and model-fetch, on the programs of
this build, each for well under a second of measuring. model-delta is left out (it runs the
generic delta tools over real models for minutes), and so are container modules (they need a
container engine; tests/integration/test_docker_runtime.py covers them). Figures are not checked
(a test never asserts a time); that the run completes, reports no error and leaves no sanitizer
report is.
"""
import json
import re
import subprocess
from pathlib import Path

import pytest

from conftest import BIN_DIR, DIE_WITH_TESTS, REPO, SANITIZER_MARKERS

BENCH = BIN_DIR / "cairn-bench"
if not BENCH.exists():
    pytest.skip(f"{BENCH} not built (CAIRN_BUILD_BENCH=OFF)", allow_module_level=True)


def run_bench(*args, timeout=240):
    """Runs `cairn-bench ARGS --keep-dir`; returns (stdout, the last JSON line or None). Fails on
    a non-zero exit or on a sanitizer report in the output or in any log of the work directory,
    which it then removes."""
    for _ in range(3):
        proc = subprocess.run([*DIE_WITH_TESTS, str(BENCH), *args, "--keep-dir"],
                              capture_output=True, text=True, timeout=timeout)
        logs = _logs_of_work_dir(proc.stderr)
        # The bench picks free ports below the kernel's ephemeral range, which only a program
        # naming a port takes; should one of them still take it before the bench's server binds
        # it, run the bench again.
        if proc.returncode == 0 or "Address already in use" not in proc.stdout + proc.stderr:
            break
    everything = proc.stdout + proc.stderr + logs
    for marker in SANITIZER_MARKERS:
        assert marker not in everything, everything[-8000:]
    assert proc.returncode == 0, (
        f"exit {proc.returncode}\n{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}")
    last = [line for line in proc.stdout.splitlines() if line.startswith("{")]
    return proc.stdout, json.loads(last[-1]) if last else None


def _logs_of_work_dir(stderr):
    """The logs in the work directory the bench kept (it says where on stderr), which is then
    removed."""
    kept = re.search(r"^\[cairn-bench\] kept (\S+)$", stderr, re.MULTILINE)
    if not kept or not Path(kept.group(1)).is_dir():
        return ""
    work = Path(kept.group(1))
    logs = "".join(f"\n--- {log}\n" + log.read_text(errors="replace")
                   for log in work.rglob("*.log"))
    subprocess.run(["rm", "-rf", str(work)], check=False)
    return logs


def test_mqtt_runs_against_both_brokers():
    _, report = run_bench("mqtt", "--publishers", "1", "--subscribers", "1", "--warmup", "0.3",
                          "--duration", "0.5", "--startup-samples", "1",
                          "--cairnd", str(BIN_DIR / "cairnd"), "--cairn", str(BIN_DIR / "cairn"))
    assert report["ok"] is True, report
    for workload in report["workloads"]:
        for target, result in workload["results"].items():
            assert result["error"] is None, (target, result)
            assert result["received"] > 0, (target, result)


def test_infer_runs_every_mode_on_the_tiny_model():
    out, _ = run_bench("infer", "--model", "tiny", "--concurrency", "1", "--duration", "0.2",
                       "--interleaved-rounds", "1", "--cairn-infer", str(BIN_DIR / "cairn-infer"),
                       "--source-dir", str(REPO))
    assert "errors: none" in out, out[-4000:]
    for mode in ("raw ONNX Runtime", "cairn-infer v2 binary", "cairn-infer v2 JSON",
                 "cairn-infer /score", "Node + onnxruntime-node /score"):
        assert f"| {mode}" in out, (mode, out[-4000:])
    assert "bare server p50" in out, out[-4000:]


def test_link_runs_against_cairn_cloud():
    _, report = run_bench("link", "--messages", "300", "--reported-patches", "20",
                          "--desired-patches", "20", "--cairnd", str(BIN_DIR / "cairnd"),
                          "--cairn-cloud", str(BIN_DIR / "cairn-cloud"))
    assert report["ok"] is True, report


def test_agent_deploys_process_modules():
    _, report = run_bench("agent", "--modules", "1", "--idle-modules", "1", "--rounds", "1",
                          "--cairnd", str(BIN_DIR / "cairnd"))
    assert report["ok"] is True, report


def test_model_fetch_runs():
    run_bench("model-fetch", "--model-mib", "1", "--repeats", "1")


def test_cpu_stalls_runs_with_and_without_its_disk_load(tmp_path):
    script = REPO / "bench" / "cpu_stalls.py"
    proc = subprocess.run(["/usr/bin/python3", str(script), "--processes", "1", "--seconds",
                           "0.3", "--flushes-per-s", "50", "--dir", str(tmp_path)],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert re.search(r"^flushes: \d+ a second \(asked for 50\)$", proc.stdout, re.M), proc.stdout
    assert re.search(r"^process 0: \d+ gaps over 0.5 ms in 0.3 s", proc.stdout, re.M), proc.stdout
    assert list(tmp_path.iterdir()) == []  # the flushed file is gone
    # Nothing to run is refused with a message, not a traceback.
    proc = subprocess.run(["/usr/bin/python3", str(script), "--processes", "0"],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2 and "needs --flushes-per-s" in proc.stderr, proc.stderr
