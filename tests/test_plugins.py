"""The plugin system: the built-ins listed by ``warrenmq plugins``, third-party plugin objects
used end to end from pika, and the errors a broken or conflicting plugin gets."""

from __future__ import annotations

import logging
import os
import re
import subprocess
import sys
from collections.abc import Collection, Iterable
from pathlib import Path
from typing import Any

import pika
import pytest
from dists import install_distribution
from pika.exceptions import UnroutableError
from pika_helpers import Collector, connection_parameters, wait_until

import warrenmq
from warrenmq import (
    Binding,
    Consumer,
    DispatchPolicy,
    Exchange,
    ExchangeType,
    Message,
    Queue,
    Router,
)
from warrenmq.errors import PluginError
from warrenmq.testing import running_broker

# -- a third-party exchange type: route on the first word of the routing key ----------------------


class FirstWordRouter(Router):
    """Bindings keyed by a word; a message goes to the bindings of its key's first word."""

    def __init__(self) -> None:
        self.index: dict[str, dict[Any, int]] = {}

    def add_binding(self, binding: Binding) -> None:
        targets = self.index.setdefault(binding.routing_key, {})
        targets[binding.destination] = targets.get(binding.destination, 0) + 1

    def remove_bindings(self, bindings: Iterable[Binding]) -> None:
        for binding in bindings:
            targets = self.index.get(binding.routing_key, {})
            if targets.get(binding.destination, 0) > 1:
                targets[binding.destination] -= 1
            else:
                targets.pop(binding.destination, None)

    def route(self, message: Message) -> Collection[Any]:
        return tuple(self.index.get(message.routing_key.split(".", 1)[0], ()))


class FirstWordExchange(ExchangeType):
    name = "x-first-word"

    @classmethod
    def create_router(cls, exchange: Exchange) -> Router:
        return FirstWordRouter()


class FirstWordPlugin:
    """A plugin object, as a third-party package would list under the ``warrenmq`` group."""

    @staticmethod
    @warrenmq.hookimpl
    def warrenmq_register_exchange_types(registry: Any) -> None:
        registry.add(FirstWordExchange)


# -- a third-party dispatch policy: always the first consumer with credit ------------------------


class FirstAvailable(DispatchPolicy):
    """Primary/standby: the earliest consumer that can take a message gets it."""

    name = "first-available"

    def __init__(self, queue: Queue) -> None:
        super().__init__(queue)
        self._ready: dict[Consumer, None] = {}

    def add(self, consumer: Consumer) -> None:
        self._ready[consumer] = None

    def remove(self, consumer: Consumer) -> None:
        self._ready.pop(consumer, None)

    def select(self) -> Consumer | None:
        for consumer in self.queue.consumers:  # in arrival order
            if consumer in self._ready:
                return consumer
        return None

    def __len__(self) -> int:
        return len(self._ready)


class FirstAvailablePlugin:
    @staticmethod
    @warrenmq.hookimpl
    def warrenmq_register_dispatch_policies(registry: Any) -> None:
        registry.add(FirstAvailable)


# -- the built-ins through the CLI ----------------------------------------------------------------

BUILT_INS = [
    # (kind, name, plugin)
    ("exchange type", "direct", "direct"),
    ("exchange type", "fanout", "fanout"),
    ("exchange type", "topic", "topic"),
    ("exchange type", "headers", "headers"),
    ("dispatch policy", "round-robin", "round-robin"),
    ("dispatch policy", "fair", "fair"),
    ("queue type", "classic", "classic-queue"),
    ("store", "memory", "memory-store"),
    ("protocol", "amqp", "amqp"),
    ("transport", "tcp", "tcp"),
]


def test_plugins_command_lists_every_built_in() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "warrenmq", "plugins"],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert re.split(r"\s{2,}", lines[0].strip()) == ["KIND", "NAME", "PLUGIN", "PACKAGE"]
    rows = {}
    for line in lines[1:]:
        kind, name, plugin, package = re.split(r"\s{2,}", line.strip())
        assert (kind, name) not in rows, f"listed twice: {line}"
        rows[(kind, name)] = (plugin, package)
    for kind, name, plugin in BUILT_INS:
        assert (kind, name) in rows, f"{kind} {name} missing from:\n{result.stdout}"
        listed_plugin, package = rows[(kind, name)]
        assert listed_plugin == plugin
        assert package == f"warrenmq {warrenmq.__version__}"


def test_plugins_command_lists_each_kind_by_name(tmp_path: Path) -> None:
    """A package found before warrenmq on the path is still listed in its place by name."""
    site = install_distribution(
        tmp_path,
        "warrenmq-loud-fanout",
        "0.3",
        {"loud-fanout": "warrenmq_loud_fanout"},
        {"warrenmq_loud_fanout": LOUD_FANOUT},
    )
    result = subprocess.run(
        [sys.executable, "-m", "warrenmq", "plugins"],
        env={**os.environ, "PYTHONPATH": str(site)},
        cwd=tmp_path,  # not a checkout of warrenmq, whose metadata would come first
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    rows = [re.split(r"\s{2,}", line.strip()) for line in result.stdout.splitlines()[1:]]
    # other installed plugins (the example packages, say) may be listed too
    ours = (f"warrenmq {warrenmq.__version__}", "warrenmq-loud-fanout 0.3")
    rows = [row for row in rows if row[3] in ours]
    exchange_types = [name for kind, name, _, _ in rows if kind == "exchange type"]
    assert exchange_types == ["direct", "fanout", "headers", "topic", "x-loud-fanout"]
    assert rows[4] == ["exchange type", "x-loud-fanout", "loud-fanout", "warrenmq-loud-fanout 0.3"]
    kinds = [kind for kind, _, _, _ in rows if kind != "config section"]
    # protocols amqp and mqtt, transports tcp and websocket
    assert kinds[-5:] == ["store", "protocol", "protocol", "transport", "transport"]
    assert ["config section", "management", "management", ours[0]] in rows


def test_plugins_command_honours_block_plugin() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "warrenmq", "plugins", "--block-plugin", "fair"],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert "round-robin" in result.stdout
    assert not re.search(r"\bfair\b", result.stdout)


def test_registries_record_which_plugin_registered_what() -> None:
    broker = warrenmq.Broker(
        warrenmq.Settings(amqp_port=0), plugins=[FirstWordPlugin, FirstAvailablePlugin]
    )
    assert broker.exchange_types["x-first-word"] is FirstWordExchange
    assert broker.exchange_types.sources["x-first-word"] == "FirstWordPlugin"
    assert broker.dispatch_policies.sources["first-available"] == "FirstAvailablePlugin"
    assert broker.exchange_types.sources["topic"] == "topic"
    kinds = {(kind, name, plugin) for kind, name, plugin, _ in broker.plugins.registered()}
    assert ("exchange type", "x-first-word", "FirstWordPlugin") in kinds


# -- third-party plugins end to end -----------------------------------------------------------


def test_third_party_exchange_type_from_pika() -> None:
    with running_broker(plugins=[FirstWordPlugin]) as running:
        connection = pika.BlockingConnection(connection_parameters(running))
        try:
            channel = connection.channel()
            channel.confirm_delivery()
            channel.exchange_declare("words", exchange_type="x-first-word")
            for queue in ("orders-q", "billing-q"):
                channel.queue_declare(queue, exclusive=True)
            channel.queue_bind("orders-q", "words", routing_key="orders")
            channel.queue_bind("billing-q", "words", routing_key="billing")

            for key in ("orders.eu.new", "billing.invoice", "orders"):
                channel.basic_publish("words", key, key.encode(), mandatory=True)
            with pytest.raises(UnroutableError):
                channel.basic_publish("words", "shipping.x", b"lost", mandatory=True)

            orders, billing = Collector(ack=True), Collector(ack=True)
            channel.basic_consume("orders-q", orders)
            channel.basic_consume("billing-q", billing)
            wait_until(connection, lambda: len(orders) == 2 and len(billing) == 1, "deliveries")
            assert orders.bodies == [b"orders.eu.new", b"orders"]
            assert billing.bodies == [b"billing.invoice"]
            assert [d.method.routing_key for d in orders.deliveries] == ["orders.eu.new", "orders"]
        finally:
            connection.close()


def test_third_party_dispatch_policy_selected_with_x_dispatch() -> None:
    with running_broker(plugins=[FirstAvailablePlugin]) as running:
        connection = pika.BlockingConnection(connection_parameters(running))
        try:
            channel = connection.channel()
            channel.confirm_delivery()
            channel.queue_declare(
                "jobs", exclusive=True, arguments={"x-dispatch": "first-available"}
            )
            queue = running.broker.vhosts["/"].queues["jobs"]
            assert queue.policy_class is FirstAvailable

            primary, standby = Collector(ack=True), Collector(ack=True)
            channel.basic_consume("jobs", primary, consumer_tag="primary")
            channel.basic_consume("jobs", standby, consumer_tag="standby")
            for n in range(6):
                channel.basic_publish("", "jobs", b"job-%d" % n)
            wait_until(connection, lambda: len(primary) == 6, "six deliveries to the primary")
            assert len(standby) == 0, "round-robin would have split them"

            channel.basic_cancel("primary")
            channel.basic_publish("", "jobs", b"job-6")
            wait_until(connection, lambda: len(standby) == 1, "the standby takes over")
            assert standby.bodies == [b"job-6"]
        finally:
            connection.close()


def test_unknown_x_dispatch_is_refused() -> None:
    broker = warrenmq.Broker(warrenmq.Settings(amqp_port=0))
    with pytest.raises(warrenmq.PreconditionFailed) as info:
        broker.vhosts["/"].declare_queue("q", arguments={"x-dispatch": "first-available"})
    assert info.value.reply_code == 406
    assert "first-available" in info.value.text
    assert "round-robin" in info.value.text, "the error lists the known policies"


# -- plugin errors ------------------------------------------------------------------------------


class DuplicateTopic(ExchangeType):
    name = "topic"

    @classmethod
    def create_router(cls, exchange: Exchange) -> Router:
        return FirstWordRouter()


class DuplicateTopicPlugin:
    @staticmethod
    @warrenmq.hookimpl
    def warrenmq_register_exchange_types(registry: Any) -> None:
        registry.add(DuplicateTopic)


class UnknownHookPlugin:
    @staticmethod
    @warrenmq.hookimpl
    def warrenmq_register_widgets(registry: Any) -> None:
        raise AssertionError("never called")


class WrongArgumentPlugin:
    @staticmethod
    @warrenmq.hookimpl
    def warrenmq_register_exchange_types(registry: Any, colour: str) -> None:
        raise AssertionError("never called")


class FailingPlugin:
    @staticmethod
    @warrenmq.hookimpl
    def warrenmq_register_stores(registry: Any) -> None:
        raise RuntimeError("disk on fire")


class NamelessPlugin:
    @staticmethod
    @warrenmq.hookimpl
    def warrenmq_register_dispatch_policies(registry: Any) -> None:
        registry.add(object())


def _plugin_error(*plugins: Any, settings: warrenmq.Settings | None = None) -> str:
    with pytest.raises(PluginError) as info:
        warrenmq.Broker(settings or warrenmq.Settings(amqp_port=0), plugins=plugins)
    return str(info.value)


def test_name_taken_twice_names_both_plugins() -> None:
    text = _plugin_error(DuplicateTopicPlugin)
    assert "'DuplicateTopicPlugin'" in text
    assert "'topic'" in text
    assert "already registered by plugin 'topic'" in text


def test_two_third_party_plugins_with_one_name() -> None:
    class AnotherFirstWordPlugin:
        @staticmethod
        @warrenmq.hookimpl
        def warrenmq_register_exchange_types(registry: Any) -> None:
            registry.add(FirstWordExchange)

    text = _plugin_error(FirstWordPlugin, AnotherFirstWordPlugin)
    assert "AnotherFirstWordPlugin" in text
    assert "FirstWordPlugin" in text.replace("AnotherFirstWordPlugin", "")
    assert "x-first-word" in text


def test_unknown_hook_is_rejected() -> None:
    text = _plugin_error(UnknownHookPlugin)
    assert "UnknownHookPlugin" in text
    assert "warrenmq_register_widgets" in text


def test_hook_with_unknown_argument_is_rejected() -> None:
    text = _plugin_error(WrongArgumentPlugin)
    assert "WrongArgumentPlugin" in text


def test_failing_register_hook_names_the_plugin() -> None:
    text = _plugin_error(FailingPlugin)
    assert "FailingPlugin" in text
    assert "disk on fire" in text


def test_registering_without_a_name_is_rejected() -> None:
    text = _plugin_error(NamelessPlugin)
    assert "NamelessPlugin" in text
    assert "without a name" in text


@pytest.mark.parametrize("essential", ["direct", "fanout", "topic", "headers"])
def test_blocking_an_essential_plugin_is_refused(essential: str) -> None:
    text = _plugin_error(settings=warrenmq.Settings(blocked_plugins=frozenset({essential})))
    assert essential in text
    assert "essential" in text


def test_blocking_an_optional_plugin_removes_what_it_registered() -> None:
    broker = warrenmq.Broker(warrenmq.Settings(blocked_plugins=frozenset({"fair"})))
    assert "fair" not in broker.dispatch_policies
    assert "round-robin" in broker.dispatch_policies
    with pytest.raises(warrenmq.PreconditionFailed):
        broker.vhosts["/"].declare_queue("q", arguments={"x-dispatch": "fair"})


def test_blocking_the_default_dispatch_policy_is_a_plugin_error() -> None:
    text = _plugin_error(settings=warrenmq.Settings(blocked_plugins=frozenset({"round-robin"})))
    assert "round-robin" in text


# -- entry points of installed distributions -----------------------------------------------------

SHADOW_TOPIC = """
from warrenmq import hookimpl


@hookimpl
def warrenmq_register_exchange_types(registry):
    raise AssertionError("a plugin whose name is taken must not be loaded")
"""

LOUD_FANOUT = """
from warrenmq import hookimpl
from warrenmq.plugins.fanout import FanoutExchange


class LoudFanout(FanoutExchange):
    name = "x-loud-fanout"


@hookimpl
def warrenmq_register_exchange_types(registry):
    registry.add(LoudFanout)
"""


@pytest.fixture
def shadow_site(tmp_path: Path) -> Path:
    """A package that declares an entry point named like the built-in ``topic``."""
    return install_distribution(
        tmp_path, "shadow-topic", "1.2", {"topic": "shadow_topic"}, {"shadow_topic": SHADOW_TOPIC}
    )


@pytest.mark.parametrize("where", ["before", "after"])
def test_an_entry_point_named_like_a_built_in_is_refused(
    shadow_site: Path, where: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    if where == "before":
        monkeypatch.syspath_prepend(str(shadow_site))
    else:
        monkeypatch.setattr(sys, "path", [*sys.path, str(shadow_site)])
    text = _plugin_error()
    assert "plugin name 'topic' is declared by two packages" in text
    assert f"warrenmq {warrenmq.__version__} (warrenmq.plugins.topic)" in text
    assert "shadow-topic 1.2 (shadow_topic)" in text


def test_run_refuses_an_entry_point_named_like_a_built_in(shadow_site: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "warrenmq", "run", "--port", "0"],
        env={**os.environ, "PYTHONPATH": str(shadow_site)},
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert result.returncode == 2, result.stderr
    assert "plugin name 'topic' is declared by two packages" in result.stderr
    assert "shadow-topic 1.2" in result.stderr
    assert f"warrenmq {warrenmq.__version__}" in result.stderr
    assert "listening" not in result.stderr
    assert "Traceback" not in result.stderr


def test_a_distribution_seen_twice_loads_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An editable install next to a site install of the same package: not a conflict."""
    for copy in ("editable", "site"):
        site = install_distribution(
            tmp_path / copy,
            "warrenmq-loud-fanout",
            "0.3",
            {"loud-fanout": "warrenmq_loud_fanout"},
            {"warrenmq_loud_fanout": LOUD_FANOUT},
        )
        monkeypatch.syspath_prepend(str(site))
    broker = warrenmq.Broker(warrenmq.Settings(amqp_port=0))
    assert broker.exchange_types.sources["x-loud-fanout"] == "loud-fanout"
    rows = [row for row in broker.plugins.registered() if row[1] == "x-loud-fanout"]
    assert rows == [("exchange type", "x-loud-fanout", "loud-fanout", "warrenmq-loud-fanout 0.3")]


# -- a plugin that fails at run time ------------------------------------------------------------


class RecursingRouter(FirstWordRouter):
    """A buggy router: it recurses until Python gives up (a 1000-frame traceback)."""

    def route(self, message: Message) -> Collection[Any]:
        return self.route(message)


class RecursingExchange(ExchangeType):
    name = "x-recursing"

    @classmethod
    def create_router(cls, exchange: Exchange) -> Router:
        return RecursingRouter()


class RecursingPlugin:
    @staticmethod
    @warrenmq.hookimpl
    def warrenmq_register_exchange_types(registry: Any) -> None:
        registry.add(RecursingExchange)


def test_failing_plugin_refuses_the_publish_and_logs_one_traceback(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A publish through the buggy router is refused (a confirm nack) and the publisher goes
    on; the traceback is logged the first time only, cut to its innermost frames, and later
    ones in one line."""
    with (
        running_broker(plugins=[RecursingPlugin]) as running,
        caplog.at_level(logging.ERROR, logger="warrenmq"),
    ):
        connection = pika.BlockingConnection(connection_parameters(running))
        channel = connection.channel()
        channel.confirm_delivery()
        channel.exchange_declare("loops", exchange_type="x-recursing")
        for _ in range(3):
            with pytest.raises(pika.exceptions.NackError):
                channel.basic_publish("loops", "k", b"m")
        channel.queue_declare("", exclusive=True)  # the channel and connection are fine
        assert connection.is_open
        connection.close()
        ours = [r for r in caplog.records if r.name.startswith("warrenmq")]
        reports = [r.getMessage() for r in ours if "routing through exchange" in r.getMessage()]
        assert len(reports) == 3, reports
        first, *later = reports
        assert "RecursionError" in first and "Traceback" in first and "in route" in first
        assert len(first) < 10_000, f"{len(first)} characters of traceback"
        for report in later:
            assert "(traceback not repeated)" in report and "\n" not in report, report
        assert all(r.exc_info is None for r in ours)


class NoArgumentsPlugin:
    """Hook implementations may take fewer arguments than the spec (as pluggy allows)."""

    calls: list[str] = []

    @staticmethod
    @warrenmq.hookimpl
    def warrenmq_register_stores() -> None:
        NoArgumentsPlugin.calls.append("register")

    @staticmethod
    @warrenmq.hookimpl
    def warrenmq_startup() -> None:
        NoArgumentsPlugin.calls.append("startup")


def test_hooks_may_take_fewer_arguments_than_the_spec() -> None:
    with running_broker(plugins=[NoArgumentsPlugin]):
        assert NoArgumentsPlugin.calls == ["register", "startup"]
