"""Shared fixtures: one broker per test session on an ephemeral port.

Set ``WARRENMQ_TEST_EXTERNAL=host:port`` to run the same suite against another AMQP broker
(RabbitMQ, say) to check that a test asserts RabbitMQ's behaviour. Tests of warrenmq-only
features carry the ``warrenmq_only`` marker and are skipped in that mode.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

import pytest
from example_plugins import make_importable
from pika.adapters.blocking_connection import BlockingChannel
from pika_helpers import Connections, confirmed_channel, open_connections

if TYPE_CHECKING:
    from access_helpers import Admin
    from mqtt_helpers import Client


@dataclass(frozen=True)
class BrokerAddress:
    host: str
    port: int
    external: bool = False

    @property
    def url(self) -> str:
        return f"amqp://guest:guest@{self.host}:{self.port}/%2F"


def pytest_configure(config: pytest.Config) -> None:
    # a `warrenmq run` started by a test without --data-dir keeps its data (disk store, the
    # default) under a temporary directory, never under the user's own data directory
    os.environ["XDG_DATA_HOME"] = tempfile.mkdtemp(prefix="warrenmq-tests-")
    config.addinivalue_line("markers", "warrenmq_only: exercises a feature RabbitMQ lacks")


def pytest_unconfigure(config: pytest.Config) -> None:
    shutil.rmtree(os.environ["XDG_DATA_HOME"], ignore_errors=True)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    # WARRENMQ_TEST_MQTT_EXTERNAL does the same for the MQTT tests (against mosquitto, say),
    # WARRENMQ_TEST_WS_EXTERNAL for MQTT over WebSocket (RabbitMQ's Web-MQTT)
    variable = next(
        (
            name
            for name in (
                "WARRENMQ_TEST_EXTERNAL",
                "WARRENMQ_TEST_MQTT_EXTERNAL",
                "WARRENMQ_TEST_WS_EXTERNAL",
            )
            if os.environ.get(name)
        ),
        None,
    )
    if variable is None:
        return
    skip = pytest.mark.skip(reason=f"warrenmq-only feature; {variable} is set")
    for item in items:
        if "warrenmq_only" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def broker(example_plugins: None) -> Iterator[BrokerAddress]:
    external = os.environ.get("WARRENMQ_TEST_EXTERNAL")
    if external:
        host, _, port = external.rpartition(":")
        yield BrokerAddress(host or "127.0.0.1", int(port), external=True)
        return
    from warrenmq.testing import running_broker

    with running_broker() as running:
        yield BrokerAddress(running.host, running.port)


@dataclass(frozen=True)
class ManagementAddress:
    """A broker's management API (``url``, ``http://host:port``) and its AMQP listener."""

    url: str
    amqp: BrokerAddress
    external: bool = False


@pytest.fixture(scope="session")
def management(example_plugins: None) -> Iterator[ManagementAddress]:
    """A broker with the management plugin on an ephemeral port, for the whole session.

    ``WARRENMQ_TEST_MANAGEMENT_EXTERNAL=http://127.0.0.1:15672`` runs the same tests against
    another broker's management API (RabbitMQ's), whose AMQP listener is
    ``WARRENMQ_TEST_EXTERNAL`` (default 127.0.0.1:5672)."""
    external = os.environ.get("WARRENMQ_TEST_MANAGEMENT_EXTERNAL")
    if external:
        host, _, port = os.environ.get("WARRENMQ_TEST_EXTERNAL", "127.0.0.1:5672").rpartition(":")
        amqp = BrokerAddress(host or "127.0.0.1", int(port), external=True)
        yield ManagementAddress(external.rstrip("/"), amqp, external=True)
        return
    from management_helpers import management_settings

    from warrenmq.testing import running_broker

    with running_broker(management_settings()) as running:
        host, port = running.address("management")
        yield ManagementAddress(f"http://{host}:{port}", BrokerAddress(running.host, running.port))


@pytest.fixture
def conns(broker: BrokerAddress) -> Iterator[Connections]:
    """pika connections opened on demand, closed (and tracked names deleted) at teardown."""
    with open_connections(broker) as connections:
        yield connections


@pytest.fixture
def ch(conns: Connections) -> BlockingChannel:
    """A channel in confirm mode, so a returned publish means 'already routed and enqueued'."""
    return confirmed_channel(conns.open())


@pytest.fixture(scope="session")
def example_plugins(tmp_path_factory: pytest.TempPathFactory) -> None:
    """The example plugin packages under examples/, installed or made importable."""
    make_importable(tmp_path_factory.mktemp("examples-site"))


@pytest.fixture
def unique() -> str:
    """A name no other test uses, for queues and exchanges."""
    return f"t-{uuid.uuid4().hex[:12]}"


@pytest.fixture
def clients() -> Iterator[list[Client]]:
    """The MQTT clients a test made (it appends them): disconnected at teardown."""
    made: list[Client] = []
    yield made
    for client in made:
        client.paho.disconnect()
        client.paho.loop_stop()


@pytest.fixture(scope="module")
def secured(
    broker: BrokerAddress, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[BrokerAddress, Admin]]:
    """For the permission tests: a broker whose users live in its data directory (or the
    external RabbitMQ, users made through its management API), one per test module."""
    from access_helpers import LocalAdmin, external_admin  # it imports this module

    from warrenmq import Settings
    from warrenmq.testing import running_broker

    if broker.external:
        yield broker, external_admin(broker)
        return
    data_dir = tmp_path_factory.mktemp("access")
    with running_broker(Settings(amqp_port=0, data_dir=data_dir)) as running:
        yield BrokerAddress(running.host, running.port), LocalAdmin(data_dir)
