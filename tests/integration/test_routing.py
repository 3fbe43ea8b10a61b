"""Routes between real module connections (paho over TLS, SAS auth)."""
import json

import pytest

from conftest import wait_for


def _pair(cairnd, module_client, receiver="filter"):
    rx = module_client(cairnd, receiver)
    assert rx.subscribe_inputs() == [1]
    tx = module_client(cairnd, "sensor")
    return tx, rx


def test_sensor_to_filter_with_property_bag(cairnd, module_client):
    sensor, filt = _pair(cairnd, module_client)
    sensor.publish_acked(b'{"t":21.5}', output="temp",
                         props={"$.ct": "application/json", "$.ce": "utf-8", "level": "high",
                                "$.mid": "m-1", "$.cid": "c-1", "odd key": "a&b=c/d%"})
    [m] = filt.expect(1)
    assert m.payload == b'{"t":21.5}'
    assert m.input == "in"
    assert m.topic.startswith("devices/edge1/modules/filter/inputs/in/")
    assert m.qos == 1
    assert not m.dup and not m.retain
    p = m.props
    assert p["level"] == "high"
    assert p["odd key"] == "a&b=c/d%"
    assert p["$.ct"] == "application/json"
    assert p["$.ce"] == "utf-8"
    assert p["$.mid"] == "m-1"
    assert p["$.cid"] == "c-1"
    assert p["$.cdid"] == "edge1"
    assert p["$.cmid"] == "sensor"
    # $.on is inbound only (docs/protocol.md §3.4); the output name is not echoed back.
    assert "$.on" not in p
    # Counted as received, not unrouted.
    st = cairnd.status()
    assert st["counters"]["messagesReceived"] == 1
    assert st["counters"]["messagesUnrouted"] == 0


def test_sender_cannot_spoof_connection_ids(cairnd, module_client):
    sensor, filt = _pair(cairnd, module_client)
    sensor.publish_acked(b"x", output="temp", props={"$.cdid": "other", "$.cmid": "evil"})
    [m] = filt.expect(1)
    assert m.props["$.cdid"] == "edge1"
    assert m.props["$.cmid"] == "sensor"


def test_trailing_slash_after_bag_and_no_bag_output(cairnd, module_client):
    sensor, filt = _pair(cairnd, module_client)
    # The Node SDK ends an output event's bag with '/'.
    topic = cairnd.events_topic("sensor", {"$.on": "temp", "k": "v"}) + "/"
    sensor.publish_acked(b"node-style", topic=topic)
    [m] = filt.expect(1)
    assert m.payload == b"node-style"
    assert m.props["k"] == "v"


def test_where_conditions(cairnd_factory, module_client):
    routes = {
        "byApp":
            'FROM /messages/modules/sensor/* WHERE level = \'high\' '
            'INTO BrokeredEndpoint("/modules/filter/inputs/app")',
        "byBody":
            'FROM /messages/modules/sensor/* WHERE $body.temperature.value > 30 '
            'INTO BrokeredEndpoint("/modules/filter/inputs/body")',
        "bySys":
            'FROM /messages/* WHERE $connectionModuleId = \'other\' '
            'INTO BrokeredEndpoint("/modules/filter/inputs/sys")',
    }
    d = cairnd_factory(routes=routes)
    filt = module_client(d, "filter")
    filt.subscribe_inputs()
    sensor = module_client(d, "sensor")
    other = module_client(d, "other")
    json_props = {"$.ct": "application/json", "$.ce": "utf-8"}

    sensor.publish_acked(b"a1", output="o", props={"level": "high"})
    sensor.publish_acked(b"a2-no", output="o", props={"level": "low"})
    sensor.publish_acked(b'{"temperature":{"value":35}}', output="o", props=json_props)
    sensor.publish_acked(b'{"temperature":{"value":20}}', output="o", props=json_props)
    # $body is only queried with ct=application/json and ce in utf-*: no ce, no match.
    sensor.publish_acked(b'{"temperature":{"value":40}}', output="o",
                         props={"$.ct": "application/json"})
    # Property lookups are case-insensitive.
    sensor.publish_acked(b"a3", output="o", props={"LEVEL": "high"})
    other.publish_acked(b"s1")
    sensor.publish_acked(b"sentinel-from-sensor-no-route-for-sys")

    msgs = filt.expect(4)
    by_input = {}
    for m in msgs:
        by_input.setdefault(m.input, []).append(m.payload)
    assert by_input == {
        "app": [b"a1", b"a3"],
        "body": [b'{"temperature":{"value":35}}'],
        "sys": [b"s1"],
    }, by_input
    assert msgs[[m.input for m in msgs].index("sys")].props["$.cmid"] == "other"
    # Nothing else arrives: the queues are empty and every delivery was acknowledged.
    wait_for(lambda: all(q["length"] == 0 for q in d.status()["queues"]), what="empty queues")
    assert filt.messages.empty()
    st = d.status()
    assert st["counters"]["messagesReceived"] == 8
    assert st["counters"]["messagesUnrouted"] == 4


def test_unrouted_message_is_still_acknowledged(cairnd, module_client):
    sensor = module_client(cairnd, "sensor")
    sensor.publish_acked(b"nowhere", output="nosuchoutput")
    sensor.publish_acked(b"nowhere2")  # no output at all
    assert sensor.is_connected()
    st = cairnd.status()
    assert st["counters"]["messagesUnrouted"] == 2
    assert st["counters"]["messagesReceived"] == 2
    assert st["store"]["storedMessages"] == 0


def test_qos0_publish_is_routed(cairnd, module_client):
    sensor, filt = _pair(cairnd, module_client)
    sensor.publish(b"q0", output="temp", qos=0)
    [m] = filt.expect(1)
    assert m.payload == b"q0"


def test_priorities(cairnd_factory, module_client):
    routes = {
        "low": {"route": 'FROM /messages/modules/sensor/outputs/low '
                         'INTO BrokeredEndpoint("/modules/filter/inputs/in")', "priority": 5},
        "high": {"route": 'FROM /messages/modules/sensor/outputs/high '
                          'INTO BrokeredEndpoint("/modules/filter/inputs/in")', "priority": 0},
        "default": 'FROM /messages/modules/sensor/outputs/dflt '
                   'INTO BrokeredEndpoint("/modules/filter/inputs/in")',
    }
    d = cairnd_factory(routes=routes)
    sensor = module_client(d, "sensor")
    # The consumer is offline: everything waits on disk in per-priority queues.
    for i in range(5):
        sensor.publish_acked(f"dflt{i}".encode(), output="dflt")
        sensor.publish_acked(f"low{i}".encode(), output="low")
        sensor.publish_acked(f"high{i}".encode(), output="high")
    assert d.queue_length("filter/in", 0) == 5
    assert d.queue_length("filter/in", 5) == 5
    assert d.queue_length("filter/in") == 15

    filt = module_client(d, "filter")
    filt.subscribe_inputs()
    got = [m.payload.decode() for m in filt.expect(15)]
    assert got[:5] == [f"high{i}" for i in range(5)], got
    assert got[5:10] == [f"low{i}" for i in range(5)], got
    assert got[10:] == [f"dflt{i}" for i in range(5)], got


def test_same_endpoint_twice_enqueued_once(cairnd_factory, module_client):
    routes = {
        "a": {"route": 'FROM /messages/modules/sensor/* '
                       'INTO BrokeredEndpoint("/modules/filter/inputs/in")', "priority": 3},
        "b": {"route": 'FROM /messages/modules/sensor/outputs/temp '
                       'INTO BrokeredEndpoint("/modules/filter/inputs/in")', "priority": 1},
    }
    d = cairnd_factory(routes=routes)
    sensor = module_client(d, "sensor")
    sensor.publish_acked(b"once", output="temp")
    queues = [q for q in d.status()["queues"] if q["length"]]
    assert queues == [{"endpoint": "filter/in", "priority": 1, "length": 1}]
    filt = module_client(d, "filter")
    filt.subscribe_inputs()
    [m] = filt.expect(1)
    assert m.payload == b"once"
    wait_for(lambda: d.queue_length("filter/in") == 0, what="queue drained")
    assert filt.messages.empty()


def test_fan_out_to_two_modules(cairnd_factory, module_client):
    routes = {
        "toA": 'FROM /messages/modules/sensor/outputs/temp '
               'INTO BrokeredEndpoint("/modules/a/inputs/x")',
        "toB": 'FROM /messages/modules/sensor/* INTO BrokeredEndpoint("/modules/b/inputs/y")',
    }
    d = cairnd_factory(routes=routes)
    a = module_client(d, "a")
    a.subscribe_inputs()
    b = module_client(d, "b")
    b.subscribe_inputs()
    sensor = module_client(d, "sensor")
    for i in range(10):
        sensor.publish_acked(f"m{i}".encode(), output="temp", props={"i": str(i)})
    ga = a.expect(10)
    gb = b.expect(10)
    assert [m.payload for m in ga] == [f"m{i}".encode() for i in range(10)]
    assert [m.payload for m in gb] == [f"m{i}".encode() for i in range(10)]
    assert {m.input for m in ga} == {"x"}
    assert {m.input for m in gb} == {"y"}
    assert all(m.topic.startswith("devices/edge1/modules/b/inputs/y/") for m in gb)
    # The body is stored once however many queues refer to it; both acked -> all gone.
    wait_for(lambda: d.status()["store"]["storedMessages"] == 0, what="bodies deleted")


def test_upstream_messages_wait_on_disk(cairnd_factory, module_client):
    routes = {"up": {"route": "FROM /messages/* INTO $upstream", "priority": 0,
                     "timeToLiveSecs": 3600}}
    d = cairnd_factory(routes=routes)
    sensor = module_client(d, "sensor")
    for i in range(3):
        sensor.publish_acked(f"u{i}".encode(), output="temp")
    assert d.queue_length("$upstream") == 3
    for i in range(4):
        sensor.publish_acked(f"v{i}".encode())
    assert d.queue_length("$upstream") == 7
    st = d.status()
    assert st["store"]["storedMessages"] == 7
    assert st["store"]["appendedTotal"] == 7
    # Still there after a restart: nothing consumes $upstream yet.
    d.restart()
    assert d.queue_length("$upstream") == 7


def test_status_shape(cairnd):
    st = cairnd.status()
    assert st["deviceId"] == "edge1"
    assert st["mqtt"]["tlsPort"] == cairnd.tls_port
    assert st["mqtt"]["plainPort"] == cairnd.plain_port
    assert st["routes"] == 1
    assert "filter/in" in st["endpoints"]
    assert st["store"]["healthy"] is True
    assert isinstance(st["queues"], list)
    json.dumps(st)


def test_live_stream_exactly_once_in_order(cairnd, module_client):
    # A connected consumer and a pipelined publisher: the endpoint switches between its
    # in-memory window and reading back from disk; without failures nothing may be lost,
    # duplicated or reordered.
    filt = module_client(cairnd, "filter")
    filt.subscribe_inputs()
    sensor = module_client(cairnd, "sensor", max_inflight=100)
    n = 2000
    for i in range(n):
        sensor.publish(f"s{i:05d}".encode(), output="temp")
    got = filt.expect(n, timeout=120)
    payloads = [m.payload for m in got]
    assert payloads == [f"s{i:05d}".encode() for i in range(n)]
    assert not any(m.dup for m in got)
    wait_for(lambda: len(sensor.acked_mids) == n, what="all PUBACKs")
    wait_for(lambda: cairnd.queue_length("filter/in") == 0, what="queue drained")
    assert filt.messages.empty()


def test_backlog_of_large_messages_is_delivered(cairnd_factory, module_client):
    # A healthy consumer with a full delivery window of maximum-size messages (64 x 256 KiB
    # in flight at once) must not be mistaken for one that stopped reading.
    d = cairnd_factory()
    sensor = module_client(d, "sensor", max_inflight=20)
    n = 48
    big = 262144 - 16
    for i in range(n):
        sensor.publish(f"{i:04d}".encode() + b"L" * big, output="temp")
    wait_for(lambda: len(sensor.acked_mids) == n, timeout=60, what="all PUBACKs")
    filt = module_client(d, "filter")
    filt.subscribe_inputs()
    got = filt.expect(n, timeout=120)
    assert [m.payload[:4] for m in got] == [f"{i:04d}".encode() for i in range(n)]
    assert filt.is_connected()
    assert d.counter("slowConsumersClosed") == 0


def test_unsubscribe_and_resubscribe(cairnd, module_client):
    filt = module_client(cairnd, "filter")
    filt.subscribe_inputs()
    sensor = module_client(cairnd, "sensor")
    sensor.publish_acked(b"one", output="temp")
    assert [m.payload for m in filt.expect(1)] == [b"one"]
    rc, mid = filt.client.unsubscribe(cairnd.inputs_filter("filter"))
    wait_for(lambda: not cairnd.status()["endpoints"]["filter/in"]["attached"], what="detached")
    for p in (b"two", b"three"):
        sensor.publish_acked(p, output="temp")
    assert cairnd.queue_length("filter/in") == 2
    assert filt.messages.empty()
    filt.subscribe_inputs()
    got = [m.payload for m in filt.expect(2)]
    assert got == [b"two", b"three"]
    wait_for(lambda: cairnd.queue_length("filter/in") == 0, what="queue drained")


def test_persistent_session_without_restart(cairnd, module_client):
    filt = module_client(cairnd, "filter", clean_session=False)
    filt.subscribe_inputs()
    filt.disconnect()
    sensor = module_client(cairnd, "sensor")
    sensor.publish_acked(b"while-away", output="temp")
    back = module_client(cairnd, "filter", clean_session=False)
    assert back.session_present
    [m] = back.expect(1)  # no new SUBSCRIBE needed
    assert m.payload == b"while-away"


def test_qos0_subscription_gets_qos0_deliveries(cairnd, module_client):
    filt = module_client(cairnd, "filter")
    assert filt.subscribe_inputs(qos=0) == [0]
    sensor = module_client(cairnd, "sensor")
    sensor.publish_acked(b"q", output="temp")
    [m] = filt.expect(1)
    assert m.qos == 0


def test_qos0_flood_then_qos1_all_delivered_in_order(cairnd, module_client):
    filt = module_client(cairnd, "filter")
    filt.subscribe_inputs()
    sensor = module_client(cairnd, "sensor")
    n = 3000
    for i in range(n):
        sensor.publish(f"z{i:05d}".encode(), output="temp", qos=0)
    sensor.publish_acked(b"sentinel", output="temp", timeout=60)
    got = filt.expect(n + 1, timeout=120)
    assert [m.payload for m in got] == [f"z{i:05d}".encode() for i in range(n)] + [b"sentinel"]
    assert cairnd.counter("messagesReceived") == n + 1


def test_from_matching_rules(cairnd_factory, module_client):
    routes = {
        "exact": 'FROM /messages/modules/sensor/outputs/temp '
                 'INTO BrokeredEndpoint("/modules/filter/inputs/exact")',
        "mod": 'FROM /messages/modules/m/* INTO BrokeredEndpoint("/modules/filter/inputs/mod")',
    }
    d = cairnd_factory(routes=routes)
    filt = module_client(d, "filter")
    filt.subscribe_inputs()
    sensor = module_client(d, "sensor")
    m = module_client(d, "m")
    m2 = module_client(d, "m2")
    sensor.publish_acked(b"upper", output="TEMP")    # case-insensitive prefix
    sensor.publish_acked(b"temp2", output="temp2")   # 'temp' does not match 'temp2'
    m2.publish_acked(b"m2", output="x")              # 'm' does not match 'm2'
    m.publish_acked(b"m-out", output="x")            # with an output
    m.publish_acked(b"m-no-output")                  # and without one
    sensor.publish_acked(b"sentinel", output="temp")
    got = [(x.input, x.payload) for x in filt.expect(4)]
    assert sorted(got) == sorted([("exact", b"upper"), ("mod", b"m-out"),
                                  ("mod", b"m-no-output"), ("exact", b"sentinel")])
    assert d.counter("messagesUnrouted") == 2


def test_many_concurrent_publishers(cairnd_factory, module_client):
    routes = {"all": 'FROM /messages/modules/* INTO BrokeredEndpoint("/modules/filter/inputs/in")'}
    d = cairnd_factory(routes=routes)
    filt = module_client(d, "filter")
    filt.subscribe_inputs()
    senders = [module_client(d, f"s{k}", max_inflight=20) for k in range(12)]
    per = 60
    for i in range(per):
        for k, s in enumerate(senders):
            s.publish(f"{k}:{i}".encode(), output="o")
    got = filt.expect(len(senders) * per, timeout=120)
    by_sender = {}
    for m in got:
        k, i = m.payload.decode().split(":")
        assert m.props["$.cmid"] == f"s{k}"
        by_sender.setdefault(int(k), []).append(int(i))
    # Everything arrives once, and each sender's messages keep their order.
    assert by_sender == {k: list(range(per)) for k in range(len(senders))}


def test_empty_payload_and_unicode_properties(cairnd, module_client):
    sensor, filt = _pair(cairnd, module_client)
    sensor.publish_acked(b"", output="temp", props={"städt": "Zürich ☃", "empty": ""})
    [m] = filt.expect(1)
    assert m.payload == b""
    assert m.props["städt"] == "Zürich ☃"
    assert m.props["empty"] == ""
    binary = bytes(range(256)) * 4
    sensor.publish_acked(binary, output="temp")
    [m] = filt.expect(1)
    assert m.payload == binary
