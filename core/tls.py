"""TLS for listeners, with the standard library's ssl: one context builder for every transport
(AMQP over TCP today; MQTT and WebSocket listeners use the same ``TLSOptions``).

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
