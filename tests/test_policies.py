"""Policies applied by pattern and priority, to queues and exchanges that already exist.

Each test sets policies the way an operator would (``Broker.set_policy`` here; ``rabbitmqctl
set_policy`` when the suite runs against RabbitMQ with ``WARRENMQ_TEST_EXTERNAL``) and checks
the effect from pika.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from conftest import BrokerAddress
from pika.exceptions import NackError
from pika_helpers import (
    Connections,
    confirmed_channel,
    get_bodies,
    open_connections,
    publish_all,
    queue_exists,
    ready_count,
    wait_for_ready_count,
)

from warrenmq.policy import Policy, PolicyError
from warrenmq.testing import RunningBroker, running_broker

SetPolicy = Callable[..., None]


@pytest.fixture(scope="module")
def running() -> Iterator[RunningBroker | BrokerAddress]:
    external = os.environ.get("WARRENMQ_TEST_EXTERNAL")
    if external:
        host, _, port = external.rpartition(":")
        yield BrokerAddress(host or "127.0.0.1", int(port), external=True)
        return
    with running_broker() as broker:
        yield broker


@pytest.fixture
def conns(running: RunningBroker | BrokerAddress) -> Iterator[Connections]:
    with open_connections(running) as connections:
        yield connections


@pytest.fixture
def set_policy(running: RunningBroker | BrokerAddress) -> Iterator[SetPolicy]:
    """``set_policy(name, pattern, definition, priority=0, apply_to="all")`` in vhost ``/``;
    every policy set is cleared at teardown."""
    names: list[str] = []

    def set_(
        name: str,
        pattern: str,
        definition: dict[str, Any],
        priority: int = 0,
        apply_to: str = "all",
    ) -> None:
        names.append(name)
        if isinstance(running, BrokerAddress):
            subprocess.run(
                ["rabbitmqctl", "-q", "set_policy", "--priority", str(priority), "--apply-to",
                 apply_to, name, pattern, json.dumps(definition)],
                check=True, capture_output=True,
            )  # fmt: skip
        else:
            policy = Policy(name, pattern, definition, "/", apply_to, priority)
            running.call(running.broker.set_policy, policy)

    yield set_
    for name in names:
        clear_policy(running, name)


def clear_policy(running: RunningBroker | BrokerAddress, name: str) -> None:
    if isinstance(running, BrokerAddress):
        subprocess.run(["rabbitmqctl", "-q", "clear_policy", name], capture_output=True)
    else:
        running.call(running.broker.clear_policy, "/", name)


@pytest.mark.parametrize("overflow", ["drop-head", "reject-publish"])
def test_max_length_policy_drops_the_head_of_an_existing_queue(
    conns: Connections, set_policy: SetPolicy, unique: str, overflow: str
) -> None:
    ch = confirmed_channel(conns.open())
    ch.queue_declare(unique)
    conns.track(queue=unique)
    publish_all(ch, "", unique, [str(i) for i in range(10)])
    # whatever the overflow mode, as RabbitMQ: the limit is applied to what is there
    set_policy(unique, f"^{unique}$", {"max-length": 3, "overflow": overflow}, apply_to="queues")
    wait_for_ready_count(ch, unique, 3)
    assert get_bodies(ch, unique) == [b"7", b"8", b"9"]


def test_message_ttl_policy_makes_an_existing_queue_expire_messages(
    conns: Connections, set_policy: SetPolicy, unique: str
) -> None:
    ch = confirmed_channel(conns.open())
    witness = f"{unique}-witness"
    for name in (unique, witness):
        ch.queue_declare(name)
        conns.track(queue=name)
    ch.basic_publish("", unique, b"kept")
    set_policy(unique, f"^{unique}", {"message-ttl": 50})
    ch.basic_publish("", unique, b"expires")
    ch.basic_publish("", witness, b"expires too")
    wait_for_ready_count(ch, witness, 0)  # the TTL has passed
    # as in RabbitMQ, a message's expiry is set when it enters the queue: the first one stays
    assert get_bodies(ch, unique) == [b"kept"]


def test_policy_dead_letter_exchange_receives_expired_messages(
    conns: Connections, set_policy: SetPolicy, unique: str
) -> None:
    ch = confirmed_channel(conns.open())
    graveyard = f"{unique}-dead"
    ch.queue_declare(unique)
    ch.queue_declare(graveyard)
    conns.track(queue=unique)
    conns.track(queue=graveyard)
    set_policy(
        unique,
        f"^{unique}$",
        {"message-ttl": 10, "dead-letter-exchange": "", "dead-letter-routing-key": graveyard},
    )
    ch.basic_publish("", unique, b"late")
    wait_for_ready_count(ch, graveyard, 1)
    method, properties, body = ch.basic_get(graveyard, auto_ack=True)
    assert body == b"late"
    assert properties.headers["x-death"][0]["reason"] == "expired"


def test_the_lower_length_wins_and_the_client_overflow_wins(
    conns: Connections, set_policy: SetPolicy, unique: str
) -> None:
    ch = confirmed_channel(conns.open())
    longer, shorter = f"{unique}-a", f"{unique}-b"
    ch.queue_declare(longer, arguments={"x-max-length": 5})
    ch.queue_declare(shorter, arguments={"x-max-length": 2, "x-overflow": "reject-publish"})
    conns.track(queue=longer)
    conns.track(queue=shorter)
    set_policy(unique, f"^{unique}-", {"max-length": 3, "overflow": "drop-head"})
    publish_all(ch, "", longer, [str(i) for i in range(10)])
    refused = 0
    for i in range(10):
        try:
            ch.basic_publish("", shorter, str(i).encode())
        except NackError:
            refused += 1
    assert ready_count(ch, longer) == 3  # policy 3 < argument 5
    assert ready_count(ch, shorter) == 2  # argument 2 < policy 3
    assert refused == 8  # the queue's own reject-publish, not the policy's drop-head


def test_clearing_a_policy_lifts_its_limit(
    conns: Connections, running: RunningBroker | BrokerAddress, set_policy: SetPolicy, unique: str
) -> None:
    ch = confirmed_channel(conns.open())
    ch.queue_declare(unique)
    conns.track(queue=unique)
    set_policy(unique, f"^{unique}$", {"max-length": 1})
    publish_all(ch, "", unique, ["a", "b"])
    assert ready_count(ch, unique) == 1
    clear_policy(running, unique)
    publish_all(ch, "", unique, ["c", "d"])
    assert get_bodies(ch, unique) == [b"b", b"c", b"d"]


def test_the_highest_priority_policy_applies_alone(
    conns: Connections, set_policy: SetPolicy, unique: str
) -> None:
    ch = confirmed_channel(conns.open())
    set_policy(f"{unique}-low", f"^{unique}", {"max-length": 1}, priority=1)
    set_policy(f"{unique}-high", f"^{unique}", {"message-ttl": 60000}, priority=2)
    ch.queue_declare(unique)  # declared after the policies: they apply from the start
    conns.track(queue=unique)
    publish_all(ch, "", unique, ["a", "b", "c"])
    # only the high-priority policy applies, so its definition does not merge with the other's
    assert ready_count(ch, unique) == 3


def test_policies_apply_by_kind(conns: Connections, set_policy: SetPolicy, unique: str) -> None:
    ch = confirmed_channel(conns.open())
    ch.queue_declare(unique)
    conns.track(queue=unique)
    set_policy(unique, f"^{unique}$", {"max-length": 1}, apply_to="exchanges")
    publish_all(ch, "", unique, ["a", "b"])
    assert ready_count(ch, unique) == 2


def test_redeclaring_with_the_original_arguments_still_works(
    conns: Connections, set_policy: SetPolicy, unique: str
) -> None:
    ch = confirmed_channel(conns.open())
    ch.queue_declare(unique, arguments={"x-max-length": 10})
    conns.track(queue=unique)
    set_policy(unique, f"^{unique}$", {"max-length": 1, "message-ttl": 1000})
    ch.queue_declare(unique, arguments={"x-max-length": 10})  # no inequivalent-arg error


def test_alternate_exchange_policy_catches_unroutable_messages(
    conns: Connections, set_policy: SetPolicy, unique: str
) -> None:
    ch = confirmed_channel(conns.open())
    ae, caught = f"{unique}-ae", f"{unique}-caught"
    ch.exchange_declare(unique, "direct")
    ch.exchange_declare(ae, "fanout")
    ch.queue_declare(caught)
    ch.queue_bind(caught, ae)
    conns.track(exchange=unique)
    conns.track(exchange=ae)
    conns.track(queue=caught)
    set_policy(unique, f"^{unique}$", {"alternate-exchange": ae}, apply_to="exchanges")
    ch.basic_publish(unique, "nowhere", b"stray")
    wait_for_ready_count(ch, caught, 1)


def test_expires_policy_deletes_an_unused_queue(
    conns: Connections, set_policy: SetPolicy, unique: str
) -> None:
    connection = conns.open()
    ch = confirmed_channel(connection)
    ch.queue_declare(unique)
    conns.track(queue=unique)
    set_policy(unique, f"^{unique}$", {"expires": 100})
    deadline = time.monotonic() + 5
    while queue_exists(connection, unique):  # each check renews the lease: check less often
        assert time.monotonic() < deadline, "queue still there 5 s after its policy's expires"
        connection.process_data_events(time_limit=0.35)


@pytest.mark.warrenmq_only
def test_queue_views_name_their_policy(
    conns: Connections, running: RunningBroker, set_policy: SetPolicy, unique: str
) -> None:
    ch = confirmed_channel(conns.open())
    ch.queue_declare(unique)
    conns.track(queue=unique)
    set_policy(unique, f"^{unique}$", {"max-length": 4})
    view = running.call(lambda: running.broker.vhosts["/"].queues[unique].view())
    assert view.policy == unique
    assert view.arguments == {}  # the client's arguments, unchanged


@pytest.mark.warrenmq_only
@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"definition": {"message_ttl": 1}}, """[{<<"message_ttl">>,1}] are not recognised"""),
        ({"definition": {"max-priority": 5}}, "are not recognised policy settings"),
        ({"definition": {"message-ttl": -1}}, "-1 is not a valid message TTL"),
        ({"definition": {"overflow": "x"}}, "'x' is not a valid overflow value"),
        ({"definition": {"expires": 0}}, "0 is not a valid queue expiry"),
        ({"definition": {}}, "no policy provided"),
        ({"pattern": "^zz("}, "pattern should be regular expression but is invalid"),
        ({"apply_to": "foo"}, "apply-to 'foo' unrecognised; should be 'queues', 'exchanges'"),
    ],
)
def test_bad_policies_are_refused_in_rabbitmq_words(fields: dict[str, Any], message: str) -> None:
    arguments: dict[str, Any] = {"name": "p", "pattern": "^zz", "definition": {"expires": 1}}
    arguments.update(fields)
    with pytest.raises(PolicyError) as info:
        Policy(**arguments)
    assert message in str(info.value)


@pytest.mark.warrenmq_only
def test_a_policy_for_a_missing_vhost_is_refused() -> None:
    with running_broker() as running, pytest.raises(PolicyError, match="no vhost 'nope'"):
        running.call(running.broker.set_policy, Policy("p", ".", {"expires": 1}, "nope"))
