"""TLS for listeners, with the standard library's ssl: one context builder for every transport
(AMQP and MQTT over TCP; a WebSocket listener uses the same ``TLSOptions``).

The options follow RabbitMQ's ``ssl_options``: a certificate chain and key, an optional CA
bundle, and ``verify_peer`` to ask clients for a certificate signed by that CA. With
``verify_peer``, ``fail_if_no_peer_cert`` (default true) refuses clients that send none; false
lets them in without one, but a certificate that is sent must still verify.
"""

from __future__ import annotations

import ssl
from dataclasses import dataclass
from pathlib import Path

from .errors import ConfigError

#: the port AMQP over TLS uses by convention (RabbitMQ's default ``listeners.ssl``)
AMQPS_PORT = 5671
#: the port MQTT over TLS uses by convention (RabbitMQ's ``mqtt.listeners.ssl``)
MQTTS_PORT = 8883
#: seconds a client gets to finish the TLS handshake (the AMQP handshake then has its own)
TLS_HANDSHAKE_TIMEOUT = 10.0


@dataclass(frozen=True)
class TLSOptions:
    certfile: Path
    #: None: the key is in ``certfile``
    keyfile: Path | None = None
    #: certificates of the authorities that sign client certificates (None: the system's)
    cafile: Path | None = None
    verify_peer: bool = False
    fail_if_no_peer_cert: bool = True
    #: None: the standard library's default (TLS 1.2 and later)
    minimum_version: ssl.TLSVersion | None = None

    def server_context(self) -> ssl.SSLContext:
        return server_context(self)


def server_context(options: TLSOptions) -> ssl.SSLContext:
    """A server-side context for ``options``; ``ConfigError`` naming the file that is missing
    or unreadable, and why."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    if options.minimum_version is not None:
        context.minimum_version = options.minimum_version
    for what, path in (("certificate", options.certfile), ("key", options.keyfile)):
        if path is not None and not Path(path).is_file():
            raise ConfigError(f"TLS {what} file {path} does not exist")
    try:
        context.load_cert_chain(options.certfile, options.keyfile)
    except (ssl.SSLError, OSError, ValueError) as exc:
        files = str(options.certfile) + (f" and {options.keyfile}" if options.keyfile else "")
        raise ConfigError(f"cannot load the TLS certificate and key from {files}: {exc}") from None
    if options.cafile is not None:
        if not Path(options.cafile).is_file():
            raise ConfigError(f"TLS CA file {options.cafile} does not exist")
        try:
            context.load_verify_locations(cafile=options.cafile)
        except (ssl.SSLError, OSError, ValueError) as exc:
            raise ConfigError(f"cannot load the TLS CA file {options.cafile}: {exc}") from None
    if options.verify_peer:
        context.verify_mode = (
            ssl.CERT_REQUIRED if options.fail_if_no_peer_cert else ssl.CERT_OPTIONAL
        )
    else:
        context.verify_mode = ssl.CERT_NONE
    return context


# -- client certificates as identities (RabbitMQ's rabbitmq_auth_mechanism_ssl) ---------------

#: where a certificate's login name comes from (RabbitMQ's ``ssl_cert_login_from``)
CERT_LOGIN_SOURCES = ("distinguished_name", "common_name")

#: attribute names as ``ssl.getpeercert()`` gives them -> RabbitMQ's short names in a DN
_SHORT_NAMES = {
    "surname": "SN",
    "givenName": "GIVENNAME",
    "initials": "INITIALS",
    "generationQualifier": "GENERATIONQUALIFIER",
    "commonName": "CN",
    "localityName": "L",
    "stateOrProvinceName": "ST",
    "organizationName": "O",
    "organizationalUnitName": "OU",
    "title": "TITLE",
    "countryName": "C",
    "serialNumber": "SERIALNUMBER",
    "pseudonym": "PSEUDONYM",
    "domainComponent": "DC",
    "emailAddress": "EMAILADDRESS",
    "streetAddress": "STREET",
    "userId": "UID",
}

Subject = tuple[tuple[tuple[str, str], ...], ...]


def _escape(value: str) -> str:
    """RFC 4514 escaping of an attribute value, as RabbitMQ formats a DN."""
    out = "".join("\\" + char if char in ',+"\\<>;' else char for char in value)
    if out.startswith(("#", " ")):
        out = "\\" + out
    if out.endswith(" ") and not out.endswith("\\ "):
        out = out[:-1] + "\\ "
    return out


@dataclass(frozen=True)
class TLSPeer:
    """What a TLS transport tells a protocol engine about a connection's handshake, so that
    the engine can log the client in by its certificate (AMQP's EXTERNAL mechanism, MQTT's
    ``ssl_cert_login``) whatever carries the bytes (TCP, WebSocket)."""

    #: the listener verifies client certificates (``verify_peer``)
    verifies: bool
    #: the subject of the certificate the client presented and the handshake verified
    subject: Subject | None = None

    @classmethod
    def from_handshake(cls, ssl_object: object, options: TLSOptions) -> TLSPeer:
        """From the connection's ``ssl.SSLObject`` (or ``SSLSocket``) after its handshake. A
        certificate counts only if the listener verified it: with ``verify_peer`` off, the
        standard library does not check it and reports none."""
        certificate = None
        getpeercert = getattr(ssl_object, "getpeercert", None)
        if options.verify_peer and getpeercert is not None:
            try:
                certificate = getpeercert()
            except (ValueError, ssl.SSLError):
                certificate = None
        subject = certificate.get("subject") if certificate else None
        return cls(options.verify_peer, tuple(subject) if subject else None)

    def common_name(self) -> str | None:
        """The subject's CN; several are joined with commas, as RabbitMQ joins them."""
        if self.subject is None:
            return None
        names = [value for rdn in self.subject for name, value in rdn if name == "commonName"]
        return ",".join(names) if names else None

    def distinguished_name(self) -> str | None:
        """The subject in RabbitMQ's RFC 4514 form: most specific first, ``CN=app,O=Acme``."""
        if self.subject is None:
            return None
        return ",".join(
            "+".join(f"{_SHORT_NAMES.get(name, name)}={_escape(value)}" for name, value in rdn)
            for rdn in reversed(self.subject)
        )

    def login_name(self, source: str = "distinguished_name") -> str | None:
        """The user name the certificate logs in as, or None without a verified one."""
        if source == "common_name":
            return self.common_name()
        return self.distinguished_name()
