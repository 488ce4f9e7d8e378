"""Limits as RabbitMQ's: per-vhost connections and queues, per-user connections and channels,
channels per connection, frame size and message size, each refused with RabbitMQ's reply code
and text (checked against RabbitMQ 3.10 with ``rabbitmqctl set_vhost_limits`` and
``set_user_limits``). Each test starts a broker with the limit configured; the limits are set
in ``Settings``, so these tests are warrenmq-only."""

from __future__ import annotations

import json
import textwrap
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

import pika
import pytest
from pamqp import commands
from pamqp.header import ContentHeader
from pika.exceptions import (
    ChannelClosedByBroker,
    ConnectionClosedByBroker,
    ProbableAccessDeniedError,
)
from pika_helpers import connection_parameters
from raw_amqp import FRAME_BODY, FRAME_METHOD, RawAMQP, method_payload, raw_frame, shortstr

from warrenmq import Broker, Settings, UserLimits, VhostLimits, config, definitions
from warrenmq.access import Access
from warrenmq.cli import _parser
from warrenmq.cli_files import settings_for
from warrenmq.limits import LimitsError
from warrenmq.testing import RunningBroker, running_broker

pytestmark = pytest.mark.warrenmq_only

WAIT = 5.0


@contextmanager
def limited(**settings: Any) -> Iterator[RunningBroker]:
    """A broker with ``settings`` where guest may use every virtual host it names (a new
    virtual host grants nobody anything, as in RabbitMQ)."""
    vhosts = settings.get("vhosts", ("/",))
    access = Access.default()
    for vhost in vhosts:
        access.vhosts.setdefault(vhost, "")
        access.set_permissions("guest", vhost, ".*", ".*", ".*")
    with running_broker(
        Settings(host="127.0.0.1", amqp_port=0, access=access, **settings)
    ) as running:
        yield running


def parameters(running: RunningBroker, vhost: str = "/") -> pika.ConnectionParameters:
    params = connection_parameters(running)
    params.virtual_host = vhost
    return params


def refused_text(error: pytest.ExceptionInfo[Exception]) -> str:
    """The Connection.Close a refused pika connection got (pika wraps it in its own error)."""
    return str(error.value)


def publish_method(channel: int, routing_key: str) -> bytes:
    arguments = b"\x00\x00" + shortstr("") + shortstr(routing_key) + b"\x00"
    return raw_frame(FRAME_METHOD, channel, method_payload(60, 40, arguments))


# -- per-vhost limits -------------------------------------------------------------------------


def test_vhost_connection_limit_refuses_connection_open_with_530() -> None:
    limits = {"limited": VhostLimits(max_connections=2)}
    with limited(vhosts=("/", "limited"), vhost_limits=limits) as running, ExitStack() as stack:
        first, second = (
            stack.enter_context(pika.BlockingConnection(parameters(running, "limited")))
            for _ in range(2)
        )
        with pytest.raises(ProbableAccessDeniedError) as refused:
            pika.BlockingConnection(parameters(running, "limited"))
        assert (
            "(530) \"NOT_ALLOWED - access to vhost 'limited' refused for user 'guest': "
            'connection limit (2) is reached"'
        ) in refused_text(refused)
        # other vhosts are not limited, and a closed connection frees its place
        stack.enter_context(pika.BlockingConnection(parameters(running, "/")))
        first.close()
        third = stack.enter_context(pika.BlockingConnection(parameters(running, "limited")))
        assert third.is_open and second.is_open
        assert running.broker.limits.connection_count(vhost="limited") == 2


def test_vhost_connection_limit_zero_lets_no_one_in() -> None:
    limits = {"/": VhostLimits(max_connections=0)}
    with limited(vhost_limits=limits) as running, RawAMQP(running.host, running.port) as client:
        client.handshake(open_connection=False)
        client.send_frame(commands.Connection.Open(virtual_host="/"))
        close = client.expect_connection_close()
        assert close.reply_code == 530
        assert close.reply_text == (
            "NOT_ALLOWED - access to vhost '/' refused for user 'guest': "
            "connection limit (0) is reached"
        )
        assert (close.class_id, close.method_id) == (10, 40)


def test_negative_limit_is_no_limit() -> None:
    assert VhostLimits(max_connections=-1, max_queues=-5) == VhostLimits()
    assert UserLimits.from_mapping({"max-channels": -1}) == UserLimits()
    limits = {"/": VhostLimits.from_mapping({"max-connections": -1, "max-queues": -1})}
    with limited(vhost_limits=limits) as running, ExitStack() as stack:
        for _ in range(3):
            stack.enter_context(pika.BlockingConnection(parameters(running)))


def test_limits_in_rabbitmqs_json_form() -> None:
    """Settings take limits as RabbitMQ's JSON (``rabbitmqctl set_vhost_limits``) too; an
    unknown limit name is an error naming it and the known ones."""
    settings = Settings(
        host="127.0.0.1",
        amqp_port=0,
        vhost_limits={"/": {"max-queues": 1}},
        user_limits={"guest": {"max-connections": 5, "max_channels": 7}},
    )
    with running_broker(settings) as running:
        assert running.broker.limits.vhost_limits == {"/": VhostLimits(max_queues=1)}
        assert running.broker.limits.user_limits == {
            "guest": UserLimits(max_connections=5, max_channels=7)
        }
    with pytest.raises(LimitsError, match=r"unknown limit 'max-channels' \(known: "):
        Broker(Settings(vhost_limits={"/": {"max-channels": 1}}))
    with pytest.raises(LimitsError, match="max_queues must be an integer, got '10'"):
        VhostLimits.from_mapping({"max-queues": "10"})


def test_a_limit_lowered_at_run_time_closes_nothing_open() -> None:
    with limited() as running, ExitStack() as stack:
        opened = [
            stack.enter_context(pika.BlockingConnection(parameters(running))) for _ in range(2)
        ]
        running.broker.limits.vhost_limits["/"] = VhostLimits(max_connections=1)
        with pytest.raises(ProbableAccessDeniedError):
            pika.BlockingConnection(parameters(running))
        for connection in opened:
            connection.channel().queue_declare("", exclusive=True)  # still served


def test_vhost_queue_limit_refuses_new_queues_with_406() -> None:
    limits = {"/": VhostLimits(max_queues=2)}
    with limited(vhost_limits=limits) as running:
        with pika.BlockingConnection(parameters(running)) as connection:
            channel = connection.channel()
            channel.queue_declare("q1")
            channel.queue_declare("q2", arguments={"x-max-length": 5})
            channel.queue_declare("q1")  # redeclaring an existing queue is no new queue
            channel.queue_declare("q2", passive=True, arguments={"x-max-length": 5})
            with pytest.raises(ChannelClosedByBroker) as refused:
                channel.queue_declare("q3")
            assert refused.value.reply_code == 406
            assert refused.value.reply_text == (
                "PRECONDITION_FAILED - cannot declare queue 'q3': queue limit in vhost '/' (2) "
                "is reached"
            )
            channel = connection.channel()
            with pytest.raises(ChannelClosedByBroker) as refused:
                channel.queue_declare("", exclusive=True)  # server-named queues count too
            assert refused.value.reply_text.startswith(
                "PRECONDITION_FAILED - cannot declare queue 'amq.gen-"
            )
            channel = connection.channel()
            channel.queue_delete("q2")
            exclusive = channel.queue_declare("", exclusive=True).method.queue
            assert exclusive.startswith("amq.gen-")
        # the exclusive queue went with its connection, which frees its place
        with pika.BlockingConnection(parameters(running)) as connection:
            connection.channel().queue_declare("q3")
            assert sorted(running.broker.vhosts["/"].queues) == ["q1", "q3"]


def test_vhost_queue_limit_is_checked_before_the_arguments() -> None:
    """As RabbitMQ: at the limit, even a declare with bad arguments gets the limit's 406."""
    with (
        limited(vhost_limits={"/": VhostLimits(max_queues=0)}) as running,
        pika.BlockingConnection(parameters(running)) as connection,
    ):
        with pytest.raises(ChannelClosedByBroker) as refused:
            connection.channel().queue_declare("zz", arguments={"x-max-length": -1})
        assert refused.value.reply_text == (
            "PRECONDITION_FAILED - cannot declare queue 'zz': queue limit in vhost '/' (0) "
            "is reached"
        )


# -- per-user limits --------------------------------------------------------------------------


def test_user_connection_limit_counts_every_vhost() -> None:
    limits = {"guest": UserLimits(max_connections=2)}
    with limited(vhosts=("/", "other"), user_limits=limits) as running, ExitStack() as stack:
        first = stack.enter_context(pika.BlockingConnection(parameters(running, "/")))
        stack.enter_context(pika.BlockingConnection(parameters(running, "other")))
        with pytest.raises(ProbableAccessDeniedError) as refused:
            pika.BlockingConnection(parameters(running, "/"))
        assert (
            "(530) \"NOT_ALLOWED - connection refused for user 'guest': "
            'user connection limit (2) is reached"'
        ) in refused_text(refused)
        first.close()
        stack.enter_context(pika.BlockingConnection(parameters(running, "/")))
        assert running.broker.limits.connection_count(user="guest") == 2


def test_user_channel_limit_counts_channels_over_all_connections() -> None:
    limits = {"guest": UserLimits(max_channels=3)}
    with limited(user_limits=limits) as running, ExitStack() as stack:
        one = stack.enter_context(pika.BlockingConnection(parameters(running)))
        two = stack.enter_context(pika.BlockingConnection(parameters(running)))
        one.channel()
        closed = one.channel()
        two.channel()
        with pytest.raises(ConnectionClosedByBroker) as refused:
            two.channel()
        assert refused.value.reply_code == 530
        assert refused.value.reply_text == (
            "NOT_ALLOWED - number of channels opened for user 'guest' has reached "
            "the maximum allowed user limit of (3)"
        )
        # the refused connection's channel is gone with it, and a closed channel frees a place
        closed.close()
        assert one.channel().is_open
        assert one.channel().is_open


def test_user_channel_limit_close_names_no_method() -> None:
    with (
        limited(user_limits={"guest": UserLimits(max_channels=0)}) as running,
        RawAMQP(running.host, running.port, timeout=WAIT) as client,
    ):
        client.handshake()
        client.send_frame(commands.Channel.Open(), 1)
        close = client.expect_connection_close()
        assert (close.reply_code, close.class_id, close.method_id) == (530, 0, 0)
        assert "maximum allowed user limit of (0)" in close.reply_text


def test_limits_of_other_users_and_vhosts_do_not_apply() -> None:
    with (
        limited(
            vhost_limits={"elsewhere": VhostLimits(max_connections=0, max_queues=0)},
            user_limits={"someone": UserLimits(max_connections=0, max_channels=0)},
        ) as running,
        pika.BlockingConnection(parameters(running)) as connection,
    ):
        connection.channel().queue_declare("free")


# -- per-connection limits --------------------------------------------------------------------


def test_channel_max_setting_is_proposed_and_enforced() -> None:
    with (
        limited(channel_max=3) as running,
        RawAMQP(running.host, running.port, timeout=WAIT) as client,
    ):
        client.handshake()
        assert client.tune is not None and client.tune.channel_max == 3
        for number in (1, 2, 3):
            client.open_channel(number)
        client.send_frame(commands.Channel.Open(), 4)
        close = client.expect_connection_close()
        assert close.reply_text == (
            "NOT_ALLOWED - number of channels opened (3) has reached the negotiated channel_max (3)"
        )


def test_frame_max_setting_is_proposed_and_enforced() -> None:
    """A client may not negotiate more than the broker's frame_max; a payload above the
    negotiated frame_max is a frame error (RabbitMQ accepts up to frame_max itself)."""
    with (
        limited(frame_max=8192) as running,
        RawAMQP(running.host, running.port, timeout=WAIT) as client,
    ):
        client.handshake(frame_max=16384, open_connection=False)
        assert client.tune is not None and client.tune.frame_max == 8192
        close = client.expect_connection_close()
        assert close.reply_code == 530
        assert close.reply_text == "NOT_ALLOWED - frame_max=16384 > 8192 max size"
        with RawAMQP(running.host, running.port, timeout=WAIT) as client:
            client.handshake()
            client.open_channel(1)
            client.send_frame(commands.Queue.Declare(queue="big", exclusive=True), 1)
            client.expect(commands.Queue.DeclareOk)
            client.send(publish_method(1, "big"))
            client.send_frame(ContentHeader(0, 20_000, commands.Basic.Properties()), 1)
            client.send(raw_frame(FRAME_BODY, 1, b"a" * 8192))  # frame_max itself: accepted
            client.send(raw_frame(FRAME_BODY, 1, b"b" * 8193))
            close = client.expect_connection_close(wait_closed=False)
            assert close.reply_code == 501
            assert close.reply_text == (
                "FRAME_ERROR - type 3, all octets = <<>>: {frame_too_large,8193,8184}"
            )


def test_message_above_max_message_size_closes_the_channel_with_406() -> None:
    with (
        limited(max_message_size=1000) as running,
        pika.BlockingConnection(parameters(running)) as connection,
    ):
        channel = connection.channel()
        channel.confirm_delivery()
        queue = channel.queue_declare("", exclusive=True).method.queue
        channel.basic_publish("", queue, b"x" * 1000)  # at the limit: accepted
        with pytest.raises(ChannelClosedByBroker) as refused:
            channel.basic_publish("", queue, b"x" * 1001)
        assert refused.value.reply_code == 406
        assert refused.value.reply_text == (
            "PRECONDITION_FAILED - message size 1001 is larger than configured max size 1000"
        )
        channel = connection.channel()
        assert channel.queue_declare(queue, passive=True).method.message_count == 1


def test_message_size_is_refused_at_the_content_header() -> None:
    """The broker refuses on the declared size, before reading (or buffering) any body."""
    with limited() as running, RawAMQP(running.host, running.port, timeout=WAIT) as client:
        client.handshake()
        client.open_channel(1)
        client.send(publish_method(1, "nowhere"))
        client.send_frame(ContentHeader(0, 600 * 2**20, commands.Basic.Properties()), 1)
        channel, close = client.read_method()
        assert channel == 1 and isinstance(close, commands.Channel.Close)
        assert close.reply_code == 406
        assert close.reply_text == (
            f"PRECONDITION_FAILED - message size {600 * 2**20} is larger than configured "
            f"max size {128 * 2**20}"
        )
        assert (close.class_id, close.method_id) == (60, 40)
        assert running.broker.accounted_memory() < 2**20


# -- from the config file and flags -----------------------------------------------------------


def _config(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "warrenmq.toml"
    path.write_text(textwrap.dedent(text).lstrip(), encoding="utf-8")
    return path


def test_limits_from_the_config_file_with_flags_over_them(tmp_path: Path) -> None:
    path = _config(
        tmp_path,
        """
        [broker]
        handshake_timeout = 2.5
        user_limits = { guest = { max-connections = 10, max-channels = 50 } }

        [[vhosts]]
        name = "tenant-a"
        limits = { max-connections = 100, max-queues = -1 }
        """,
    )
    loaded = config.load(path).settings
    assert loaded.handshake_timeout == 2.5
    assert loaded.vhost_limits == {"tenant-a": VhostLimits(max_connections=100)}
    assert loaded.user_limits == {"guest": UserLimits(max_connections=10, max_channels=50)}
    flags = ["--vhost-limit", "tenant-a:max-queues=5", "--user-limit", "guest:max-channels=7"]
    args = _parser().parse_args(["run", "--config", str(path), *flags, "--frame-max", "8192"])
    settings, _ = settings_for(args)
    assert settings.vhost_limits == {"tenant-a": VhostLimits(max_connections=100, max_queues=5)}
    assert settings.user_limits == {"guest": UserLimits(max_connections=10, max_channels=7)}
    assert (settings.frame_max, settings.handshake_timeout) == (8192, 2.5)


@pytest.mark.parametrize(
    ("text", "error"),
    [
        (
            '[[vhosts]]\nname = "a"\nlimits = { max-channels = 1 }\n',
            "line 3: vhosts[0].limits.max-channels: unknown limit 'max-channels' "
            "(known: max-connections, max-queues)",
        ),
        (
            '[[vhosts]]\nname = "a"\nlimits = { max-queues = "10" }\n',
            'line 3: vhosts[0].limits.max-queues: expected an integer, got "10"',
        ),
        (
            "[broker]\nuser_limits = { guest = 5 }\n",
            "line 2: broker.user_limits.guest: expected a table of limits, got 5",
        ),
        (
            "[broker]\nhandshake_timeout = 0\n",
            "line 2: broker.handshake_timeout: expected a number of seconds above 0, got 0",
        ),
    ],
)
def test_bad_limits_in_the_config_file_name_the_key(tmp_path: Path, text: str, error: str) -> None:
    path = _config(tmp_path, text)
    with pytest.raises(config.ConfigError) as refused:
        config.load(path)
    assert str(refused.value) == f"{path}, {error}"


# -- from and to RabbitMQ's definitions -------------------------------------------------------

#: the parts of a RabbitMQ 3.10 export (GET /api/definitions) that carry limits
RABBITMQ_EXPORT = {
    "rabbit_version": "3.10.8",
    "vhosts": [{"name": "tenant-a"}],
    "users": [
        {
            "name": "guest",
            "password_hash": "kI1Ka4P3/6RIiJBOuMcLXLPCoh6nrc7gMaRk7kNBOayzu4Pl",  # guest
            "hashing_algorithm": "rabbit_password_hashing_sha256",
            "tags": ["administrator"],
            "limits": {"max-channels": 1},
        }
    ],
    "permissions": [
        {"user": "guest", "vhost": "tenant-a", "configure": ".*", "write": ".*", "read": ".*"}
    ],
    "parameters": [
        {
            "value": {"max-queues": 1, "max-connections": 3},
            "vhost": "tenant-a",
            "component": "vhost-limits",
            "name": "limits",
        },
        {"value": {"uri": "amqp://"}, "vhost": "/", "component": "shovel", "name": "kept"},
    ],
}


def test_limits_in_rabbitmq_definitions_are_imported_and_exported(tmp_path: Path) -> None:
    file = tmp_path / "definitions.json"
    file.write_text(json.dumps(RABBITMQ_EXPORT), encoding="utf-8")
    settings = Settings(host="127.0.0.1", amqp_port=0, definitions=[definitions.load(file)])
    with running_broker(settings) as running:
        with pika.BlockingConnection(parameters(running, "tenant-a")) as connection:
            channel = connection.channel()
            with pytest.raises(ConnectionClosedByBroker) as closed:
                connection.channel()  # guest may have one channel open
            assert closed.value.reply_text.endswith("maximum allowed user limit of (1)")
        with pika.BlockingConnection(parameters(running, "tenant-a")) as connection:
            channel = connection.channel()
            channel.queue_declare("only")
            with pytest.raises(ChannelClosedByBroker) as refused:
                channel.queue_declare("second")
            assert refused.value.reply_text.endswith(
                "queue limit in vhost 'tenant-a' (1) is reached"
            )
        exported = definitions.export(running.broker)
    assert exported["parameters"] == RABBITMQ_EXPORT["parameters"]


def test_bad_limits_in_definitions_name_the_file_and_vhost(tmp_path: Path) -> None:
    data = {
        "vhosts": [{"name": "a"}],
        "parameters": [
            {
                "value": {"max-channels": 1},
                "vhost": "a",
                "component": "vhost-limits",
                "name": "limits",
            }
        ],
    }
    file = tmp_path / "bad.json"
    file.write_text(json.dumps(data), encoding="utf-8")
    with pytest.raises(definitions.DefinitionsError) as refused:
        definitions.apply(Broker(Settings()), definitions.load(file))
    assert str(refused.value) == (
        f"{file}: vhost-limits of vhost 'a': unknown limit 'max-channels' "
        "(known: max-connections, max-queues)"
    )
