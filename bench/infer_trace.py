#!/usr/bin/python3
"""Where a queued request's time goes in cairn-infer, from a scheduler trace.

Reads `perf script` output of a trace of cairn-infer serving requests that go to a model's
worker (a slow model such as PP-OCR det), and prints, per request, the p50 and range of:

  hand-off   the HTTP thread's last recvmsg of the body -> the worker ("run:MODEL") running
  worker     the worker woken by an HTTP thread -> the worker waking an HTTP thread with the
             answer (decode, input copy, run, output copy, encode)
  answer     that wake-up -> the end of the HTTP thread's sendmsg of the answer
  sendmsg    that sendmsg alone (the kernel copying the answer into the connection)

Record it while a client sends requests (cairn-infer names its threads "http", "run:MODEL"):

  perf record -a -o trace.data -e sched:sched_switch,sched:sched_wakeup,\\
syscalls:sys_enter_recvmsg,syscalls:sys_exit_recvmsg,syscalls:sys_enter_sendmsg,\\
syscalls:sys_exit_sendmsg,syscalls:sys_enter_futex -- sleep 1
  /usr/bin/python3 bench/infer_trace.py trace.data --model det
"""
import argparse
import statistics
import subprocess


def events(path):
    """(tid, comm, seconds, event, rest) per line of `perf script`."""
    out = subprocess.run(
        ["perf", "script", "-i", path, "-F", "comm,tid,time,event,trace"],
        check=True, capture_output=True, text=True).stdout
    for line in out.splitlines():
        # "<comm> <tid> <time>: <event>: <trace>"; a comm may hold spaces, the tid never does.
        head, sep, rest = line.partition(": ")
        if not sep:
            continue
        parts = head.rsplit(None, 2)
        if len(parts) != 3:
            continue
        comm, tid, time = parts
        event, _, trace = rest.partition(": ")
        try:
            yield int(tid), comm.strip(), float(time.rstrip(":")), event.strip(), trace
        except ValueError:
            continue


def summary(name, values):
    if not values:
        return f"{name:10s} no samples"
    values = sorted(values)
    return (f"{name:10s} p50 {statistics.median(values):8.1f} µs  "
            f"({values[0]:.1f}–{values[-1]:.1f} µs, {len(values)} requests)")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("trace", help="perf.data recorded as shown in --help")
    ap.add_argument("--model", required=True, help="the model's name (its worker: run:MODEL)")
    a = ap.parse_args()
    worker = ("run:" + a.model)[:15]  # Linux keeps 15 bytes of a thread name
    last_body_read = None  # time of the HTTP thread's last recvmsg exit
    woken_at = None        # the worker's wake-up by an HTTP thread
    answered_at = None     # the worker's wake-up of an HTTP thread
    send_entered = None
    handoff, spans, answers, sends = [], [], [], []
    for tid, comm, t, event, trace in events(a.trace):
        returned_bytes = not trace.strip().startswith("0xf")  # errors read as 0xfff...
        if comm == "http" and event == "syscalls:sys_exit_recvmsg" and returned_bytes:
            last_body_read = t
        elif event == "sched:sched_wakeup" and f"comm={worker} " in trace and comm == "http":
            woken_at = t
        elif event == "sched:sched_switch" and f"next_comm={worker} " in trace:
            if woken_at is not None and last_body_read is not None:
                handoff.append((t - last_body_read) * 1e6)
                last_body_read = None
        elif event == "sched:sched_wakeup" and comm == worker and "comm=http " in trace:
            if woken_at is not None:
                spans.append((t - woken_at) * 1e6)
                answered_at = t
            woken_at = None
        elif event == "syscalls:sys_enter_sendmsg" and comm == "http" and answered_at is not None:
            send_entered = t
        elif event == "syscalls:sys_exit_sendmsg" and comm == "http" and answered_at is not None:
            answers.append((t - answered_at) * 1e6)
            if send_entered is not None:
                sends.append((t - send_entered) * 1e6)
            answered_at = send_entered = None
    print(summary("hand-off", handoff))
    print(summary("worker", spans))
    print(summary("answer", answers))
    print(summary("sendmsg", sends))


if __name__ == "__main__":
    main()
