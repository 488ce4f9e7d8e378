"""AMQP over TLS with certificates the test makes: pika connects with its ssl options, and with
verify_peer a client without a certificate (or with one from an unknown CA) is refused."""

from __future__ import annotations

import signal
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pika
import pytest
from pika.exceptions import AMQPConnectionError
from test_cli import TIMEOUT, broker_process
from tls_helpers import Certificates, make_certificates

from warrenmq import ListenerSpec, Settings, TLSOptions, config
from warrenmq.cli import _parser
from warrenmq.cli_files import settings_for
from warrenmq.errors import ConfigError
from warrenmq.testing import RunningBroker, running_broker

pytestmark = pytest.mark.warrenmq_only


@pytest.fixture(scope="module")
def certificates(tmp_path_factory: pytest.TempPathFactory) -> Certificates:
    return make_certificates(tmp_path_factory.mktemp("tls"))


@contextmanager
def tls_broker(options: TLSOptions) -> Iterator[RunningBroker]:
    """A broker with one AMQP-over-TLS listener on a free loopback port."""
    listener = ListenerSpec("tcp", "amqp", "127.0.0.1", 0, tls=options)
    with running_broker(Settings(listeners=[listener])) as running:
        yield running


def tls_parameters(port: int, ssl_options: pika.SSLOptions | None) -> pika.ConnectionParameters:
    return pika.ConnectionParameters(
        "127.0.0.1",
        port,
        ssl_options=ssl_options,
        connection_attempts=1,
        socket_timeout=5,
        stack_timeout=5,
    )


def round_trip(connection: pika.BlockingConnection) -> bytes:
    channel = connection.channel()
    queue = channel.queue_declare("", exclusive=True).method.queue
    channel.confirm_delivery()
    channel.basic_publish("", queue, b"over TLS")
    body: bytes = channel.basic_get(queue, auto_ack=True)[2]
    return body


def test_pika_connects_over_tls(certificates: Certificates) -> None:
    options = TLSOptions(certificates.server_cert, certificates.server_key)
    with tls_broker(options) as running:
        ssl_options = certificates.pika_options(with_certificate=False)
        connection = pika.BlockingConnection(tls_parameters(running.port, ssl_options))
        assert round_trip(connection) == b"over TLS"
        views = running.broker.connection_views()
        assert [view.transport for view in views] == ["tls"]
        connection.close()


def test_a_plain_amqp_client_gets_nothing_from_a_tls_port(certificates: Certificates) -> None:
    options = TLSOptions(certificates.server_cert, certificates.server_key)
    with tls_broker(options) as running, pytest.raises(AMQPConnectionError):
        pika.BlockingConnection(tls_parameters(running.port, None))


def test_verify_peer_lets_in_a_client_with_a_certificate_from_the_ca(
    certificates: Certificates,
) -> None:
    options = TLSOptions(
        certificates.server_cert, certificates.server_key, certificates.ca, verify_peer=True
    )
    with tls_broker(options) as running:
        connection = pika.BlockingConnection(
            tls_parameters(running.port, certificates.pika_options())
        )
        assert round_trip(connection) == b"over TLS"
        connection.close()


@pytest.mark.parametrize(
    "client", [{"with_certificate": False}, {"stranger": True}], ids=["none", "unknown-ca"]
)
def test_verify_peer_refuses_a_client_without_a_good_certificate(
    certificates: Certificates, client: dict[str, bool]
) -> None:
    options = TLSOptions(
        certificates.server_cert, certificates.server_key, certificates.ca, verify_peer=True
    )
    with tls_broker(options) as running, pytest.raises(AMQPConnectionError):
        pika.BlockingConnection(tls_parameters(running.port, certificates.pika_options(**client)))


def test_without_fail_if_no_peer_cert_a_certificate_is_optional_but_checked(
    certificates: Certificates,
) -> None:
    options = TLSOptions(
        certificates.server_cert,
        certificates.server_key,
        certificates.ca,
        verify_peer=True,
        fail_if_no_peer_cert=False,
    )
    with tls_broker(options) as running:
        without = certificates.pika_options(with_certificate=False)
        pika.BlockingConnection(tls_parameters(running.port, without)).close()
        with pytest.raises(AMQPConnectionError):
            stranger = certificates.pika_options(stranger=True)
            pika.BlockingConnection(tls_parameters(running.port, stranger))


def test_a_missing_certificate_file_is_named(tmp_path: Path) -> None:
    missing = tmp_path / "nope.pem"
    with pytest.raises(ConfigError, match=f"TLS certificate file {missing} does not exist"):
        TLSOptions(missing).server_context()


def test_a_key_that_does_not_fit_the_certificate_is_reported(certificates: Certificates) -> None:
    with pytest.raises(ConfigError, match="cannot load the TLS certificate and key"):
        TLSOptions(certificates.server_cert, certificates.client_key).server_context()


# -- warrenmq run --tls-* -------------------------------------------------------------------------


def test_run_serves_amqp_and_amqps_side_by_side(certificates: Certificates) -> None:
    args = (
        "--port", "0", "--tls-port", "0",
        "--tls-cert", str(certificates.server_cert),
        "--tls-key", str(certificates.server_key),
        "--tls-ca", str(certificates.ca),
        "--tls-verify-peer",
    )  # fmt: skip
    with broker_process(*args) as (process, stderr):
        plain = stderr.wait_for("listening for amqp")
        secure = stderr.wait_for("with TLS")
        assert "with TLS" not in plain
        port = int(secure.split(" with TLS")[0].rsplit(":", 1)[1])
        connection = pika.BlockingConnection(tls_parameters(port, certificates.pika_options()))
        assert round_trip(connection) == b"over TLS"
        connection.close()
        with pytest.raises(AMQPConnectionError):
            refused = certificates.pika_options(with_certificate=False)
            pika.BlockingConnection(tls_parameters(port, refused))
        process.send_signal(signal.SIGTERM)
        assert process.wait(TIMEOUT) == 0


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("--tls-cert", "/nonexistent/server.pem"), "TLS certificate file /nonexistent/server.pem"),
        (("--tls-port", "5671"), "--tls-port needs --tls-cert"),
        (("--tls-cert", "x.pem", "--tls-verify-peer"), "--tls-verify-peer needs --tls-ca"),
    ],
)
def test_bad_tls_flags_stop_the_start_with_a_reason(args: tuple[str, ...], message: str) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "warrenmq", "run", "--port", "0", *args],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert result.returncode == 2, result.stderr
    assert message in result.stderr
    assert "Traceback" not in result.stderr


# -- the config file ------------------------------------------------------------------------------


def tls_config(tmp_path: Path, certificates: Certificates, port: int = 0) -> Path:
    path = tmp_path / "warrenmq.toml"
    path.write_text(
        f"""
[[listeners]]
port = {port}
[listeners.tls]
certfile = "{certificates.server_cert}"
keyfile = "{certificates.server_key}"
cafile = "{certificates.ca}"
verify_peer = true
"""
    )
    return path


def test_a_tls_listener_of_the_config_file_serves_tls(
    certificates: Certificates, tmp_path: Path
) -> None:
    settings = config.load(tls_config(tmp_path, certificates)).settings
    with running_broker(settings) as running:
        connection = pika.BlockingConnection(
            tls_parameters(running.port, certificates.pika_options())
        )
        assert round_trip(connection) == b"over TLS"
        assert [view.transport for view in running.broker.connection_views()] == ["tls"]
        connection.close()
        with pytest.raises(AMQPConnectionError):  # verify_peer: no certificate, no entry
            without = certificates.pika_options(with_certificate=False)
            pika.BlockingConnection(tls_parameters(running.port, without))


def test_the_config_file_and_the_flags_make_the_same_tls_listener(
    certificates: Certificates, tmp_path: Path
) -> None:
    from_file = config.load(tls_config(tmp_path, certificates, port=5671)).settings.listeners
    flags = [
        "run", "--tls-cert", str(certificates.server_cert), "--tls-key",
        str(certificates.server_key), "--tls-ca", str(certificates.ca), "--tls-verify-peer",
    ]  # fmt: skip
    settings, _ = settings_for(_parser().parse_args(flags))
    assert from_file is not None
    assert settings.effective_listeners()[1] == from_file[0]


def test_a_bad_tls_file_in_the_config_is_reported_with_its_line(
    certificates: Certificates, tmp_path: Path
) -> None:
    path = tls_config(tmp_path, certificates)
    path.write_text(path.read_text().replace(str(certificates.server_key), str(certificates.ca)))
    with pytest.raises(ConfigError, match=rf"{path}, line \d+: listeners\[0\]\.tls: cannot load"):
        config.load(path)
