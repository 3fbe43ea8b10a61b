#!/usr/bin/python3
"""Soak: cairnd and its cloud link to cairn-cloud for SOAK_MINUTES (default 30) at half the
measured capacity, while modules and the cloud link drop and return at random.

Set-up (real programs on loopback, the release build in build/bin unless CAIRN_BIN_DIR says
otherwise): one cairn-cloud, a TCP relay in front of it that the soak cuts to take the device's
cloud link down, one cairnd (store fsync on, as in production) routing every module message to
$upstream and to the input of a `sink` module. SOAK_SENSORS (default 4) sensor modules publish
QoS 1 from paho clients on cairnd's plain port.

1. Capacity: for SOAK_CAPACITY_SECONDS (default 20) the sensors publish as fast as cairnd
   acknowledges (64 in flight each); the rate of PUBACKs is the capacity.
2. Soak: the sensors publish at half that rate (or SOAK_RATE messages/s). At random, each
   sensor and the sink drop their connection (without DISCONNECT, unacknowledged messages in
   flight) and return after up to 3 s, about every SOAK_DROP_SECS (default 30) seconds each; the
   cloud link is cut for 1-10 s about as often. cairnd's and cairn-cloud's RSS are sampled every
   5 s.
3. Drain: the link is restored and the publishers stop; the soak waits until everything
   acknowledged has reached the cloud and the sink.

Checks, printed as a summary (exit code 1 if one fails):
- zero acknowledged messages lost: every message a sensor got a PUBACK for is in cairn-cloud's
  telemetry store and was received by the sink;
- zero stored twice: no message id (and no body id) appears twice in the telemetry store;
- RSS flat: the median of the last quarter of the samples is within 10 % (+ 8 MiB) of the median
  of the second quarter (the first quarter is warm-up);
- cairnd and cairn-cloud ran throughout.

Every message carries its id in the body and as its message id ($.mid); SOAK_NO_MID_PERCENT
(default 0) sends that share of the messages without a message id: cairn-cloud then tells the
link's resends of those apart by the dedupe key cairnd adds (docs/protocol.md §8.2), and the
summary counts them as resends dropped by key.
"""
import collections
import json
import os
import random
import sqlite3
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
os.environ.setdefault("CAIRN_BIN_DIR", str(REPO / "build" / "bin"))
sys.path.insert(0, str(REPO / "tests" / "integration"))

from conftest import (Cairnd, CairnCloud, ModuleClient, TcpProxy, edge_device,  # noqa: E402
                      wait_for)

MINUTES = float(os.environ.get("SOAK_MINUTES", "30"))
SENSORS = int(os.environ.get("SOAK_SENSORS", "4"))
CAPACITY_SECONDS = float(os.environ.get("SOAK_CAPACITY_SECONDS", "20"))
FIXED_RATE = float(os.environ.get("SOAK_RATE", "0"))
DROP_SECS = float(os.environ.get("SOAK_DROP_SECS", "30"))
NO_MID_PERCENT = float(os.environ.get("SOAK_NO_MID_PERCENT", "0"))
DRAIN_TIMEOUT = 600.0
PAYLOAD_PAD = "x" * 200
ROUTES = {"toCloud": "FROM /messages/* INTO $upstream",
          "toSink": 'FROM /messages/* INTO BrokeredEndpoint("/modules/sink/inputs/in")'}


class QuietCairnd(Cairnd):
    """cairnd at log level info: debug lines for every message would fill the disk."""

    def command(self):
        cmd = super().command()
        cmd[cmd.index("--log-level") + 1] = "info"
        return cmd


def rss_kib(proc):
    try:
        for line in Path(f"/proc/{proc.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except (FileNotFoundError, ProcessLookupError, AttributeError):
        pass
    return None


class Sensor:
    """One sensor module: publishes QoS 1 at a given rate, reconnects after drops, and keeps
    the ids of the messages it got a PUBACK for."""

    def __init__(self, cairnd, name):
        self.cairnd = cairnd
        self.name = name
        self.next_id = 0
        self.acked = set()        # body ids acknowledged by cairnd
        self.unacked_at_drop = 0  # publishes in flight when a connection went away
        self.drops = 0
        self.client = None
        self.pending = {}         # paho mid -> body id, for the current connection

    def connect(self):
        while True:
            c = ModuleClient(self.cairnd, self.name, tls=False, max_inflight=64)
            try:
                c.connect()
                self.client, self.pending = c, {}
                return
            except (AssertionError, OSError):
                c.close()
                time.sleep(0.2)

    def collect(self):
        # paho's message ids are 16-bit and come round again on a connection that lives past
        # 65,535 publishes: an ack is taken out of acked_mids when used, so a later publish
        # with the same id counts only once its own PUBACK came.
        with self.client.lock:
            done = [mid for mid in self.pending if mid in self.client.acked_mids]
            self.client.acked_mids.difference_update(done)
        for mid in done:
            self.acked.add(self.pending.pop(mid))

    def in_flight(self):
        self.collect()
        return len(self.pending)

    def publish_one(self):
        body_id = f"{self.name}-{self.next_id}"
        self.next_id += 1
        props = {"$.ct": "application/json"}
        if random.uniform(0, 100) >= NO_MID_PERCENT:
            props["$.mid"] = body_id
        info = self.client.try_publish(json.dumps({"id": body_id, "pad": PAYLOAD_PAD}).encode(),
                                       output="out", props=props)
        if info is None:
            return False
        self.pending[info.mid] = body_id
        return True

    def drop(self):
        """The connection goes away without DISCONNECT, publishes still in flight."""
        self.collect()
        self.unacked_at_drop += len(self.pending)
        self.drops += 1
        self.client.close()  # closes the socket, no DISCONNECT

    def reconnect_if_needed(self):
        if self.client.disconnected.is_set():
            self.collect()
            self.unacked_at_drop += len(self.pending)
            self.client.close()
            self.connect()


def run_publishers(sensors, rate, seconds, chaos, stop_event):
    """Each sensor on its own thread at rate/len(sensors) messages/s (0: as fast as 64 in
    flight allow). With `chaos`, each drops its connection at random."""
    errors = []

    def loop(sensor):
        try:
            interval = len(sensors) / rate if rate else 0.0
            next_at = time.monotonic()
            end = time.monotonic() + seconds
            next_drop = time.monotonic() + random.expovariate(1 / DROP_SECS)
            while time.monotonic() < end and not stop_event.is_set():
                sensor.reconnect_if_needed()
                if chaos and time.monotonic() >= next_drop:
                    sensor.drop()
                    time.sleep(random.uniform(0, 3))
                    sensor.connect()
                    next_drop = time.monotonic() + random.expovariate(1 / DROP_SECS)
                    next_at = time.monotonic()
                if sensor.in_flight() >= 64:
                    time.sleep(0.001)
                    continue
                if interval:
                    delay = next_at - time.monotonic()
                    if delay > 0:
                        time.sleep(min(delay, 0.05))
                        continue
                    next_at += interval
                sensor.publish_one()
            # Let what is in flight be acknowledged.
            deadline = time.monotonic() + 60
            while sensor.in_flight() and time.monotonic() < deadline:
                if sensor.client.disconnected.is_set():
                    break
                time.sleep(0.05)
            sensor.collect()
        except Exception as e:  # a publisher thread must not die silently
            errors.append(f"{sensor.name}: {e!r}")

    threads = [threading.Thread(target=loop, args=(s,), daemon=True) for s in sensors]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return errors


class Sink:
    """The module the hub delivers every message to; drops and returns at random."""

    def __init__(self, cairnd):
        self.cairnd = cairnd
        self.received = set()
        self.deliveries = 0
        self.drops = 0
        self.client = None
        self.lock = threading.Lock()

    def connect(self):
        while True:
            c = ModuleClient(self.cairnd, "sink", tls=False, clean_session=False)
            c.client.on_message = self._on_message
            try:
                c.connect()
                c.subscribe_inputs()
                with self.lock:
                    self.client = c
                return
            except (AssertionError, OSError):
                c.close()
                time.sleep(0.2)

    def _on_message(self, client, userdata, msg):
        try:
            body_id = json.loads(msg.payload)["id"]
        except (ValueError, KeyError):
            return
        with self.lock:
            self.received.add(body_id)
            self.deliveries += 1

    def drop(self):
        with self.lock:
            c, self.client = self.client, None
        self.drops += 1
        c.close()  # closes the socket, no DISCONNECT: deliveries in flight stay unacknowledged

    def ensure_connected(self):
        with self.lock:
            c = self.client
        if c is None or c.disconnected.is_set():
            if c is not None:
                c.close()
            self.connect()


def chaos_loop(sink, proxy, stop_event, counts):
    """Drops the sink and cuts the cloud link at random until stop_event."""
    next_sink = time.monotonic() + random.expovariate(1 / DROP_SECS)
    next_link = time.monotonic() + random.expovariate(1 / DROP_SECS)
    link_back_at = None
    while not stop_event.wait(0.1):
        now = time.monotonic()
        sink.ensure_connected()
        if now >= next_sink:
            sink.drop()
            time.sleep(random.uniform(0, 3))
            sink.connect()
            next_sink = time.monotonic() + random.expovariate(1 / DROP_SECS)
        if link_back_at is None and now >= next_link:
            proxy.cut()
            counts["link_cuts"] += 1
            link_back_at = now + random.uniform(1, 10)
        elif link_back_at is not None and now >= link_back_at:
            proxy.restore()
            link_back_at = None
            next_link = now + random.expovariate(1 / DROP_SECS)
    proxy.restore()


def sample_rss(procs, samples, stop_event):
    while not stop_event.wait(5):
        for name, daemon in procs.items():
            value = rss_kib(daemon.proc)
            if value is not None:
                samples[name].append(value)


def rss_flat(values):
    """(flat?, second-quarter median MiB, last-quarter median MiB)."""
    if len(values) < 8:
        return True, None, None
    q = len(values) // 4
    base = statistics.median(values[q:2 * q]) / 1024
    last = statistics.median(values[-q:]) / 1024
    return last <= base * 1.10 + 8, base, last


def stored_ids(cloud):
    """(message id -> count, body id -> count) of cairn-cloud's telemetry store."""
    db = sqlite3.connect(f"file:{cloud.home / 'data' / 'cloud.db'}?mode=ro", uri=True,
                         timeout=30)
    by_mid, by_body = collections.Counter(), collections.Counter()
    for mid, body in db.execute("SELECT message_id, body FROM telemetry"):
        if mid:
            by_mid[mid] += 1
        try:
            by_body[json.loads(body)["id"]] += 1
        except (ValueError, KeyError, TypeError):
            pass
    db.close()
    return by_mid, by_body


def main():
    random.seed(int(os.environ.get("SOAK_SEED", time.time())))
    work = Path(tempfile.mkdtemp(prefix="cairn-soak-"))
    cloud = CairnCloud(work / "cloud")
    cloud.start()
    proxy = TcpProxy(cloud.mqtt_port)
    cairnd = edge_device(cloud, lambda **kw: QuietCairnd(work / "edge", **kw), proxy=proxy,
                         routes=ROUTES, config={"store.fsync": True})
    cairnd.start()
    for module in [f"sensor{i}" for i in range(SENSORS)] + ["sink"]:
        cairnd.create_identity(module)
    failures = []
    try:
        sink = Sink(cairnd)
        sink.connect()
        sensors = [Sensor(cairnd, f"sensor{i}") for i in range(SENSORS)]
        for s in sensors:
            s.connect()

        # 1. capacity
        started = time.monotonic()
        errors = run_publishers(sensors, 0, CAPACITY_SECONDS, False, threading.Event())
        elapsed = time.monotonic() - started
        capacity = sum(len(s.acked) for s in sensors) / elapsed
        rate = FIXED_RATE or capacity / 2
        print(f"capacity: {capacity:.0f} msg/s acknowledged ({SENSORS} sensors, 64 in flight "
              f"each, {CAPACITY_SECONDS:.0f} s); soaking at {rate:.0f} msg/s for "
              f"{MINUTES:g} min", flush=True)
        failures += errors

        # 2. soak
        stop = threading.Event()
        counts = collections.Counter()
        samples = collections.defaultdict(list)
        helpers = [threading.Thread(target=chaos_loop, args=(sink, proxy, stop, counts),
                                    daemon=True),
                   threading.Thread(target=sample_rss,
                                    args=({"cairnd": cairnd, "cairn-cloud": cloud}, samples,
                                          stop), daemon=True)]
        for t in helpers:
            t.start()
        soak_started = time.monotonic()
        before = sum(len(s.acked) for s in sensors)
        failures += run_publishers(sensors, rate, MINUTES * 60, True, threading.Event())
        soak_elapsed = time.monotonic() - soak_started
        soak_acked = sum(len(s.acked) for s in sensors) - before
        stop.set()
        for t in helpers:
            t.join()
        sink.ensure_connected()

        # 3. drain
        acked = set().union(*(s.acked for s in sensors))

        def drained():
            with sink.lock:
                at_sink = acked <= sink.received
            return at_sink and cloud.stored_count() >= len(acked)

        drain_started = time.monotonic()
        try:
            wait_for(drained, DRAIN_TIMEOUT, interval=1.0, what="the backlog to drain")
        except AssertionError as e:
            failures.append(str(e))
        drain_secs = time.monotonic() - drain_started

        by_mid, by_body = stored_ids(cloud)
        lost_cloud = acked - set(by_body)
        with sink.lock:
            lost_sink = acked - sink.received
            sink_deliveries = sink.deliveries
        twice_mid = sum(1 for n in by_mid.values() if n > 1)
        twice_body = sum(1 for n in by_body.values() if n > 1)
        status = cloud.status()
        flat = {name: rss_flat(values) for name, values in samples.items()}
        alive = {"cairnd": cairnd.running(), "cairn-cloud": cloud.running()}

        print(f"\nsoak: {soak_elapsed / 60:.1f} min at {rate:.0f} msg/s target, "
              f"{soak_acked / soak_elapsed:.0f} msg/s acknowledged; {SENSORS} sensors + sink, "
              f"fan-out 2 ($upstream, sink)")
        print(f"  published {sum(s.next_id for s in sensors)}, acknowledged {len(acked)}, "
              f"in flight at a drop (not acknowledged) {sum(s.unacked_at_drop for s in sensors)}")
        print(f"  drops: sensors {sum(s.drops for s in sensors)}, sink {sink.drops}, "
              f"cloud link cut {counts['link_cuts']} times; drain after the soak "
              f"{drain_secs:.0f} s")
        telemetry = status["telemetry"]
        print(f"  cloud: stored {len(by_body)} distinct, {sum(by_body.values())} rows; resends "
              f"dropped {telemetry['duplicates']} (by dedupe key alone, no message id: "
              f"{telemetry['duplicatesByKey']}); {NO_MID_PERCENT:g} % sent without a message id")
        print(f"  sink: {len(sink.received)} distinct received in {sink_deliveries} deliveries")
        print(f"  lost (acknowledged, not in the cloud): {len(lost_cloud)}; "
              f"(acknowledged, never at the sink): {len(lost_sink)}")
        print(f"  stored twice: by message id {twice_mid}, by body id {twice_body}")
        for name, (ok, base, last) in flat.items():
            values = samples[name]
            if base is None:
                print(f"  RSS {name}: too few samples")
                continue
            print(f"  RSS {name}: {values[0] / 1024:.1f} MiB at start, median {base:.1f} MiB "
                  f"(2nd quarter) -> {last:.1f} MiB (last quarter), max "
                  f"{max(values) / 1024:.1f} MiB, {len(values)} samples: "
                  f"{'flat' if ok else 'GROWING'}")
        if lost_cloud:
            failures.append(f"{len(lost_cloud)} acknowledged messages not in the cloud, e.g. "
                            f"{sorted(lost_cloud)[:5]}")
        if lost_sink:
            failures.append(f"{len(lost_sink)} acknowledged messages never reached the sink, "
                            f"e.g. {sorted(lost_sink)[:5]}")
        if twice_mid or twice_body:
            failures.append(f"stored twice: {twice_mid} message ids, {twice_body} body ids")
        failures += [f"RSS of {n} grows" for n, (ok, _, _) in flat.items() if not ok]
        failures += [f"{n} stopped during the soak" for n, up in alive.items() if not up]
    finally:
        for daemon in (cairnd, cloud):
            if daemon.running():
                try:
                    daemon.stop()
                except AssertionError as e:
                    failures.append(str(e)[:500])
        proxy.close()
    print("\nsoak: " + ("PASS" if not failures else "FAIL\n  " + "\n  ".join(failures)))
    print(f"(homes and logs in {work})")
    return 0 if not failures else 1


if __name__ == "__main__":
    sys.exit(main())
