"""warrenmq: a message broker in the RabbitMQ model, a small core plus pluggy plugins."""

from __future__ import annotations

import pluggy

from .access import Access
from .auth import AuthBackend, User
from .broker import Broker, Settings
from .consumer import Consumer
from .dispatch import DispatchPolicy
from .errors import BrokerError, PreconditionFailed
from .exchange import Binding, Exchange, ExchangeType, Router
from .limits import UserLimits, VhostLimits
from .message import Message, Properties, PropertiesCodec
from .protocol import ListenerSpec, Protocol, ProtocolConnection, Transport
from .queue import Entry, Queue, QueueView
from .session import Session, SessionConsumer
from .store import Store
from .tls import TLSOptions

__version__ = "0.1.0"

#: decorate plugin hook implementations with this
hookimpl = pluggy.HookimplMarker("warrenmq")

__all__ = [
    "Access",
    "AuthBackend",
    "Binding",
    "Broker",
    "BrokerError",
    "Consumer",
    "DispatchPolicy",
    "Entry",
    "Exchange",
    "ExchangeType",
    "ListenerSpec",
    "Message",
    "PreconditionFailed",
    "Properties",
    "PropertiesCodec",
    "Protocol",
    "ProtocolConnection",
    "Queue",
    "QueueView",
    "Router",
    "Session",
    "SessionConsumer",
    "Settings",
    "Store",
    "TLSOptions",
    "Transport",
    "User",
    "UserLimits",
    "VhostLimits",
    "hookimpl",
]
