"""The read side of the API: overview, nodes, vhosts, exchanges, queues, bindings,
connections, channels, consumers, users and permissions, as RabbitMQ's management API."""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from starlette.requests import Request
from starlette.responses import Response

from warrenmq import __version__

from . import render
from .auth import Caller, not_found
from .http import named_page, paged, segment
from .stats import GLOBAL_FIELDS, Sampler

if TYPE_CHECKING:
    from warrenmq.broker import Broker
    from warrenmq.exchange import Exchange
    from warrenmq.queue import Queue
    from warrenmq.vhost import VirtualHost
    from warrenmq.views import ConnectionView


@dataclass
class Api:
    broker: Broker
    sampler: Sampler
    #: (host, port) the API listens on, once it does
    address: tuple[str, int] | None = None
    started: float = field(default_factory=time.time)

    # -- lookups ---------------------------------------------------------------------------

    def vhost(self, caller: Caller, name: str) -> VirtualHost:
        caller.require_vhost(name)
        return self.broker.vhosts[name]

    def queue(self, caller: Caller, request: Request) -> Queue:
        vhost = self.vhost(caller, segment(request, "vhost"))
        queue = vhost.queues.get(segment(request, "name"))
        if queue is None:
            raise not_found()
        return queue

    def exchange(self, caller: Caller, request: Request, key: str = "name") -> Exchange:
        vhost = self.vhost(caller, segment(request, "vhost"))
        name = segment(request, key)
        exchange = vhost.exchanges.get("" if name == "amq.default" else name)
        if exchange is None:
            raise not_found()
        return exchange

    def vhosts_of(self, caller: Caller, request: Request) -> list[VirtualHost]:
        """The vhost in the path, or every vhost the caller may list."""
        if "vhost" in request.path_params:
            return [self.vhost(caller, segment(request, "vhost"))]
        return [self.broker.vhosts[name] for name in caller.visible_vhosts()]

    def connection_views(self, caller: Caller) -> list[ConnectionView]:
        return [
            view
            for view in self.broker.connection_views()
            if view.vhost is not None and caller.sees_connection(view.user)
        ]

    def find_connection(self, caller: Caller, name: str) -> Any:
        for connection in list(self.broker.connections):
            view = connection.view()
            if view is not None and view.name == name and caller.sees_connection(view.user):
                return connection, view
        raise not_found()


# -- handlers: (api, request, caller) -> JSON-able ----------------------------------------------


def whoami(api: Api, request: Request, caller: Caller) -> Any:
    return {"name": caller.name, "tags": list(caller.user.tags)}


def overview(api: Api, request: Request, caller: Caller) -> Any:
    broker, sampler = api.broker, api.sampler
    visible = caller.visible_vhosts()
    queues = exchanges = consumers = 0
    ready = unacked = 0
    for name in visible:
        vhost = broker.vhosts[name]
        queues += len(vhost.queues)
        exchanges += len(vhost.exchanges)
        for queue in vhost.queues.values():
            consumers += len(queue.consumers)
            ready += queue.ready_count
            unacked += queue.unacked_count
    connections = api.connection_views(caller)
    query = request.query_params
    stats = render.message_stats(sampler)
    totals: dict[str, Any] = {
        "messages": ready + unacked,
        "messages_details": render.rate(sampler.rates["messages"]),
        "messages_ready": ready,
        "messages_ready_details": render.rate(sampler.rates["messages_ready"]),
        "messages_unacknowledged": unacked,
        "messages_unacknowledged_details": render.rate(sampler.rates["messages_unacknowledged"]),
    }
    if "msg_rates_age" in query or "lengths_age" in query:
        _with_samples(sampler, query, stats, totals)
    listeners = [
        {"node": render.NODE, "protocol": info.spec.protocol, "ip_address": info.host,
         "port": info.port}
        for info in broker.listeners
    ]  # fmt: skip
    if api.address is not None:
        listeners.append(
            {"node": render.NODE, "protocol": "http", "ip_address": api.address[0],
             "port": api.address[1]}
        )  # fmt: skip
    return {
        "management_version": __version__,
        "product_name": "warrenmq",
        "product_version": __version__,
        "rabbitmq_version": "3.10.8",
        "rates_mode": "basic",
        "cluster_name": render.NODE,
        "node": render.NODE,
        "exchange_types": exchange_types(api, request, caller),
        "message_stats": stats,
        "queue_totals": totals,
        "object_totals": {
            "connections": len(connections),
            "channels": sum(len(view.sessions) for view in connections),
            "queues": queues,
            "exchanges": exchanges,
            "consumers": consumers,
        },
        "listeners": listeners,
        "sample_retention_policies": {"global": [600], "basic": [600], "detailed": [600]},
        "statistics_db_event_queue": 0,
        "disable_stats": False,
        "enable_queue_totals": True,
    }


def _with_samples(sampler: Sampler, query: Any, stats: dict[str, Any], totals: Any) -> None:
    """Add RabbitMQ's ``samples`` to the ``*_details`` asked for by ``msg_rates_age`` /
    ``msg_rates_incr`` (message rates) and ``lengths_age`` / ``lengths_incr`` (queue depths)."""
    for prefix, target, names in (
        ("msg_rates", stats, ("publish", "deliver_get", "ack", "redeliver")),
        ("lengths", totals, ("messages", "messages_ready", "messages_unacknowledged")),
    ):
        if f"{prefix}_age" not in query:
            continue
        try:
            age = float(query[f"{prefix}_age"])
            increment = float(query.get(f"{prefix}_incr", sampler.interval))
        except ValueError:
            continue
        for name in names:
            if name in GLOBAL_FIELDS:
                target[f"{name}_details"] = sampler.history_of(name, age, increment)


#: RabbitMQ's descriptions of the standard exchange types
STANDARD_TYPES = ("direct", "fanout", "headers", "topic")


def exchange_types(api: Api, request: Request, caller: Caller) -> list[dict[str, Any]]:
    return [
        {
            "name": name,
            "description": f"AMQP {name} exchange, as per the AMQP specification"
            if name in STANDARD_TYPES
            else (kind.__doc__ or "").strip().split("\n")[0],
            "enabled": True,
        }
        for name, kind in sorted(api.broker.exchange_types.items())
    ]


def nodes(api: Api, request: Request, caller: Caller) -> Any:
    caller.require_monitor()
    return [node_json(api)]


def node(api: Api, request: Request, caller: Caller) -> Any:
    caller.require_monitor()
    if segment(request, "node") != render.NODE:
        raise not_found()
    return node_json(api)


def node_json(api: Api) -> dict[str, Any]:
    broker = api.broker
    monitor = broker.disk_monitor
    limit = broker.memory_limit()
    free = None
    if monitor is not None:
        free = broker.settings.disk_free_gauge(monitor.directory)
    resident = broker.settings.memory_gauge()
    return {
        "name": render.NODE,
        "type": "disc",
        "running": True,
        "os_pid": str(os.getpid()),
        "uptime": render.uptime_ms(api.started),
        "mem_used": resident or broker.accounted_memory(),
        "mem_accounted": broker.accounted_memory(),
        "mem_limit": limit or 0,
        "mem_alarm": broker.memory_alarm,
        "disk_free": free or 0,
        "disk_free_limit": monitor.limit if monitor is not None else 0,
        "disk_free_alarm": broker.disk_alarm,
        "processors": os.cpu_count() or 1,
        "exchange_types": [{"name": name} for name in broker.exchange_types.names()],
        "enabled_plugins": sorted({source for _, source in _plugin_sources(broker)}),
        "db_dir": str(broker.settings.data_dir) if broker.settings.data_dir else None,
        "partitions": [],
        "rates_mode": "basic",
    }


def _plugin_sources(broker: Broker) -> list[tuple[str, str]]:
    return [(row[1], row[2]) for row in broker.plugins.registered()]


def vhosts(api: Api, request: Request, caller: Caller) -> Any:
    return [render.vhost_json(api.broker, name) for name in caller.visible_vhosts()]


def vhost(api: Api, request: Request, caller: Caller) -> Any:
    name = segment(request, "vhost")
    api.vhost(caller, name)
    return render.vhost_json(api.broker, name)


def queues(api: Api, request: Request, caller: Caller) -> Any:
    """Every queue; with no query, written as JSON text directly (10,000 queues in tens of
    milliseconds), and for a page by name only that page is rendered."""
    rates = api.sampler.queue_rates
    found = [queue for vhost in api.vhosts_of(caller, request) for queue in vhost.queues.values()]
    if not request.query_params:
        text = ",".join([render.queue_text(queue, api.sampler) for queue in found])
        return Response(f"[{text}]".encode(), media_type="application/json")
    page = named_page(request, found)
    if page is not None:
        chosen, number, size = page
        items = [
            render.queue_json(q, rates(q)) for q in chosen[(number - 1) * size : number * size]
        ]
        return paged(items, number, size, len(chosen), len(found))
    return [render.queue_json(queue, rates(queue)) for queue in found]


def queue(api: Api, request: Request, caller: Caller) -> Any:
    found = api.queue(caller, request)
    result = render.queue_json(found, api.sampler.queue_rates(found))
    result["consumer_details"] = [
        consumer
        for consumer in consumers(api, request, caller, all_vhosts=True)
        if consumer["queue"] == {"name": found.name, "vhost": found.vhost.name}
    ]
    result["incoming"] = []
    result["deliveries"] = []
    return result


def queue_bindings(api: Api, request: Request, caller: Caller) -> Any:
    found = api.queue(caller, request)
    return [
        render.binding_json(binding)
        for binding in sorted(found.incoming, key=lambda b: (b.source.name, b.routing_key))
    ]


def exchanges(api: Api, request: Request, caller: Caller) -> Any:
    return [
        render.exchange_json(exchange)
        for vhost in api.vhosts_of(caller, request)
        for exchange in vhost.exchanges.values()
    ]


def exchange(api: Api, request: Request, caller: Caller) -> Any:
    found = api.exchange(caller, request)
    result = render.exchange_json(found)
    result["incoming"] = []
    result["outgoing"] = []
    return result


def exchange_bindings_source(api: Api, request: Request, caller: Caller) -> Any:
    found = api.exchange(caller, request)
    return [render.binding_json(binding) for binding in found.bindings.values()]


def exchange_bindings_destination(api: Api, request: Request, caller: Caller) -> Any:
    found = api.exchange(caller, request)
    return [render.binding_json(binding) for binding in found.incoming]


def bindings(api: Api, request: Request, caller: Caller) -> Any:
    result: list[dict[str, Any]] = []
    for vhost in api.vhosts_of(caller, request):
        for exchange in vhost.exchanges.values():
            result.extend(render.binding_json(binding) for binding in exchange.bindings.values())
    return result


def connections(api: Api, request: Request, caller: Caller) -> Any:
    rates = api.sampler.connections
    by_name = {view.name: rates.get(connection, (None, (0.0, 0.0)))[1]
               for connection in list(api.broker.connections)
               if (view := connection.view()) is not None}  # fmt: skip
    views = api.connection_views(caller)
    if "vhost" in request.path_params:
        name = segment(request, "vhost")
        api.vhost(caller, name)
        views = [view for view in views if view.vhost == name]
    return [render.connection_json(view, by_name.get(view.name, (0.0, 0.0))) for view in views]


def connection(api: Api, request: Request, caller: Caller) -> Any:
    found, view = api.find_connection(caller, segment(request, "name"))
    return render.connection_json(view, api.sampler.connection_rates(found))


def connection_channels(api: Api, request: Request, caller: Caller) -> Any:
    _, view = api.find_connection(caller, segment(request, "name"))
    return [render.channel_json(view, session) for session in view.sessions]


def channels(api: Api, request: Request, caller: Caller) -> Any:
    views = api.connection_views(caller)
    if "vhost" in request.path_params:
        name = segment(request, "vhost")
        api.vhost(caller, name)
        views = [view for view in views if view.vhost == name]
    return [render.channel_json(view, session) for view in views for session in view.sessions]


def channel(api: Api, request: Request, caller: Caller) -> Any:
    name = segment(request, "name")
    for view in api.connection_views(caller):
        for session in view.sessions:
            if render.channel_name(view, session) == name:
                result = render.channel_json(view, session)
                result["consumer_details"] = [
                    render.consumer_json(view, session, consumer) for consumer in session.consumers
                ]
                return result
    raise not_found()


def consumers(
    api: Api, request: Request, caller: Caller, all_vhosts: bool = False
) -> list[dict[str, Any]]:
    """Consumers of the vhosts the caller may list (all of them, whoever's connection)."""
    if "vhost" in request.path_params and not all_vhosts:
        wanted = {api.vhost(caller, segment(request, "vhost")).name}
    else:
        wanted = set(caller.visible_vhosts())
    return [
        render.consumer_json(view, session, consumer)
        for view in api.broker.connection_views()
        for session in view.sessions
        for consumer in session.consumers
        if consumer.vhost in wanted
    ]


def users(api: Api, request: Request, caller: Caller) -> Any:
    caller.require_administrator()
    return [user_json(record) for record in api.broker.access.users.values()]


def user(api: Api, request: Request, caller: Caller) -> Any:
    caller.require_administrator()
    record = api.broker.access.users.get(segment(request, "user"))
    if record is None:
        raise not_found()
    return user_json(record)


def user_json(record: Any) -> dict[str, Any]:
    return {
        "name": record.name,
        "password_hash": record.password_hash or "",
        "hashing_algorithm": record.hashing_algorithm,
        "tags": list(record.tags),
        "limits": {},
    }


def permissions(api: Api, request: Request, caller: Caller) -> Any:
    caller.require_administrator()
    result = [
        {"user": user, "vhost": vhost, "configure": p.configure, "write": p.write, "read": p.read}
        for (user, vhost), p in sorted(api.broker.access.permissions.items())
    ]
    if "vhost" in request.path_params:
        result = [item for item in result if item["vhost"] == segment(request, "vhost")]
    if "user" in request.path_params:
        result = [item for item in result if item["user"] == segment(request, "user")]
    return result


def permission(api: Api, request: Request, caller: Caller) -> Any:
    found = permissions(api, request, caller)
    if not found:
        raise not_found()
    return found[0]


def policies(api: Api, request: Request, caller: Caller) -> Any:
    wanted = {vhost.name for vhost in api.vhosts_of(caller, request)}
    return [policy.as_json() for policy in api.broker.policies() if policy.vhost in wanted]


def extensions(api: Api, request: Request, caller: Caller) -> Any:
    return []
