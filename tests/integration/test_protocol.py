"""MQTT 3.1.1 framing and session rules, over raw sockets (plain port unless stated)."""
import time

from conftest import (DISCONNECT, PINGREQ, connect_packet, packet, publish_packet,
                      puback_packet, subscribe_packet, wait_for)


def test_garbage_first_packet_closed(cairnd, raw_mqtt):
    c = raw_mqtt(cairnd)
    c.send(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    assert c.wait_closed() == []
    assert cairnd.counter("protocolErrors") >= 1


def test_publish_before_connect_closed(cairnd, raw_mqtt):
    c = raw_mqtt(cairnd)
    c.send(publish_packet("devices/edge1/modules/sensor/messages/events/", b"x", qos=1))
    assert c.wait_closed() == []
    assert cairnd.counter("messagesReceived") == 0


def test_bad_remaining_length_closed(cairnd, raw_mqtt):
    cairnd.create_identity("sensor")
    c = raw_mqtt(cairnd)
    c.login("sensor")
    # Five continuation bytes: not a valid remaining length.
    c.send(b"\x30\xff\xff\xff\xff\x7f")
    assert c.wait_closed() == []


def test_garbage_over_tls_closed(cairnd, raw_mqtt):
    c = raw_mqtt(cairnd, tls=True)
    c.send(b"\x00" * 64)
    assert c.wait_closed() == []


def test_plain_bytes_to_tls_port_closed(cairnd):
    import socket
    s = socket.create_connection(("127.0.0.1", cairnd.tls_port), timeout=10)
    s.sendall(connect_packet("edge1/sensor", "u", "p"))
    data = b""
    while True:
        chunk = s.recv(4096)
        if not chunk:
            break
        data += chunk
    s.close()
    assert not data.startswith(b"\x20\x02")  # never a CONNACK in clear text


def test_mqtt5_connect_gets_rc1(cairnd, raw_mqtt):
    cairnd.create_identity("sensor")
    c = raw_mqtt(cairnd)
    c.send(connect_packet(cairnd.client_id("sensor"), cairnd.username("sensor"),
                          cairnd.token("sensor"), level=5))
    sp, rc = c.expect_connack()
    assert rc == 1
    assert c.wait_closed() == []
    assert cairnd.counter("connectionsRefused") == 1


def test_mqtt31_connect_gets_rc1(cairnd, raw_mqtt):
    c = raw_mqtt(cairnd)
    c.send(connect_packet("edge1/sensor", "u", "p", level=3, protocol_name="MQIsdp"))
    sp, rc = c.expect_connack()
    assert rc == 1
    assert c.wait_closed() == []


def test_second_connect_closed(cairnd, raw_mqtt):
    cairnd.create_identity("sensor")
    c = raw_mqtt(cairnd)
    c.login("sensor")
    c.send(connect_packet(cairnd.client_id("sensor"), cairnd.username("sensor"),
                          cairnd.token("sensor")))
    assert c.wait_closed() == []
    assert cairnd.counter("protocolErrors") == 1


def test_packet_split_byte_by_byte(cairnd, raw_mqtt, module_client):
    filt = module_client(cairnd, "filter")
    filt.subscribe_inputs()
    cairnd.create_identity("sensor")
    c = raw_mqtt(cairnd)
    data = connect_packet(cairnd.client_id("sensor"), cairnd.username("sensor"),
                          cairnd.token("sensor"))
    data += publish_packet(cairnd.events_topic("sensor", {"$.on": "temp", "k": "v"}),
                           b"dribbled", qos=1, packet_id=42)
    data += PINGREQ
    for b in data:
        c.send(bytes([b]))
        time.sleep(0.001)
    assert c.expect_connack() == (0, 0)
    # The PUBACK waits for the store commit; the PINGRESP may overtake it.
    assert sorted([c.recv_packet(), c.recv_packet()]) == [(0x40, b"\x00\x2a"), (0xD0, b"")]
    [m] = filt.expect(1)
    assert m.payload == b"dribbled"
    assert m.props["k"] == "v"


def subscribed_filter_and_raw_sensor(cairnd, raw_mqtt, module_client):
    """A "filter" module subscribed to its inputs, a raw connection for module "sensor", the
    sensor's CONNECT packet (not sent yet) and its telemetry topic."""
    filt = module_client(cairnd, "filter")
    filt.subscribe_inputs()
    cairnd.create_identity("sensor")
    c = raw_mqtt(cairnd)
    data = connect_packet(cairnd.client_id("sensor"), cairnd.username("sensor"),
                          cairnd.token("sensor"))
    return filt, c, data, cairnd.events_topic("sensor", {"$.on": "temp"})


def test_many_packets_in_one_write(cairnd, raw_mqtt, module_client):
    filt, c, data, topic = subscribed_filter_and_raw_sensor(cairnd, raw_mqtt, module_client)
    n = 200
    for i in range(1, n + 1):
        data += publish_packet(topic, f"m{i}".encode(), qos=1, packet_id=i)
    c.send(data)
    assert c.expect_connack() == (0, 0)
    acks = [c.recv_packet() for _ in range(n)]
    # PUBACKs in the order of the PUBLISHes [MQTT-4.6.0-2].
    assert acks == [(0x40, i.to_bytes(2, "big")) for i in range(1, n + 1)]
    got = filt.expect(n)
    assert [m.payload for m in got] == [f"m{i}".encode() for i in range(1, n + 1)]


def test_puback_order_includes_twin_and_method_publishes(cairnd, raw_mqtt, module_client):
    # Twin requests and method responses are answered at once, telemetry after its store
    # commit: their PUBACKs must still leave in the order the PUBLISHes came [MQTT-4.6.0-2].
    filt, c, data, topic = subscribed_filter_and_raw_sensor(cairnd, raw_mqtt, module_client)
    n = 120
    for i in range(1, n + 1):
        if i % 3 == 1:
            data += publish_packet(topic, f"m{i}".encode(), qos=1, packet_id=i)
        elif i % 3 == 2:
            data += publish_packet(f"$iothub/twin/GET/?$rid={i}", b"", qos=1, packet_id=i)
        else:
            data += publish_packet(f"$iothub/methods/res/200/?$rid={i}", b"{}", qos=1,
                                   packet_id=i)
    c.send(data)
    assert c.expect_connack() == (0, 0)
    acks = []
    while len(acks) < n:
        p = c.recv_packet()
        assert p is not None, "connection closed"
        if p[0] == 0x40:
            acks.append(int.from_bytes(p[1], "big"))
    assert acks == list(range(1, n + 1))
    got = filt.expect(n // 3 + (1 if n % 3 else 0))
    assert [m.payload for m in got] == [f"m{i}".encode() for i in range(1, n + 1, 3)]


def test_keepalive_expiry(cairnd, raw_mqtt):
    cairnd.create_identity("sensor")
    c = raw_mqtt(cairnd)
    c.login("sensor", keepalive=1)
    t0 = time.monotonic()
    assert c.wait_closed(timeout=10) == []
    elapsed = time.monotonic() - t0
    # 1.5 x the client's keep-alive [MQTT-3.1.2-24]: 1.5 s, not rounded up to 2 s.
    assert 1.4 <= elapsed < 1.9, elapsed


def test_keepalive_kept_by_pings(cairnd, raw_mqtt):
    cairnd.create_identity("sensor")
    c = raw_mqtt(cairnd)
    c.login("sensor", keepalive=1)
    end = time.monotonic() + 4
    while time.monotonic() < end:
        c.send(PINGREQ)
        assert c.recv_packet(timeout=5) == (0xD0, b"")
        time.sleep(0.5)
    # Still alive after well over 1.5 s of pings.
    c.send(PINGREQ)
    assert c.recv_packet(timeout=5) == (0xD0, b"")


def test_connect_timeout(cairnd_factory, raw_mqtt):
    d = cairnd_factory(config={"mqtt.connect_timeout_secs": 1})
    c = raw_mqtt(d)
    t0 = time.monotonic()
    assert c.wait_closed(timeout=10) == []
    assert time.monotonic() - t0 < 5


def test_connect_timeout_during_tls_handshake(cairnd_factory):
    import socket
    d = cairnd_factory(config={"mqtt.connect_timeout_secs": 1})
    s = socket.create_connection(("127.0.0.1", d.tls_port), timeout=10)
    t0 = time.monotonic()
    assert s.recv(100) == b""  # closed without a handshake ever starting
    assert time.monotonic() - t0 < 5
    s.close()
    wait_for(lambda: d.status()["mqtt"]["connections"] == 0, what="connection released")


def test_subscribe_suback_codes(cairnd, raw_mqtt):
    cairnd.create_identity("filter")
    c = raw_mqtt(cairnd)
    c.login("filter")
    c.send(subscribe_packet(9, [(cairnd.inputs_filter("filter"), 2),
                                ("devices/edge1/modules/other/#", 1),
                                ("$iothub/twin/res/#", 0),
                                ("devices/edge1/modules/filter/inputs/in", 1)]))
    # Own inputs: granted 1 (QoS 2 downgraded); another module's: 0x80; twin responses: 0;
    # a filter that is not the module-messages shape: not supported, 0x80.
    assert c.recv_packet() == (0x90, b"\x00\x09\x01\x80\x00\x80")
    c.send(PINGREQ)
    assert c.recv_packet() == (0xD0, b"")


def test_invalid_topic_filter_closes(cairnd, raw_mqtt):
    # A malformed filter ('#' not last) is a protocol violation [MQTT-4.7.1-2].
    cairnd.create_identity("filter")
    c = raw_mqtt(cairnd)
    c.login("filter")
    c.send(subscribe_packet(3, [("devices/edge1/modules/filter/#/x", 1)]))
    assert c.wait_closed() == []


def test_unsubscribe_stops_delivery(cairnd, raw_mqtt, module_client):
    sensor = module_client(cairnd, "sensor")
    cairnd.create_identity("filter")
    c = raw_mqtt(cairnd)
    c.login("filter")
    f = cairnd.inputs_filter("filter").encode()
    c.send(subscribe_packet(1, [(f.decode(), 1)]))
    assert c.recv_packet()[0] == 0x90
    sensor.publish_acked(b"one", output="temp")
    first, body = c.recv_packet()
    assert first & 0xF0 == 0x30
    topic_len = int.from_bytes(body[:2], "big")
    pid = body[2 + topic_len:4 + topic_len]
    assert body[4 + topic_len:] == b"one"
    c.send(puback_packet(int.from_bytes(pid, "big")))
    c.send(packet(0xA2, b"\x00\x02" + len(f).to_bytes(2, "big") + f))
    assert c.recv_packet() == (0xB0, b"\x00\x02")
    sensor.publish_acked(b"two", output="temp")
    assert cairnd.queue_length("filter/in") == 1
    c.send(PINGREQ)
    assert c.recv_packet() == (0xD0, b"")  # and no PUBLISH before it


def test_disconnect_closes(cairnd, raw_mqtt):
    cairnd.create_identity("sensor")
    c = raw_mqtt(cairnd)
    c.login("sensor")
    c.send(DISCONNECT)
    assert c.wait_closed() == []
    wait_for(lambda: cairnd.status()["mqtt"]["connections"] == 0, what="connection count 0")


def test_many_connections_and_counts(cairnd_factory, raw_mqtt):
    # 20 sockets that never log in, all from one address: more than the default
    # mqtt.max_unauthenticated_per_address (test_limits.py).
    cairnd = cairnd_factory(config={"mqtt.max_unauthenticated_per_address": 20})
    cairnd.create_identity("sensor")
    conns = [raw_mqtt(cairnd) for _ in range(20)]
    wait_for(lambda: cairnd.status()["mqtt"]["connections"] == 20, what="20 connections")
    for c in conns:
        c.close()
    wait_for(lambda: cairnd.status()["mqtt"]["connections"] == 0, what="0 connections")


def test_max_connections(cairnd_factory, raw_mqtt):
    d = cairnd_factory(config={"mqtt.max_connections": 2})
    d.create_identity("sensor")
    a = raw_mqtt(d)
    b = raw_mqtt(d)
    wait_for(lambda: d.status()["mqtt"]["connections"] == 2, what="2 connections")
    c = raw_mqtt(d)
    assert c.wait_closed() == []
    a.close()
    wait_for(lambda: d.status()["mqtt"]["connections"] == 1, what="1 connection")
    e = raw_mqtt(d)
    e.login("sensor")
    b.close()


def test_sessions_are_released(cairnd, module_client, raw_mqtt):
    # Every way a connection ends must free its session (a leaked session keeps counting).
    filt = module_client(cairnd, "filter")
    filt.subscribe_inputs()
    sensor = module_client(cairnd, "sensor")
    sensor.publish_acked(b"x", output="temp")
    filt.expect(1)
    sensor.disconnect()                                   # DISCONNECT
    filt2 = module_client(cairnd, "filter")               # takeover
    filt.wait_disconnected()
    filt2.subscribe_inputs()
    filt2.drop()                                          # unclean
    s2 = module_client(cairnd, "sensor")
    s2.publish_expect_disconnect(b"q2", output="temp", qos=2)   # protocol violation
    c = raw_mqtt(cairnd)                                  # refused CONNECT
    c.send(connect_packet("edge1/sensor", "bad", "bad"))
    c.wait_closed()
    k = raw_mqtt(cairnd)                                  # keep-alive expiry
    k.login("sensor", keepalive=1)
    k.wait_closed()
    wait_for(lambda: cairnd.status()["mqtt"]["connections"] == 0, what="all sessions released")


def test_server_certificate_names_and_stable_ca(cairnd_factory):
    import socket
    import ssl
    d = cairnd_factory(top={"hostname": "gw.example"})
    ca = d.ca_path.read_bytes()
    ctx = ssl.create_default_context(cafile=str(d.ca_path))
    for name in ("gw.example", "localhost"):
        with socket.create_connection(("127.0.0.1", d.tls_port), timeout=10) as s:
            with ctx.wrap_socket(s, server_hostname=name) as t:
                assert t.version() in ("TLSv1.2", "TLSv1.3")
    # 127.0.0.1 as an IP SAN.
    with socket.create_connection(("127.0.0.1", d.tls_port), timeout=10) as s:
        with ctx.wrap_socket(s, server_hostname="127.0.0.1"):
            pass
    with socket.create_connection(("127.0.0.1", d.tls_port), timeout=10) as s:
        try:
            ctx.wrap_socket(s, server_hostname="other.example")
            raise AssertionError("certificate accepted for a name it does not carry")
        except ssl.SSLCertVerificationError:
            pass
    # The CA survives a restart: clients keep trusting the same file.
    d.restart()
    assert d.ca_path.read_bytes() == ca
    cs = d.create_identity("m")
    assert cs["GatewayHostName"] == "gw.example"
