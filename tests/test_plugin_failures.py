"""A broken third-party plugin is reported by name and skipped; the broker still serves.

The broken packages are real installed distributions (a ``*.dist-info`` with entry points, as
pip leaves them) on ``sys.path`` or ``PYTHONPATH``. An essential plugin that fails still stops
start-up.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pika
import pytest
from dists import install_distribution
from line_reader import LineReader
from pika_helpers import connection_parameters

import warrenmq
from warrenmq import config, plugin_loader
from warrenmq.errors import PluginError
from warrenmq.testing import running_broker

pytestmark = pytest.mark.warrenmq_only

TIMEOUT = 10.0

IMPORT_FAILS = """
import warrenmq_module_that_is_not_installed  # noqa: F401
"""

REGISTER_FAILS = """
from warrenmq import DispatchPolicy, hookimpl


class Half(DispatchPolicy):
    name = "half-registered"


@hookimpl
def warrenmq_register_dispatch_policies(registry):
    registry.add(Half)  # registered first ...


@hookimpl
def warrenmq_register_stores(registry):
    raise RuntimeError("the disk is on fire")  # ... then the plugin fails
"""

STARTUP_FAILS = """
from warrenmq import hookimpl


@hookimpl
def warrenmq_startup(broker):
    raise OSError("cannot reach the license server")
"""

UNKNOWN_HOOK = """
from warrenmq import hookimpl


@hookimpl
def warrenmq_register_widgets(registry):
    raise AssertionError("never called")
"""

BROKEN = {
    # entry-point name: (module source, what the report says)
    "import-fails": (IMPORT_FAILS, "failed to load: ModuleNotFoundError"),
    "register-fails": (
        REGISTER_FAILS,
        "failed in warrenmq_register_stores: RuntimeError: the disk is on fire",
    ),
    "unknown-hook": (UNKNOWN_HOOK, "implements an unknown hook warrenmq_register_widgets"),
}


@pytest.fixture
def broken_site(tmp_path: Path) -> Path:
    """One distribution, ``warrenmq-broken 0.1``, with a plugin broken in each way."""
    return install_distribution(
        tmp_path,
        "warrenmq-broken",
        "0.1",
        {name: f"broken_{name.replace('-', '_')}" for name in BROKEN},
        {f"broken_{name.replace('-', '_')}": source for name, (source, _) in BROKEN.items()},
    )


def _env(site: Path) -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(site)}


def test_plugins_command_shows_each_failed_plugin_with_its_reason(broken_site: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "warrenmq", "plugins"],
        env=_env(broken_site),
        cwd=broken_site,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    table, _, failed = result.stdout.partition("\nFAILED")
    assert re.search(r"exchange type\s+direct\s+direct\s+warrenmq", table)
    assert "half-registered" not in table, "what a failed plugin registered is dropped"
    for name, (_, reason) in BROKEN.items():
        line = next((row for row in failed.splitlines() if f" {name} " in row), None)
        assert line is not None, f"{name} not reported as failed:\n{result.stdout}"
        assert line.startswith("failed  ")
        assert "(warrenmq-broken 0.1)" in line
        assert reason in line


def test_run_skips_broken_plugins_and_serves(broken_site: Path) -> None:
    process = subprocess.Popen(
        [sys.executable, "-m", "warrenmq", "run", "--port", "0"],
        env=_env(broken_site),
        cwd=broken_site,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert process.stderr is not None
    reader = LineReader(process.stderr)
    try:
        listening = reader.wait_for("listening for amqp")
        port = int(listening.rsplit(":", 1)[1])
        for name, (_, reason) in BROKEN.items():
            assert re.search(
                rf"ERROR .*plugin {name} \(warrenmq-broken 0\.1\): .*; skipped", reader.text
            )
            assert reason in reader.text
        connection = pika.BlockingConnection(
            pika.ConnectionParameters("127.0.0.1", port, connection_attempts=1)
        )
        channel = connection.channel()
        channel.confirm_delivery()
        channel.queue_declare("still-serving", exclusive=True)
        channel.basic_publish("", "still-serving", b"hello")
        method, _, body = channel.basic_get("still-serving", auto_ack=True)
        assert body == b"hello"
        connection.close()
        assert process.poll() is None
    finally:
        process.terminate()
        process.wait(TIMEOUT)


def test_a_startup_hook_that_raises_is_reported_and_the_broker_serves(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    site = install_distribution(
        tmp_path, "warrenmq-licensed", "2.0", {"licensed": "licensed"}, {"licensed": STARTUP_FAILS}
    )
    monkeypatch.syspath_prepend(str(site))
    with running_broker() as running:
        failed = running.broker.plugins.failed
        assert [f.name for f in failed] == ["licensed"]
        assert failed[0].describe() == (
            "licensed (warrenmq-licensed 2.0): failed in warrenmq_startup: "
            "OSError: cannot reach the license server"
        )
        connection = pika.BlockingConnection(connection_parameters(running))
        assert connection.channel().queue_declare("", exclusive=True).method.queue
        connection.close()


def test_broken_entry_points_are_skipped_in_process(
    broken_site: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.syspath_prepend(str(broken_site))
    broker = warrenmq.Broker(warrenmq.Settings(amqp_port=0))
    assert sorted(f.name for f in broker.plugins.failed) == sorted(BROKEN)
    assert "half-registered" not in broker.dispatch_policies
    loaded = {p.name for p in broker.plugins.loaded}
    assert not loaded & set(BROKEN)
    assert not any(broker.plugins.manager.has_plugin(name) for name in BROKEN)


def test_an_essential_plugin_that_fails_still_stops_start_up(
    broken_site: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.syspath_prepend(str(broken_site))
    monkeypatch.setattr(plugin_loader, "ESSENTIAL", plugin_loader.ESSENTIAL | {"import-fails"})
    with pytest.raises(PluginError, match="plugin 'import-fails' .* failed to load"):
        warrenmq.Broker(warrenmq.Settings(amqp_port=0))


def test_a_missing_default_names_the_plugin_that_failed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The package that would have registered the default dispatch policy failed to load."""
    site = install_distribution(
        tmp_path,
        "warrenmq-broken-default",
        "0.2",
        {"my-default": "broken_import_fails"},
        {"broken_import_fails": IMPORT_FAILS},
    )
    monkeypatch.syspath_prepend(str(site))
    with pytest.raises(PluginError) as info:
        warrenmq.Broker(warrenmq.Settings(amqp_port=0, default_dispatch="mine"))
    text = str(info.value)
    assert "default dispatch policy 'mine' is not registered" in text
    assert "my-default (warrenmq-broken-default 0.2): failed to load" in text


def test_the_config_section_of_a_failed_plugin_does_not_stop_the_broker(
    broken_site: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Its section cannot be checked without the plugin: it is kept aside, as a blocked
    plugin's is. A section that matches no plugin is still an error, which names the plugins
    that failed (the section may be theirs)."""
    monkeypatch.syspath_prepend(str(broken_site))
    path = tmp_path / "broker.toml"
    path.write_text("[plugins.import-fails]\nlimit = 5\n")
    settings = config.load(path).settings
    settings.amqp_port = 0
    with running_broker(settings) as running:
        assert "import-fails" in {failure.name for failure in running.broker.plugins.failed}
        connection = pika.BlockingConnection(connection_parameters(running))
        assert connection.channel().queue_declare("", exclusive=True).method.queue
        connection.close()
    path.write_text("[plugins.imports-fail]\nlimit = 5\n")
    with pytest.raises(config.ConfigError) as info:
        config.load(path)
    assert "no loaded plugin has a config section 'imports-fail'" in str(info.value)
    assert "plugins that failed: import-fails (warrenmq-broken 0.1)" in str(info.value)


def test_a_service_that_fails_is_logged_and_the_others_and_the_broker_go_on(
    caplog: pytest.LogCaptureFixture,
) -> None:
    import threading

    import anyio

    ran = threading.Event()

    class Services:
        @warrenmq.hookimpl
        def warrenmq_start_services(self, broker: object, services: object) -> None:
            async def fails() -> None:
                raise RuntimeError("the remote is on fire")

            async def works() -> None:
                ran.set()
                await anyio.sleep_forever()

            services.start_soon(fails, name="failing service")  # type: ignore[attr-defined]
            services.start_soon(works, name="working service")  # type: ignore[attr-defined]

    with running_broker(plugins=[Services()]) as running:
        assert ran.wait(TIMEOUT)
        with pika.BlockingConnection(connection_parameters(running)) as connection:
            assert connection.channel().queue_declare("", exclusive=True).method.queue
    assert "service 'failing service' failed: RuntimeError: 'the remote is on fire'" in caplog.text
