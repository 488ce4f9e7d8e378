"""A real mosquitto per test, on a free loopback port, for the MQTT bridge's tests: started and
stopped (and started again on the same port) by the test, with optional users, TLS and more
configuration (a bridge of its own); and the check that two bridged brokers make no loop.

mosquitto is a system package (``apt-get install mosquitto``; .ci/run installs it). Without it
the tests skip, except in CI (``CI`` set), where they fail: CI must run them.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import pytest
from mqtt_helpers import Client, MQTTAddress

TIMEOUT = 10.0


def mosquitto_program() -> str:
    """The mosquitto executable; skips the test if there is none (fails under CI)."""
    found = shutil.which("mosquitto") or next(
        (p for p in ("/usr/sbin/mosquitto", "/usr/local/sbin/mosquitto") if os.path.exists(p)),
        None,
    )
    if found is None:
        message = "mosquitto is not installed (apt-get install mosquitto)"
        if os.environ.get("CI"):
            pytest.fail(message + "; CI must run the bridge tests")
        pytest.skip(message)
    return found


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for(condition: Callable[[], object], what: str, timeout: float = TIMEOUT) -> None:
    """Poll ``condition`` until it is true; fail the test after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.02)


def _accepts(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


class Mosquitto:
    """One mosquitto with a plain listener (``port``) and, given certificates, a TLS one
    (``tls_port``) that requires a client certificate from the same CA."""

    def __init__(
        self,
        directory: Path,
        *,
        users: dict[str, str] | None = None,
        certificates: object | None = None,
        persistence: bool = True,
        extra: Sequence[str] = (),
    ) -> None:
        self.program = mosquitto_program()
        self.directory = directory
        directory.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.tls_port = free_port() if certificates is not None else None
        self.process: subprocess.Popen[bytes] | None = None
        self.log = directory / "mosquitto.log"
        # as root, mosquitto would switch to its own user, who cannot write the test's folders
        lines = ["user root"] if os.geteuid() == 0 else []
        # mosquitto drops messages past 1000 queued for a slow subscriber by default: the
        # tests count every message, so the checking subscribers get no such limit
        lines += ["max_queued_messages 0"]
        if users:
            password_file = directory / "passwords"
            password_file.write_text("")
            for user, password in users.items():
                subprocess.run(
                    ["mosquitto_passwd", "-b", str(password_file), user, password], check=True
                )
            lines += ["per_listener_settings false", "allow_anonymous false"]
            lines += [f"password_file {password_file}"]
        else:
            lines += ["allow_anonymous true"]
        if persistence:
            (directory / "db").mkdir(exist_ok=True)
            lines += ["persistence true", f"persistence_location {directory / 'db'}/"]
        lines += [f"listener {self.port} 127.0.0.1"]
        if certificates is not None:
            lines += [
                f"listener {self.tls_port} 127.0.0.1",
                f"cafile {certificates.ca}",  # type: ignore[attr-defined]
                f"certfile {certificates.server_cert}",  # type: ignore[attr-defined]
                f"keyfile {certificates.server_key}",  # type: ignore[attr-defined]
                "require_certificate true",
            ]
        lines += extra  # last: a bridge's `connection` section takes the lines after it
        self.config = directory / "mosquitto.conf"
        self.config.write_text("\n".join(lines) + "\n")

    @property
    def address(self) -> MQTTAddress:
        return MQTTAddress("127.0.0.1", self.port)

    def start(self) -> None:
        with self.log.open("ab") as log:
            self.process = subprocess.Popen(
                [self.program, "-c", str(self.config)], stdout=log, stderr=subprocess.STDOUT
            )
        ports = [self.port] + ([self.tls_port] if self.tls_port else [])

        def ready() -> bool:
            assert self.process is not None
            if self.process.poll() is not None:
                pytest.fail(f"mosquitto exited: {self.log.read_text(errors='replace')[-2000:]}")
            return all(_accepts(port) for port in ports)

        wait_for(ready, "mosquitto to listen")

    def stop(self) -> None:
        """SIGTERM: mosquitto saves its persistent sessions and exits."""
        if self.process is None:
            return
        self.process.terminate()
        try:
            self.process.wait(TIMEOUT)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(TIMEOUT)
        self.process = None


def drain(client: Client) -> list[tuple[str, bytes]]:
    """Whatever ``client`` has received so far."""
    found = []
    while not client.messages.empty():
        message = client.messages.get_nowait()
        found.append((message.topic, message.payload))
    return found


def exchange_both_ways(local: Client, remote: Client, local_pub: Client, remote_pub: Client):
    """Publish on each side; once both sides have both, an end marker from each side, which
    comes after any copy that went back or round (each path is in order); then each side must
    have had each message exactly once."""
    seen: dict[Client, list[tuple[str, bytes]]] = {local: [], remote: []}

    def wait_for_all(wanted: set[tuple[str, bytes]]) -> None:
        for side, found in seen.items():

            def arrived(side: Client = side, found: list[tuple[str, bytes]] = found) -> bool:
                found.extend(drain(side))
                return wanted <= set(found)

            wait_for(arrived, f"{sorted(wanted)} on both sides")

    local_pub.publish("loop/from-local", b"1", qos=1)
    remote_pub.publish("loop/from-remote", b"2", qos=1)
    wait_for_all({("loop/from-local", b"1"), ("loop/from-remote", b"2")})
    local_pub.publish("loop/end-local", b"3", qos=1)
    remote_pub.publish("loop/end-remote", b"4", qos=1)
    wait_for_all({("loop/end-local", b"3"), ("loop/end-remote", b"4")})
    for found in seen.values():
        assert sorted(found) == [
            ("loop/end-local", b"3"),
            ("loop/end-remote", b"4"),
            ("loop/from-local", b"1"),
            ("loop/from-remote", b"2"),
        ], "a message came back or went round"
