"""Topic permissions as RabbitMQ applies them (``rabbitmqctl set_topic_permissions``): on a topic
exchange, the write expression is matched against a publish's routing key and the read
expression against the binding key of a binding from the exchange, with RabbitMQ's 403 text.

Each test gets a vhost and a user of its own; against RabbitMQ (``WARRENMQ_TEST_EXTERNAL``) they
are made through its management API, and the expected texts leave out the permission's name,
which RabbitMQ 3.10 does not give (3.11 and later do, as warrenmq).
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from access_helpers import Admin, Tenant, tenant
from conftest import BrokerAddress
from pika.adapters.blocking_connection import BlockingChannel
from pika.exceptions import ChannelClosedByBroker


@pytest.fixture
def t(secured: tuple[BrokerAddress, Admin]) -> Iterator[Tenant]:
    """A tenant with every ordinary permission, and the exchanges and queue the tests use."""
    address, admin = secured
    with tenant(address, admin) as made:
        made.grant(".*", ".*", ".*")
        channel = made.channel()
        channel.exchange_declare("events", "topic")
        channel.exchange_declare("plain", "direct")
        channel.exchange_declare("fan", "fanout")
        channel.queue_declare("inbox")
        channel.connection.close()
        yield made


def confirmed(t: Tenant) -> BlockingChannel:
    channel = t.channel()
    channel.confirm_delivery()
    return channel


def refused(t: Tenant, call: object, kind: str, routing_key: str, exchange: str) -> None:
    with pytest.raises(ChannelClosedByBroker) as caught:
        call()  # type: ignore[operator]
    assert caught.value.reply_code == 403
    assert caught.value.reply_text == t.topic_refused(kind, routing_key, exchange)


def test_publishing_is_checked_against_the_write_expression(t: Tenant) -> None:
    t.grant_topic("amq.topic", "^orders\\.", "")
    channel = confirmed(t)
    channel.basic_publish("amq.topic", "orders.created", b"allowed")
    channel.basic_publish("amq.topic", "orders.created", b"again, still allowed")
    refused(t, lambda: channel.basic_publish("amq.topic", "billing.x", b"no"), "write",
            "billing.x", "amq.topic")  # fmt: skip


def test_each_publish_on_a_channel_is_checked(t: Tenant) -> None:
    """An allowed routing key does not open the exchange to other keys on that channel."""
    t.grant_topic("events", "^a\\.", "")
    channel = confirmed(t)
    for _ in range(3):
        channel.basic_publish("events", "a.b", b"allowed")
    refused(t, lambda: channel.basic_publish("events", "b.a", b"no"), "write", "b.a", "events")


def test_without_a_topic_permission_for_the_exchange_any_key_goes(t: Tenant) -> None:
    t.grant_topic("amq.topic", "^only\\.this$", "^only\\.this$")
    channel = confirmed(t)
    channel.basic_publish("events", "anything.at.all", b"another topic exchange")
    channel.queue_bind("inbox", "events", "any.#")


def test_only_topic_exchanges_are_checked(t: Tenant) -> None:
    for exchange in ("plain", "fan"):
        t.grant_topic(exchange, "", "")  # would refuse every non-empty key
    channel = confirmed(t)
    channel.basic_publish("plain", "some.key", b"direct")
    channel.basic_publish("fan", "some.key", b"fanout")
    channel.basic_publish("", "inbox", b"default")
    channel.queue_bind("inbox", "plain", "some.key")


def test_an_empty_expression_allows_only_the_empty_key(t: Tenant) -> None:
    t.grant_topic("events", "", "")
    channel = confirmed(t)
    channel.basic_publish("events", "", b"empty key")
    refused(t, lambda: channel.basic_publish("events", "x", b"no"), "write", "x", "events")


def test_binding_from_the_exchange_is_checked_against_the_read_expression(t: Tenant) -> None:
    t.grant_topic("events", "", "^orders\\.")
    channel = t.channel()
    channel.queue_bind("inbox", "events", "orders.#")
    refused(t, lambda: channel.queue_bind("inbox", "events", "billing.#"), "read", "billing.#",
            "events")  # fmt: skip


def test_unbinding_is_checked_too(t: Tenant) -> None:
    channel = t.channel()
    channel.queue_bind("inbox", "events", "billing.#")  # before the topic permission
    t.grant_topic("events", "", "^orders\\.")
    channel = t.channel()  # a new login reads the new grant
    refused(t, lambda: channel.queue_unbind("inbox", "events", "billing.#"), "read", "billing.#",
            "events")  # fmt: skip


def test_exchange_to_exchange_bindings_from_the_exchange_are_checked(t: Tenant) -> None:
    t.grant_topic("events", "", "^orders\\.")
    channel = t.channel()
    channel.exchange_bind("fan", "events", "orders.*")
    refused(t, lambda: channel.exchange_bind("fan", "events", "billing.*"), "read", "billing.*",
            "events")  # fmt: skip


def test_username_and_vhost_in_an_expression_are_replaced(t: Tenant) -> None:
    t.grant_topic("events", "^{username}\\.", "^{vhost}\\.")
    channel = confirmed(t)
    channel.basic_publish("events", f"{t.user}.created", b"own prefix")
    channel.queue_bind("inbox", "events", f"{t.vhost}.#")
    refused(t, lambda: channel.basic_publish("events", "someone.created", b"no"), "write",
            "someone.created", "events")  # fmt: skip


def test_a_topic_permission_does_not_replace_the_write_permission(t: Tenant) -> None:
    t.grant(".*", "^inbox$", ".*")  # no write on any exchange
    t.grant_topic("events", ".*", ".*")
    channel = t.channel()
    with pytest.raises(ChannelClosedByBroker) as caught:
        channel.basic_publish("events", "a.b", b"no")
        channel.basic_qos(prefetch_count=1)  # a round trip, so the refusal arrives
    assert caught.value.reply_text == t.refused("write", "exchange", "events")
