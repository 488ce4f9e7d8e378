"""The Starlette application: every route of the API, ``/metrics``, and the web UI's files."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import FileResponse, PlainTextResponse, RedirectResponse, Response
from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import StaticFiles

from . import actions, api
from .api import Api
from .http import RawPathMiddleware, endpoint
from .metrics import metrics_text

STATIC = Path(__file__).parent / "static"

V = "{vhost}"
BINDING = "/api/bindings/{vhost}/e/{source}/{kind:kind}/{destination}"


def _routes() -> list[BaseRoute]:
    get = ["GET"]
    table: list[tuple[str, Callable[..., Any], list[str]]] = [
        ("/api/overview", api.overview, get),
        ("/api/whoami", api.whoami, get),
        ("/api/extensions", api.extensions, get),
        (f"/api/aliveness-test/{V}", actions.aliveness_test, get),
        ("/api/nodes", api.nodes, get),
        ("/api/nodes/{node}", api.node, get),
        ("/api/vhosts", api.vhosts, get),
        (f"/api/vhosts/{V}", api.vhost, get),
        (f"/api/vhosts/{V}", actions.put_vhost, ["PUT"]),
        (f"/api/vhosts/{V}", actions.delete_vhost, ["DELETE"]),
        (f"/api/vhosts/{V}/connections", api.connections, get),
        (f"/api/vhosts/{V}/channels", api.channels, get),
        ("/api/exchanges", api.exchanges, get),
        (f"/api/exchanges/{V}", api.exchanges, get),
        (f"/api/exchanges/{V}/{{name}}", api.exchange, get),
        (f"/api/exchanges/{V}/{{name}}", actions.put_exchange, ["PUT"]),
        (f"/api/exchanges/{V}/{{name}}", actions.delete_exchange, ["DELETE"]),
        (f"/api/exchanges/{V}/{{name}}/bindings/source", api.exchange_bindings_source, get),
        (f"/api/exchanges/{V}/{{name}}/bindings/destination",
         api.exchange_bindings_destination, get),
        (f"/api/exchanges/{V}/{{name}}/publish", actions.publish, ["POST"]),
        ("/api/queues", api.queues, get),
        (f"/api/queues/{V}", api.queues, get),
        (f"/api/queues/{V}/{{name}}", api.queue, get),
        (f"/api/queues/{V}/{{name}}", actions.put_queue, ["PUT"]),
        (f"/api/queues/{V}/{{name}}", actions.delete_queue, ["DELETE"]),
        (f"/api/queues/{V}/{{name}}/bindings", api.queue_bindings, get),
        (f"/api/queues/{V}/{{name}}/contents", actions.purge_queue, ["DELETE"]),
        (f"/api/queues/{V}/{{name}}/get", actions.get, ["POST"]),
        ("/api/bindings", api.bindings, get),
        (f"/api/bindings/{V}", api.bindings, get),
        (BINDING, actions.binding_list, get),
        (BINDING, actions.post_binding, ["POST"]),
        (BINDING + "/{props}", actions.binding, get),
        (BINDING + "/{props}", actions.delete_binding, ["DELETE"]),
        ("/api/connections", api.connections, get),
        ("/api/connections/{name}", api.connection, get),
        ("/api/connections/{name}", actions.delete_connection, ["DELETE"]),
        ("/api/connections/{name}/channels", api.connection_channels, get),
        ("/api/channels", api.channels, get),
        ("/api/channels/{name}", api.channel, get),
        ("/api/consumers", api.consumers, get),
        (f"/api/consumers/{V}", api.consumers, get),
        ("/api/users", api.users, get),
        ("/api/users/{user}", api.user, get),
        ("/api/users/{user}", actions.put_user, ["PUT"]),
        ("/api/users/{user}", actions.delete_user, ["DELETE"]),
        ("/api/users/{user}/permissions", api.permissions, get),
        ("/api/permissions", api.permissions, get),
        (f"/api/permissions/{V}/{{user}}", api.permission, get),
        (f"/api/permissions/{V}/{{user}}", actions.put_permission, ["PUT"]),
        (f"/api/permissions/{V}/{{user}}", actions.delete_permission, ["DELETE"]),
        (f"/api/vhosts/{V}/permissions", api.permissions, get),
        ("/api/policies", api.policies, get),
        (f"/api/policies/{V}", api.policies, get),
        ("/api/definitions", actions.get_definitions, get),
        ("/api/definitions", actions.post_definitions, ["POST"]),
        (f"/api/definitions/{V}", actions.get_definitions, get),
        (f"/api/definitions/{V}", actions.post_definitions, ["POST"]),
    ]  # fmt: skip
    routes: list[BaseRoute] = [
        Route(path, endpoint(handler), methods=methods) for path, handler, methods in table
    ]
    routes.append(Route("/metrics", metrics, methods=["GET"]))
    routes.append(Route("/metrics/per-object", metrics_per_object, methods=["GET"]))
    routes.append(Route("/api/{rest:path}", unknown, methods=["GET"]))
    if STATIC.is_dir():
        routes.append(Route("/", index, methods=["GET"]))
        routes.append(Mount("/static", StaticFiles(directory=STATIC), name="static"))
    else:
        routes.append(Route("/", lambda request: RedirectResponse("/api/overview")))
    return routes


async def metrics(request: Request) -> Response:
    """Prometheus' text format; no login, as RabbitMQ's prometheus plugin (bind the API to
    loopback or a private network if the numbers are private)."""
    text = metrics_text(request.app.state.api)
    return PlainTextResponse(text, media_type="text/plain; version=0.0.4; charset=utf-8")


async def metrics_per_object(request: Request) -> Response:
    """The same with a series per queue (RabbitMQ's ``/metrics/per-object``)."""
    text = metrics_text(request.app.state.api, per_object=True)
    return PlainTextResponse(text, media_type="text/plain; version=0.0.4; charset=utf-8")


async def index(request: Request) -> Response:
    return FileResponse(STATIC / "index.html")


async def unknown(request: Request) -> Response:
    from .auth import not_found
    from .http import error_response

    return error_response(not_found())


def _kind_convertor() -> None:
    from starlette.convertors import Convertor, register_url_convertor

    class KindConvertor(Convertor[str]):
        regex = "q|e"

        def convert(self, value: str) -> str:
            return value

        def to_string(self, value: str) -> str:
            return value

    register_url_convertor("kind", KindConvertor())


def create_app(state: Api) -> Starlette:
    _kind_convertor()
    app = Starlette(routes=_routes(), middleware=[Middleware(RawPathMiddleware)])
    app.state.api = state
    return app
