"""Misbehaving clients over raw sockets: the broker answers as RabbitMQ does and is not disturbed.

After every bad client a separate, well-behaved pika connection must still do a publish + get
round trip. Every read waits on the socket with a deadline; nothing sleeps.
"""

from __future__ import annotations

import socket
import struct
import time
from typing import Any

import pika
import pytest
from pamqp import commands, frame
from pamqp.body import ContentBody
from pamqp.header import ContentHeader
from pamqp.heartbeat import Heartbeat
from raw_amqp import (
    FRAME_BODY,
    FRAME_METHOD,
    PROTOCOL_HEADER,
    ConnectionClosedByPeer,
    RawAMQP,
    amqplain_response,
    method_payload,
    plain_response,
    publish_frames,
    raw_frame,
    shortstr,
    start_ok_frame,
)

WAIT = 5.0


def assert_broker_still_works(broker: Any, unique: str) -> None:
    """A fresh pika connection can still declare, publish and get a message back."""
    connection = pika.BlockingConnection(
        pika.ConnectionParameters(
            host=broker.host,
            port=broker.port,
            credentials=pika.PlainCredentials("guest", "guest"),
            socket_timeout=WAIT,
            blocked_connection_timeout=WAIT,
        )
    )
    try:
        channel = connection.channel()
        queue = channel.queue_declare(f"{unique}-health", exclusive=True).method.queue
        channel.basic_publish("", queue, b"still alive")
        method, _properties, body = channel.basic_get(queue, auto_ack=True)
        assert method is not None, "the broker lost a message after a bad client"
        assert body == b"still alive"
    finally:
        connection.close()


def connected(broker: Any, **handshake: Any) -> RawAMQP:
    client = RawAMQP(broker.host, broker.port, timeout=WAIT)
    client.handshake(**handshake)
    return client


def publish_method_frame(channel: int, exchange: str = "", routing_key: str = "x") -> bytes:
    arguments = b"\x00\x00" + shortstr(exchange) + shortstr(routing_key) + b"\x00"
    return raw_frame(FRAME_METHOD, channel, method_payload(60, 40, arguments))


def assert_close(
    close: commands.Connection.Close, code: int, text_prefix: str, class_method: tuple[int, int]
) -> None:
    assert close.reply_code == code, close.reply_text
    assert close.reply_text.startswith(text_prefix), close.reply_text
    assert (close.class_id, close.method_id) == class_method, close.reply_text


# -- protocol header --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "header",
    [
        pytest.param(b"AMQP\x00\x00\x09\x00", id="amqp-0-9-0"),
        pytest.param(b"AMQP\x00\x00\x08\x00", id="amqp-0-8-0"),
        pytest.param(b"AMQP\x00\x01\x00\x00", id="amqp-1-0"),
        pytest.param(b"HTTP/1.1 200 OK\r\n\r\n", id="http-response"),
        pytest.param(b"GET / HTTP/1.1\r\nHost: broker\r\n\r\n", id="http-request"),
        pytest.param(b"\x00" * 8, id="zeros"),
    ],
)
def test_wrong_protocol_header_gets_server_header_and_close(
    broker: Any, unique: str, header: bytes
) -> None:
    with RawAMQP(broker.host, broker.port, timeout=WAIT) as client:
        client.send(header)
        assert client.read_all_until_eof() == PROTOCOL_HEADER
    assert_broker_still_works(broker, unique)


def test_amqp_0_9_legacy_header_is_accepted_as_0_9_1(broker: Any, unique: str) -> None:
    """RabbitMQ treats the old AMQP 0-9 header (class 1, instance 1, 0-9) like 0-9-1."""
    with RawAMQP(broker.host, broker.port, timeout=WAIT) as client:
        client.send(b"AMQP\x01\x01\x00\x09")
        start = client.expect(commands.Connection.Start)
        assert isinstance(start, commands.Connection.Start)
        assert (start.version_major, start.version_minor) == (0, 9)
        client.send(start_ok_frame("PLAIN", plain_response("guest", "guest")))
        tune = client.expect(commands.Connection.Tune)
        assert isinstance(tune, commands.Connection.Tune)
        client.send_frame(commands.Connection.TuneOk(tune.channel_max, tune.frame_max, 0))
        client.send_frame(commands.Connection.Open(virtual_host="/"))
        client.expect(commands.Connection.OpenOk)
        client.open_channel(1)
        client.close_gracefully()
    assert_broker_still_works(broker, unique)


def test_header_sent_in_pieces_is_fine(broker: Any, unique: str) -> None:
    with RawAMQP(broker.host, broker.port, timeout=WAIT) as client:
        for byte in PROTOCOL_HEADER:
            client.send(bytes([byte]))
        client.expect(commands.Connection.Start)
    assert_broker_still_works(broker, unique)


# -- server properties and login --------------------------------------------------------------


def test_connection_start_advertises_capabilities_and_mechanisms(broker: Any) -> None:
    with RawAMQP(broker.host, broker.port, timeout=WAIT) as client:
        client.send(PROTOCOL_HEADER)
        start = client.expect(commands.Connection.Start)
        assert isinstance(start, commands.Connection.Start)
        assert (start.version_major, start.version_minor) == (0, 9)
        properties = start.server_properties
        for key in ("product", "version", "platform"):
            assert isinstance(properties.get(key), str) and properties[key], key
        capabilities = properties["capabilities"]
        assert isinstance(capabilities, dict)
        for name in (
            "publisher_confirms",
            "exchange_exchange_bindings",
            "basic.nack",
            "consumer_cancel_notify",
            "connection.blocked",
            "authentication_failure_close",
            "per_consumer_qos",
        ):
            assert capabilities.get(name) is True, name
        mechanisms = start.mechanisms.split()
        assert "PLAIN" in mechanisms and "AMQPLAIN" in mechanisms
        assert "en_US" in start.locales.split()


def test_tune_proposes_usable_limits(broker: Any) -> None:
    with connected(broker) as client:
        assert client.tune is not None
        assert client.tune.frame_max >= 4096  # the protocol's minimum frame size
        assert client.tune.channel_max > 0
        client.close_gracefully()


@pytest.mark.parametrize("mechanism", ["PLAIN", "AMQPLAIN"])
def test_login_with_each_mechanism(broker: Any, unique: str, mechanism: str) -> None:
    with connected(broker, mechanism=mechanism) as client:
        client.open_channel(1)
        queue = f"{unique}-q"
        client.send_frame(commands.Queue.Declare(queue=queue, exclusive=True), 1)
        declare_ok = client.expect(commands.Queue.DeclareOk)
        assert isinstance(declare_ok, commands.Queue.DeclareOk) and declare_ok.queue == queue
        client.close_gracefully()


@pytest.mark.parametrize(
    ("mechanism", "response"),
    [
        pytest.param("PLAIN", plain_response("guest", "wrong-password"), id="plain-password"),
        pytest.param("PLAIN", plain_response("nobody-here", "guest"), id="plain-user"),
        pytest.param("AMQPLAIN", amqplain_response("guest", "wrong"), id="amqplain-password"),
    ],
)
def test_bad_credentials_get_access_refused(
    broker: Any, unique: str, mechanism: str, response: bytes
) -> None:
    """With the client's authentication_failure_close capability: Connection.Close 403."""
    with RawAMQP(broker.host, broker.port, timeout=WAIT) as client:
        client.send(PROTOCOL_HEADER)
        client.expect(commands.Connection.Start)
        client.send(start_ok_frame(mechanism, response))
        close = client.expect_connection_close()
        assert_close(close, 403, "ACCESS_REFUSED - Login was refused using authentication", (0, 0))
        assert mechanism in close.reply_text
    assert_broker_still_works(broker, unique)


def test_bad_credentials_without_capability_just_close_the_socket(broker: Any, unique: str) -> None:
    """A client that did not announce authentication_failure_close gets no Close frame."""
    with RawAMQP(broker.host, broker.port, timeout=WAIT) as client:
        client.send(PROTOCOL_HEADER)
        client.expect(commands.Connection.Start)
        properties: dict[str, Any] = {"product": "old-client", "capabilities": {}}
        client.send(start_ok_frame("PLAIN", plain_response("guest", "nope"), properties))
        assert client.read_all_until_eof(timeout=8) == b""
    assert_broker_still_works(broker, unique)


def test_unknown_mechanism_never_reaches_tune(broker: Any, unique: str) -> None:
    with RawAMQP(broker.host, broker.port, timeout=WAIT) as client:
        client.send(PROTOCOL_HEADER)
        client.expect(commands.Connection.Start)
        client.send(start_ok_frame("CRAM-MD5", b"guest 0123456789abcdef"))
        deadline = time.monotonic() + 8
        with pytest.raises(ConnectionClosedByPeer):
            while True:
                _, value = client.read_frame(max(0.01, deadline - time.monotonic()))
                assert isinstance(value, commands.Connection.Close), value  # or nothing at all
    assert_broker_still_works(broker, unique)


def test_open_missing_vhost_gets_not_allowed(broker: Any, unique: str) -> None:
    with connected(broker, open_connection=False) as client:
        client.send_frame(commands.Connection.Open(virtual_host=f"{unique}-vhost"))
        close = client.expect_connection_close()
        assert_close(close, 530, f"NOT_ALLOWED - vhost {unique}-vhost not found", (10, 40))
    assert_broker_still_works(broker, unique)


# -- framing errors: 501 FRAME_ERROR ----------------------------------------------------------


def test_bad_frame_end_gets_frame_error_and_the_socket_closes(broker: Any, unique: str) -> None:
    with connected(broker) as client:
        client.open_channel(1)
        client.send(raw_frame(FRAME_METHOD, 1, publish_method_frame(1)[7:-1], end=0x00))
        # the stream is out of sync now, so the server may not read our CloseOk: RabbitMQ
        # closes the socket about 3 s later regardless
        close = client.expect_connection_close(timeout=8)
        assert_close(close, 501, "FRAME_ERROR", (0, 0))
    assert_broker_still_works(broker, unique)


@pytest.mark.parametrize("frame_type", [FRAME_METHOD, FRAME_BODY])
def test_frame_larger_than_frame_max_gets_frame_error(
    broker: Any, unique: str, frame_type: int
) -> None:
    with connected(broker, frame_max=4096) as client:
        assert client.tune is not None
        client.open_channel(1)
        if frame_type == FRAME_BODY:
            client.send(publish_method_frame(1))
            client.send_frame(ContentHeader(0, 10_000, commands.Basic.Properties()), 1)
            payload = b"x" * 4097
        else:
            payload = method_payload(60, 40, b"\x00" * 4093)
        assert len(payload) == 4097  # bigger than the negotiated frame_max however counted
        client.send(raw_frame(frame_type, 1, payload))
        close = client.expect_connection_close(wait_closed=False)
        expected = (
            f"FRAME_ERROR - type {frame_type}, all octets = <<>>: {{frame_too_large,4097,4088}}"
        )
        assert_close(close, 501, expected, (0, 0))
        assert close.reply_text == expected
    assert_broker_still_works(broker, unique)


def test_payload_of_frame_max_bytes_is_accepted(broker: Any, unique: str) -> None:
    """A payload as large as frame_max (the 8 bytes of overhead forgotten) is accepted, as
    RabbitMQ accepts it; one byte more is the frame error above."""
    queue = f"{unique}-fudge"
    with connected(broker, frame_max=4096) as client:
        client.open_channel(1)
        client.send_frame(commands.Queue.Declare(queue=queue, exclusive=True), 1)
        client.expect(commands.Queue.DeclareOk)
        client.send_frame(commands.Confirm.Select(), 1)
        client.expect(commands.Confirm.SelectOk)
        client.send(publish_method_frame(1, routing_key=queue))
        client.send_frame(ContentHeader(0, 4096, commands.Basic.Properties()), 1)
        client.send(raw_frame(FRAME_BODY, 1, b"f" * 4096))
        client.expect(commands.Basic.Ack)  # enqueued
        client.send_frame(commands.Queue.Declare(queue=queue, passive=True), 1)
        declare_ok = client.expect(commands.Queue.DeclareOk)
        assert isinstance(declare_ok, commands.Queue.DeclareOk)
        assert declare_ok.message_count == 1
        client.close_gracefully()
    assert_broker_still_works(broker, unique)


def test_frame_size_checked_against_negotiated_not_proposed_frame_max(
    broker: Any, unique: str
) -> None:
    """Negotiating 4096 makes a 10 KB frame illegal although the server proposed 128 KB."""
    with connected(broker, frame_max=4096) as client:
        assert client.tune is not None and client.tune.frame_max > 10_000
        client.open_channel(1)
        client.send(publish_method_frame(1))
        client.send_frame(ContentHeader(0, 10_000, commands.Basic.Properties()), 1)
        client.send(raw_frame(FRAME_BODY, 1, b"y" * 10_000))
        close = client.expect_connection_close(wait_closed=False)
        assert_close(close, 501, "FRAME_ERROR", (0, 0))
    assert_broker_still_works(broker, unique)


def test_frames_before_tune_ok_are_limited_to_4096_bytes(broker: Any, unique: str) -> None:
    """Before tune-ok the frame limit is the protocol's minimum, as in RabbitMQ, whatever the
    server proposes: a client that has not logged in cannot send large frames. RabbitMQ
    drops the socket; warrenmq sends 501 first."""
    with RawAMQP(broker.host, broker.port, timeout=WAIT) as client:
        client.send(PROTOCOL_HEADER)
        client.expect(commands.Connection.Start)
        properties = {"product": "big", "padding": "x" * 5000}
        client.send(start_ok_frame("PLAIN", plain_response("guest", "guest"), properties))
        with pytest.raises(ConnectionClosedByPeer):
            while True:
                _, value = client.read_method()
                assert isinstance(value, commands.Connection.Close), value  # never Tune
                assert_close(value, 501, "FRAME_ERROR", (0, 0))
                client.send_frame(commands.Connection.CloseOk())
    assert_broker_still_works(broker, unique)


def test_negotiated_frame_max_applies_from_the_frame_after_tune_ok(
    broker: Any, unique: str
) -> None:
    """tune-ok, connection.open, channel.open and a 100 KB body frame sent in one go."""
    queue = f"{unique}-q"
    with RawAMQP(broker.host, broker.port, timeout=WAIT) as client:
        client.send(PROTOCOL_HEADER)
        client.expect(commands.Connection.Start)
        client.send(start_ok_frame("PLAIN", plain_response("guest", "guest")))
        tune = client.expect(commands.Connection.Tune)
        assert isinstance(tune, commands.Connection.Tune) and tune.frame_max > 100_008
        body = b"z" * 100_000
        client.send(
            frame.marshal(commands.Connection.TuneOk(tune.channel_max, tune.frame_max, 0), 0)
            + frame.marshal(commands.Connection.Open(), 0)
            + frame.marshal(commands.Channel.Open(), 1)
            + frame.marshal(commands.Queue.Declare(queue=queue, exclusive=True), 1)
            + publish_frames(1, "", queue, body, frame_max=tune.frame_max)
            + frame.marshal(commands.Basic.Get(queue=queue, no_ack=True), 1)
        )
        for expected in (
            commands.Connection.OpenOk,
            commands.Channel.OpenOk,
            commands.Queue.DeclareOk,
            commands.Basic.GetOk,
        ):
            client.expect(expected)
        client.read_frame()  # the content header
        _, content = client.read_frame()
        assert isinstance(content, ContentBody) and content.value == body
        client.close_gracefully()


@pytest.mark.parametrize("frame_type", [0, 4, 5, 9, 255])
def test_unknown_frame_type_gets_frame_error(broker: Any, unique: str, frame_type: int) -> None:
    with connected(broker) as client:
        client.open_channel(1)
        client.send(raw_frame(frame_type, 1, b"abc"))
        close = client.expect_connection_close()
        assert_close(close, 501, "FRAME_ERROR", (0, 0))
    assert_broker_still_works(broker, unique)


@pytest.mark.parametrize(
    "garbage",
    [
        pytest.param(b"hello, this is not AMQP at all\r\n" * 4, id="text"),
        pytest.param(b"\x01\x00\x01\xff\xff\xff\xff" + b"\x00" * 64, id="huge-size"),
    ],
)
def test_garbage_after_handshake_gets_frame_error(broker: Any, unique: str, garbage: bytes) -> None:
    with connected(broker) as client:
        client.open_channel(1)
        client.send(garbage)
        close = client.expect_connection_close(wait_closed=False)
        assert_close(close, 501, "FRAME_ERROR", (0, 0))
    assert_broker_still_works(broker, unique)


def test_truncated_method_arguments_get_frame_error(broker: Any, unique: str) -> None:
    """Queue.Declare cut short: RabbitMQ reports 501 naming the method it could not decode."""
    with connected(broker) as client:
        client.open_channel(1)
        client.send(raw_frame(FRAME_METHOD, 1, method_payload(50, 10, b"\x00")))
        close = client.expect_connection_close()
        assert_close(close, 501, "FRAME_ERROR", (50, 10))
    assert_broker_still_works(broker, unique)


def test_unknown_method_ends_the_connection(broker: Any, unique: str) -> None:
    """An undefined class/method id: RabbitMQ drops the socket (a 5xx Close would do as well)."""
    with connected(broker) as client:
        client.open_channel(1)
        client.send(raw_frame(FRAME_METHOD, 1, method_payload(60, 999)))
        deadline = time.monotonic() + WAIT
        with pytest.raises(ConnectionClosedByPeer):
            while True:
                _, value = client.read_method(max(0.01, deadline - time.monotonic()))
                assert isinstance(value, commands.Connection.Close), value
                assert value.reply_code is not None and 500 <= value.reply_code < 600
                client.send_frame(commands.Connection.CloseOk())
    assert_broker_still_works(broker, unique)


# -- unexpected frames: 505 UNEXPECTED_FRAME --------------------------------------------------


def test_content_header_without_publish_gets_unexpected_frame(broker: Any, unique: str) -> None:
    with connected(broker) as client:
        client.open_channel(1)
        client.send_frame(ContentHeader(0, 5, commands.Basic.Properties()), 1)
        close = client.expect_connection_close()
        assert_close(close, 505, "UNEXPECTED_FRAME", (0, 0))
    assert_broker_still_works(broker, unique)


def test_content_body_without_publish_gets_unexpected_frame(broker: Any, unique: str) -> None:
    with connected(broker) as client:
        client.open_channel(1)
        client.send_frame(ContentBody(b"hello"), 1)
        close = client.expect_connection_close()
        assert_close(close, 505, "UNEXPECTED_FRAME", (0, 0))
    assert_broker_still_works(broker, unique)


def test_method_where_content_header_expected_gets_unexpected_frame(
    broker: Any, unique: str
) -> None:
    with connected(broker) as client:
        client.open_channel(1)
        client.send(publish_method_frame(1))
        client.send_frame(commands.Queue.Declare(queue="", exclusive=True), 1)
        close = client.expect_connection_close()
        # class/method name the Basic.Publish whose content was interrupted
        assert_close(close, 505, "UNEXPECTED_FRAME", (60, 40))
    assert_broker_still_works(broker, unique)


def test_method_where_content_body_expected_gets_unexpected_frame(broker: Any, unique: str) -> None:
    with connected(broker) as client:
        client.open_channel(1)
        client.send(publish_method_frame(1))
        client.send_frame(ContentHeader(0, 5, commands.Basic.Properties()), 1)
        client.send_frame(ContentBody(b"ab"), 1)  # 3 bytes still owed
        client.send_frame(commands.Queue.Declare(queue="", exclusive=True), 1)
        close = client.expect_connection_close()
        assert_close(close, 505, "UNEXPECTED_FRAME", (60, 40))
    assert_broker_still_works(broker, unique)


def test_content_header_of_the_wrong_class_gets_unexpected_frame(broker: Any, unique: str) -> None:
    with connected(broker) as client:
        client.open_channel(1)
        client.send(publish_method_frame(1))
        client.send(raw_frame(2, 1, struct.pack(">HHQH", 50, 0, 5, 0)))
        close = client.expect_connection_close()
        assert_close(close, 505, "UNEXPECTED_FRAME", (60, 40))
    assert_broker_still_works(broker, unique)


@pytest.mark.parametrize(
    "method",
    [
        pytest.param(commands.Channel.Open(), id="channel.open"),
        pytest.param(commands.Queue.Declare(queue="", exclusive=True), id="queue.declare"),
    ],
)
def test_channel_method_before_connection_open_gets_unexpected_frame(
    broker: Any, unique: str, method: Any
) -> None:
    """After tune-ok but before connection.open, a frame on a channel is out of place."""
    with connected(broker, open_connection=False) as client:
        client.send_frame(method, 1)
        close = client.expect_connection_close()
        assert_close(close, 505, "UNEXPECTED_FRAME", (0, 0))
    assert_broker_still_works(broker, unique)


@pytest.mark.parametrize(
    "payload",
    [
        pytest.param(b"", id="empty"),
        pytest.param(b"\x00\x3c\x00", id="3-bytes"),
        # RabbitMQ takes 12 bytes for a header, then fails on the missing flags with 541
        pytest.param(
            struct.pack(">HHQ", 60, 0, 0), id="no-property-flags", marks=pytest.mark.warrenmq_only
        ),
    ],
)
@pytest.mark.parametrize("after_publish", [True, False], ids=["after-publish", "alone"])
def test_short_content_header_gets_frame_error(
    broker: Any, unique: str, payload: bytes, after_publish: bool
) -> None:
    """A header frame too short to hold class, weight, body size and property flags is
    malformed: 501, whether or not a basic.publish came before it."""
    with connected(broker) as client:
        client.open_channel(1)
        client.send((publish_method_frame(1) if after_publish else b"") + raw_frame(2, 1, payload))
        close = client.expect_connection_close(wait_closed=False)
        assert_close(close, 501, "FRAME_ERROR", (0, 0))
    assert_broker_still_works(broker, unique)


def test_heartbeat_on_a_nonzero_channel_gets_unexpected_frame(broker: Any, unique: str) -> None:
    with connected(broker) as client:
        client.open_channel(1)
        client.send(raw_frame(8, 1, b""))
        close = client.expect_connection_close()
        assert_close(close, 505, "UNEXPECTED_FRAME", (0, 0))
    assert_broker_still_works(broker, unique)


def test_content_is_assembled_per_channel(broker: Any, unique: str) -> None:
    """A half-sent message on channel 1 does not block methods or messages on channel 2."""
    queue = f"{unique}-q"
    with connected(broker) as client:
        client.open_channel(1)
        client.open_channel(2)
        client.send_frame(commands.Queue.Declare(queue=queue, exclusive=True), 2)
        client.expect(commands.Queue.DeclareOk)
        client.send_frame(commands.Confirm.Select(), 1)
        client.expect(commands.Confirm.SelectOk)
        client.send(publish_method_frame(1, routing_key=queue))
        client.send_frame(ContentHeader(0, 6, commands.Basic.Properties()), 1)
        client.send_frame(ContentBody(b"one"), 1)
        client.send(publish_frames(2, "", queue, b"from-2"))
        client.send_frame(commands.Basic.Get(queue=queue, no_ack=True), 2)
        get_ok = client.expect(commands.Basic.GetOk)
        assert isinstance(get_ok, commands.Basic.GetOk) and get_ok.message_count == 0
        _, header = client.read_frame()
        _, content = client.read_frame()
        assert isinstance(header, ContentHeader) and isinstance(content, ContentBody)
        assert content.value == b"from-2"
        client.send_frame(ContentBody(b"two"), 1)  # completes channel 1's message
        channel, ack = client.read_method()
        assert channel == 1 and isinstance(ack, commands.Basic.Ack) and ack.delivery_tag == 1
        client.send_frame(commands.Basic.Get(queue=queue, no_ack=True), 2)
        client.expect(commands.Basic.GetOk)
        _, header = client.read_frame()
        _, content = client.read_frame()
        assert isinstance(content, ContentBody) and content.value == b"onetwo"
        client.close_gracefully()
    assert_broker_still_works(broker, unique)


# -- channels: 504 CHANNEL_ERROR, 530 NOT_ALLOWED ---------------------------------------------


def test_method_on_unopened_channel_gets_channel_error(broker: Any, unique: str) -> None:
    with connected(broker) as client:
        client.send_frame(commands.Queue.Declare(queue="", exclusive=True), 3)
        close = client.expect_connection_close()
        assert_close(close, 504, "CHANNEL_ERROR - expected 'channel.open'", (50, 10))
    assert_broker_still_works(broker, unique)


def test_opening_an_open_channel_gets_channel_error(broker: Any, unique: str) -> None:
    with connected(broker) as client:
        client.open_channel(1)
        client.send_frame(commands.Channel.Open(), 1)
        close = client.expect_connection_close()
        assert_close(close, 504, "CHANNEL_ERROR - second 'channel.open' seen", (20, 10))
    assert_broker_still_works(broker, unique)


@pytest.mark.parametrize(
    "method",
    [
        pytest.param(commands.Channel.Open(), id="channel.open"),
        pytest.param(commands.Queue.Declare(queue="", exclusive=True), id="queue.declare"),
    ],
)
def test_channel_method_on_channel_zero_gets_channel_error(
    broker: Any, unique: str, method: Any
) -> None:
    with connected(broker) as client:
        client.send_frame(method, 0)
        close = client.expect_connection_close()
        assert_close(close, 504, "CHANNEL_ERROR", (method.index >> 16, method.index & 0xFFFF))
    assert_broker_still_works(broker, unique)


@pytest.mark.parametrize(
    ("method", "open_connection", "state"),
    [
        pytest.param(
            commands.Connection.TuneOk(channel_max=0, frame_max=131072),
            False,
            "opening",
            id="second-tune-ok",
        ),
        pytest.param(
            commands.Connection.StartOk(mechanism="PLAIN", response="\0guest\0guest"),
            True,
            "running",
            id="start-ok-when-open",
        ),
        pytest.param(commands.Channel.Open(), False, "opening", id="channel.open-on-0"),
    ],
)
def test_method_out_of_place_on_channel_zero_gets_channel_error(
    broker: Any, unique: str, method: Any, open_connection: bool, state: str
) -> None:
    with connected(broker, open_connection=open_connection) as client:
        client.send_frame(method, 0)
        close = client.expect_connection_close()
        expected = f"CHANNEL_ERROR - unexpected method in connection state {state}"
        assert_close(close, 504, expected, (method.index >> 16, method.index & 0xFFFF))
    assert_broker_still_works(broker, unique)


def test_channel_beyond_negotiated_channel_max_gets_not_allowed(broker: Any, unique: str) -> None:
    """channel_max 2: channels 1 and 2 open, a third (numbered 3) is refused with 530.

    RabbitMQ counts open channels against channel_max rather than checking the number, so this
    test opens exactly channel_max channels first and then one more, numbered channel_max + 1.
    """
    with connected(broker, channel_max=2) as client:
        client.open_channel(1)
        client.open_channel(2)
        client.send_frame(commands.Channel.Open(), 3)
        close = client.expect_connection_close()
        assert_close(close, 530, "NOT_ALLOWED", (0, 0))
        assert close.reply_text == (
            "NOT_ALLOWED - number of channels opened (2) has reached the negotiated channel_max (2)"
        )
    assert_broker_still_works(broker, unique)


def test_channel_can_be_reopened_after_close(broker: Any, unique: str) -> None:
    with connected(broker) as client:
        client.open_channel(5)
        client.send_frame(commands.Channel.Close(200, "done", 0, 0), 5)
        client.expect(commands.Channel.CloseOk)
        client.open_channel(5)
        client.close_gracefully()
    assert_broker_still_works(broker, unique)


def test_channel_error_closes_only_the_channel(broker: Any, unique: str) -> None:
    """Passive declare of a missing queue: Channel.Close 404 on that channel, connection lives."""
    with connected(broker) as client:
        client.open_channel(1)
        client.open_channel(2)
        client.send_frame(commands.Queue.Declare(queue=f"{unique}-none", passive=True), 1)
        channel, close = client.read_method()
        assert channel == 1 and isinstance(close, commands.Channel.Close)
        assert close.reply_code == 404
        assert close.reply_text == f"NOT_FOUND - no queue '{unique}-none' in vhost '/'"
        assert (close.class_id, close.method_id) == (50, 10)
        # until CloseOk, further methods on the closing channel are ignored
        client.send_frame(commands.Queue.Declare(queue="", exclusive=True), 1)
        client.send_frame(commands.Channel.CloseOk(), 1)
        client.send_frame(commands.Queue.Declare(queue="", exclusive=True), 2)
        channel, declare_ok = client.read_method()
        assert channel == 2 and isinstance(declare_ok, commands.Queue.DeclareOk)
        client.open_channel(1)
        client.close_gracefully()
    assert_broker_still_works(broker, unique)


# -- clients that vanish ----------------------------------------------------------------------


@pytest.mark.parametrize(
    "cut",
    [
        pytest.param(3, id="inside-frame-header"),
        pytest.param(12, id="inside-payload"),
    ],
)
def test_client_that_stops_mid_frame_and_disconnects(broker: Any, unique: str, cut: int) -> None:
    with connected(broker) as client:
        client.open_channel(1)
        client.send(publish_method_frame(1)[:cut])
    assert_broker_still_works(broker, unique)


def test_client_that_disconnects_mid_message_publishes_nothing(broker: Any, unique: str) -> None:
    queue = f"{unique}-kept"
    with connected(broker) as client:
        client.open_channel(1)
        client.send_frame(commands.Queue.Declare(queue=queue, auto_delete=False), 1)
        client.expect(commands.Queue.DeclareOk)
        client.send(publish_method_frame(1, routing_key=queue))
        client.send_frame(ContentHeader(0, 10, commands.Basic.Properties()), 1)
        client.send_frame(ContentBody(b"half!"), 1)
    with connected(broker) as checker:
        checker.open_channel(1)
        checker.send_frame(commands.Queue.Declare(queue=queue, passive=True), 1)
        declare_ok = checker.expect(commands.Queue.DeclareOk)
        assert isinstance(declare_ok, commands.Queue.DeclareOk)
        assert declare_ok.message_count == 0
        checker.send_frame(commands.Queue.Delete(queue=queue), 1)
        checker.expect(commands.Queue.DeleteOk)
        checker.close_gracefully()
    assert_broker_still_works(broker, unique)


def test_client_that_vanishes_during_handshake(broker: Any, unique: str) -> None:
    with RawAMQP(broker.host, broker.port, timeout=WAIT) as client:
        client.send(PROTOCOL_HEADER)
        client.expect(commands.Connection.Start)
        client.sock.shutdown(socket.SHUT_RDWR)
    assert_broker_still_works(broker, unique)


# -- heartbeats -------------------------------------------------------------------------------


def test_silent_client_gets_heartbeats_then_is_dropped(broker: Any, unique: str) -> None:
    """heartbeat=1 and the client sends nothing: the server sends heartbeats on channel 0, then
    closes the socket after missing the client's (RabbitMQ: after ~3 s, without a Close frame).
    """
    with connected(broker, heartbeat=1) as client:
        start = time.monotonic()
        heartbeats = 0
        with pytest.raises(ConnectionClosedByPeer):
            while True:
                channel, value = client.read_frame(max(0.01, start + 8 - time.monotonic()))
                assert channel == 0 and isinstance(value, Heartbeat), value
                heartbeats += 1
        elapsed = time.monotonic() - start
    assert heartbeats >= 1
    assert 1.0 <= elapsed <= 8.0, elapsed
    assert_broker_still_works(broker, unique)


def test_client_sending_heartbeats_is_kept(broker: Any, unique: str) -> None:
    with connected(broker, heartbeat=1) as client:
        start = time.monotonic()
        received = 0
        next_beat = start
        while time.monotonic() - start < 3.5:  # longer than a silent client survives
            if time.monotonic() >= next_beat:
                client.send_frame(Heartbeat())
                next_beat += 0.4
            try:
                channel, value = client.read_frame(max(0.01, next_beat - time.monotonic()))
            except TimeoutError:
                continue
            assert channel == 0 and isinstance(value, Heartbeat), value
            received += 1
        assert received >= 2
        client.open_channel(1)
        client.send_frame(commands.Queue.Declare(queue=f"{unique}-q", exclusive=True), 1)
        client.expect(commands.Queue.DeclareOk)
        client.close_gracefully()
    assert_broker_still_works(broker, unique)
