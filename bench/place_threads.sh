#!/bin/bash
# Runs a broker with its threads placed by hand, for the placement experiments of
# docs/benchmarks.md. Given to cairn-bench as the program to start (--cairnd, --mosquitto), it
# starts PLACE_PROGRAM with the arguments it was given, then, for its first two seconds (while
# the program creates its threads, which inherit the main thread's CPUs), places each thread it
# sees:
#
#   PLACE_MAIN_CPUS    the CPUs of the main thread (cairnd's network thread), e.g. 0
#   PLACE_OTHER_CPUS   the CPUs of every other thread (cairnd's store writer...), e.g. 1
#   PLACE_BATCH        optional: the name of a thread to run at SCHED_BATCH (store-writer)
#
#   PLACE_PROGRAM=build/bin/cairnd PLACE_MAIN_CPUS=0 PLACE_OTHER_CPUS=1 \
#     taskset -c 1 build/bin/cairn-bench mqtt --target cairn --cairnd bench/place_threads.sh \
#     --tls --inflight 100 --rate 11000 --publishers 1 --subscribers 1 --warmup 6 --duration 4
#   PLACE_PROGRAM=/usr/sbin/mosquitto PLACE_MAIN_CPUS=0 \
#     taskset -c 1 build/bin/cairn-bench mqtt --target mosquitto --mosquitto bench/place_threads.sh ...
#
# SIGTERM and SIGINT are passed on; the exit status is the program's.
set -u
if [ "${1:-}" = "--help" ] && [ -z "${PLACE_PROGRAM:-}" ]; then
  sed -n '2,18p' "$0" | sed 's/^# \{0,1\}//'
  exit 0
fi
: "${PLACE_PROGRAM:?set PLACE_PROGRAM to the program to run (see --help)}"
"$PLACE_PROGRAM" "$@" &
pid=$!
trap 'kill -TERM $pid 2>/dev/null' TERM INT
# Each thread is placed once, when first seen: a fork per thread, not per look.
declare -A placed
until_us=$(( ${EPOCHREALTIME/./} + 2000000 ))
while kill -0 $pid 2>/dev/null && (( ${EPOCHREALTIME/./} < until_us )); do
  for task in /proc/$pid/task/*; do
    tid=${task##*/}
    [ -d "$task" ] && [ -z "${placed[$tid]:-}" ] || continue
    placed[$tid]=1
    if [ "$tid" = "$pid" ]; then
      [ -n "${PLACE_MAIN_CPUS:-}" ] && taskset -p -c "$PLACE_MAIN_CPUS" "$tid" >/dev/null 2>&1
    else
      [ -n "${PLACE_OTHER_CPUS:-}" ] && taskset -p -c "$PLACE_OTHER_CPUS" "$tid" >/dev/null 2>&1
      if [ -n "${PLACE_BATCH:-}" ] && [ "$(cat "$task/comm" 2>/dev/null)" = "$PLACE_BATCH" ]; then
        chrt -b -p 0 "$tid" >/dev/null 2>&1
      fi
    fi
  done
  sleep 0.01
done
wait $pid
status=$?
# wait returns early when a trapped signal arrives: wait for the program itself then.
while kill -0 $pid 2>/dev/null; do wait $pid; status=$?; done
exit $status
