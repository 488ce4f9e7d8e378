"""Errors that carry an AMQP reply code, raised by the core and turned into replies by protocols.

The core speaks in RabbitMQ's reply codes because they are the vocabulary every client library
already understands; an MQTT engine maps them onto its own reason codes.
"""

from __future__ import annotations


class BrokerError(Exception):
    """A refused operation. ``connection_level`` errors close the whole connection."""

    reply_code: int = 541
    reply_name: str = "INTERNAL_ERROR"
    connection_level: bool = False

    def __init__(self, text: str) -> None:
        super().__init__(text)
        self.text = text

    @property
    def reply_text(self) -> str:
        return f"{self.reply_name} - {self.text}"


class ContentTooLarge(BrokerError):
    reply_code, reply_name = 311, "CONTENT_TOO_LARGE"


class NoRoute(BrokerError):
    reply_code, reply_name = 312, "NO_ROUTE"


class NoConsumers(BrokerError):
    reply_code, reply_name = 313, "NO_CONSUMERS"


class AccessRefused(BrokerError):
    reply_code, reply_name = 403, "ACCESS_REFUSED"


class NotFound(BrokerError):
    reply_code, reply_name = 404, "NOT_FOUND"


class ResourceLocked(BrokerError):
    reply_code, reply_name = 405, "RESOURCE_LOCKED"


class PreconditionFailed(BrokerError):
    reply_code, reply_name = 406, "PRECONDITION_FAILED"


class ConnectionForced(BrokerError):
    reply_code, reply_name, connection_level = 320, "CONNECTION_FORCED", True


class InvalidPath(BrokerError):
    reply_code, reply_name, connection_level = 402, "INVALID_PATH", True


class FrameError(BrokerError):
    reply_code, reply_name, connection_level = 501, "FRAME_ERROR", True


class SyntaxError_(BrokerError):
    reply_code, reply_name, connection_level = 502, "SYNTAX_ERROR", True


class CommandInvalid(BrokerError):
    reply_code, reply_name, connection_level = 503, "COMMAND_INVALID", True


class ChannelError(BrokerError):
    reply_code, reply_name, connection_level = 504, "CHANNEL_ERROR", True


class UnexpectedFrame(BrokerError):
    reply_code, reply_name, connection_level = 505, "UNEXPECTED_FRAME", True


class ResourceError(BrokerError):
    reply_code, reply_name, connection_level = 506, "RESOURCE_ERROR", True


class NotAllowed(BrokerError):
    reply_code, reply_name, connection_level = 530, "NOT_ALLOWED", True


class NotImplementedFeature(BrokerError):
    reply_code, reply_name, connection_level = 540, "NOT_IMPLEMENTED", True


class InternalError(BrokerError):
    reply_code, reply_name, connection_level = 541, "INTERNAL_ERROR", True


class ConnectionAccessRefused(AccessRefused):
    """403 at connection level: failed login, vhost access denied."""

    connection_level = True


class StoreError(Exception):
    """The store cannot open its data (locked by another broker, unreadable): no start."""


class PluginError(Exception):
    """A plugin failed to load or registered something invalid."""


class ConfigError(Exception):
    """Invalid configuration; the message names where."""
