"""Exchanges through pika: every built-in type, e2e bindings, internal/auto-delete, deletion."""

from __future__ import annotations

from typing import Any

import pika
import pytest
from pika.adapters.blocking_connection import BlockingChannel
from pika.exceptions import UnroutableError
from pika_helpers import (
    Connections,
    channel_closed,
    exchange_exists,
    get_bodies,
    wait_for_exchange_gone,
)

pytestmark = pytest.mark.timeout(20)


def bound_queue(
    ch: BlockingChannel,
    exchange: str,
    name: str,
    *keys: str,
    arguments: dict[str, Any] | None = None,
) -> str:
    """An exclusive queue bound to ``exchange`` with each key (with "" if none given)."""
    ch.queue_declare(name, exclusive=True)
    for key in keys or ("",):
        ch.queue_bind(name, exchange, routing_key=key, arguments=arguments)
    return name


def declare(conns: Connections, ch: BlockingChannel, name: str, kind: str, **kwargs: Any) -> str:
    ch.exchange_declare(name, kind, **kwargs)
    conns.track(exchange=name)
    return name


def headers_publish(ch: BlockingChannel, exchange: str, body: str, headers: dict[str, Any]) -> None:
    ch.basic_publish(exchange, "", body, pika.BasicProperties(headers=headers))


# --- direct ----------------------------------------------------------------------------------


def test_direct_routes_by_exact_key_with_several_keys_and_queues(
    conns: Connections, ch: BlockingChannel, unique: str
) -> None:
    ex = f"{unique}.direct"
    declare(conns, ch, ex, "direct", auto_delete=True)
    q1 = bound_queue(ch, ex, f"{unique}.q1", "k1", "k2")
    q2 = bound_queue(ch, ex, f"{unique}.q2", "k2", "k3")
    for key in ("k1", "k2", "k3", "k4", "K1", "k1.x", ""):
        ch.basic_publish(ex, key, key.encode())
    assert get_bodies(ch, q1) == [b"k1", b"k2"]
    assert get_bodies(ch, q2) == [b"k2", b"k3"]


def test_duplicate_binding_delivers_one_copy(
    conns: Connections, ch: BlockingChannel, unique: str
) -> None:
    ex = f"{unique}.direct"
    declare(conns, ch, ex, "direct", auto_delete=True)
    q = bound_queue(ch, ex, f"{unique}.q", "k", "k")
    ch.basic_publish(ex, "k", b"once")
    assert get_bodies(ch, q) == [b"once"]


def test_unbind_stops_delivery(conns: Connections, ch: BlockingChannel, unique: str) -> None:
    ex = f"{unique}.direct"
    declare(conns, ch, ex, "direct", auto_delete=True)
    q = bound_queue(ch, ex, f"{unique}.q", "a", "b")
    ch.basic_publish(ex, "a", b"before")
    ch.queue_unbind(q, ex, routing_key="a")
    ch.basic_publish(ex, "a", b"after")
    ch.basic_publish(ex, "b", b"other key still bound")
    assert get_bodies(ch, q) == [b"before", b"other key still bound"]


# --- fanout ----------------------------------------------------------------------------------


def test_fanout_copies_to_every_queue_ignoring_key(
    conns: Connections, ch: BlockingChannel, unique: str
) -> None:
    ex = f"{unique}.fanout"
    declare(conns, ch, ex, "fanout", auto_delete=True)
    queues = [bound_queue(ch, ex, f"{unique}.q{i}", f"ignored-{i}") for i in range(3)]
    # a queue bound twice (different keys) still gets a single copy
    ch.queue_bind(queues[0], ex, routing_key="second")
    ch.basic_publish(ex, "whatever", b"m1")
    ch.basic_publish(ex, "", b"m2")
    for q in queues:
        assert get_bodies(ch, q) == [b"m1", b"m2"]


# --- topic -----------------------------------------------------------------------------------

TOPIC_KEYS = [
    "a",
    "b",
    "a.b",
    "a.c",
    "a.b.c",
    "a.x.b",
    "a.x.y.b",
    "a..b",
    "a.",
    ".a",
    "x.a.b",
    "ab",
    "",
]

TOPIC_CASES: dict[str, set[str]] = {
    "a": {"a"},
    "a.b": {"a.b"},
    "*": {"a", "b", "ab"},  # one word; "" has zero words
    "*.b": {"a.b"},
    "a.*": {"a.b", "a.c", "a."},  # an empty word is still a word
    "*.*": {"a.b", "a.c", "a.", ".a"},
    "#": set(TOPIC_KEYS),  # includes the empty key
    "a.#": {"a", "a.b", "a.c", "a.b.c", "a.x.b", "a.x.y.b", "a..b", "a."},
    "#.b": {"b", "a.b", "a.x.b", "a.x.y.b", "a..b", "x.a.b"},
    "a.#.b": {"a.b", "a.x.b", "a.x.y.b", "a..b"},
    "a.*.b": {"a.x.b", "a..b"},
    "a..b": {"a..b"},
    "#.a.#": {"a", "a.b", "a.c", "a.b.c", "a.x.b", "a.x.y.b", "a..b", "a.", ".a", "x.a.b"},
    "*.#": set(TOPIC_KEYS) - {""},
    "no.such.words": set(),
}


@pytest.mark.parametrize("pattern", list(TOPIC_CASES))
def test_topic_pattern(conns: Connections, ch: BlockingChannel, unique: str, pattern: str) -> None:
    ex = f"{unique}.topic"
    declare(conns, ch, ex, "topic", auto_delete=True)
    q = bound_queue(ch, ex, f"{unique}.q", pattern)
    for key in TOPIC_KEYS:
        ch.basic_publish(ex, key, key.encode())
    got = [body.decode() for body in get_bodies(ch, q)]
    assert got == [key for key in TOPIC_KEYS if key in TOPIC_CASES[pattern]]


def test_topic_overlapping_patterns_deliver_one_copy(
    conns: Connections, ch: BlockingChannel, unique: str
) -> None:
    ex = f"{unique}.topic"
    declare(conns, ch, ex, "topic", auto_delete=True)
    q = bound_queue(ch, ex, f"{unique}.q", "a.*", "#.b", "a.b", "#")
    ch.basic_publish(ex, "a.b", b"matched by four bindings")
    assert get_bodies(ch, q) == [b"matched by four bindings"]


# --- headers ---------------------------------------------------------------------------------


def test_headers_all_and_any(conns: Connections, ch: BlockingChannel, unique: str) -> None:
    ex = f"{unique}.headers"
    declare(conns, ch, ex, "headers", auto_delete=True)
    q_all = bound_queue(
        ch, ex, f"{unique}.all", "", arguments={"x-match": "all", "color": "red", "size": 3}
    )
    q_any = bound_queue(
        ch, ex, f"{unique}.any", "", arguments={"x-match": "any", "color": "red", "size": 3}
    )
    q_default = bound_queue(ch, ex, f"{unique}.default", "", arguments={"color": "red", "size": 3})
    headers_publish(ch, ex, "both", {"color": "red", "size": 3})
    headers_publish(ch, ex, "both+extra", {"color": "red", "size": 3, "shape": "round"})
    headers_publish(ch, ex, "color only", {"color": "red"})
    headers_publish(ch, ex, "size only", {"size": 3})
    headers_publish(ch, ex, "wrong values", {"color": "blue", "size": 4})
    headers_publish(ch, ex, "no headers", {})
    ch.basic_publish(ex, "", b"no properties")
    assert get_bodies(ch, q_all) == [b"both", b"both+extra"]
    assert get_bodies(ch, q_default) == [b"both", b"both+extra"]  # x-match defaults to all
    assert get_bodies(ch, q_any) == [b"both", b"both+extra", b"color only", b"size only"]


def test_headers_ignores_routing_key(conns: Connections, ch: BlockingChannel, unique: str) -> None:
    ex = f"{unique}.headers"
    declare(conns, ch, ex, "headers", auto_delete=True)
    q = bound_queue(ch, ex, f"{unique}.q", "bound-key", arguments={"x-match": "all", "k": "v"})
    ch.basic_publish(ex, "some-other-key", b"m", pika.BasicProperties(headers={"k": "v"}))
    assert get_bodies(ch, q) == [b"m"]


def test_headers_x_prefixed_keys_ignored_unless_with_x(
    conns: Connections, ch: BlockingChannel, unique: str
) -> None:
    ex = f"{unique}.headers"
    declare(conns, ch, ex, "headers", auto_delete=True)
    args = {"x-tag": "t1", "k": "v"}
    q_all = bound_queue(ch, ex, f"{unique}.all", "", arguments={"x-match": "all", **args})
    q_any = bound_queue(ch, ex, f"{unique}.any", "", arguments={"x-match": "any", **args})
    q_all_x = bound_queue(ch, ex, f"{unique}.allx", "", arguments={"x-match": "all-with-x", **args})
    q_any_x = bound_queue(ch, ex, f"{unique}.anyx", "", arguments={"x-match": "any-with-x", **args})
    headers_publish(ch, ex, "k only", {"k": "v"})
    headers_publish(ch, ex, "x-tag only", {"x-tag": "t1"})
    headers_publish(ch, ex, "both", {"k": "v", "x-tag": "t1"})
    headers_publish(ch, ex, "k, wrong x-tag", {"k": "v", "x-tag": "t2"})
    assert get_bodies(ch, q_all) == [b"k only", b"both", b"k, wrong x-tag"]
    assert get_bodies(ch, q_any) == [b"k only", b"both", b"k, wrong x-tag"]
    assert get_bodies(ch, q_all_x) == [b"both"]
    assert get_bodies(ch, q_any_x) == [b"k only", b"x-tag only", b"both", b"k, wrong x-tag"]


def test_headers_void_binding_value_matches_presence(
    conns: Connections, ch: BlockingChannel, unique: str
) -> None:
    ex = f"{unique}.headers"
    declare(conns, ch, ex, "headers", auto_delete=True)
    q = bound_queue(ch, ex, f"{unique}.q", "", arguments={"x-match": "all", "present": None})
    headers_publish(ch, ex, "string", {"present": "anything"})
    headers_publish(ch, ex, "int", {"present": 7})
    headers_publish(ch, ex, "void", {"present": None})
    headers_publish(ch, ex, "absent", {"other": "x"})
    assert get_bodies(ch, q) == [b"string", b"int", b"void"]


def test_headers_any_with_only_x_keys_matches_nothing(
    conns: Connections, ch: BlockingChannel, unique: str
) -> None:
    ex = f"{unique}.headers"
    declare(conns, ch, ex, "headers", auto_delete=True)
    q_any = bound_queue(ch, ex, f"{unique}.any", "", arguments={"x-match": "any"})
    q_all = bound_queue(ch, ex, f"{unique}.all", "", arguments={"x-match": "all"})
    headers_publish(ch, ex, "m", {"k": "v"})
    ch.basic_publish(ex, "", b"bare")
    assert get_bodies(ch, q_any) == []
    assert get_bodies(ch, q_all) == [b"m", b"bare"]  # no conditions: everything matches


# --- predeclared and default exchanges -------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "kind"),
    [
        ("amq.direct", "direct"),
        ("amq.fanout", "fanout"),
        ("amq.topic", "topic"),
        ("amq.headers", "headers"),
        ("amq.match", "headers"),
    ],
)
def test_predeclared_exchanges_exist(
    conns: Connections, ch: BlockingChannel, unique: str, name: str, kind: str
) -> None:
    ch.exchange_declare(name, passive=True)
    ch.exchange_declare(name, kind, durable=True)  # an equivalent redeclare is allowed
    q = f"{unique}.q"
    ch.queue_declare(q, exclusive=True)
    if kind == "headers":
        ch.queue_bind(q, name, arguments={"x-match": "all", "test": unique})
        ch.basic_publish(
            name, "", b"via " + name.encode(), pika.BasicProperties(headers={"test": unique})
        )
    else:
        ch.queue_bind(q, name, routing_key=unique)
        ch.basic_publish(name, unique, b"via " + name.encode())
    assert get_bodies(ch, q) == [b"via " + name.encode()]


def test_default_exchange_routes_by_queue_name(
    conns: Connections, ch: BlockingChannel, unique: str
) -> None:
    q1, q2 = f"{unique}.q1", f"{unique}.q2"
    ch.queue_declare(q1, exclusive=True)
    ch.queue_declare(q2, exclusive=True)
    ch.basic_publish("", q1, b"to q1")
    ch.basic_publish("", q2, b"to q2")
    ch.basic_publish("", q1, b"to q1 again")
    assert get_bodies(ch, q1) == [b"to q1", b"to q1 again"]
    assert get_bodies(ch, q2) == [b"to q2"]
    with pytest.raises(UnroutableError):
        ch.basic_publish("", f"{unique}.no-such-queue", b"dropped", mandatory=True)


def test_default_exchange_cannot_even_be_passively_declared(conns: Connections) -> None:
    ch = conns.channel()
    with channel_closed(403, "ACCESS_REFUSED - operation not permitted on the default exchange"):
        ch.exchange_declare("", passive=True)


# --- exchange-to-exchange bindings -----------------------------------------------------------


def test_exchange_to_exchange_binding_and_unbind(
    conns: Connections, ch: BlockingChannel, unique: str
) -> None:
    src, dst = f"{unique}.src", f"{unique}.dst"
    declare(conns, ch, src, "topic")
    declare(conns, ch, dst, "direct", auto_delete=True)
    q = bound_queue(ch, dst, f"{unique}.q", "a.b", "a.c")
    ch.exchange_bind(destination=dst, source=src, routing_key="a.*")
    ch.basic_publish(src, "a.b", b"a.b")  # matches a.* at src, a.b at dst
    ch.basic_publish(src, "a.c", b"a.c")
    ch.basic_publish(src, "a.d", b"a.d")  # passes src, no binding at dst
    ch.basic_publish(src, "b.b", b"b.b")  # stopped at src
    assert get_bodies(ch, q) == [b"a.b", b"a.c"]
    ch.exchange_unbind(destination=dst, source=src, routing_key="a.*")
    ch.basic_publish(src, "a.b", b"after unbind")
    ch.basic_publish(dst, "a.b", b"direct to dst")
    assert get_bodies(ch, q) == [b"direct to dst"]


@pytest.mark.parametrize("missing", ["destination", "source", "both"])
def test_exchange_unbind_naming_what_no_longer_exists_is_ok(
    conns: Connections, ch: BlockingChannel, unique: str, missing: str
) -> None:
    """As RabbitMQ: unbind-ok, there is no binding left to remove."""
    destination, source = f"{unique}.dst", f"{unique}.src"
    if missing == "source":
        declare(conns, ch, destination, "fanout")
    if missing == "destination":
        declare(conns, ch, source, "fanout")
    ch.exchange_unbind(destination=destination, source=source, routing_key="k")
    assert ch.is_open


def test_exchange_chain(conns: Connections, ch: BlockingChannel, unique: str) -> None:
    names = [f"{unique}.x{i}" for i in range(4)]
    for name in names:
        declare(conns, ch, name, "fanout", auto_delete=True)
    for upstream, downstream in zip(names, names[1:], strict=False):
        ch.exchange_bind(destination=downstream, source=upstream)
    q_end = bound_queue(ch, names[-1], f"{unique}.end")
    q_mid = bound_queue(ch, names[1], f"{unique}.mid")
    ch.basic_publish(names[0], "", b"from head")
    ch.basic_publish(names[2], "", b"from third")
    assert get_bodies(ch, q_end) == [b"from head", b"from third"]
    assert get_bodies(ch, q_mid) == [b"from head"]


def test_exchange_cycle_delivers_once(conns: Connections, ch: BlockingChannel, unique: str) -> None:
    x1, x2, x3 = (f"{unique}.x{i}" for i in range(1, 4))
    for name in (x1, x2, x3):
        declare(conns, ch, name, "fanout", auto_delete=True)
    ch.exchange_bind(destination=x2, source=x1)
    ch.exchange_bind(destination=x3, source=x2)
    ch.exchange_bind(destination=x1, source=x3)
    q1 = bound_queue(ch, x1, f"{unique}.q1")
    q3 = bound_queue(ch, x3, f"{unique}.q3")
    ch.basic_publish(x1, "", b"into x1")
    ch.basic_publish(x2, "", b"into x2")
    assert get_bodies(ch, q1) == [b"into x1", b"into x2"]
    assert get_bodies(ch, q3) == [b"into x1", b"into x2"]


def test_exchange_bound_to_itself(conns: Connections, ch: BlockingChannel, unique: str) -> None:
    ex = f"{unique}.self"
    declare(conns, ch, ex, "fanout", auto_delete=True)
    ch.exchange_bind(destination=ex, source=ex)
    q = bound_queue(ch, ex, f"{unique}.q")
    ch.basic_publish(ex, "", b"once")
    assert get_bodies(ch, q) == [b"once"]


# --- internal exchanges ----------------------------------------------------------------------


def test_internal_exchange_refuses_publish(conns: Connections, unique: str) -> None:
    ch = conns.channel()
    ex = f"{unique}.internal"
    declare(conns, ch, ex, "fanout", internal=True, auto_delete=True)
    ch.basic_publish(ex, "", b"refused")
    with channel_closed(403, "ACCESS_REFUSED", f"cannot publish to internal exchange '{ex}'"):
        ch.queue_declare("", exclusive=True)  # any synchronous call surfaces the close


def test_internal_exchange_routes_via_exchange_binding(
    conns: Connections, ch: BlockingChannel, unique: str
) -> None:
    front, internal = f"{unique}.front", f"{unique}.internal"
    declare(conns, ch, front, "direct", auto_delete=True)
    declare(conns, ch, internal, "fanout", internal=True, auto_delete=True)
    ch.exchange_bind(destination=internal, source=front, routing_key="in")
    q = bound_queue(ch, internal, f"{unique}.q")
    ch.basic_publish(front, "in", b"through internal")
    ch.basic_publish(front, "out", b"not bound")
    assert get_bodies(ch, q) == [b"through internal"]


# --- declare / delete ------------------------------------------------------------------------


def test_passive_declare(conns: Connections, unique: str) -> None:
    ch = conns.channel()
    ex = f"{unique}.ex"
    declare(conns, ch, ex, "topic", auto_delete=True)
    ch.exchange_declare(ex, passive=True)
    ch.exchange_declare(ex, "fanout", passive=True)  # passive ignores the other properties
    with channel_closed(404, "NOT_FOUND", f"no exchange '{unique}.missing' in vhost '/'"):
        ch.exchange_declare(f"{unique}.missing", passive=True)


def test_durable_exchange_redeclare(conns: Connections, unique: str) -> None:
    ch = conns.channel()
    ex = declare(conns, ch, f"{unique}.durable", "direct", durable=True)
    ch.exchange_declare(ex, "direct", durable=True)  # an equivalent redeclare is fine
    ch.exchange_declare(ex, passive=True)


def test_auto_delete_exchange_goes_when_last_binding_goes(conns: Connections, unique: str) -> None:
    ch = conns.channel()
    ex = f"{unique}.auto"
    declare(conns, ch, ex, "direct", auto_delete=True)
    # never bound: stays
    assert exchange_exists(ch.connection, ex)
    q1 = bound_queue(ch, ex, f"{unique}.q1", "a")
    q2 = bound_queue(ch, ex, f"{unique}.q2", "b")
    ch.queue_unbind(q1, ex, routing_key="a")
    assert exchange_exists(ch.connection, ex)  # one binding left
    ch.queue_unbind(q2, ex, routing_key="b")
    wait_for_exchange_gone(ch.connection, ex)


def test_auto_delete_exchange_goes_when_bound_queue_deleted(
    conns: Connections, unique: str
) -> None:
    ch = conns.channel()
    ex = f"{unique}.auto"
    declare(conns, ch, ex, "fanout", auto_delete=True)
    q = bound_queue(ch, ex, f"{unique}.q")
    ch.queue_delete(q)
    wait_for_exchange_gone(ch.connection, ex)


def test_auto_delete_exchange_goes_when_exchange_binding_removed(
    conns: Connections, unique: str
) -> None:
    ch = conns.channel()
    src, dst = f"{unique}.src", f"{unique}.dst"
    declare(conns, ch, src, "fanout", auto_delete=True)
    declare(conns, ch, dst, "fanout", auto_delete=True)
    ch.exchange_bind(destination=dst, source=src)
    ch.exchange_unbind(destination=dst, source=src)
    wait_for_exchange_gone(ch.connection, src)


def test_delete_exchange(conns: Connections, unique: str) -> None:
    ch = conns.channel()
    ex = f"{unique}.ex"
    declare(conns, ch, ex, "direct")
    bound_queue(ch, ex, f"{unique}.q", "k")
    ch.exchange_delete(ex)
    assert not exchange_exists(ch.connection, ex)
    with channel_closed(404, "NOT_FOUND", f"no exchange '{ex}' in vhost '/'"):
        ch.queue_bind(f"{unique}.q", ex, routing_key="k")


def test_delete_missing_exchange_is_ok(conns: Connections, unique: str) -> None:
    ch = conns.channel()
    ch.exchange_delete(f"{unique}.never-declared")
    ch.exchange_delete(f"{unique}.never-declared", if_unused=True)
    assert ch.is_open


def test_delete_if_unused(conns: Connections, unique: str) -> None:
    ch = conns.channel()
    ex = f"{unique}.ex"
    declare(conns, ch, ex, "direct", auto_delete=False)
    q = bound_queue(ch, ex, f"{unique}.q", "k")
    with channel_closed(406, "PRECONDITION_FAILED", f"exchange '{ex}' in vhost '/' in use"):
        ch.exchange_delete(ex, if_unused=True)
    ch = ch.connection.channel()
    assert exchange_exists(ch.connection, ex)
    ch.queue_unbind(q, ex, routing_key="k")
    ch.exchange_delete(ex, if_unused=True)
    assert not exchange_exists(ch.connection, ex)
