"""The management plugin: a RabbitMQ-compatible HTTP API, Prometheus metrics and the web UI,
on their own listener inside the broker (``warrenmq run --management-port N``, or
``[plugins.management] enabled = true`` in the config file; docs/management.md)."""

from __future__ import annotations

import logging
from typing import Any

from warrenmq import hookimpl
from warrenmq.broker import Broker
from warrenmq.config import ConfigSection, Key
from warrenmq.services import Services

log = logging.getLogger("warrenmq.management")

NAME = "management"
#: RabbitMQ's management port
DEFAULT_PORT = 15672

SECTION = ConfigSection(
    NAME,
    {
        "enabled": Key(bool, False, "serve the management API, metrics and web UI"),
        "port": Key(
            int, DEFAULT_PORT, "port of the management listener, `0` for any free port",
            "an integer from 0 to 65535", lambda value: 0 <= value <= 65535,
        ),
        "host": Key(str, None, "address of the management listener (default: the broker's "
                    "`host`)"),
        "sample_interval": Key(
            float, 5.0, "seconds between samples of the message counters (rates)",
            "a number from 0.1 to 60", lambda value: 0.1 <= value <= 60,
        ),
    },
    doc="The management HTTP API, Prometheus metrics and web UI (docs/management.md).",
)  # fmt: skip


@hookimpl
def warrenmq_register_config_sections(registry: Any) -> None:
    registry.add(SECTION)


@hookimpl
def warrenmq_start_services(broker: Broker, services: Services) -> None:
    settings = broker.plugin_config(NAME)
    if not settings["enabled"]:
        return
    from warrenmq.broker import ListenerInfo
    from warrenmq.protocol import ListenerSpec

    from .api import Api
    from .app import create_app
    from .server import listen, serve_http
    from .stats import Sampler

    uvicorn_log = logging.getLogger("uvicorn.error")
    if uvicorn_log.level == logging.NOTSET:  # our own line says where it listens
        uvicorn_log.setLevel(logging.WARNING)
    sampler = Sampler(broker, interval=settings["sample_interval"])
    state = Api(broker, sampler)
    host = settings["host"] or broker.settings.host
    sock = listen(host, settings["port"])  # OSError (a port in use) stops the start
    address = state.address = sock.getsockname()[:2]
    services.start_soon(serve_http, create_app(state), sock, name="management API")
    services.start_soon(sampler.run, name="management sampler")
    spec = ListenerSpec("http", "management", address[0], address[1])
    broker.listeners.append(ListenerInfo(spec, address[0], address[1]))
    log.info("management API, metrics and web UI on http://%s:%d/", address[0], address[1])
