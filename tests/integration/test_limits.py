"""The hub's named limits (docs/architecture.md, "Limits"): each test makes one client exceed
one limit, checks the answer the protocol gives it, that the event is counted in /metrics, and
that another client connected at the same time notices nothing.
"""
import json
import socket

from conftest import (HOST, PINGREQ, connect_packet, publish_packet, subscribe_packet,
                      wait_for)
from test_failure_isolation import metrics


def limit_count(cairnd, setting):
    """cairn_limit_reached_total for `setting`, from /metrics."""
    prefix = f'cairn_limit_reached_total{{limit="{setting}"}} '
    for line in metrics(cairnd).splitlines():
        if line.startswith(prefix):
            return int(line[len(prefix):])
    raise AssertionError(f"{setting} is not in /metrics")


def still_serves(cairnd, module_client):
    """Another client publishes and is acknowledged, and the message is delivered."""
    filt = module_client(cairnd, "filter")
    filt.subscribe_inputs()
    sensor = module_client(cairnd, "sensor")
    sensor.publish_acked(b"unaffected", output="temp")
    (got,) = filt.expect(1)
    assert got.payload == b"unaffected"


def method_filters(n, start=0):
    return [f"$iothub/methods/POST/m{i}/#" for i in range(start, start + n)]


# --------------------------------------------------------------------------------------------
# mqtt.max_subscriptions


def test_subscriptions_beyond_the_limit_are_refused_with_0x80(cairnd_factory, raw_mqtt,
                                                               module_client):
    d = cairnd_factory(config={"mqtt.max_subscriptions": 3})
    d.create_identity("filter")
    bystander = module_client(d, "bystander")
    bystander.enable_twin()
    c = raw_mqtt(d)
    c.login("filter", clean=False)
    c.send(subscribe_packet(1, [(f, 0) for f in method_filters(3)]))
    assert c.recv_packet() == (0x90, b"\x00\x01\x00\x00\x00")
    # A fourth filter is refused; one the session holds is granted again (no new slot).
    c.send(subscribe_packet(2, [(method_filters(1, 3)[0], 0), (method_filters(1)[0], 1)]))
    assert c.recv_packet() == (0x90, b"\x00\x02\x80\x01")
    c.send(PINGREQ)
    assert c.recv_packet() == (0xD0, b"")
    assert limit_count(d, "mqtt.max_subscriptions") == 1
    assert "mqtt.max_subscriptions=3" in d.log_text()
    # The stored session holds the three: still full after a reconnect.
    c.close()
    c = raw_mqtt(d)
    assert c.login("filter", clean=False) == 1
    c.send(subscribe_packet(3, [(method_filters(1, 4)[0], 0)]))
    assert c.recv_packet() == (0x90, b"\x00\x03\x80")
    assert limit_count(d, "mqtt.max_subscriptions") == 2
    # Other sessions have their own budget.
    assert bystander.twin_get()["reported"] == {"$version": 1}
    still_serves(d, module_client)


# --------------------------------------------------------------------------------------------
# mqtt.max_topic_filter_bytes


def method_filter_of(length):
    """A methods filter (granted to any module) of exactly `length` bytes."""
    head, tail = "$iothub/methods/POST/", "/#"
    return head + "m" * (length - len(head) - len(tail)) + tail


def test_topic_filter_longer_than_the_limit_is_refused_with_0x80(cairnd, raw_mqtt,
                                                                  module_client):
    cairnd.create_identity("filter")
    bystander = module_client(cairnd, "bystander")
    bystander.enable_twin()
    c = raw_mqtt(cairnd)
    c.login("filter", clean=False)
    at_limit, over, huge = method_filter_of(1024), method_filter_of(1025), method_filter_of(60000)
    # Each filter is answered on its own: the one at the limit is granted, the longer ones not.
    c.send(subscribe_packet(1, [(over, 1), (at_limit, 1), (huge, 0)]))
    assert c.recv_packet() == (0x90, b"\x00\x01\x80\x01\x80")
    c.send(PINGREQ)
    assert c.recv_packet() == (0xD0, b"")
    assert limit_count(cairnd, "mqtt.max_topic_filter_bytes") == 2
    log = cairnd.log_text()
    assert "mqtt.max_topic_filter_bytes=1024" in log and "longest 60000 bytes" in log
    assert over not in log
    # The stored session (it holds the filter at the limit) refuses the long one again.
    c.close()
    c = raw_mqtt(cairnd)
    assert c.login("filter", clean=False) == 1
    c.send(subscribe_packet(2, [(at_limit, 1), (over, 1)]))
    assert c.recv_packet() == (0x90, b"\x00\x02\x01\x80")
    assert limit_count(cairnd, "mqtt.max_topic_filter_bytes") == 3
    assert bystander.twin_get()["reported"] == {"$version": 1}
    still_serves(cairnd, module_client)


def test_persistent_subscription_is_stored_before_its_suback(cairnd, raw_mqtt, module_client):
    cairnd.create_identity("filter")
    c = raw_mqtt(cairnd)
    c.login("filter", clean=False)
    c.send(subscribe_packet(1, [(cairnd.inputs_filter("filter"), 1)]))
    assert c.recv_packet() == (0x90, b"\x00\x01\x01")
    # Killed right after the SUBACK: the subscription is on disk all the same.
    cairnd.kill9()
    cairnd.start()
    c = raw_mqtt(cairnd)
    assert c.login("filter", clean=False) == 1
    sensor = module_client(cairnd, "sensor")
    sensor.publish_acked(b"for the stored session", output="temp")
    first, body = c.recv_packet()
    assert first & 0xF0 == 0x30
    assert body.endswith(b"for the stored session")


# --------------------------------------------------------------------------------------------
# mqtt.max_properties, mqtt.max_property_bytes


def test_message_with_too_many_properties_is_refused(cairnd, module_client):
    filt = module_client(cairnd, "filter")
    filt.subscribe_inputs()
    sensor = module_client(cairnd, "sensor")
    # 5,000 properties (the default limit is 128): no PUBACK, the connection closes.
    many = {f"k{i}": "v" for i in range(5000)}
    sensor.publish_expect_disconnect(b"many", props=many, output="temp")
    assert limit_count(cairnd, "mqtt.max_properties") == 1
    assert "mqtt.max_properties=128" in cairnd.log_text()
    assert cairnd.queue_length("filter/in") == 0
    # A bag at the limit is accepted (the output name is one of the 128).
    sensor = module_client(cairnd, "sensor")
    sensor.publish_acked(b"at the limit", props={f"k{i}": "v" for i in range(127)},
                         output="temp")
    (got,) = filt.expect(1)
    assert got.payload == b"at the limit"
    assert filt.is_connected()


def test_message_with_too_many_property_bytes_is_refused(cairnd_factory, module_client):
    d = cairnd_factory(config={"mqtt.max_property_bytes": 200})
    filt = module_client(d, "filter")
    filt.subscribe_inputs()
    sensor = module_client(d, "sensor")
    sensor.publish_expect_disconnect(b"big", props={"big": "x" * 300}, output="temp")
    assert limit_count(d, "mqtt.max_property_bytes") == 1
    assert "mqtt.max_property_bytes=200" in d.log_text()
    sensor = module_client(d, "sensor")
    sensor.publish_acked(b"small", props={"small": "x" * 100}, output="temp")
    (got,) = filt.expect(1)
    assert got.payload == b"small"


# --------------------------------------------------------------------------------------------
# mqtt.max_connect_bytes, mqtt.connect_timeout_secs, unauthenticated connections


def test_connect_larger_than_the_pre_auth_limit_is_refused(cairnd_factory, raw_mqtt,
                                                           module_client):
    d = cairnd_factory(config={"mqtt.max_connect_bytes": 4096})
    d.create_identity("sensor")
    c = raw_mqtt(d)
    # A CONNECT carrying a 4,000-byte will: closed without a CONNACK [MQTT-4.8.0-1].
    c.send(connect_packet(d.client_id("sensor"), d.username("sensor"), d.token("sensor"),
                          will={"topic": d.events_topic("sensor"), "payload": b"w" * 4000}))
    assert c.wait_closed() == []
    assert limit_count(d, "mqtt.max_connect_bytes") == 1
    assert "mqtt.max_connect_bytes=4096" in d.log_text()
    # The same login without the will fits.
    c = raw_mqtt(d)
    c.login("sensor")
    still_serves(d, module_client)


def test_silent_connection_is_closed_and_counted(cairnd_factory, raw_mqtt, module_client):
    d = cairnd_factory(config={"mqtt.connect_timeout_secs": 1})
    c = raw_mqtt(d)
    assert c.wait_closed() == []
    wait_for(lambda: limit_count(d, "mqtt.connect_timeout_secs") == 1, what="timeout counted")
    assert "no CONNECT within mqtt.connect_timeout_secs=1" in d.log_text()
    still_serves(d, module_client)


def flood_socket(cairnd, source):
    """A TCP connection from `source` (an address on the loopback) that never sends CONNECT."""
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.bind((source, 0))
    s.settimeout(10)
    s.connect((HOST, cairnd.plain_port))
    return s


def closed_by_peer(s):
    try:
        return s.recv(1) == b""
    except ConnectionResetError:
        return True


def test_unauthenticated_connections_per_address_leave_room_for_others(cairnd_factory,
                                                                       module_client):
    d = cairnd_factory(config={"mqtt.max_unauthenticated_per_address": 3})
    flood = [flood_socket(d, "127.0.0.2") for _ in range(3)]
    wait_for(lambda: d.status()["unauthenticatedConnections"] == 3, what="3 anonymous sockets")
    # The fourth from the same address is closed at once; the first three stay open.
    extra = flood_socket(d, "127.0.0.2")
    assert closed_by_peer(extra)
    assert limit_count(d, "mqtt.max_unauthenticated_per_address") == 1
    assert "connection from 127.0.0.2 refused: mqtt.max_unauthenticated_per_address=3" in \
        d.log_text()
    # A peer reconnecting in a loop is counted every time but logged once per interval.
    for _ in range(5):
        again = flood_socket(d, "127.0.0.2")
        assert closed_by_peer(again)
        again.close()
    assert limit_count(d, "mqtt.max_unauthenticated_per_address") == 6
    assert d.log_text().count("refused: mqtt.max_unauthenticated_per_address") == 1
    # A client from another address connects, logs in and is served meanwhile.
    still_serves(d, module_client)
    assert d.status()["unauthenticatedConnections"] == 3
    for s in flood + [extra]:
        s.close()
    wait_for(lambda: d.status()["unauthenticatedConnections"] == 0, what="slots released")


def test_unauthenticated_connections_in_total_are_bounded(cairnd_factory, module_client):
    d = cairnd_factory(config={"mqtt.max_unauthenticated_connections": 4})
    # Logged-in clients hold no unauthenticated slot.
    filt = module_client(d, "filter")
    filt.subscribe_inputs()
    flood = [flood_socket(d, f"127.0.0.{i}") for i in range(2, 6)]
    wait_for(lambda: d.status()["unauthenticatedConnections"] == 4, what="4 anonymous sockets")
    extra = flood_socket(d, "127.0.0.9")
    assert closed_by_peer(extra)
    assert limit_count(d, "mqtt.max_unauthenticated_connections") == 1
    # Once one anonymous socket goes, a client gets its slot and logs in.
    flood.pop().close()
    wait_for(lambda: d.status()["unauthenticatedConnections"] == 3, what="a slot released")
    sensor = module_client(d, "sensor")
    sensor.publish_acked(b"in", output="temp")
    (got,) = filt.expect(1)
    assert got.payload == b"in"
    for s in flood + [extra]:
        s.close()


# --------------------------------------------------------------------------------------------
# mqtt.max_inflight_in for twin requests and persistent SUBSCRIBEs


def test_twin_requests_count_against_inflight_and_all_get_answers(cairnd_factory, raw_mqtt,
                                                                   module_client):
    d = cairnd_factory(config={"mqtt.max_inflight_in": 2})
    d.create_identity("filter")
    c = raw_mqtt(d)
    c.login("filter", clean=False)
    c.send(subscribe_packet(1, [("$iothub/twin/res/#", 0)]))
    assert c.recv_packet() == (0x90, b"\x00\x01\x00")
    n = 200
    burst = b"".join(
        publish_packet(f"$iothub/twin/PATCH/properties/reported/?$rid={i}",
                       json.dumps({"n": i}).encode()) for i in range(n))
    c.send(burst)
    answered = []
    while len(answered) < n:
        first, body = c.recv_packet()
        assert first & 0xF0 == 0x30
        topic = body[2:2 + int.from_bytes(body[:2], "big")].decode()
        assert topic.startswith("$iothub/twin/res/204/"), topic
        answered.append(int(topic.rpartition("=")[2]))
    # Answered in order, every one, while reading was paused at two in flight.
    assert answered == list(range(n))
    assert limit_count(d, "mqtt.max_inflight_in") >= 1
    assert d.twin_view("filter")["reported"]["n"] == n - 1
    still_serves(d, module_client)
