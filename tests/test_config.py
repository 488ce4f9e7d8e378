"""The TOML config file: every section composes a broker that pika then uses; every kind of
mistake stops start-up with the file, line, key and what was expected; flags win over the
file; ``warrenmq config check`` exits 0 or 2."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pika
import pytest
from access_helpers import TEST_ITERATIONS
from dists import install_distribution
from line_reader import LineReader
from pika.exceptions import ChannelClosedByBroker
from pika_helpers import (
    assert_reply,
    connect,
    get_bodies,
    open_connections,
    publish_all,
    ready_count,
)
from test_login_security import connect as login_as
from test_login_security import refused
from tls_helpers import make_certificates

from warrenmq import config, hookimpl
from warrenmq.broker import Settings
from warrenmq.cli import _parser
from warrenmq.cli_files import override_address, settings_for
from warrenmq.config import ConfigError, ConfigSection, Key
from warrenmq.passwords import hash_password
from warrenmq.protocol import ListenerSpec
from warrenmq.testing import running_broker
from warrenmq.tls import TLSOptions

pytestmark = pytest.mark.warrenmq_only

TIMEOUT = 10.0


class DemoPlugin:
    """A plugin with its own config section, ``[plugins.demo]``."""

    __name__ = "demo"

    def __init__(self) -> None:
        self.seen: dict[str, Any] = {}

    @hookimpl
    def warrenmq_register_config_sections(self, registry: Any) -> None:
        registry.add(
            ConfigSection(
                "demo",
                {
                    "color": Key(str, "blue", "a color", "one of: blue, red",
                                 check=lambda v: v in ("blue", "red")),
                    "size": Key(int, 3, "a size"),
                },
            )
        )  # fmt: skip

    @hookimpl
    def warrenmq_startup(self, broker: Any) -> None:
        self.seen = broker.plugin_config("demo")


def write(tmp_path: Path, text: str, name: str = "warrenmq.toml") -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text).lstrip(), encoding="utf-8")
    return path


def warrenmq_command(
    *args: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "warrenmq", *args],
        capture_output=True, text=True, timeout=60, check=False, env=env,
    )  # fmt: skip


FULL = """
[broker]
heartbeat = 17
max_message_size = 1000
shutdown_grace = 1
definitions = "rabbit.json"

[[listeners]]
port = 0

[[listeners]]
transport = "tcp"
protocol = "amqp"
host = "127.0.0.1"
port = 0

[plugins]
blocked = ["fair"]

[plugins.demo]
color = "red"

[[vhosts]]
name = "staging"
description = "for tests"

[[permissions]]
user = "guest"
vhost = "staging"
configure = ".*"
write = ".*"
read = ".*"

[[policies]]
name = "short"
vhost = "staging"
pattern = "^jobs$"
apply-to = "queues"
priority = 2
definition = { max-length = 2 }

[[exchanges]]
name = "events"
vhost = "staging"
type = "topic"
durable = false

[[queues]]
name = "jobs"
vhost = "staging"
arguments = { x-max-length = 100 }

[[queues]]
name = "audit"
vhost = "staging"
durable = false

[[bindings]]
vhost = "staging"
source = "events"
destination = "jobs"
routing_key = "job.#"

[[bindings]]
vhost = "staging"
source = "amq.fanout"
destination = "events"
destination_type = "exchange"
"""

RABBIT = '{"vhosts": [{"name": "staging"}], "queues": [{"name": "from-file", "vhost": "staging", "durable": true, "auto_delete": false, "arguments": {}}]}'


def test_every_section_composes_a_broker_that_pika_uses(tmp_path: Path) -> None:
    (tmp_path / "rabbit.json").write_text(RABBIT)
    plugin = DemoPlugin()
    loaded = config.load(write(tmp_path, FULL), plugins=[plugin])
    loaded.settings.data_dir = tmp_path / "data"  # the disk store, in this test's directory
    with running_broker(loaded.settings, plugins=[plugin]) as running:
        listeners = running.broker.listeners
        assert len(listeners) == 2
        assert plugin.seen == {"color": "red", "size": 3}  # the plugin's section, defaults in
        staging = SimpleNamespace(url=f"amqp://guest:guest@127.0.0.1:{listeners[1].port}/staging")
        with open_connections(staging) as conns:
            connection = conns.open()
            assert connection._impl.params.heartbeat == 17  # [broker] heartbeat
            ch = connection.channel()
            ch.confirm_delivery()
            publish_all(ch, "events", "job.1", ["a", "b", "c"])  # exchange, binding, queue
            assert get_bodies(ch, "jobs") == [b"b", b"c"]  # policy max-length 2 < argument 100
            ch.basic_publish("amq.fanout", "job.2", b"e2e")  # exchange-to-exchange binding
            assert get_bodies(ch, "jobs") == [b"e2e"]
            assert ready_count(ch, "from-file") == 0  # from [broker] definitions
            assert ready_count(ch, "audit") == 0
            with pytest.raises(ChannelClosedByBroker) as info:  # plugin 'fair' is blocked
                ch.queue_declare("q", arguments={"x-dispatch": "fair"})
            assert_reply(info.value, 406, "unknown dispatch policy 'fair'")
            big = connection.channel()
            with pytest.raises(ChannelClosedByBroker) as info:  # [broker] max_message_size
                big.basic_publish("", "audit", b"x" * 1001)
                big.queue_declare("audit", passive=True)
            assert info.value.reply_code == 406


@pytest.mark.parametrize(
    ("text", "line", "message"),
    [
        ("[broker]\nheartbeat = 'sixty'\n", 2,
         """broker.heartbeat: expected an integer from 0 to 65535, got "sixty\""""),
        ("[broker]\nheartbeat = 70000\n", 2, "broker.heartbeat: expected an integer from 0 to"),
        ("[broker]\nheartbeat = true\n", 2, "broker.heartbeat: expected an integer"),
        ("[broker]\n\nhartbeat = 5\n", 3,
         "broker.hartbeat: unknown key in [broker] (expected one of: auth_mechanisms, "
         "channel_max,"),
        ("[broker]\nmemory_high_watermark = 2\n", 2,
         "broker.memory_high_watermark: expected a number from 0 to 1, got 2"),
        ("[broker]\n\ndisk_free_limit = 'lots'\n", 3,
         "broker.disk_free_limit: expected bytes, or a number with a unit: kB, MB, GB, TB "
         "(powers of 1000), KiB, MiB, GiB, TiB, got \"lots\""),
        ("[broker]\ndisk_free_limit = -1\n", 2, "broker.disk_free_limit: expected bytes"),
        ("[broker]\ndisk_free_limit = 1.5\n", 2, "broker.disk_free_limit: expected bytes"),
        ("[broker]\ndisk_free_limit_relative = 0\n", 2,
         "broker.disk_free_limit_relative: expected a number above 0, got 0"),
        ("[broker]\ndisk_free_limit = '1GB'\ndisk_free_limit_relative = 2\n", 3,
         "broker.disk_free_limit_relative: give disk_free_limit (bytes) or "
         "disk_free_limit_relative (of RAM), not both"),
        ("[broker]\ndisk_check_interval = 0\n", 2,
         "broker.disk_check_interval: expected a number above 0, got 0"),
        ("[broker]\nlog_level = 'chatty'\n", 2,
         "broker.log_level: expected one of: debug, info, warning, error"),
        ("[broker]\ndefault_dispatch = 'random'\n", 2,
         "broker.default_dispatch: expected a registered dispatch policy (fair, round-robin)"),
        ("[user]\nname = 'bob'\n", 1, "user: unknown section (expected one of: bindings,"),
        ("[users]\nname = 'bob'\n", 2, "users.name: expected a table, got str 'bob'"),
        ("[users.bob]\npassword = 'x'\n\n[users.al]\ntags = 'x'\npasword = 'y'\n", 6,
         "users.al.pasword: unknown key (expected one of: password, password_hash,"),
        ("[users.bob]\n\npassword_hash = 'abc'\n", 3,
         "users.bob.password_hash: "),
        ("[users.bob]\npassword = 'x'\n[[permissions]]\nuser = 'bob'\nconfigure = '('\n"
         "write = ''\nread = ''\n", 5,
         "permissions[0].configure: invalid regular expression '('"),
        ("[users.bob]\npassword = 'x'\n[[permissions]]\nuser = 'al'\nconfigure = ''\n"
         "write = ''\nread = ''\n", 4, "permissions[0].user: no user 'al' in [users] or the"),
        ("[[permissions]]\nuser = 'guest'\nvhost = 'prod'\nconfigure = ''\nwrite = ''\n"
         "read = ''\n", 3, "permissions[0].vhost: no virtual host 'prod' (add it to [[vhosts]]"),
        ("[[permissions]]\nvhost = '/'\n", 1, "permissions[0]: missing key 'user'"),
        ("[[listeners]]\nport = 1\n[[listeners]]\nport = 99999\n", 4,
         "listeners[1].port: expected an integer from 0 to 65535, got 99999"),
        ("[[listeners]]\ntransport = 'quic'\n", 2,
         "listeners[0].transport: no transport 'quic' is registered (registered: tcp, websocket)"),
        ("[[listeners]]\n[listeners.tls]\nkeyfile = 'k.pem'\n", 2,
         "listeners[0].tls: missing key 'certfile' in [listeners.tls]"),
        ("[[listeners]]\n[listeners.tls]\n\ncertfile = 'c.pem'\n", 4,
         "listeners[0].tls.certfile: no such file: "),
        ("[[listeners]]\n[listeners.tls]\ncertfile = 'c'\nkeyfile = 'k'\nverify_peer = true\n", 5,
         "listeners[0].tls.verify_peer: verify_peer = true needs a cafile"),
        ("[plugins]\nblocked = ['fair', 'nope']\n", 2,
         """plugins.blocked[1]: no installed plugin is named "nope" (installed:"""),
        ("[plugins]\nblocked = ['topic']\n", 2, "plugin 'topic' is essential"),
        ("[plugins.demo]\ncolour = 'red'\n", 2,
         "plugins.demo.colour: unknown key in [plugins.demo] (expected one of: color, size)"),
        ("[plugins.demo]\ncolor = 'green'\n", 2,
         """plugins.demo.color: expected one of: blue, red, got "green\""""),
        ("[plugins.other]\nx = 1\n", 1,
         "plugins.other: no loaded plugin has a config section 'other' (sections: demo, management, mqtt-bridge)"),
        ("[[vhosts]]\ndescription = 'x'\n", 1, "vhosts[0]: missing key 'name' in [[vhosts]]"),
        ("[[policies]]\nname = 'p'\npattern = '.'\ndefinition = { message_ttl = 1 }\n", 4,
         """policies[0].definition: [{<<"message_ttl">>,1}] are not recognised policy"""),
        ("[[policies]]\nname = 'p'\npattern = '('\ndefinition = { expires = 1 }\n", 3,
         "policies[0].pattern: pattern should be regular expression but is invalid"),
        ("[[queues]]\nvhost = '/'\n", 1, "queues[0]: missing key 'name' in [[queues]]"),
        ("[[exchanges]]\nname = 'a'\ntype = 'direct'\n\n[[exchanges]]\nname = 'b'\n"
         "type = 'fanout'\ndurable = 'yes'\n", 8,
         """exchanges[1].durable: expected true or false, got "yes\""""),
        ("[[bindings]]\nsource = 'a'\ndestination = 'b'\nvhost = 'prod'\n", 4,
         "bindings[0].vhost: no virtual host 'prod' (add it to [[vhosts]]; known: /)"),
        ("[broker]\ndefinitions = 'missing.json'\n", 2,
         "broker.definitions: cannot read definitions file"),
    ],
)  # fmt: skip
def test_each_mistake_names_the_file_line_key_and_expectation(
    tmp_path: Path, text: str, line: int, message: str
) -> None:
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        config.load(path, plugins=[DemoPlugin()])
    assert str(info.value).startswith(f"{path}, line {line}: "), str(info.value)
    assert message in str(info.value)


@pytest.mark.parametrize(
    ("value", "limit"),
    [("52428800", 52428800), ('"50MB"', 50_000_000), ('"50mb"', 50_000_000),
     ('"2GiB"', 2 * 2**30), ('"1 GB"', 10**9), ('"512k"', 512_000), ("0", 0)],
)  # fmt: skip
def test_disk_free_limit_takes_bytes_or_a_size_with_a_unit(
    tmp_path: Path, value: str, limit: int
) -> None:
    path = write(tmp_path, f"[broker]\ndisk_free_limit = {value}\n")
    settings = config.load(path).settings
    assert (settings.disk_free_limit, settings.disk_free_limit_relative) == (limit, None)


def test_disk_free_limit_relative_and_the_flag_over_it(tmp_path: Path) -> None:
    path = write(tmp_path, "[broker]\ndisk_free_limit_relative = 1.5\ndisk_check_interval = 2\n")
    settings = config.load(path).settings
    assert (settings.disk_free_limit_relative, settings.disk_check_interval) == (1.5, 2.0)
    args = _parser().parse_args(["run", "--config", str(path), "--disk-free-limit", "1GB"])
    settings = settings_for(args)[0]
    assert (settings.disk_free_limit, settings.disk_free_limit_relative) == (10**9, None)
    assert settings_for(_parser().parse_args(["run"]))[0].disk_free_limit == 50_000_000


def test_a_toml_syntax_error_shows_tomllib_line_and_column(tmp_path: Path) -> None:
    path = write(tmp_path, "[broker]\nheartbeat = 5\nlog_level info\n")
    with pytest.raises(ConfigError) as info:
        config.load(path)
    assert str(info.value).startswith(f"{path}: invalid TOML: ")
    assert "(at line 3, column 11)" in str(info.value)


def test_a_definitions_file_may_create_the_vhost_the_config_uses(tmp_path: Path) -> None:
    (tmp_path / "rabbit.json").write_text(RABBIT)
    path = write(
        tmp_path,
        """
        [broker]
        definitions = "rabbit.json"
        [[queues]]
        name = "mine"
        vhost = "staging"
        """,
    )
    assert config.load(path).settings.definitions[-1].queues[0]["vhost"] == "staging"


def test_a_missing_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=f"cannot read config file {tmp_path}/nope.toml"):
        config.load(tmp_path / "nope.toml")


def test_key_lines_follow_arrays_of_tables_and_dotted_keys() -> None:
    text = textwrap.dedent(
        """
        [[listeners]]
        port = 1
        [[listeners]]
        tls.certfile = "x"
        "port" = 2
        [plugins.my-plugin]
        size = 3
        """
    )
    lines = config.key_lines(text)
    assert lines[("listeners", 0, "port")] == 3
    assert lines[("listeners", 1, "tls", "certfile")] == 5
    assert lines[("listeners", 1, "port")] == 6
    assert lines[("plugins", "my-plugin", "size")] == 8


def test_flags_override_the_file(tmp_path: Path) -> None:
    certificates = make_certificates(tmp_path)
    path = write(
        tmp_path,
        """
        [broker]
        heartbeat = 17
        default_dispatch = "fair"
        memory_high_watermark = 0.3
        data_dir = "state"
        log_level = "warning"

        [plugins]
        blocked = ["fair"]

        [[listeners]]
        host = "::1"
        port = 7000
        [listeners.tls]
        certfile = "server.crt"
        keyfile = "server.key"

        [[listeners]]
        port = 7001
        """,
    )
    path.write_text(path.read_text().replace('default_dispatch = "fair"\n', ""))
    args = _parser().parse_args(
        ["run", "--config", str(path), "--port", "7100", "--heartbeat", "5",
         "--memory-high-watermark", "0.2", "--data-dir", "/elsewhere", "--log-level", "debug",
         "--block-plugin", "round-robin", "--default-dispatch", "round-robin",
         "--tls-port", "7002", "--tls-ca", str(certificates.ca), "--tls-verify-peer"]
    )  # fmt: skip
    settings, log_level = settings_for(args)
    assert settings.heartbeat == 5
    assert settings.memory_high_watermark == 0.2
    assert settings.data_dir == Path("/elsewhere")
    assert log_level == "debug"
    assert settings.blocked_plugins == {"fair", "round-robin"}  # added to the file's list
    assert settings.default_dispatch == "round-robin"
    assert settings.listeners is not None
    assert [(spec.host, spec.port) for spec in settings.listeners] == [
        ("::1", 7002),  # the TLS listener keeps its address, takes --tls-port
        ("127.0.0.1", 7100),  # the first plain AMQP listener takes --port
    ]
    assert settings.listeners[0].tls == TLSOptions(
        certificates.server_cert,  # from the file, relative to it
        certificates.server_key,
        cafile=certificates.ca,  # from the flags
        verify_peer=True,
    )
    without = settings_for(_parser().parse_args(["run", "--config", str(path)]))[0]
    assert without.heartbeat == 17
    assert without.data_dir == tmp_path / "state"  # relative to the config file
    assert settings_for(_parser().parse_args(["run", "--config", str(path)]))[1] == "warning"


def test_host_and_port_flags_add_a_listener_if_the_file_has_no_plain_one(tmp_path: Path) -> None:
    tls = TLSOptions(Path("c.pem"))
    settings = Settings(listeners=[ListenerSpec("tcp", "amqp", "::1", 5671, tls=tls)])
    override_address(settings, None, 6000)
    assert settings.listeners is not None
    assert [(s.host, s.port) for s in settings.listeners] == [("::1", 5671), ("127.0.0.1", 6000)]


def test_run_with_a_config_file_and_a_port_flag(tmp_path: Path) -> None:
    port = free_port()
    path = write(
        tmp_path,
        """
        [broker]
        log_level = "info"
        [[listeners]]
        port = 1
        [[vhosts]]
        name = "staging"
        [[permissions]]
        user = "guest"
        vhost = "staging"
        configure = ""
        write = ""
        read = ".*"
        [[queues]]
        name = "ready"
        vhost = "staging"
        """,
    )
    process = subprocess.Popen(
        [
            sys.executable, "-m", "warrenmq", "run", "--config", str(path), "--port", str(port),
            "--data-dir", str(tmp_path / "data"),
        ],
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    assert process.stderr is not None
    try:
        line = LineReader(process.stderr).wait_for("listening", TIMEOUT)
        assert f"127.0.0.1:{port}" in line
        url = SimpleNamespace(url=f"amqp://guest:guest@127.0.0.1:{port}/staging")
        connection = connect(url)
        assert ready_count(connection.channel(), "ready") == 0
        connection.close()
    finally:
        process.terminate()
        process.wait(TIMEOUT)


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_run_with_a_bad_config_exits_2_naming_the_file(tmp_path: Path) -> None:
    path = write(tmp_path, "[broker]\nheartbeat = -1\n")
    result = warrenmq_command("run", "--config", str(path))
    assert result.returncode == 2
    assert f"{path}, line 2: broker.heartbeat: expected an integer from 0 to 65535" in result.stderr
    assert "listening" not in result.stderr
    assert "Traceback" not in result.stderr


def test_config_check_exit_status_and_summary(tmp_path: Path) -> None:
    (tmp_path / "rabbit.json").write_text(RABBIT)
    good = write(tmp_path, FULL.replace('[plugins.demo]\ncolor = "red"\n', ""))
    result = warrenmq_command("config", "check", str(good))
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[0] == f"{good}: ok"
    assert "vhosts: /, staging" in result.stdout
    assert "blocked plugins: fair" in result.stdout
    assert "definitions from" in result.stdout and "1 queue" in result.stdout

    bad = write(tmp_path, "[broker]\nframe_max = 10\n", "bad.toml")
    result = warrenmq_command("config", "check", str(bad))
    assert result.returncode == 2
    assert result.stdout == ""
    assert f"{bad}, line 2: broker.frame_max: expected an integer from 4096" in result.stderr

    result = warrenmq_command("config", "check", str(tmp_path / "missing.toml"))
    assert result.returncode == 2
    assert "cannot read config file" in result.stderr


def test_a_third_party_plugin_section_is_checked_by_config_check(tmp_path: Path) -> None:
    site = install_distribution(
        tmp_path / "site",
        "warrenmq-sized",
        "1.0",
        {"sized": "warrenmq_sized"},
        {
            "warrenmq_sized": """
            from warrenmq import hookimpl
            from warrenmq.config import ConfigSection, Key

            @hookimpl
            def warrenmq_register_config_sections(registry):
                registry.add(ConfigSection("sized", {"limit": Key(int, 10, "a limit")}))
            """
        },
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(site), *sys.path])}
    good = write(tmp_path, "[plugins.sized]\nlimit = 5\n")
    result = warrenmq_command("config", "check", str(good), env=env)
    assert result.returncode == 0, result.stderr
    assert "plugin section: sized" in result.stdout
    bad = write(tmp_path, "[plugins.sized]\n# the limit\nlimmit = 5\n", "bad.toml")
    result = warrenmq_command("config", "check", str(bad), env=env)
    assert result.returncode == 2
    assert (
        f"{bad}, line 3: plugins.sized.limmit: unknown key in [plugins.sized] "
        "(expected one of: limit)" in result.stderr
    )
    blocked = write(tmp_path, "[plugins]\nblocked = ['sized']\n[plugins.sized]\nlimmit = 5\n")
    result = warrenmq_command("config", "check", str(blocked), env=env)
    assert result.returncode == 0, result.stderr  # a blocked plugin's section is not checked


def test_enabled_lists_the_only_optional_plugins(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "[broker]\nstore = 'memory'\n"
        "[plugins]\nenabled = ['amqp', 'tcp', 'memory-store', 'round-robin']\n",
    )
    settings = config.load(path).settings
    assert "fair" in settings.blocked_plugins
    assert "topic" not in settings.blocked_plugins  # essential ones always load


def test_an_empty_file_gives_the_default_broker(tmp_path: Path) -> None:
    settings = config.load(write(tmp_path, "")).settings
    assert settings == Settings(store="disk")  # a configured broker keeps its state


def test_docs_list_every_key() -> None:
    text = (Path(__file__).resolve().parent.parent / "docs" / "configuration.md").read_text()
    tables = [
        config.BROKER_KEYS, config.LISTENER_KEYS, config.TLS_KEYS, config.PLUGINS_KEYS,
        config.VHOST_KEYS, config.POLICY_KEYS, config.EXCHANGE_KEYS, config.QUEUE_KEYS,
        config.BINDING_KEYS,
    ]  # fmt: skip
    missing = [key for table in tables for key in table if f"| `{key}` |" not in text]
    assert not missing, f"docs/configuration.md has no row for {missing}"
    for section in config.TOP_LEVEL:
        assert f"`[{section}]`" in text or f"`[[{section}]]`" in text or section in text


def test_pika_sees_the_config_vhost_only_when_listed(tmp_path: Path) -> None:
    settings = config.load(write(tmp_path, "")).settings
    settings.amqp_port = 0
    settings.data_dir = tmp_path / "data"
    with running_broker(settings) as running:
        url = SimpleNamespace(url=f"amqp://guest:guest@127.0.0.1:{running.port}/staging")
        with pytest.raises(pika.exceptions.AMQPConnectionError):
            connect(url)


def test_a_section_handler_takes_users_and_reports_with_the_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The extension point for users and permissions: a handler registered for a top-level
    section checks it, keeps what it needs, and its problems get the file and line."""
    seen: list[Any] = []

    def users(value: Any, settings: Settings, path: config.KeyPath) -> None:
        for index, user in enumerate(value):
            if "password" not in user:
                raise config.ConfigProblem((*path, index), "missing key 'password'")
        seen.extend(value)

    monkeypatch.setitem(config.SECTION_HANDLERS, "users", users)
    good = write(tmp_path, "[[users]]\nname = 'bob'\npassword = 'x'\n")
    config.load(good)
    assert seen == [{"name": "bob", "password": "x"}]
    bad = write(tmp_path, "[broker]\n\n[[users]]\nname = 'bob'\n", "bad.toml")
    with pytest.raises(ConfigError, match=r"bad.toml, line 3: users\[0\]: missing key 'password'"):
        config.load(bad)


def test_embedding_with_an_unknown_plugin_section_is_refused() -> None:
    from warrenmq import Broker
    from warrenmq.errors import PluginError

    with pytest.raises(PluginError, match="no loaded plugin has a config section 'nope'"):
        Broker(Settings(plugin_config={"nope": {}}))
    broker = Broker(Settings(plugin_config={"demo": {"size": 9}}), plugins=[DemoPlugin()])
    assert broker.plugin_config("demo") == {"color": "blue", "size": 9}


def test_every_settings_field_has_a_config_key() -> None:
    """Every setting can come from the file: a new ``Settings`` field needs a key here."""
    import dataclasses

    elsewhere = {
        "host": "listeners",
        "amqp_port": "listeners",
        "listeners": "listeners",
        "blocked_plugins": "plugins.blocked",
        "loaded_plugins": "filled by config.load itself",
        "vhosts": "vhosts",
        "vhost_limits": "vhosts[].limits",
        "definitions": "broker.definitions and the topology sections",
        "plugin_config": "plugins.NAME",
        "memory_gauge": "a callable, for embedding and tests only",
        "disk_free_gauge": "a callable, for embedding and tests only",
        # TLS in the file is a [[listeners]] table with a tls table, as host and amqp_port
        "tls_port": "listeners",
        "mqtt_port": "listeners",
        "mqtt_tls_port": "listeners",
        "ws_port": "listeners",
        "ws_path": "listeners[].path",
        "tls": "listeners.tls",
        "access": "users and permissions",
    }
    fields = {field.name for field in dataclasses.fields(Settings)}
    missing = sorted(fields - set(config.BROKER_KEYS) - set(elsewhere))
    assert not missing, f"Settings fields without a config key: {missing}"
    # a broker made from a file (or by `warrenmq run`) keeps its state on disk by default;
    # Settings() in code (tests, embedding) keeps nothing unless asked
    different = {
        "store": ("disk", "memory"),
        "auth_mechanisms": (["PLAIN", "AMQPLAIN"], ("PLAIN", "AMQPLAIN")),  # a TOML list
    }
    for name, key in config.BROKER_KEYS.items():
        if name in different:
            assert (key.default, getattr(Settings(), name)) == different[name]
        elif name in fields and name not in elsewhere:
            assert key.default == getattr(Settings(), name), f"default of broker.{name}"


def test_a_declaration_the_broker_refuses_is_reported_with_its_line(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """
        [[queues]]
        name = "fine"

        [[queues]]
        name = "jobs"
        arguments = { x-max-length = "5" }
        """,
    )
    expected = (
        f"{path}, line 4: queues[1]: queue 'jobs' in vhost '/': invalid arg 'x-max-length' "
        """for queue 'jobs' in vhost '/': "expected integer, got longstr\""""
    )
    checked = warrenmq_command("config", "check", str(path))
    assert checked.returncode == 2
    assert expected in checked.stderr
    ran = warrenmq_command("run", "--config", str(path), "--port", "0")
    assert ran.returncode == 2
    assert expected in ran.stderr
    assert "listening" not in ran.stderr


def test_users_and_permissions_of_the_config_file_log_in(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        f"""
        [broker]
        loopback_users = []

        [[vhosts]]
        name = "staging"

        [users.alice]
        password_hash = "{hash_password("alice-pw", TEST_ITERATIONS)}"
        tags = ["administrator"]

        [users.bob]
        password = "bob-pw"

        [[permissions]]
        user = "alice"
        vhost = "staging"
        configure = "^alice\\\\."
        write = ".*"
        read = ".*"
        """,
    )
    loaded = config.load(path)
    assert "bob-pw" not in repr(loaded.settings.access)  # hashed when read
    assert "users: alice, bob" in loaded.summary()
    assert loaded.settings.loopback_users == frozenset()
    settings = loaded.settings
    settings.listeners = [ListenerSpec("tcp", "amqp", "127.0.0.1", 0)]
    with running_broker(settings) as running:
        alice = login_as(running.host, running.port, "alice", "alice-pw", vhost="staging")
        channel = alice.channel()
        channel.queue_declare("alice.jobs")
        with pytest.raises(ChannelClosedByBroker) as info:
            channel.queue_declare("jobs")
        assert_reply(info.value, 403, "configure access to queue 'jobs' in vhost 'staging'")
        alice.close()
        refused(running.host, running.port, "bob", "bob-pw", vhost="staging")  # no permission
        refused(running.host, running.port, "guest", "guest")  # the config's users replace it
