"""The management HTTP API through a real HTTP client (httpx), as RabbitMQ's: the same paths,
JSON field names, status codes and errors. Set WARRENMQ_TEST_MANAGEMENT_EXTERNAL to run these
against RabbitMQ's management plugin."""

from __future__ import annotations

import base64
from collections.abc import Iterator

import httpx
import pika
import pytest
from conftest import ManagementAddress
from management_helpers import add_user, client, eventually, quoted


@pytest.fixture
def http(management: ManagementAddress) -> Iterator[httpx.Client]:
    with client(management.url) as http_client:
        yield http_client


@pytest.fixture
def amqp(management: ManagementAddress) -> Iterator[pika.BlockingConnection]:
    connection = pika.BlockingConnection(pika.URLParameters(management.amqp.url))
    yield connection
    if connection.is_open:
        connection.close()


@pytest.fixture
def queue_name(http: httpx.Client, unique: str) -> Iterator[str]:
    yield unique
    http.delete(f"/api/queues/%2F/{unique}")


def test_overview_has_rabbitmq_fields(http: httpx.Client) -> None:
    response = http.get("/api/overview")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("application/json")
    overview = response.json()
    for key in ("management_version", "rates_mode", "exchange_types", "message_stats",
                "queue_totals", "object_totals", "listeners", "node"):  # fmt: skip
        assert key in overview, key
    assert {"connections", "channels", "queues", "exchanges", "consumers"} <= set(
        overview["object_totals"]
    )
    assert "messages_ready" in overview["queue_totals"]
    assert any(listener["protocol"] == "amqp" for listener in overview["listeners"])
    assert {"name": "topic", "description": "AMQP topic exchange, as per the AMQP specification",
            "enabled": True} in overview["exchange_types"]  # fmt: skip


def test_no_credentials_is_401(management: ManagementAddress) -> None:
    with client(management.url, auth=None) as anonymous:
        response = anonymous.get("/api/queues")
    assert response.status_code == 401
    assert response.headers["www-authenticate"].lower().startswith("basic")


def test_wrong_password_is_401_with_rabbitmq_error(management: ManagementAddress) -> None:
    with client(management.url, auth=("guest", "wrong")) as bad:
        response = bad.get("/api/queues")
    assert response.status_code == 401
    assert response.json() == {"error": "not_authorized", "reason": "Login failed"}


def test_user_without_tags_is_not_a_management_user(
    http: httpx.Client, management: ManagementAddress, unique: str
) -> None:
    add_user(http, unique, "secret", "")
    try:
        with client(management.url, auth=(unique, "secret")) as plain:
            response = plain.get("/api/overview")
        assert response.status_code == 401
        assert response.json()["reason"] == "Not management user"
    finally:
        http.delete(f"/api/users/{unique}")


def test_tags_decide_what_a_user_sees(
    http: httpx.Client, management: ManagementAddress, unique: str
) -> None:
    add_user(http, f"{unique}-m", "pw", "management", vhost=None)
    add_user(http, f"{unique}-mon", "pw", "monitoring", vhost=None)
    try:
        with client(management.url, auth=(f"{unique}-m", "pw")) as managing:
            assert managing.get("/api/whoami").json() == {
                "name": f"{unique}-m",
                "tags": ["management"],
            }
            assert managing.get("/api/vhosts").json() == []  # no permission anywhere
            assert managing.get("/api/queues").status_code == 200
            for path in ("/api/users", "/api/permissions", "/api/definitions"):
                response = managing.get(path)
                assert response.status_code == 401, path
                assert response.json()["reason"] == "Not administrator user"
            assert managing.get("/api/nodes").json()["reason"] == "Not monitor user"
            refused = managing.put("/api/queues/%2F/" + unique, json={})
            assert refused.status_code == 401
            assert refused.json()["error"] == "not_authorised"
        with client(management.url, auth=(f"{unique}-mon", "pw")) as monitoring:
            assert monitoring.get("/api/nodes").status_code == 200
            names = [vhost["name"] for vhost in monitoring.get("/api/vhosts").json()]
            assert "/" in names  # monitoring users see every vhost
            assert monitoring.get("/api/users").status_code == 401
    finally:
        http.delete(f"/api/users/{unique}-m")
        http.delete(f"/api/users/{unique}-mon")


def test_declare_list_and_delete_a_queue(http: httpx.Client, queue_name: str) -> None:
    path = f"/api/queues/%2F/{queue_name}"
    created = http.put(path, json={"durable": False, "arguments": {"x-max-length": 10}})
    assert created.status_code == 201
    assert (
        http.put(path, json={"durable": False, "arguments": {"x-max-length": 10}}).status_code
        == 204
    )
    clash = http.put(path, json={"durable": True})
    assert clash.status_code == 400
    assert clash.json()["error"] == "bad_request"
    assert "inequivalent arg 'durable'" in clash.json()["reason"]
    # RabbitMQ adds the counts with its first statistics after the declare
    queue = eventually(
        lambda: {"messages", "consumers", "memory"} <= set(q := http.get(path).json()) and q,
        "the queue's statistics",
    )
    assert queue["name"] == queue_name
    assert queue["vhost"] == "/"
    assert queue["durable"] is False
    assert queue["arguments"] == {"x-max-length": 10}
    for key in ("messages", "messages_ready", "messages_unacknowledged", "consumers", "memory"):
        assert queue[key] == 0 or key == "memory", key
    assert queue["memory"] > 0
    listed = [q for q in http.get("/api/queues").json() if q["name"] == queue_name]
    assert len(listed) == 1
    assert http.put(f"{path}-defaults", json={}).status_code == 201
    defaults = http.get(f"{path}-defaults").json()
    assert (defaults["durable"], defaults["auto_delete"]) == (False, False)  # as RabbitMQ 3.10
    assert http.delete(f"{path}-defaults").status_code == 204
    assert http.delete(path).status_code == 204
    missing = http.get(path)
    assert missing.status_code == 404
    assert missing.json() == {"error": "Object Not Found", "reason": "Not Found"}


def test_queue_depth_and_consumers_follow_amqp_clients(
    http: httpx.Client, amqp: pika.BlockingConnection, queue_name: str
) -> None:
    channel = amqp.channel()
    channel.queue_declare(queue_name)
    channel.confirm_delivery()
    for _ in range(3):
        channel.basic_publish("", queue_name, b"hello")
    path = f"/api/queues/%2F/{queue_name}"
    queue = eventually(
        lambda: (q := http.get(path).json()).get("message_stats", {}).get("publish") == 3 and q,
        "3 messages published",
    )
    assert queue["messages_ready"] == 3
    channel.basic_qos(prefetch_count=1)
    channel.basic_consume(queue_name, lambda *args: None, consumer_tag="watched")
    amqp.process_data_events(0.2)
    queue = eventually(
        lambda: (
            (q := http.get(path).json()).get("messages_unacknowledged") == 1
            and q.get("consumers") == 1
            and q
        ),
        "one message unacknowledged",
    )
    assert queue["consumers"] == 1
    assert queue["messages_ready"] == 2
    consumers = [c for c in http.get("/api/consumers").json() if c["queue"]["name"] == queue_name]
    assert [c["consumer_tag"] for c in consumers] == ["watched"]
    assert consumers[0]["ack_required"] is True
    assert consumers[0]["prefetch_count"] == 1


def test_publish_and_get(http: httpx.Client, queue_name: str) -> None:
    assert http.put(f"/api/queues/%2F/{queue_name}", json={"durable": False}).status_code == 201
    published = http.post(
        "/api/exchanges/%2F/amq.default/publish",
        json={"properties": {"content_type": "text/plain", "headers": {"k": "v"}},
              "routing_key": queue_name, "payload": "hi there", "payload_encoding": "string"},
    )  # fmt: skip
    assert published.status_code == 200
    assert published.json() == {"routed": True}
    binary = base64.b64encode(b"\xff\x00").decode()
    http.post("/api/exchanges/%2F/amq.default/publish",
              json={"properties": {}, "routing_key": queue_name, "payload": binary,
                    "payload_encoding": "base64"})  # fmt: skip
    nowhere = http.post("/api/exchanges/%2F/amq.default/publish",
                        json={"properties": {}, "routing_key": f"{queue_name}-none",
                              "payload": "x", "payload_encoding": "string"})  # fmt: skip
    assert nowhere.json() == {"routed": False}
    got = http.post(
        f"/api/queues/%2F/{queue_name}/get",
        json={"count": 5, "ackmode": "ack_requeue_true", "encoding": "auto"},
    )
    assert got.status_code == 200
    messages = got.json()
    assert [m["payload"] for m in messages] == ["hi there", binary]
    assert [m["payload_encoding"] for m in messages] == ["string", "base64"]
    assert messages[0]["properties"]["content_type"] == "text/plain"
    assert messages[0]["properties"]["headers"] == {"k": "v"}
    assert messages[0]["routing_key"] == queue_name
    assert messages[0]["redelivered"] is False
    assert messages[0]["payload_bytes"] == 8
    again = http.post(
        f"/api/queues/%2F/{queue_name}/get",
        json={"count": 1, "ackmode": "ack_requeue_false", "encoding": "auto"},
    )
    assert again.json()[0]["redelivered"] is True  # requeued by the first get
    assert again.json()[0]["message_count"] == 1
    queue = eventually(
        lambda: (q := http.get(f"/api/queues/%2F/{queue_name}").json()).get("messages") == 1 and q,
        "one message left",
    )
    assert queue["messages_ready"] == 1


def test_purge(http: httpx.Client, queue_name: str) -> None:
    http.put(f"/api/queues/%2F/{queue_name}", json={"durable": False})
    for _ in range(4):
        http.post("/api/exchanges/%2F/amq.default/publish",
                  json={"properties": {}, "routing_key": queue_name, "payload": "x",
                        "payload_encoding": "string"})  # fmt: skip
    eventually(lambda: http.get(f"/api/queues/%2F/{queue_name}").json().get("messages") == 4, "4")
    assert http.delete(f"/api/queues/%2F/{queue_name}/contents").status_code == 204
    eventually(lambda: http.get(f"/api/queues/%2F/{queue_name}").json().get("messages") == 0, "0")


def test_bad_json_is_a_400_not_a_crash(http: httpx.Client, queue_name: str) -> None:
    response = http.post(
        "/api/exchanges/%2F/amq.default/publish",
        content=b"garbage",
        headers={"content-type": "application/json"},
    )
    assert response.status_code == 400
    assert response.json() == {"error": "bad_request", "reason": "not_json"}
    assert http.get("/api/overview").status_code == 200


def test_vhost_names_are_url_encoded(http: httpx.Client) -> None:
    vhost = http.get(f"/api/vhosts/{quoted('/')}").json()
    assert vhost["name"] == "/"
    exchanges = http.get("/api/exchanges/%2F").json()
    assert {"amq.direct", "amq.topic", ""} <= {x["name"] for x in exchanges}
    assert http.get("/api/exchanges/%2F/amq.direct").json()["type"] == "direct"
    assert http.get("/api/queues/no-such-vhost").status_code == 404


def test_exchanges_and_bindings(http: httpx.Client, queue_name: str) -> None:
    exchange = f"{queue_name}-x"
    path = f"/api/exchanges/%2F/{exchange}"
    assert http.put(path, json={"type": "topic", "durable": False}).status_code == 201
    try:
        assert http.get(path).json()["type"] == "topic"
        unknown_type = http.put(f"{path}-2", json={"type": "no-such-type", "durable": False})
        assert unknown_type.status_code == 400
        assert unknown_type.json()["error"] == "bad_request"
        http.put(f"/api/queues/%2F/{queue_name}", json={"durable": False})
        binding_path = f"/api/bindings/%2F/e/{exchange}/q/{queue_name}"
        made = http.post(binding_path, json={"routing_key": "a.*", "arguments": {}})
        assert made.status_code == 201
        assert "a." in made.headers["location"]
        listed = http.get(binding_path).json()
        assert [(b["source"], b["destination"], b["routing_key"], b["destination_type"])
                for b in listed] == [(exchange, queue_name, "a.*", "queue")]  # fmt: skip
        key = listed[0]["properties_key"]
        assert http.get(f"{binding_path}/{quoted(key)}").json()["routing_key"] == "a.*"
        all_bindings = http.get("/api/bindings/%2F").json()
        assert {"source": "", "vhost": "/", "destination": queue_name,
                "destination_type": "queue", "routing_key": queue_name, "arguments": {},
                "properties_key": queue_name} in all_bindings  # fmt: skip
        queue_bindings = http.get(f"/api/queues/%2F/{queue_name}/bindings").json()
        assert [b["source"] for b in queue_bindings] == ["", exchange]
        sources = http.get(f"{path}/bindings/source").json()
        assert [b["destination"] for b in sources] == [queue_name]
        routed = http.post(
            f"{path}/publish",
            json={
                "properties": {},
                "routing_key": "a.b",
                "payload": "m",
                "payload_encoding": "string",
            },
        )
        assert routed.json() == {"routed": True}
        assert http.delete(f"{binding_path}/{quoted(key)}").status_code == 204
        assert http.get(binding_path).json() == []
        unrouted = http.post(
            f"{path}/publish",
            json={
                "properties": {},
                "routing_key": "a.b",
                "payload": "m",
                "payload_encoding": "string",
            },
        )
        assert unrouted.json() == {"routed": False}
    finally:
        http.delete(f"{path}-2")
        assert http.delete(path).status_code == 204
    assert http.get(path).status_code == 404


def test_connections_channels_and_closing_one(
    http: httpx.Client, management: ManagementAddress
) -> None:
    parameters = pika.URLParameters(management.amqp.url)
    parameters.client_properties = {"connection_name": "watched-by-http"}
    connection = pika.BlockingConnection(parameters)
    try:
        connection.channel()
        found = eventually(
            lambda: [c for c in http.get("/api/connections").json()
                     if c.get("user_provided_name") == "watched-by-http"],
            "the connection listed",
        )  # fmt: skip
        listed = found[0]
        assert listed["user"] == "guest"
        assert listed["vhost"] == "/"
        assert listed["protocol"] == "AMQP 0-9-1"
        assert listed["client_properties"]["product"] == "Pika Python Client Library"
        name = listed["name"]
        channels = eventually(
            lambda: [c for c in http.get("/api/channels").json()
                     if c["connection_details"]["name"] == name],
            "its channel listed",
        )  # fmt: skip
        assert channels[0]["number"] == 1
        assert http.get(f"/api/connections/{quoted(name)}").json()["name"] == name
        closed = http.delete(f"/api/connections/{quoted(name)}", headers={"X-Reason": "bye"})
        assert closed.status_code == 204
        with pytest.raises(pika.exceptions.ConnectionClosedByBroker) as info:
            connection.process_data_events(5)
            connection.channel()
        assert info.value.reply_code == 320
        eventually(lambda: http.get(f"/api/connections/{quoted(name)}").status_code == 404,
                   "the connection gone")  # fmt: skip
    finally:
        if connection.is_open:
            connection.close()


def test_definitions_export_and_import(http: httpx.Client, unique: str) -> None:
    definitions = {
        "queues": [{"name": f"{unique}-q", "vhost": "/", "durable": True,
                    "auto_delete": False, "arguments": {}}],
        "exchanges": [{"name": f"{unique}-x", "vhost": "/", "type": "fanout", "durable": True,
                       "auto_delete": False, "internal": False, "arguments": {}}],
        "bindings": [{"source": f"{unique}-x", "vhost": "/", "destination": f"{unique}-q",
                      "destination_type": "queue", "routing_key": "", "arguments": {}}],
    }  # fmt: skip
    try:
        posted = http.post("/api/definitions", json=definitions)
        assert posted.status_code in (201, 204)
        exported = http.get("/api/definitions").json()
        assert f"{unique}-q" in [q["name"] for q in exported["queues"]]
        assert f"{unique}-x" in [x["name"] for x in exported["exchanges"]]
        assert any(b["source"] == f"{unique}-x" for b in exported["bindings"])
        for key in ("users", "vhosts", "permissions", "policies"):
            assert key in exported
        bad = http.post("/api/definitions", json={"queues": [{"vhost": "/"}]})
        assert bad.status_code == 400
        assert bad.json()["error"] == "bad_request"
    finally:
        http.delete(f"/api/queues/%2F/{unique}-q")
        http.delete(f"/api/exchanges/%2F/{unique}-x")


def test_users_permissions_and_vhosts(
    http: httpx.Client, management: ManagementAddress, unique: str
) -> None:
    assert http.put(f"/api/vhosts/{unique}", json={"description": "for a test"}).status_code == 201
    try:
        add_user(http, unique, "pw", "management", vhost=unique)
        users = {u["name"]: u for u in http.get("/api/users").json()}
        assert users[unique]["tags"] == ["management"]
        assert users["guest"]["tags"] == ["administrator"]
        permission = http.get(f"/api/permissions/{unique}/{unique}").json()
        assert (permission["configure"], permission["write"], permission["read"]) == (
            ".*", ".*", ".*"
        )  # fmt: skip
        with client(management.url, auth=(unique, "pw")) as user:
            assert [v["name"] for v in user.get("/api/vhosts").json()] == [unique]
            assert user.put(f"/api/queues/{unique}/q", json={"durable": False}).status_code == 201
            assert [q["name"] for q in user.get("/api/queues").json()] == ["q"]
        assert http.delete(f"/api/permissions/{unique}/{unique}").status_code == 204
        assert http.get(f"/api/permissions/{unique}/{unique}").status_code == 404
    finally:
        http.delete(f"/api/users/{unique}")
        assert http.delete(f"/api/vhosts/{unique}").status_code == 204
    assert http.get(f"/api/vhosts/{unique}").status_code == 404
    assert http.get(f"/api/users/{unique}").status_code == 404


def test_message_rates(http: httpx.Client, amqp: pika.BlockingConnection, queue_name: str) -> None:
    channel = amqp.channel()
    channel.queue_declare(queue_name)

    def publishing() -> float:
        for _ in range(50):
            channel.basic_publish("", queue_name, b"x")
        amqp.process_data_events(0.05)
        stats = http.get(f"/api/queues/%2F/{queue_name}").json().get("message_stats", {})
        return stats.get("publish_details", {}).get("rate", 0)

    assert eventually(publishing, "a publish rate", timeout=20) > 0

    def listed_rate() -> float:
        publishing()
        listed = [q for q in http.get("/api/queues").json() if q["name"] == queue_name]
        return listed[0].get("message_stats", {}).get("publish_details", {}).get("rate", 0)

    assert eventually(listed_rate, "a publish rate in the list", timeout=20) > 0
    overview = http.get("/api/overview", params={"msg_rates_age": 60, "msg_rates_incr": 5})
    details = overview.json()["message_stats"]["publish_details"]
    assert details["rate"] >= 0
    assert details["samples"]
    assert {"sample", "timestamp"} <= set(details["samples"][0])


def test_paged_queue_list(http: httpx.Client, unique: str) -> None:
    names = [f"{unique}-{n}" for n in range(3)]
    for name in names:
        http.put(f"/api/queues/%2F/{name}", json={"durable": False})
    try:
        response = http.get(
            "/api/queues/%2F",
            params={"page": 1, "page_size": 2, "name": unique, "sort": "name",
                    "sort_reverse": "true"},
        )  # fmt: skip
        paged = response.json()
        assert paged["filtered_count"] == 3
        assert paged["page_count"] == 2
        assert [q["name"] for q in paged["items"]] == names[::-1][:2]
    finally:
        for name in names:
            http.delete(f"/api/queues/%2F/{name}")


@pytest.mark.warrenmq_only  # RabbitMQ's list entries carry counters that move between calls
def test_list_entries_match_the_single_queue(http: httpx.Client, unique: str) -> None:
    http.put(f"/api/queues/%2F/{unique}-plain", json={"durable": False})
    http.put(
        f"/api/queues/%2F/{unique}-args",
        json={"durable": True, "arguments": {"x-max-length": 3, "x-queue-mode": "lazy"}},
    )
    try:
        listed = {q["name"]: q for q in http.get("/api/queues").json()}
        for name in (f"{unique}-plain", f"{unique}-args"):
            single = http.get(f"/api/queues/%2F/{name}").json()
            assert listed[name] == {key: single[key] for key in listed[name]}
        assert listed[f"{unique}-args"]["arguments"] == {"x-max-length": 3, "x-queue-mode": "lazy"}
    finally:
        http.delete(f"/api/queues/%2F/{unique}-plain")
        http.delete(f"/api/queues/%2F/{unique}-args")


def test_the_other_read_endpoints(
    http: httpx.Client, amqp: pika.BlockingConnection, unique: str
) -> None:
    channel = amqp.channel()
    channel.exchange_declare(f"{unique}-a", "fanout", auto_delete=True)
    channel.exchange_declare(f"{unique}-b", "fanout", auto_delete=True)
    channel.exchange_bind(f"{unique}-b", f"{unique}-a")
    channel.queue_declare(unique, exclusive=True)
    channel.basic_consume(unique, lambda *args: None, consumer_tag=f"{unique}-tag")
    amqp.process_data_events(0.2)
    incoming = http.get(f"/api/exchanges/%2F/{unique}-b/bindings/destination").json()
    assert [(b["source"], b["destination_type"]) for b in incoming] == [(f"{unique}-a", "exchange")]
    e2e = http.get(f"/api/bindings/%2F/e/{unique}-a/e/{unique}-b").json()
    assert [b["destination"] for b in e2e] == [f"{unique}-b"]
    consumer = eventually(
        lambda: [c for c in http.get("/api/consumers/%2F").json()
                 if c["consumer_tag"] == f"{unique}-tag"],
        "the consumer listed",
    )[0]  # fmt: skip
    channel_name = consumer["channel_details"]["name"]
    connection_name = consumer["channel_details"]["connection_name"]
    one_channel = eventually(
        lambda: (
            (c := http.get(f"/api/channels/{quoted(channel_name)}")).status_code == 200 and c.json()
        ),
        "the channel",
    )
    assert one_channel["consumer_count"] == 1
    channels = http.get(f"/api/connections/{quoted(connection_name)}/channels").json()
    assert channel_name in [c["name"] for c in channels]
    in_vhost = http.get("/api/vhosts/%2F/connections").json()
    assert connection_name in [c["name"] for c in in_vhost]
    assert http.get("/api/vhosts/%2F/channels").status_code == 200
    node = http.get("/api/nodes").json()[0]
    assert {"name", "mem_used", "mem_limit", "mem_alarm", "disk_free_alarm", "uptime"} <= set(node)
    assert http.get(f"/api/nodes/{quoted(node['name'])}").json()["name"] == node["name"]
    assert isinstance(http.get("/api/policies").json(), list)
    assert isinstance(http.get("/api/policies/%2F").json(), list)
    guest = http.get("/api/users/guest/permissions").json()
    assert {"user": "guest", "vhost": "/", "configure": ".*", "write": ".*", "read": ".*"} in guest
    assert guest[0]["user"] == "guest"
    vhost_permissions = http.get("/api/vhosts/%2F/permissions").json()
    assert "guest" in [p["user"] for p in vhost_permissions]
    exported = http.get("/api/definitions/%2F").json()
    assert {"exchanges", "queues", "bindings"} <= set(exported)
    assert f"{unique}-a" in [x["name"] for x in exported["exchanges"]]
    assert http.get("/api/whoami").json() == {"name": "guest", "tags": ["administrator"]}


BAD_INPUT = [
    ("PUT", "/api/queues/%2F/{q}", {"arguments": {"x-max-length": "many"}}),
    ("PUT", "/api/queues/%2F/{q}", {"arguments": {"x-queue-type": "no-such-type"}}),
    ("PUT", "/api/queues/%2F/{q}", {"durable": "maybe"}),
    ("PUT", "/api/queues/%2F/{q}", {"arguments": [1, 2]}),
    ("PUT", "/api/queues/%2F/amq.{q}", {}),
    ("PUT", "/api/exchanges/%2F/{q}", {"type": 42}),
    ("PUT", "/api/exchanges/%2F/amq.direct", {"type": "fanout"}),
    ("PUT", "/api/exchanges/%2F/{q}", {"type": "x-consistent-hash", "arguments": {"hash-header": 5}}),
    ("POST", "/api/exchanges/%2F/amq.default/publish", {"routing_key": 5, "payload": "x"}),
    ("POST", "/api/exchanges/%2F/amq.default/publish",
     {"routing_key": "k", "payload": "%%%", "payload_encoding": "base64"}),
    ("POST", "/api/exchanges/%2F/amq.default/publish",
     {"routing_key": "k", "payload": "x", "properties": {"delivery_mode": "two"}}),
    ("POST", "/api/exchanges/%2F/amq.default/publish",
     {"routing_key": "k", "payload": "x", "properties": {"expiration": "soon"}}),
    ("POST", "/api/exchanges/%2F/no-such-exchange/publish", {"routing_key": "k", "payload": "x"}),
    ("POST", "/api/queues/%2F/no-such-queue/get", {"count": 1, "ackmode": "ack_requeue_true"}),
    ("POST", "/api/bindings/%2F/e/amq.direct/q/no-such-queue", {"routing_key": "k"}),
    ("POST", "/api/bindings/%2F/e/amq.headers/e/amq.direct", {"arguments": {"x-match": "some"}}),
    ("POST", "/api/definitions", {"queues": "all of them"}),
    ("PUT", "/api/users/{q}", {"tags": 7, "password": "x"}),
    ("PUT", "/api/users/{q}", {"password_hash": "nonsense", "hashing_algorithm": "rot13"}),
    ("PUT", "/api/permissions/no-such-vhost/guest", {"configure": ".*", "write": ".*", "read": ".*"}),
    ("PUT", "/api/permissions/%2F/guest", {"configure": "(", "write": ".*", "read": ".*"}),
    ("DELETE", "/api/connections/no-such-connection", None),
    ("DELETE", "/api/vhosts/%2F", None),
]  # fmt: skip


@pytest.mark.warrenmq_only  # some would change a shared RabbitMQ if it took them
@pytest.mark.parametrize(("method", "path", "body"), BAD_INPUT)
def test_bad_input_is_a_client_error_never_a_500(
    http: httpx.Client, unique: str, method: str, path: str, body: object
) -> None:
    response = http.request(method, path.format(q=unique), json=body)
    try:
        assert 400 <= response.status_code < 500, response.text
        if response.content:
            error = response.json()
            assert set(error) == {"error", "reason"}
    finally:
        http.delete(f"/api/queues/%2F/{unique}")
        http.delete(f"/api/exchanges/%2F/{unique}")
        http.delete(f"/api/users/{unique}")
    assert http.get("/api/overview").status_code == 200
