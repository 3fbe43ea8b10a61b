#!/usr/bin/python3
"""Whether this machine takes its CPUs away: stalls seen by processes that only read the clock.

Starts --processes busy processes (one per CPU by default), each reading CLOCK_MONOTONIC in a
loop for --seconds with no system call in between, and prints every gap between two reads
longer than --gap-ms: time the process was not running although it never waited for anything.
On a machine of its own such a process sees none beyond the odd interrupt; a virtual machine
whose host takes its virtual CPUs away shows gaps of milliseconds, often at a regular spacing.
Latency tails of the benchmarks on such a machine include them (docs/benchmarks.md).

  /usr/bin/python3 bench/cpu_stalls.py                  # every CPU busy
  /usr/bin/python3 bench/cpu_stalls.py --processes 1    # one CPU busy
"""
import argparse
import multiprocessing
import os
import time


def watch(index, seconds, gap_ns, out):
    gaps = []
    start = last = time.monotonic_ns()
    end = start + int(seconds * 1e9)
    while last < end:
        now = time.monotonic_ns()
        if now - last > gap_ns:
            gaps.append(((last - start) / 1e9, (now - last) / 1e6))
        last = now
    out.put((index, gaps))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 epilog=__doc__.split("\n\n", 1)[1],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--processes", type=int, default=os.cpu_count())
    ap.add_argument("--seconds", type=float, default=2.0)
    ap.add_argument("--gap-ms", type=float, default=0.5)
    a = ap.parse_args()
    out = multiprocessing.Queue()
    workers = [multiprocessing.Process(target=watch, args=(i, a.seconds, int(a.gap_ms * 1e6), out))
               for i in range(a.processes)]
    for w in workers:
        w.start()
    results = sorted(out.get() for _ in workers)
    for w in workers:
        w.join()
    for index, gaps in results:
        total = sum(ms for _, ms in gaps)
        print(f"process {index}: {len(gaps)} gaps over {a.gap_ms} ms in {a.seconds} s, "
              f"{total:.1f} ms in all")
        for at, ms in gaps:
            print(f"  at {at:7.3f} s: {ms:.2f} ms")


if __name__ == "__main__":
    main()
