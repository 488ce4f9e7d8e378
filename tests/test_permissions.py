"""Permissions as RabbitMQ applies them: configure, write and read expressions per user and
vhost, each allowed and refused with RabbitMQ's 403 text, and 530 for a vhost without access.

Each test gets a vhost and a user of its own. Against RabbitMQ (``WARRENMQ_TEST_EXTERNAL``)
they are made through its management API, and the expected texts leave out the permission's
name, which RabbitMQ 3.10 does not give (3.11 and later do, as warrenmq).
"""

from __future__ import annotations

from collections.abc import Iterator

import pika
import pytest
from access_helpers import Admin, Tenant, tenant
from conftest import BrokerAddress
from pika.exceptions import ChannelClosedByBroker, ProbableAccessDeniedError


@pytest.fixture
def t(secured: tuple[BrokerAddress, Admin]) -> Iterator[Tenant]:
    address, admin = secured
    with tenant(address, admin) as made:
        yield made


def refused(t: Tenant, call: object, kind: str, resource: str, name: str) -> None:
    """``call()`` closes its channel with 403 and RabbitMQ's text for this refusal."""
    with pytest.raises(ChannelClosedByBroker) as caught:
        call()  # type: ignore[operator]
    assert caught.value.reply_code == 403
    assert caught.value.reply_text == t.refused(kind, resource, name)


def setup(t: Tenant, *, queues: tuple[str, ...] = (), exchanges: tuple[str, ...] = ()) -> None:
    """Declare what a test needs with full permissions (taken back by the test's grant)."""
    t.grant(".*", ".*", ".*")
    channel = t.channel()
    for queue in queues:
        channel.queue_declare(queue)
    for exchange in exchanges:
        channel.exchange_declare(exchange, "direct")
    channel.connection.close()


# -- virtual hosts ---------------------------------------------------------------------------


def test_a_user_without_permissions_in_a_vhost_cannot_open_it(t: Tenant) -> None:
    with pytest.raises(ProbableAccessDeniedError) as caught:
        t.connect()
    assert "(530)" in str(caught.value)
    assert f"NOT_ALLOWED - access to vhost '{t.vhost}' refused for user '{t.user}'" in str(
        caught.value
    )


def test_permissions_in_one_vhost_do_not_open_another(t: Tenant) -> None:
    t.grant(".*", ".*", ".*")
    t.connect().close()
    with pytest.raises(ProbableAccessDeniedError) as caught:
        t.connect(vhost="/")
    assert f"NOT_ALLOWED - access to vhost '/' refused for user '{t.user}'" in str(caught.value)


def test_empty_permissions_open_the_vhost_and_allow_nothing(t: Tenant) -> None:
    t.grant("", "", "")
    channel = t.channel()
    refused(t, lambda: channel.queue_declare("anything"), "configure", "queue", "anything")


# -- configure ------------------------------------------------------------------------------


def test_configure_allows_declaring_and_deleting_matching_names(t: Tenant) -> None:
    t.grant(configure="^mine-")
    channel = t.channel()
    assert channel.queue_declare("mine-q").method.queue == "mine-q"
    channel.queue_declare("mine-q")  # a redeclaration needs configure too, and has it
    channel.exchange_declare("mine-x", "fanout")
    channel.queue_delete("mine-q")
    channel.exchange_delete("mine-x")


@pytest.mark.parametrize(
    ("operation", "resource", "name"),
    [
        (lambda ch: ch.queue_declare("theirs"), "queue", "theirs"),
        (lambda ch: ch.queue_declare("theirs", exclusive=True), "queue", "theirs"),
        (lambda ch: ch.exchange_declare("theirs-x", "direct"), "exchange", "theirs-x"),
        (lambda ch: ch.queue_delete("theirs"), "queue", "theirs"),
        (lambda ch: ch.exchange_delete("theirs-x"), "exchange", "theirs-x"),
        # the check comes before the reserved prefix, as in RabbitMQ
        (lambda ch: ch.exchange_declare("amq.mine", "direct"), "exchange", "amq.mine"),
    ],
    ids=[
        "queue.declare",
        "exclusive",
        "exchange.declare",
        "queue.delete",
        "exchange.delete",
        "amq",
    ],
)
def test_configure_refuses_other_names(
    t: Tenant, operation: object, resource: str, name: str
) -> None:
    t.grant(configure="^mine-")
    channel = t.channel()
    refused(t, lambda: operation(channel), "configure", resource, name)  # type: ignore[operator]


def test_a_server_named_queue_is_checked_under_the_name_it_gets(t: Tenant) -> None:
    t.grant(configure="^mine-")
    channel = t.channel()
    with pytest.raises(ChannelClosedByBroker) as caught:
        channel.queue_declare("", exclusive=True)
    text = caught.value.reply_text
    assert caught.value.reply_code == 403
    generated = text.split("'")[1]
    assert generated.startswith("amq.gen-")
    assert text == t.refused("configure", "queue", generated)

    t.grant(configure=r"^amq\.gen-")
    channel = t.channel()
    assert channel.queue_declare("", exclusive=True).method.queue.startswith("amq.gen-")


def test_passive_declarations_need_no_permission(t: Tenant) -> None:
    setup(t, queues=("q",), exchanges=("x",))
    t.grant("", "", "")
    channel = t.channel()
    assert channel.queue_declare("q", passive=True).method.queue == "q"
    channel.exchange_declare("x", passive=True)


def test_a_dead_letter_exchange_needs_write_on_it_and_read_on_the_queue(t: Tenant) -> None:
    t.grant(configure=".*", write="^dlx$", read="")
    channel = t.channel()
    arguments = {"x-dead-letter-exchange": "dlx"}
    refused(t, lambda: channel.queue_declare("q", arguments=arguments), "read", "queue", "q")
    t.grant(configure=".*", write="^other$", read="^q$")
    channel = t.channel()
    refused(t, lambda: channel.queue_declare("q", arguments=arguments), "write", "exchange", "dlx")
    t.grant(configure=".*", write="^dlx$", read="^q$")
    t.channel().queue_declare("q", arguments=arguments)


def test_an_alternate_exchange_needs_write_on_it_and_read_on_the_exchange(t: Tenant) -> None:
    arguments = {"alternate-exchange": "ae"}
    t.grant(configure=".*", write="^ae$", read="")
    channel = t.channel()
    refused(
        t,
        lambda: channel.exchange_declare("x", "direct", arguments=arguments),
        "read",
        "exchange",
        "x",
    )
    t.grant(configure=".*", write="", read="^x$")
    channel = t.channel()
    refused(
        t,
        lambda: channel.exchange_declare("x", "direct", arguments=arguments),
        "write",
        "exchange",
        "ae",
    )
    t.grant(configure=".*", write="^ae$", read="^x$")
    t.channel().exchange_declare("x", "direct", arguments=arguments)


# -- write ----------------------------------------------------------------------------------


def test_write_allows_publishing_to_matching_exchanges(t: Tenant) -> None:
    setup(t, queues=("q",), exchanges=("in",))
    t.grant(configure="", write="^(in|amq\\.default)$", read="^q$")
    channel = t.channel()
    channel.confirm_delivery()
    channel.basic_publish("", "q", b"by default")
    channel.basic_publish("in", "nowhere", b"dropped")
    _, _, body = channel.basic_get("q", auto_ack=True)
    assert body == b"by default"


def test_write_refuses_publishing_to_other_exchanges(t: Tenant) -> None:
    setup(t, exchanges=("out",))
    t.grant(configure="", write="^in$", read="")
    channel = t.channel()
    channel.confirm_delivery()
    refused(t, lambda: channel.basic_publish("out", "k", b"x"), "write", "exchange", "out")
    channel = t.channel()
    channel.confirm_delivery()
    refused(t, lambda: channel.basic_publish("", "q", b"x"), "write", "exchange", "amq.default")
    channel = t.channel()
    channel.confirm_delivery()  # checked before the exchange is looked up: 403, not 404
    refused(t, lambda: channel.basic_publish("missing", "k", b"x"), "write", "exchange", "missing")


def test_binding_needs_write_on_the_queue_and_read_on_the_exchange(t: Tenant) -> None:
    setup(t, queues=("q",), exchanges=("x",))
    t.grant(configure="", write="^other$", read="^x$")
    channel = t.channel()
    refused(t, lambda: channel.queue_bind("q", "x", "k"), "write", "queue", "q")
    t.grant(configure="", write="^q$", read="^other$")
    channel = t.channel()
    refused(t, lambda: channel.queue_bind("q", "x", "k"), "read", "exchange", "x")
    t.grant(configure="", write="^q$", read="^x$")
    channel = t.channel()
    channel.queue_bind("q", "x", "k")
    channel.queue_unbind("q", "x", "k")


def test_binding_to_the_default_exchange_is_refused_after_the_write_check(t: Tenant) -> None:
    setup(t, queues=("q",))
    t.grant(configure="", write="^q$", read=".*")
    channel = t.channel()
    with pytest.raises(ChannelClosedByBroker) as caught:
        channel.queue_bind("q", "", "k")
    assert caught.value.reply_code == 403
    assert (
        caught.value.reply_text
        == "ACCESS_REFUSED - operation not permitted on the default exchange"
    )


def test_exchange_binding_needs_write_on_the_destination_and_read_on_the_source(
    t: Tenant,
) -> None:
    setup(t, exchanges=("source", "destination"))
    t.grant(configure="", write="^source$", read=".*")
    channel = t.channel()
    refused(
        t,
        lambda: channel.exchange_bind("destination", "source", "k"),
        "write",
        "exchange",
        "destination",
    )
    t.grant(configure="", write="^destination$", read="^destination$")
    channel = t.channel()
    refused(
        t,
        lambda: channel.exchange_bind("destination", "source", "k"),
        "read",
        "exchange",
        "source",
    )
    t.grant(configure="", write="^destination$", read="^source$")
    t.channel().exchange_bind("destination", "source", "k")


# -- read -----------------------------------------------------------------------------------


def test_read_allows_getting_consuming_and_purging_matching_queues(t: Tenant) -> None:
    setup(t, queues=("mine",))
    t.grant(configure="", write="^amq\\.default$", read="^mine$")
    channel = t.channel()
    channel.confirm_delivery()
    channel.basic_publish("", "mine", b"one")
    channel.basic_publish("", "mine", b"two")
    _, _, body = channel.basic_get("mine", auto_ack=True)
    assert body == b"one"
    tag = channel.basic_consume("mine", lambda *args: None)
    channel.basic_cancel(tag)
    channel.queue_purge("mine")


@pytest.mark.parametrize(
    "operation",
    [
        lambda ch: ch.basic_get("theirs"),
        lambda ch: ch.basic_consume("theirs", lambda *args: None),
        lambda ch: ch.queue_purge("theirs"),
    ],
    ids=["basic.get", "basic.consume", "queue.purge"],
)
def test_read_refuses_other_queues(t: Tenant, operation: object) -> None:
    setup(t, queues=("theirs",))
    t.grant(configure="", write="", read="^mine$")
    channel = t.channel()
    refused(t, lambda: operation(channel), "read", "queue", "theirs")  # type: ignore[operator]


def test_direct_reply_to_needs_no_read_permission(t: Tenant) -> None:
    t.grant("", "", "")
    channel = t.channel()
    channel.basic_consume("amq.rabbitmq.reply-to", lambda *args: None, auto_ack=True)


def test_a_refused_channel_leaves_the_connection_usable(t: Tenant) -> None:
    setup(t, queues=("mine",))
    t.grant(configure="", write="", read="^mine$")
    connection = t.connect()
    refused(t, lambda: connection.channel().basic_get("theirs"), "read", "queue", "theirs")
    assert connection.channel().basic_get("mine") == (None, None, None)


def test_expressions_match_anywhere_in_the_name(t: Tenant) -> None:
    """RabbitMQ's match is unanchored: 'log' allows 'app.log.errors'."""
    t.grant(configure="log", write="", read="")
    channel = t.channel()
    channel.queue_declare("app.log.errors")
    refused(t, lambda: channel.queue_declare("app.metrics"), "configure", "queue", "app.metrics")


def test_pika_url_with_the_users_credentials(t: Tenant) -> None:
    """The way most applications connect: a URL with user, password and vhost."""
    t.grant(".*", ".*", ".*")
    quoted = pika.URLParameters(
        f"amqp://{t.user}:{t.password}@{t.broker.host}:{t.broker.port}/{t.vhost}"
    )
    connection = pika.BlockingConnection(quoted)
    t.opened.append(connection)
    assert connection.channel().queue_declare("", exclusive=True).method.queue
