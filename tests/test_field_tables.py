"""Field tables and arrays nested deep, in method arguments, in the handshake and in message
headers: a clean refusal where warrenmq cannot follow, never an internal error, and never a
traceback in the log for a client's bad input.

RabbitMQ accepts any depth that fits in a frame; warrenmq takes up to ``MAX_NESTING`` levels in
method arguments, which no real client comes near.
"""

from __future__ import annotations

import logging
import struct
from collections.abc import Iterator
from typing import Any

import pytest
from pamqp import commands, frame
from pamqp.body import ContentBody
from pamqp.header import ContentHeader
from raw_amqp import (
    FRAME_BODY,
    FRAME_HEADER,
    FRAME_METHOD,
    PROTOCOL_HEADER,
    RawAMQP,
    longstr,
    method_payload,
    nested_field_table,
    plain_response,
    raw_frame,
    shortstr,
)
from test_raw_protocol import WAIT, assert_broker_still_works, assert_close, connected

from warrenmq.transports.amqp.frames import MAX_NESTING

EXCLUSIVE = 0x04  # queue.declare's exclusive bit


def declare_with_arguments(channel: int, queue: str, arguments: bytes) -> bytes:
    """queue.declare (exclusive) whose arguments are the given encoded field table."""
    fields = b"\x00\x00" + shortstr(queue) + bytes((EXCLUSIVE,)) + arguments
    return raw_frame(FRAME_METHOD, channel, method_payload(50, 10, fields))


@pytest.fixture
def broker_log(broker: Any, caplog: pytest.LogCaptureFixture) -> Iterator[list[logging.LogRecord]]:
    """The in-process broker's log records (tests using it are warrenmq-only)."""
    with caplog.at_level(logging.INFO, logger="warrenmq"):
        yield caplog.records


def assert_no_traceback(records: list[logging.LogRecord]) -> None:
    for record in records:
        message = record.getMessage()
        assert record.exc_info is None and "Traceback" not in message, message[:2000]
        assert len(message) < 1000, message[:2000]


@pytest.mark.parametrize("array", [False, True], ids=["tables", "arrays"])
def test_nesting_within_the_limit_is_accepted(broker: Any, unique: str, array: bool) -> None:
    with connected(broker) as client:
        client.open_channel(1)
        client.send(declare_with_arguments(1, unique, nested_field_table(MAX_NESTING, array)))
        declare_ok = client.expect(commands.Queue.DeclareOk)
        assert isinstance(declare_ok, commands.Queue.DeclareOk) and declare_ok.queue == unique
        client.close_gracefully()


@pytest.mark.warrenmq_only
@pytest.mark.parametrize("depth", [MAX_NESTING + 1, 15_000])
@pytest.mark.parametrize("array", [False, True], ids=["tables", "arrays"])
def test_deeper_nesting_in_arguments_gets_frame_error(
    broker: Any, broker_log: list[logging.LogRecord], unique: str, depth: int, array: bool
) -> None:
    for _ in range(2):  # the second time must not log a traceback either
        with connected(broker) as client:
            client.open_channel(1)
            client.send(declare_with_arguments(1, unique, nested_field_table(depth, array)))
            close = client.expect_connection_close(wait_closed=False)
            assert_close(
                close, 501, "FRAME_ERROR - field tables and arrays nested deeper", (50, 10)
            )
    assert_no_traceback(broker_log)
    assert_broker_still_works(broker, unique)


@pytest.mark.warrenmq_only
def test_deep_client_properties_are_refused_before_login(
    broker: Any, broker_log: list[logging.LogRecord], unique: str
) -> None:
    """connection.start-ok is decoded before any login: deep nesting there is refused too."""
    with RawAMQP(broker.host, broker.port, timeout=WAIT) as client:
        client.send(PROTOCOL_HEADER)
        client.expect(commands.Connection.Start)
        properties = nested_field_table(500)  # 3.5 KB: fits the 4 KB frames of the handshake
        arguments = properties + shortstr("PLAIN") + longstr(plain_response("guest", "guest"))
        client.send(
            raw_frame(FRAME_METHOD, 0, method_payload(10, 11, arguments + shortstr("en_US")))
        )
        close = client.expect_connection_close(wait_closed=False)
        assert_close(close, 501, "FRAME_ERROR - field tables and arrays nested deeper", (10, 11))
    assert_no_traceback(broker_log)
    assert_broker_still_works(broker, unique)


def bind_for_headers(client: RawAMQP, queue: str) -> None:
    """An exclusive queue bound to amq.headers for messages with header k=v."""
    client.send(declare_with_arguments(1, queue, struct.pack(">I", 0)))
    client.expect(commands.Queue.DeclareOk)
    bind = commands.Queue.Bind(
        queue=queue, exchange="amq.headers", arguments={"x-match": "any", "k": "v"}
    )
    client.send_frame(bind, 1)
    client.expect(commands.Queue.BindOk)


def headers_frame(channel: int, headers: bytes, body_size: int) -> bytes:
    """A content header whose only property is ``headers``, given encoded."""
    payload = struct.pack(">HHQH", 60, 0, body_size, 0x2000) + headers
    return raw_frame(FRAME_HEADER, channel, payload)


@pytest.mark.warrenmq_only
def test_message_headers_too_deep_to_decode_get_frame_error(
    broker: Any, broker_log: list[logging.LogRecord], unique: str
) -> None:
    """Properties are decoded only when needed: here by the headers exchange."""
    with connected(broker) as client:
        client.open_channel(1)
        bind_for_headers(client, unique)
        publish = commands.Basic.Publish(exchange="amq.headers", routing_key="")
        client.send(frame.marshal(publish, 1))
        client.send(headers_frame(1, nested_field_table(3_000), 2))
        client.send(raw_frame(FRAME_BODY, 1, b"hi"))
        close = client.expect_connection_close(wait_closed=False)
        assert_close(close, 501, "FRAME_ERROR - message headers nested too deep", (60, 40))
    assert_no_traceback(broker_log)
    assert_broker_still_works(broker, unique)


def test_message_headers_of_usual_depth_route(broker: Any, unique: str) -> None:
    with connected(broker) as client:
        client.open_channel(1)
        bind_for_headers(client, unique)
        properties = commands.Basic.Properties(headers={"k": "v", "deep": {"a": {"b": [1, [2]]}}})
        client.send_frame(commands.Basic.Publish(exchange="amq.headers", routing_key=""), 1)
        client.send_frame(ContentHeader(0, 2, properties), 1)
        client.send(raw_frame(FRAME_BODY, 1, b"hi"))
        client.send_frame(commands.Basic.Get(queue=unique, no_ack=True), 1)
        client.expect(commands.Basic.GetOk)
        _, header = client.read_frame()
        assert isinstance(header, ContentHeader) and header.properties.headers == properties.headers
        _, body = client.read_frame()
        assert isinstance(body, ContentBody) and body.value == b"hi"
        client.close_gracefully()
