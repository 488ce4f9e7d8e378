"""Topic permissions from every source warrenmq reads them from: the config file's
``[[topic_permissions]]``, RabbitMQ's definitions (``topic_permissions``, imported and exported)
and ``warrenmq permission topic set|clear|list``, each applied by a running broker to pika."""

from __future__ import annotations

import json
from pathlib import Path

import pika
import pytest
from pika.exceptions import ChannelClosedByBroker
from test_access_cli import ok, warrenmq
from test_config import write

from warrenmq import config, definitions
from warrenmq.errors import ConfigError
from warrenmq.testing import RunningBroker, running_broker

pytestmark = pytest.mark.warrenmq_only

REFUSED = (
    "ACCESS_REFUSED - write access to topic 'billing.x' in exchange 'amq.topic' in vhost '/' "
    "refused for user '{user}'"
)


def publish(running: RunningBroker, user: str, password: str, routing_key: str) -> None:
    """Publish to amq.topic with confirms (a refusal raises ``ChannelClosedByBroker``)."""
    credentials = pika.PlainCredentials(user, password)
    parameters = pika.ConnectionParameters(running.host, running.port, "/", credentials)
    connection = pika.BlockingConnection(parameters)
    try:
        channel = connection.channel()
        channel.confirm_delivery()
        channel.basic_publish("amq.topic", routing_key, b"x")
    finally:
        if connection.is_open:
            connection.close()


def assert_refused(running: RunningBroker, user: str, password: str) -> None:
    with pytest.raises(ChannelClosedByBroker) as caught:
        publish(running, user, password, "billing.x")
    assert caught.value.reply_text == REFUSED.format(user=user)


CONFIG = """
    [broker]
    store = "memory"

    [[listeners]]
    port = 0

    [users.app]
    password = "app-pw"

    [[permissions]]
    user = "app"
    configure = ".*"
    write = ".*"
    read = ".*"

    [[topic_permissions]]
    user = "app"
    exchange = "amq.topic"
    write = "^orders\\\\."
    read = ".*"
"""


def test_the_config_file_s_topic_permissions_apply(tmp_path: Path) -> None:
    settings = config.load(write(tmp_path, CONFIG)).settings
    with running_broker(settings) as running:
        publish(running, "app", "app-pw", "orders.created")
        assert_refused(running, "app", "app-pw")
        exported = running.call(definitions.export, running.broker)
    grant = {"user": "app", "vhost": "/", "exchange": "amq.topic", "write": "^orders\\.",
             "read": ".*"}  # fmt: skip
    assert exported["topic_permissions"] == [grant]


@pytest.mark.parametrize(
    ("old", "new", "message"),
    [
        ('user = "app"', 'user = "nobody"', "topic_permissions[0].user: no user 'nobody' in"),
        ('exchange = "amq.topic"', "", "topic_permissions[0]: missing key 'exchange'"),
        (
            'write = "^orders',
            'write = "(^orders',
            "topic_permissions[0].write: invalid regular expression '(^orders",
        ),
        ('read = ".*"', 'reed = ".*"', "topic_permissions[0].reed: unknown key"),
    ],
    ids=["unknown-user", "no-exchange", "bad-expression", "unknown-key"],
)
def test_a_bad_topic_permission_is_reported_with_its_line(
    tmp_path: Path, old: str, new: str, message: str
) -> None:
    head, table = CONFIG.split("[[topic_permissions]]")
    path = write(tmp_path, head + "[[topic_permissions]]" + table.replace(old, new))
    with pytest.raises(ConfigError) as caught:
        config.load(path)
    text = path.read_text().splitlines()
    key = (new or "[[topic_permissions]]").split(" =")[0]
    line = 1 + max(i for i, row in enumerate(text) if row.startswith(key))
    assert f"{path}, line {line}: {message}" in str(caught.value)


def test_rabbitmq_definitions_import_and_export_topic_permissions(tmp_path: Path) -> None:
    data = {
        "users": [{"name": "app", "password_hash": "", "tags": []}],
        "vhosts": [{"name": "/"}],
        "permissions": [
            {"user": "app", "vhost": "/", "configure": ".*", "write": ".*", "read": ".*"}
        ],
        "topic_permissions": [
            {"user": "app", "vhost": "/", "exchange": "amq.topic", "write": "^a", "read": "^b"}
        ],
    }
    file = tmp_path / "defs.json"
    file.write_text(json.dumps(data))
    loaded = definitions.load(file)
    settings = config.Settings(amqp_port=0, definitions=[loaded])
    with running_broker(settings) as running:
        access = running.call(lambda: running.broker.access)
        topic = access.topic_permissions[("app", "/", "amq.topic")]
        assert (topic.write, topic.read) == ("^a", "^b")
        exported = running.call(definitions.export, running.broker)
    assert exported["topic_permissions"] == data["topic_permissions"]
    data["topic_permissions"][0]["write"] = "("
    file.write_text(json.dumps(data))
    with pytest.raises(definitions.DefinitionsError, match=r"topic_permissions\[0\]\.write"):
        definitions.load(file)


def test_the_topic_permission_commands_edit_what_a_running_broker_applies(
    tmp_path: Path,
) -> None:
    data_dir = tmp_path / "data"
    ok(data_dir, "user", "add", "app", "--password", "app-pw")
    ok(data_dir, "permission", "set", "app", ".*", ".*", ".*")
    with running_broker(config.Settings(amqp_port=0, data_dir=data_dir)) as running:
        publish(running, "app", "app-pw", "billing.x")  # no topic permission yet
        out = ok(data_dir, "permission", "topic", "set", "app", "amq.topic", "^orders\\.", ".*")
        assert (
            out == "set the topic permissions of user 'app' on exchange 'amq.topic' in vhost '/'\n"
        )
        assert_refused(running, "app", "app-pw")  # from the next login on
        listing = ok(data_dir, "permission", "topic", "list").splitlines()
        assert listing[0].split() == ["VHOST", "USER", "EXCHANGE", "WRITE", "READ"]
        assert listing[1].split() == ["/", "app", "amq.topic", "^orders\\.", ".*"]
        ok(data_dir, "permission", "topic", "clear", "app")
        publish(running, "app", "app-pw", "billing.x")
        assert ok(data_dir, "permission", "topic", "list", "--user", "app").count("\n") == 1
    result = warrenmq(data_dir, "permission", "topic", "clear", "app", "amq.topic")
    assert result.returncode == 1
    assert result.stderr == (
        "warrenmq permission topic clear: user 'app' has no topic permissions on exchange "
        "'amq.topic' in vhost '/'\n"
    )
    result = warrenmq(data_dir, "permission", "topic", "set", "app", "x", "(", "")
    assert result.returncode == 1
    assert "write: invalid regular expression '('" in result.stderr
