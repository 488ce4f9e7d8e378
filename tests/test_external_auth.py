"""AMQP's EXTERNAL mechanism (RabbitMQ's rabbitmq_auth_mechanism_ssl): on a TLS listener that
verifies client certificates, with EXTERNAL in ``auth_mechanisms``, pika logs in with
``ExternalCredentials`` as the user its certificate names, without a password."""

from __future__ import annotations

import logging
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pika
import pytest
from pamqp import commands, frame
from pika.exceptions import AMQPConnectionError
from raw_amqp import PROTOCOL_HEADER
from tls_helpers import Certificates, make_certificates

from warrenmq import ListenerSpec, Settings, TLSOptions, config
from warrenmq.access import Access
from warrenmq.errors import ConfigError
from warrenmq.testing import RunningBroker, running_broker
from warrenmq.tls import TLSPeer

pytestmark = pytest.mark.warrenmq_only

WITH_EXTERNAL = ("PLAIN", "AMQPLAIN", "EXTERNAL")


@pytest.fixture(scope="module")
def certificates(tmp_path_factory: pytest.TempPathFactory) -> Certificates:
    return make_certificates(tmp_path_factory.mktemp("tls"))


@pytest.fixture(scope="module")
def cert_users() -> Access:
    """The test client certificate's users (its subject is just ``CN=client``), without
    passwords: they can log in by certificate only."""
    access = Access.default()
    for name in ("client", "CN=client"):
        access.add_user(name)
        access.set_permissions(name, "/", ".*", ".*", ".*")
    return access


@contextmanager
def amqps(
    certificates: Certificates,
    verify_peer: bool = True,
    fail_if_no_peer_cert: bool = True,
    **settings: object,
) -> Iterator[RunningBroker]:
    options = TLSOptions(
        certificates.server_cert,
        certificates.server_key,
        certificates.ca,
        verify_peer=verify_peer,
        fail_if_no_peer_cert=fail_if_no_peer_cert,
    )
    listener = ListenerSpec("tcp", "amqp", "127.0.0.1", 0, tls=options)
    with running_broker(Settings(listeners=[listener], **settings)) as running:  # type: ignore[arg-type]
        yield running


def external(
    running: RunningBroker, certificates: Certificates, **client: bool
) -> pika.BlockingConnection:
    return pika.BlockingConnection(
        pika.ConnectionParameters(
            "127.0.0.1",
            running.port,
            credentials=pika.credentials.ExternalCredentials(),
            ssl_options=certificates.pika_options(**client),
            connection_attempts=1,
            socket_timeout=5,
            stack_timeout=5,
        )
    )


def offered(running: RunningBroker, certificates: Certificates, **client: bool) -> list[str]:
    """The mechanisms of connection.start, as a client over TLS reads them."""
    context = certificates.client_context(**client)
    with (
        socket.create_connection(("127.0.0.1", running.port), timeout=5) as sock,
        context.wrap_socket(sock, server_hostname="localhost") as tls,
    ):
        tls.sendall(PROTOCOL_HEADER)
        data = b""
        while True:
            data += tls.recv(65536)
            try:
                _, _, start = frame.unmarshal(data)
                break
            except Exception:  # not a whole frame yet
                if len(data) > 65536:
                    raise
    assert isinstance(start, commands.Connection.Start)
    return str(start.mechanisms).split()


def round_trip(connection: pika.BlockingConnection) -> None:
    channel = connection.channel()
    queue = channel.queue_declare("", exclusive=True).method.queue
    channel.confirm_delivery()
    channel.basic_publish("", queue, b"by certificate")
    assert channel.basic_get(queue, auto_ack=True)[2] == b"by certificate"


@pytest.mark.parametrize(
    ("source", "user"), [("common_name", "client"), ("distinguished_name", "CN=client")]
)
def test_pika_logs_in_by_its_certificate(
    certificates: Certificates, cert_users: Access, source: str, user: str
) -> None:
    settings = {"auth_mechanisms": WITH_EXTERNAL, "ssl_cert_login_from": source}
    with amqps(certificates, access=cert_users, **settings) as running:
        assert offered(running, certificates) == list(WITH_EXTERNAL)
        connection = external(running, certificates)
        round_trip(connection)
        assert [view.user for view in running.broker.connection_views()] == [user]
        connection.close()


def test_external_is_offered_only_when_configured_and_on_listeners_that_verify(
    certificates: Certificates, cert_users: Access
) -> None:
    with amqps(certificates, access=cert_users) as running:  # RabbitMQ's default mechanisms
        assert offered(running, certificates) == ["PLAIN", "AMQPLAIN"]
        with pytest.raises(AMQPConnectionError):
            external(running, certificates)
    settings = {"access": cert_users, "auth_mechanisms": WITH_EXTERNAL}
    with amqps(certificates, verify_peer=False, **settings) as running:
        assert offered(running, certificates) == ["PLAIN", "AMQPLAIN"]
        with pytest.raises(AMQPConnectionError):
            external(running, certificates)


def test_external_alone_refuses_passwords(certificates: Certificates, cert_users: Access) -> None:
    settings = {"access": cert_users, "auth_mechanisms": ("EXTERNAL",)}
    with amqps(certificates, ssl_cert_login_from="common_name", **settings) as running:
        assert offered(running, certificates) == ["EXTERNAL"]
        external(running, certificates).close()
        with pytest.raises(AMQPConnectionError):
            pika.BlockingConnection(
                pika.ConnectionParameters(
                    "127.0.0.1",
                    running.port,
                    credentials=pika.PlainCredentials("guest", "guest"),
                    ssl_options=certificates.pika_options(),
                    connection_attempts=1,
                )
            )


def test_a_certificate_of_no_user_is_refused_and_logged(
    certificates: Certificates, caplog: pytest.LogCaptureFixture
) -> None:
    settings = {"auth_mechanisms": WITH_EXTERNAL, "ssl_cert_login_from": "common_name"}
    with amqps(certificates, **settings) as running:
        with (
            caplog.at_level(logging.WARNING, logger="warrenmq.amqp"),
            pytest.raises(AMQPConnectionError),
        ):
            external(running, certificates)
        assert "EXTERNAL login refused: user 'client' - invalid credentials (no such user)" in (
            caplog.text
        )


def test_without_a_certificate_external_is_refused(
    certificates: Certificates, cert_users: Access, caplog: pytest.LogCaptureFixture
) -> None:
    settings = {"access": cert_users, "auth_mechanisms": WITH_EXTERNAL}
    with amqps(certificates, fail_if_no_peer_cert=False, **settings) as running:
        with (
            caplog.at_level(logging.WARNING, logger="warrenmq.amqp"),
            pytest.raises(AMQPConnectionError),
        ):
            external(running, certificates, with_certificate=False)
        assert "EXTERNAL login refused: no peer certificate" in caplog.text


def test_the_config_file_keys(tmp_path: Path) -> None:
    path = tmp_path / "warrenmq.toml"
    path.write_text(
        '[broker]\nauth_mechanisms = ["PLAIN", "EXTERNAL"]\nssl_cert_login_from = "common_name"\n'
        'mqtt_ssl_cert_login = true\n\n[users.client]\npassword_hash = ""\n'
    )
    settings = config.load(path).settings
    assert settings.access is not None
    assert settings.access.users["client"].password_hash is None  # by certificate only
    assert settings.auth_mechanisms == ("PLAIN", "EXTERNAL")
    assert (settings.ssl_cert_login_from, settings.mqtt_ssl_cert_login) == ("common_name", True)
    path.write_text('[broker]\nauth_mechanisms = ["PLAIN", "CRAM-MD5"]\n')
    with pytest.raises(ConfigError, match=r"line 2: broker\.auth_mechanisms: expected a list of"):
        config.load(path)
    path.write_text('[broker]\nssl_cert_login_from = "subject"\n')
    with pytest.raises(ConfigError, match="expected one of: distinguished_name, common_name"):
        config.load(path)


def test_the_user_name_of_a_certificate_subject_is_rabbitmq_s() -> None:
    """RabbitMQ's form of the distinguished name, that of ``openssl x509 -noout -subject
    -nameopt RFC2253``: most specific first, special characters escaped."""
    subject = (
        (("countryName", "FR"),),
        (("organizationName", "Acme, Inc"),),
        (("organizationalUnitName", "billing"),),
        (("commonName", "app"),),
    )
    peer = TLSPeer(verifies=True, subject=subject)
    assert peer.login_name("distinguished_name") == "CN=app,OU=billing,O=Acme\\, Inc,C=FR"
    assert peer.login_name("common_name") == "app"
    assert TLSPeer(verifies=True).login_name() is None  # no certificate, no name
