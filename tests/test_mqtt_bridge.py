"""The MQTT bridge against a real mosquitto that each test starts on a free port: forwarding
out and in with prefix remapping, store and forward across a remote restart and a broker
restart, loops between brokers bridged both ways, credentials and TLS, bad config, and
``warrenmq bridge status``."""

from __future__ import annotations

import json
import queue
import signal
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pika
import pytest
from mosquitto_helpers import Mosquitto, drain, exchange_both_ways, wait_for
from mqtt_helpers import Client, MQTTAddress
from tls_helpers import make_certificates

from warrenmq import Settings
from warrenmq.cli import main
from warrenmq.config import load
from warrenmq.errors import ConfigError
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
def warrenmq(
    data_dir: Path, *bridges: dict[str, Any], store: str = "memory", **options: Any
) -> Iterator[Target]:
    settings = Settings(
        host="127.0.0.1",
        amqp_port=0,
        mqtt_port=0,
        store=store,
        data_dir=data_dir,
        plugin_config={"mqtt-bridge": {"bridge": list(bridges)}},
        **options,
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


def test_retained_messages_are_forwarded_retained_both_ways(
    tmp_path: Path, mosquitto: Mosquitto, clients: list[Client]
) -> None:
    out_rule = {"pattern": "kept/out/#", "direction": "out", "qos": 1}
    in_rule = {"pattern": "kept/in/#", "direction": "in", "qos": 1}
    remote = connected(clients, mosquitto.address, "remote-sub")
    assert remote.subscribe(("kept/#", 1)) == [1]
    with warrenmq(tmp_path / "data", bridge("kept", mosquitto, out_rule, in_rule)) as target:
        local = connected(clients, target.mqtt, "local-sub")
        assert local.subscribe(("kept/#", 1)) == [1]
        target.wait("kept", "to subscribe at the remote", connected=True, subscribed=True)
        connected(clients, target.mqtt, "local-pub").publish(
            "kept/out/a", b"from warrenmq", qos=1, retain=True
        )
        connected(clients, mosquitto.address, "remote-pub").publish(
            "kept/in/b", b"from mosquitto", qos=1, retain=True
        )
        # once each side has both (live), later subscribers on either get both retained
        for side in (local, remote):
            assert sorted(received(side, 2)) == [
                ("kept/in/b", b"from mosquitto"),
                ("kept/out/a", b"from warrenmq"),
            ]
        for address, name in ((target.mqtt, "local-later"), (mosquitto.address, "remote-later")):
            later = connected(clients, address, name)
            assert later.subscribe(("kept/#", 1)) == [1]
            got = sorted((m.topic, m.payload, m.retain) for m in (later.next(), later.next()))
            assert got == [
                ("kept/in/b", b"from mosquitto", True),
                ("kept/out/a", b"from warrenmq", True),
            ], f"on {name}'s broker"


# -- store and forward -------------------------------------------------------------------------


def _ids(messages: list[tuple[str, bytes]]) -> list[int]:
    return [int(payload) for _, payload in messages]


def publish_persistent(target: Target, routing_key: str, numbers: range) -> None:
    """Publish ``numbers`` as persistent messages to amq.topic, each confirmed."""
    with pika.BlockingConnection(target.amqp) as connection:
        channel = connection.channel()
        channel.confirm_delivery()
        for number in numbers:
            channel.basic_publish(
                "amq.topic",
                routing_key,
                str(number).encode(),
                pika.BasicProperties(delivery_mode=2),
            )


def test_qos1_messages_wait_while_the_remote_restarts_mid_stream_and_none_is_lost(
    tmp_path: Path, clients: list[Client]
) -> None:
    server = Mosquitto(tmp_path / "mosquitto")  # with persistence: the checker's session stays
    server.start()
    total = 3000
    rule = {"pattern": "sf/#", "direction": "out", "qos": 1}
    try:
        checker = connected(clients, server.address, "checker", clean=False)
        assert checker.subscribe(("sf/#", 1)) == [1]
        with warrenmq(tmp_path / "data", bridge("sf", server, rule)) as target:
            target.wait("sf", "to connect", connected=True)
            publisher = threading.Thread(
                target=publish_persistent, args=(target, "sf.n", range(total))
            )
            publisher.start()
            got: list[tuple[str, bytes]] = []

            def some_arrived() -> bool:
                got.extend(drain(checker))
                return len(got) >= 200

            wait_for(some_arrived, "the first messages at the remote", TIMEOUT)
            server.stop()  # while the stream goes on
            checker.paho.disconnect()  # no reconnection of its own: it comes back below
            checker.paho.loop_stop()
            down = target.wait("sf", "to see the remote gone", connected=False)
            assert "connection lost" in down["last_error"] or "cannot connect" in down["last_error"]
            publisher.join(TIMEOUT * 4)
            assert not publisher.is_alive()
            waiting = target.wait("sf", "to count what waits", connected=False)
            assert waiting["queued"] > 0  # waiting in the bridge's queue for the remote
            got.extend(drain(checker))
            server.start()
            again = connected(clients, server.address, "checker", clean=False)

            def all_arrived() -> bool:
                got.extend(drain(again))
                return set(_ids(got)) == set(range(total))

            try:
                wait_for(all_arrived, f"all {total} messages at the remote", TIMEOUT * 2)
            except BaseException:
                missing = sorted(set(range(total)) - set(_ids(got)))
                print("MISSING", len(missing), missing[:20], missing[-5:], "GOT", len(got))
                print("STATE", target.bridges())
                print((tmp_path / "mosquitto" / "mosquitto.log").read_text()[-3000:])
                raise
            state = target.wait("sf", "to drain its queue", connected=True, queued=0, inflight=0)
            assert state["reconnects"] >= 1
            assert all(topic == "sf/n" for topic, _ in got)
            # duplicates are what QoS 1 allows: at most what was in flight when it went down
            assert len(got) - total <= 100
    finally:
        server.stop()


def test_messages_queued_for_a_down_remote_survive_a_broker_restart(
    tmp_path: Path, clients: list[Client]
) -> None:
    server = Mosquitto(tmp_path / "mosquitto", persistence=False)  # not started yet
    rule = {"pattern": "keep/#", "direction": "out", "qos": 1}
    config = bridge("keep", server, rule)
    data_dir = tmp_path / "data"
    total = 300
    with warrenmq(data_dir, config, store="disk") as target:
        down = target.wait("keep", "to fail to connect", connected=False)
        wait_for(
            lambda: (target.bridges()["keep"]["last_error"] or "").startswith("cannot connect"),
            "the connection error in the state",
        )
        publish_persistent(target, "keep.it", range(total))
        target.wait("keep", "to hold the messages", queued=total)
    assert down["connected"] is False
    server.start()
    try:
        checker = connected(clients, server.address, "checker")
        assert checker.subscribe(("keep/#", 1)) == [1]
        with warrenmq(data_dir, config, store="disk") as target:
            got: list[tuple[str, bytes]] = []

            def all_arrived() -> bool:
                got.extend(drain(checker))
                return set(_ids(got)) == set(range(total))

            wait_for(all_arrived, f"all {total} kept messages at the remote", TIMEOUT * 2)
            target.wait("keep", "to drain its queue", connected=True, queued=0)
            assert len(got) == total  # nothing was in flight when the broker stopped
    finally:
        server.stop()


# -- loops -----------------------------------------------------------------------------------


def test_a_bridge_both_ways_to_mosquitto_makes_no_loop(
    tmp_path: Path, mosquitto: Mosquitto, clients: list[Client]
) -> None:
    rule = {"pattern": "loop/#", "direction": "both", "qos": 1}
    with warrenmq(tmp_path / "data", bridge("both", mosquitto, rule)) as target:
        target.wait("both", "to subscribe at the remote", connected=True, subscribed=True)
        local = connected(clients, target.mqtt, "local-sub")
        remote = connected(clients, mosquitto.address, "remote-sub")
        for client in (local, remote):
            assert client.subscribe(("loop/#", 1)) == [1]
        local_pub = connected(clients, target.mqtt, "local-pub")
        remote_pub = connected(clients, mosquitto.address, "remote-pub")
        exchange_both_ways(local, remote, local_pub, remote_pub)
        state = target.wait("both", "to count", forwarded_out=2, forwarded_in=2)
        assert state["last_error"] is None


@pytest.mark.parametrize("try_private", [True, False])
def test_two_warrenmq_brokers_bridged_both_ways_make_no_loop(
    tmp_path: Path, clients: list[Client], try_private: bool
) -> None:
    rule = {"pattern": "loop/#", "direction": "both", "qos": 1}
    with warrenmq(tmp_path / "b") as remote_broker:
        # with try_private the remote sends the bridge none of its own messages back (as
        # mosquitto); without, the bridge drops the echo itself
        link = bridge("b", remote_broker.mqtt, rule, try_private=try_private)
        with warrenmq(tmp_path / "a", link) as target:
            target.wait("b", "to subscribe at the remote", connected=True, subscribed=True)
            local = connected(clients, target.mqtt, "local-sub")
            remote = connected(clients, remote_broker.mqtt, "remote-sub")
            for client in (local, remote):
                assert client.subscribe(("loop/#", 1)) == [1]
            local_pub = connected(clients, target.mqtt, "local-pub")
            remote_pub = connected(clients, remote_broker.mqtt, "remote-pub")
            exchange_both_ways(local, remote, local_pub, remote_pub)
            target.wait("b", "to count", forwarded_out=2, forwarded_in=2)


# -- credentials and TLS ---------------------------------------------------------------------


def test_credentials_and_tls_with_a_client_certificate(
    tmp_path: Path, clients: list[Client]
) -> None:
    certificates = make_certificates(tmp_path)
    server = Mosquitto(
        tmp_path / "mosquitto",
        users={"bridge": "s3cret", "checker": "pw"},
        certificates=certificates,
    )
    server.start()
    rule = {"pattern": "secure/#", "direction": "out", "qos": 1}
    tls = {
        "cafile": str(certificates.ca),
        "certfile": str(certificates.client_cert),
        "keyfile": str(certificates.client_key),
    }
    good = bridge("good", server, rule, username="bridge", password="s3cret", tls=tls)
    good["port"] = server.tls_port
    wrong = bridge("wrong", server, rule, username="bridge", password="nope", tls=tls)
    wrong["port"] = server.tls_port
    plain = bridge("plain", server, rule, username="bridge", password="s3cret")
    plain["port"] = server.tls_port  # no TLS to a TLS port
    try:
        checker = connected(clients, server.address, "checker", username="checker", password="pw")
        assert checker.subscribe(("secure/#", 1)) == [1]
        with warrenmq(tmp_path / "data", good, wrong, plain) as target:
            target.wait("good", "to connect over TLS", connected=True)
            local = connected(clients, target.mqtt, "local")
            local.publish("secure/x", b"over tls", qos=1)
            # the three bridges share the local topic: the good one delivers it
            assert received(checker, 1) == [("secure/x", b"over tls")]
            target.wait("wrong", "to hold the message", connected=False, queued=1)
            wait_for(
                lambda: "not authori" in (target.bridges()["wrong"]["last_error"] or "").lower(),
                "the refusal in the wrong bridge's state",
            )
            wait_for(
                lambda: target.bridges()["plain"]["last_error"] is not None,
                "the plain bridge's error",
            )
            assert target.bridges()["plain"]["connected"] is False
    finally:
        server.stop()


# -- config ----------------------------------------------------------------------------------

GOOD_CONFIG = """\
[broker]
store = "memory"

[[plugins.mqtt-bridge.bridge]]
name = "cloud"
host = "mqtt.example.com"
username = "site1"
password = "secret"

[[plugins.mqtt-bridge.bridge.topic]]
pattern = "sensors/#"
direction = "out"
qos = 1
local_prefix = "site1/"
remote_prefix = "factory/site1/"

[[plugins.mqtt-bridge.bridge.topic]]
pattern = "commands/#"
direction = "in"
qos = 1
"""


def test_a_good_config_is_read_with_its_defaults(tmp_path: Path) -> None:
    path = tmp_path / "warrenmq.toml"
    path.write_text(GOOD_CONFIG)
    from warrenmq.transports.mqtt_bridge import bridges

    (cloud,) = bridges(load(path).settings.plugin_config["mqtt-bridge"])
    assert (cloud.host, cloud.port, cloud.clean_session, cloud.try_private) == (
        "mqtt.example.com", 1883, False, True,
    )  # fmt: skip
    assert cloud.out_rules[0].to_remote("site1/sensors/t") == "factory/site1/sensors/t"
    assert cloud.out_rules[0].to_remote("site2/sensors/t") is None
    assert cloud.in_rules[0].to_local("commands/stop") == "commands/stop"


@pytest.mark.parametrize(
    ("change", "line", "message"),
    [
        (("qos = 1\nlocal_prefix", "qos = 3\nlocal_prefix"), 13,
         "plugins.mqtt-bridge.bridge[0].topic[0].qos: expected 0, 1 or 2, got 3"),
        (('host = "mqtt', 'hots = "mqtt'), 6,
         "plugins.mqtt-bridge.bridge[0].hots: unknown key in [[plugins.mqtt-bridge.bridge]]"),
        (('direction = "in"', 'direction = "up"'), 19,
         'plugins.mqtt-bridge.bridge[0].topic[1].direction: expected one of: out, in, both, '
         'got "up"'),
        (('username = "site1"\n', ""), 7,
         "plugins.mqtt-bridge.bridge[0].password: a password needs a username"),
        (('pattern = "sensors/#"', 'pattern = "sensors/#/x"'), 11,
         "plugins.mqtt-bridge.bridge[0].topic[0].pattern: the local filter is not valid"),
        (('name = "cloud"', 'name = "my cloud"'), 5,
         "plugins.mqtt-bridge.bridge[0].name: expected letters, digits"),
        (('password = "secret"', 'password = "secret"\n[plugins.mqtt-bridge.bridge.tls]\n'
          'cafile = "missing-ca.pem"'), 10,
         "plugins.mqtt-bridge.bridge[0].tls.cafile: no such file:"),
    ],
)  # fmt: skip
def test_a_bad_bridge_config_names_the_file_line_and_key(
    tmp_path: Path, change: tuple[str, str], line: int, message: str
) -> None:
    path = tmp_path / "warrenmq.toml"
    assert change[0] in GOOD_CONFIG
    path.write_text(GOOD_CONFIG.replace(change[0], change[1], 1))
    with pytest.raises(ConfigError) as info:
        load(path)
    assert str(info.value).startswith(f"{path}, line {line}: "), str(info.value)
    assert message in str(info.value)


def test_config_check_refuses_a_second_bridge_of_the_same_name(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "warrenmq.toml"
    second = GOOD_CONFIG.split("\n\n", 1)[1].replace('host = "mqtt.example.com"', 'host = "b"')
    path.write_text(GOOD_CONFIG + "\n" + second)
    assert main(["config", "check", str(path)]) == 2
    error = capsys.readouterr().err
    assert "line 23: plugins.mqtt-bridge.bridge[1].name: a second bridge named 'cloud'" in error


# -- warrenmq bridge status ------------------------------------------------------------------


def test_status_command_shows_each_bridge(
    tmp_path: Path, mosquitto: Mosquitto, capsys: pytest.CaptureFixture[str]
) -> None:
    data_dir = tmp_path / "data"
    rule = {"pattern": "st/#", "direction": "out", "qos": 1}
    nowhere = bridge("nowhere", Mosquitto(tmp_path / "stopped"), rule)  # never started
    with warrenmq(data_dir, bridge("up", mosquitto, rule), nowhere) as target:
        target.wait("up", "to connect", connected=True)
        with pika.BlockingConnection(target.amqp) as connection:
            channel = connection.channel()
            channel.confirm_delivery()
            for number in range(5):
                channel.basic_publish("amq.topic", "st.x", str(number).encode())
        target.wait("nowhere", "to hold the messages", queued=5)
        target.wait("up", "to forward them", forwarded_out=5)
        assert main(["bridge", "status", "--data-dir", str(data_dir), "--format", "json"]) == 0
        shown = json.loads(capsys.readouterr().out)
        assert shown["running"] is True
        states = {b["name"]: b for b in shown["bridges"]}
        assert states["up"]["connected"] is True and states["up"]["queued"] == 0
        assert states["nowhere"]["connected"] is False and states["nowhere"]["queued"] == 5
        assert "cannot connect" in states["nowhere"]["last_error"]
        assert main(["bridge", "status", "--data-dir", str(data_dir)]) == 0
        lines = capsys.readouterr().out.splitlines()
        assert lines[0].split()[:4] == ["NAME", "REMOTE", "CONNECTED", "QUEUED"]
        up = next(line for line in lines if line.startswith("up "))
        assert up.split()[2:4] == ["yes", "since"]
        nowhere_line = next(line for line in lines if line.startswith("nowhere "))
        assert nowhere_line.split()[2:4] == ["no", "5"]
    # the broker is gone: the last state is shown, and the exit status says so
    assert main(["bridge", "status", "--data-dir", str(data_dir)]) == 1
    captured = capsys.readouterr()
    assert "the broker is not running" in captured.err
    assert next(line for line in captured.out.splitlines() if line.startswith("nowhere "))
    assert main(["bridge", "status", "--data-dir", str(tmp_path / "elsewhere")]) == 1
    assert "no bridge state" in capsys.readouterr().err


@contextmanager
def bridge_refusing_remote() -> Iterator[tuple[MQTTAddress, list[int]]]:
    """A stand-in for RabbitMQ 3.10's MQTT plugin, which closes the connection on a CONNECT
    with the bridge bit in its protocol level (not in CI, hence the stand-in): it records the
    level of each CONNECT and closes."""
    server = socket.create_server(("127.0.0.1", 0))
    server.settimeout(0.05)
    levels: list[int] = []
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            try:
                connection, _ = server.accept()
            except TimeoutError:
                continue
            with connection:
                connection.settimeout(TIMEOUT)
                try:
                    packet = connection.recv(65536)  # CONNECT: 0x10, length, "MQTT", level
                except OSError:
                    continue
                if len(packet) > 8 and packet[0] == 0x10:
                    levels.append(packet[8])

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield MQTTAddress("127.0.0.1", server.getsockname()[1]), levels
    finally:
        stop.set()
        thread.join()
        server.close()


def test_a_remote_that_refuses_bridges_is_named_in_the_state(tmp_path: Path) -> None:
    rule = {"pattern": "x/#", "direction": "out", "qos": 1}
    with bridge_refusing_remote() as (address, levels):
        link = bridge("b", address, rule)  # try_private by default
        with warrenmq(tmp_path / "a", link) as target:

            def hinted() -> bool:
                error = target.bridges().get("b", {}).get("last_error") or ""
                return "try_private = false" in error

            wait_for(hinted, "the hint in the bridge's state")
            assert target.bridges()["b"]["connected"] is False
        assert levels and set(levels) == {0x84}


def test_a_deleted_bridge_queue_is_declared_again(
    tmp_path: Path, mosquitto: Mosquitto, clients: list[Client]
) -> None:
    remote = connected(clients, mosquitto.address, "remote-sub")
    assert remote.subscribe(("del/#", 1)) == [1]
    rule = {"pattern": "del/#", "direction": "out", "qos": 1}
    with warrenmq(tmp_path / "data", bridge("del", mosquitto, rule)) as target:
        target.wait("del", "to connect", connected=True)
        with pika.BlockingConnection(target.amqp) as connection:
            channel = connection.channel()
            channel.queue_delete("mqtt-bridge.del")

            def declared_again() -> bool:
                queues = target.running.call(lambda: list(target.running.broker.vhosts["/"].queues))
                return "mqtt-bridge.del" in queues

            wait_for(declared_again, "the bridge queue to come back")
            channel.basic_publish("amq.topic", "del.after", b"still bridged")
        assert received(remote, 1) == [("del/after", b"still bridged")]


def test_warrenmq_run_with_a_bridge_in_its_config_file(
    tmp_path: Path, mosquitto: Mosquitto, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "warrenmq.toml"
    path.write_text(
        f"""\
[broker]
data_dir = "data"

[[listeners]]
port = 0

[[plugins.mqtt-bridge.bridge]]
name = "edge"
host = "127.0.0.1"
port = {mosquitto.port}
reconnect_delay = 0.1

[[plugins.mqtt-bridge.bridge.topic]]
pattern = "edge/#"
direction = "both"
qos = 1
"""
    )
    log = (tmp_path / "broker.log").open("wb")
    broker = subprocess.Popen(
        [sys.executable, "-m", "warrenmq", "run", "--config", str(path)],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    status = ["bridge", "status", "--data-dir", str(tmp_path / "data"), "--format", "json"]
    try:

        def connected() -> bool:
            assert broker.poll() is None, (tmp_path / "broker.log").read_text()
            if main(status) != 0:
                capsys.readouterr()
                return False
            shown = json.loads(capsys.readouterr().out)
            return bool(shown["bridges"][0]["connected"])

        wait_for(connected, "the bridge of `warrenmq run` to connect", TIMEOUT)
    finally:
        broker.send_signal(signal.SIGTERM)
        assert broker.wait(TIMEOUT) == 0
        log.close()
    assert main(status) == 1
    assert json.loads(capsys.readouterr().out)["bridges"][0]["connected"] is False


def test_a_resource_alarm_holds_back_the_remote(
    tmp_path: Path, mosquitto: Mosquitto, clients: list[Client]
) -> None:
    total = 60
    rule = {"pattern": "alarm/#", "direction": "in", "qos": 1}
    # no memory checks: the alarm is raised and cleared by the test
    with warrenmq(
        tmp_path / "data", bridge("al", mosquitto, rule), memory_high_watermark=0
    ) as target:
        local = connected(clients, target.mqtt, "local")
        assert local.subscribe(("alarm/#", 1)) == [1]
        target.wait("al", "to subscribe at the remote", connected=True, subscribed=True)
        broker = target.running.broker
        target.running.call(broker.set_alarm, "memory", True)
        remote = connected(clients, mosquitto.address, "remote")
        for number in range(total):
            remote.paho.publish("alarm/n", str(number).encode(), qos=1)
        first = [int(m.payload) for m in (local.next(TIMEOUT),)]
        with pytest.raises(queue.Empty):  # the remote stops at its in-flight window
            while True:
                first.append(int(local.next(1.0).payload))
        assert 0 < len(first) < total
        target.running.call(broker.set_alarm, "memory", False)
        rest = [int(local.next(TIMEOUT).payload) for _ in range(total - len(first))]
        assert sorted(first + rest) == list(range(total))
