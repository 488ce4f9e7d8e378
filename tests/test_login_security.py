"""Who gets in, from where, and what a failed login costs: users other than guest from another
machine, the reasons in the log, and failed logins slowed down per address without holding up
anyone else."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pika
import pytest
from access_helpers import TEST_ITERATIONS, LocalAdmin
from pika.exceptions import AMQPConnectionError, ChannelClosedByBroker, ProbableAccessDeniedError
from test_access_model import RABBIT_DEFINITIONS
from test_auth import require_non_loopback_address

from warrenmq import Settings
from warrenmq.access_config import access_from_config, access_from_definitions
from warrenmq.passwords import hash_password
from warrenmq.testing import RunningBroker, running_broker

pytestmark = pytest.mark.warrenmq_only

#: seconds the third failed login in a row from one address waits (the test's setting)
DELAY = 1.0


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    admin = LocalAdmin(tmp_path)
    admin.add_user("remote", "remote-pw")
    admin.set_permissions("remote", "/", ".*", ".*", ".*")
    admin.add_vhost("elsewhere")
    return tmp_path


@pytest.fixture
def everywhere(data_dir: Path) -> Iterator[RunningBroker]:
    """A broker on every interface (0.0.0.0), slowing failed logins down by ``DELAY``."""
    settings = Settings(
        host="0.0.0.0",
        amqp_port=0,
        data_dir=data_dir,
        login_failure_delay=DELAY,
        login_failure_max_delay=4 * DELAY,
    )
    with running_broker(settings) as running:
        yield running


@pytest.fixture
def remote_address() -> str:
    return require_non_loopback_address()


def connect(
    host: str, port: int, user: str, password: str, vhost: str = "/"
) -> pika.BlockingConnection:
    return pika.BlockingConnection(
        pika.ConnectionParameters(
            host,
            port,
            vhost,
            pika.PlainCredentials(user, password),
            connection_attempts=1,
            socket_timeout=10,
            stack_timeout=10,
        )
    )


def refused(host: str, port: int, user: str, password: str, vhost: str = "/") -> None:
    with pytest.raises(AMQPConnectionError):
        connect(host, port, user, password, vhost)


def round_trip(connection: pika.BlockingConnection) -> None:
    channel = connection.channel()
    queue = channel.queue_declare("", exclusive=True).method.queue
    channel.confirm_delivery()
    channel.basic_publish("", queue, b"ping")
    assert channel.basic_get(queue, auto_ack=True)[2] == b"ping"
    channel.close()


def test_a_user_logs_in_from_another_address_where_guest_is_refused(
    everywhere: RunningBroker, remote_address: str, caplog: pytest.LogCaptureFixture
) -> None:
    connection = connect(remote_address, everywhere.port, "remote", "remote-pw")
    round_trip(connection)
    connection.close()
    with caplog.at_level(logging.WARNING, logger="warrenmq.amqp"):
        refused(remote_address, everywhere.port, "guest", "guest")
    assert any(
        r.getMessage().startswith(
            "PLAIN login refused: user 'guest' can only connect via localhost"
        )
        and f"connection {remote_address}:" in r.getMessage()
        for r in caplog.records
    ), [r.getMessage() for r in caplog.records]
    connect("127.0.0.1", everywhere.port, "guest", "guest").close()  # from loopback: fine


def test_refused_logins_are_logged_with_the_reason_and_the_address(
    everywhere: RunningBroker, remote_address: str, caplog: pytest.LogCaptureFixture
) -> None:
    port = everywhere.port
    attempts = [
        (
            lambda: refused("127.0.0.1", port, "nobody", "x"),
            "PLAIN login refused: user 'nobody' - invalid credentials (no such user)",
            "127.0.0.1",
        ),
        (
            lambda: refused("127.0.0.1", port, "remote", "wrong"),
            "PLAIN login refused: user 'remote' - invalid credentials (wrong password)",
            "127.0.0.1",
        ),
        (
            lambda: refused(remote_address, port, "guest", "guest"),
            "PLAIN login refused: user 'guest' can only connect via localhost",
            remote_address,
        ),
        (
            lambda: pytest.raises(
                ProbableAccessDeniedError,
                connect,
                remote_address,
                port,
                "remote",
                "remote-pw",
                "elsewhere",
            ),
            "login refused: user 'remote' has no access to vhost 'elsewhere'",
            remote_address,
        ),
    ]
    for attempt, reason, address in attempts:
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger="warrenmq.amqp"):
            attempt()
        lines = [r.getMessage() for r in caplog.records if r.name == "warrenmq.amqp"]
        assert any(
            line.startswith(reason) and f"(connection {address}:" in line for line in lines
        ), (reason, lines)


def test_repeated_failures_from_one_address_are_slowed_down(
    everywhere: RunningBroker, caplog: pytest.LogCaptureFixture
) -> None:
    port = everywhere.port
    working = connect("127.0.0.1", port, "remote", "remote-pw")  # opened before the failures
    with caplog.at_level(logging.WARNING, logger="warrenmq.auth"):
        refused("127.0.0.1", port, "remote", "wrong")
        refused("127.0.0.1", port, "remote", "wrong")
    assert any(
        r.getMessage().startswith("2 failed logins from 127.0.0.1: its next attempts wait 1.00 s")
        for r in caplog.records
    ), [r.getMessage() for r in caplog.records]

    # the third attempt is held back; meanwhile the broker serves everyone else
    finished = threading.Event()
    took: list[float] = []

    def third_attempt() -> None:
        start = time.monotonic()
        refused("127.0.0.1", port, "remote", "wrong-again")
        took.append(time.monotonic() - start)
        finished.set()

    attempt = threading.Thread(target=third_attempt)
    attempt.start()
    round_trip(working)
    assert not finished.is_set(), "the held-back login was answered before a round trip"
    attempt.join(10 * DELAY)
    assert took and took[0] >= DELAY

    # the right password still gets in (after its wait), and clears the address's record
    start = time.monotonic()
    connect("127.0.0.1", port, "remote", "remote-pw").close()
    assert time.monotonic() - start >= 2 * DELAY  # the fourth attempt waits twice as long
    start = time.monotonic()
    refused("127.0.0.1", port, "remote", "wrong")
    assert time.monotonic() - start < DELAY
    working.close()


def test_failures_from_one_address_do_not_slow_another(
    everywhere: RunningBroker, remote_address: str
) -> None:
    port = everywhere.port
    for _ in range(3):
        refused("127.0.0.1", port, "remote", "wrong")
    start = time.monotonic()
    connect(remote_address, port, "remote", "remote-pw").close()
    assert time.monotonic() - start < DELAY


def test_users_from_the_config_replace_the_default_guest(tmp_path: Path) -> None:
    users = {"alice": {"password_hash": hash_password("alice-pw", TEST_ITERATIONS)}}
    grant = [{"user": "alice", "vhost": "/", "configure": ".*", "write": ".*", "read": ".*"}]
    settings = Settings(amqp_port=0, access=access_from_config(users, grant))
    with running_broker(settings) as running:
        connect(running.host, running.port, "alice", "alice-pw").close()
        refused(running.host, running.port, "guest", "guest")


def test_users_imported_from_rabbitmq_definitions_log_in_with_their_rabbitmq_password() -> None:
    settings = Settings(amqp_port=0, access=access_from_definitions(RABBIT_DEFINITIONS))
    with running_broker(settings) as running:
        connection = connect(running.host, running.port, "app", "rabbit-secret", vhost="prod")
        channel = connection.channel()
        channel.queue_declare("app.jobs")
        with pytest.raises(ChannelClosedByBroker, match="configure access to queue 'jobs'"):
            channel.queue_declare("jobs")
        connection.close()
        connect(running.host, running.port, "guest", "guest").close()  # imported too


def test_config_users_are_applied_over_the_access_file(data_dir: Path) -> None:
    users = {"remote": {"password_hash": hash_password("from-config", TEST_ITERATIONS)}}
    settings = Settings(amqp_port=0, data_dir=data_dir, access=access_from_config(users))
    with running_broker(settings) as running:
        connect(running.host, running.port, "remote", "from-config").close()
        refused(running.host, running.port, "remote", "remote-pw")
        connect(running.host, running.port, "guest", "guest").close()  # still in the file
