#!/usr/bin/python3
"""Whether this machine takes its CPUs away: stalls seen by processes that only read the clock.

Starts --processes busy processes (one per CPU by default), each reading CLOCK_MONOTONIC in a
loop for --seconds with no system call in between, and prints every gap between two reads
longer than --gap-ms: time the process was not running although it never waited for anything.
On a machine of its own such a process sees none beyond the odd interrupt; a virtual machine
whose host takes its virtual CPUs away shows gaps of milliseconds, often at a regular spacing.
Latency tails of the benchmarks on such a machine include them (docs/benchmarks.md).

Each gap is printed with the phase of its end within --period-ms (100 ms, the default period
of Linux's CPU bandwidth control): gaps that all end at one phase are a host that stops the
whole machine until its next period, because the machine used up its CPU quota.

--flushes-per-s N adds a process that writes 16 KiB and calls fdatasync N times a second in a
file under --dir (as a durable broker's commits do). On a virtual machine the host's work for
each flush may count against the same quota. With --processes 0 only that process runs: a
disk load to put beside another program for --seconds.

  /usr/bin/python3 bench/cpu_stalls.py                         # every CPU busy
  /usr/bin/python3 bench/cpu_stalls.py --processes 1           # one CPU busy
  /usr/bin/python3 bench/cpu_stalls.py --flushes-per-s 1000    # every CPU busy, and flushes
  /usr/bin/python3 bench/cpu_stalls.py --processes 0 --flushes-per-s 1000 --seconds 15 &
"""
import argparse
import collections
import multiprocessing
import os
import sys
import tempfile
import time


def watch(index, seconds, gap_ns, out):
    gaps = []
    start = last = time.monotonic_ns()
    end = start + int(seconds * 1e9)
    while last < end:
        now = time.monotonic_ns()
        if now - last > gap_ns:
            gaps.append((now, now - last))
        last = now
    out.put((index, start, gaps))


def flush(per_s, seconds, directory, out):
    # 16 KiB rewritten in place: the file does not grow, so each fdatasync is one data write and
    # one cache flush, without a journal commit for a new size.
    block = b"\xa5" * 16384
    with tempfile.TemporaryFile(dir=directory) as f:
        fd = f.fileno()
        start = time.monotonic()
        done = 0
        while time.monotonic() - start < seconds:
            due = start + done / per_s
            ahead = due - time.monotonic()
            if ahead > 0:
                time.sleep(ahead)
            os.pwrite(fd, block, (done % 64) * len(block))
            os.fdatasync(fd)
            done += 1
    out.put(done / seconds)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 epilog=__doc__.split("\n\n", 1)[1],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--processes", type=int, default=os.cpu_count(),
                    help="busy processes (default: one per CPU)")
    ap.add_argument("--seconds", type=float, default=2.0)
    ap.add_argument("--gap-ms", type=float, default=0.5, help="report gaps longer than this")
    ap.add_argument("--period-ms", type=float, default=100.0,
                    help="print each gap's end as a phase within this period")
    ap.add_argument("--flushes-per-s", type=float, default=0.0,
                    help="also write and fdatasync 16 KiB this often (0: no disk load)")
    ap.add_argument("--dir", default="/var/tmp", help="where the flushed file lives")
    a = ap.parse_args()
    if a.processes < 0 or a.seconds <= 0 or a.gap_ms <= 0 or a.period_ms <= 0 \
            or a.flushes_per_s < 0:
        ap.error("--processes, --flushes-per-s must be >= 0; --seconds, --gap-ms, "
                 "--period-ms must be > 0")
    if a.processes == 0 and a.flushes_per_s == 0:
        ap.error("nothing to run: --processes 0 needs --flushes-per-s")
    if a.flushes_per_s and not os.access(a.dir, os.W_OK):
        ap.error(f"--dir {a.dir} is not a writable directory")

    out = multiprocessing.Queue()
    flushed = multiprocessing.Queue()
    workers = [multiprocessing.Process(target=watch, args=(i, a.seconds, int(a.gap_ms * 1e6), out))
               for i in range(a.processes)]
    if a.flushes_per_s:
        workers.append(multiprocessing.Process(
            target=flush, args=(a.flushes_per_s, a.seconds, a.dir, flushed)))
    for w in workers:
        w.start()
    results = sorted(out.get() for _ in range(a.processes))
    if a.flushes_per_s:
        print(f"flushes: {flushed.get():.0f} a second (asked for {a.flushes_per_s:.0f})")
    for w in workers:
        w.join()

    period_ns = int(a.period_ms * 1e6)
    buckets = max(1, round(a.period_ms))  # phases counted by the millisecond
    phases = collections.Counter()
    for index, start, gaps in results:
        total = sum(ns for _, ns in gaps) / 1e6
        print(f"process {index}: {len(gaps)} gaps over {a.gap_ms} ms in {a.seconds} s, "
              f"{total:.1f} ms in all")
        for end, ns in gaps:
            phase = (end % period_ns) / 1e6
            phases[round(phase) % buckets] += 1
            print(f"  at {(end - ns - start) / 1e9:7.3f} s: {ns / 1e6:6.2f} ms, "
                  f"ending {phase:5.1f} ms into a {a.period_ms:g} ms period")
    if phases:
        # Gaps that end within 1 ms of the commonest phase (the period wraps around): the
        # host's period boundary.
        def near(p):
            return sum(phases[q % buckets] for q in (p - 1, p, p + 1))
        peak = max(phases, key=near)
        print(f"{near(peak)} of {sum(phases.values())} gaps end {peak - 1}-{peak + 1} ms into "
              f"the period")
    sys.stdout.flush()


if __name__ == "__main__":
    main()
