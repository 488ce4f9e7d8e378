"""Request plumbing shared by the handlers: JSON in and out, RabbitMQ's errors, paging.

Paths keep their percent-encoding while routing (``RawPathMiddleware``), so that a vhost
named ``/`` travels as ``%2F`` in one path segment as RabbitMQ's API expects; handlers decode
each segment with ``segment``.
"""

from __future__ import annotations

import inspect
import json
import logging
import re
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote

from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp, Receive, Scope, Send

from warrenmq.errors import (
    AccessRefused,
    BrokerError,
    NotFound,
    PreconditionFailed,
    ResourceLocked,
)
from warrenmq.failures import log_failure

from .auth import REALM, ApiError, Caller, bad_request, credentials, login

if TYPE_CHECKING:
    from .api import Api

log = logging.getLogger("warrenmq.management")

Handler = Callable[..., Any]


class RawPathMiddleware:
    """Route on the path as sent (``%2F`` stays one segment); handlers decode segments."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        raw = scope.get("raw_path")
        if scope["type"] == "http" and raw:
            scope = dict(scope)
            scope["path"] = raw.decode("latin-1").split("?", 1)[0]
        await self.app(scope, receive, send)


def segment(request: Request, name: str) -> str:
    return unquote(request.path_params[name])


def json_response(data: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    body = json.dumps(data, ensure_ascii=False, separators=(",", ":"), default=str)
    return Response(body.encode(), status, headers, media_type="application/json")


def error_response(error: ApiError) -> Response:
    headers = {"www-authenticate": REALM} if error.status == 401 else None
    return json_response({"error": error.error, "reason": error.reason}, error.status, headers)


def broker_error(error: BrokerError) -> ApiError:
    """A core refusal as RabbitMQ's API reports it."""
    if isinstance(error, NotFound):
        return ApiError(404, "Object Not Found", error.text)
    if isinstance(error, AccessRefused):
        return ApiError(401, "not_authorised", error.text)
    if isinstance(error, PreconditionFailed | ResourceLocked):
        return bad_request(error.text)
    return bad_request(error.text)


async def body_json(request: Request) -> dict[str, Any]:
    """The request's JSON object (an empty body is ``{}``); 400 ``not_json`` otherwise."""
    raw = await request.body()
    if not raw.strip():
        return {}
    try:
        data = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise bad_request("not_json") from None
    if not isinstance(data, dict):
        raise bad_request("not_json")
    return data


def endpoint(handler: Handler) -> Callable[[Request], Awaitable[Response]]:
    """A handler ``(api, request, caller)`` made into a Starlette endpoint: basic auth,
    JSON out, RabbitMQ's errors, and never a traceback for a client's bad input."""

    async def run(request: Request) -> Response:
        api: Api = request.app.state.api
        try:
            caller = await authenticate(api, request)
            result = handler(api, request, caller)
            if inspect.isawaitable(result):
                result = await result
            if isinstance(result, Response):
                return result
            return json_response(page(request, result) if isinstance(result, list) else result)
        except ApiError as error:
            return error_response(error)
        except BrokerError as error:
            return error_response(broker_error(error))
        except Exception as exc:  # a bug: this request fails, nothing else
            log_failure(log, f"{request.method} {request.url.path} failed", exc)
            return error_response(ApiError(500, "internal_error", f"{type(exc).__name__}"))

    run.__name__ = handler.__name__
    return run


async def authenticate(api: Api, request: Request) -> Caller:
    found = credentials(request.headers.get("authorization"))
    if found is None:
        raise ApiError(401, "not_authorized", "Login failed")
    peer = request.client.host if request.client else None
    user = await login(api.broker, found[0], found[1], peer)
    return Caller(api.broker, user)


# -- lists: RabbitMQ's sorting, filtering, paging and columns --------------------------------


def _key(item: dict[str, Any], path: list[str]) -> Any:
    value: Any = item
    for part in path:
        value = value.get(part) if isinstance(value, dict) else None
    return (value is None, value if isinstance(value, int | float | str) else str(value))


def page(request: Request, items: list[Any]) -> Any:
    """``items`` as asked by the query: ``sort``/``sort_reverse``, ``name`` (with
    ``use_regex``), ``page``/``page_size`` (a paged answer), ``columns``."""
    query = request.query_params
    if not query:
        return items
    total = len(items)
    name = query.get("name")
    if name:
        if query.get("use_regex") == "true":
            try:
                pattern = re.compile(name)
            except re.error as exc:
                raise bad_request(f"invalid regular expression: {exc}") from None
            items = [i for i in items if pattern.search(str(i.get("name", "")))]
        else:
            items = [i for i in items if name in str(i.get("name", ""))]
    sort = query.get("sort")
    if sort:
        path = sort.split(".")
        items = sorted(items, key=lambda i: _key(i, path))
    if query.get("sort_reverse") == "true":
        items.reverse()
    columns = query.get("columns")
    if columns:
        wanted = [column.split(".") for column in columns.split(",") if column]
        items = [_columns(item, wanted) for item in items]
    if "page" not in query:
        return items
    number, size = page_numbers(request)
    return paged(items[(number - 1) * size : number * size], number, size, len(items), total)


def page_numbers(request: Request) -> tuple[int, int]:
    query = request.query_params
    try:
        number = int(query["page"])
        size = int(query.get("page_size", "100"))
    except ValueError:
        raise bad_request("page and page_size must be integers") from None
    if number < 1 or not 1 <= size <= 500:
        raise bad_request("page must be 1 or more, page_size from 1 to 500")
    return number, size


def paged(items: list[Any], number: int, size: int, filtered: int, total: int) -> dict[str, Any]:
    """RabbitMQ's answer to a paged list."""
    return {
        "filtered_count": filtered,
        "item_count": len(items),
        "items": items,
        "page": number,
        "page_count": max(1, -(-filtered // size)),
        "page_size": size,
        "total_count": total,
    }


#: query keys of a list that the fast paths of long lists handle themselves
NAME_PAGING = frozenset({"page", "page_size", "name", "use_regex", "sort", "sort_reverse"})


def named_page(request: Request, objects: list[Any]) -> tuple[list[Any], int, int] | None:
    """For a list asked by page, filtered and sorted by name at most: the objects of the page
    (by their ``name``), the page number and size; None for any other query (the general
    path renders every item first)."""
    query = request.query_params
    if "page" not in query or not query.keys() <= NAME_PAGING:
        return None
    if query.get("sort", "name") != "name":
        return None
    name = query.get("name")
    if name:
        if query.get("use_regex") == "true":
            try:
                pattern = re.compile(name)
            except re.error as exc:
                raise bad_request(f"invalid regular expression: {exc}") from None
            objects = [o for o in objects if pattern.search(o.name)]
        else:
            objects = [o for o in objects if name in o.name]
    if "sort" in query:
        objects = sorted(objects, key=lambda o: o.name)
    if query.get("sort_reverse") == "true":
        objects.reverse()
    number, size = page_numbers(request)
    return objects, number, size


def _columns(item: dict[str, Any], wanted: list[list[str]]) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for path in wanted:
        value: Any = item
        for part in path:
            if not isinstance(value, dict) or part not in value:
                break
            value = value[part]
        else:
            target = result
            for part in path[:-1]:
                target = target.setdefault(part, {})
            target[path[-1]] = value
    return result
