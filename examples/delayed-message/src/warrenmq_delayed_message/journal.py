"""Where one exchange's held messages are kept across a restart: the ``Journal`` interface.

The exchange writes each persistent message it holds (on a durable exchange) with ``add`` and
forgets it with ``remove`` once released; when the exchange is made again after a restart,
``load`` gives back what was still held, with its wall-clock due time.

Two journals today:

- ``NoJournal``: keeps nothing (a transient exchange, a transient message, or a broker without
  a data directory);
- ``FileJournal``: an append-only file per exchange under ``<data dir>/delayed/``. Each record
  is written and flushed to the operating system before the publish is confirmed, so a broker
  killed with ``kill -9`` loses nothing; it is not fsynced (a power cut may lose the last
  records).

Once warrenmq's durable store offers message persistence, a journal backed by it (group commit,
fsync before confirms, one place for every durable byte) replaces ``FileJournal`` in
``open_journal`` and nothing else changes.
"""

from __future__ import annotations

import logging
import os
import pickle
import struct
import zlib
from abc import ABC, abstractmethod
from dataclasses import fields
from pathlib import Path
from typing import Any
from urllib.parse import quote

from warrenmq import Exchange, Message, Properties

from .schedule import Held

log = logging.getLogger("warrenmq.delayed")

_HEADER = struct.Struct(">II")  # payload length, crc32 of the payload
_ADD, _REMOVE = b"A", b"R"
_ID = struct.Struct(">Q")
_PROPERTY_FIELDS = tuple(f.name for f in fields(Properties))
#: rewrite the file once it holds this many removed records and more removed than live ones
COMPACT_AFTER = 10_000


class Journal(ABC):
    """The held messages of one exchange that must survive a restart."""

    @abstractmethod
    def load(self) -> list[Held]:
        """What was held when the broker stopped (called once, when the exchange is made)."""

    @abstractmethod
    def add(self, held: Held) -> None:
        """Keep ``held``; it must be kept when this returns (the publish is then confirmed)."""

    @abstractmethod
    def remove(self, held: Held) -> None:
        """``held`` was released (or dropped): forget it."""

    @abstractmethod
    def drop(self) -> None:
        """The exchange was deleted: forget everything."""

    def close(self) -> None:
        """The broker is stopping."""


class NoJournal(Journal):
    def load(self) -> list[Held]:
        return []

    def add(self, held: Held) -> None:
        pass

    def remove(self, held: Held) -> None:
        pass

    def drop(self) -> None:
        pass


def _record(kind: bytes, payload: bytes) -> bytes:
    data = kind + payload
    return _HEADER.pack(len(data), zlib.crc32(data)) + data


def _encode(held: Held) -> bytes:
    message = held.message
    props = message.properties
    return pickle.dumps(
        (
            held.id,
            held.due_wall,
            held.delay,
            message.exchange,
            message.routing_key,
            message.body,
            message.ttl,
            tuple(getattr(props, name) for name in _PROPERTY_FIELDS),
        ),
        protocol=pickle.HIGHEST_PROTOCOL,
    )


def _decode(payload: bytes) -> Held:
    ident, due_wall, delay, exchange, routing_key, body, ttl, values = pickle.loads(payload)
    message = Message(exchange, routing_key, body, Properties(*values))
    message.ttl = ttl
    return Held(ident, due_wall, message, delay, journaled=True)


class FileJournal(Journal):
    """An append-only file of length-prefixed, checksummed add and remove records.

    The file is the broker's own (its data directory), so records are pickled. A torn last
    record (a crash in the middle of a write) fails its checksum and is cut off on load.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self._file: Any = None
        self._held: dict[int, Held] = {}
        self._live = 0
        self._removed = 0

    def load(self) -> list[Held]:
        held: dict[int, Held] = {}
        if self.path.exists():
            data = self.path.read_bytes()
            pos = 0
            while pos + _HEADER.size <= len(data):
                size, crc = _HEADER.unpack_from(data, pos)
                record = data[pos + _HEADER.size : pos + _HEADER.size + size]
                if len(record) < size or zlib.crc32(record) != crc:
                    log.warning(
                        "%s: damaged record at byte %d; the rest is ignored", self.path, pos
                    )
                    break
                pos += _HEADER.size + size
                if record[:1] == _ADD:
                    entry = _decode(record[1:])
                    held[entry.id] = entry
                elif record[:1] == _REMOVE:
                    held.pop(_ID.unpack_from(record, 1)[0], None)
        found = sorted(held.values(), key=lambda h: (h.due_wall, h.id))
        self._rewrite(found)
        return found

    def _rewrite(self, live: list[Held]) -> None:
        """Write only the live records to a new file and put it in place of the old one."""
        if self._file is not None:
            self._file.close()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        temporary = self.path.with_suffix(".compacting")
        with open(temporary, "wb") as out:
            for held in live:
                out.write(_record(_ADD, _encode(held)))
            out.flush()
            os.fsync(out.fileno())
        os.replace(temporary, self.path)
        self._file = open(self.path, "ab")  # noqa: SIM115 (kept open while the exchange lives)
        self._live, self._removed = len(live), 0
        self._held = {held.id: held for held in live}

    def add(self, held: Held) -> None:
        self._file.write(_record(_ADD, _encode(held)))
        self._file.flush()
        self._held[held.id] = held
        self._live += 1

    def remove(self, held: Held) -> None:
        if self._held.pop(held.id, None) is None:
            return
        self._file.write(_record(_REMOVE, _ID.pack(held.id)))
        self._file.flush()
        self._live -= 1
        self._removed += 1
        if self._removed >= COMPACT_AFTER and self._removed > self._live:
            self._rewrite(sorted(self._held.values(), key=lambda h: (h.due_wall, h.id)))

    def drop(self) -> None:
        self.close()
        self.path.unlink(missing_ok=True)

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None


def open_journal(exchange: Exchange) -> Journal:
    """The journal for ``exchange``: a file for a durable exchange of a broker with a data
    directory, nothing otherwise."""
    data_dir = exchange.vhost.broker.settings.data_dir
    if not exchange.durable or data_dir is None:
        return NoJournal()
    return FileJournal(
        Path(data_dir) / "delayed" / _safe(exchange.vhost.name) / f"{_safe(exchange.name)}.journal"
    )


def _safe(name: str) -> str:
    """``name`` as one safe path component (``/``, ``.`` and the like percent-encoded)."""
    return quote(name, safe="").replace(".", "%2E") or "%00"
