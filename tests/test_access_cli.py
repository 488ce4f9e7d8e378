"""``warrenmq user|vhost|permission`` as an operator runs them, against a running broker that
picks the changes up at its next login."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pika
import pytest
from line_reader import LineReader
from pika.exceptions import (
    ChannelClosedByBroker,
    ConnectionClosedByBroker,
    ProbableAccessDeniedError,
    ProbableAuthenticationError,
)
from pika_helpers import TIMEOUT

from warrenmq import Settings
from warrenmq.cli_access import DATA_DIR_VARIABLE
from warrenmq.testing import RunningBroker, running_broker

pytestmark = pytest.mark.warrenmq_only


def warrenmq(
    data_dir: Path, *args: str, stdin: str | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "warrenmq", *args, "--data-dir", str(data_dir)],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )


def ok(data_dir: Path, *args: str, stdin: str | None = None) -> str:
    result = warrenmq(data_dir, *args, stdin=stdin)
    assert result.returncode == 0, result.stderr
    return result.stdout


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    return tmp_path / "data"


@pytest.fixture
def running(data_dir: Path) -> Iterator[RunningBroker]:
    with running_broker(Settings(amqp_port=0, data_dir=data_dir)) as broker:
        yield broker


def connect(
    running: RunningBroker, user: str, password: str, vhost: str
) -> pika.BlockingConnection:
    return pika.BlockingConnection(
        pika.ConnectionParameters(
            running.host,
            running.port,
            vhost,
            pika.PlainCredentials(user, password),
            connection_attempts=1,
            socket_timeout=5,
        )
    )


def test_users_vhosts_and_permissions_from_the_command_line(
    data_dir: Path, running: RunningBroker
) -> None:
    ok(
        data_dir,
        "user",
        "add",
        "alice",
        "--tags",
        "administrator",
        "--password-stdin",
        stdin="alice-pw\n",
    )
    ok(data_dir, "vhost", "add", "prod")
    ok(data_dir, "permission", "set", "alice", "^alice\\.", ".*", ".*", "--vhost", "prod")

    # the running broker reloads the file at the next login
    connection = connect(running, "alice", "alice-pw", "prod")
    channel = connection.channel()
    channel.queue_declare("alice.inbox")
    with pytest.raises(ChannelClosedByBroker, match="configure access to queue 'bob.inbox'"):
        channel.queue_declare("bob.inbox")
    connection.close()

    assert "alice-pw" not in (data_dir / "access.json").read_text()
    users = ok(data_dir, "user", "list").splitlines()
    assert users[0].split() == ["USER", "TAGS"]
    assert ["alice", "[administrator]"] in [line.split() for line in users]
    assert ["guest", "[administrator]"] in [line.split() for line in users]
    assert ["prod", "alice", "^alice\\.", ".*", ".*"] in [
        line.split() for line in ok(data_dir, "permission", "list").splitlines()
    ]
    assert ok(data_dir, "permission", "list", "--vhost", "/").splitlines()[1].split() == [
        "/",
        "guest",
        ".*",
        ".*",
        ".*",
    ]
    assert "prod" in ok(data_dir, "vhost", "list").split()

    ok(data_dir, "permission", "clear", "alice", "--vhost", "prod")
    with pytest.raises(
        ProbableAccessDeniedError, match="access to vhost 'prod' refused for user 'alice'"
    ):
        connect(running, "alice", "alice-pw", "prod")

    ok(data_dir, "permission", "set", "alice", ".*", ".*", ".*", "-p", "prod")
    ok(data_dir, "user", "passwd", "alice", "--password", "new-pw")
    with pytest.raises(ProbableAuthenticationError):
        connect(running, "alice", "alice-pw", "prod")
    connect(running, "alice", "new-pw", "prod").close()

    ok(data_dir, "user", "delete", "alice")
    with pytest.raises(ProbableAuthenticationError):
        connect(running, "alice", "new-pw", "prod")
    assert "alice" not in ok(data_dir, "user", "list")


def test_deleting_a_vhost_closes_its_connections(data_dir: Path, running: RunningBroker) -> None:
    ok(data_dir, "vhost", "add", "temp")
    ok(data_dir, "permission", "set", "guest", ".*", ".*", ".*", "-p", "temp")
    inside = connect(running, "guest", "guest", "temp")
    inside.channel().queue_declare("q")
    ok(data_dir, "vhost", "delete", "temp")
    connect(running, "guest", "guest", "/").close()  # a login: the broker reloads the file
    deadline = time.monotonic() + TIMEOUT
    with pytest.raises(ConnectionClosedByBroker) as closed:
        while time.monotonic() < deadline:  # until the broker closes it (or the deadline)
            inside.process_data_events(0.05)
    assert closed.value.reply_code == 320
    assert "vhost 'temp' is deleted" in closed.value.reply_text
    with pytest.raises(ProbableAccessDeniedError, match="vhost temp not found"):
        connect(running, "guest", "guest", "temp")


def test_the_impersonator_tag_allows_another_user_id(
    data_dir: Path, running: RunningBroker
) -> None:
    ok(data_dir, "user", "add", "relay", "--password", "pw")
    ok(data_dir, "permission", "set", "relay", ".*", ".*", ".*")
    properties = pika.BasicProperties(user_id="someone-else")
    channel = connect(running, "relay", "pw", "/").channel()
    channel.confirm_delivery()
    with pytest.raises(ChannelClosedByBroker, match="user_id property set to 'someone-else'"):
        channel.basic_publish("", "nowhere", b"x", properties)
    ok(data_dir, "user", "set-tags", "relay", "impersonator")
    channel = connect(running, "relay", "pw", "/").channel()
    channel.confirm_delivery()
    channel.basic_publish("", "nowhere", b"x", properties)
    channel.connection.close()


@pytest.mark.parametrize(
    ("args", "status", "message"),
    [
        (("user", "add", "guest", "--password", "x"), 1, "user 'guest' already exists"),
        (("user", "delete", "nobody"), 1, "user 'nobody' does not exist"),
        (("user", "passwd", "nobody", "--password", "x"), 1, "user 'nobody' does not exist"),
        (("vhost", "delete", "/"), 1, "the default vhost '/' cannot be deleted"),
        (("vhost", "delete", "nowhere"), 1, "vhost 'nowhere' does not exist"),
        (
            ("permission", "set", "guest", ".*", ".*", ".*", "-p", "nowhere"),
            1,
            "vhost 'nowhere' does not exist",
        ),
        (("permission", "set", "guest", "(", "", ""), 1, "configure: invalid regular expression"),
        (("user", "add", "alice"), 1, "no password on standard input"),
    ],
)
def test_refused_changes_say_why_and_change_nothing(
    data_dir: Path, args: tuple[str, ...], status: int, message: str
) -> None:
    result = warrenmq(data_dir, *args, stdin="")
    assert result.returncode == status
    assert message in result.stderr
    assert not (data_dir / "access.json").exists()


def test_without_data_dir_the_commands_edit_the_directory_warrenmq_run_uses(
    tmp_path: Path,
) -> None:
    env = {k: v for k, v in os.environ.items() if k != DATA_DIR_VARIABLE}
    env["XDG_DATA_HOME"] = str(tmp_path)

    def command(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "warrenmq", *args],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
            env=env,
        )

    for args in (
        ("user", "add", "app", "--password", "app-pw"),
        ("permission", "set", "app", ".*", ".*", ".*"),
    ):
        result = command(*args)
        assert result.returncode == 0, result.stderr
    assert "app" in command("user", "list").stdout
    process = subprocess.Popen(
        [sys.executable, "-m", "warrenmq", "run", "--port", "0"],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    assert process.stderr is not None
    try:
        line = LineReader(process.stderr).wait_for("listening for amqp on tcp")
        port = int(line.rsplit(":", 1)[1])
        connection = pika.BlockingConnection(
            pika.ConnectionParameters(
                "127.0.0.1", port, "/", pika.PlainCredentials("app", "app-pw"), socket_timeout=5
            )
        )
        connection.channel().queue_declare("", exclusive=True)
        connection.close()
    finally:
        process.terminate()
        process.wait(TIMEOUT)
