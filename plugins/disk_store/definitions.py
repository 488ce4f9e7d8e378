"""Durable definitions in SQLite (standard library): read-mostly, off the message path.

WAL journal with ``synchronous=FULL``: a declare returns after its row is on disk, so a
queue exists on disk before any message confirmed into it. Arguments are kept as JSON with
tags for the field-table types JSON lacks (bytes, dates, decimals, nested tables), readable
with the ``sqlite3`` shell.
"""

from __future__ import annotations

import base64
import datetime
import decimal
import json
import sqlite3
from pathlib import Path
from typing import Any

from warrenmq.store import BindingDefinition, Definitions, ExchangeDefinition, QueueDefinition

SCHEMA = """
CREATE TABLE IF NOT EXISTS exchanges (
    vhost TEXT NOT NULL, name TEXT NOT NULL, type TEXT NOT NULL,
    auto_delete INTEGER NOT NULL, internal INTEGER NOT NULL, arguments TEXT NOT NULL,
    PRIMARY KEY (vhost, name));
CREATE TABLE IF NOT EXISTS queues (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    vhost TEXT NOT NULL, name TEXT NOT NULL,
    auto_delete INTEGER NOT NULL, arguments TEXT NOT NULL,
    UNIQUE (vhost, name));
CREATE TABLE IF NOT EXISTS bindings (
    vhost TEXT NOT NULL, source TEXT NOT NULL, destination_kind TEXT NOT NULL,
    destination TEXT NOT NULL, routing_key TEXT NOT NULL, arguments TEXT NOT NULL,
    PRIMARY KEY (vhost, source, destination_kind, destination, routing_key, arguments));
CREATE TABLE IF NOT EXISTS logs (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    vhost TEXT NOT NULL, name TEXT NOT NULL,
    UNIQUE (vhost, name));
"""


def _tagged(value: Any) -> Any:
    if isinstance(value, bool | int | float | str) or value is None:
        return value
    if isinstance(value, bytes | bytearray):
        return {"$bytes": base64.b64encode(bytes(value)).decode()}
    if isinstance(value, dict):
        return {"$table": {str(key): _tagged(item) for key, item in value.items()}}
    if isinstance(value, list | tuple):
        return [_tagged(item) for item in value]
    if isinstance(value, datetime.datetime):
        return {"$datetime": value.isoformat()}
    if isinstance(value, decimal.Decimal):
        return {"$decimal": str(value)}
    return {"$text": str(value)}


def _untagged(value: Any) -> Any:
    if isinstance(value, list):
        return [_untagged(item) for item in value]
    if not isinstance(value, dict):
        return value
    ((tag, inner),) = value.items()
    if tag == "$bytes":
        return base64.b64decode(inner)
    if tag == "$table":
        return {key: _untagged(item) for key, item in inner.items()}
    if tag == "$datetime":
        return datetime.datetime.fromisoformat(inner)
    if tag == "$decimal":
        return decimal.Decimal(inner)
    return inner


def encode_arguments(arguments: dict[str, Any]) -> str:
    return json.dumps(_tagged(dict(arguments))["$table"], sort_keys=True)


def decode_arguments(text: str) -> dict[str, Any]:
    return _untagged({"$table": json.loads(text)})  # type: ignore[no-any-return]


class DefinitionsFile:
    """The SQLite database of one data directory."""

    def __init__(self, path: Path) -> None:
        self.db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=FULL")
        self.db.executescript(SCHEMA)

    def close(self) -> None:
        self.db.close()

    def load(self) -> tuple[Definitions, dict[tuple[str, str], int]]:
        """Everything kept, and each queue's id (its directory's name)."""
        found = Definitions()
        for vhost, name, type_, auto_delete, internal, arguments in self.db.execute(
            "SELECT vhost, name, type, auto_delete, internal, arguments FROM exchanges"
        ):
            found.exchanges.append(
                ExchangeDefinition(
                    vhost,
                    name,
                    type_,
                    bool(auto_delete),
                    bool(internal),
                    decode_arguments(arguments),
                )  # fmt: skip
            )
        ids: dict[tuple[str, str], int] = {}
        for queue_id, vhost, name, auto_delete, arguments in self.db.execute(
            "SELECT id, vhost, name, auto_delete, arguments FROM queues ORDER BY id"
        ):
            found.queues.append(
                QueueDefinition(vhost, name, bool(auto_delete), decode_arguments(arguments))
            )
            ids[(vhost, name)] = queue_id
        for vhost, source, kind, destination, key, arguments in self.db.execute(
            "SELECT vhost, source, destination_kind, destination, routing_key, arguments "
            "FROM bindings"
        ):
            found.bindings.append(
                BindingDefinition(
                    vhost, source, kind, destination, key, decode_arguments(arguments)
                )
            )
        return found, ids

    def save_exchange(self, definition: ExchangeDefinition) -> None:
        self.db.execute(
            "INSERT OR REPLACE INTO exchanges VALUES (?, ?, ?, ?, ?, ?)",
            (
                definition.vhost, definition.name, definition.type,
                int(definition.auto_delete), int(definition.internal),
                encode_arguments(definition.arguments),
            ),
        )  # fmt: skip

    def delete_exchange(self, vhost: str, name: str) -> None:
        with self.db:
            self.db.execute("BEGIN")
            self.db.execute("DELETE FROM exchanges WHERE vhost = ? AND name = ?", (vhost, name))
            self.db.execute(
                "DELETE FROM bindings WHERE vhost = ? AND (source = ? OR "
                "(destination_kind = 'exchange' AND destination = ?))",
                (vhost, name, name),
            )

    def save_queue(self, definition: QueueDefinition) -> int:
        """The queue's id; a row already there (a queue that could not be restored, declared
        again) keeps its id and takes the new flags and arguments."""
        with self.db:
            self.db.execute("BEGIN")
            self.db.execute(
                "INSERT INTO queues (vhost, name, auto_delete, arguments) VALUES (?, ?, ?, ?) "
                "ON CONFLICT (vhost, name) DO UPDATE SET auto_delete = excluded.auto_delete, "
                "arguments = excluded.arguments",
                (
                    definition.vhost, definition.name, int(definition.auto_delete),
                    encode_arguments(definition.arguments),
                ),
            )  # fmt: skip
            (queue_id,) = self.db.execute(
                "SELECT id FROM queues WHERE vhost = ? AND name = ?",
                (definition.vhost, definition.name),
            ).fetchone()
        return int(queue_id)

    def delete_queue(self, vhost: str, name: str) -> None:
        with self.db:
            self.db.execute("BEGIN")
            self.db.execute("DELETE FROM queues WHERE vhost = ? AND name = ?", (vhost, name))
            self.db.execute(
                "DELETE FROM bindings WHERE vhost = ? AND destination_kind = 'queue' "
                "AND destination = ?",
                (vhost, name),
            )

    def log_ids(self) -> dict[tuple[str, str], int]:
        """Each plugin log's id (its directory's name under ``logs/``) by (vhost, name)."""
        rows = self.db.execute("SELECT id, vhost, name FROM logs")
        return {(vhost, name): int(log_id) for log_id, vhost, name in rows}

    def save_log(self, vhost: str, name: str) -> int:
        """The id of the plugin log ``name`` of ``vhost``, made if it is new."""
        with self.db:
            self.db.execute("BEGIN")
            self.db.execute("INSERT OR IGNORE INTO logs (vhost, name) VALUES (?, ?)", (vhost, name))
            (log_id,) = self.db.execute(
                "SELECT id FROM logs WHERE vhost = ? AND name = ?", (vhost, name)
            ).fetchone()
        return int(log_id)

    def delete_log(self, vhost: str, name: str) -> None:
        self.db.execute("DELETE FROM logs WHERE vhost = ? AND name = ?", (vhost, name))

    def save_binding(self, definition: BindingDefinition) -> None:
        self.db.execute(
            "INSERT OR REPLACE INTO bindings VALUES (?, ?, ?, ?, ?, ?)",
            (
                definition.vhost, definition.source, definition.destination_kind,
                definition.destination, definition.routing_key,
                encode_arguments(definition.arguments),
            ),
        )  # fmt: skip

    def delete_binding(self, definition: BindingDefinition) -> None:
        self.db.execute(
            "DELETE FROM bindings WHERE vhost = ? AND source = ? AND destination_kind = ? "
            "AND destination = ? AND routing_key = ? AND arguments = ?",
            (
                definition.vhost, definition.source, definition.destination_kind,
                definition.destination, definition.routing_key,
                encode_arguments(definition.arguments),
            ),
        )  # fmt: skip
