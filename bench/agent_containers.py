#!/usr/bin/python3
"""The agent's deployment figures with the docker runtime beside the process runtime.

Starts a private Podman Docker-compatible service (its own storage in a temporary directory,
runc), builds the Node SDK module image from host files (tests/integration/podman_engine.py,
the same engine and image the container tests use; no image comes from the internet), then runs

    cairn-bench agent --docker-socket SOCKET --image localhost/cairn-test-node:1 --rounds N

which deploys 3 Node SDK modules as processes and then as containers, round after round, and
times the engine alone creating and starting 3 containers of the image through its API. Last,
`podman run -d` of 3 containers of the same image (the CLI on the same storage), N rounds: the
engine's own command-line start time as a baseline.

Skips (exit 0, with the reason) where this machine cannot run containers: not Linux, podman or
runc missing, not root. Any other failure fails.

    /usr/bin/python3 bench/agent_containers.py [--bin-dir build/bin] [--rounds 5]
                                              [-- more cairn-bench agent arguments]
"""
import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests" / "integration"))
from podman_engine import (ContainerEngine, build_node_module_image,  # noqa: E402
                           cannot_run_containers, ensure_host_config)

IDLE_NODE = ["node", "-e", "setInterval(() => {}, 1 << 30)"]


def median(values):
    """The median as cairn-bench takes it (the upper one of an even count)."""
    return sorted(values)[len(values) // 2]


def summary(values):
    """As cairn-bench prints a series: the first round, the median and the spread."""
    return (f"first {values[0]:.3f} s, median {median(values):.3f} s "
            f"({min(values):.3f}-{max(values):.3f}) over {len(values)} rounds")


def time_podman_run(engine, image, count, rounds):
    """Seconds for `podman run -d` of `count` containers of `image`, one after the other."""
    times = []
    for r in range(rounds):
        names = [f"bench-cli-r{r}c{i}" for i in range(count)]
        t0 = time.monotonic()
        for name in names:
            engine.podman("run", "-d", "--network", "host", "--name", name, image, *IDLE_NODE)
        times.append(time.monotonic() - t0)
        print(f"[agent_containers] round {r}: podman run -d x{count} took {times[-1]:.3f} s",
              file=sys.stderr, flush=True)
        engine.podman("rm", "--force", "--time", "0", *names)
    return times


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--bin-dir", default=str(REPO / "build" / "bin"),
                        help="where cairn-bench and cairnd are (default: build/bin)")
    parser.add_argument("--rounds", type=int, default=5, help="deployments timed per runtime")
    parser.add_argument("--modules", type=int, default=3, help="modules per deployment")
    parser.add_argument("bench_args", nargs="*", help="passed on to cairn-bench agent")
    args = parser.parse_args()

    reason = cannot_run_containers(need_registry=False)
    if reason:
        print(f"cairn-bench agent with containers: skipped, this machine cannot run containers "
              f"({reason})")
        return 0
    ensure_host_config()
    with tempfile.TemporaryDirectory(prefix="cairn-bench-containers-") as base:
        engine = ContainerEngine(base)
        engine.start()
        try:
            t0 = time.monotonic()
            image = build_node_module_image(engine)
            build_s = time.monotonic() - t0
            print(f"[agent_containers] {image} built from host files in {build_s:.1f} s",
                  file=sys.stderr, flush=True)
            bench = subprocess.run(
                [str(Path(args.bin_dir) / "cairn-bench"), "agent", "--docker-socket",
                 str(engine.socket), "--image", image, "--rounds", str(args.rounds),
                 "--modules", str(args.modules), *args.bench_args],
                stdout=subprocess.PIPE, text=True)
            sys.stdout.write(bench.stdout)
            if bench.returncode != 0:
                print(f"cairn-bench agent failed ({bench.returncode}); podman service log: "
                      f"{engine.log_path}", file=sys.stderr)
                return bench.returncode
            report = json.loads(bench.stdout.strip().splitlines()[-1])
            cli = time_podman_run(engine, image, args.modules, args.rounds)
        finally:
            engine.stop()
    deployed = median(report["containerDeployToRunningSeconds"])
    cli_median = median(cli)
    print(f"  podman run -d x{args.modules} (CLI, after the rounds above): {summary(cli)}\n"
          f"  container deploy -> running / podman run -d (medians): "
          f"x{deployed / cli_median:.2f}")
    print(json.dumps({"bench": "agent-containers", "image": image,
                      "imageBuildSeconds": round(build_s, 3), "podmanRunSeconds": cli,
                      "containerDeployToRunningSeconds":
                          report["containerDeployToRunningSeconds"],
                      "ok": True}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
