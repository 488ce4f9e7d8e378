"""Every hook a warrenmq plugin can implement.

A plugin is a module (or object) with functions decorated ``@warrenmq.hookimpl`` named after
these specs, listed under the ``warrenmq`` entry-point group of its distribution (a function
named after a spec counts without the decorator too, as compiled modules need). The
``register`` hooks run once at startup; none runs per message.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pluggy

if TYPE_CHECKING:
    from .broker import Broker
    from .registry import Registry
    from .services import Services

hookspec = pluggy.HookspecMarker("warrenmq")


@hookspec
def warrenmq_register_exchange_types(registry: Registry[Any]) -> None:
    """Add exchange types: ``registry.add(MyExchangeType)``.

    Each is a subclass of :class:`warrenmq.ExchangeType`, registered under its ``name``
    (the type clients pass to exchange.declare). Called once at startup.
    """


@hookspec
def warrenmq_register_dispatch_policies(registry: Registry[Any]) -> None:
    """Add dispatch policies: ``registry.add(MyPolicy)``.

    Each is a subclass of :class:`warrenmq.DispatchPolicy`; queues choose one with the
    ``x-dispatch`` argument, else the broker default. Called once at startup.
    """


@hookspec
def warrenmq_register_queue_types(registry: Registry[Any]) -> None:
    """Add queue types: ``registry.add(MyQueue, "my-type")``.

    Each is a subclass of :class:`warrenmq.Queue` that owns its messages; queues choose one
    with the ``x-queue-type`` argument (``classic`` when absent). Called once at startup.
    """


@hookspec
def warrenmq_register_stores(registry: Registry[Any]) -> None:
    """Add message/definition stores: ``registry.add(MyStore)`` (subclass of ``Store``)."""


@hookspec
def warrenmq_register_protocols(registry: Registry[Any]) -> None:
    """Add protocol engines: ``registry.add(MyProtocol)`` (subclass of ``Protocol``).

    A protocol makes sans-IO connections: bytes in, broker calls, bytes out.
    """


@hookspec
def warrenmq_register_transports(registry: Registry[Any]) -> None:
    """Add transports: ``registry.add(MyTransport)`` (subclass of ``Transport``).

    A transport accepts connections (TCP, WebSocket, ...) and feeds a protocol's engine.
    """


@hookspec
def warrenmq_register_auth_backends(registry: Registry[Any]) -> None:
    """Add authentication backends: ``registry.add(MyBackend)`` (subclass of ``AuthBackend``).

    A login is checked against the broker's own user table first, then against each backend
    in registration order; the first that returns a user admits the client.
    """


@hookspec
def warrenmq_register_config_sections(registry: Registry[Any]) -> None:
    """Add config file sections: ``registry.add(ConfigSection("my-plugin", {...}))``.

    A :class:`warrenmq.config.ConfigSection` names the plugin's ``[plugins.NAME]`` table and
    its keys (:class:`warrenmq.config.Key`: type, default, meaning, allowed values). The broker
    checks the section when it reads the config file, so a misspelt or mistyped key stops
    start-up with the file, line and key; the plugin reads its values, defaults filled in,
    with ``broker.plugin_config("my-plugin")``. Called once at startup.
    """


@hookspec
def warrenmq_startup(broker: Broker) -> Any:
    """The broker has loaded its plugins and is about to listen. May return an awaitable."""


@hookspec
def warrenmq_start_services(broker: Broker, services: Services) -> None:
    """Start long-running work (a bridge, an HTTP API) once the listeners are up:
    ``services.start_soon(async_function, *args)``.

    The tasks run in the broker's task group and are cancelled at shutdown, before
    ``warrenmq_shutdown``; one that raises is logged with its plugin's name and the broker
    carries on without it. Called once per ``Broker.serve()``. The hook raising ``OSError``
    (a port in use) stops start-up, as a listener's does.
    """


@hookspec
def warrenmq_shutdown(broker: Broker) -> Any:
    """The broker has closed its listeners and connections. May return an awaitable."""
