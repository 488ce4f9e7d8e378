"""``warrenmq.testing.running_broker`` as a plugin author or an embedding application uses it:
when the broker cannot start, the caller gets the reason, not an error of the helper."""

from __future__ import annotations

import errno
import socket

import pytest

from warrenmq import ListenerSpec, Settings
from warrenmq.errors import PluginError
from warrenmq.testing import running_broker


def test_a_busy_port_is_an_os_error_naming_the_address() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(OSError) as info, running_broker(Settings(amqp_port=port)):
            pytest.fail("the broker started on a port that is in use")
    assert info.value.errno == errno.EADDRINUSE
    assert f"cannot listen on 127.0.0.1:{port}: " in str(info.value)
    assert "in use" in str(info.value)


def test_a_listener_on_an_unknown_transport_is_a_plugin_error() -> None:
    settings = Settings(listeners=[ListenerSpec("quic", "amqp", "127.0.0.1", 0)])
    unknown = pytest.raises(PluginError, match="transport 'quic' is not registered")
    with unknown, running_broker(settings):
        pytest.fail("the broker started without its transport")


def test_no_listener_is_left_open_after_a_failed_start() -> None:
    with socket.socket() as free:
        free.bind(("127.0.0.1", 0))
        free_port = free.getsockname()[1]
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        busy_port = taken.getsockname()[1]
        listeners = [
            ListenerSpec("tcp", "amqp", "127.0.0.1", free_port),
            ListenerSpec("tcp", "amqp", "127.0.0.1", busy_port),
        ]
        busy = pytest.raises(OSError, match=f"127.0.0.1:{busy_port}")
        with busy, running_broker(Settings(listeners=listeners)):
            pytest.fail("the broker started on a port that is in use")
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", free_port), timeout=5).close()
