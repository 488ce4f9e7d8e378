"""A mosquitto bridge into warrenmq with mosquitto's defaults (``try_private true``: the
protocol level 0x84): warrenmq takes it as a bridge, as mosquitto would, so that messages go
both ways exactly once and retained messages stay retained on both sides."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from mosquitto_helpers import Mosquitto, drain, exchange_both_ways, wait_for
from mqtt_helpers import Client, MQTTAddress

from warrenmq import Settings
from warrenmq.testing import RunningBroker, running_broker
from warrenmq.transports.mqtt.state import mqtt_state

pytestmark = pytest.mark.warrenmq_only

TIMEOUT = 15.0
BRIDGE_ID = "mosquitto-bridge"


@contextmanager
def warrenmq_and_mosquitto(
    tmp_path: Path,
) -> Iterator[tuple[RunningBroker, MQTTAddress, Mosquitto]]:
    """warrenmq, and a mosquitto whose `connection` bridges `loop/#` both ways into it with
    every other bridge setting left at mosquitto's default (try_private, notifications...)."""
    settings = Settings(host="127.0.0.1", amqp_port=0, mqtt_port=0)
    with running_broker(settings) as running:
        info = next(i for i in running.broker.listeners if i.spec.protocol == "mqtt")
        address = MQTTAddress(info.host, info.port)
        bridge = [
            "connection warrenmq",
            f"address 127.0.0.1:{info.port}",
            f"remote_clientid {BRIDGE_ID}",
            "restart_timeout 1",  # quick to reconnect should warrenmq come up late
            "topic loop/# both 1",
        ]
        server = Mosquitto(tmp_path / "mosquitto", extra=bridge)
        server.start()
        try:
            wait_for(lambda: bridge_subscribed(running), "mosquitto's bridge to subscribe", TIMEOUT)
            yield running, address, server
        finally:
            server.stop()


def bridge_subscribed(running: RunningBroker) -> bool:
    """mosquitto's bridge is connected to warrenmq, as a bridge, with its subscription."""

    def check() -> bool:
        connection = mqtt_state(running.broker.vhosts["/"]).connections.get(BRIDGE_ID)
        return connection is not None and connection.bridge and bool(connection.consumers)

    return running.call(check)


def connected(clients: list[Client], address: MQTTAddress, client_id: str) -> Client:
    client = Client(address, client_id)
    assert client.connect()[0] == 0
    clients.append(client)
    return client


def both_sides(
    clients: list[Client], local: MQTTAddress, remote: MQTTAddress
) -> tuple[Client, Client, Client, Client]:
    """A subscriber to ``loop/#`` on each side of the bridge, then a publisher on each:
    (local subscriber, remote subscriber, local publisher, remote publisher)."""
    subscribers = connected(clients, local, "local-sub"), connected(clients, remote, "remote-sub")
    for client in subscribers:
        assert client.subscribe(("loop/#", 1)) == [1]
    publishers = connected(clients, local, "local-pub"), connected(clients, remote, "remote-pub")
    return (*subscribers, *publishers)


def test_messages_cross_both_ways_exactly_once(tmp_path: Path, clients: list[Client]) -> None:
    with warrenmq_and_mosquitto(tmp_path) as (_, address, server):
        local, remote, local_pub, remote_pub = both_sides(clients, address, server.address)
        exchange_both_ways(local, remote, local_pub, remote_pub)
        # mosquitto's notifications (on by default) keep the bridge's state retained here
        state = connected(clients, address, "state")
        assert state.subscribe((f"$SYS/broker/connection/{BRIDGE_ID}/state", 1)) == [1]
        notified = state.next(TIMEOUT)
        assert (notified.payload, notified.retain) == (b"1", True)


def test_retained_messages_arrive_retained_on_both_sides(
    tmp_path: Path, clients: list[Client]
) -> None:
    with warrenmq_and_mosquitto(tmp_path) as (_, address, server):
        local, remote, local_pub, remote_pub = both_sides(clients, address, server.address)
        local_pub.publish("loop/kept/local", b"from warrenmq", qos=1, retain=True)
        remote_pub.publish("loop/kept/remote", b"from mosquitto", qos=1, retain=True)
        # subscribers already there get both, live (no retain flag), once each
        for side in (local, remote):
            got = sorted((m.topic, m.payload, m.retain) for m in (side.next(), side.next()))
            assert got == [
                ("loop/kept/local", b"from warrenmq", False),
                ("loop/kept/remote", b"from mosquitto", False),
            ]
        # later subscribers on either broker get both as retained messages
        for broker, name in ((address, "local-later"), (server.address, "remote-later")):
            later = connected(clients, broker, name)
            assert later.subscribe(("loop/kept/#", 1)) == [1]
            got = sorted((m.topic, m.payload, m.retain) for m in (later.next(), later.next()))
            assert got == [
                ("loop/kept/local", b"from warrenmq", True),
                ("loop/kept/remote", b"from mosquitto", True),
            ], f"on {name}'s broker"
        # an end marker from each side comes after any copy that went back or round
        local_pub.publish("loop/end/local", b"end", qos=1)
        remote_pub.publish("loop/end/remote", b"end", qos=1)
        markers = {("loop/end/local", b"end"), ("loop/end/remote", b"end")}
        for side in (local, remote):
            found: list[tuple[str, bytes]] = []

            def ended(side: Client = side, found: list[tuple[str, bytes]] = found) -> bool:
                found.extend(drain(side))
                return markers <= set(found)

            wait_for(ended, "the end markers", TIMEOUT)
            assert sorted(found) == sorted(markers), "a message came back or went round"
