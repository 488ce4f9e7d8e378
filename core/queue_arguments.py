"""Validation of the ``x-`` queue arguments, with RabbitMQ's reply texts.

Each argument is checked by its own small function before a queue is created, so a bad value
gets 406 PRECONDITION_FAILED naming the argument and nothing half-made is left behind.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from .errors import PreconditionFailed

#: the largest TTL RabbitMQ accepts (ms), for x-message-ttl and per-message expiration
MAX_TTL = 2**32 - 1
OVERFLOW_MODES = ("drop-head", "reject-publish", "reject-publish-dlx")
QUEUE_MODES = ("default", "lazy")


def _type_name(value: Any) -> str:
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int):
        return "long"
    if isinstance(value, float):
        return "double"
    if isinstance(value, str | bytes):
        return "longstr"
    if isinstance(value, dict):
        return "table"
    if isinstance(value, list):
        return "array"
    return "void" if value is None else type(value).__name__


def _integer(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise _Invalid(f"{{unacceptable_type,{_type_name(value)}}}")
    return value


def _text(value: Any) -> str:
    if isinstance(value, bytes):
        return value.decode(errors="replace")
    if not isinstance(value, str):
        raise _Invalid(f"{{unacceptable_type,{_type_name(value)}}}")
    return value


class _Invalid(Exception):
    """An argument's value is wrong; the text is RabbitMQ's error term."""


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


def _ttl(value: Any) -> None:
    _non_negative(value)
    if value > MAX_TTL:
        raise _Invalid(f"{{value_too_large,{value},{MAX_TTL}}}")


def _max_priority(value: Any) -> None:
    number = _integer(value)
    if number < 1 or number > 255:
        raise _Invalid(f"{{value_out_of_range,{number}}}")


def _one_of(allowed: tuple[str, ...]) -> Callable[[Any], None]:
    def check(value: Any) -> None:
        text = _text(value)
        if text not in allowed:
            raise _Invalid(f'{{invalid_value,<<"{text}">>}}')

    return check


def _boolean(value: Any) -> None:
    if not isinstance(value, bool):
        raise _Invalid(f"{{unacceptable_type,{_type_name(value)}}}")


def _string(value: Any) -> None:
    _text(value)


CHECKS: dict[str, Callable[[Any], None]] = {
    "x-expires": _positive,
    "x-message-ttl": _ttl,
    "x-max-length": _non_negative,
    "x-max-length-bytes": _non_negative,
    "x-max-priority": _max_priority,
    "x-overflow": _one_of(OVERFLOW_MODES),
    "x-dead-letter-exchange": _string,
    "x-dead-letter-routing-key": _string,
    "x-single-active-consumer": _boolean,
    "x-queue-mode": _one_of(QUEUE_MODES),
}


def validate_queue_arguments(arguments: Mapping[str, Any], where: str) -> None:
    """Raise 406 for the first bad ``x-`` argument; ``where`` is "queue 'q' in vhost '/'"."""
    for name, check in CHECKS.items():
        if name not in arguments:
            continue
        try:
            check(arguments[name])
        except _Invalid as error:
            raise PreconditionFailed(f"invalid arg '{name}' for {where}: {error}") from None
    if "x-dead-letter-routing-key" in arguments and "x-dead-letter-exchange" not in arguments:
        raise PreconditionFailed(
            f"invalid arg 'x-dead-letter-routing-key' for {where}: "
            "{routing_key_but_no_dlx_defined}"
        )


def message_ttl(expiration: str) -> int:
    """A per-message ``expiration`` property as a TTL in ms; 406 as RabbitMQ if invalid."""
    text = expiration.strip() if isinstance(expiration, str) else expiration
    if not isinstance(text, str) or not text.lstrip("-").isdigit():
        raise PreconditionFailed(f"invalid expiration '{expiration}': no_integer")
    ttl = int(text)
    if ttl < 0:
        raise PreconditionFailed(f"invalid expiration '{expiration}': {{value_negative,{ttl}}}")
    if ttl > MAX_TTL:
        raise PreconditionFailed(
            f"invalid expiration '{expiration}': {{value_too_large,{ttl},{MAX_TTL}}}"
        )
    return ttl


def argument_text(arguments: Mapping[str, Any], name: str) -> str | None:
    """A validated string argument as ``str`` (AMQP clients may send bytes)."""
    value = arguments.get(name)
    if value is None:
        return None
    return value.decode(errors="replace") if isinstance(value, bytes) else str(value)
