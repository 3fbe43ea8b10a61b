"""Failure isolation and liveness (docs/failure_policy.md): no input from a module stops
cairnd, a session that fails is closed and cleaned up like any other, a message that can
never be delivered is refused or dead-lettered instead of wedging its queue.

Each test here reproduces a way the hub used to stop or wedge, with real clients.
"""
import errno
import json
import os
import sqlite3
import struct
import subprocess
import threading
import urllib.parse

import pytest

from conftest import (HOST, CloudDevice, RawMqtt, https_request, publish_packet, puback_packet,
                      subscribe_packet, wait_for)


def gateway_call(cairnd, caller, target_path_segment, body, timeout=40):
    """ModuleClient.invokeMethod by hand; `target_path_segment` goes into the URL as is."""
    headers = {"x-ms-edge-moduleId": f"{cairnd.device_id}/{caller}",
               "Authorization": cairnd.token(caller)}
    return https_request(HOST, cairnd.https_port, "POST",
                         f"/twins/{cairnd.device_id}/modules/{target_path_segment}/methods",
                         cairnd.ca_path, server_name="localhost", body=body, headers=headers,
                         timeout=timeout)


def parse_publish(first, body):
    """(topic, packet id or None, payload, dup) of a PUBLISH from RawMqtt.recv_packet."""
    assert first >> 4 == 3, f"expected PUBLISH, got first byte {first:#x}"
    qos = (first >> 1) & 3
    (n,) = struct.unpack("!H", body[:2])
    topic = body[2:2 + n].decode("utf-8", errors="replace")
    rest = body[2 + n:]
    packet_id = None
    if qos:
        (packet_id,) = struct.unpack("!H", rest[:2])
        rest = rest[2:]
    return topic, packet_id, rest, bool(first & 0x08)


def next_publish(conn, timeout=15.0):
    """The next PUBLISH on a raw connection, skipping SUBACKs and other packets."""
    while True:
        p = conn.recv_packet(timeout)
        assert p is not None, "connection closed while waiting for a PUBLISH"
        if p[0] >> 4 == 3:
            return parse_publish(*p)


def raw_module(cairnd, module, filters):
    conn = RawMqtt(cairnd)
    conn.login(module)
    conn.send(subscribe_packet(1, filters))
    while True:
        p = conn.recv_packet()
        assert p is not None, "closed before SUBACK"
        if p[0] == 0x90:
            assert 0x80 not in p[1][2:], f"subscription refused: {p}"
            return conn


# --------------------------------------------------------------------------------------------
# Finding 1: a module id that is not UTF-8 in the method gateway's URL


def test_method_to_non_utf8_module_id_does_not_stop_cairnd(cairnd):
    # The connect timeout's 404 names the target; the strict JSON writer threw on its bytes
    # out of the event loop and cairnd died.
    r = gateway_call(cairnd, "caller", "%FF", {"methodName": "x", "connectTimeoutInSeconds": 1})
    assert r.status == 404, r
    assert "\ufffd" in r.json["message"], r.json
    assert cairnd.running(), cairnd.log_text()[-3000:]
    # And it still serves: a second call, a status read.
    r = gateway_call(cairnd, "caller", "%FE%FF", {"methodName": "y"})
    assert r.status == 404, r
    assert cairnd.status()["deviceId"] == cairnd.device_id


# --------------------------------------------------------------------------------------------
# Finding 2: a failure inside a session closes it like a disconnect (detach, will, unregister)


def test_session_failure_returns_inflight_deliveries(cairnd, module_client):
    sensor = module_client(cairnd, "sensor")
    filt = raw_module(cairnd, "filter", [(cairnd.inputs_filter("filter"), 1),
                                         ("$iothub/methods/POST/#", 0)])
    for i in range(3):
        sensor.publish_acked(f"m{i}", output="temp")
    first = [next_publish(filt) for _ in range(3)]
    assert [p[2] for p in first] == [b"m0", b"m1", b"m2"]
    # Not acknowledged: the three stay in flight on this session.

    # A direct method the module answers with bytes that are not UTF-8 (it used to throw
    # inside the session, which then ended without closing: its deliveries stayed in flight
    # on a dead session forever).
    result = {}

    def invoke():
        result["reply"] = gateway_call(cairnd, "caller", "filter",
                                       {"methodName": "poke", "responseTimeoutInSeconds": 10})

    caller = threading.Thread(target=invoke)
    caller.start()
    topic, _, _, _ = next_publish(filt)
    assert topic.startswith("$iothub/methods/POST/poke/"), topic
    rid = urllib.parse.parse_qs(topic.partition("?")[2])["$rid"][0]
    filt.send(publish_packet(f"$iothub/methods/res/200/?$rid={rid}", b"\xff\xfe not utf-8"))
    caller.join(30)
    assert result["reply"].status == 200, result["reply"]
    assert cairnd.running()

    # The module reconnects: the three unacknowledged messages come again, marked DUP.
    filt.close()
    filt = raw_module(cairnd, "filter", [(cairnd.inputs_filter("filter"), 1)])
    again = [next_publish(filt) for _ in range(3)]
    assert [p[2] for p in again] == [b"m0", b"m1", b"m2"]
    assert all(p[3] for p in again), "redeliveries must carry DUP"
    for p in again:
        filt.send(puback_packet(p[1]))
    # Entries after them are delivered and, once acknowledged, deleted: the queue empties.
    sensor.publish_acked("m3", output="temp")
    last = next_publish(filt)
    assert last[2] == b"m3"
    filt.send(puback_packet(last[1]))
    wait_for(lambda: cairnd.queue_length("filter/in") == 0, what="filter/in to empty")
    filt.close()


# --------------------------------------------------------------------------------------------
# Finding 3: a topic that outgrows MQTT's 65,535 bytes when re-encoded for delivery


def test_topic_too_long_after_reencoding_is_refused_and_queue_keeps_flowing(cairnd,
                                                                            module_client):
    filt = module_client(cairnd, "filter")
    filt.subscribe_inputs()
    sensor = module_client(cairnd, "sensor")
    # 30,000 bytes of topic as sent (a valid PUBLISH); URL-encoded for the filter module every
    # 'é' becomes %C3%A9: about 90,000 bytes, which a PUBLISH cannot carry. It used to be stored
    # and sent with its length truncated to 16 bits: a malformed packet, redelivered forever.
    big = "é" * 15000
    topic = cairnd.events_topic("sensor") + "%24.on=temp&big=" + big
    assert len(topic.encode()) < 65535
    sensor.publish_expect_disconnect(b"poison", topic=topic)
    status = cairnd.status()
    assert status["counters"]["messagesUndeliverable"] == 1
    assert "over the MQTT limit" in cairnd.log_text()
    # Nothing was stored, and what comes next is delivered as usual.
    assert cairnd.queue_length("filter/in") == 0
    sensor = module_client(cairnd, "sensor")
    sensor.publish_acked(b"after", output="temp")
    (got,) = filt.expect(1)
    assert got.payload == b"after"
    assert filt.is_connected()
    wait_for(lambda: cairnd.queue_length("filter/in") == 0, what="filter/in to empty")
    assert "cairn_messages_refused_total{reason=\"undeliverable_topic\"} 1" in metrics(cairnd)


def metrics(cairnd):
    import socket as _socket
    path = str(cairnd.home / "run" / "mgmt.sock")
    with _socket.socket(_socket.AF_UNIX, _socket.SOCK_STREAM) as s:
        s.settimeout(15)
        s.connect(path)
        s.sendall(b"GET /metrics HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        data = b""
        while True:
            chunk = s.recv(65536)
            if not chunk:
                break
            data += chunk
    return data.decode(errors="replace")


# --------------------------------------------------------------------------------------------
# Finding 6: a disk that fills refuses with a reason and recovers by itself


@pytest.fixture
def small_disk(tmp_path):
    """A 3 MiB tmpfs mounted (as root) where cairnd keeps its store; unmounted afterwards."""
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    mounts = []

    def mount(path):
        path.mkdir(parents=True, exist_ok=True)
        r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=3m", "tmpfs", str(path)],
                           capture_output=True, text=True)
        if r.returncode != 0:
            pytest.skip(f"cannot mount a tmpfs: {r.stderr.strip()}")
        mounts.append(path)
        return path

    yield mount
    for path in mounts:
        subprocess.run(["umount", "-l", str(path)], check=False)


def fill(path):
    """Writes a file until the file system is full; returns its path."""
    filler = path / "filler"
    chunk = b"\0" * 65536
    with open(filler, "wb", buffering=0) as f:
        try:
            while True:
                f.write(chunk)
        except OSError as e:
            assert e.errno == errno.ENOSPC, e
    with open(filler, "ab", buffering=0) as f:
        try:
            while True:
                f.write(b"\0" * 512)
        except OSError:
            pass
    return filler


def test_full_disk_refuses_with_a_reason_and_recovers(cairnd_factory, module_client, small_disk):
    cairnd = cairnd_factory(start=False)
    data = small_disk(cairnd.home / "data")
    cairnd.start()
    sensor = module_client(cairnd, "sensor")
    acked = []
    for i in range(5):
        sensor.publish_acked(f"before-{i}".encode(), output="temp")
        acked.append(f"before-{i}".encode())

    filler = fill(data)
    # A message the store cannot write: refused (no PUBACK, the connection closes), with the
    # reason in the log and in the status; cairnd stays up.
    sensor.publish_expect_disconnect(b"x" * 200_000, output="temp")
    assert cairnd.running(), cairnd.log_text()[-3000:]
    store = cairnd.status()["store"]
    assert store["refusing"] is True, store
    assert "full" in store["refusalReason"], store
    assert store["healthy"] is True  # transient: not the sticky failure
    assert "cairn_store_refusing 1" in metrics(cairnd)
    # Still refusing while full.
    sensor = module_client(cairnd, "sensor")
    sensor.publish_expect_disconnect(b"y" * 200_000, output="temp")

    # Space comes back: the next publish is stored, without a restart.
    filler.unlink()
    sensor = module_client(cairnd, "sensor")
    sensor.publish_acked(b"after", output="temp")
    acked.append(b"after")
    store = cairnd.status()["store"]
    assert store["refusing"] is False and store["healthy"] is True, store
    assert store["refusedWritesTotal"] >= 2

    # No acknowledged message was lost: the filter gets every one, in order.
    filt = module_client(cairnd, "filter")
    filt.subscribe_inputs()
    got = [m.payload for m in filt.expect(len(acked))]
    assert got == acked
    cairnd.stop()


# --------------------------------------------------------------------------------------------
# Poison messages: a module that never acknowledges one message (it crashes on it, every time)


def test_message_failing_delivery_n_times_is_dead_lettered_and_the_queue_moves_on(
        cairnd_factory, module_client):
    cairnd = cairnd_factory(config={"mqtt.max_delivery_attempts": 3})
    sensor = module_client(cairnd, "sensor")
    sensor.publish_acked(b"poison", output="temp")
    sensor.publish_acked(b"after", output="temp")
    # The module receives the poison message and goes away without acknowledging it, three
    # times. It used to get the same message first on every reconnect, forever.
    for attempt in range(3):
        filt = raw_module(cairnd, "filter", [(cairnd.inputs_filter("filter"), 1)])
        topic, packet_id, payload, dup = next_publish(filt)
        assert payload == b"poison", (attempt, payload)
        filt.close()
        wait_for(lambda: cairnd.status()["endpoints"]["filter/in"]["failedDeliveries"]
                 == attempt + 1, what=f"failed delivery {attempt + 1} counted")
    filt = raw_module(cairnd, "filter", [(cairnd.inputs_filter("filter"), 1)])
    topic, packet_id, payload, dup = next_publish(filt)
    assert payload == b"after"
    filt.send(puback_packet(packet_id))
    wait_for(lambda: cairnd.queue_length("filter/in") == 0, what="filter/in to empty")
    status = cairnd.status()
    assert status["counters"]["messagesDeadLettered"] == 1, status["counters"]
    assert status["endpoints"]["filter/in"]["deadLettered"] == 1
    # The user can see what was set aside, and why.
    listed = json.loads(cairnd.cli("deadletters").stdout)
    assert listed["total"] == 1, listed
    [dead] = listed["deadLetters"]
    assert dead["endpoint"] == "filter/in"
    assert "delivery failed 3 times" in dead["reason"], dead
    assert dead["messageBytes"] > len(b"poison")
    assert "cairn_messages_dead_lettered_total 1" in metrics(cairnd)
    assert "cairn_delivery_failures_total 3" in metrics(cairnd)
    filt.close()


def test_dead_letters_are_capped_the_oldest_dropped_and_counted(cairnd_factory, module_client):
    cairnd = cairnd_factory(config={"mqtt.max_delivery_attempts": 1, "store.max_dead_letters": 2})
    sensor = module_client(cairnd, "sensor")
    poison = [f"poison-{i}".encode() for i in range(3)]
    for payload in poison + [b"after"]:
        sensor.publish_acked(payload, output="temp")
    # One failed delivery each: the module takes the message and goes away unacknowledged; on
    # its next connection that message is dead-lettered and the next one is sent.
    for i, payload in enumerate(poison):
        filt = raw_module(cairnd, "filter", [(cairnd.inputs_filter("filter"), 1)])
        assert next_publish(filt)[2] == payload
        filt.close()
        wait_for(lambda: cairnd.status()["endpoints"]["filter/in"]["failedDeliveries"] == i + 1,
                 what=f"failed delivery {i + 1} counted")
    filt = raw_module(cairnd, "filter", [(cairnd.inputs_filter("filter"), 1)])
    _, packet_id, payload, _ = next_publish(filt)
    assert payload == b"after"
    filt.send(puback_packet(packet_id))
    filt.close()

    # Three dead letters, the table holds two: the oldest went, counted.
    counters = cairnd.status()["counters"]
    assert counters["messagesDeadLettered"] == 3, counters
    assert counters["deadLetters"] == 2 and counters["deadLettersDropped"] == 1, counters
    text = metrics(cairnd)
    assert "cairn_dead_letters 2" in text and "cairn_dead_letters_dropped_total 1" in text
    listed = json.loads(cairnd.cli("deadletters").stdout)
    assert listed["total"] == 2, listed
    assert "delivery failed 1 times" in listed["deadLetters"][0]["reason"]

    # After a restart the cap still holds: the table is read back at start.
    cairnd.restart()
    assert cairnd.status()["counters"]["deadLetters"] == 2
    sensor = module_client(cairnd, "sensor")
    sensor.publish_acked(b"poison-3", output="temp")
    filt = raw_module(cairnd, "filter", [(cairnd.inputs_filter("filter"), 1)])
    assert next_publish(filt)[2] == b"poison-3"
    filt.close()
    wait_for(lambda: cairnd.status()["endpoints"]["filter/in"]["failedDeliveries"] == 1,
             what="failed delivery counted after the restart")
    filt = raw_module(cairnd, "filter", [(cairnd.inputs_filter("filter"), 1)])
    wait_for(lambda: cairnd.status()["counters"]["deadLettersDropped"] == 1
             and cairnd.status()["counters"]["deadLetters"] == 2
             and cairnd.status()["counters"]["messagesDeadLettered"] == 1,
             what="the fourth dead letter to replace the oldest")
    filt.close()
    listed = json.loads(cairnd.cli("deadletters").stdout)
    assert listed["total"] == 2, listed
    # Keys end in "-{priority}-{seq}": poison-2 (seq 3) and poison-3 (seq 5) are kept.
    seqs = sorted(int(d["key"].rsplit("-", 1)[1]) for d in listed["deadLetters"])
    assert seqs == [3, 5], listed
    cairnd.stop()


# --------------------------------------------------------------------------------------------
# Finding 5: cairn-cloud's telemetry ingestion and store errors


def cloud_writer(cloud):
    return cloud.status().get("telemetryWriter", {})


def lock_cloud_db(cloud):
    """Another process's write transaction on cloud.db, held past SQLite's busy timeout."""
    db = sqlite3.connect(str(cloud.home / "data" / "cloud.db"), timeout=30, isolation_level=None)
    db.execute("BEGIN IMMEDIATE")
    return db


def test_cloud_keeps_storing_after_its_store_was_locked(cloud, module_client):
    cloud.create_device("dev1")
    dev = module_client(CloudDevice(cloud, "dev1"), None)
    dev.publish_acked(b"before", props={"$.mid": "before"})
    wait_for(lambda: cloud.stored_count() == 1, what="the first message stored")
    db = lock_cloud_db(cloud)
    try:
        # Accepted (PUBACKed) into the ingest queue while the store cannot write.
        for i in range(20):
            dev.publish_acked(f"during-{i}".encode(), props={"$.mid": f"d{i}"})
        wait_for(lambda: cloud_writer(cloud).get("failing") is True, timeout=60,
                 what="the writer to report the locked store")
        writer = cloud_writer(cloud)
        assert "locked" in writer["lastFailure"], writer
        assert writer["storeFailures"] >= 1
    finally:
        db.execute("ROLLBACK")
        db.close()
    # The writer retries by itself: every acknowledged message is stored, once, in order. It
    # used to drop the failed batch without acknowledging it and never try again.
    wait_for(lambda: cloud.stored_count() == 21, timeout=60, what="all 21 messages stored")
    ids = [m["messageId"] for m in cloud.all_messages("dev1")]
    assert ids == ["before"] + [f"d{i}" for i in range(20)]
    dev.publish_acked(b"later", props={"$.mid": "later"})
    wait_for(lambda: cloud.stored_count() == 22, what="a later message stored")
    writer = cloud_writer(cloud)
    assert writer["failing"] is False and writer["waiting"] == 0, writer


def test_cloud_ingest_queue_is_capped_and_withholds_puback_when_full(cloud_factory,
                                                                    module_client):
    cloud = cloud_factory(extra_args=["--max-queue-bytes", "100000"])
    cloud.create_device("dev1")
    dev = module_client(CloudDevice(cloud, "dev1"), None)
    db = lock_cloud_db(cloud)
    acked = []
    try:
        # Nothing drains while the store is locked: the queue fills up to its cap, and then
        # the publisher gets no PUBACK (the connection closes; the client resends later).
        for i in range(100):
            info = dev.publish(b"x" * 8000, props={"$.mid": f"m{i}"})
            wait_for(lambda: info.mid in dev.acked_mids or dev.disconnected.is_set(),
                     what=f"PUBACK or refusal of m{i}")
            if info.mid not in dev.acked_mids:
                break
            acked.append(f"m{i}")
        assert dev.disconnected.is_set(), "the queue took 100 messages past its cap"
        assert 5 <= len(acked) <= 12, acked
        assert "store full" in cloud.log_text(), cloud.log_text()[-3000:]
        queue = cloud.status()["ingestQueue"]
        assert queue["rejectedFullTotal"] >= 1 and queue["maxBytes"] == 100000, queue
        assert queue["storedBytes"] <= 100000, queue
    finally:
        db.execute("ROLLBACK")
        db.close()
    # The writer drains the queue into the store; publishing works again.
    wait_for(lambda: cloud.stored_count() == len(acked), timeout=60,
             what="every acknowledged message stored")
    dev = module_client(CloudDevice(cloud, "dev1"), None)
    dev.publish_acked(b"again", props={"$.mid": "again"})
    wait_for(lambda: cloud.stored_count() == len(acked) + 1, what="a new message stored")
    assert [m["messageId"] for m in cloud.all_messages("dev1")] == acked + ["again"]


def test_cloud_dead_letters_a_message_its_store_refuses_and_stores_the_rest(cloud,
                                                                           module_client):
    cloud.create_device("dev1")
    # The store refuses this one message for good (a constraint added by another process).
    db = sqlite3.connect(str(cloud.home / "data" / "cloud.db"), timeout=30, isolation_level=None)
    db.execute("CREATE TRIGGER refuse_poison BEFORE INSERT ON telemetry "
               "WHEN NEW.message_id = 'poison' BEGIN SELECT RAISE(ABORT, 'poison refused'); END")
    db.close()
    dev = module_client(CloudDevice(cloud, "dev1"), None)
    dev.publish_acked(b"poison", props={"$.mid": "poison"})
    # Messages after it are stored while it is retried; after failing on its own three times
    # while others were stored it is dead-lettered. It used to wedge the whole ingestion.
    sent = []
    for i in range(10):
        dev.publish_acked(f"m{i}".encode(), props={"$.mid": f"m{i}"})
        sent.append(f"m{i}")
        wait_for(lambda: cloud.stored_count() == len(sent), what=f"m{i} stored")
        if cloud.status().get("messagesDeadLettered") == 1:
            break
    status = cloud.status()
    assert status["messagesDeadLettered"] == 1, status
    assert status["telemetryWriter"]["deadLettered"] == 1, status
    assert status["telemetryWriter"]["waiting"] == 0, status
    assert 3 <= len(sent) <= 5, sent
    assert [m["messageId"] for m in cloud.all_messages("dev1")] == sent
    assert "poison refused" in cloud.log_text()
    listed = cloud.call("GET", "/cairn/deadletters")
    assert listed["total"] == 1, listed
    [dead] = listed["deadLetters"]
    assert dead["endpoint"] == "$upstream" and dead["messageId"] == "poison", dead
    assert "poison refused" in dead["reason"], dead


def set_telemetry_rootpage(cloud, rootpage=None):
    """Points the telemetry table of cloud.db at page `rootpage` (None: a page that does not
    exist, which SQLite reports as corruption); returns the page it pointed at before."""
    db = sqlite3.connect(str(cloud.home / "data" / "cloud.db"), timeout=30, isolation_level=None)
    try:
        db.execute("PRAGMA writable_schema = ON")  # also reads a schema it cannot parse
        (before,) = db.execute(
            "SELECT rootpage FROM sqlite_schema WHERE name = 'telemetry'").fetchone()
        (version,) = db.execute("PRAGMA schema_version").fetchone()
        db.execute("UPDATE sqlite_schema SET rootpage = ? WHERE name = 'telemetry'",
                   (rootpage if rootpage is not None else 99999,))
        db.execute(f"PRAGMA schema_version = {version + 1}")  # other connections reload it
        db.execute("PRAGMA writable_schema = OFF")
    finally:
        db.close()
    return before


def test_cloud_exits_on_a_corrupt_store_and_loses_nothing_acknowledged(cloud, module_client):
    cloud.create_device("dev1")
    dev = module_client(CloudDevice(cloud, "dev1"), None)
    dev.publish_acked(b"first", props={"$.mid": "first"})
    wait_for(lambda: cloud.stored_count() == 1, what="the first message stored")
    rootpage = set_telemetry_rootpage(cloud)
    # Accepted into the ingest queue (committed there before the writer sees it); writing it
    # to the corrupt store is fatal: cairn-cloud exits (code 1) for its supervisor instead of
    # going on with a store nobody can trust. The exit may beat the PUBACK onto the wire.
    dev.publish(b"second", props={"$.mid": "second"})
    rc = cloud.proc.wait(timeout=60)
    assert rc == 1, cloud.log_text()[-3000:]
    assert "FATAL: the cloud store cannot be trusted" in cloud.log_text()
    cloud.stop(expect_rc=1)
    # Repaired and restarted, the acknowledged message waiting in the queue is stored.
    set_telemetry_rootpage(cloud, rootpage)
    cloud.start()
    wait_for(lambda: cloud.stored_count() == 2, timeout=30, what="the queued message stored")
    assert [m["messageId"] for m in cloud.all_messages("dev1")] == ["first", "second"]


def test_cloud_full_disk_holds_messages_back_and_recovers(cloud_factory, module_client,
                                                          small_disk):
    cloud = cloud_factory(start=False)
    data = small_disk(cloud.home / "data")
    cloud.start()
    cloud.create_device("dev1")
    dev = module_client(CloudDevice(cloud, "dev1"), None)
    acked = []
    for i in range(3):
        dev.publish_acked(f"before-{i}".encode(), props={"$.mid": f"b{i}"})
        acked.append(f"b{i}")
    wait_for(lambda: cloud.stored_count() == 3, what="the first messages stored")
    # Messages accepted into the queue while the writer is held back by a lock; then the disk
    # fills and the lock goes: the writer's own writes now fail for want of space.
    db = lock_cloud_db(cloud)
    try:
        for i in range(5):
            dev.publish_acked(b"q" * 20000, props={"$.mid": f"q{i}"})
            acked.append(f"q{i}")
        filler = fill(data)
    finally:
        db.execute("ROLLBACK")
        db.close()
    wait_for(lambda: "full" in cloud_writer(cloud).get("lastFailure", ""), timeout=60,
             what="the writer to report the full disk")
    assert cloud.stored_count() == 3
    # Neither the queue nor the store can write: publishes are refused or held back (never
    # acknowledged and then lost), and cairn-cloud stays up.
    for i in range(20):
        if not dev.is_connected():
            dev = module_client(CloudDevice(cloud, "dev1"), None)
        info = dev.try_publish(b"x" * 20000, props={"$.mid": f"f{i}"})
        if info is None:
            continue
        wait_for(lambda: info.mid in dev.acked_mids or dev.disconnected.is_set(),
                 what=f"PUBACK or refusal of f{i}")
        if info.mid in dev.acked_mids:
            acked.append(f"f{i}")
    assert cloud.running(), cloud.log_text()[-3000:]
    assert "full" in cloud.log_text()
    # Space comes back: everything acknowledged is stored, once, without a restart.
    filler.unlink()
    dev = module_client(CloudDevice(cloud, "dev1"), None)
    dev.publish_acked(b"after", props={"$.mid": "after"})
    acked.append("after")
    wait_for(lambda: cloud.stored_count() == len(acked), timeout=60,
             what=f"{len(acked)} acknowledged messages stored")
    assert [m["messageId"] for m in cloud.all_messages("dev1")] == acked
    assert cloud.status()["telemetryWriter"]["failing"] is False
