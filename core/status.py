"""State files: how a plugin's long-running service (an MQTT bridge, say) shows its state to
the CLI while there is no admin channel to a running broker.

The service writes ``DATA_DIR/status/NAME.json`` atomically (a temporary file renamed over it),
at most about once a second, with the broker's process id and the time; a reader
(``warrenmq bridge status``) never sees half a file, and tells a stale file (its broker is
gone) by the process id.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

DIRECTORY = "status"


def status_path(data_dir: Path, name: str) -> Path:
    return data_dir / DIRECTORY / f"{name}.json"


def write_status(data_dir: Path, name: str, state: dict[str, Any]) -> None:
    """Replace ``name``'s state file with ``state`` plus ``pid`` and ``updated`` (epoch
    seconds); ``OSError`` if it cannot be written."""
    path = status_path(data_dir, name)
    path.parent.mkdir(parents=True, exist_ok=True)
    document = {"pid": os.getpid(), "updated": time.time(), **state}
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    temporary.write_text(json.dumps(document, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    os.replace(temporary, path)


def read_status(data_dir: Path, name: str) -> dict[str, Any] | None:
    """``name``'s state, None if there is no file; ``ValueError``/``OSError`` if unreadable."""
    path = status_path(data_dir, name)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    document = json.loads(text)
    if not isinstance(document, dict):
        raise ValueError(f"{path}: not a JSON object")
    return document


def process_alive(pid: Any) -> bool:
    """Is a process with this id running (on this machine)?"""
    if not isinstance(pid, int) or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process: alive
        return True
    return True
