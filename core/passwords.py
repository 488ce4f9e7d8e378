"""Password hashes: warrenmq's own (PBKDF2-HMAC-SHA256) and RabbitMQ's, for imported users.

A stored password is a pair, as in RabbitMQ's definitions: ``password_hash`` and the
``hashing_algorithm`` that made it. warrenmq writes ``pbkdf2_sha256`` hashes in the PHC string
form ``$pbkdf2-sha256$i=ITERATIONS$SALT$HASH`` (unpadded base64), so the cost is recorded with
each hash and can be raised later without breaking the old ones. RabbitMQ's
``rabbit_password_hashing_sha256`` (and ``_sha512``, ``_md5``) are verified as RabbitMQ does:
base64 of a 4-byte salt followed by the digest of salt + password.

PBKDF2 at OWASP's cost takes ~0.2 s of CPU, so the broker verifies off its event loop and
remembers the pairs that verified (``remember_verified``, ``verified_before``): a client that reconnects with the same
password pays one HMAC, not another 0.2 s.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import os
import secrets
from collections import OrderedDict

#: warrenmq's own scheme
PBKDF2_SHA256 = "pbkdf2_sha256"
#: RabbitMQ's schemes (rabbit_password_hashing_*), verified for imported users
RABBIT_SHA256 = "rabbit_password_hashing_sha256"
RABBIT_SHA512 = "rabbit_password_hashing_sha512"
RABBIT_MD5 = "rabbit_password_hashing_md5"
ALGORITHMS = (PBKDF2_SHA256, RABBIT_SHA256, RABBIT_SHA512, RABBIT_MD5)

#: OWASP's 2023 recommendation for PBKDF2-HMAC-SHA256
DEFAULT_ITERATIONS = 600_000
SALT_BYTES = 16
_PHC_PREFIX = "$pbkdf2-sha256$i="
_RABBIT_DIGESTS = {RABBIT_SHA256: "sha256", RABBIT_SHA512: "sha512", RABBIT_MD5: "md5"}

#: ``hash_password("guest")`` made once: the built-in default user costs nothing at start-up
DEFAULT_GUEST_HASH = (
    "$pbkdf2-sha256$i=600000$d2FycmVubXEtZGVmYXVsdA$xo4vxdL0WqCisd713b0f/q5t1t8fWAvAh6j3OMUHrhs"
)


class PasswordHashError(ValueError):
    """A stored hash that cannot be read, or an unknown algorithm; the text says which."""


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode().rstrip("=")


def _unb64(text: str) -> bytes:
    return base64.b64decode(text + "=" * (-len(text) % 4), validate=True)


def hash_password(password: str, iterations: int = DEFAULT_ITERATIONS) -> str:
    """A new salted ``pbkdf2_sha256`` hash of ``password`` (PHC string form)."""
    if iterations < 1:
        raise ValueError("iterations must be at least 1")
    salt = secrets.token_bytes(SALT_BYTES)
    digest = hashlib.pbkdf2_hmac("sha256", password.encode(), salt, iterations)
    return f"{_PHC_PREFIX}{iterations}${_b64(salt)}${_b64(digest)}"


def rabbit_hash(password: str, algorithm: str = RABBIT_SHA256) -> str:
    """A hash in RabbitMQ's format (for tests and for exporting to RabbitMQ)."""
    salt = os.urandom(4)
    digest = hashlib.new(_RABBIT_DIGESTS[algorithm], salt + password.encode()).digest()
    return base64.b64encode(salt + digest).decode()


def check_hash(password_hash: str, algorithm: str) -> None:
    """Raise ``PasswordHashError`` unless ``password_hash`` is readable for ``algorithm``."""
    _parse(password_hash, algorithm)


def _parse(password_hash: str, algorithm: str) -> tuple[bytes, bytes, int]:
    """(salt, digest, iterations) of a stored hash."""
    if algorithm == PBKDF2_SHA256:
        if not password_hash.startswith(_PHC_PREFIX):
            raise PasswordHashError(
                f"a {PBKDF2_SHA256} hash starts with '{_PHC_PREFIX}ITERATIONS$'"
            )
        try:
            iterations_text, salt_text, digest_text = password_hash[len(_PHC_PREFIX) :].split("$")
            iterations = int(iterations_text)
            salt, digest = _unb64(salt_text), _unb64(digest_text)
        except (ValueError, binascii.Error):
            raise PasswordHashError(
                f"not a {PBKDF2_SHA256} hash ($pbkdf2-sha256$i=ITERATIONS$SALT$HASH)"
            ) from None
        if iterations < 1 or not salt or len(digest) != 32:
            raise PasswordHashError(f"not a {PBKDF2_SHA256} hash (bad iterations, salt or size)")
        return salt, digest, iterations
    digest_name = _RABBIT_DIGESTS.get(algorithm)
    if digest_name is None:
        raise PasswordHashError(
            f"unknown hashing algorithm '{algorithm}' (known: {', '.join(ALGORITHMS)})"
        )
    try:
        raw = base64.b64decode(password_hash, validate=True)
    except (ValueError, binascii.Error):
        raise PasswordHashError(f"a {algorithm} password_hash must be base64") from None
    size = hashlib.new(digest_name).digest_size
    if len(raw) != 4 + size:
        raise PasswordHashError(
            f"a {algorithm} password_hash is a 4-byte salt and a {size}-byte digest, "
            f"got {len(raw)} bytes"
        )
    return raw[:4], raw[4:], 0


def verify_password(password: str, password_hash: str, algorithm: str) -> bool:
    """True if ``password`` matches; False for a wrong password or an unreadable hash."""
    try:
        salt, digest, iterations = _parse(password_hash, algorithm)
    except PasswordHashError:
        return False
    secret = password.encode()
    if algorithm == PBKDF2_SHA256:
        computed = hashlib.pbkdf2_hmac("sha256", secret, salt, iterations)
    else:
        computed = hashlib.new(_RABBIT_DIGESTS[algorithm], salt + secret).digest()
    return hmac.compare_digest(computed, digest)


def is_expensive(algorithm: str) -> bool:
    """Whether verifying a hash of ``algorithm`` is worth moving off the event loop."""
    return algorithm == PBKDF2_SHA256


class _VerifiedPairs:
    """Keyed digests of (password, stored hash) pairs that verified, newest last. The key is
    random per process, so the set says nothing about a password to whoever reads memory
    without the key; a changed password has a new hash and so misses."""

    def __init__(self, size: int = 10_000) -> None:
        self._key = secrets.token_bytes(32)
        self._size = size
        self._seen: OrderedDict[bytes, None] = OrderedDict()

    def _digest(self, password: str, password_hash: str) -> bytes:
        message = password.encode() + b"\0" + password_hash.encode()
        return hmac.digest(self._key, message, "sha256")

    def remember(self, password: str, password_hash: str) -> None:
        digest = self._digest(password, password_hash)
        self._seen[digest] = None
        self._seen.move_to_end(digest)
        while len(self._seen) > self._size:
            self._seen.popitem(last=False)

    def __contains__(self, pair: tuple[str, str]) -> bool:
        return self._digest(*pair) in self._seen


_VERIFIED = _VerifiedPairs()


def verified_before(password: str, password_hash: str) -> bool:
    """True if this exact pair verified earlier in this process (cheap, no PBKDF2)."""
    return (password, password_hash) in _VERIFIED


def remember_verified(password: str, password_hash: str) -> None:
    """Note a pair that verified (call from one thread: the event loop's)."""
    _VERIFIED.remember(password, password_hash)
