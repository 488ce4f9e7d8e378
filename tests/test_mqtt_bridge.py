"""The MQTT bridge against a real mosquitto that each test starts on a free port: forwarding
out and in with prefix remapping, store and forward across a remote restart and a broker
restart, loops between brokers bridged both ways, credentials and TLS, bad config, and
``warrenmq bridge status``."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pika
import pytest
from mosquitto_helpers import Mosquitto, wait_for
from mqtt_helpers import Client, MQTTAddress

from warrenmq import Settings
from warrenmq.status import read_status
from warrenmq.testing import RunningBroker, running_broker

pytestmark = pytest.mark.warrenmq_only

TIMEOUT = 15.0


@dataclass
class Target:
    """A warrenmq broker with bridges: its AMQP and MQTT addresses and data directory."""

    running: RunningBroker
    mqtt: MQTTAddress
    data_dir: Path

    @property
    def amqp(self) -> pika.URLParameters:
        return pika.URLParameters(self.running.url)

    def bridges(self) -> dict[str, dict[str, Any]]:
        """Each bridge's state, from the file `warrenmq bridge status` reads."""
        state = read_status(self.data_dir, "mqtt-bridge") or {"bridges": []}
        return {bridge["name"]: bridge for bridge in state["bridges"]}

    def wait(self, name: str, what: str, **wanted: Any) -> dict[str, Any]:
        """Wait until bridge ``name``'s state has the ``wanted`` values."""
        found: dict[str, Any] = {}

        def matches() -> bool:
            nonlocal found
            found = self.bridges().get(name, {})
            return all(found.get(key) == value for key, value in wanted.items())

        wait_for(matches, f"bridge '{name}' {what} (last state: {found})", TIMEOUT)
        return found


def bridge(name: str, remote: Mosquitto | MQTTAddress, *topics: dict[str, Any], **options: Any):
    port = remote.port
    return {
        "name": name,
        "host": "127.0.0.1",
        "port": port,
        "client_id": f"bridge-{name}",
        "reconnect_delay": 0.05,
        "reconnect_delay_max": 0.5,
        "topic": list(topics),
        **options,
    }


@contextmanager
def warrenmq(data_dir: Path, *bridges: dict[str, Any], store: str = "memory") -> Iterator[Target]:
    settings = Settings(
        host="127.0.0.1",
        amqp_port=0,
        mqtt_port=0,
        store=store,
        data_dir=data_dir,
        plugin_config={"mqtt-bridge": {"bridge": list(bridges)}},
    )
    with running_broker(settings) as running:
        info = next(i for i in running.broker.listeners if i.spec.protocol == "mqtt")
        yield Target(running, MQTTAddress(info.host, info.port), data_dir)


@pytest.fixture
def mosquitto(tmp_path: Path) -> Iterator[Mosquitto]:
    server = Mosquitto(tmp_path / "mosquitto")
    server.start()
    yield server
    server.stop()


@pytest.fixture
def clients() -> Iterator[list[Client]]:
    made: list[Client] = []
    yield made
    for client in made:
        client.paho.disconnect()
        client.paho.loop_stop()


def connected(clients: list[Client], address: MQTTAddress, client_id: str, **options: Any):
    client = Client(address, client_id, **options)
    assert client.connect()[0] == 0
    clients.append(client)
    return client


def received(client: Client, count: int) -> list[tuple[str, bytes]]:
    return [(m.topic, m.payload) for m in (client.next(TIMEOUT) for _ in range(count))]


def test_forward_out_from_mqtt_and_amqp(
    tmp_path: Path, mosquitto: Mosquitto, clients: list[Client]
) -> None:
    remote = connected(clients, mosquitto.address, "remote-sub")
    assert remote.subscribe(("out/#", 1)) == [1]
    rule = {"pattern": "out/#", "direction": "out", "qos": 1}
    with warrenmq(tmp_path / "data", bridge("up", mosquitto, rule)) as target:
        target.wait("up", "to connect", connected=True)
        local = connected(clients, target.mqtt, "local-pub")
        local.publish("out/mqtt", b"from mqtt", qos=1)
        with pika.BlockingConnection(target.amqp) as connection:
            connection.channel().basic_publish("amq.topic", "out.amqp", b"from amqp")
        assert received(remote, 2) == [("out/mqtt", b"from mqtt"), ("out/amqp", b"from amqp")]
        state = target.wait("up", "to count them", forwarded_out=2, queued=0, inflight=0)
        assert state["last_error"] is None


def test_forward_in_to_mqtt_and_amqp(
    tmp_path: Path, mosquitto: Mosquitto, clients: list[Client]
) -> None:
    rule = {"pattern": "in/#", "direction": "in", "qos": 1}
    with warrenmq(tmp_path / "data", bridge("down", mosquitto, rule)) as target:
        local = connected(clients, target.mqtt, "local-sub")
        assert local.subscribe(("in/#", 1)) == [1]
        with pika.BlockingConnection(target.amqp) as connection:
            channel = connection.channel()
            queue = channel.queue_declare("", exclusive=True).method.queue
            channel.queue_bind(queue, "amq.topic", "in.#")
            target.wait("down", "to subscribe at the remote", connected=True, subscribed=True)
            remote = connected(clients, mosquitto.address, "remote-pub")
            remote.publish("in/one", b"first", qos=1)
            remote.publish("in/two/deep", b"second", qos=0)
            assert received(local, 2) == [("in/one", b"first"), ("in/two/deep", b"second")]
            bodies = []
            for _ in range(2):
                method, properties, body = next(channel.consume(queue, inactivity_timeout=TIMEOUT))
                assert method is not None, "no message reached the AMQP queue"
                assert properties.headers["x-mqtt-bridge"] == "down"
                bodies.append((method.routing_key, body))
            assert bodies == [("in.one", b"first"), ("in.two.deep", b"second")]
        target.wait("down", "to count them", forwarded_in=2)


def test_prefixes_are_remapped_both_ways(
    tmp_path: Path, mosquitto: Mosquitto, clients: list[Client]
) -> None:
    out_rule = {
        "pattern": "sensors/#",
        "direction": "out",
        "qos": 1,
        "local_prefix": "site/",
        "remote_prefix": "factory/site1/",
    }
    in_rule = {
        "pattern": "cmd/+",
        "direction": "in",
        "qos": 1,
        "local_prefix": "site/",
        "remote_prefix": "factory/site1/",
    }
    remote = connected(clients, mosquitto.address, "remote")
    assert remote.subscribe(("#", 1)) == [1]
    with warrenmq(tmp_path / "data", bridge("map", mosquitto, out_rule, in_rule)) as target:
        local = connected(clients, target.mqtt, "local")
        assert local.subscribe(("site/cmd/#", 1)) == [1]
        target.wait("map", "to subscribe at the remote", connected=True, subscribed=True)
        local.publish("elsewhere/sensors/t1", b"not bridged", qos=1)
        local.publish("site/sensors/t1", b"21.5", qos=1)
        assert received(remote, 1) == [("factory/site1/sensors/t1", b"21.5")]
        remote.publish("factory/other/cmd/stop", b"not bridged", qos=1)
        remote.publish("factory/site1/cmd/stop", b"now", qos=1)
        assert received(local, 1) == [("site/cmd/stop", b"now")]
