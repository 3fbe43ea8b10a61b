"""Authentication and authorization on the MQTT surface (docs/protocol.md §3.2, §3.3)."""
import base64
import time

import pytest

from conftest import (DISCONNECT, IOTHUB_HOSTNAME, connect_packet, publish_packet, sas_token,
                      subscribe_packet, wait_for)

REFUSED = (4, 5)  # bad username or password / not authorized


def _refused(cairnd, raw_mqtt, client_id, username, password):
    """CONNECT over a raw socket: expects a refusing CONNACK, then the connection closed."""
    before = cairnd.status()["counters"]
    c = raw_mqtt(cairnd)
    c.send(connect_packet(client_id, username, password))
    sp, rc = c.expect_connack()
    assert rc in REFUSED, f"CONNACK rc {rc}"
    assert sp == 0
    # Nothing else happens: no further packet, the server closes.
    assert c.wait_closed() == []
    after = cairnd.status()["counters"]
    assert after["connectionsRefused"] == before["connectionsRefused"] + 1
    assert after["connectionsTotal"] == before["connectionsTotal"]
    return rc


def test_wrong_key(cairnd, raw_mqtt):
    cairnd.create_identity("sensor")
    bogus_key = base64.b64encode(b"k" * 32).decode()
    assert _refused(cairnd, raw_mqtt, cairnd.client_id("sensor"), cairnd.username("sensor"),
                    cairnd.token("sensor", key=bogus_key)) == 5


def test_other_modules_key(cairnd, raw_mqtt):
    cairnd.create_identity("sensor")
    cairnd.create_identity("filter")
    # Token for sensor signed with filter's key.
    assert _refused(cairnd, raw_mqtt, cairnd.client_id("sensor"), cairnd.username("sensor"),
                    cairnd.token("sensor", key=cairnd.keys["filter"])) == 5


def test_expired_token(cairnd, raw_mqtt):
    cairnd.create_identity("sensor")
    past = int(time.time()) - 60
    assert _refused(cairnd, raw_mqtt, cairnd.client_id("sensor"), cairnd.username("sensor"),
                    cairnd.token("sensor", expiry=past)) == 5


def test_token_for_another_module(cairnd, raw_mqtt):
    cairnd.create_identity("sensor")
    resource = f"{IOTHUB_HOSTNAME}/devices/edge1/modules/filter"
    _refused(cairnd, raw_mqtt, cairnd.client_id("sensor"), cairnd.username("sensor"),
             sas_token(resource, cairnd.keys["sensor"], int(time.time()) + 600))


def test_token_for_another_hub(cairnd, raw_mqtt):
    cairnd.create_identity("sensor")
    resource = "evil.example/devices/edge1/modules/sensor"
    _refused(cairnd, raw_mqtt, cairnd.client_id("sensor"), cairnd.username("sensor"),
             sas_token(resource, cairnd.keys["sensor"], int(time.time()) + 600))


def test_token_for_gateway_hostname_accepted(cairnd, module_client):
    cairnd.create_identity("sensor")
    resource = "localhost/devices/edge1/modules/sensor"
    c = module_client(cairnd, "sensor",
                      password=sas_token(resource, cairnd.keys["sensor"], int(time.time()) + 600))
    assert c.is_connected()


@pytest.mark.parametrize("username", [
    "cairn.local/edge1/sensor",                          # no api-version
    "cairn.local/edge1/sensor/?foo=bar",                 # still no api-version
    "cairn.local/edge1/a/b/sensor/?api-version=2021-04-12",  # too many segments
    "cairn.local//sensor/?api-version=2021-04-12",       # empty device
    "garbage",
    "",
])
def test_malformed_username(cairnd, raw_mqtt, username):
    cairnd.create_identity("sensor")
    _refused(cairnd, raw_mqtt, cairnd.client_id("sensor"), username, cairnd.token("sensor"))


def test_client_id_mismatch(cairnd, raw_mqtt):
    cairnd.create_identity("sensor")
    _refused(cairnd, raw_mqtt, "edge1/Sensor", cairnd.username("sensor"), cairnd.token("sensor"))
    _refused(cairnd, raw_mqtt, "edge1", cairnd.username("sensor"), cairnd.token("sensor"))


def test_unknown_module(cairnd, raw_mqtt):
    cairnd.create_identity("sensor")
    # A correctly shaped token for a module that has no identity.
    _refused(cairnd, raw_mqtt, cairnd.client_id("ghost"), cairnd.username("ghost"),
             cairnd.token("ghost", key=cairnd.keys["sensor"]))


def test_deleted_identity_refused(cairnd, raw_mqtt, module_client):
    cairnd.create_identity("sensor")
    token = cairnd.token("sensor")
    module_client(cairnd, "sensor", password=token).disconnect()
    cairnd.cli("identity", "delete", "sensor")
    _refused(cairnd, raw_mqtt, cairnd.client_id("sensor"), cairnd.username("sensor"), token)


def test_no_password(cairnd, raw_mqtt):
    cairnd.create_identity("sensor")
    _refused(cairnd, raw_mqtt, cairnd.client_id("sensor"), cairnd.username("sensor"), None)


def test_wrong_device(cairnd, raw_mqtt):
    cairnd.create_identity("sensor")
    resource = f"{IOTHUB_HOSTNAME}/devices/edge2/modules/sensor"
    _refused(cairnd, raw_mqtt, "edge2/sensor", "cairn.local/edge2/sensor/?api-version=1",
             sas_token(resource, cairnd.keys["sensor"], int(time.time()) + 600))


def test_cli_token_logs_in(cairnd, module_client):
    cairnd.create_identity("sensor")
    token = cairnd.cli("identity", "token", "sensor", "--ttl", "120").stdout.strip()
    assert token.startswith("SharedAccessSignature sr=")
    se = int(token.rsplit("se=", 1)[1].split("&")[0])
    assert 100 <= se - time.time() <= 140
    c = module_client(cairnd, "sensor", password=token)
    assert c.is_connected()


def test_publish_to_another_modules_topic_disconnects(cairnd, module_client):
    filt = module_client(cairnd, "filter")
    filt.subscribe_inputs()
    sensor = module_client(cairnd, "sensor")
    sensor.publish_expect_disconnect(
        b"spoof", topic="devices/edge1/modules/other/messages/events/%24.on=temp")
    # Leaf-device topic of the edge device itself is not the module's either.
    sensor2 = module_client(cairnd, "sensor")
    sensor2.publish_expect_disconnect(b"spoof", topic="devices/edge1/messages/events/")
    sensor3 = module_client(cairnd, "sensor")
    sensor3.publish_expect_disconnect(b"x", topic="some/random/topic")
    st = cairnd.status()
    assert st["counters"]["messagesReceived"] == 0
    assert st["counters"]["protocolErrors"] >= 3
    assert filt.messages.empty()


def test_subscribe_to_another_modules_inputs_refused(cairnd, module_client):
    sensor = module_client(cairnd, "sensor")
    granted = sensor.subscribe("devices/edge1/modules/filter/#", 1)
    assert granted == [128]
    assert sensor.subscribe("devices/edge1/modules/+/#", 1) == [128]
    assert sensor.subscribe("#", 1) == [128]
    assert sensor.subscribe("devices/edge1/messages/devicebound/#", 1) == [128]
    # Still connected, own inputs allowed.
    assert sensor.subscribe_inputs() == [1]
    assert sensor.is_connected()



def test_refused_subscription_gets_no_messages(cairnd, module_client):
    # filter's messages stay queued for filter when sensor tries to read them.
    snoop = module_client(cairnd, "sensor")
    assert snoop.subscribe("devices/edge1/modules/filter/#", 1) == [128]
    snoop.publish_acked(b"for-filter", output="temp")
    assert cairnd.queue_length("filter/in") == 1
    filt = module_client(cairnd, "filter")
    filt.subscribe_inputs()
    [m] = filt.expect(1)
    assert m.payload == b"for-filter"
    assert snoop.messages.empty()


def test_qos2_publish_disconnects(cairnd, module_client):
    sensor = module_client(cairnd, "sensor")
    sensor.publish_expect_disconnect(b"exactly-once", output="temp", qos=2)
    assert cairnd.counter("protocolErrors") == 1


def test_subscribe_qos2_granted_1(cairnd, module_client):
    filt = module_client(cairnd, "filter")
    assert filt.subscribe_inputs(qos=2) == [1]
    assert filt.subscribe("$iothub/twin/res/#", 0) == [0]
    # Delivery then happens at QoS 1.
    sensor = module_client(cairnd, "sensor")
    sensor.publish_acked(b"q", output="temp")
    [m] = filt.expect(1)
    assert m.qos == 1


def test_duplicate_client_id_takes_over(cairnd, module_client):
    first = module_client(cairnd, "filter")
    first.subscribe_inputs()
    second = module_client(cairnd, "filter")
    first.wait_disconnected()
    assert second.is_connected()
    second.subscribe_inputs()
    sensor = module_client(cairnd, "sensor")
    sensor.publish_acked(b"to-second", output="temp")
    [m] = second.expect(1)
    assert m.payload == b"to-second"
    assert first.messages.empty()
    wait_for(lambda: cairnd.status()["mqtt"]["connections"] == 2, what="old session released")


def test_takeover_redelivers_unacked_with_dup(cairnd, module_client, raw_mqtt):
    sensor = module_client(cairnd, "sensor")
    for i in range(3):
        sensor.publish_acked(f"m{i}".encode(), output="temp")
    # First consumer: raw socket that receives but never acknowledges.
    first = raw_mqtt(cairnd)
    first.login("filter", clean=False)
    first.send(subscribe_packet(1, [(cairnd.inputs_filter("filter"), 1)]))
    assert first.recv_packet() == (0x90, b"\x00\x01\x01")
    pubs = [first.recv_packet() for _ in range(3)]
    assert all(p[0] & 0xF0 == 0x30 and (p[0] >> 1) & 3 == 1 for p in pubs), pubs
    assert all(not p[0] & 0x08 for p in pubs), "first delivery must not carry DUP"
    second = module_client(cairnd, "filter", clean_session=False)
    first.wait_closed()
    assert second.session_present
    got = second.expect(3)
    assert [m.payload for m in got] == [b"m0", b"m1", b"m2"]
    assert all(m.dup for m in got)
    sensor.publish_acked(b"m3", output="temp")
    [m] = second.expect(1)
    assert m.payload == b"m3" and not m.dup
    wait_for(lambda: cairnd.queue_length("filter/in") == 0, what="queue drained")


def _will(cairnd):
    return {"topic": cairnd.events_topic("sensor", {"$.on": "temp", "kind": "will"}),
            "payload": b"sensor died", "qos": 1, "retain": False}


def test_will_sent_on_unclean_drop(cairnd, module_client):
    filt = module_client(cairnd, "filter")
    filt.subscribe_inputs()
    sensor = module_client(cairnd, "sensor", will=_will(cairnd))
    sensor.publish_acked(b"alive", output="temp")
    [m] = filt.expect(1)
    assert m.payload == b"alive"
    sensor.drop()
    [w] = filt.expect(1)
    assert w.payload == b"sensor died"
    assert w.props["kind"] == "will"
    assert w.props["$.cmid"] == "sensor"


def test_will_sent_on_protocol_violation(cairnd, module_client):
    filt = module_client(cairnd, "filter")
    filt.subscribe_inputs()
    sensor = module_client(cairnd, "sensor", will=_will(cairnd))
    sensor.publish_expect_disconnect(b"bad", output="temp", qos=2)
    [w] = filt.expect(1)
    assert w.payload == b"sensor died"


def test_no_will_on_disconnect(cairnd, module_client, raw_mqtt):
    filt = module_client(cairnd, "filter")
    filt.subscribe_inputs()
    sensor = module_client(cairnd, "sensor", will=_will(cairnd))
    sensor.disconnect()
    # A later message from another connection proves the queue holds nothing before it.
    c = raw_mqtt(cairnd)
    c.login("sensor")
    c.send(publish_packet(cairnd.events_topic("sensor", {"$.on": "temp"}), b"after", qos=1,
                          packet_id=7))
    assert c.recv_packet() == (0x40, b"\x00\x07")
    [m] = filt.expect(1)
    assert m.payload == b"after"
    c.send(DISCONNECT)
    assert c.wait_closed() == []
    assert filt.messages.empty()
    assert cairnd.counter("messagesReceived") == 1


def test_will_sent_on_keepalive_expiry(cairnd, module_client, raw_mqtt):
    filt = module_client(cairnd, "filter")
    filt.subscribe_inputs()
    cairnd.create_identity("sensor")
    c = raw_mqtt(cairnd)
    c.login("sensor", keepalive=1, will=_will(cairnd))
    # Silent client: closed after 1.5 s, and its will is published.
    assert c.wait_closed(timeout=10) == []
    [w] = filt.expect(1)
    assert w.payload == b"sensor died"


def test_will_with_foreign_topic_not_sent(cairnd, module_client):
    filt = module_client(cairnd, "filter")
    filt.subscribe_inputs()
    will = {"topic": "devices/edge1/modules/filter/messages/events/%24.on=temp",
            "payload": b"spoofed will", "qos": 1}
    spy = module_client(cairnd, "spy", will=will)
    spy.drop()
    sensor = module_client(cairnd, "sensor")
    sensor.publish_acked(b"after", output="temp")
    [m] = filt.expect(1)
    assert m.payload == b"after"
    assert cairnd.counter("messagesReceived") == 1


def test_retain_becomes_property(cairnd, module_client):
    filt = module_client(cairnd, "filter")
    filt.subscribe_inputs()
    sensor = module_client(cairnd, "sensor")
    sensor.publish_acked(b"r", output="temp", retain=True)
    [m] = filt.expect(1)
    assert m.props.get("mqtt-retain") == "true"
    assert not m.retain
    # Retained messages are never stored for later subscribers.
    late = module_client(cairnd, "late")
    late.subscribe_inputs()
    sensor.publish_acked(b"plain", output="temp")
    [m2] = filt.expect(1)
    assert "mqtt-retain" not in m2.props
    assert late.messages.empty()


def test_oversize_message_disconnects(cairnd_factory, module_client):
    d = cairnd_factory(config={"mqtt.max_message_bytes": 4096})
    filt = module_client(d, "filter")
    filt.subscribe_inputs()
    sensor = module_client(d, "sensor")
    sensor.publish_acked(b"a" * 4096, output="temp")
    [m] = filt.expect(1)
    assert len(m.payload) == 4096
    sensor.publish_expect_disconnect(b"b" * 4097, output="temp")
    st = d.status()
    assert st["counters"]["messagesOversize"] == 1
    assert st["counters"]["messagesReceived"] == 1
    # Far beyond the limit (the packet itself is rejected while decoding).
    s2 = module_client(d, "sensor")
    s2.publish_expect_disconnect(b"c" * 300000, output="temp")
    assert d.counter("messagesOversize") == 2
    assert filt.messages.empty()


def test_default_limit_256k(cairnd, module_client):
    filt = module_client(cairnd, "filter")
    filt.subscribe_inputs()
    sensor = module_client(cairnd, "sensor")
    sensor.publish_acked(b"z" * 262144, output="temp")
    [m] = filt.expect(1)
    assert len(m.payload) == 262144
    sensor.publish_expect_disconnect(b"z" * 262145, output="temp")
    wait_for(lambda: cairnd.counter("messagesOversize") == 1, what="oversize counted")


@pytest.mark.parametrize("username", [
    "cairn.local/edge1/sensor/?api-version=2018-06-30&DeviceClientType=azure-iot-device%2F1.17.0",
    "cairn.local/edge1/sensor/api-version=2021-04-12",   # no '?', last segment has api-version
    "any.host.name/edge1/sensor/?api-version=2021-04-12&model-id=dtmi%3Ax%3By%3B1&unknown=1",
])
def test_sdk_username_variants_accepted(cairnd, module_client, username):
    cairnd.create_identity("sensor")
    c = module_client(cairnd, "sensor", username=username)
    assert c.is_connected()


def test_token_variants_accepted(cairnd, module_client):
    cairnd.create_identity("sensor")
    key = cairnd.keys["sensor"]
    exp = int(time.time()) + 600
    # Audience host compared case-insensitively; fields in the Node SDK's order with skn.
    resource = "CAIRN.LOCAL/devices/edge1/modules/sensor"
    t = sas_token(resource, key, exp)
    sr, sig, se = t[len("SharedAccessSignature "):].split("&")
    node_order = f"SharedAccessSignature {sr}&{sig}&skn=&{se}"
    for token in (t, node_order):
        c = module_client(cairnd, "sensor", password=token)
        assert c.is_connected()
        c.disconnect()
