"""Certificates made by the test (with the ``cryptography`` package): a CA, a server
certificate for localhost and 127.0.0.1, a client certificate from that CA, and one from
another CA that the broker does not trust."""

from __future__ import annotations

import datetime
import ipaddress
import ssl
from dataclasses import dataclass
from pathlib import Path

import pika
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

Key = ec.EllipticCurvePrivateKey


@dataclass(frozen=True)
class Certificates:
    ca: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path
    #: a client certificate signed by a CA the broker does not know
    stranger_cert: Path
    stranger_key: Path

    def client_context(
        self, with_certificate: bool = True, stranger: bool = False
    ) -> ssl.SSLContext:
        """What a client uses: trusts our CA; presents a certificate if asked to."""
        context = ssl.create_default_context(cafile=str(self.ca))
        if stranger:
            context.load_cert_chain(self.stranger_cert, self.stranger_key)
        elif with_certificate:
            context.load_cert_chain(self.client_cert, self.client_key)
        return context

    def pika_options(self, **kwargs: bool) -> pika.SSLOptions:
        return pika.SSLOptions(self.client_context(**kwargs), server_hostname="localhost")


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _certificate(
    subject: str,
    key: Key,
    issuer: tuple[x509.Certificate, Key] | None,
    *,
    ca: bool = False,
    server: bool = False,
) -> x509.Certificate:
    now = datetime.datetime.now(datetime.UTC)
    signer_name = issuer[0].subject if issuer else _name(subject)
    signer_key = issuer[1] if issuer else key
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(subject))
        .issuer_name(signer_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
    )
    if issuer is not None:
        builder = builder.add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer[1].public_key()),
            critical=False,
        )
    if ca:
        builder = builder.add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
    else:
        usage = ExtendedKeyUsageOID.SERVER_AUTH if server else ExtendedKeyUsageOID.CLIENT_AUTH
        builder = builder.add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
    if server:
        builder = builder.add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
    return builder.sign(signer_key, hashes.SHA256())


def _write(
    directory: Path, name: str, certificate: x509.Certificate, key: Key
) -> tuple[Path, Path]:
    cert_path, key_path = directory / f"{name}.crt", directory / f"{name}.key"
    cert_path.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path


def make_certificates(directory: Path) -> Certificates:
    def new_key() -> Key:
        return ec.generate_private_key(ec.SECP256R1())

    ca_key, stranger_ca_key = new_key(), new_key()
    ca = _certificate("warrenmq test CA", ca_key, None, ca=True)
    stranger_ca = _certificate("someone else's CA", stranger_ca_key, None, ca=True)
    server_key, client_key, stranger_key = new_key(), new_key(), new_key()
    server = _certificate("localhost", server_key, (ca, ca_key), server=True)
    client = _certificate("client", client_key, (ca, ca_key))
    stranger = _certificate("stranger", stranger_key, (stranger_ca, stranger_ca_key))
    ca_path, _ = _write(directory, "ca", ca, ca_key)
    server_cert, server_key_path = _write(directory, "server", server, server_key)
    client_cert, client_key_path = _write(directory, "client", client, client_key)
    stranger_cert, stranger_key_path = _write(directory, "stranger", stranger, stranger_key)
    return Certificates(
        ca_path,
        server_cert,
        server_key_path,
        client_cert,
        client_key_path,
        stranger_cert,
        stranger_key_path,
    )
