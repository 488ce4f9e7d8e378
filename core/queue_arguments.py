"""Validation of the ``x-`` queue arguments, with RabbitMQ's reply texts.

Each argument is checked by its own small function before a queue is created, so a bad value
gets 406 PRECONDITION_FAILED naming the argument and nothing half-made is left behind.
"""

from __future__ import annotations

import datetime
import decimal
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from .errors import PreconditionFailed

#: the largest per-message expiration RabbitMQ accepts (ms)
MAX_TTL = 2**32 - 1
MAX_PRIORITY = 255
OVERFLOW_MODES = ("drop-head", "reject-publish", "reject-publish-dlx")
QUEUE_MODES = ("default", "lazy")


def field_type(value: Any) -> str:
    """The AMQP field type a client sent ``value`` as, in RabbitMQ's words."""
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int):
        return "signedint" if -(2**31) <= value < 2**31 else "long"
    if isinstance(value, float):
        return "double"
    if isinstance(value, decimal.Decimal):
        return "decimal"
    if isinstance(value, str | bytes):
        return "longstr"
    if isinstance(value, dict):
        return "table"
    if isinstance(value, list):
        return "array"
    if isinstance(value, datetime.datetime):
        return "timestamp"
    return "void" if value is None else type(value).__name__


class _Invalid(Exception):
    """An argument's value is wrong; the text is RabbitMQ's error term."""


def _integer(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise _Invalid(f'"expected integer, got {field_type(value)}"')
    return value


def _text(value: Any) -> str:
    if isinstance(value, bytes):
        return value.decode(errors="replace")
    if not isinstance(value, str):
        raise _Invalid(f"{{unacceptable_type,{field_type(value)}}}")
    return value


def _non_negative(value: Any) -> None:
    number = _integer(value)
    if number < 0:
        raise _Invalid(f"{{value_negative,{number}}}")


def _positive(value: Any) -> None:
    number = _integer(value)
    if number == 0:
        raise _Invalid("{value_zero,0}")
    if number < 0:
        raise _Invalid(f"{{value_negative,{number}}}")


def _max_priority(value: Any) -> None:
    number = _integer(value)
    if number < 0:
        raise _Invalid(f"{{value_negative,{number}}}")
    if number > MAX_PRIORITY:
        raise _Invalid(f"{{max_value_exceeded,{number}}}")


def _overflow(value: Any) -> None:
    if _text(value) not in OVERFLOW_MODES:
        raise _Invalid("invalid_overflow")


def _queue_mode(value: Any) -> None:
    mode = _text(value)
    if mode not in QUEUE_MODES:
        raise _Invalid(f"\"unsupported queue mode '{mode}'\"")


def _boolean(value: Any) -> None:
    if not isinstance(value, bool):
        raise _Invalid(f"{{unacceptable_type,{field_type(value)}}}")


def _string(value: Any) -> None:
    _text(value)


CHECKS: dict[str, Callable[[Any], None]] = {
    "x-expires": _positive,
    "x-message-ttl": _non_negative,
    "x-max-length": _non_negative,
    "x-max-length-bytes": _non_negative,
    "x-max-priority": _max_priority,
    "x-overflow": _overflow,
    "x-dead-letter-routing-key": _string,
    "x-single-active-consumer": _boolean,
    "x-queue-mode": _queue_mode,
    "x-max-in-memory-length": _non_negative,
    "x-max-in-memory-bytes": _non_negative,
}


def validate_queue_arguments(
    arguments: Mapping[str, Any], queue: str, vhost: str, queue_types: Iterable[str]
) -> None:
    """Raise 406 for the first bad ``x-`` argument, in RabbitMQ's words."""
    where = f"queue '{queue}' in vhost '{vhost}'"
    dlx = arguments.get("x-dead-letter-exchange")
    if dlx is not None and not isinstance(dlx, str | bytes):
        raise PreconditionFailed(
            f"invalid type '{field_type(dlx)}' for arg 'x-dead-letter-exchange' in {where}"
        )
    for name, check in CHECKS.items():
        if name not in arguments:
            continue
        try:
            check(arguments[name])
        except _Invalid as error:
            raise PreconditionFailed(f"invalid arg '{name}' for {where}: {error}") from None
    if "x-dead-letter-routing-key" in arguments and dlx is None:
        raise PreconditionFailed(
            f"invalid arg 'x-dead-letter-routing-key' for {where}: routing_key_but_no_dlx_defined"
        )
    queue_type = arguments.get("x-queue-type")
    if queue_type is not None:
        try:
            name = _text(queue_type)
        except _Invalid as error:
            raise PreconditionFailed(f"invalid arg 'x-queue-type' for {where}: {error}") from None
        if name not in queue_types:
            raise PreconditionFailed(
                f"invalid arg 'x-queue-type' for {where}: \"unsupported queue type '{name}'\""
            )


#: valid expirations already read (publishers reuse a few values)
_TTLS: dict[str, int] = {}


def message_ttl(expiration: str) -> int:
    """A per-message ``expiration`` property as a TTL in ms; 406 as RabbitMQ if invalid."""
    ttl = _TTLS.get(expiration)
    if ttl is None:
        ttl = _message_ttl(expiration)
        if len(_TTLS) >= 256:
            _TTLS.clear()
        _TTLS[expiration] = ttl
    return ttl


def _message_ttl(expiration: str) -> int:
    text = expiration
    digits = text[1:] if text[:1] in ("+", "-") else text
    if not digits or not digits.isascii():
        raise PreconditionFailed(f"invalid expiration '{expiration}': no_integer")
    length = len(digits) - len(digits.lstrip("0123456789"))
    if not length:
        raise PreconditionFailed(f"invalid expiration '{expiration}': no_integer")
    if length < len(digits):
        leftover = digits[length:]
        raise PreconditionFailed(
            f"invalid expiration '{expiration}': {{leftover_string,\"{leftover}\"}}"
        )
    ttl = int(text)
    if ttl < 0:
        raise PreconditionFailed(f"invalid expiration '{expiration}': {{value_negative,{ttl}}}")
    if ttl > MAX_TTL:
        raise PreconditionFailed(f"invalid expiration '{expiration}': {{value_too_large,{ttl}}}")
    return ttl


def argument_text(arguments: Mapping[str, Any], name: str) -> str | None:
    """A validated string argument as ``str`` (AMQP clients may send bytes)."""
    value = arguments.get(name)
    if value is None:
        return None
    return value.decode(errors="replace") if isinstance(value, bytes) else str(value)
