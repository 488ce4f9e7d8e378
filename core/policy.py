"""Policies, as RabbitMQ's: queue and exchange arguments applied by name pattern and priority.

A policy belongs to a virtual host; its ``pattern`` (a regular expression, searched anywhere
in the name as RabbitMQ does) selects queues, exchanges or both (``apply-to``), and among the
policies that match an object the one with the highest ``priority`` applies, alone. Its
``definition`` supplies arguments without redeclaring. Where the client also gave the argument,
RabbitMQ's rule for that key decides: the lower value wins for TTLs, expiry and length limits;
the client's argument wins for everything else (``rabbit_amqqueue_process:process_args_policy``
and ``rabbit_policy:get_arg``).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from .queue_arguments import OVERFLOW_MODES, QUEUE_MODES

QUEUES = "queues"
EXCHANGES = "exchanges"
ALL = "all"
APPLY_TO = (QUEUES, EXCHANGES, ALL)


class PolicyError(ValueError):
    """A policy that RabbitMQ would refuse; the text is RabbitMQ's where it has one."""


def _non_negative(what: str) -> Callable[[Any], None]:
    def check(value: Any) -> None:
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise PolicyError(f"{value!r} is not a valid {what}")

    return check


def _positive(what: str) -> Callable[[Any], None]:
    def check(value: Any) -> None:
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise PolicyError(f"{value!r} is not a valid {what}")

    return check


def _one_of(values: tuple[str, ...], what: str) -> Callable[[Any], None]:
    def check(value: Any) -> None:
        if value not in values:
            raise PolicyError(f"{value!r} is not a valid {what} value")

    return check


def _text(what: str) -> Callable[[Any], None]:
    def check(value: Any) -> None:
        if not isinstance(value, str):
            raise PolicyError(f"{value!r} is not a valid {what}")

    return check


#: queue definition key -> (check, how the queue's own ``x-`` argument and the policy combine:
#: "min", the lower wins; "argument", the argument wins)
QUEUE_KEYS: dict[str, tuple[Callable[[Any], None], str]] = {
    "message-ttl": (_non_negative("message TTL"), "min"),
    "expires": (_positive("queue expiry"), "min"),
    "max-length": (_non_negative("maximum length"), "min"),
    "max-length-bytes": (_non_negative("maximum length in bytes"), "min"),
    "overflow": (_one_of(OVERFLOW_MODES, "overflow"), "argument"),
    "dead-letter-exchange": (_text("dead letter exchange"), "argument"),
    "dead-letter-routing-key": (_text("dead letter routing key"), "argument"),
    "queue-mode": (_one_of(QUEUE_MODES, "queue mode"), "argument"),
    "max-in-memory-length": (_non_negative("maximum in-memory length"), "min"),
    "max-in-memory-bytes": (_non_negative("maximum in-memory bytes"), "min"),
}
EXCHANGE_KEYS: dict[str, Callable[[Any], None]] = {
    "alternate-exchange": _text("alternate exchange"),
}
#: keys RabbitMQ 3.10 accepts that warrenmq stores and does not act on (mirroring, quorum
#: queue and federation settings): a file exported by RabbitMQ imports, with a warning
IGNORED_KEYS = frozenset(
    {
        "ha-mode",
        "ha-params",
        "ha-sync-mode",
        "ha-sync-batch-size",
        "ha-promote-on-shutdown",
        "ha-promote-on-failure",
        "queue-master-locator",
        "queue-leader-locator",
        "delivery-limit",
        "dead-letter-strategy",
        "max-age",
        "stream-max-segment-size-bytes",
        "federation-upstream",
        "federation-upstream-set",
        "initial-cluster-size",
    }
)


@dataclass(frozen=True)
class Policy:
    """One policy of one virtual host (RabbitMQ's ``set_policy``)."""

    name: str
    pattern: str
    definition: Mapping[str, Any]
    vhost: str = "/"
    apply_to: str = ALL
    priority: int = 0
    regex: re.Pattern[str] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        validate(self)
        object.__setattr__(self, "regex", re.compile(self.pattern))

    def applies_to(self, kind: str, name: str) -> bool:
        """Whether this policy selects the ``kind`` (``queues`` or ``exchanges``) ``name``."""
        return self.apply_to in (kind, ALL) and self.regex.search(name) is not None

    def ignored_keys(self) -> list[str]:
        return sorted(key for key in self.definition if key in IGNORED_KEYS)

    def as_json(self) -> dict[str, Any]:
        """The policy as RabbitMQ's definitions file writes it."""
        return {
            "vhost": self.vhost,
            "name": self.name,
            "pattern": self.pattern,
            "apply-to": self.apply_to,
            "definition": dict(self.definition),
            "priority": self.priority,
        }

    @classmethod
    def from_json(cls, item: Mapping[str, Any]) -> Policy:
        """A policy from RabbitMQ's definitions format (``apply-to``, ``definition``...)."""
        for key in ("name", "pattern", "definition"):
            if key not in item:
                raise PolicyError(f"policy has no '{key}'")
        unknown = set(item) - {"vhost", "name", "pattern", "apply-to", "definition", "priority"}
        if unknown:
            raise PolicyError(f"unknown policy fields {sorted(unknown)}")
        return cls(
            name=item["name"],
            pattern=item["pattern"],
            definition=item["definition"],
            vhost=item.get("vhost", "/"),
            apply_to=item.get("apply-to", ALL),
            priority=item.get("priority", 0),
        )


def validate(policy: Policy) -> None:
    """Raise ``PolicyError`` with RabbitMQ's words for what ``rabbitmqctl set_policy`` refuses."""
    if not isinstance(policy.name, str) or not policy.name:
        raise PolicyError("a policy needs a name")
    if not isinstance(policy.vhost, str):
        raise PolicyError(f"vhost {policy.vhost!r} is not a string")
    if not isinstance(policy.pattern, str):
        raise PolicyError(f"pattern {policy.pattern!r} is not a string")
    try:
        re.compile(policy.pattern)
    except re.error as error:
        raise PolicyError(f"pattern should be regular expression but is invalid: {error}") from None
    if policy.apply_to not in APPLY_TO:
        raise PolicyError(
            f"apply-to '{policy.apply_to}' unrecognised; should be 'queues', 'exchanges' or 'all'"
        )
    if isinstance(policy.priority, bool) or not isinstance(policy.priority, int):
        raise PolicyError(f"priority {policy.priority!r} is not an integer")
    definition = policy.definition
    if not isinstance(definition, Mapping):
        raise PolicyError(f"definition {definition!r} is not a map of settings")
    if not definition:
        raise PolicyError("no policy provided")
    unknown = [
        key
        for key in definition
        if key not in QUEUE_KEYS and key not in EXCHANGE_KEYS and key not in IGNORED_KEYS
    ]
    if unknown:
        terms = ",".join(f'{{<<"{key}">>,{definition[key]!r}}}' for key in unknown)
        raise PolicyError(f"[{terms}] are not recognised policy settings")
    for key, value in definition.items():
        if key in QUEUE_KEYS:
            QUEUE_KEYS[key][0](value)
        elif key in EXCHANGE_KEYS:
            EXCHANGE_KEYS[key](value)


def choose(policies: Iterable[Policy], kind: str, name: str) -> Policy | None:
    """The policy for ``name``: the matching one of highest priority. RabbitMQ leaves ties
    undefined; here the name that sorts first wins, so the choice is stable."""
    best: Policy | None = None
    for policy in policies:
        if not policy.applies_to(kind, name):
            continue
        if (
            best is None
            or policy.priority > best.priority
            or (policy.priority == best.priority and policy.name < best.name)
        ):
            best = policy
    return best


def queue_arguments(arguments: Mapping[str, Any], policy: Policy | None) -> dict[str, Any]:
    """A queue's effective ``x-`` arguments: its own, combined with its policy's."""
    if policy is None:
        return dict(arguments)
    effective = dict(arguments)
    for key, value in policy.definition.items():
        rule = QUEUE_KEYS.get(key)
        if rule is None:
            continue
        argument = "x-" + key
        current = effective.get(argument)
        lower = rule[1] == "min" and isinstance(current, int) and value < current
        if current is None or lower:
            effective[argument] = value
    return effective


def exchange_arguments(arguments: Mapping[str, Any], policy: Policy | None) -> dict[str, Any]:
    """An exchange's effective arguments: the client's win over its policy's."""
    if policy is None:
        return dict(arguments)
    effective = dict(arguments)
    for key, value in policy.definition.items():
        if key in EXCHANGE_KEYS:
            effective.setdefault(key, value)
    return effective
