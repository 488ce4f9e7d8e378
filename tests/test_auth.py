"""Who may log in: guest/guest from loopback only, as RabbitMQ ships."""

from __future__ import annotations

import logging
import os
import socket
from collections.abc import Iterator

import pytest
from conftest import BrokerAddress
from pamqp import commands, frame
from pamqp.header import ProtocolHeader
from raw_amqp import (
    PROTOCOL_HEADER,
    ConnectionClosedByPeer,
    RawAMQP,
    amqplain_response,
    plain_response,
    start_ok_frame,
)

from warrenmq import Broker, Settings
from warrenmq.auth import is_loopback
from warrenmq.testing import running_broker
from warrenmq.transports.amqp import AMQPConnection

WAIT = 5.0


def _frames(data: bytes) -> list[object]:
    values = []
    while data:
        used, _, value = frame.unmarshal(data)
        values.append(value)
        data = data[used:]
    return values


def _login(peer_host: str, username: str = "guest", password: str = "guest") -> list[object]:
    broker = Broker(Settings(amqp_port=0))
    connection = AMQPConnection(broker, (peer_host, 40000))
    connection.receive_data(ProtocolHeader().marshal())
    connection.data_to_send()
    start_ok = commands.Connection.StartOk(
        client_properties={"capabilities": {"authentication_failure_close": True}},
        mechanism="PLAIN",
        response=f"\0{username}\0{password}",
    )
    connection.receive_data(frame.marshal(start_ok, 0))
    return _frames(bytes(connection.data_to_send()))


@pytest.mark.parametrize("host", ["127.0.0.1", "127.1.2.3", "::1", "::ffff:127.0.0.1"])
def test_guest_may_log_in_from_loopback(host: str) -> None:
    (reply,) = _login(host)
    assert isinstance(reply, commands.Connection.Tune)


@pytest.mark.parametrize("host", ["192.0.2.10", "10.1.2.3", "2001:db8::1"])
def test_guest_is_refused_from_elsewhere(host: str) -> None:
    (reply,) = _login(host)
    assert isinstance(reply, commands.Connection.Close)
    assert reply.reply_code == 403
    assert reply.reply_text.startswith("ACCESS_REFUSED - Login was refused")


def test_wrong_password_is_refused_even_from_loopback() -> None:
    (reply,) = _login("127.0.0.1", password="nope")
    assert isinstance(reply, commands.Connection.Close)
    assert reply.reply_code == 403


def test_is_loopback_rejects_non_addresses() -> None:
    assert not is_loopback("example.org")
    assert is_loopback(None)  # in-process peers


# -- over a socket ------------------------------------------------------------------------------


def non_loopback_address() -> str | None:
    """An IPv4 address of this machine that is not loopback: the one on its default route
    (a UDP socket "connected" to a documentation address; nothing is sent), else one its
    host name resolves to; None if it has none."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        try:
            probe.connect(("198.51.100.1", 9))
            address = str(probe.getsockname()[0])
        except OSError:
            address = "127.0.0.1"
    if not is_loopback(address) and address != "0.0.0.0":
        return address
    try:
        found = socket.getaddrinfo(socket.gethostname(), None, socket.AF_INET)
    except OSError:
        return None
    return next((str(info[4][0]) for info in found if not is_loopback(str(info[4][0]))), None)


def require_non_loopback_address() -> str:
    """``non_loopback_address``, or skip the test on a machine without one; in CI (where
    ``CI`` is set) such a machine fails the test instead, so that the check is never lost."""
    address = non_loopback_address()
    if address is None:
        if os.environ.get("CI"):
            pytest.fail("CI is set but this machine has no non-loopback address to test from")
        pytest.skip("this machine has no non-loopback address")
    return address


@pytest.fixture
def remote_broker(broker: BrokerAddress) -> Iterator[BrokerAddress]:
    """The broker as reached from a non-loopback address of this machine."""
    address = require_non_loopback_address()
    if broker.external:  # RabbitMQ listens on every interface by default
        yield BrokerAddress(address, broker.port, external=True)
        return
    with running_broker(Settings(host="0.0.0.0", amqp_port=0)) as running:
        yield BrokerAddress(address, running.port)


def refused_login(broker: BrokerAddress, mechanism: str, response: bytes) -> None:
    """Send start-ok and check the login is refused: 403 or, from RabbitMQ in some cases, the
    socket just closes. Never connection.tune."""
    with RawAMQP(broker.host, broker.port, timeout=WAIT) as client:
        client.send(PROTOCOL_HEADER)
        client.expect(commands.Connection.Start)
        client.send(start_ok_frame(mechanism, response))
        with pytest.raises(ConnectionClosedByPeer):
            while True:
                _, value = client.read_method(timeout=8)
                assert isinstance(value, commands.Connection.Close), value  # never Tune
                assert value.reply_code == 403, value.reply_text
                client.send_frame(commands.Connection.CloseOk())


@pytest.mark.parametrize("authzid", ["admin", "guest"])
def test_plain_with_an_authorization_identity_is_refused(
    broker: BrokerAddress, authzid: str
) -> None:
    """RabbitMQ takes no authorization identity in PLAIN, not even the user's own."""
    refused_login(broker, "PLAIN", f"{authzid}\0guest\0guest".encode())


def test_guest_is_refused_from_a_non_loopback_address(remote_broker: BrokerAddress) -> None:
    refused_login(remote_broker, "PLAIN", plain_response("guest", "guest"))


@pytest.mark.warrenmq_only
def test_refused_logins_say_why_in_the_log(
    broker: BrokerAddress, remote_broker: BrokerAddress, caplog: pytest.LogCaptureFixture
) -> None:
    """As RabbitMQ's log: bad credentials and a guest from afar are told apart."""
    attempts = [
        (broker, "PLAIN", plain_response("guest", "wrong"), "user 'guest' - invalid credentials"),
        (broker, "PLAIN", plain_response("nobody", "guest"), "user 'nobody' - invalid credentials"),
        (broker, "AMQPLAIN", amqplain_response("guest", "x"), "user 'guest' - invalid credentials"),
        (
            broker,
            "PLAIN",
            b"admin\0guest\0guest",
            "user 'guest' - authorization identity 'admin' is not supported",
        ),
        (
            remote_broker,
            "PLAIN",
            plain_response("guest", "guest"),
            "user 'guest' can only connect via localhost",
        ),
    ]
    for target, mechanism, response, reason in attempts:
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger="warrenmq.amqp"):
            refused_login(target, mechanism, response)
        logged = [r.getMessage() for r in caplog.records if r.name == "warrenmq.amqp"]
        assert any(line.startswith(f"{mechanism} login refused: {reason} (") for line in logged), (
            reason,
            logged,
        )
