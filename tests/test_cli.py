"""The ``warrenmq`` command as a user runs it: a real process, real signals, a real client.

Nothing sleeps: the broker's stderr is read line by line (from a thread) with a deadline, and
the pika client processes I/O until the broker's close arrives or a deadline passes.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pika
import pytest
from line_reader import LineReader
from pamqp import commands
from pika.exceptions import ConnectionClosedByBroker
from pika_helpers import wait_until
from raw_amqp import RawAMQP

import warrenmq
from warrenmq.memory import physical_memory

TIMEOUT = 10.0
RUN_FLAGS = (
    "--host",
    "--port",
    "--data-dir",
    "--store",
    "--log-level",
    "--frame-max",
    "--channel-max",
    "--max-message-size",
    "--handshake-timeout",
    "--vhost-limit",
    "--user-limit",
    "--disk-free-limit",
)


def warrenmq_command(*args: str, timeout: float = 30.0) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "warrenmq", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextlib.contextmanager
def broker_process(*args: str) -> Iterator[tuple[subprocess.Popen[str], LineReader]]:
    """``warrenmq run *args`` with its default data directory under a temporary
    $XDG_DATA_HOME (never the user's own)."""
    with tempfile.TemporaryDirectory() as data_home:
        process = subprocess.Popen(
            [sys.executable, "-m", "warrenmq", "run", *args],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
            env={**os.environ, "XDG_DATA_HOME": data_home},
        )
        assert process.stderr is not None
        reader = LineReader(process.stderr)
        try:
            yield process, reader
        finally:
            if process.poll() is None:
                process.kill()
            process.wait(TIMEOUT)


# -- help and argument errors ----------------------------------------------------------------------


def test_help_lists_the_commands() -> None:
    result = warrenmq_command("--help")
    assert result.returncode == 0, result.stderr
    assert "run" in result.stdout
    assert "plugins" in result.stdout


def test_run_help_lists_the_flags() -> None:
    result = warrenmq_command("run", "--help")
    assert result.returncode == 0, result.stderr
    for flag in RUN_FLAGS:
        assert flag in result.stdout, f"{flag} missing from run --help"


def test_version_names_the_build() -> None:
    """``--version`` says whether the compiled modules are in use; CI runs the suite once with
    each build and sets WARRENMQ_EXPECT_BUILD, so a compiled run that fell back to pure Python
    (or the other way round) fails here instead of passing unnoticed."""
    result = warrenmq_command("--version")
    assert result.returncode == 0
    build = result.stdout.strip().removeprefix(f"warrenmq {warrenmq.__version__} ")
    assert build in ("(compiled)", "(pure Python)"), result.stdout
    expected = os.environ.get("WARRENMQ_EXPECT_BUILD")
    if expected:
        assert build == f"({expected})"


@pytest.mark.parametrize(
    "args",
    [
        ("run", "--no-such-flag"),
        ("--no-such-flag",),
        ("run", "--log-level", "chatty"),
        ("run", "--port", "not-a-number"),
    ],
)
def test_bad_arguments_exit_2(args: tuple[str, ...]) -> None:
    result = warrenmq_command(*args)
    assert result.returncode == 2
    assert "usage:" in result.stderr
    assert "error:" in result.stderr


@pytest.mark.parametrize(
    ("flag", "value", "complaint"),
    [
        ("--port", "99999", "not a TCP port (0 to 65535)"),
        ("--port", "65536", "not a TCP port (0 to 65535)"),
        ("--port", "-1", "not a TCP port (0 to 65535)"),
        ("--heartbeat", "-5", "not a heartbeat in seconds (0 to 65535)"),
        ("--heartbeat", "65536", "not a heartbeat in seconds (0 to 65535)"),
        ("--heartbeat", "1.5", "invalid integer: '1.5'"),
        ("--memory-high-watermark", "7", "not a fraction of RAM"),
        ("--memory-high-watermark", "-1", "not a fraction of RAM"),
        ("--memory-high-watermark", "1.01", "not a fraction of RAM"),
        ("--memory-high-watermark", "nan", "not a fraction of RAM"),
        ("--memory-high-watermark", "inf", "not a fraction of RAM"),
        ("--memory-high-watermark", "40%", "invalid fraction: '40%'"),
        ("--disk-free-limit", "fifty", "invalid size 'fifty': expected bytes, or a number with"),
        ("--disk-free-limit", "-1", "invalid size '-1'"),
        ("--disk-free-limit", "1.5GB", "invalid size '1.5GB'"),
        ("--disk-free-limit", "50XB", "invalid size '50XB'"),
        ("--frame-max", "4095", "not a frame size in bytes (4096 to 2147483647)"),
        ("--channel-max", "0", "not a number of channels (1 to 65535)"),
        ("--max-message-size", str(2**29 + 1), "not a message size in bytes (1 to 536870912)"),
        ("--handshake-timeout", "0", "0 is not a positive number of seconds"),
        ("--handshake-timeout", "soon", "invalid number of seconds: 'soon'"),
        ("--vhost-limit", "/:max-channels=1", "unknown limit 'max-channels' (known: "),
        ("--vhost-limit", "max-queues=1", "is not NAME:LIMIT=VALUE"),
        ("--user-limit", "guest:max-queues=1", "unknown limit 'max-queues' (known: "),
        ("--user-limit", "guest:max-channels=lots", "invalid integer in"),
    ],
)
def test_out_of_range_values_exit_2(flag: str, value: str, complaint: str) -> None:
    result = warrenmq_command("run", flag, value)
    assert result.returncode == 2, result.stderr
    assert "usage: warrenmq run" in result.stderr
    assert f"warrenmq run: error: argument {flag}: " in result.stderr
    assert complaint in result.stderr
    assert "listening" not in result.stderr


def test_no_command_exits_2_with_usage() -> None:
    result = warrenmq_command()
    assert result.returncode == 2
    assert "usage:" in result.stderr


def test_blocking_an_essential_plugin_is_a_clear_error() -> None:
    result = warrenmq_command("run", "--port", str(free_port()), "--block-plugin", "topic")
    assert result.returncode == 2
    assert "essential" in result.stderr
    assert "Traceback" not in result.stderr


# -- running ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_run_serves_and_closes_clients_on_signal(signum: signal.Signals) -> None:
    port = free_port()
    with broker_process("--port", str(port), "--log-level", "info") as (process, stderr):
        line = stderr.wait_for("listening")
        assert f":{port}" in line

        params = pika.ConnectionParameters(
            "127.0.0.1", port, connection_attempts=1, socket_timeout=5, blocked_connection_timeout=5
        )
        connection = pika.BlockingConnection(params)
        channel = connection.channel()
        channel.queue_declare("cli-test", exclusive=True)

        process.send_signal(signum)
        deadline = time.monotonic() + TIMEOUT
        with pytest.raises(ConnectionClosedByBroker) as info:
            while time.monotonic() < deadline:
                connection.process_data_events(time_limit=0.1)
        assert info.value.reply_code == 320
        assert "CONNECTION_FORCED" in info.value.reply_text

        assert process.wait(TIMEOUT) == 0
        log = stderr.finish()
        assert signum.name in log
        assert "Traceback" not in log


def _serve_and_stop(*args: str) -> tuple[RawAMQP, str]:
    """Start ``warrenmq run --port 0 *args``, handshake once, stop it; the client and the log."""
    with broker_process("--port", "0", *args) as (process, stderr):
        port = int(stderr.wait_for("listening").rsplit(":", 1)[1])
        with RawAMQP("127.0.0.1", port) as client:
            client.handshake()
            client.close_gracefully()
        process.send_signal(signal.SIGTERM)
        assert process.wait(TIMEOUT) == 0
        return client, stderr.finish()


def test_edge_values_are_accepted() -> None:
    client, log = _serve_and_stop("--heartbeat", "65535", "--memory-high-watermark", "1")
    assert client.tune is not None
    assert client.tune.heartbeat == 65535
    total = physical_memory()
    assert total is not None
    assert f"memory alarm at {total / 2**20:.0f} MiB held" in log


def test_heartbeat_and_watermark_zero_turn_them_off() -> None:
    client, log = _serve_and_stop("--heartbeat", "0", "--memory-high-watermark", "0")
    assert client.tune is not None
    assert client.tune.heartbeat == 0
    assert "memory alarm" not in log
    assert "Traceback" not in log


def test_limit_flags_reach_the_broker() -> None:
    client, log = _serve_and_stop(
        "--frame-max", "8192", "--channel-max", "7", "--vhost-limit", "/:max-queues=-1"
    )
    assert client.tune is not None
    assert (client.tune.frame_max, client.tune.channel_max) == (8192, 7)
    assert "Traceback" not in log
    with broker_process(
        "--port", "0", "--vhost-limit", "/:max-connections=0", "--user-limit", "a:b:max-channels=1"
    ) as (process, stderr):
        port = int(stderr.wait_for("listening").rsplit(":", 1)[1])
        with RawAMQP("127.0.0.1", port) as client:
            client.handshake(open_connection=False)
            client.send_frame(commands.Connection.Open(virtual_host="/"))
            close = client.expect_connection_close()
        assert close.reply_text.endswith("connection limit (0) is reached")
        process.send_signal(signal.SIGTERM)
        assert process.wait(TIMEOUT) == 0


def test_run_on_a_port_in_use_fails_clearly() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with broker_process("--port", str(port)) as (process, stderr):
            code = process.wait(TIMEOUT)
            log = stderr.finish()
    assert code == 1
    assert "Traceback" not in log, f"a traceback instead of a clear message:\n{log}"
    assert f"cannot listen on 127.0.0.1:{port}: Address already in use" in log


# -- the data directory ----------------------------------------------------------------------------


def test_run_keeps_its_data_under_the_user_data_directory() -> None:
    with broker_process("--port", "0") as (process, stderr):
        line = stderr.wait_for("data directory")
        stderr.wait_for("listening")
        data_dir = Path(line.split("data directory ", 1)[1].split(" (")[0])
        assert data_dir.name == "warrenmq"
        assert (data_dir / "definitions.sqlite3").exists()
        process.send_signal(signal.SIGTERM)
        assert process.wait(TIMEOUT) == 0
    log = stderr.finish()
    assert "recovered 0 durable queues with 0 persistent messages" in log


def test_a_second_broker_on_the_same_data_dir_exits_with_a_clear_message(tmp_path: Path) -> None:
    with broker_process("--port", "0", "--data-dir", str(tmp_path)) as (first, first_log):
        first_log.wait_for("listening")
        with broker_process("--port", "0", "--data-dir", str(tmp_path)) as (second, second_log):
            code = second.wait(TIMEOUT)
            log = second_log.finish()
        assert first.poll() is None
    assert code == 1
    assert "Traceback" not in log, log
    assert f"data directory {tmp_path} is in use by another broker (pid {first.pid})" in log


def test_store_memory_keeps_no_data_directory(tmp_path: Path) -> None:
    data_dir = tmp_path / "unused"
    with broker_process("--port", "0", "--store", "memory", "--data-dir", str(data_dir)) as (
        process,
        stderr,
    ):
        stderr.wait_for("listening")
        process.send_signal(signal.SIGTERM)
        assert process.wait(TIMEOUT) == 0
    assert not data_dir.exists()


def test_disk_free_limit_blocks_publishers_below_it(tmp_path: Path) -> None:
    """A limit above the disk's real free space: the broker starts with the disk alarm on and
    blocks the first publisher; 1GiB reads as 1073741824 bytes."""
    client, log = _serve_and_stop("--data-dir", str(tmp_path), "--disk-free-limit", "1GiB")
    assert f"disk alarm below 1.1 GB free on the filesystem of {tmp_path}" in log
    above = shutil.disk_usage(tmp_path).free // 10**9 + 1000  # a terabyte more than is free
    args = ("--port", "0", "--data-dir", str(tmp_path), "--disk-free-limit", f"{above}GB")
    with broker_process(*args) as (process, stderr):
        port = int(stderr.wait_for("listening").rsplit(":", 1)[1])
        assert "disk alarm: " in stderr.text and "blocking publishers" in stderr.text
        params = pika.ConnectionParameters("127.0.0.1", port, blocked_connection_timeout=5)
        publisher = pika.BlockingConnection(params)
        events: list[str] = []
        publisher.add_on_connection_blocked_callback(
            lambda _conn, frame: events.append(frame.method.reason)
        )
        publisher.channel().basic_publish("", "nowhere", b"x")
        wait_until(publisher, lambda: bool(events), "connection.blocked", TIMEOUT)
        assert events == ["low on disk"]
        process.send_signal(signal.SIGTERM)
        assert process.wait(TIMEOUT) == 0
    assert "Traceback" not in stderr.finish()
