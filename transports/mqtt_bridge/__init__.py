"""Bridges to other MQTT brokers (paho-mqtt), configured in ``[plugins.mqtt-bridge]``: topics
forwarded out and in with prefix remapping, reconnection with backoff, store and forward
through a durable queue, and state in ``DATA_DIR/status/mqtt-bridge.json`` for
``warrenmq bridge status``. See docs/mqtt.md."""

from __future__ import annotations

import logging
from typing import Any

import anyio

from warrenmq import Broker, hookimpl
from warrenmq.config import ConfigProblem
from warrenmq.status import write_status

from .bridge import BRIDGE_HEADER, Bridge
from .settings import SECTION, BridgeSettings, bridges, section

log = logging.getLogger("warrenmq.mqtt_bridge")

#: the state file's name under DATA_DIR/status/
STATUS_NAME = "mqtt-bridge"
#: seconds between writes of the state file (only when something changed)
STATUS_INTERVAL = 1.0


@hookimpl
def warrenmq_register_config_sections(registry: Any) -> None:
    registry.add(section())


@hookimpl
def warrenmq_start_services(broker: Broker, services: Any) -> None:
    try:
        found = bridges(broker.plugin_config(SECTION))
    except ConfigProblem as problem:
        key = ".".join(str(part) for part in problem.path)
        raise ValueError(f"{key}: {problem.problem}") from None
    if not found:
        return
    running = [Bridge(broker, settings) for settings in found]
    for bridge in running:
        services.start_soon(bridge.run, name=f"mqtt-bridge {bridge.settings.name}")
    if broker.settings.data_dir is not None:
        services.start_soon(_write_status, broker, running, name="mqtt-bridge status")


async def _write_status(broker: Broker, running: list[Bridge]) -> None:
    """Write the bridges' state whenever it changed, at most once per ``STATUS_INTERVAL``;
    a last time, as stopped, when the broker stops."""
    data_dir = broker.settings.data_dir
    assert data_dir is not None
    written: list[dict[str, Any]] | None = None
    failed = False
    try:
        while True:
            state = [bridge.status() for bridge in running]
            if state != written:
                try:
                    write_status(data_dir, STATUS_NAME, {"running": True, "bridges": state})
                    written, failed = state, False
                except OSError as exc:
                    if not failed:
                        log.error("cannot write the bridges' state file: %s", exc)
                    failed = True
            await anyio.sleep(STATUS_INTERVAL)
    finally:
        state = [{**bridge.status(), "connected": False} for bridge in running]
        try:
            write_status(data_dir, STATUS_NAME, {"running": False, "bridges": state})
        except OSError as exc:
            log.error("cannot write the bridges' state file: %s", exc)


__all__ = ["BRIDGE_HEADER", "Bridge", "BridgeSettings", "bridges"]
