"""Unit tests of the exchange types' routers and of routing through a virtual host.

Routers come from a real broker's ``exchange_types`` registry (the plugins load from entry
points); destinations are real queues of a fresh virtual host.
"""

from __future__ import annotations

import random
import re
from collections import Counter
from collections.abc import Collection, Iterator, Mapping
from typing import Any

import pytest

import warrenmq
from warrenmq import Binding, Exchange, Message, PreconditionFailed, Properties, Queue, Router
from warrenmq.plugins import topic as topic_module
from warrenmq.vhost import VirtualHost


@pytest.fixture(scope="module")
def broker() -> warrenmq.Broker:
    return warrenmq.Broker(warrenmq.Settings(amqp_port=0))


@pytest.fixture
def vhost(broker: warrenmq.Broker) -> VirtualHost:
    return VirtualHost(broker, "routers-test")


class RouterUnderTest:
    """A router made by a registered exchange type, with real queues as destinations."""

    def __init__(self, vhost: VirtualHost, type_name: str) -> None:
        self.vhost = vhost
        exchange_type = vhost.broker.exchange_types[type_name]
        self.exchange = vhost.declare_exchange(f"x-{type_name}", type_name)
        self.router: Router = exchange_type.create_router(self.exchange)

    def queue(self, name: str) -> Queue:
        existing = self.vhost.queues.get(name)
        return existing if existing is not None else self.vhost.declare_queue(name)

    def binding(self, queue: str, key: str, arguments: Mapping[str, Any] | None = None) -> Binding:
        return Binding(self.exchange, self.queue(queue), key, arguments)

    def bind(self, queue: str, key: str, arguments: Mapping[str, Any] | None = None) -> Binding:
        binding = self.binding(queue, key, arguments)
        self.router.add_binding(binding)
        return binding

    def unbind(self, *bindings: Binding) -> None:
        self.router.remove_bindings(bindings)

    def route(self, key: str, headers: dict[str, Any] | None = None) -> list[str]:
        """Names of the destinations, in the router's order; checks there are no duplicates."""
        properties = Properties(headers=headers) if headers is not None else None
        result = self.router.route(Message(self.exchange.name, key, b"", properties))
        names = [destination.name for destination in result]
        assert len(names) == len(set(names)), f"duplicate destinations {names}"
        return names

    def routes(self, key: str, headers: dict[str, Any] | None = None) -> set[str]:
        return set(self.route(key, headers))


# -- topic ------------------------------------------------------------------------------------


def topic_regex(pattern: str) -> re.Pattern[str]:
    """A brute-force matcher: every word followed by '.', '*' one word, '#' zero or more."""
    words = pattern.split(".") if pattern else []
    parts = []
    for word in words:
        if word == "*":
            parts.append(r"[^.]*\.")
        elif word == "#":
            parts.append(r"(?:[^.]*\.)*")
        else:
            parts.append(re.escape(word) + r"\.")
    return re.compile("".join(parts))


def topic_matches(pattern: str, key: str) -> bool:
    subject = "".join(word + "." for word in key.split(".")) if key else ""
    return topic_regex(pattern).fullmatch(subject) is not None


TOPIC_CASES = [
    ("a.b", "a.b", True),
    ("a.b", "a.b.c", False),
    ("a.b", "a", False),
    ("a.b", "b.a", False),
    ("*", "a", True),
    ("*", "", False),
    ("*", "a.b", False),
    ("*", ".", False),
    ("*.*", ".", True),
    ("a.*", "a.", True),
    ("a.*", "a", False),
    ("a.*.c", "a..c", True),
    ("a..c", "a..c", True),
    ("a..c", "a.b.c", False),
    ("", "", True),
    ("", "a", False),
    ("#", "", True),
    ("#", "a", True),
    ("#", "a.b.c", True),
    ("#", ".", True),
    ("#.#", "", True),
    ("#.#", "a.b.c", True),
    ("a.#", "a", True),
    ("a.#", "a.b", True),
    ("a.#", "a.b.c", True),
    ("a.#", "b.a", False),
    ("a.#", "", False),
    ("#.a", "a", True),
    ("#.a", "x.y.a", True),
    ("#.a", "a.x", False),
    ("a.#.b", "a.b", True),
    ("a.#.b", "a.x.b", True),
    ("a.#.b", "a.x.y.b", True),
    ("a.#.b", "a.b.b", True),
    ("a.#.b", "a.b.c", False),
    ("a.#.#.b", "a.b", True),
    ("a.#.*", "a", False),
    ("a.#.*", "a.b", True),
    ("*.#", "", False),
    ("*.#", "a", True),
    ("#.*", "a.b", True),
    ("#.*", "", False),
    ("*.*.*", "a..", True),
    ("#.b.#", "a.b.c", True),
    ("#.b.#", "b", True),
    ("#.b.#", "a.c", False),
]


@pytest.mark.parametrize(
    ("pattern", "key", "expected"),
    TOPIC_CASES,
    ids=[f"{pattern!r}~{key!r}" for pattern, key, _ in TOPIC_CASES],
)
def test_topic_semantics(vhost: VirtualHost, pattern: str, key: str, expected: bool) -> None:
    assert topic_matches(pattern, key) is expected, "the reference matcher disagrees"
    topic = RouterUnderTest(vhost, "topic")
    topic.bind("q", pattern)
    assert topic.routes(key) == ({"q"} if expected else set())


def test_topic_all_patterns_at_once(vhost: VirtualHost) -> None:
    topic = RouterUnderTest(vhost, "topic")
    patterns = sorted({pattern for pattern, _, _ in TOPIC_CASES})
    for index, pattern in enumerate(patterns):
        topic.bind(f"q{index}", pattern)
    for key in sorted({key for _, key, _ in TOPIC_CASES}):
        expected = {f"q{i}" for i, p in enumerate(patterns) if topic_matches(p, key)}
        assert topic.routes(key) == expected, key


def test_topic_one_queue_reached_by_many_patterns_appears_once(vhost: VirtualHost) -> None:
    topic = RouterUnderTest(vhost, "topic")
    for pattern in ("#", "#.#", "a.#", "*.b", "a.b", "#.b", "a.#.b", "#.#.#"):
        topic.bind("q", pattern)
    topic.bind("other", "a.*")
    assert topic.route("a.b") in (["q", "other"], ["other", "q"])


def _trie_nodes(router: Router) -> int:
    """How many nodes the topic trie holds (its internal index; pruning shows here)."""
    stack = [router._root]  # type: ignore[attr-defined]
    count = 0
    while stack:
        node = stack.pop()
        count += 1
        stack.extend(node.words.values())
        stack.extend(child for child in (node.star, node.hash) if child is not None)
    return count


def test_topic_unbind_stops_matching_and_prunes(vhost: VirtualHost) -> None:
    topic = RouterUnderTest(vhost, "topic")
    deep = topic.bind("q1", "a.b.c.d")
    hashed = topic.bind("q2", "a.#.d")
    star = topic.bind("q3", "a.*")
    assert topic.routes("a.b.c.d") == {"q1", "q2"}
    topic.unbind(deep)
    assert topic.routes("a.b.c.d") == {"q2"}
    assert topic.routes("a.b") == {"q3"}, "removing a.b.c.d must not cut the shared 'a' node"
    topic.unbind(hashed, star)
    assert topic.routes("a.b.c.d") == set()
    assert topic.routes("a.b") == set()
    assert _trie_nodes(topic.router) == 1, "only the root is left"


def test_topic_unbinding_an_unknown_binding_is_harmless(vhost: VirtualHost) -> None:
    topic = RouterUnderTest(vhost, "topic")
    topic.bind("q", "a.b")
    topic.unbind(topic.binding("q", "a.c"), topic.binding("other", "a.b"), topic.binding("q", "a"))
    assert topic.routes("a.b") == {"q"}


def test_topic_duplicate_bindings_are_counted(vhost: VirtualHost) -> None:
    topic = RouterUnderTest(vhost, "topic")
    # two bindings with the same key to the same queue differ by their arguments
    first = topic.bind("q", "a.*", {"n": 1})
    second = topic.bind("q", "a.*", {"n": 2})
    assert topic.route("a.b") == ["q"]
    topic.unbind(first)
    assert topic.routes("a.b") == {"q"}, "the other binding still routes"
    topic.unbind(second)
    assert topic.routes("a.b") == set()


def test_topic_route_cache_follows_bind_and_unbind(vhost: VirtualHost) -> None:
    topic = RouterUnderTest(vhost, "topic")
    assert topic.routes("a.b") == set()
    assert topic.routes("a.b") == set()  # now cached
    binding = topic.bind("q", "a.*")
    assert topic.routes("a.b") == {"q"}
    assert topic.routes("a.b") == {"q"}
    topic.bind("r", "#")
    assert topic.routes("a.b") == {"q", "r"}
    topic.unbind(binding)
    assert topic.routes("a.b") == {"r"}


WORDS = ("a", "b", "c", "d", "e", "f", "")


def _random_word(rng: random.Random, wildcards: bool) -> str:
    draw = rng.random()
    if wildcards and draw < 0.03:
        return "#"
    if wildcards and draw < 0.18:
        return "*"
    return rng.choice(WORDS)


def _random_key(rng: random.Random, wildcards: bool) -> str:
    return ".".join(_random_word(rng, wildcards) for _ in range(rng.randint(0, 6)))


def test_topic_agrees_with_brute_force_on_a_large_random_set(vhost: VirtualHost) -> None:
    rng = random.Random(20240501)
    topic = RouterUnderTest(vhost, "topic")
    live: Counter[tuple[str, str]] = Counter()
    bindings: list[Binding] = []
    for index in range(10_000):
        queue, pattern = f"q{rng.randrange(1000)}", _random_key(rng, wildcards=True)
        # distinct arguments make each binding distinct, so duplicates are counted
        bindings.append(topic.bind(queue, pattern, {"i": index}))
        live[(pattern, queue)] += 1
    keys = sorted({_random_key(rng, wildcards=False) for _ in range(300)})
    sizes: set[int] = set()

    def check() -> None:
        by_pattern: dict[str, set[str]] = {}
        for (pattern, queue), count in live.items():
            if count:
                by_pattern.setdefault(pattern, set()).add(queue)
        regexes = [(topic_regex(p), queues) for p, queues in by_pattern.items()]
        for key in keys:
            subject = "".join(word + "." for word in key.split(".")) if key else ""
            expected: set[str] = set()
            for regex, queues in regexes:
                if regex.fullmatch(subject):
                    expected |= queues
            assert topic.routes(key) == expected, key
            sizes.add(len(expected))

    check()
    assert len(sizes) > 20, "the random set must give varied results to mean anything"
    rng.shuffle(bindings)
    removed = bindings[:6_000]
    topic.unbind(*removed)
    for binding in removed:
        live[(binding.routing_key, binding.destination.name)] -= 1
    check()
    topic.unbind(*bindings[6_000:])
    assert _trie_nodes(topic.router) == 1


@pytest.fixture
def match_visits(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Counts trie-node visits of the topic router: ``[count]``, reset by assigning 0."""
    visits = [0]
    match = topic_module._match

    def counting(*args: Any) -> None:
        visits[0] += 1
        match(*args)

    monkeypatch.setattr(topic_module, "_match", counting)
    return visits


def test_topic_routing_does_not_scan_bindings(vhost: VirtualHost, match_visits: list[int]) -> None:
    topic = RouterUnderTest(vhost, "topic")
    for index in range(10_000):
        topic.bind(f"q{index % 50}", f"stock.s{index}.*")
    topic.bind("all", "#")
    assert topic.routes("stock.s4321.nyse") == {"q21", "all"}
    visits = match_visits[0]
    assert visits <= 20, f"{visits} trie nodes visited for one key among 10,000 bindings"
    match_visits[0] = 0
    assert topic.routes("stock.nothing.here") == {"all"}
    assert match_visits[0] <= 20


def test_topic_many_hashes_do_not_explode(vhost: VirtualHost, match_visits: list[int]) -> None:
    """A hostile pattern like '#.a.#.a.#...' against a long key must stay polynomial."""
    topic = RouterUnderTest(vhost, "topic")
    topic.bind("q", ".".join(["#", "a"] * 12 + ["#"]))
    topic.bind("r", ".".join(["#", "b"] * 12 + ["#"]))
    key = ".".join(["a"] * 60)
    assert topic.routes(key) == {"q"}
    assert match_visits[0] < 10_000, match_visits[0]


# -- direct and fanout ---------------------------------------------------------------------------


def test_direct_routes_by_exact_key(vhost: VirtualHost) -> None:
    direct = RouterUnderTest(vhost, "direct")
    direct.bind("q1", "red")
    direct.bind("q1", "green")
    direct.bind("q2", "green")
    direct.bind("q3", "")
    assert direct.routes("red") == {"q1"}
    assert direct.routes("green") == {"q1", "q2"}
    assert direct.routes("") == {"q3"}
    assert direct.routes("blue") == set()
    assert direct.routes("red.x") == set()
    assert direct.routes("*") == set()


def test_direct_duplicate_bindings_route_once_and_are_counted(vhost: VirtualHost) -> None:
    direct = RouterUnderTest(vhost, "direct")
    first = direct.bind("q", "k", {"n": 1})
    second = direct.bind("q", "k", {"n": 2})
    assert direct.route("k") == ["q"]
    direct.unbind(first)
    assert direct.route("k") == ["q"]
    direct.unbind(second)
    assert direct.route("k") == []
    direct.unbind(second)  # unknown now: harmless
    assert direct.route("k") == []


def test_fanout_routes_to_every_destination_once(vhost: VirtualHost) -> None:
    fanout = RouterUnderTest(vhost, "fanout")
    first = fanout.bind("q1", "ignored")
    second = fanout.bind("q1", "other")
    fanout.bind("q2", "")
    for key in ("", "anything", "a.b.c"):
        assert fanout.routes(key) == {"q1", "q2"}
    fanout.unbind(first)
    assert fanout.routes("x") == {"q1", "q2"}
    fanout.unbind(second)
    assert fanout.routes("x") == {"q2"}


# -- headers ----------------------------------------------------------------------------------------


HEADERS_CASES = [
    # (binding arguments, message headers, expected match)
    ({"a": 1, "b": "x"}, {"a": 1, "b": "x"}, True),
    ({"a": 1, "b": "x"}, {"a": 1, "b": "x", "c": 3}, True),
    ({"a": 1, "b": "x"}, {"a": 1}, False),
    ({"a": 1, "b": "x"}, {"a": 2, "b": "x"}, False),
    ({"x-match": "all", "a": 1}, {"a": 1}, True),
    ({"x-match": "all"}, {}, True),
    ({"x-match": "any"}, {"a": 1}, False),
    ({"x-match": "any", "a": 1, "b": 2}, {"b": 2}, True),
    ({"x-match": "any", "a": 1, "b": 2}, {"a": 2, "b": 3}, False),
    ({"x-match": "any", "a": 1}, {}, False),
    # void values match on presence
    ({"a": None}, {"a": "anything"}, True),
    ({"a": None}, {"b": 1}, False),
    ({"x-match": "any", "a": None, "b": 1}, {"a": 0}, True),
    # x- arguments are ignored by all/any ...
    ({"x-match": "all", "a": 1, "x-tag": "t"}, {"a": 1}, True),
    ({"x-match": "any", "x-tag": "t"}, {"x-tag": "t"}, False),
    # ... and compared by the -with-x modes
    ({"x-match": "all-with-x", "a": 1, "x-tag": "t"}, {"a": 1}, False),
    ({"x-match": "all-with-x", "a": 1, "x-tag": "t"}, {"a": 1, "x-tag": "t"}, True),
    ({"x-match": "any-with-x", "x-tag": "t"}, {"x-tag": "t"}, True),
    ({"x-match": "any-with-x", "x-tag": "t", "a": 1}, {"x-tag": "u"}, False),
    # values compare within RabbitMQ's type classes (rabbit_misc:type_class): all integer
    # widths are one class, float/double another, booleans and strings their own
    ({"a": 1}, {"a": 100000}, False),
    ({"a": 100000}, {"a": 100000}, True),
    ({"a": 1}, {"a": "1"}, False),
    ({"a": 1}, {"a": True}, False),
    ({"a": True}, {"a": 1}, False),
    ({"a": 1}, {"a": 1.0}, False),
    ({"a": 0.5}, {"a": 0.5}, True),
]


@pytest.mark.parametrize(
    ("arguments", "headers", "expected"),
    HEADERS_CASES,
    ids=[f"{arguments}-{headers}" for arguments, headers, _ in HEADERS_CASES],
)
def test_headers_matching(
    vhost: VirtualHost, arguments: dict[str, Any], headers: dict[str, Any], expected: bool
) -> None:
    exchange = vhost.declare_exchange("hx", "headers")
    queue = vhost.declare_queue("q")
    vhost.bind(queue, "hx", "", arguments)
    message = Message("hx", "", b"", Properties(headers=headers))
    assert {q.name for q in vhost.route(exchange, message)} == ({"q"} if expected else set())


def test_headers_message_without_headers(vhost: VirtualHost) -> None:
    headers = RouterUnderTest(vhost, "headers")
    headers.bind("all", "", {"x-match": "all"})
    headers.bind("any", "", {"x-match": "any", "a": 1})
    headers.bind("needs-a", "", {"a": 1})
    assert headers.routes("whatever") == {"all"}


def test_headers_one_queue_matched_by_two_bindings_once(vhost: VirtualHost) -> None:
    headers = RouterUnderTest(vhost, "headers")
    first = headers.bind("q", "", {"a": 1})
    headers.bind("q", "", {"x-match": "any", "a": 1, "b": 2})
    assert headers.route("", {"a": 1}) == ["q"]
    headers.unbind(first)
    assert headers.route("", {"a": 1}) == ["q"]


@pytest.mark.parametrize("mode", ["bogus", "ALL", "", "any-with-y"])
def test_headers_invalid_x_match_is_406(vhost: VirtualHost, mode: str) -> None:
    exchange = vhost.declare_exchange("hx", "headers")
    queue = vhost.declare_queue("q")
    with pytest.raises(PreconditionFailed) as info:
        vhost.bind(queue, "hx", "", {"x-match": mode, "a": 1})
    assert info.value.reply_code == 406
    assert "x-match" in info.value.text
    assert not exchange.bindings, "the binding was not added"


# -- exchange-to-exchange and alternate exchanges through VirtualHost.route -----------------------


def routed(vhost: VirtualHost, exchange: str, key: str = "k") -> list[str]:
    result: Collection[Queue] = vhost.route(vhost.exchanges[exchange], Message(exchange, key, b""))
    names = [queue.name for queue in result]
    assert len(names) == len(set(names)), f"duplicates in {names}"
    return sorted(names)


def declare(vhost: VirtualHost, name: str, type_name: str = "fanout", **arguments: Any) -> Exchange:
    return vhost.declare_exchange(name, type_name, arguments=arguments)


def bind_queue(vhost: VirtualHost, queue: str, exchange: str, key: str = "") -> None:
    q = vhost.queues.get(queue) or vhost.declare_queue(queue)
    vhost.bind(q, exchange, key)


def bind_exchange(vhost: VirtualHost, destination: str, source: str, key: str = "") -> None:
    vhost.bind(vhost.exchanges[destination], source, key)


def test_exchange_to_exchange_chain(vhost: VirtualHost) -> None:
    declare(vhost, "x1", "topic")
    declare(vhost, "x2", "direct")
    bind_exchange(vhost, "x2", "x1", "a.*")
    bind_queue(vhost, "q", "x2", "a.b")
    assert routed(vhost, "x1", "a.b") == ["q"]
    assert routed(vhost, "x1", "a.c") == []
    assert routed(vhost, "x1", "b.b") == []


def test_exchange_to_exchange_cycles_terminate_and_route_once(vhost: VirtualHost) -> None:
    for name in ("x1", "x2", "x3"):
        declare(vhost, name)
    bind_exchange(vhost, "x2", "x1")
    bind_exchange(vhost, "x3", "x2")
    bind_exchange(vhost, "x1", "x3")  # a cycle of three
    bind_exchange(vhost, "x1", "x1")  # and a self-loop
    bind_queue(vhost, "q1", "x1")
    bind_queue(vhost, "q3", "x3")
    bind_queue(vhost, "shared", "x2")
    bind_queue(vhost, "shared", "x3")
    for start in ("x1", "x2", "x3"):
        assert routed(vhost, start) == ["q1", "q3", "shared"]


def test_exchange_to_exchange_diamond_routes_once(vhost: VirtualHost) -> None:
    for name in ("top", "left", "right"):
        declare(vhost, name)
    bind_exchange(vhost, "left", "top")
    bind_exchange(vhost, "right", "top")
    bind_queue(vhost, "q", "left")
    bind_queue(vhost, "q", "right")
    assert routed(vhost, "top") == ["q"]


def test_alternate_exchange_chain(vhost: VirtualHost) -> None:
    declare(vhost, "main", "direct", **{"alternate-exchange": "ae1"})
    declare(vhost, "ae1", "direct", **{"alternate-exchange": "ae2"})
    declare(vhost, "ae2", "fanout")
    bind_queue(vhost, "routed", "main", "k")
    bind_queue(vhost, "ae1-q", "ae1", "special")
    bind_queue(vhost, "last", "ae2")
    assert routed(vhost, "main", "k") == ["routed"]
    assert routed(vhost, "main", "special") == ["ae1-q"]
    assert routed(vhost, "main", "other") == ["last"]


def test_alternate_exchange_loop_terminates(vhost: VirtualHost) -> None:
    declare(vhost, "x1", "direct", **{"alternate-exchange": "x2"})
    declare(vhost, "x2", "direct", **{"alternate-exchange": "x3"})
    declare(vhost, "x3", "direct", **{"alternate-exchange": "x1"})
    declare(vhost, "self", "direct", **{"alternate-exchange": "self"})
    assert routed(vhost, "x1") == []
    assert routed(vhost, "self") == []
    bind_queue(vhost, "q", "x3", "k")
    assert routed(vhost, "x1", "k") == ["q"]
    assert routed(vhost, "x2", "k") == ["q"]


def test_alternate_exchange_that_does_not_exist(vhost: VirtualHost) -> None:
    declare(vhost, "x", "direct", **{"alternate-exchange": "missing"})
    assert routed(vhost, "x") == []


def test_alternate_exchange_reached_through_exchange_bindings(vhost: VirtualHost) -> None:
    declare(vhost, "main", "direct", **{"alternate-exchange": "ae"})
    declare(vhost, "ae", "fanout")
    declare(vhost, "spread", "fanout")
    bind_exchange(vhost, "spread", "ae")
    bind_queue(vhost, "q", "spread")
    assert routed(vhost, "main", "nothing-bound") == ["q"]


def test_alternate_exchange_of_an_intermediate_exchange_is_used(vhost: VirtualHost) -> None:
    """RabbitMQ (rabbit_exchange:route1/process_alternate) applies each exchange's AE when that
    exchange's own route is empty, including exchanges reached through exchange bindings."""
    declare(vhost, "entry", "fanout")
    declare(vhost, "inner", "direct", **{"alternate-exchange": "inner-ae"})
    declare(vhost, "inner-ae", "fanout")
    bind_exchange(vhost, "inner", "entry")
    bind_queue(vhost, "inner-q", "inner", "known")
    bind_queue(vhost, "caught", "inner-ae")
    assert routed(vhost, "entry", "known") == ["inner-q"]
    assert routed(vhost, "entry", "unknown") == ["caught"]


def test_alternate_exchange_not_used_when_the_exchange_routed_to_an_exchange(
    vhost: VirtualHost,
) -> None:
    """RabbitMQ: the AE is consulted only when the exchange itself matched no binding; matching
    an exchange binding counts even if nothing downstream takes the message."""
    declare(vhost, "entry", "fanout", **{"alternate-exchange": "ae"})
    declare(vhost, "ae", "fanout")
    declare(vhost, "empty", "direct")
    bind_exchange(vhost, "empty", "entry")
    bind_queue(vhost, "ae-q", "ae")
    assert routed(vhost, "entry") == []


def test_unbinding_exchange_to_exchange_stops_routing(vhost: VirtualHost) -> None:
    declare(vhost, "x1")
    declare(vhost, "x2")
    bind_exchange(vhost, "x2", "x1")
    bind_queue(vhost, "q", "x2")
    assert routed(vhost, "x1") == ["q"]
    vhost.unbind(vhost.exchanges["x2"], "x1", "")
    assert routed(vhost, "x1") == []
    assert vhost.exchanges["x1"].exchange_destinations == 0


def _iter_all(router: Router, keys: list[str]) -> Iterator[set[str]]:
    for key in keys:
        yield {d.name for d in router.route(Message("x", key, b""))}


def test_closed_router_routes_nothing(vhost: VirtualHost) -> None:
    for type_name in ("direct", "fanout", "topic", "headers"):
        under = RouterUnderTest(vhost, type_name)
        under.bind("q", "k", {"x-match": "all"} if type_name == "headers" else None)
        assert list(_iter_all(under.router, ["k"])) == [{"q"}]
        under.router.close()
        assert list(_iter_all(under.router, ["k"])) == [set()]
