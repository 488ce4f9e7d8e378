"""Errors through pika: reply codes and texts, channel- versus connection-level closes, and the
rest of the broker carrying on afterwards."""

from __future__ import annotations

import pika
import pytest
from pika.adapters.blocking_connection import BlockingChannel
from pika_helpers import (
    Collector,
    Connections,
    channel_closed,
    confirmed_channel,
    connection_closed,
    get_bodies,
    wait_until,
)

pytestmark = pytest.mark.timeout(20)


@pytest.fixture
def ch(conns: Connections) -> BlockingChannel:
    return conns.channel()


def assert_round_trip(channel: BlockingChannel, name: str) -> None:
    """A message still goes through ``channel``: declare, publish, get."""
    channel.queue_declare(name, exclusive=True)
    channel.basic_publish("", name, b"still working")
    wait_until(
        channel.connection,
        lambda: channel.queue_declare(name, passive=True).method.message_count == 1,
        "the message to arrive",
    )
    assert get_bodies(channel, name) == [b"still working"]


# --- 404 NOT_FOUND ---------------------------------------------------------------------------


def test_publish_to_missing_exchange(ch: BlockingChannel, unique: str) -> None:
    ch.basic_publish(unique, "key", b"m")  # asynchronous: the close arrives later
    with channel_closed(404, f"NOT_FOUND - no exchange '{unique}' in vhost '/'"):
        ch.queue_declare("", exclusive=True)


def test_bind_queue_to_missing_exchange(ch: BlockingChannel, unique: str) -> None:
    ch.queue_declare(unique, exclusive=True)
    with channel_closed(404, f"NOT_FOUND - no exchange '{unique}.x' in vhost '/'"):
        ch.queue_bind(unique, f"{unique}.x", routing_key="k")


def test_bind_exchange_to_missing_exchange(ch: BlockingChannel, unique: str) -> None:
    with channel_closed(404, "NOT_FOUND", f"no exchange '{unique}.src' in vhost '/'"):
        ch.exchange_bind(destination="amq.fanout", source=f"{unique}.src")


def test_bind_missing_queue(ch: BlockingChannel, unique: str) -> None:
    with channel_closed(404, f"NOT_FOUND - no queue '{unique}' in vhost '/'"):
        ch.queue_bind(unique, "amq.direct", routing_key="k")


def test_consume_missing_queue(ch: BlockingChannel, unique: str) -> None:
    with channel_closed(404, f"NOT_FOUND - no queue '{unique}' in vhost '/'"):
        ch.basic_consume(unique, Collector())


def test_get_from_missing_queue(ch: BlockingChannel, unique: str) -> None:
    with channel_closed(404, f"NOT_FOUND - no queue '{unique}' in vhost '/'"):
        ch.basic_get(unique)


def test_purge_missing_queue(ch: BlockingChannel, unique: str) -> None:
    with channel_closed(404, f"NOT_FOUND - no queue '{unique}' in vhost '/'"):
        ch.queue_purge(unique)


def test_passive_declare_missing(conns: Connections, unique: str) -> None:
    with channel_closed(404, f"NOT_FOUND - no queue '{unique}' in vhost '/'"):
        conns.channel().queue_declare(unique, passive=True)
    with channel_closed(404, f"NOT_FOUND - no exchange '{unique}' in vhost '/'"):
        conns.channel().exchange_declare(unique, passive=True)


# --- 406 PRECONDITION_FAILED -----------------------------------------------------------------


@pytest.mark.parametrize(("first", "second"), [(False, True), (True, False)])
def test_redeclare_queue_with_other_durability(
    conns: Connections, unique: str, first: bool, second: bool
) -> None:
    ch = conns.channel()
    conns.track(queue=unique)
    ch.queue_declare(unique, durable=first)
    with channel_closed(
        406,
        f"PRECONDITION_FAILED - inequivalent arg 'durable' for queue '{unique}' in vhost '/': "
        f"received '{str(second).lower()}' but current is '{str(first).lower()}'",
    ):
        ch.queue_declare(unique, durable=second)


def test_redeclare_exclusive_queue_durability_is_not_checked(
    conns: Connections, unique: str
) -> None:
    ch = conns.channel()
    ch.queue_declare(unique, exclusive=True)
    ok = ch.queue_declare(unique, exclusive=True, durable=True).method  # RabbitMQ shrugs
    assert ok.queue == unique


def test_redeclare_queue_with_other_exclusivity(conns: Connections, unique: str) -> None:
    ch = conns.channel()
    ch.queue_declare(unique, exclusive=True)
    with channel_closed(
        405,
        f"RESOURCE_LOCKED - cannot obtain exclusive access to locked queue '{unique}' in vhost '/'",
    ):
        ch.queue_declare(unique, exclusive=False)  # even on the owning connection


def test_redeclare_queue_with_other_arguments(conns: Connections, unique: str) -> None:
    ch = conns.channel()
    ch.queue_declare(unique, exclusive=True, arguments={"x-max-length": 10})
    ch.queue_declare(unique, exclusive=True, arguments={"x-max-length": 10})  # same: fine
    with channel_closed(
        406,
        "PRECONDITION_FAILED",
        f"inequivalent arg 'x-max-length' for queue '{unique}' in vhost '/'",
    ):
        ch.queue_declare(unique, exclusive=True, arguments={"x-max-length": 20})


def test_redeclare_queue_with_other_auto_delete(conns: Connections, unique: str) -> None:
    ch = conns.channel()
    ch.queue_declare(unique, exclusive=True)
    with channel_closed(
        406, "PRECONDITION_FAILED", f"inequivalent arg 'auto_delete' for queue '{unique}'"
    ):
        ch.queue_declare(unique, exclusive=True, auto_delete=True)


def test_redeclare_exchange_with_other_type(conns: Connections, unique: str) -> None:
    ch = conns.channel()
    conns.track(exchange=unique)
    ch.exchange_declare(unique, "direct")
    with channel_closed(
        406,
        f"PRECONDITION_FAILED - inequivalent arg 'type' for exchange '{unique}' in vhost '/': "
        "received 'fanout' but current is 'direct'",
    ):
        ch.exchange_declare(unique, "fanout")


def test_redeclare_exchange_with_other_durability(conns: Connections, unique: str) -> None:
    ch = conns.channel()
    conns.track(exchange=unique)
    ch.exchange_declare(unique, "topic", durable=True)
    with channel_closed(
        406,
        f"PRECONDITION_FAILED - inequivalent arg 'durable' for exchange '{unique}' in vhost '/': "
        "received 'false' but current is 'true'",
    ):
        ch.exchange_declare(unique, "topic", durable=False)


def test_redeclare_exchange_with_other_arguments(conns: Connections, unique: str) -> None:
    ch = conns.channel()
    conns.track(exchange=unique)
    ch.exchange_declare(unique, "topic", arguments={"alternate-exchange": "amq.fanout"})
    with channel_closed(
        406, "PRECONDITION_FAILED", f"inequivalent arg 'alternate-exchange' for exchange '{unique}'"
    ):
        ch.exchange_declare(unique, "topic", arguments={"alternate-exchange": "amq.direct"})


def test_ack_unknown_delivery_tag(ch: BlockingChannel) -> None:
    ch.basic_ack(42)
    with channel_closed(406, "PRECONDITION_FAILED - unknown delivery tag 42"):
        ch.queue_declare("", exclusive=True)


def test_double_ack(ch: BlockingChannel, unique: str) -> None:
    ch.queue_declare(unique, exclusive=True)
    ch.basic_publish("", unique, b"m")
    method, _props, body = ch.basic_get(unique)
    assert body == b"m"
    ch.basic_ack(method.delivery_tag)
    ch.basic_ack(method.delivery_tag)
    with channel_closed(406, f"PRECONDITION_FAILED - unknown delivery tag {method.delivery_tag}"):
        ch.queue_declare("", exclusive=True)


def test_ack_of_auto_acked_delivery(ch: BlockingChannel, unique: str) -> None:
    ch.queue_declare(unique, exclusive=True)
    ch.basic_publish("", unique, b"m")
    method, _props, _body = ch.basic_get(unique, auto_ack=True)
    ch.basic_nack(method.delivery_tag)
    with channel_closed(406, f"PRECONDITION_FAILED - unknown delivery tag {method.delivery_tag}"):
        ch.queue_declare("", exclusive=True)


def test_delivery_tags_are_per_channel(conns: Connections, unique: str) -> None:
    connection = conns.open()
    first, second = connection.channel(), connection.channel()
    first.queue_declare(unique, exclusive=True)
    first.basic_publish("", unique, b"m")
    method, _props, _body = first.basic_get(unique)
    second.basic_ack(method.delivery_tag)
    with channel_closed(406, f"unknown delivery tag {method.delivery_tag}"):
        second.queue_declare("", exclusive=True)
    first.basic_ack(method.delivery_tag)
    assert first.queue_declare(unique, passive=True).method.message_count == 0


# --- 405 RESOURCE_LOCKED ---------------------------------------------------------------------


def test_other_connections_exclusive_queue(conns: Connections, unique: str) -> None:
    conns.channel().queue_declare(unique, exclusive=True)
    text = (
        f"RESOURCE_LOCKED - cannot obtain exclusive access to locked queue '{unique}' in vhost '/'"
    )
    with channel_closed(405, text):
        conns.channel().queue_declare(unique, exclusive=True)
    with channel_closed(405, text):
        conns.channel().queue_declare(unique)  # non-exclusive redeclare is refused as well
    with channel_closed(405, text):
        conns.channel().queue_bind(unique, "amq.fanout")
    with channel_closed(405, text):
        conns.channel().basic_get(unique)


# --- 403 ACCESS_REFUSED ----------------------------------------------------------------------


def test_reserved_queue_name(ch: BlockingChannel, unique: str) -> None:
    with channel_closed(
        403, f"ACCESS_REFUSED - queue name 'amq.{unique}' contains reserved prefix 'amq.*'"
    ):
        ch.queue_declare(f"amq.{unique}")


def test_reserved_exchange_name(ch: BlockingChannel, unique: str) -> None:
    with channel_closed(
        403, f"ACCESS_REFUSED - exchange name 'amq.{unique}' contains reserved prefix 'amq.*'"
    ):
        ch.exchange_declare(f"amq.{unique}", "direct")


def test_passive_declare_of_reserved_missing_names_is_404(conns: Connections, unique: str) -> None:
    with channel_closed(404, f"NOT_FOUND - no queue 'amq.{unique}' in vhost '/'"):
        conns.channel().queue_declare(f"amq.{unique}", passive=True)
    with channel_closed(404, f"NOT_FOUND - no exchange 'amq.{unique}' in vhost '/'"):
        conns.channel().exchange_declare(f"amq.{unique}", passive=True)


def test_delete_predeclared_exchange(ch: BlockingChannel) -> None:
    with channel_closed(403, "ACCESS_REFUSED", "amq.direct"):
        ch.exchange_delete("amq.direct")


DEFAULT_EXCHANGE = "ACCESS_REFUSED - operation not permitted on the default exchange"


def test_bind_queue_to_default_exchange(ch: BlockingChannel, unique: str) -> None:
    ch.queue_declare(unique, exclusive=True)
    with channel_closed(403, DEFAULT_EXCHANGE):
        ch.queue_bind(unique, "", routing_key="other")


def test_unbind_queue_from_default_exchange(ch: BlockingChannel, unique: str) -> None:
    ch.queue_declare(unique, exclusive=True)
    with channel_closed(403, DEFAULT_EXCHANGE):
        ch.queue_unbind(unique, "", routing_key=unique)


def test_exchange_bind_with_default_exchange(conns: Connections) -> None:
    with channel_closed(403, DEFAULT_EXCHANGE):
        conns.channel().exchange_bind(destination="", source="amq.direct", routing_key="k")
    with channel_closed(403, DEFAULT_EXCHANGE):
        conns.channel().exchange_bind(destination="amq.fanout", source="", routing_key="k")


def test_declare_default_exchange(ch: BlockingChannel) -> None:
    with channel_closed(403, DEFAULT_EXCHANGE):
        ch.exchange_declare("", "direct")


def test_delete_default_exchange(ch: BlockingChannel) -> None:
    with channel_closed(403, DEFAULT_EXCHANGE):
        ch.exchange_delete("")


# --- connection-level errors -----------------------------------------------------------------


def test_reused_consumer_tag_closes_connection(conns: Connections, unique: str) -> None:
    ch = conns.channel()
    ch.queue_declare(unique, exclusive=True)
    ch.basic_consume(unique, Collector(), consumer_tag="dup")
    # pika refuses a duplicate tag client-side, so put the frame on the wire by hand
    ch._impl._send_method(pika.spec.Basic.Consume(queue=unique, consumer_tag="dup"))
    with connection_closed(530, "NOT_ALLOWED - attempt to reuse consumer tag 'dup'"):
        wait_until(ch.connection, lambda: False, "the connection to close")
    assert ch.connection.is_closed
    assert_round_trip(conns.channel(), f"{unique}.other")


def test_same_consumer_tag_on_other_channels_is_fine(conns: Connections, unique: str) -> None:
    connection = conns.open()
    first, second = connection.channel(), connection.channel()
    first.queue_declare(unique, exclusive=True)
    first.basic_consume(unique, Collector(), consumer_tag="shared")
    second.basic_consume(unique, Collector(), consumer_tag="shared")
    assert first.queue_declare(unique, passive=True).method.consumer_count == 2


def test_unknown_exchange_type_closes_connection(conns: Connections, unique: str) -> None:
    ch = conns.channel()
    with connection_closed(503, "COMMAND_INVALID - unknown exchange type 'x-no-such-type'"):
        ch.exchange_declare(unique, "x-no-such-type")
    assert_round_trip(conns.channel(), f"{unique}.other")


# --- recovery --------------------------------------------------------------------------------


def test_channel_error_leaves_other_channels_and_connections_working(
    conns: Connections, unique: str
) -> None:
    connection = conns.open()
    doomed, sibling = connection.channel(), connection.channel()
    sibling.queue_declare(f"{unique}.pending", exclusive=True)
    sibling.basic_publish("", f"{unique}.pending", b"published before the error")
    with channel_closed(404, "NOT_FOUND"):
        doomed.queue_declare(f"{unique}.missing", passive=True)
    assert doomed.is_closed
    assert sibling.is_open and connection.is_open
    assert get_bodies(sibling, f"{unique}.pending") == [b"published before the error"]
    assert_round_trip(sibling, f"{unique}.sibling")
    assert_round_trip(connection.channel(), f"{unique}.new-channel")
    assert_round_trip(conns.channel(), f"{unique}.other-connection")


def test_consumer_on_sibling_channel_keeps_receiving(conns: Connections, unique: str) -> None:
    connection = conns.open()
    consumer = connection.channel()
    consumer.queue_declare(unique, exclusive=True)
    got = Collector(ack=True)
    consumer.basic_consume(unique, got)
    with channel_closed(406, "PRECONDITION_FAILED"):
        doomed = connection.channel()
        doomed.basic_ack(99)
        doomed.queue_declare("", exclusive=True)
    publisher = confirmed_channel(connection)
    publisher.basic_publish("", unique, b"after the error")
    wait_until(connection, lambda: len(got) == 1, "delivery after the sibling's error")
    assert got.bodies == [b"after the error"]
