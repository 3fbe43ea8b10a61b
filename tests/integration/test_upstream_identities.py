"""$upstream keeps one queue, position and in-flight window per sending identity
(docs/protocol.md §8.2): a module whose cloud link is refused or dropped holds back, and
re-sends, only its own messages; the other modules' telemetry goes on at once and goes up
once. A store from before per-identity queues, with messages in the one shared $upstream
queue, still delivers them, with the dedupe keys they had.

cairnd talks to a real cairn-cloud; modules are paho clients on cairnd's plain port.
"""
import collections
import json
import sqlite3
import time

from conftest import CloudDevice, edge_device, wait_for
from test_store_forward import (DRAIN_TIMEOUT, ROUTES, check_arrived, offline_edge,
                                publish, sender, wait_stored)

DEVICE = "edge1"


def bodies_by_module(cloud):
    """{module: [seq of each stored message, in stored order]}."""
    out = collections.defaultdict(list)
    for m in cloud.all_messages(device_id=DEVICE):
        out[m["moduleId"]].append(json.loads(m["body"])["seq"])
    return out


def test_a_refused_identity_holds_back_only_its_own_messages(cloud_factory, cairnd_factory,
                                                              module_client):
    # The cloud registers no module on an edge device's say-so (quota 0): "fast" is registered
    # by a service, "refused" is not, so every connection of its link is refused (CONNACK 5).
    cloud = cloud_factory(extra_args=("--max-modules-per-device", "0"))
    cloud.create_device(DEVICE, edge=True)
    cloud.call("PUT", f"/devices/{DEVICE}/modules/fast",
               {"deviceId": DEVICE, "moduleId": "fast"}, expect=201)
    # A small window: the refused module alone has many more messages waiting than it holds.
    edge = edge_device(cloud, cairnd_factory, routes=ROUTES,
                       config={"mqtt.max_inflight_out": 8})
    refused = sender(edge, module_client, "refused")
    fast = sender(edge, module_client, "fast")
    publish(refused, "refused", range(40))
    edge.wait_link("refused", state="backoff")
    assert edge.upstream_status()["links"][f"{DEVICE}/refused"]["lastError"]

    publish(fast, "fast", range(30))
    # Promptly: nothing of "fast" waits behind the refused link, however long it is refused.
    wait_for(lambda: len(bodies_by_module(cloud)["fast"]) >= 30, timeout=20,
             what="fast's messages in the cloud while refused's link is refused")
    assert "refused" not in bodies_by_module(cloud)
    status = edge.status()
    waiting = [q for q in status["queues"] if q["length"]]
    assert waiting == [{"endpoint": "$upstream", "identity": f"{DEVICE}/refused",
                        "priority": 2000000000, "length": 40}], waiting
    assert edge.queue_length("$upstream") == 40

    # Allowed again: its messages follow, each once and in order.
    cloud.call("PUT", f"/devices/{DEVICE}/modules/refused",
               {"deviceId": DEVICE, "moduleId": "refused"}, expect=201)
    wait_stored(cloud, 70)
    wait_for(lambda: edge.queue_length("$upstream") == 0, DRAIN_TIMEOUT, what="empty queues")
    check_arrived(cloud, DEVICE, {"fast": 30, "refused": 40})
    assert cloud.status()["telemetry"]["duplicates"] == 0


def test_a_dropped_link_resends_only_its_own_messages(cloud_factory, cairnd_factory,
                                                      module_client, tcp_proxy):
    cloud = cloud_factory()
    proxy = tcp_proxy(cloud.mqtt_port)
    edge = edge_device(cloud, cairnd_factory, proxy=proxy, routes=ROUTES)
    dropped = sender(edge, module_client, "dropped")
    steady = sender(edge, module_client, "steady")
    edge.wait_link("dropped")
    edge.wait_link("steady")

    # The cloud stores everything but its acknowledgements are held back: both links have
    # all their messages in flight. "dropped" sets message ids; "steady" sets none, so a
    # re-send of one of its messages can only be recognised by the dedupe key.
    proxy.hold_replies()
    publish(dropped, "dropped", range(20))
    publish(steady, "steady", range(20), with_ids=False)
    wait_stored(cloud, 40)
    links = edge.upstream_status()["links"]
    assert links[f"{DEVICE}/dropped"]["unacked"] == 20, links
    assert links[f"{DEVICE}/steady"]["unacked"] == 20, links
    connects = links[f"{DEVICE}/dropped"]["connects"]

    # Another connection with dropped's client id takes its place at the cloud: the cloud
    # closes dropped's link, and only that one.
    device = CloudDevice(cloud, DEVICE, module_keys={"dropped": cloud.device_key(DEVICE)})
    taker = module_client(device, "dropped")
    wait_for(lambda: edge.link_state("dropped") != "online", what="dropped's link to drop")
    taker.close()
    proxy.release_replies()

    wait_for(lambda: edge.upstream_status()["links"][f"{DEVICE}/dropped"]["connects"]
             > connects, what="dropped's link to reconnect")
    wait_for(lambda: edge.queue_length("$upstream") == 0, DRAIN_TIMEOUT, what="empty queues")
    by_module = bodies_by_module(cloud)
    assert by_module == {"dropped": list(range(20)), "steady": list(range(20))}, by_module
    telemetry = cloud.status()["telemetry"]
    # dropped's 20 in-flight messages went up again (the cloud had them: duplicates by message
    # id); steady's, without ids, were not sent twice.
    assert telemetry["duplicatesByKey"] == 0, telemetry
    assert telemetry["duplicates"] == 20, telemetry
    links = edge.upstream_status()["links"]
    assert links[f"{DEVICE}/steady"]["published"] == 20, links
    assert links[f"{DEVICE}/dropped"]["published"] == 40, links
    assert links[f"{DEVICE}/steady"]["connects"] == 1, links


def to_shared_queue(hub_db):
    """Makes a stopped cairnd's store one of a cairnd from before per-identity queues: every
    $upstream message in the one shared queue of its priority, in the order they arrived."""
    db = sqlite3.connect(str(hub_db), timeout=30, isolation_level=None)
    try:
        db.execute("BEGIN IMMEDIATE")
        rows = db.execute(
            "SELECT q.priority, e.msg_id, e.enqueued_ms, e.expires_ms FROM entries e "
            "JOIN queues q ON q.id = e.queue_id WHERE q.endpoint LIKE '$upstream//%' "
            "ORDER BY q.priority, e.enqueued_ms, e.queue_id, e.seq").fetchall()
        db.execute("DELETE FROM entries WHERE queue_id IN "
                   "(SELECT id FROM queues WHERE endpoint LIKE '$upstream//%')")
        db.execute("DELETE FROM queues WHERE endpoint LIKE '$upstream//%'")
        seqs = {}
        for priority, msg_id, enqueued_ms, expires_ms in rows:
            if priority not in seqs:
                db.execute("INSERT INTO queues(endpoint, priority, next_seq) "
                           "VALUES('$upstream', ?, 1)", (priority,))
                seqs[priority] = 0
            seqs[priority] += 1
            queue_id = db.execute("SELECT id FROM queues WHERE endpoint = '$upstream' AND "
                                  "priority = ?", (priority,)).fetchone()[0]
            db.execute("INSERT INTO entries(queue_id, seq, msg_id, enqueued_ms, expires_ms) "
                       "VALUES(?, ?, ?, ?, ?)",
                       (queue_id, seqs[priority], msg_id, enqueued_ms, expires_ms))
        for priority, last in seqs.items():
            db.execute("UPDATE queues SET next_seq = ? WHERE endpoint = '$upstream' AND "
                       "priority = ?", (last + 1, priority))
        db.execute("COMMIT")
        return len(rows)
    finally:
        db.close()


def test_messages_of_the_shared_queue_are_delivered_after_an_upgrade(cloud_factory,
                                                                    cairnd_factory,
                                                                    module_client):
    cloud, edge = offline_edge(cloud_factory, cairnd_factory)
    first, second = sender(edge, module_client, "first"), sender(edge, module_client, "second")
    for i in range(15):
        publish(first, "first", [i])
        publish(second, "second", [i])
    first.close()
    second.close()
    edge.stop()
    assert to_shared_queue(edge.home / "data" / "hub.db") == 30

    edge.start()
    status = edge.status()
    assert [q for q in status["queues"] if q["length"]] == [
        {"endpoint": "$upstream", "priority": 2000000000, "length": 30}]
    # Messages after the upgrade go to the senders' own queues, beside the old ones.
    first, second = sender(edge, module_client, "first"), sender(edge, module_client, "second")
    publish(first, "first", range(15, 20))
    publish(second, "second", range(15, 25))
    assert edge.queue_length("$upstream") == 45

    cloud.start()
    wait_stored(cloud, 45)
    wait_for(lambda: edge.queue_length("$upstream") == 0, DRAIN_TIMEOUT, what="empty queues")
    stored = cloud.all_messages(device_id=DEVICE)
    by_module = collections.defaultdict(list)
    for m in stored:
        by_module[m["moduleId"]].append(m)
    # Each message once. The old queue and a sender's own go up side by side: each in order.
    for module, total in (("first", 20), ("second", 25)):
        seqs = [json.loads(m["body"])["seq"] for m in by_module[module]]
        assert sorted(seqs) == list(range(total)), (module, seqs)
        assert [s for s in seqs if s < 15] == list(range(15)), (module, seqs)
        assert [s for s in seqs if s >= 15] == list(range(15, total)), (module, seqs)
        # The old messages keep the key format they had before the upgrade ("{storeId}.…"),
        # the new ones have the per-identity queues' ("{storeId}-i.…").
        keys = {json.loads(m["body"])["seq"]: m["dedupeKey"] for m in by_module[module]}
        assert all(keys[s].split(".")[0].isalnum() for s in range(15)), keys
        assert all(keys[s].split(".")[0].endswith("-i") for s in range(15, total)), keys
        assert len(set(keys.values())) == total
    assert cloud.status()["telemetry"]["duplicates"] == 0


def test_token_renewals_while_sending_resend_nothing(cloud_factory, cairnd_factory,
                                                     module_client):
    """Each link reconnects at 80% of its token's life (24 s of 30 s, the shortest allowed) while
    its module keeps sending: the renewal waits for the outstanding PUBACKs, so nothing goes up
    twice, and the acknowledgements of the ended connection leave the next one's count alone."""
    cloud = cloud_factory()
    edge = edge_device(cloud, cairnd_factory, routes=ROUTES, upstream={"token_ttl_secs": 30})
    senders = {name: sender(edge, module_client, name) for name in ("one", "two")}
    for name in senders:
        edge.wait_link(name)
    sent = 0
    deadline = time.monotonic() + 28
    while time.monotonic() < deadline:
        for name, client in senders.items():
            publish(client, name, range(sent, sent + 5), with_ids=False)
        sent += 5
        time.sleep(0.1)
    wait_stored(cloud, 2 * sent)
    wait_for(lambda: edge.queue_length("$upstream") == 0, DRAIN_TIMEOUT, what="empty queues")
    links = edge.upstream_status()["links"]
    for name in senders:
        link = links[f"{DEVICE}/{name}"]
        assert link["connects"] >= 2, link  # renewed at least once
        assert link["unacked"] == 0 and link["published"] == sent, link
    assert bodies_by_module(cloud) == {name: list(range(sent)) for name in senders}
    assert cloud.status()["telemetry"]["duplicates"] == 0
