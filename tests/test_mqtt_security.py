"""MQTT with the broker's users, over TLS: paho-mqtt logs in as a user of the broker (``vhost:user``
names included), gets CONNACK 4 or 5 as RabbitMQ's MQTT plugin answers, is held to the user's
permissions, connects over TLS with certificates the test makes, and with
``mqtt_ssl_cert_login`` logs in by its client certificate alone."""

from __future__ import annotations

import logging
import ssl
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from access_helpers import TEST_ITERATIONS
from mqtt_helpers import TIMEOUT, Client, MQTTAddress, RawClient
from test_auth import require_non_loopback_address
from test_cli import broker_process
from tls_helpers import Certificates, make_certificates

from warrenmq import ListenerSpec, Settings, TLSOptions, config
from warrenmq.access import Access
from warrenmq.passwords import hash_password
from warrenmq.testing import RunningBroker, running_broker

pytestmark = pytest.mark.warrenmq_only

#: seconds the third failed login in a row from one address waits (this file's setting)
DELAY = 1.0
#: paho reports an MQTT 3.1.1 CONNACK code as the MQTT 5 reason code it stands for
CONNACK_CODES = {128: 1, 132: 1, 133: 2, 136: 3, 134: 4, 135: 5}


def add_user(access: Access, name: str, password: str | None) -> None:
    """A user with a cheap hash (the scheme is the one in use; the cost is not the point)."""
    access.add_user(
        name, password_hash=None if password is None else hash_password(password, TEST_ITERATIONS)
    )


def mqtt_address(running: RunningBroker, host: str | None = None) -> MQTTAddress:
    info = next(i for i in running.broker.listeners if i.spec.protocol == "mqtt")
    return MQTTAddress(host or "127.0.0.1", info.port)


@pytest.fixture(scope="module")
def certificates(tmp_path_factory: pytest.TempPathFactory) -> Certificates:
    return make_certificates(tmp_path_factory.mktemp("tls"))


def connect(clients: list[Client], address: MQTTAddress, client_id: str, **options: object) -> int:
    """CONNECT with paho; the CONNACK's return code (-1: closed without one)."""
    client = Client(address, client_id, **options)  # type: ignore[arg-type]
    clients.append(client)
    try:
        code = client.connect()[0]
    except (ssl.SSLError, OSError):  # the TLS handshake failed before MQTT began
        return -1
    return CONNACK_CODES.get(code, code)


def round_trip(client: Client, topic: str) -> None:
    assert client.subscribe((topic, 1)) == [1]
    client.publish(topic, b"ping", qos=1)
    assert client.next().payload == b"ping"


# -- logins ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def users() -> Iterator[RunningBroker]:
    """Users of the broker, on every interface, failed logins slowed down by ``DELAY``."""
    access = Access.default()
    add_user(access, "app", "app-pw")
    access.set_permissions("app", "/", ".*", ".*", ".*")
    access.add_vhost("prod")
    access.set_permissions("app", "prod", ".*", ".*", ".*")
    access.add_vhost("closed")  # app has no permission there
    settings = Settings(
        host="0.0.0.0",
        amqp_port=0,
        mqtt_port=0,
        access=access,
        login_failure_delay=DELAY,
        login_failure_max_delay=4 * DELAY,
    )
    with running_broker(settings) as running:
        yield running


def test_a_user_of_the_broker_logs_in_in_its_vhost(
    users: RunningBroker, clients: list[Client], unique: str
) -> None:
    address = mqtt_address(users)
    assert connect(clients, address, unique, username="prod:app", password="app-pw") == 0
    round_trip(clients[-1], f"{unique}/t")
    [view] = [v for v in users.broker.connection_views() if v.client.get("client_id") == unique]
    assert (view.user, view.vhost) == ("app", "prod")
    # without a prefix, the default vhost (mqtt_vhost); "/:" names it too
    for client_id, username in ((f"{unique}-d", "app"), (f"{unique}-s", "/:app")):
        assert connect(clients, address, client_id, username=username, password="app-pw") == 0
        [view] = [v for v in users.broker.connection_views() if v.client["client_id"] == client_id]
        assert (view.user, view.vhost) == ("app", "/")


@pytest.mark.parametrize(
    ("username", "password", "code", "reason"),
    [
        ("app", "wrong", 4, "user 'app' - invalid credentials (wrong password)"),
        ("nobody", "x", 4, "user 'nobody' - invalid credentials (no such user)"),
        ("nowhere:app", "app-pw", 4, "vhost 'nowhere' does not exist"),
        ("closed:app", "app-pw", 5, "user 'app' has no access to vhost 'closed'"),
    ],
    ids=["wrong-password", "no-such-user", "no-such-vhost", "vhost-not-permitted"],
)
def test_refused_logins_get_rabbitmq_s_code_and_are_logged_with_reason_and_peer(
    users: RunningBroker,
    unique: str,
    caplog: pytest.LogCaptureFixture,
    username: str,
    password: str,
    code: int,
    reason: str,
) -> None:
    with caplog.at_level(logging.WARNING, logger="warrenmq.mqtt"):
        raw = RawClient(mqtt_address(users))
        port = raw.sock.getsockname()[1]
        assert raw.connect(unique, username=username, password=password) == bytes((0, code))
        assert raw.closed_by_server()
    expected = f"MQTT login refused (return code {code}): {reason} (connection 127.0.0.1:{port})"
    assert expected in [r.getMessage() for r in caplog.records], caplog.text


def test_guest_is_refused_from_a_non_loopback_address(
    users: RunningBroker, clients: list[Client], unique: str, caplog: pytest.LogCaptureFixture
) -> None:
    remote = mqtt_address(users, require_non_loopback_address())
    with caplog.at_level(logging.WARNING, logger="warrenmq.mqtt"):
        # 5 (not authorized), as RabbitMQ's MQTT plugin: the password was right
        assert connect(clients, remote, unique, username="guest", password="guest") == 5
        assert connect(clients, remote, f"{unique}-anon") == 5  # anonymous is guest too
    assert any(
        "user 'guest' can only connect via localhost" in r.getMessage()
        and f"(connection {remote.host}:" in r.getMessage()
        for r in caplog.records
    ), caplog.text
    # a user of its own gets in from there, and guest still from loopback
    assert connect(clients, remote, f"{unique}-app", username="app", password="app-pw") == 0
    round_trip(clients[-1], f"{unique}/remote")
    assert connect(clients, mqtt_address(users), f"{unique}-local") == 0


def test_failed_mqtt_logins_are_slowed_down_like_amqp_ones(
    users: RunningBroker, clients: list[Client], unique: str
) -> None:
    address = mqtt_address(users, require_non_loopback_address())  # an address of its own
    for attempt in range(2):
        start = time.monotonic()
        assert connect(clients, address, f"{unique}-{attempt}", username="app", password="x") == 4
        assert time.monotonic() - start < DELAY
    start = time.monotonic()
    assert connect(clients, address, f"{unique}-3", username="app", password="x") == 4
    assert time.monotonic() - start >= DELAY
    # the same throttle as AMQP's: a right password waits its turn, then clears the record
    start = time.monotonic()
    assert connect(clients, address, f"{unique}-4", username="app", password="app-pw") == 0
    assert time.monotonic() - start >= 2 * DELAY
    start = time.monotonic()
    assert connect(clients, address, f"{unique}-5", username="app", password="x") == 4
    assert time.monotonic() - start < DELAY


# -- permissions ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def limited() -> Iterator[RunningBroker]:
    """One user per missing permission."""
    access = Access.default()
    grants = {
        # everything but configure on the subscription queues
        "no-configure": ("^other$", ".*", ".*"),
        # everything but write on the subscription queues
        "no-queue-write": (".*", "^amq\\.topic$", ".*"),
        # everything but read on amq.topic
        "no-read": (".*", ".*", "^mqtt-subscription-"),
        # everything but write on amq.topic
        "no-publish": (".*", "^mqtt-subscription-", ".*"),
    }
    for user, grant in grants.items():
        add_user(access, user, "pw")
        access.set_permissions(user, "/", *grant)
    with running_broker(Settings(amqp_port=0, mqtt_port=0, access=access)) as running:
        yield running


@pytest.mark.parametrize("user", ["no-configure", "no-queue-write", "no-read"])
def test_subscribing_needs_configure_and_write_on_its_queue_and_read_on_amq_topic(
    limited: RunningBroker, clients: list[Client], unique: str, user: str
) -> None:
    assert connect(clients, mqtt_address(limited), unique, username=user, password="pw") == 0
    client = clients[-1]
    assert client.subscribe((f"{unique}/t", 1)) == [0x80]
    assert not client.disconnected.is_set()  # only that filter is refused
    client.publish(f"{unique}/t", b"published", qos=1)  # write on amq.topic: PUBACKed


def test_publishing_needs_write_on_amq_topic(
    limited: RunningBroker, clients: list[Client], unique: str
) -> None:
    address = mqtt_address(limited)
    assert connect(clients, address, unique, username="no-publish", password="pw") == 0
    client = clients[-1]
    assert client.subscribe((f"{unique}/t", 1)) == [1]
    client.paho.publish(f"{unique}/t", b"refused", qos=1)
    assert client.disconnected.wait(TIMEOUT)  # RabbitMQ closes the connection too


# -- over TLS -------------------------------------------------------------------------------


def mqtts(
    certificates: Certificates, verify_peer: bool = False, fail_if_no_peer_cert: bool = True
) -> ListenerSpec:
    options = TLSOptions(
        certificates.server_cert,
        certificates.server_key,
        certificates.ca,
        verify_peer=verify_peer,
        fail_if_no_peer_cert=fail_if_no_peer_cert,
    )
    return ListenerSpec("tcp", "mqtt", "127.0.0.1", 0, tls=options)


def test_paho_over_tls(certificates: Certificates, clients: list[Client], unique: str) -> None:
    with running_broker(Settings(listeners=[mqtts(certificates)])) as running:
        address = mqtt_address(running)
        context = certificates.client_context(with_certificate=False)
        assert connect(clients, address, unique, tls=context) == 0
        round_trip(clients[-1], f"{unique}/secure")
        assert [view.transport for view in running.broker.connection_views()] == ["tls"]
        assert connect(clients, address, f"{unique}-plain") == -1  # no TLS: no CONNACK


def test_verify_peer_needs_a_client_certificate_from_the_ca(
    certificates: Certificates, clients: list[Client], unique: str
) -> None:
    listener = mqtts(certificates, verify_peer=True)
    with running_broker(Settings(listeners=[listener])) as running:
        address = mqtt_address(running)
        assert connect(clients, address, unique, tls=certificates.client_context()) == 0
        round_trip(clients[-1], f"{unique}/t")
        for bad in ({"with_certificate": False}, {"stranger": True}):
            context = certificates.client_context(**bad)
            assert connect(clients, address, f"{unique}-bad", tls=context) == -1, bad


def test_run_serves_mqtt_over_tls_with_the_tls_flags(
    certificates: Certificates, clients: list[Client], unique: str
) -> None:
    args = (
        "--port", "0", "--tls-port", "0", "--mqtt-tls-port", "0", "--store", "memory",
        "--tls-cert", str(certificates.server_cert), "--tls-key", str(certificates.server_key),
    )  # fmt: skip
    with broker_process(*args) as (_, log):
        line = log.wait_for("listening for mqtt").strip()
        assert line.endswith(" with TLS"), line
        port = int(line.removesuffix(" with TLS").rsplit(":", 1)[1])
        context = certificates.client_context(with_certificate=False)
        assert connect(clients, MQTTAddress("127.0.0.1", port), unique, tls=context) == 0
        round_trip(clients[-1], f"{unique}/t")


def test_mqtt_tls_port_without_a_certificate_is_an_error() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "warrenmq", "run", "--port", "0", "--mqtt-tls-port", "0"],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert result.returncode == 2, result.stderr
    assert "--mqtt-tls-port needs --tls-cert" in result.stderr


def test_an_mqtt_tls_listener_in_the_config_defaults_to_8883(
    certificates: Certificates, tmp_path: Path
) -> None:
    path = tmp_path / "warrenmq.toml"
    path.write_text(
        f"""
[[listeners]]
protocol = "mqtt"
[listeners.tls]
certfile = "{certificates.server_cert}"
keyfile = "{certificates.server_key}"
"""
    )
    listeners = config.load(path).settings.listeners
    assert listeners is not None
    [listener] = listeners
    assert (listener.protocol, listener.port, listener.tls is not None) == ("mqtt", 8883, True)


# -- logging in by client certificate (mqtt.ssl_cert_login) -----------------------------------


@pytest.fixture(scope="module")
def cert_users() -> Access:
    """Users named as the test client certificate (CN ``client``), without passwords."""
    access = Access.default()
    for name in ("client", "CN=client"):
        add_user(access, name, None)
        access.set_permissions(name, "/", ".*", ".*", ".*")
    return access


@pytest.mark.parametrize(
    ("source", "user"), [("common_name", "client"), ("distinguished_name", "CN=client")]
)
def test_ssl_cert_login_logs_in_as_the_certificate_s_user(
    certificates: Certificates,
    cert_users: Access,
    clients: list[Client],
    unique: str,
    source: str,
    user: str,
) -> None:
    settings = Settings(
        listeners=[mqtts(certificates, verify_peer=True)],
        access=cert_users,
        mqtt_ssl_cert_login=True,
        ssl_cert_login_from=source,
    )
    with running_broker(settings) as running:
        address = mqtt_address(running)
        assert connect(clients, address, unique, tls=certificates.client_context()) == 0
        round_trip(clients[-1], f"{unique}/t")
        [view] = running.broker.connection_views()
        assert view.user == user
        # a user name and password given still take priority, as in RabbitMQ
        context = certificates.client_context()
        code = connect(
            clients, address, f"{unique}-pw", username="guest", password="x", tls=context
        )
        assert code == 4


def test_ssl_cert_login_is_off_by_default_and_needs_a_verified_certificate(
    certificates: Certificates, cert_users: Access, clients: list[Client], unique: str
) -> None:
    access = cert_users.copy()
    access.set_permissions("guest", "/", "", "", "")  # anonymous logins land as guest
    listener = mqtts(certificates, verify_peer=True, fail_if_no_peer_cert=False)
    off = Settings(listeners=[listener], access=access, ssl_cert_login_from="common_name")
    with running_broker(off) as running:
        assert (
            connect(clients, mqtt_address(running), unique, tls=certificates.client_context()) == 0
        )
        assert [view.user for view in running.broker.connection_views()] == ["guest"]
    on = Settings(
        listeners=[listener],
        access=access,
        ssl_cert_login_from="common_name",
        mqtt_ssl_cert_login=True,
        mqtt_allow_anonymous=False,
    )
    with running_broker(on) as running:
        without = certificates.client_context(with_certificate=False)
        # no certificate and no user name: no credentials, 4 as in RabbitMQ
        assert connect(clients, mqtt_address(running), f"{unique}-none", tls=without) == 4


def test_ssl_cert_login_of_an_unknown_user_gets_4(
    certificates: Certificates, clients: list[Client], unique: str
) -> None:
    settings = Settings(
        listeners=[mqtts(certificates, verify_peer=True)],
        mqtt_ssl_cert_login=True,
        ssl_cert_login_from="common_name",
    )
    with running_broker(settings) as running:
        context = certificates.client_context()
        assert connect(clients, mqtt_address(running), unique, tls=context) == 4


# -- topic permissions ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def topics() -> Iterator[RunningBroker]:
    """``sensor`` may publish under its own client id and read sensors and alarms only."""
    access = Access.default()
    add_user(access, "sensor", "pw")
    access.set_permissions("sensor", "/", ".*", ".*", ".*")
    write, read = "^sensors\\.{client_id}\\.", "^(sensors|alarms)\\."
    access.set_topic_permissions("sensor", "/", "amq.topic", write, read)
    with running_broker(Settings(amqp_port=0, mqtt_port=0, access=access)) as running:
        yield running


def test_topic_permissions_apply_to_mqtt_topics_in_their_amqp_form(
    topics: RunningBroker, clients: list[Client], unique: str
) -> None:
    address = mqtt_address(topics)
    assert connect(clients, address, unique, username="sensor", password="pw") == 0
    client = clients[-1]
    # read: "alarms/#" is "alarms.#"; {client_id} in write is this client's id
    assert client.subscribe(("alarms/#", 1), ("billing/#", 1), (f"sensors/{unique}/+", 1)) == [
        1,
        0x80,
        1,
    ]
    client.publish(f"sensors/{unique}/temp", b"21.5", qos=1)
    assert client.next().payload == b"21.5"
    assert not client.disconnected.is_set()
    client.paho.publish("sensors/someone-else/temp", b"forged", qos=1)
    assert client.disconnected.wait(TIMEOUT)  # as a publish without write permission


def test_topic_permissions_are_per_exchange(
    topics: RunningBroker, clients: list[Client], unique: str
) -> None:
    """Another user, without topic permissions, publishes and subscribes anywhere."""
    assert connect(clients, mqtt_address(topics), unique) == 0  # anonymous: guest
    client = clients[-1]
    assert client.subscribe(("billing/#", 1)) == [1]
    client.publish("billing/x", b"any topic", qos=1)
    assert client.next().payload == b"any topic"
