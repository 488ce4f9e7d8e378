"""Validation of the queue-feature arguments, with RabbitMQ 3.10's exact replies.

A bad value closes the channel with 406 PRECONDITION_FAILED and
``invalid arg '<argument>' for queue '<queue>' in vhost '/': <detail>``, where the detail is
RabbitMQ's Erlang term for the problem (``{value_negative,-1}``, ``"expected integer, got
longstr"``, ...), and the queue is not created. The types named are the AMQP field types the
client sent: pika sends a Python int as ``signedint`` (32-bit) and a str as ``longstr``. A bad
per-message ``expiration`` closes the channel at the publish with ``invalid expiration '<value>':
<detail>``. Redeclaring with a different value is ``inequivalent arg``.
"""

from __future__ import annotations

import decimal
from typing import Any

import pika
import pytest
from pika.adapters.blocking_connection import BlockingChannel
from pika_helpers import (
    Connections,
    channel_closed,
    get_all,
    queue_exists,
)

pytestmark = pytest.mark.timeout(20)

INVALID: list[tuple[str, Any, str]] = [
    ("x-message-ttl", -1, "{value_negative,-1}"),
    ("x-message-ttl", "100", '"expected integer, got longstr"'),
    ("x-message-ttl", decimal.Decimal("1.5"), '"expected integer, got decimal"'),
    ("x-message-ttl", True, '"expected integer, got bool"'),
    ("x-expires", 0, "{value_zero,0}"),
    ("x-expires", -5, "{value_negative,-5}"),
    ("x-expires", "x", '"expected integer, got longstr"'),
    ("x-max-length", -1, "{value_negative,-1}"),
    ("x-max-length", "5", '"expected integer, got longstr"'),
    ("x-max-length", True, '"expected integer, got bool"'),
    ("x-max-length-bytes", -1, "{value_negative,-1}"),
    ("x-max-length-bytes", "x", '"expected integer, got longstr"'),
    ("x-overflow", "bogus", "invalid_overflow"),
    ("x-overflow", 5, "{unacceptable_type,signedint}"),
    ("x-queue-mode", "fast", "\"unsupported queue mode 'fast'\""),
    ("x-queue-mode", 1, "{unacceptable_type,signedint}"),
    ("x-max-priority", 256, "{max_value_exceeded,256}"),
    ("x-max-priority", -1, "{value_negative,-1}"),
    ("x-max-priority", "5", '"expected integer, got longstr"'),
    ("x-dead-letter-routing-key", "key", "routing_key_but_no_dlx_defined"),
    ("x-dead-letter-routing-key", 5, "{unacceptable_type,signedint}"),
    ("x-single-active-consumer", "yes", "{unacceptable_type,longstr}"),
    ("x-single-active-consumer", 1, "{unacceptable_type,signedint}"),
    ("x-queue-type", "bogus", "\"unsupported queue type 'bogus'\""),
]


@pytest.mark.parametrize(
    ("argument", "value", "detail"), INVALID, ids=[f"{a}={v!r}" for a, v, _d in INVALID]
)
def test_invalid_argument_is_refused(
    ch: BlockingChannel, unique: str, argument: str, value: Any, detail: str
) -> None:
    text = f"PRECONDITION_FAILED - invalid arg '{argument}' for queue '{unique}' in vhost '/': "
    with channel_closed(406, text + detail):
        ch.queue_declare(unique, exclusive=True, arguments={argument: value})
    assert not queue_exists(ch.connection, unique)


def test_dead_letter_exchange_of_the_wrong_type_is_refused(
    ch: BlockingChannel, unique: str
) -> None:
    """This one argument has a reply of its own shape."""
    text = (
        "PRECONDITION_FAILED - invalid type 'signedint' for arg 'x-dead-letter-exchange'"
        f" in queue '{unique}' in vhost '/'"
    )
    with channel_closed(406, text):
        ch.queue_declare(unique, exclusive=True, arguments={"x-dead-letter-exchange": 5})
    assert not queue_exists(ch.connection, unique)


ACCEPTED: list[dict[str, Any]] = [
    {"x-message-ttl": 0},
    {"x-message-ttl": 2**32},  # sent as a long: more than 32 bits of milliseconds
    {"x-message-ttl": 2**27 * 1000},  # kombu's native delayed delivery, level 27
    {"x-expires": 1},
    {"x-max-length": 0, "x-max-length-bytes": 0},
    {"x-overflow": "drop-head"},
    {"x-overflow": "reject-publish"},
    {"x-overflow": "reject-publish-dlx"},
    {"x-queue-mode": "default"},
    {"x-queue-mode": "lazy"},
    {"x-max-priority": 0},
    {"x-max-priority": 255},
    {"x-dead-letter-exchange": "", "x-dead-letter-routing-key": "anything"},
    {"x-dead-letter-exchange": "does-not-exist-yet"},
    {"x-single-active-consumer": False},
    {"x-queue-type": "classic"},
    {"x-unknown-argument": "ignored"},
]


@pytest.mark.parametrize("arguments", ACCEPTED, ids=[repr(a) for a in ACCEPTED])
def test_edge_values_are_accepted(
    ch: BlockingChannel, unique: str, arguments: dict[str, Any]
) -> None:
    ch.queue_declare(unique, exclusive=True, arguments=arguments)
    ch.queue_declare(unique, exclusive=True, arguments=arguments)  # equivalent: fine
    if "x-expires" not in arguments:  # a 1 ms lease may end before a passive declare
        ch.queue_declare(unique, passive=True)


INEQUIVALENT: list[tuple[dict[str, Any] | None, dict[str, Any] | None, str]] = [
    ({"x-message-ttl": 100}, {"x-message-ttl": 200}, "received '200' but current is '100'"),
    ({"x-expires": 1000}, {"x-expires": 2000}, "received '2000' but current is '1000'"),
    ({"x-max-length-bytes": 5}, {"x-max-length-bytes": 6}, "received '6' but current is '5'"),
    (
        {"x-overflow": "drop-head"},
        {"x-overflow": "reject-publish"},
        "received 'reject-publish' but current is 'drop-head'",
    ),
    (
        {"x-dead-letter-exchange": "a"},
        {"x-dead-letter-exchange": "b"},
        "received 'b' but current is 'a'",
    ),
    ({"x-max-priority": 5}, {"x-max-priority": 6}, "received '6' but current is '5'"),
    (
        {"x-single-active-consumer": True},
        {"x-single-active-consumer": False},
        "received 'false' but current is 'true'",
    ),
    (
        {"x-queue-mode": "lazy"},
        {"x-queue-mode": "default"},
        "received 'default' but current is 'lazy'",
    ),
    (
        {"x-message-ttl": 100},
        None,
        "received none but current is the value '100' of type 'signedint'",
    ),
    (
        None,
        {"x-max-priority": 5},
        "received the value '5' of type 'signedint' but current is none",
    ),
]


@pytest.mark.parametrize(
    ("first", "second", "detail"),
    INEQUIVALENT,
    ids=[f"{a}->{b}" for a, b, _d in INEQUIVALENT],
)
def test_redeclare_with_another_value_is_inequivalent(
    conns: Connections,
    ch: BlockingChannel,
    unique: str,
    first: dict[str, Any] | None,
    second: dict[str, Any] | None,
    detail: str,
) -> None:
    ch.queue_declare(unique, exclusive=True, arguments=first)
    argument = next(iter(first or second or {}))
    text = (
        f"PRECONDITION_FAILED - inequivalent arg '{argument}' for queue '{unique}' in vhost '/': "
    )
    with channel_closed(406, text + detail):
        ch.queue_declare(unique, exclusive=True, arguments=second)
    assert queue_exists(ch.connection, unique)  # the queue is untouched


INVALID_EXPIRATIONS = [
    ("-1", "{value_negative,-1}"),
    ("abc", "no_integer"),
    ("", "no_integer"),
    (" 5", "no_integer"),
    ("1.5", '{leftover_string,".5"}'),
]


@pytest.mark.parametrize(("expiration", "detail"), INVALID_EXPIRATIONS)
def test_invalid_expiration_closes_the_channel(
    conns: Connections, ch: BlockingChannel, unique: str, expiration: str, detail: str
) -> None:
    ch.queue_declare(unique)
    conns.track(queue=unique)
    text = f"PRECONDITION_FAILED - invalid expiration '{expiration}': {detail}"
    with channel_closed(406, text):
        ch.basic_publish("", unique, b"x", pika.BasicProperties(expiration=expiration))
    observer = ch.connection.channel()
    assert observer.queue_declare(unique, passive=True).method.message_count == 0


def test_expirations_rabbitmq_parses_leniently(ch: BlockingChannel, unique: str) -> None:
    """A sign and leading zeros are accepted (Erlang's string:to_integer); the property is
    delivered as sent."""
    ch.queue_declare(unique, exclusive=True)
    for expiration in ("+60000", "0060000"):
        ch.basic_publish("", unique, b"x", pika.BasicProperties(expiration=expiration))
    assert [p.expiration for _m, p, _b in get_all(ch, unique)] == ["+60000", "0060000"]
