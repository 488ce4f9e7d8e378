"""``warrenmq ctl``: look at and steer a running broker through its management HTTP API.

The rabbitmqctl-like commands (``list queues``, ``close connection``, ``purge queue``,
``export``/``import`` definitions, ``status``) call the RabbitMQ-compatible API that the
management plugin serves (``warrenmq run --management-port 15672``), so they work against
RabbitMQ's management plugin too. Only the standard library is used: the command needs
nothing the broker does not.

Exit status: 0 on success; 1 when the API cannot be reached; 2 when it refuses (a login, a
permission, something not found) or the command line or a file is wrong. Messages go to
stderr, output to stdout: a table for people, or ``--format json`` for scripts.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import sys
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import quote

DEFAULT_URL = "http://127.0.0.1:15672"
USER_VARIABLE = "WARRENMQ_USER"
PASSWORD_VARIABLE = "WARRENMQ_PASSWORD"
URL_VARIABLE = "WARRENMQ_URL"
TIMEOUT = 30.0


class CtlError(Exception):
    """A failed call; ``status`` is the exit status (1 unreachable, 2 refused or bad)."""

    def __init__(self, message: str, status: int = 2) -> None:
        super().__init__(message)
        self.status = status


# -- what each list shows: rabbitmqctl's column names -> how to read them from the API's JSON ---

Column = Callable[[dict[str, Any]], Any]


def _field(path: str) -> Column:
    parts = path.split(".")

    def read(item: dict[str, Any]) -> Any:
        value: Any = item
        for part in parts:
            value = value.get(part) if isinstance(value, dict) else None
        return value

    return read


def _constant(value: Any) -> Column:
    return lambda item: value


#: list kind -> (API path, per vhost?, default columns, column aliases)
LISTS: dict[str, tuple[str, bool, list[str], dict[str, Column]]] = {
    "queues": ("queues", True, ["name", "messages", "consumers"], {}),
    "exchanges": ("exchanges", True, ["name", "type"], {}),
    "bindings": (
        "bindings",
        True,
        ["source_name", "source_kind", "destination_name", "destination_kind", "routing_key",
         "arguments"],
        {
            "source_name": _field("source"),
            "source_kind": _constant("exchange"),
            "destination_name": _field("destination"),
            "destination_kind": _field("destination_type"),
        },
    ),
    "connections": ("connections", False, ["name", "user", "peer_host", "peer_port", "state"],
                    {}),
    "channels": ("channels", False, ["name", "user", "consumer_count", "messages_unacknowledged"],
                 {}),
    "consumers": (
        "consumers",
        True,
        ["queue_name", "channel", "consumer_tag", "ack_required", "prefetch_count", "active"],
        {"queue_name": _field("queue.name"), "channel": _field("channel_details.name")},
    ),
    "users": ("users", False, ["user", "tags"], {"user": _field("name")}),
    "vhosts": ("vhosts", False, ["name"], {}),
    "permissions": ("permissions", True, ["user", "configure", "write", "read"], {}),
}  # fmt: skip


def add_parser(commands: Any) -> None:
    """Add ``ctl`` to the ``warrenmq`` subcommands."""
    ctl = commands.add_parser(
        "ctl",
        help="look at and steer a running broker (through its management HTTP API)",
        description="Commands against a running broker's management HTTP API (warrenmq run "
        "--management-port 15672). Credentials: --user/--password, else $WARRENMQ_USER and "
        "$WARRENMQ_PASSWORD, else guest/guest. Exit status 1: the API cannot be reached; 2: "
        "it refused the call, or the command is wrong.",
    )
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--url",
        default=argparse.SUPPRESS,
        help=f"the management API (default: ${URL_VARIABLE}, else {DEFAULT_URL})",
    )
    common.add_argument("--user", "-u", default=argparse.SUPPRESS, help="user name")
    common.add_argument("--password", default=argparse.SUPPRESS, help="password")
    common.add_argument(
        "--format",
        choices=("table", "json"),
        default=argparse.SUPPRESS,
        help="table for people (default), json for scripts",
    )
    common.add_argument(
        "--vhost",
        "-p",
        default=argparse.SUPPRESS,
        help="virtual host of the listed, purged, exported things (default: /)",
    )
    for action in common._actions:  # the same options before the subcommand
        ctl._add_action(action)
    actions = ctl.add_subparsers(dest="ctl_command", metavar="COMMAND", required=True)
    listing = actions.add_parser(
        "list",
        parents=[common],
        help="list queues, exchanges, bindings, connections, channels, consumers, users, "
        "vhosts or permissions",
        description="List things with rabbitmqctl's column names; name other columns (any "
        "field of the API's JSON, dotted for nested ones) to show those instead.",
    )
    listing.add_argument("kind", choices=sorted(LISTS))
    listing.add_argument("columns", nargs="*", metavar="COLUMN")
    close = actions.add_parser("close", parents=[common], help="close a connection")
    close.add_argument("what", choices=["connection"])
    close.add_argument("name", metavar="NAME", help="the connection's name (list connections)")
    close.add_argument("--reason", default="Closed via warrenmq ctl", help="told to the client")
    purge = actions.add_parser("purge", parents=[common], help="drop a queue's ready messages")
    purge.add_argument("what", choices=["queue"])
    purge.add_argument("name", metavar="NAME")
    export = actions.add_parser(
        "export", parents=[common], help="write the broker's definitions (RabbitMQ's JSON)"
    )
    export.add_argument("file", metavar="FILE", help="where to write them, - for stdout")
    import_ = actions.add_parser(
        "import", parents=[common], help="declare the contents of a definitions file"
    )
    import_.add_argument("file", metavar="FILE", help="RabbitMQ's JSON format, - for stdin")
    actions.add_parser("status", parents=[common], help="the broker's version, listeners, totals")


# -- the HTTP calls ------------------------------------------------------------------------------


class Api:
    def __init__(self, url: str, user: str, password: str) -> None:
        self.url = url.rstrip("/")
        token = base64.b64encode(f"{user}:{password}".encode()).decode()
        self.headers = {"authorization": f"Basic {token}"}

    def call(
        self, method: str, path: str, body: Any = None, headers: dict[str, str] | None = None
    ) -> Any:
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(
            self.url + path, data=data, method=method, headers={**self.headers, **(headers or {})}
        )
        if data is not None:
            request.add_header("content-type", "application/json")
        try:
            with urllib.request.urlopen(request, timeout=TIMEOUT) as response:
                text = response.read()
        except urllib.error.HTTPError as error:
            raise CtlError(_refusal(error)) from None
        except (urllib.error.URLError, OSError) as error:
            reason = getattr(error, "reason", error)
            raise CtlError(f"cannot reach the management API at {self.url}: {reason}", 1) from None
        if not text:
            return None
        try:
            return json.loads(text)
        except ValueError:
            raise CtlError(f"{self.url}{path} did not answer JSON") from None


def _refusal(error: urllib.error.HTTPError) -> str:
    try:
        reason = json.loads(error.read()).get("reason")
    except (ValueError, AttributeError, OSError):
        reason = None
    text = {401: "refused", 404: "not found"}.get(error.code, "failed")
    return f"{reason or error.reason} (HTTP {error.code} {text})"


# -- output ------------------------------------------------------------------------------------


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list):
        return ",".join(_cell(item) for item in value)
    if isinstance(value, dict):
        return json.dumps(value, separators=(",", ":")) if value else ""
    return str(value)


def print_table(columns: list[str], rows: list[list[Any]]) -> None:
    cells = [columns] + [[_cell(value) for value in row] for row in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(columns))]
    for row in cells:
        print(
            "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        )


# -- commands ----------------------------------------------------------------------------------


def _list(api: Api, args: argparse.Namespace, vhost: str, output: str) -> None:
    path, per_vhost, defaults, aliases = LISTS[args.kind]
    url = f"/api/{path}" + (f"/{quote(vhost, safe='')}" if per_vhost else "")
    if args.kind == "permissions":
        url = f"/api/vhosts/{quote(vhost, safe='')}/permissions"
    items = api.call("GET", url) or []
    columns = args.columns or defaults
    readers = [aliases.get(column) or _field(column) for column in columns]
    rows = [[read(item) for read in readers] for item in items]
    if output == "json":
        print(json.dumps([dict(zip(columns, row, strict=True)) for row in rows], indent=2))
    else:
        print_table(columns, rows)


def _status(api: Api, output: str) -> None:
    overview = api.call("GET", "/api/overview")
    if output == "json":
        print(json.dumps(overview, indent=2))
        return
    totals = overview.get("object_totals", {})
    queued = overview.get("queue_totals", {})
    stats = overview.get("message_stats", {})
    product = overview.get("product_name", "RabbitMQ")
    version = overview.get("product_version", overview.get("rabbitmq_version", "?"))
    print(f"{product} {version} on node {overview.get('node', '?')}")
    print("listeners:")
    for listener in overview.get("listeners", []):
        print(f"  {listener.get('protocol')}  {listener.get('ip_address')}:{listener.get('port')}")
    print("totals:")
    for key in ("connections", "channels", "queues", "exchanges", "consumers"):
        print(f"  {key}: {totals.get(key, 0)}")
    print("messages:")
    for key in ("messages", "messages_ready", "messages_unacknowledged"):
        print(f"  {key}: {queued.get(key, 0)}")
    for key in ("publish", "deliver_get", "ack"):
        rate = stats.get(f"{key}_details", {}).get("rate", 0.0)
        print(f"  {key}: {stats.get(key, 0)} ({rate}/s)")


def _export(api: Api, file: str, vhost: str | None) -> None:
    path = "/api/definitions" + (f"/{quote(vhost, safe='')}" if vhost else "")
    text = json.dumps(api.call("GET", path), indent=2) + "\n"
    if file == "-":
        sys.stdout.write(text)
        return
    try:
        Path(file).write_text(text, encoding="utf-8")
    except OSError as error:
        raise CtlError(f"cannot write {file}: {error.strerror}") from None
    print(f"definitions written to {file}", file=sys.stderr)


def _import(api: Api, file: str, vhost: str | None) -> None:
    try:
        text = sys.stdin.read() if file == "-" else Path(file).read_text(encoding="utf-8")
    except OSError as error:
        raise CtlError(f"cannot read {file}: {error.strerror}") from None
    try:
        data = json.loads(text)
    except ValueError as error:
        raise CtlError(f"{file}: invalid JSON: {error}") from None
    path = "/api/definitions" + (f"/{quote(vhost, safe='')}" if vhost else "")
    api.call("POST", path, data)
    print(f"definitions imported from {file}", file=sys.stderr)


def run(args: argparse.Namespace) -> int:
    options = vars(args)
    url = options.get("url") or os.environ.get(URL_VARIABLE) or DEFAULT_URL
    user = options.get("user") or os.environ.get(USER_VARIABLE) or "guest"
    password = options.get("password")
    if password is None:
        password = os.environ.get(PASSWORD_VARIABLE, "guest")
    output = options.get("format", "table")
    vhost = options.get("vhost")
    api = Api(url, user, password)
    try:
        command = args.ctl_command
        if command == "list":
            _list(api, args, vhost or "/", output)
        elif command == "close":
            name = quote(args.name, safe="")
            api.call("DELETE", f"/api/connections/{name}", headers={"x-reason": args.reason})
            print(f"connection {args.name} closed", file=sys.stderr)
        elif command == "purge":
            where = f"{quote(vhost or '/', safe='')}/{quote(args.name, safe='')}"
            api.call("DELETE", f"/api/queues/{where}/contents")
            print(f"queue {args.name} purged", file=sys.stderr)
        elif command == "export":
            _export(api, args.file, vhost)
        elif command == "import":
            _import(api, args.file, vhost)
        elif command == "status":
            _status(api, output)
    except CtlError as error:
        print(f"warrenmq ctl: {error}", file=sys.stderr)
        return error.status
    except BrokenPipeError:  # the reader went away (`| head`): stop quietly
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    return 0
