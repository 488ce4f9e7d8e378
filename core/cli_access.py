"""``warrenmq user|vhost|permission``: manage the data directory's access file (users, virtual
hosts, permissions and topic permissions).

There is no admin channel to a running broker yet, so these commands edit
``DATA_DIR/access.json`` (replaced atomically) and a broker started with the same
``--data-dir`` reloads it at its next login. Without ``--data-dir`` or $WARRENMQ_DATA_DIR they
use the directory ``warrenmq run`` uses by default. A missing file starts as a fresh RabbitMQ does:
vhost ``/`` and user ``guest`` with full access there.
"""

from __future__ import annotations

import argparse
import getpass
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from .access import DEFAULT_VHOST, Access, AccessError, AccessFile
from .errors import ConfigError
from .store import default_data_dir

#: the environment variable read when --data-dir is not given
DATA_DIR_VARIABLE = "WARRENMQ_DATA_DIR"


def _data_dir_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--data-dir",
        type=Path,
        default=None,
        help=f"the broker's data directory (default: ${DATA_DIR_VARIABLE}, else "
        f"warrenmq run's default, {default_data_dir()})",
    )


def _password_options(parser: argparse.ArgumentParser) -> None:
    source = parser.add_mutually_exclusive_group()
    source.add_argument(
        "--password", help="the password (visible to other local users in the process list)"
    )
    source.add_argument(
        "--password-stdin",
        action="store_true",
        help="read the password from the first line of standard input",
    )


def add_parsers(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the ``user``, ``vhost`` and ``permission`` commands to the ``warrenmq`` parser."""
    user = commands.add_parser("user", help="manage users", description="Manage users.")
    users = user.add_subparsers(dest="action", metavar="ACTION", required=True)
    add = users.add_parser("add", help="add a user (asks for the password if not given)")
    add.add_argument("name")
    add.add_argument("--tags", default="", help="comma-separated tags, e.g. administrator")
    _password_options(add)
    delete = users.add_parser("delete", help="delete a user and its permissions")
    delete.add_argument("name")
    passwd = users.add_parser("passwd", help="change a user's password")
    passwd.add_argument("name")
    _password_options(passwd)
    users.add_parser("list", help="list users and their tags")
    set_tags = users.add_parser("set-tags", help="replace a user's tags (none: clear them)")
    set_tags.add_argument("name")
    set_tags.add_argument("tags", nargs="*")

    vhost = commands.add_parser(
        "vhost", help="manage virtual hosts", description="Manage virtual hosts."
    )
    vhosts = vhost.add_subparsers(dest="action", metavar="ACTION", required=True)
    vhost_add = vhosts.add_parser("add", help="add a virtual host")
    vhost_add.add_argument("name")
    vhost_add.add_argument("--description", default="")
    vhost_delete = vhosts.add_parser(
        "delete", help="delete a virtual host, its permissions and (in a broker) its queues"
    )
    vhost_delete.add_argument("name")
    vhosts.add_parser("list", help="list virtual hosts")

    permission = commands.add_parser(
        "permission",
        help="manage permissions",
        description="Manage permissions: configure, write and read regular expressions per "
        "user and virtual host, as RabbitMQ's set_permissions.",
    )
    permissions = permission.add_subparsers(dest="action", metavar="ACTION", required=True)
    set_ = permissions.add_parser(
        "set", help="set a user's permissions in a vhost ('' grants nothing, '.*' everything)"
    )
    set_.add_argument("user")
    set_.add_argument("configure")
    set_.add_argument("write")
    set_.add_argument("read")
    clear = permissions.add_parser("clear", help="remove a user's permissions in a vhost")
    clear.add_argument("user")
    listing = permissions.add_parser("list", help="list permissions")
    listing.add_argument("--user", help="only this user's")
    for sub in (set_, clear):
        sub.add_argument("--vhost", "-p", default=DEFAULT_VHOST, help="(default: %(default)s)")
    listing.add_argument("--vhost", "-p", help="only this vhost's")
    topic = permissions.add_parser(
        "topic",
        help="manage topic permissions",
        description="Manage topic permissions: write and read regular expressions on the "
        "routing keys of a topic exchange, per user, virtual host and exchange, as "
        "RabbitMQ's set_topic_permissions. {username}, {vhost} and {client_id} (MQTT) in "
        "an expression are replaced by their values.",
    )
    topics = topic.add_subparsers(dest="topic_action", metavar="ACTION", required=True)
    topic_set = topics.add_parser(
        "set", help="set a user's topic permissions on an exchange ('' allows no key)"
    )
    topic_set.add_argument("user")
    topic_set.add_argument("exchange")
    topic_set.add_argument("write")
    topic_set.add_argument("read")
    topic_clear = topics.add_parser(
        "clear", help="remove a user's topic permissions in a vhost (on one exchange, or all)"
    )
    topic_clear.add_argument("user")
    topic_clear.add_argument("exchange", nargs="?")
    topic_list = topics.add_parser("list", help="list topic permissions")
    topic_list.add_argument("--user", help="only this user's")
    for sub in (topic_set, topic_clear):
        sub.add_argument("--vhost", "-p", default=DEFAULT_VHOST, help="(default: %(default)s)")
    topic_list.add_argument("--vhost", "-p", help="only this vhost's")
    for parser in (
        *users.choices.values(),
        *vhosts.choices.values(),
        *(p for name, p in permissions.choices.items() if name != "topic"),
        *topics.choices.values(),
    ):
        _data_dir_option(parser)


def _read_password(args: argparse.Namespace) -> str:
    if args.password is not None:
        return str(args.password)
    if args.password_stdin or not sys.stdin.isatty():
        line = sys.stdin.readline()
        if not line:
            raise AccessError("no password on standard input")
        return line.rstrip("\r\n")
    first = getpass.getpass("Password: ")
    if first != getpass.getpass("Password (again): "):
        raise AccessError("the passwords differ")
    return first


def _table(rows: Sequence[Sequence[str]]) -> None:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        print(
            "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        )


def _users(access: Access, args: argparse.Namespace) -> str | None:
    if args.action == "add":
        tags = tuple(tag.strip() for tag in args.tags.split(",") if tag.strip())
        access.add_user(args.name, _read_password(args), tags)
        return f"added user '{args.name}'"
    if args.action == "delete":
        access.delete_user(args.name)
        return f"deleted user '{args.name}'"
    if args.action == "passwd":
        access.user(args.name)
        access.set_password(args.name, _read_password(args))
        return f"changed the password of user '{args.name}'"
    if args.action == "set-tags":
        access.set_tags(args.name, tuple(args.tags))
        return f"set the tags of user '{args.name}' to [{', '.join(args.tags)}]"
    _table(
        [("USER", "TAGS")]
        + [(u.name, f"[{', '.join(u.tags)}]") for u in sorted(access.users.values(), key=_name)]
    )
    return None


def _name(user: object) -> str:
    return str(getattr(user, "name", ""))


def _vhosts(access: Access, args: argparse.Namespace) -> str | None:
    if args.action == "add":
        access.add_vhost(args.name, args.description)
        return f"added vhost '{args.name}'"
    if args.action == "delete":
        access.delete_vhost(args.name)
        return f"deleted vhost '{args.name}'"
    _table([("NAME", "DESCRIPTION")] + sorted(access.vhosts.items()))
    return None


def _permissions(access: Access, args: argparse.Namespace) -> str | None:
    if args.action == "topic":
        return _topic_permissions(access, args)
    if args.action == "set":
        access.set_permissions(args.user, args.vhost, args.configure, args.write, args.read)
        return f"set the permissions of user '{args.user}' in vhost '{args.vhost}'"
    if args.action == "clear":
        access.clear_permissions(args.user, args.vhost)
        return f"cleared the permissions of user '{args.user}' in vhost '{args.vhost}'"
    rows = [
        (vhost, user, p.configure, p.write, p.read)
        for (user, vhost), p in sorted(access.permissions.items(), key=lambda item: item[0][::-1])
        if (args.vhost is None or vhost == args.vhost) and (args.user is None or user == args.user)
    ]
    _table([("VHOST", "USER", "CONFIGURE", "WRITE", "READ"), *rows])
    return None


def _topic_permissions(access: Access, args: argparse.Namespace) -> str | None:
    if args.topic_action == "set":
        access.set_topic_permissions(args.user, args.vhost, args.exchange, args.write, args.read)
        return (
            f"set the topic permissions of user '{args.user}' on exchange '{args.exchange}' "
            f"in vhost '{args.vhost}'"
        )
    if args.topic_action == "clear":
        access.clear_topic_permissions(args.user, args.vhost, args.exchange)
        on = "" if args.exchange is None else f" on exchange '{args.exchange}'"
        return f"cleared the topic permissions of user '{args.user}'{on} in vhost '{args.vhost}'"
    rows = [
        (vhost, user, exchange, p.write, p.read)
        for (user, vhost, exchange), p in sorted(
            access.topic_permissions.items(), key=lambda item: (item[0][1], item[0][0], item[0][2])
        )
        if (args.vhost is None or vhost == args.vhost) and (args.user is None or user == args.user)
    ]
    _table([("VHOST", "USER", "EXCHANGE", "WRITE", "READ"), *rows])
    return None


HANDLERS: dict[str, Callable[[Access, argparse.Namespace], str | None]] = {
    "user": _users,
    "vhost": _vhosts,
    "permission": _permissions,
}


def run(args: argparse.Namespace) -> int:
    """Run a ``user``, ``vhost`` or ``permission`` command; 0, or 1 with a message."""
    data_dir = args.data_dir or Path(os.environ.get(DATA_DIR_VARIABLE) or default_data_dir())
    store = AccessFile.in_data_dir(data_dir)
    try:
        access = store.load_or_default()
        done = HANDLERS[args.command](access, args)
        if done is not None:  # a change: write it
            store.save(access)
            print(done)
    except (AccessError, ConfigError, OSError) as exc:
        action = " ".join(filter(None, (args.action, getattr(args, "topic_action", None))))
        print(f"warrenmq {args.command} {action}: {exc}", file=sys.stderr)
        return 1
    return 0
