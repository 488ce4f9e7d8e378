"""``warrenmq bridge status``: the MQTT bridges' state, read from the file the running broker
writes (``DATA_DIR/status/mqtt-bridge.json``, see ``warrenmq.status``): there is no admin
channel to a running broker yet."""

from __future__ import annotations

import argparse
import datetime
import json
import os
import sys
from pathlib import Path
from typing import Any

from .cli_access import DATA_DIR_VARIABLE
from .status import process_alive, read_status, status_path
from .store import default_data_dir

#: the state file the MQTT bridge plugin writes under DATA_DIR/status/
NAME = "mqtt-bridge"


def add_parser(commands: Any) -> None:
    bridge = commands.add_parser(
        "bridge",
        help="show the MQTT bridges' state",
        description="The MQTT bridges of a running broker (docs/bridge.md).",
    )
    actions = bridge.add_subparsers(dest="action", metavar="COMMAND")
    status = actions.add_parser(
        "status",
        help="each bridge: connected or not, queued and forwarded messages, last error",
        description="Show each bridge of the broker that uses DATA_DIR, from the state file "
        "it writes at most once a second. Exit 0; 1 if there is no state (no bridge runs "
        "with that data directory) or the broker that wrote it is no longer running (the "
        "last state is still shown).",
    )
    status.add_argument(
        "--data-dir",
        type=Path,
        default=None,
        help=f"the broker's data directory (default: ${DATA_DIR_VARIABLE}, else "
        f"warrenmq run's default, {default_data_dir()})",
    )
    status.add_argument(
        "--format",
        choices=("table", "json"),
        default="table",
        help="table (default) or the state file's JSON",
    )


def _when(stamp: Any) -> str:
    if not isinstance(stamp, int | float):
        return "-"
    return datetime.datetime.fromtimestamp(stamp).strftime("%Y-%m-%d %H:%M:%S")


def _table(bridges: list[dict[str, Any]]) -> None:
    rows = [
        ("NAME", "REMOTE", "CONNECTED", "QUEUED", "INFLIGHT", "OUT", "IN", "DROPPED", "LAST ERROR")
    ]
    for b in bridges:
        error = b.get("last_error")
        rows.append(
            (
                str(b.get("name")),
                str(b.get("remote")),
                f"yes since {_when(b.get('connected_since'))}" if b.get("connected") else "no",
                str(b.get("queued", 0)),
                str(b.get("inflight", 0)),
                str(b.get("forwarded_out", 0)),
                str(b.get("forwarded_in", 0)),
                str(b.get("dropped", 0)),
                f"{_when(b.get('last_error_at'))} {error}" if error else "-",
            )
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        print("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip())


def run(args: argparse.Namespace) -> int:
    if args.action != "status":
        print("warrenmq bridge: give a command (status)", file=sys.stderr)
        return 2
    data_dir = args.data_dir or Path(os.environ.get(DATA_DIR_VARIABLE) or default_data_dir())
    try:
        state = read_status(data_dir, NAME)
    except (OSError, ValueError) as exc:
        print(f"warrenmq bridge status: cannot read the state: {exc}", file=sys.stderr)
        return 1
    if state is None:
        print(
            f"warrenmq bridge status: no bridge state in {status_path(data_dir, NAME)} "
            "(no broker with bridges has run with this data directory)",
            file=sys.stderr,
        )
        return 1
    stale = not state.get("running") or not process_alive(state.get("pid"))
    bridges = [b for b in state.get("bridges", []) if isinstance(b, dict)]
    if stale:
        for bridge in bridges:
            bridge["connected"] = False
    if args.format == "json":
        print(json.dumps({**state, "running": not stale, "bridges": bridges}, indent=2))
    else:
        _table(bridges)
    if stale:
        print(
            f"warrenmq bridge status: the broker is not running; state as of "
            f"{_when(state.get('updated'))}",
            file=sys.stderr,
        )
        return 1
    return 0
