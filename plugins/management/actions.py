"""The write side of the API: declare and delete exchanges, queues and bindings, purge, close
a connection, import definitions, and the testing helpers publish and get."""

from __future__ import annotations

import base64
import binascii
import logging
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

import anyio
from starlette.requests import Request
from starlette.responses import Response

from warrenmq import definitions
from warrenmq.access import Access, AccessError
from warrenmq.message import Message, Properties
from warrenmq.passwords import PBKDF2_SHA256 as PBKDF2
from warrenmq.passwords import RABBIT_SHA256, hash_password
from warrenmq.queue import ACK, REJECT, REQUEUE
from warrenmq.queue_arguments import message_ttl
from warrenmq.vhost import ROUTED

from . import render
from .auth import ApiError, Caller, bad_request, not_found
from .http import body_json, segment

if TYPE_CHECKING:
    from .api import Api

log = logging.getLogger("warrenmq.management")

NO_CONTENT = 204
CREATED = 201
#: bytes of a message body ``get`` returns unless the request's ``truncate`` says otherwise
GET_LIMIT = 50_000


def _flag(body: dict[str, Any], key: str, default: bool) -> bool:
    value = body.get(key, default)
    if isinstance(value, str) and value in ("true", "false"):
        return value == "true"
    if not isinstance(value, bool):
        raise bad_request(f"'{key}' must be true or false, got {value!r}")
    return value


def _arguments(body: dict[str, Any]) -> dict[str, Any]:
    arguments = body.get("arguments") or {}
    if not isinstance(arguments, dict):
        raise bad_request(f"'arguments' must be an object, got {arguments!r}")
    return arguments


def _created(existed: bool) -> Response:
    return Response(status_code=NO_CONTENT if existed else CREATED)


# -- exchanges ----------------------------------------------------------------------------------


async def put_exchange(api: Api, request: Request, caller: Caller) -> Response:
    vhost = api.vhost(caller, segment(request, "vhost"))
    name = segment(request, "name")
    body = await body_json(request)
    kind = body.get("type", "direct")  # RabbitMQ's default when none is given
    if not isinstance(kind, str) or not kind:
        raise bad_request(f"'type' must be an exchange type such as \"direct\", got {kind!r}")
    caller.require(vhost.name, "configure", "exchange", name)
    existed = name in vhost.exchanges
    vhost.declare_exchange(
        name,
        kind,
        durable=_flag(body, "durable", False),  # RabbitMQ 3.10: transient unless asked
        auto_delete=_flag(body, "auto_delete", False),
        internal=_flag(body, "internal", False),
        arguments=_arguments(body),
    )
    if not existed:
        log.debug(
            "exchange '%s' in vhost '%s' declared by %s (HTTP)", name, vhost.name, caller.name
        )
    return _created(existed)


def delete_exchange(api: Api, request: Request, caller: Caller) -> Response:
    exchange = api.exchange(caller, request)
    caller.require(exchange.vhost.name, "configure", "exchange", exchange.name)
    exchange.vhost.delete_exchange(
        exchange.name, if_unused=request.query_params.get("if-unused") == "true"
    )
    log.debug("exchange '%s' in vhost '%s' deleted by %s (HTTP)",
              exchange.name, exchange.vhost.name, caller.name)  # fmt: skip
    return Response(status_code=NO_CONTENT)


# -- queues -------------------------------------------------------------------------------------


async def put_queue(api: Api, request: Request, caller: Caller) -> Response:
    vhost = api.vhost(caller, segment(request, "vhost"))
    name = segment(request, "name")
    if not name:
        raise bad_request("a queue name is required")
    body = await body_json(request)
    caller.require(vhost.name, "configure", "queue", name)
    arguments = _arguments(body)
    kind = body.get("type")
    if isinstance(kind, str) and kind and kind != "classic":
        arguments.setdefault("x-queue-type", kind)
    existed = name in vhost.queues
    vhost.declare_queue(
        name,
        durable=_flag(body, "durable", False),  # RabbitMQ 3.10: transient unless asked
        auto_delete=_flag(body, "auto_delete", False),
        arguments=arguments,
    )
    if not existed:
        log.debug("queue '%s' in vhost '%s' declared by %s (HTTP)", name, vhost.name, caller.name)
    return _created(existed)


def delete_queue(api: Api, request: Request, caller: Caller) -> Response:
    queue = api.queue(caller, request)
    caller.require(queue.vhost.name, "configure", "queue", queue.name)
    query = request.query_params
    queue.vhost.delete_queue(
        queue.name,
        if_unused=query.get("if-unused") == "true",
        if_empty=query.get("if-empty") == "true",
    )
    log.debug("queue '%s' in vhost '%s' deleted by %s (HTTP)",
              queue.name, queue.vhost.name, caller.name)  # fmt: skip
    return Response(status_code=NO_CONTENT)


def purge_queue(api: Api, request: Request, caller: Caller) -> Response:
    queue = api.queue(caller, request)
    caller.require(queue.vhost.name, "read", "queue", queue.name)
    count = queue.vhost.purge_queue(queue.name)
    log.debug("queue '%s' in vhost '%s' purged of %d messages by %s (HTTP)",
              queue.name, queue.vhost.name, count, caller.name)  # fmt: skip
    return Response(status_code=NO_CONTENT)


# -- bindings -----------------------------------------------------------------------------------


def _binding_ends(api: Api, request: Request, caller: Caller) -> tuple[Any, Any, Any]:
    vhost = api.vhost(caller, segment(request, "vhost"))
    source = vhost.exchanges.get(segment(request, "source"))
    kind = request.path_params["kind"]
    name = segment(request, "destination")
    destination = vhost.queues.get(name) if kind == "q" else vhost.exchanges.get(name)
    if source is None or destination is None:
        raise not_found()
    return vhost, source, destination


def binding_list(api: Api, request: Request, caller: Caller) -> Any:
    _, source, destination = _binding_ends(api, request, caller)
    return [
        render.binding_json(binding)
        for binding in source.bindings.values()
        if binding.destination is destination
    ]


async def post_binding(api: Api, request: Request, caller: Caller) -> Response:
    vhost, source, destination = _binding_ends(api, request, caller)
    body = await body_json(request)
    routing_key = body.get("routing_key", "")
    if not isinstance(routing_key, str):
        raise bad_request(f"'routing_key' must be a string, got {routing_key!r}")
    arguments = _arguments(body)
    caller.require(vhost.name, "write", destination.kind, destination.name)
    caller.require(vhost.name, "read", "exchange", source.name)
    vhost.bind(destination, source.name, routing_key, arguments)
    log.debug("binding %s -> %s '%s' (%r) in vhost '%s' added by %s (HTTP)", source.name,
              destination.kind, destination.name, routing_key, vhost.name, caller.name)  # fmt: skip
    key = render.properties_key(routing_key, arguments)
    location = request.url.path.rstrip("/") + "/" + quote(key, safe="~")
    return Response(status_code=CREATED, headers={"location": location})


def _binding(api: Api, request: Request, caller: Caller) -> Any:
    _, source, destination = _binding_ends(api, request, caller)
    wanted = segment(request, "props")
    for binding in source.bindings.values():
        if binding.destination is destination and (
            render.properties_key(binding.routing_key, binding.arguments) == wanted
        ):
            return binding
    raise not_found()


def binding(api: Api, request: Request, caller: Caller) -> Any:
    return render.binding_json(_binding(api, request, caller))


def delete_binding(api: Api, request: Request, caller: Caller) -> Response:
    found = _binding(api, request, caller)
    vhost = found.source.vhost
    destination = found.destination
    caller.require(vhost.name, "write", destination.kind, destination.name)
    caller.require(vhost.name, "read", "exchange", found.source.name)
    vhost.unbind(destination, found.source.name, found.routing_key, found.arguments)
    log.debug("binding %s -> %s '%s' (%r) in vhost '%s' removed by %s (HTTP)", found.source.name,
              destination.kind, destination.name, found.routing_key, vhost.name,
              caller.name)  # fmt: skip
    return Response(status_code=NO_CONTENT)


# -- connections --------------------------------------------------------------------------------


def delete_connection(api: Api, request: Request, caller: Caller) -> Response:
    connection, view = api.find_connection(caller, segment(request, "name"))
    if not caller.is_administrator and view.user != caller.name:
        raise ApiError(401, "not_authorised", "Not administrator user")
    reason = request.headers.get("x-reason", "Closed via management plugin")
    log.info("closing connection %s at the request of %s (HTTP): %s", view.name, caller.name,
             reason)  # fmt: skip
    connection.shutdown(reason)
    return Response(status_code=NO_CONTENT)


# -- definitions --------------------------------------------------------------------------------


def get_definitions(api: Api, request: Request, caller: Caller) -> Any:
    caller.require_administrator()
    exported = definitions.export(api.broker)
    if "vhost" in request.path_params:
        name = segment(request, "vhost")
        api.vhost(caller, name)
        return {
            key: [item for item in exported[key] if item.get("vhost", name) == name]
            for key in ("exchanges", "queues", "bindings", "policies")
        }
    return exported


async def post_definitions(api: Api, request: Request, caller: Caller) -> Response:
    caller.require_administrator()
    body = await body_json(request)
    if "vhost" in request.path_params:
        name = segment(request, "vhost")
        api.vhost(caller, name)
        body = {
            key: [{**item, "vhost": name} for item in body.get(key, []) if isinstance(item, dict)]
            for key in ("exchanges", "queues", "bindings", "policies")
        }
    try:
        parsed = definitions.parse(body, "the posted definitions")
        definitions.apply(api.broker, parsed)
    except definitions.DefinitionsError as error:
        raise bad_request(str(error)) from None
    log.info("imported definitions over HTTP from %s: %s", caller.name, parsed.summary())
    return Response(status_code=NO_CONTENT)


# -- testing helpers: publish and get ----------------------------------------------------------


_PROPERTY_TYPES = {
    "content_type": str, "content_encoding": str, "headers": dict, "delivery_mode": int,
    "priority": int, "correlation_id": str, "reply_to": str, "expiration": str,
    "message_id": str, "timestamp": int, "type": str, "user_id": str, "app_id": str,
}  # fmt: skip


def _properties(value: Any) -> Properties:
    if value in (None, []):
        return Properties()
    if not isinstance(value, dict):
        raise bad_request(f"'properties' must be an object, got {value!r}")
    fields: dict[str, Any] = {}
    for key, item in value.items():
        kind = _PROPERTY_TYPES.get(key)
        if kind is None:
            raise bad_request(f"unknown message property '{key}'")
        if not isinstance(item, kind) or isinstance(item, bool):
            raise bad_request(f"message property '{key}' must be a {kind.__name__}, got {item!r}")
        fields[key] = item
    return Properties(**fields)


async def publish(api: Api, request: Request, caller: Caller) -> Any:
    exchange = api.exchange(caller, request)
    vhost = exchange.vhost
    body = await body_json(request)
    routing_key = body.get("routing_key", "")
    payload = body.get("payload", "")
    encoding = body.get("payload_encoding", "string")
    if not isinstance(routing_key, str) or not isinstance(payload, str):
        raise bad_request("'routing_key' and 'payload' must be strings")
    if encoding == "string":
        data = payload.encode()
    elif encoding == "base64":
        try:
            data = base64.b64decode(payload, validate=True)
        except binascii.Error:
            raise bad_request("payload is not valid base64") from None
    else:
        raise bad_request(f'payload_encoding must be "string" or "base64", got {encoding!r}')
    caller.require(vhost.name, "write", "exchange", exchange.name)
    properties = _properties(body.get("properties"))
    if properties.user_id is not None and properties.user_id != caller.name:
        raise bad_request(f"user_id property set to '{properties.user_id}' but authenticated "
                          f"user was '{caller.name}'")  # fmt: skip
    message = Message(exchange.name, routing_key, data, properties)
    if properties.expiration is not None:
        message.ttl = message_ttl(properties.expiration)
    return {"routed": vhost.publish(exchange.name, message) == ROUTED}


async def get(api: Api, request: Request, caller: Caller) -> Any:
    queue = api.queue(caller, request)
    body = await body_json(request)
    count = body.get("count", 1)
    ackmode = body.get("ackmode", "ack_requeue_true")
    encoding = body.get("encoding", "auto")
    truncate = body.get("truncate", GET_LIMIT)
    if isinstance(count, str) and count.isdigit():
        count = int(count)
    if not isinstance(count, int) or isinstance(count, bool) or count < 1:
        raise bad_request(f"'count' must be a positive integer, got {count!r}")
    if ackmode not in ("ack_requeue_true", "ack_requeue_false", "reject_requeue_true",
                       "reject_requeue_false"):  # fmt: skip
        raise bad_request(f"unknown ackmode {ackmode!r}")
    if encoding not in ("auto", "base64"):
        raise bad_request(f'\'encoding\' must be "auto" or "base64", got {encoding!r}')
    if isinstance(truncate, str) and truncate.isdigit():
        truncate = int(truncate)
    if not isinstance(truncate, int) or truncate < 0:
        raise bad_request(f"'truncate' must be a number of bytes, got {truncate!r}")
    caller.require(queue.vhost.name, "read", "queue", queue.name)
    api.vhost(caller, queue.vhost.name).get_queue(queue.name)  # 405 if exclusive to another
    taken = []
    result = []
    for _ in range(count):
        got = queue.get(no_ack=False)
        if got is None:
            break
        message, entry = got
        taken.append(entry)
        result.append(_message_json(message, entry, queue.ready_count, encoding, truncate))
    if taken:
        if ackmode.endswith("requeue_true"):
            outcome = REQUEUE
        else:  # a rejected message is dead-lettered, if the queue says where
            outcome = REJECT if ackmode.startswith("reject") else ACK
        queue.settle(taken, outcome)
    return result


def _message_json(
    message: Message, entry: Any, remaining: int, encoding: str, truncate: int
) -> dict[str, Any]:
    body = message.body[:truncate]
    payload: str
    if encoding == "auto":
        try:
            payload, payload_encoding = bytes(body).decode(), "string"
        except UnicodeDecodeError:
            payload, payload_encoding = base64.b64encode(body).decode(), "base64"
    else:
        payload, payload_encoding = base64.b64encode(body).decode(), "base64"
    return {
        "payload_bytes": len(message.body),
        "redelivered": entry.redelivered,
        "exchange": message.exchange,
        "routing_key": message.routing_key,
        "message_count": remaining,
        "properties": _properties_json(message.properties),
        "payload": payload,
        "payload_encoding": payload_encoding,
    }


def _properties_json(properties: Properties) -> dict[str, Any]:
    fields = {}
    for name in _PROPERTY_TYPES:
        value = getattr(properties, name)
        if value is not None:
            fields[name] = render.jsonable(value)
    return fields


# -- users, permissions and virtual hosts (administrators) ------------------------------------


def _access_change(api: Api, change: Any) -> None:
    try:
        api.broker.change_access(change)
    except AccessError as error:
        raise bad_request(str(error)) from None


def _tags(value: Any) -> tuple[str, ...]:
    if isinstance(value, str):
        return tuple(tag.strip() for tag in value.split(",") if tag.strip())
    if isinstance(value, list) and all(isinstance(tag, str) for tag in value):
        return tuple(value)
    raise bad_request(f"'tags' must be a comma-separated string or a list, got {value!r}")


async def put_user(api: Api, request: Request, caller: Caller) -> Response:
    caller.require_administrator()
    name = segment(request, "user")
    body = await body_json(request)
    tags = _tags(body.get("tags", ""))
    password, password_hash = body.get("password"), body.get("password_hash")
    algorithm = body.get("hashing_algorithm", RABBIT_SHA256)
    if password is not None and not isinstance(password, str):
        raise bad_request("'password' must be a string")
    if password is None and password_hash is None:
        raise bad_request('give a password or a password_hash ("" for no password login)')
    if password is not None:  # PBKDF2 takes ~0.2 s: not on the event loop
        password_hash, algorithm = await anyio.to_thread.run_sync(hash_password, password), PBKDF2
    existed = name in api.broker.access.users

    def change(access: Access) -> None:
        if name not in access.users:
            access.add_user(name, tags=tags)
        access.set_tags(name, tags)
        if password_hash:
            access.set_password_hash(name, password_hash, algorithm)
        else:
            access.clear_password(name)

    _access_change(api, change)
    log.info("user '%s' %s by %s (HTTP)", name, "updated" if existed else "added", caller.name)
    return _created(existed)


def delete_user(api: Api, request: Request, caller: Caller) -> Response:
    caller.require_administrator()
    name = segment(request, "user")
    if name not in api.broker.access.users:
        raise not_found()
    _access_change(api, lambda access: access.delete_user(name))
    log.info("user '%s' deleted by %s (HTTP)", name, caller.name)
    return Response(status_code=NO_CONTENT)


async def put_permission(api: Api, request: Request, caller: Caller) -> Response:
    caller.require_administrator()
    vhost, user = segment(request, "vhost"), segment(request, "user")
    body = await body_json(request)
    if vhost not in api.broker.access.vhosts and vhost in api.broker.vhosts:
        _access_change(api, lambda access: access.add_vhost(vhost))  # a configured vhost
    kinds = [body.get(kind, "") for kind in ("configure", "write", "read")]
    existed = (user, vhost) in api.broker.access.permissions
    _access_change(api, lambda access: access.set_permissions(user, vhost, *kinds))
    log.info("permissions of user '%s' in vhost '%s' set by %s (HTTP)", user, vhost, caller.name)
    return _created(existed)


def delete_permission(api: Api, request: Request, caller: Caller) -> Response:
    caller.require_administrator()
    vhost, user = segment(request, "vhost"), segment(request, "user")
    if (user, vhost) not in api.broker.access.permissions:
        raise not_found()
    _access_change(api, lambda access: access.clear_permissions(user, vhost))
    log.info("permissions of user '%s' in vhost '%s' cleared by %s (HTTP)", user, vhost,
             caller.name)  # fmt: skip
    return Response(status_code=NO_CONTENT)


async def put_vhost(api: Api, request: Request, caller: Caller) -> Response:
    caller.require_administrator()
    name = segment(request, "vhost")
    body = await body_json(request)
    description = body.get("description", "")
    if not isinstance(description, str):
        raise bad_request("'description' must be a string")
    existed = name in api.broker.vhosts

    def change(access: Access) -> None:
        if name in access.vhosts:
            access.vhosts[name] = description
        else:
            access.add_vhost(name, description)
        # as RabbitMQ: the user who creates a vhost gets full permissions in it
        if not existed and caller.name in access.users:
            access.set_permissions(caller.name, name, ".*", ".*", ".*")

    _access_change(api, change)
    if not existed:
        log.info("vhost '%s' added by %s (HTTP)", name, caller.name)
    return _created(existed)


def delete_vhost(api: Api, request: Request, caller: Caller) -> Response:
    caller.require_administrator()
    name = segment(request, "vhost")
    if name not in api.broker.access.vhosts:
        raise not_found()
    _access_change(api, lambda access: access.delete_vhost(name))
    log.info("vhost '%s' deleted by %s (HTTP)", name, caller.name)
    return Response(status_code=NO_CONTENT)


def aliveness_test(api: Api, request: Request, caller: Caller) -> Any:
    """RabbitMQ's health check: declare the queue ``aliveness-test``, publish a message to it
    through the default exchange and get it back."""
    vhost = api.vhost(caller, segment(request, "vhost"))
    caller.require(vhost.name, "configure", "queue", "aliveness-test")
    caller.require(vhost.name, "write", "exchange", "")
    caller.require(vhost.name, "read", "queue", "aliveness-test")
    queue = vhost.declare_queue("aliveness-test")
    vhost.publish("", Message("", "aliveness-test", b"test_message", Properties()))
    got = queue.get(no_ack=True)
    if got is None or got[0].body != b"test_message":
        return {"status": "failed", "reason": "the test message did not come back"}
    return {"status": "ok"}
