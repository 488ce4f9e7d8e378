"""The topic exchange type: dot-separated words, ``*`` matches one word, ``#`` zero or more.

Bindings live in a trie keyed by word, with separate edges for ``*`` and ``#``, so routing
walks only the branches a routing key can reach instead of scanning every binding. Results are
cached per routing key until the bindings change.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable
from typing import Any

from warrenmq import Binding, Exchange, ExchangeType, Message, Router, hookimpl

CACHE_SIZE = 4096


class _Node:
    __slots__ = ("words", "star", "hash", "targets")

    def __init__(self) -> None:
        self.words: dict[str, _Node] = {}
        self.star: _Node | None = None
        self.hash: _Node | None = None
        #: destinations whose pattern ends here -> number of such bindings
        self.targets: dict[Any, int] = {}

    def child(self, word: str) -> _Node:
        if word == "*":
            if self.star is None:
                self.star = _Node()
            return self.star
        if word == "#":
            if self.hash is None:
                self.hash = _Node()
            return self.hash
        node = self.words.get(word)
        if node is None:
            node = self.words[word] = _Node()
        return node

    def empty(self) -> bool:
        return not (self.words or self.star or self.hash or self.targets)


def _words(key: str) -> list[str]:
    """The words of a key; the empty key has none (``a..b`` has an empty middle word)."""
    return key.split(".") if key else []


def _match(
    node: _Node, words: list[str], i: int, n: int, out: dict[Any, None], seen: set[tuple[int, int]]
) -> None:
    hash_node = node.hash
    if hash_node is not None:
        for j in range(i, n + 1):  # '#' swallows zero or more words
            # each '#' node is entered at each position once: patterns like '#.a.#.a.#'
            # would otherwise reach it along exponentially many paths
            visit = (id(hash_node), j)
            if visit not in seen:
                seen.add(visit)
                _match(hash_node, words, j, n, out, seen)
    if i == n:
        if node.targets:
            out.update(dict.fromkeys(node.targets))
        return
    word_node = node.words.get(words[i])
    if word_node is not None:
        _match(word_node, words, i + 1, n, out, seen)
    star_node = node.star
    if star_node is not None:
        _match(star_node, words, i + 1, n, out, seen)


class TopicRouter(Router):
    __slots__ = ("_root", "_cache")

    def __init__(self) -> None:
        self._root = _Node()
        self._cache: dict[str, tuple[Any, ...]] = {}

    def add_binding(self, binding: Binding) -> None:
        node = self._root
        for word in _words(binding.routing_key):
            node = node.child(word)
        node.targets[binding.destination] = node.targets.get(binding.destination, 0) + 1
        self._cache.clear()

    def remove_bindings(self, bindings: Iterable[Binding]) -> None:
        for binding in bindings:
            self._remove(_words(binding.routing_key), binding.destination)
        self._cache.clear()

    def _remove(self, words: list[str], destination: Any) -> None:
        path = [self._root]
        for word in words:
            parent = path[-1]
            if word == "*":
                node = parent.star
            elif word == "#":
                node = parent.hash
            else:
                node = parent.words.get(word)
            if node is None:
                return
            path.append(node)
        leaf = path[-1]
        count = leaf.targets.get(destination, 0)
        if count > 1:
            leaf.targets[destination] = count - 1
            return
        leaf.targets.pop(destination, None)
        for depth in range(len(words), 0, -1):  # prune empty branches
            node, parent, word = path[depth], path[depth - 1], words[depth - 1]
            if not node.empty():
                break
            if word == "*":
                parent.star = None
            elif word == "#":
                parent.hash = None
            else:
                del parent.words[word]

    def route(self, message: Message) -> Collection[Any]:
        key = message.routing_key
        cached = self._cache.get(key)
        if cached is not None:
            return cached
        out: dict[Any, None] = {}
        words = _words(key)
        _match(self._root, words, 0, len(words), out, set())
        result = tuple(out)
        if len(self._cache) >= CACHE_SIZE:
            self._cache.clear()
        self._cache[key] = result
        return result

    def close(self) -> None:
        self._root = _Node()
        self._cache.clear()


class TopicExchange(ExchangeType):
    name = "topic"

    @classmethod
    def create_router(cls, exchange: Exchange) -> Router:
        return TopicRouter()


@hookimpl
def warrenmq_register_exchange_types(registry: Any) -> None:
    registry.add(TopicExchange)
