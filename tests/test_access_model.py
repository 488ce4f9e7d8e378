"""Password hashes, the access model and its sources (the config file's tables, RabbitMQ's
definitions): pure functions, checked on the values a user would write."""

from __future__ import annotations

import json
import tomllib
from pathlib import Path

import pytest

from warrenmq.access import Access, AccessError, AccessFile, Permission
from warrenmq.access_config import (
    access_from_config,
    access_from_definitions,
    permissions_from_toml,
    users_from_toml,
)
from warrenmq.errors import AccessRefused, ConfigError, NotAllowed
from warrenmq.passwords import (
    DEFAULT_GUEST_HASH,
    PBKDF2_SHA256,
    RABBIT_SHA256,
    RABBIT_SHA512,
    hash_password,
    rabbit_hash,
    verify_password,
)

#: made by RabbitMQ 3.10 (management API) for the password "rabbit-secret"
RABBIT_VECTOR = "3zzMzaGWCygZqKAyg6eb5dfwLDqdEzWjyAK6vTjEdN3WwhWi"
#: RabbitMQ 3.10's export_definitions, trimmed
RABBIT_DEFINITIONS = {
    "rabbit_version": "3.10.8",
    "users": [
        {
            "name": "guest",
            "password_hash": "9tSyvDsLBewVR1eprLzqomIRJC8tqrlPHcMrjceiPLpaEjnq",
            "hashing_algorithm": "rabbit_password_hashing_sha256",
            "tags": ["administrator"],
            "limits": {},
        },
        {
            "name": "app",
            "password_hash": RABBIT_VECTOR,
            "hashing_algorithm": "rabbit_password_hashing_sha256",
            "tags": ["management"],
            "limits": {},
        },
    ],
    "vhosts": [{"name": "/"}, {"name": "prod", "description": "production"}],
    "permissions": [
        {"user": "guest", "vhost": "/", "configure": ".*", "write": ".*", "read": ".*"},
        {"user": "app", "vhost": "prod", "configure": "^app\\.", "write": ".*", "read": ""},
    ],
    "queues": [],
    "exchanges": [],
    "bindings": [],
}


# -- password hashes ------------------------------------------------------------------------


def test_a_password_hash_is_salted_and_verifies() -> None:
    first, second = hash_password("s3cret", 1000), hash_password("s3cret", 1000)
    assert first != second  # a new salt each time
    assert "s3cret" not in first
    assert first.startswith("$pbkdf2-sha256$i=1000$")
    assert verify_password("s3cret", first, PBKDF2_SHA256)
    assert not verify_password("s3cret!", first, PBKDF2_SHA256)


def test_the_default_guest_hash_is_guest() -> None:
    assert verify_password("guest", DEFAULT_GUEST_HASH, PBKDF2_SHA256)


def test_rabbitmq_sha256_hashes_verify_as_rabbitmq_made_them() -> None:
    assert verify_password("rabbit-secret", RABBIT_VECTOR, RABBIT_SHA256)
    assert not verify_password("rabbit-secreT", RABBIT_VECTOR, RABBIT_SHA256)
    assert verify_password("x", rabbit_hash("x", RABBIT_SHA512), RABBIT_SHA512)


@pytest.mark.parametrize(
    ("stored", "algorithm"),
    [
        ("not base64!", RABBIT_SHA256),
        ("AAAA", RABBIT_SHA256),
        ("plain", PBKDF2_SHA256),
        ("x", "md4"),
    ],
)
def test_an_unreadable_hash_never_verifies(stored: str, algorithm: str) -> None:
    assert not verify_password("", stored, algorithm)


# -- permissions ----------------------------------------------------------------------------


def test_expressions_are_unanchored_and_empty_means_nothing() -> None:
    permission = Permission(configure="log", write="", read="^a$")
    assert permission.allows("configure", "app.log.errors")
    assert not permission.allows("write", "anything")
    assert permission.allows("write", "")
    assert permission.allows("read", "a") and not permission.allows("read", "ab")


def test_checks_raise_rabbitmqs_errors() -> None:
    access = Access.default()
    access.check("guest", "/", "configure", "queue", "q")
    access.add_vhost("prod")
    with pytest.raises(NotAllowed, match="access to vhost 'prod' refused for user 'guest'"):
        access.check_vhost("guest", "prod")
    access.set_permissions("guest", "prod", "", "^x$", "")
    with pytest.raises(AccessRefused) as caught:
        access.check("guest", "prod", "write", "exchange", "")
    assert caught.value.reply_text == (
        "ACCESS_REFUSED - write access to exchange 'amq.default' in vhost 'prod' "
        "refused for user 'guest'"
    )


def test_deleting_a_user_or_vhost_takes_its_permissions() -> None:
    access = Access.default()
    access.add_vhost("v")
    access.add_user("u", password_hash=hash_password("p", 1000))
    access.set_permissions("u", "v", ".*", ".*", ".*")
    access.set_permissions("u", "/", ".*", ".*", ".*")
    access.delete_vhost("v")
    assert set(access.permissions) == {("guest", "/"), ("u", "/")}
    access.delete_user("u")
    assert set(access.permissions) == {("guest", "/")}


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda a: a.add_user("guest", "x"), "user 'guest' already exists"),
        (lambda a: a.delete_user("nobody"), "user 'nobody' does not exist"),
        (
            lambda a: a.set_permissions("guest", "nowhere", "", "", ""),
            "vhost 'nowhere' does not exist",
        ),
        (
            lambda a: a.set_permissions("guest", "/", "(", "", ""),
            "configure: invalid regular expression",
        ),
        (lambda a: a.delete_vhost("/"), "the default vhost '/' cannot be deleted"),
        (
            lambda a: a.clear_permissions("guest", "v2"),
            "user 'guest' has no permissions in vhost 'v2'",
        ),
    ],
)
def test_bad_changes_are_refused_with_the_reason(change: object, message: str) -> None:
    with pytest.raises(AccessError, match=message.replace("(", r"\(")):
        change(Access.default())  # type: ignore[operator]


def test_the_access_file_round_trips_and_never_holds_a_password(tmp_path: Path) -> None:
    store = AccessFile.in_data_dir(tmp_path)
    access = store.load_or_default()
    access.add_user("alice", "correct horse battery staple", ("administrator",))
    store.save(access)
    text = store.path.read_text()
    assert "correct horse" not in text
    assert (store.path.stat().st_mode & 0o777) == 0o600
    loaded = AccessFile.in_data_dir(tmp_path).load()
    assert loaded is not None
    assert loaded.users["alice"].tags == ("administrator",)
    assert loaded.to_json() == access.to_json()
    assert [p.name for p in tmp_path.iterdir()] == ["access.json"]  # no temporary file left


def test_a_broken_access_file_is_reported_with_its_path(tmp_path: Path) -> None:
    store = AccessFile.in_data_dir(tmp_path)
    store.path.write_text("{not json")
    with pytest.raises(ConfigError, match="access.json: not valid JSON"):
        store.load()


# -- the config file's users and permissions -----------------------------------------------

CONFIG = """
[users.alice]
password = "alice-secret"
tags = ["administrator"]

[users.bob]
password_hash = "3zzMzaGWCygZqKAyg6eb5dfwLDqdEzWjyAK6vTjEdN3WwhWi"
hashing_algorithm = "rabbit_password_hashing_sha256"

[[permissions]]
user = "alice"
vhost = "/"
configure = ".*"
write = ".*"
read = ".*"

[[permissions]]
user = "bob"
vhost = "staging"
configure = ""
write = "^bob\\\\."
read = "^bob\\\\."
"""


def test_users_and_permissions_from_toml() -> None:
    config = tomllib.loads(CONFIG)
    access = access_from_config(config["users"], config["permissions"], vhosts=("/", "staging"))
    alice = access.users["alice"]
    assert alice.tags == ("administrator",)
    assert alice.password_hash is not None and "alice-secret" not in alice.password_hash
    assert verify_password("alice-secret", alice.password_hash, alice.hashing_algorithm)
    bob = access.users["bob"]
    assert verify_password("rabbit-secret", bob.password_hash or "", bob.hashing_algorithm)
    assert access.permissions[("bob", "staging")] == Permission("", "^bob\\.", "^bob\\.")


@pytest.mark.parametrize(
    ("users", "message"),
    [
        ({"alice": {"password": "x", "tag": []}}, "users.alice.tag: unknown key"),
        ({"alice": {"password": "x", "tags": "admin"}}, None),  # a string is one tag list
        ({"alice": {"password": "x", "tags": [1]}}, "users.alice.tags: expected a list of strings"),
        ({"alice": {}}, "users.alice: expected password or password_hash"),
        ({"alice": {"password": ""}}, "users.alice.password: expected a non-empty string"),
        ({"alice": {"password": "x", "password_hash": "y"}}, "users.alice: give password or"),
        ({"alice": {"password_hash": "nope"}}, "users.alice.password_hash: a pbkdf2_sha256 hash"),
        (
            {"alice": {"password_hash": "x", "hashing_algorithm": "md4"}},
            "users.alice.hashing_algorithm: unknown algorithm 'md4'",
        ),
        ({"alice": "secret"}, "users.alice: expected a table"),
    ],
)
def test_toml_user_errors_name_the_key(users: object, message: str | None) -> None:
    if message is None:
        users_from_toml(users)
        return
    with pytest.raises(ConfigError, match=message):
        users_from_toml(users)


@pytest.mark.parametrize(
    ("permissions", "message"),
    [
        ({"user": "a"}, r"permissions: expected a list of tables \(\[\[permissions\]\]\)"),
        ([{"user": "a", "configure": "", "write": ""}], r"permissions\[0\].read: missing"),
        ([{"configure": "", "write": "", "read": ""}], r"permissions\[0\].user: expected a string"),
        (
            [{"user": "a", "configure": "[", "write": "", "read": ""}],
            r"permissions\[0\].configure: invalid regular expression '\['",
        ),
        (
            [{"user": "a", "configure": "", "write": "", "read": "", "vhst": "/"}],
            "vhst: unknown key",
        ),
    ],
)
def test_toml_permission_errors_name_the_key(permissions: object, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        permissions_from_toml(permissions)


def test_a_permission_for_an_unconfigured_user_or_vhost_is_an_error() -> None:
    users = {"a": {"password": "x"}}
    grant = {"configure": "", "write": "", "read": ""}
    with pytest.raises(ConfigError, match=r"permissions\[0\].user: user 'b' is not in \[users\]"):
        access_from_config(users, [{"user": "b", **grant}])
    with pytest.raises(ConfigError, match=r"permissions\[0\].vhost: vhost 'v' is not configured"):
        access_from_config(users, [{"user": "a", "vhost": "v", **grant}])


# -- RabbitMQ's definitions ----------------------------------------------------------------


def test_rabbitmq_definitions_give_users_vhosts_and_permissions() -> None:
    access = access_from_definitions(json.loads(json.dumps(RABBIT_DEFINITIONS)))
    assert set(access.users) == {"guest", "app"}
    app = access.users["app"]
    assert app.tags == ("management",)
    assert verify_password("rabbit-secret", app.password_hash or "", app.hashing_algorithm)
    guest = access.users["guest"]
    assert verify_password("guest", guest.password_hash or "", guest.hashing_algorithm)
    assert access.vhosts == {"/": "", "prod": "production"}
    assert access.permissions[("app", "prod")] == Permission("^app\\.", ".*", "")


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda d: d["users"][1].update(password_hash="short"), r"users\[1\].password_hash:"),
        (lambda d: d["users"][1].update(tags=[None]), r"users\[1\].tags: expected a list"),
        (
            lambda d: d["permissions"][1].update(vhost="qa"),
            r"permissions\[1\].vhost: no vhost 'qa'",
        ),
        (lambda d: d["permissions"][1].update(user="eve"), r"permissions\[1\].user: no user 'eve'"),
        (lambda d: d.update(users={}), "users: expected a list"),
    ],
)
def test_definitions_errors_name_the_entry(change: object, message: str) -> None:
    data = json.loads(json.dumps(RABBIT_DEFINITIONS))
    change(data)  # type: ignore[operator]
    with pytest.raises(ConfigError, match=message):
        access_from_definitions(data, source="defs.json")
