"""Dead-lettering, as RabbitMQ's ``rabbit_dead_letter``: a message that a queue drops
(rejected, expired, over a length limit) is republished to the queue's dead-letter exchange
with an ``x-death`` history, and dropped instead if that would loop without a rejection.
"""

from __future__ import annotations

import datetime
import logging
import time
from typing import TYPE_CHECKING, Any

from .message import Message

if TYPE_CHECKING:
    from .queue import Queue

log = logging.getLogger("warrenmq.dead_letter")

REJECTED = "rejected"
EXPIRED = "expired"
MAXLEN = "maxlen"

#: letters' encoded properties and x-death histories by what determines them (see ``_letter``)
_memo: dict[tuple[Any, ...], tuple[bytes, list[Any]]] = {}
_MEMO_SIZE = 1024


def _text(value: Any) -> Any:
    return value.decode(errors="replace") if isinstance(value, bytes) else value


def _deaths_with(
    deaths: list[Any],
    queue: str,
    reason: str,
    message: Message,
    expiration: str | None,
    routing_keys: list[str],
    now: int,
) -> list[Any]:
    """``x-death`` after one more death: the entry for (queue, reason) counts up and moves to
    the front, or a new entry goes in front."""
    for index, death in enumerate(deaths):
        if (
            isinstance(death, dict)
            and _text(death.get("queue")) == queue
            and _text(death.get("reason")) == reason
        ):
            updated = dict(death)
            count = updated.get("count")
            updated["count"] = (count if isinstance(count, int) else 0) + 1
            return [updated, *deaths[:index], *deaths[index + 1 :]]
    entry: dict[str, Any] = {
        "count": 1,
        "reason": reason,
        "queue": queue,
        "time": datetime.datetime.fromtimestamp(now, datetime.UTC),
        "exchange": message.exchange,
        "routing-keys": routing_keys,
    }
    if expiration is not None:
        entry["original-expiration"] = expiration
    return [entry, *deaths]


def _is_cycle(queue_name: str, deaths: list[Any]) -> bool:
    """RabbitMQ's rule: the target queue is in the history, and no death from there to now
    was a rejection (a client's decision), so the message would go round forever."""
    for death in deaths:
        if not isinstance(death, dict):
            continue
        if _text(death.get("reason")) == REJECTED:
            return False
        if _text(death.get("queue")) == queue_name:
            return True
    return False


def _letter(
    queue: Queue,
    message: Message,
    reason: str,
    exchange_name: str,
    routing_key: str | None,
    now: int,
) -> tuple[Message, list[Any]] | None:
    """The republished message and its ``x-death`` history (None if the properties cannot
    be decoded).

    A letter's properties depend only on the original's encoded properties, its exchange,
    routing key and body size, the queue, the reason, the new routing key and the second:
    alike messages (a burst expiring together) share one encoding, so a letter is neither
    decoded nor re-encoded and its delivery copies bytes.
    """
    new_key = routing_key if routing_key is not None else message.routing_key
    codec = message.codec
    encoded = message.encoded
    key: tuple[Any, ...] | None = None
    if codec is not None and encoded is not None:
        key = (
            codec,
            encoded,
            len(message.body),
            queue.name,
            reason,
            message.exchange,
            message.routing_key,
            routing_key,
            now,
        )
        hit = _memo.get(key)
        if hit is not None:
            return Message(exchange_name, new_key, message.body, None, hit[0], codec), hit[1]
    try:
        properties = message.properties.copy()
    except Exception as exc:  # undecodable properties: nothing sensible to republish
        log.warning("cannot dead-letter a message from queue '%s': %s", queue.name, exc)
        return None
    headers = dict(properties.headers or {})
    previous = headers.get("x-death")
    cc = headers.get("CC")
    routing_keys = [message.routing_key]
    if isinstance(cc, list):  # sender-selected distribution: the CC keys were routing keys too
        routing_keys += [_text(key) for key in cc if isinstance(key, str | bytes)]
    if routing_key is not None:
        headers.pop("CC", None)  # RabbitMQ drops CC when it replaces the routing key
    deaths = _deaths_with(
        list(previous) if isinstance(previous, list) else [],
        queue.name,
        reason,
        message,
        properties.expiration,
        routing_keys,
        now,
    )
    headers["x-death"] = deaths
    headers.setdefault("x-first-death-reason", reason)
    headers.setdefault("x-first-death-queue", queue.name)
    headers.setdefault("x-first-death-exchange", message.exchange)
    properties.headers = headers
    properties.expiration = None
    letter = Message(exchange_name, new_key, message.body, properties)
    if key is not None and codec is not None:
        try:
            letter_encoded = codec.encode(properties, len(message.body))
        except Exception:  # left to the delivering protocol, which reports it
            return letter, deaths
        if len(_memo) >= _MEMO_SIZE:
            _memo.clear()
        _memo[key] = (letter_encoded, deaths)
        letter.encoded = letter_encoded
        letter.codec = codec
    return letter, deaths


def dead_letter(
    queue: Queue, message: Message, reason: str, exchange_name: str, routing_key: str | None
) -> bool:
    """Republish ``message``, dropped by ``queue`` for ``reason``, to ``exchange_name``.

    Returns True if it reached at least one queue. A missing exchange drops it silently,
    as in RabbitMQ.
    """
    vhost = queue.vhost
    exchange = vhost.exchanges.get(exchange_name)
    if exchange is None:
        return False
    made = _letter(queue, message, reason, exchange_name, routing_key, int(time.time()))
    if made is None:
        return False
    letter, deaths = made
    try:
        targets = vhost.route(exchange, letter)
    except Exception:
        log.exception("routing a dead-lettered message from queue '%s' failed", queue.name)
        return False
    reached = False
    for target in list(targets):
        if reason != REJECTED and _is_cycle(target.name, deaths):
            log.warning(
                "dead-letter cycle: message from queue '%s' not republished to queue '%s'",
                queue.name,
                target.name,
            )
            continue
        if target.publish(letter):
            reached = True
    return reached
