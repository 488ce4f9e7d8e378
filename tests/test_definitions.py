"""Definitions in RabbitMQ's JSON format: a file exported by RabbitMQ 3.10 (``rabbitmqctl
export_definitions``, in tests/data) imports and its topology works from pika; an export
imports back to the same export; a bad file is refused naming the file and the item; the
``definitions`` and ``policy`` commands work on files."""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pika
import pytest
from line_reader import LineReader
from pika.exceptions import ChannelClosedByBroker, NackError
from pika_helpers import (
    confirmed_channel,
    get_all,
    get_bodies,
    open_connections,
    publish_all,
    ready_count,
    wait_until,
)
from test_access_model import RABBIT_DEFINITIONS, RABBIT_VECTOR
from test_login_security import connect, refused

from warrenmq import definitions
from warrenmq.broker import Settings
from warrenmq.definitions import DefinitionsError
from warrenmq.testing import RunningBroker, running_broker

pytestmark = pytest.mark.warrenmq_only

RABBITMQ_EXPORT = Path(__file__).parent / "data" / "rabbitmq-3.10-export.json"


def settings_with(*items: definitions.Definitions) -> Settings:
    return Settings(host="127.0.0.1", amqp_port=0, definitions=list(items))


def vhost_url(running: RunningBroker, vhost: str) -> SimpleNamespace:
    return SimpleNamespace(url=f"amqp://guest:guest@{running.host}:{running.port}/{vhost}")


def warrenmq_command(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "warrenmq", *args],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip


def test_a_rabbitmq_export_imports_and_pika_uses_its_topology() -> None:
    with running_broker(settings_with(definitions.load(RABBITMQ_EXPORT))) as running:
        with open_connections(vhost_url(running, "shop")) as conns:
            ch = confirmed_channel(conns.open())
            ch.basic_publish("orders", "order.created", b"created")  # topic binding
            assert get_bodies(ch, "orders.created") == [b"created"]
            assert get_bodies(ch, "orders.all") == [b"created"]  # order.# binding
            # also through orders.audit (exchange binding order.*), whose headers binding does
            # not match: its alternate exchange orders.dead takes it, as in RabbitMQ
            assert get_bodies(ch, "orders.graveyard") == [b"created"]
            ch.basic_publish("orders", "nothing.matches", b"stray")  # AE from policy "ae"
            assert get_bodies(ch, "orders.graveyard") == [b"stray"]
            # orders -> orders.audit (exchange binding "order.*") -> headers x-match any
            ch.basic_publish("orders.audit", "", b"audit", properties=_headers({"kind": "audit"}))
            assert get_bodies(ch, "orders.all") == [b"audit"]
            # orders.created: x-message-ttl 60000 and a dead-letter exchange from its arguments
            ch.basic_publish("", "orders.created", b"x")
            method, properties, body = ch.basic_get("orders.created", auto_ack=False)
            ch.basic_reject(method.delivery_tag, requeue=False)
            assert get_bodies(ch, "orders.graveyard") == [b"x"]
            assert ready_count(ch, "transient-q") == 0
        broker = running.broker
        views = {view.name: view for view in running.call(broker.vhosts["shop"].queue_views)}
        assert views["orders.all"].policy == "orders-limits"  # priority 5, reject-publish
        assert views["transient-q"].policy is None
        assert not views["transient-q"].durable
        access = running.call(lambda: broker.access)
        assert list(access.users) == ["guest", "fixture-user"]  # imported, no default guest
        assert access.users["fixture-user"].tags == ("monitoring",)
        assert access.permissions[("fixture-user", "shop")].configure == "^orders"
        topic = access.topic_permissions[("fixture-user", "shop", "amq.topic")]
        assert (topic.write, topic.read) == ("^orders", "^orders")


def test_the_rabbitmq_policy_limit_applies_to_imported_queues() -> None:
    with (
        running_broker(settings_with(definitions.load(RABBITMQ_EXPORT))) as running,
        open_connections(vhost_url(running, "shop")) as conns,
    ):
        ch = confirmed_channel(conns.open())
        publish_all(ch, "", "orders.graveyard", [str(i) for i in range(500)])
        with pytest.raises(NackError):  # max-length 500, overflow reject-publish
            ch.basic_publish("", "orders.graveyard", b"one too many")
        assert ready_count(ch, "orders.graveyard") == 500


def _headers(headers: dict[str, Any]) -> pika.BasicProperties:
    return pika.BasicProperties(headers=headers)


def test_an_export_imports_back_to_the_same_export() -> None:
    with (
        running_broker(settings_with(definitions.load(RABBITMQ_EXPORT))) as first,
        open_connections(first) as conns,
    ):
        ch = confirmed_channel(conns.open())
        ch.exchange_declare("rt.x", "headers", arguments={"alternate-exchange": "amq.fanout"})
        ch.queue_declare("rt.q", arguments={"x-max-length": 7, "x-overflow": "drop-head"})
        ch.queue_declare("rt.exclusive", exclusive=True)
        ch.queue_bind("rt.q", "rt.x", arguments={"x-match": "all", "n": 1, "f": True})
        ch.queue_bind("rt.exclusive", "rt.x")
        exported = first.call(definitions.export, first.broker)
    queues = {(q["vhost"], q["name"]) for q in exported["queues"]}
    assert ("/", "rt.q") in queues
    assert ("/", "rt.exclusive") not in queues  # exclusive queues are not exported
    assert all(b["destination"] != "rt.exclusive" for b in exported["bindings"])
    assert ("shop", "transient-q") in queues  # non-durable ones are, as in RabbitMQ
    assert not any(x["name"].startswith("amq.") for x in exported["exchanges"])
    again = definitions.parse(json.loads(json.dumps(exported)), "exported")
    with running_broker(settings_with(again)) as second, open_connections(second) as conns:
        assert second.call(definitions.export, second.broker) == exported
        ch = confirmed_channel(conns.open())
        ch.basic_publish("rt.x", "", b"match", properties=_headers({"n": 1, "f": True}))
        assert [body for _, _, body in get_all(ch, "rt.q")] == [b"match"]


def test_the_export_command_writes_what_the_files_declare(tmp_path: Path) -> None:
    out = tmp_path / "out.json"
    config = tmp_path / "warrenmq.toml"
    config.write_text('[[queues]]\nname = "from-config"\n')
    result = warrenmq_command(
        "definitions", "export", "--config", str(config), "--definitions",
        str(RABBITMQ_EXPORT), "-o", str(out),
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    exported = json.loads(out.read_text())
    names = {q["name"] for q in exported["queues"]}
    assert {"from-config", "orders.all", "transient-q"} <= names
    assert exported["product_name"] == "warrenmq"
    assert {v["name"] for v in exported["vhosts"]} == {"/", "shop"}
    assert {user["name"] for user in exported["users"]} == {"guest", "fixture-user"}


def test_the_import_command_checks_and_summarizes() -> None:
    result = warrenmq_command("definitions", "import", str(RABBITMQ_EXPORT))
    assert result.returncode == 0, result.stderr
    assert "imports cleanly" in result.stdout
    assert "4 queues, 5 bindings, 2 policies" in result.stdout


def test_the_import_command_refuses_a_clash(tmp_path: Path) -> None:
    config = tmp_path / "warrenmq.toml"
    config.write_text(
        '[[vhosts]]\nname = "shop"\n[[queues]]\nname = "orders.all"\nvhost = "shop"\n'
    )
    # the config's own declarations come after the file's: orders.all without x-max-length
    result = warrenmq_command(
        "definitions", "import", str(RABBITMQ_EXPORT), "--config", str(config)
    )
    assert result.returncode == 2
    assert "queue 'orders.all' in vhost 'shop': inequivalent arg 'x-max-length'" in result.stderr


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ('{"queues": [}', "line 1, column 13: invalid JSON"),
        ("[]", "expected a JSON object with definitions"),
        ('{"queues": {}}', "'queues' must be a list, got an object"),
        ('{"queues": [{"name": "q", "durable": "yes"}]}',
         """queues[0] 'q': 'durable' must be true or false, got a string "yes\""""),
        ('{"queues": [{"durable": true}]}', "queues[0]: missing 'name'"),
        ('{"queues": [{"name": "q", "exclusive": true}]}',
         "queues[0] 'q': unknown field 'exclusive'"),
        ('{"bindings": [{"source": "a", "destination": "b", "destination_type": "topic"}]}',
         """'destination_type' must be "queue" or "exchange", got "topic\""""),
        ('{"policies": [{"name": "p", "pattern": ".", "definition": {"ttl": 5}}]}',
         """policies[0] 'p': [{<<"ttl">>,5}] are not recognised policy settings"""),
        ('{"vhosts": [{"name": ""}]}', "vhosts[0]: 'name' must be a non-empty string"),
    ],
)  # fmt: skip
def test_a_bad_file_is_refused_naming_the_file_and_item(
    tmp_path: Path, content: str, message: str
) -> None:
    path = tmp_path / "defs.json"
    path.write_text(content)
    with pytest.raises(DefinitionsError) as info:
        definitions.load(path)
    assert str(info.value).startswith(f"{path}")
    assert message in str(info.value)


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"queues": [{"name": "q", "vhost": "nope"}]},
         "defs: queue 'q': vhost 'nope' does not exist"),
        ({"queues": [{"name": "q", "type": "quorum"}]},
         "defs: queue 'q' in vhost '/': invalid arg 'x-queue-type'"),
        ({"bindings": [{"source": "amq.direct", "destination": "missing"}]},
         "defs: binding of queue 'missing' to exchange 'amq.direct' in vhost '/': no queue"),
        ({"exchanges": [{"name": "x", "type": "x-nothing"}]},
         "defs: exchange 'x' in vhost '/': unknown exchange type 'x-nothing'"),
    ],
)  # fmt: skip
def test_an_import_that_cannot_declare_stops_start_up(data: dict[str, Any], message: str) -> None:
    with (
        pytest.raises(DefinitionsError) as info,
        running_broker(settings_with(definitions.parse(data, "defs"))),
    ):
        pass
    assert message in str(info.value)


def test_policy_commands_edit_a_definitions_file_the_broker_loads(tmp_path: Path) -> None:
    file = tmp_path / "defs.json"
    set_ = warrenmq_command(
        "policy", "set", "short", "^short\\.", '{"max-length": 1}', "--apply-to", "queues",
        "--priority", "4", "--file", str(file),
    )  # fmt: skip
    assert set_.returncode == 0, set_.stderr
    warrenmq_command("policy", "set", "gone", ".", '{"expires": 1000}', "--file", str(file))
    assert warrenmq_command("policy", "clear", "gone", "--file", str(file)).returncode == 0
    listed = warrenmq_command("policy", "list", "--file", str(file))
    assert listed.stdout.splitlines() == [
        "vhost\tname\tpattern\tapply-to\tdefinition\tpriority",
        '/\tshort\t^short\\.\tqueues\t{"max-length":1}\t4',
    ]
    bad = warrenmq_command("policy", "set", "p", ".", '{"max-priority": 5}', "--file", str(file))
    assert bad.returncode == 2
    assert "are not recognised policy settings" in bad.stderr
    missing = warrenmq_command("policy", "clear", "nope", "--file", str(file))
    assert missing.returncode == 2
    assert "no policy 'nope' in vhost '/'" in missing.stderr
    with (
        running_broker(settings_with(definitions.load(file))) as running,
        open_connections(running) as conns,
    ):
        connection = conns.open()
        ch = confirmed_channel(connection)
        ch.queue_declare("short.q")
        publish_all(ch, "", "short.q", ["a", "b"])
        wait_until(connection, lambda: ready_count(ch, "short.q") == 1, "max-length 1")


def test_sighup_reloads_policies_into_the_running_broker(tmp_path: Path) -> None:
    file = tmp_path / "defs.json"
    file.write_text("{}")
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    process = subprocess.Popen(
        [
            sys.executable, "-m", "warrenmq", "run", "--port", str(port),
            "--definitions", str(file), "--data-dir", str(tmp_path / "data"),
        ],
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    assert process.stderr is not None
    stderr = LineReader(process.stderr)
    try:
        stderr.wait_for("listening")
        address = SimpleNamespace(url=f"amqp://guest:guest@127.0.0.1:{port}/%2F")
        with open_connections(address) as conns:
            ch = confirmed_channel(conns.open())
            ch.queue_declare("hup.q")
            publish_all(ch, "", "hup.q", ["a", "b", "c"])
            result = warrenmq_command(
                "policy", "set", "hup", "^hup\\.", '{"max-length": 1}', "--file", str(file)
            )
            assert result.returncode == 0, result.stderr
            process.send_signal(signal.SIGHUP)
            stderr.wait_for("reloaded policies: 1 in effect")
            assert get_bodies(ch, "hup.q") == [b"c"]  # the existing queue dropped its head
            file.write_text("{not json")
            process.send_signal(signal.SIGHUP)
            assert "policies unchanged" in stderr.wait_for("reload refused")
            publish_all(ch, "", "hup.q", ["d", "e"])
            assert get_bodies(ch, "hup.q") == [b"e"]  # still in effect
            file.write_text("{}")
            process.send_signal(signal.SIGHUP)
            stderr.wait_for("reloaded policies: 0 in effect")
            publish_all(ch, "", "hup.q", ["f", "g"])
            assert get_bodies(ch, "hup.q") == [b"f", b"g"]  # cleared
    finally:
        process.terminate()
        process.wait(10)
    assert process.returncode == 0


def test_users_of_a_definitions_file_log_in_and_are_exported_with_their_hashes(
    tmp_path: Path,
) -> None:
    file = tmp_path / "defs.json"
    file.write_text(json.dumps(RABBIT_DEFINITIONS))
    with running_broker(settings_with(definitions.load(file))) as running:
        connection = connect(running.host, running.port, "app", "rabbit-secret", vhost="prod")
        channel = connection.channel()
        channel.queue_declare("app.jobs")  # configure "^app\\."
        with pytest.raises(ChannelClosedByBroker, match="configure access to queue 'jobs'"):
            channel.queue_declare("jobs")
        connection.close()
        refused(running.host, running.port, "app", "wrong")
        exported = running.call(definitions.export, running.broker)
    app = next(user for user in exported["users"] if user["name"] == "app")
    assert app == {
        "name": "app",
        "password_hash": RABBIT_VECTOR,
        "hashing_algorithm": "rabbit_password_hashing_sha256",
        "tags": ["management"],
        "limits": {},
    }
    grant = {"user": "app", "vhost": "prod", "configure": "^app\\.", "write": ".*", "read": ""}
    assert grant in exported["permissions"]


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (
            lambda data: data["permissions"].append(
                {"user": "nobody", "vhost": "/", "configure": "", "write": "", "read": ""}
            ),
            "defs.json: permissions[2].user: no user 'nobody' in users",
        ),
        (
            lambda data: data["users"][1].update(password_hash="not base64!"),
            "defs.json: users[1].password_hash: ",
        ),
    ],
)
def test_a_bad_user_or_permission_is_refused_naming_the_file(
    tmp_path: Path, change: Any, message: str
) -> None:
    data = json.loads(json.dumps(RABBIT_DEFINITIONS))
    change(data)
    file = tmp_path / "defs.json"
    file.write_text(json.dumps(data))
    result = warrenmq_command("definitions", "import", str(file))
    assert result.returncode == 2, result.stdout
    assert message in result.stderr
