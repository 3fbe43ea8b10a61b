"""Store and forward (docs/protocol.md §8.2): telemetry routed INTO $upstream waits on disk
while the cloud is away, survives kill -9 of cairnd (and of cairn-cloud), and arrives when the
cloud is back: every message, in order per sender, stored once (cairn-cloud drops re-sends by
messageId, and by the dedupe key cairnd adds to every message, so also those of modules that
set no messageId). Messages older than their route's TTL are dropped and counted instead.

Publishers are paho clients on cairnd's plain port, QoS 1 with many publishes in flight.
"""
import collections
import json

import pytest

from conftest import edge_device, wait_for

UPSTREAM = "$upstream"
DEDUPE_KEY = "cairn-dedupe-key"  # the application property of cairnd's dedupe key
ROUTES = {"toCloud": "FROM /messages/* INTO $upstream"}
# Generous: 10 000 messages through a debug cairnd and cairn-cloud on a shared 2-core box.
DRAIN_TIMEOUT = 120.0


def offline_edge(cloud_factory, cairnd_factory, routes=ROUTES, config=None):
    """A cloud that knows the edge device but is stopped, and a running cairnd for it."""
    cloud = cloud_factory()
    edge = edge_device(cloud, cairnd_factory, routes=routes, start=False, config=config)
    cloud.stop()
    edge.start()
    return cloud, edge


def sender(edge, module_client, module):
    return module_client(edge, module, tls=False, max_inflight=200)


def publish(client, module, seqs, output="out", with_ids=True):
    """Publishes {"seq": i} with messageId "{module}-{i}" (none without `with_ids`) for each i,
    all in flight at once, and waits until every one is acknowledged (on disk)."""
    mids = set()
    for i in seqs:
        props = {"$.ct": "application/json"}
        if with_ids:
            props["$.mid"] = f"{module}-{i}"
        info = client.publish(json.dumps({"seq": i}).encode(), output=output, props=props)
        mids.add(info.mid)

    def all_acked():
        with client.lock:
            return mids <= client.acked_mids or client.disconnected.is_set()

    wait_for(all_acked, DRAIN_TIMEOUT, interval=0.05, what=f"PUBACKs of {len(mids)} messages")
    with client.lock:
        missing = len(mids - client.acked_mids)
    assert missing == 0, f"{module}: {missing} publishes not acknowledged (disconnected)"


def wait_stored(cloud, count, timeout=DRAIN_TIMEOUT, interval=0.2):
    wait_for(lambda: cloud.stored_count() >= count, timeout, interval=interval,
             what=f"{count} messages stored in the cloud (have {cloud.stored_count()})")


def check_arrived(cloud, device_id, expected):
    """expected: {module: n}. Every message arrived once, in order per sender, in the store
    and in the JSON-lines file."""
    stored = cloud.all_messages(device_id=device_id)
    by_module = collections.defaultdict(list)
    for m in stored:
        by_module[m["moduleId"]].append(m)
    assert sorted(by_module) == sorted(expected)
    for module, n in expected.items():
        got = by_module[module]
        assert [m["messageId"] for m in got] == [f"{module}-{i}" for i in range(n)], \
            f"{module}: messages missing, duplicated or out of order"
        assert [json.loads(m["body"])["seq"] for m in got] == list(range(n))
    seqs = [m["seq"] for m in stored]
    assert seqs == sorted(seqs)
    lines = cloud.messages_file()
    counts = collections.Counter((m["moduleId"], m["messageId"]) for m in lines)
    assert len(counts) == sum(expected.values())
    twice = [k for k, c in counts.items() if c > 1]
    assert not twice, f"stored twice: {twice[:10]}"


def test_10000_messages_while_cloud_down_with_kill9(cloud_factory, cairnd_factory,
                                                    module_client):
    cloud, edge = offline_edge(cloud_factory, cairnd_factory)
    half = 2500
    a, b = sender(edge, module_client, "sensorA"), sender(edge, module_client, "sensorB")
    publish(a, "sensorA", range(half))
    publish(b, "sensorB", range(half))
    assert edge.queue_length(UPSTREAM) == 2 * half
    assert not edge.upstream_status()["online"]

    # kill -9 in the middle: everything acknowledged so far is on disk.
    a.drop()
    b.drop()
    edge.kill9()
    edge.start()
    assert edge.queue_length(UPSTREAM) == 2 * half
    a, b = sender(edge, module_client, "sensorA"), sender(edge, module_client, "sensorB")
    publish(a, "sensorA", range(half, 2 * half))
    publish(b, "sensorB", range(half, 2 * half))
    assert edge.queue_length(UPSTREAM) == 4 * half
    assert edge.counter("messagesReceived") == 2 * half  # this run's

    cloud.start()
    wait_stored(cloud, 4 * half)
    wait_for(lambda: edge.queue_length(UPSTREAM) == 0, DRAIN_TIMEOUT,
             what="cairnd's $upstream queue to drain")
    check_arrived(cloud, edge.device_id, {"sensorA": 2 * half, "sensorB": 2 * half})
    assert cloud.status()["telemetry"] == {"stored": 4 * half, "duplicates": 0,
                                           "duplicatesByKey": 0}
    assert edge.upstream_status()["messagesSent"] == 4 * half
    assert edge.counter("messagesExpired") == 0


def test_kill9_of_cairnd_while_draining_loses_nothing_and_stores_once(cloud_factory,
                                                                     cairnd_factory,
                                                                     module_client):
    cloud, edge = offline_edge(cloud_factory, cairnd_factory)
    n = 2000
    a = sender(edge, module_client, "sensorA")
    publish(a, "sensorA", range(n))
    a.drop()
    cloud.start()
    # Part of the backlog is in the cloud; cairnd dies with the rest (and maybe some that the
    # cloud stored but cairnd had not yet deleted).
    wait_stored(cloud, n // 4, interval=0.01)
    edge.kill9()
    in_cloud = cloud.stored_count()
    assert in_cloud < n, "the cloud got everything before the kill; nothing was tested"
    edge.start()
    wait_stored(cloud, n)
    wait_for(lambda: edge.queue_length(UPSTREAM) == 0, DRAIN_TIMEOUT,
             what="cairnd's $upstream queue to drain")
    check_arrived(cloud, edge.device_id, {"sensorA": n})
    # Re-sends of messages the cloud already had were recognised, not stored again.
    telemetry = cloud.status()["telemetry"]
    assert telemetry["stored"] == n
    assert telemetry["duplicates"] <= in_cloud


def test_kill9_of_cloud_while_draining_loses_nothing(cloud_factory, cairnd_factory,
                                                    module_client):
    cloud, edge = offline_edge(cloud_factory, cairnd_factory)
    n = 2000
    a = sender(edge, module_client, "sensorA")
    publish(a, "sensorA", range(n))
    cloud.start()
    wait_stored(cloud, n // 4)
    cloud.kill9()
    wait_for(lambda: not edge.upstream_status()["online"], what="cairnd to see the cloud go")
    # Published while the cloud is gone again: queued behind the rest.
    publish(a, "sensorA", range(n, n + 100))
    cloud.start()
    wait_stored(cloud, n + 100)
    wait_for(lambda: edge.queue_length(UPSTREAM) == 0, DRAIN_TIMEOUT,
             what="cairnd's $upstream queue to drain")
    check_arrived(cloud, edge.device_id, {"sensorA": n + 100})


def sending_with_pubacks_lost(cloud_factory, cairnd_factory, tcp_proxy, module_client):
    """A cairnd whose cloud link goes through a TcpProxy, and a module "sensorA" that sends
    messages 0..399 without message ids: 0..199 arrive normally; for 200..399 the cloud
    stores what cairnd sends, but cairnd hears no PUBACK, so when the link then drops those
    messages are in the cloud and still unacknowledged at the edge. Returns (cloud, proxy,
    edge, the module's client) once the cloud has stored some of them."""
    cloud = cloud_factory()
    proxy = tcp_proxy(cloud.mqtt_port)
    edge = edge_device(cloud, cairnd_factory, proxy=proxy, routes=ROUTES)
    a = sender(edge, module_client, "sensorA")
    publish(a, "sensorA", range(200), with_ids=False)
    wait_stored(cloud, 200)
    proxy.drop_replies()
    publish(a, "sensorA", range(200, 400), with_ids=False)
    wait_for(lambda: cloud.stored_count() > 200, DRAIN_TIMEOUT,
             what="the cloud to store messages whose PUBACKs are lost")
    return cloud, proxy, edge, a


def wait_all_in(cloud, edge, n):
    """Everything sent reached the cloud's store, and nothing more is on its way there."""
    wait_stored(cloud, n)
    wait_for(lambda: edge.queue_length(UPSTREAM) == 0, DRAIN_TIMEOUT,
             what="cairnd's $upstream queue to drain")

    def cloud_idle():
        status = cloud.status()
        return (status["ingestQueue"]["storedMessages"] == 0
                and status["telemetryWriter"]["waiting"] == 0)

    wait_for(cloud_idle, DRAIN_TIMEOUT, what="cairn-cloud to store everything it took")


def check_stored_once_without_ids(cloud, device_id, module, n):
    """Each of the n messages (no messageId) stored once, in order, with a dedupe key of its
    own, in the store and in the JSON-lines file; the re-sends were recognised by their key."""
    stored = cloud.all_messages(device_id=device_id)
    assert [m["moduleId"] for m in stored] == [module] * len(stored)
    seqs = [json.loads(m["body"])["seq"] for m in stored]
    twice = [s for s, c in collections.Counter(seqs).items() if c > 1]
    assert not twice, f"stored twice: {twice[:10]} ({len(stored)} stored for {n} sent)"
    assert seqs == list(range(n)), "messages missing or out of order"
    assert all(m["messageId"] == "" for m in stored)
    assert all(DEDUPE_KEY not in m["properties"] for m in stored)
    assert len({m["dedupeKey"] for m in stored}) == n
    assert sorted(json.loads(m["body"])["seq"] for m in cloud.messages_file()) == list(range(n))
    telemetry = cloud.status()["telemetry"]
    assert telemetry["stored"] == n
    # The link really dropped with messages the cloud had: their re-sends came and were
    # recognised by key alone.
    assert telemetry["duplicatesByKey"] >= 1, telemetry
    assert telemetry["duplicates"] == telemetry["duplicatesByKey"]


def test_resends_after_a_cut_link_are_stored_once_without_message_ids(cloud_factory,
                                                                      cairnd_factory,
                                                                      tcp_proxy, module_client):
    cloud, proxy, edge, a = sending_with_pubacks_lost(cloud_factory, cairnd_factory, tcp_proxy,
                                                      module_client)
    n = 600
    proxy.cut()
    wait_for(lambda: not edge.upstream_status()["online"], what="cairnd to see its link drop")
    publish(a, "sensorA", range(400, n), with_ids=False)  # queued while the link is down
    proxy.restore()
    wait_all_in(cloud, edge, n)
    check_stored_once_without_ids(cloud, edge.device_id, "sensorA", n)


def test_resends_after_a_restart_of_cairnd_are_stored_once_without_message_ids(
        cloud_factory, cairnd_factory, tcp_proxy, module_client):
    cloud, proxy, edge, a = sending_with_pubacks_lost(cloud_factory, cairnd_factory, tcp_proxy,
                                                      module_client)
    n = 600
    # cairnd dies with messages the cloud has stored still in its queue: after the restart
    # they are sent again from disk, and must carry the keys they had.
    a.drop()
    edge.kill9()
    proxy.cut()
    proxy.restore()
    edge.start()
    a = sender(edge, module_client, "sensorA")
    publish(a, "sensorA", range(400, n), with_ids=False)
    wait_all_in(cloud, edge, n)
    check_stored_once_without_ids(cloud, edge.device_id, "sensorA", n)


def test_ttl_expired_messages_are_dropped_and_counted(cloud_factory, cairnd_factory,
                                                     module_client):
    routes = {
        "short": {"route": "FROM /messages/modules/brief/outputs/* INTO $upstream",
                  "priority": 0, "timeToLiveSecs": 2},
        "long": "FROM /messages/modules/lasting/outputs/* INTO $upstream",
    }
    cloud, edge = offline_edge(cloud_factory, cairnd_factory, routes=routes,
                               config={"store.expire_interval_secs": 1})
    brief, lasting = sender(edge, module_client, "brief"), sender(edge, module_client, "lasting")
    publish(brief, "brief", range(50))
    publish(lasting, "lasting", range(20))
    assert edge.queue_length(UPSTREAM) == 70
    wait_for(lambda: edge.counter("messagesExpired") >= 50, 30,
             what="the short-TTL messages to expire")
    assert edge.counter("messagesExpired") == 50
    assert edge.queue_length(UPSTREAM) == 20
    cloud.start()
    wait_stored(cloud, 20)
    wait_for(lambda: edge.queue_length(UPSTREAM) == 0, DRAIN_TIMEOUT,
             what="cairnd's $upstream queue to drain")
    # Published after the outage with the short TTL: delivered, as it is fresh.
    publish(brief, "brief", [50])
    wait_stored(cloud, 21)
    stored = cloud.all_messages(device_id=edge.device_id)
    assert [m["messageId"] for m in stored if m["moduleId"] == "lasting"] == \
        [f"lasting-{i}" for i in range(20)]
    assert [m["messageId"] for m in stored if m["moduleId"] == "brief"] == ["brief-50"]
    assert edge.counter("messagesExpired") == 50
    # They were handed to the waiting link before they expired: held back there, not sent.
    assert 0 < edge.upstream_status()["messagesExpiredUnsent"] <= 50


def test_messages_flow_while_online_and_properties_arrive(cloud_factory, cairnd_factory,
                                                         module_client):
    cloud = cloud_factory()
    edge = edge_device(cloud, cairnd_factory, routes=ROUTES)
    m = module_client(edge, "sensorA")
    m.publish_acked(b'{"t": 21.5}', output="temp",
                    props={"$.mid": "m-1", "$.ct": "application/json", "$.ce": "utf-8",
                           "alert": "high", "odd key": "a&b=c"})
    m.publish_acked(b"\x00\x01binary", output="raw", props={"$.mid": "m-2"})
    wait_stored(cloud, 2, timeout=30)
    first, second = cloud.all_messages(device_id=edge.device_id)
    assert first["moduleId"] == "sensorA" and first["messageId"] == "m-1"
    assert first["body"] == '{"t": 21.5}'
    assert first["properties"]["alert"] == "high"
    assert first["properties"]["odd key"] == "a&b=c"
    assert first["systemProperties"]["contentType"] == "application/json"
    assert first["systemProperties"]["contentEncoding"] == "utf-8"
    assert second["bodyEncoding"] == "base64"
    assert second["messageId"] == "m-2"
    # The link's dedupe key is kept beside the message, not among the module's properties.
    assert DEDUPE_KEY not in first["properties"]
    assert first["dedupeKey"] and second["dedupeKey"] and first["dedupeKey"] != second["dedupeKey"]
    # The module filter of the cloud's query works on what the edge sent.
    assert [x["messageId"] for x in cloud.messages(edge.device_id, "sensorA")] == ["m-1", "m-2"]
    assert cloud.messages(edge.device_id, "other") == []


def checks(edge):
    r = edge.cli("check", "--json", check=False)
    out = json.loads(r.stdout)
    assert (r.returncode == 0) == out["healthy"], r
    return r.returncode, {c["id"]: c for c in out["checks"]}


def test_cairn_check_and_status_report_the_cloud_link(cloud_factory, cairnd_factory,
                                                      module_client):
    cloud, edge = offline_edge(cloud_factory, cairnd_factory)
    a = sender(edge, module_client, "sensorA")
    publish(a, "sensorA", range(10))
    rc, c = checks(edge)
    assert rc == 1
    assert c["upstream-connected"]["status"] == "error"
    assert f"{cloud.listen}:{cloud.mqtt_port}" in c["upstream-connected"]["message"]
    assert c["upstream-queue"]["status"] == "warning"
    assert c["upstream-queue"]["message"].startswith("10 messages")
    status = edge.upstream_status()
    assert status["online"] is False and status["links"]["edge1/sensorA"]["lastError"]
    # The human form names the failing check.
    r = edge.cli("check", check=False)
    assert r.returncode == 1 and "FAIL  upstream-connected" in r.stdout, r.stdout

    cloud.start()
    wait_stored(cloud, 10, timeout=30)
    wait_for(lambda: checks(edge)[0] == 0, 30, what="cairn check to pass")
    _, c = checks(edge)
    assert c["upstream-connected"]["status"] == "ok"
    assert c["upstream-queue"]["message"].startswith("0 messages")
    status = edge.upstream_status()
    assert status["online"] is True and status["messagesSent"] == 10
    assert status["links"]["edge1/sensorA"]["state"] == "online"


def test_cairn_check_without_a_cloud(cairnd):
    rc, c = checks(cairnd)
    assert rc == 0
    assert c["upstream-configured"]["status"] == "warning"
    assert "upstream-connected" not in c
    assert cairnd.upstream_status() == {"enabled": False}
