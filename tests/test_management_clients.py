"""Clients written for RabbitMQ's management API, against warrenmq's: pyrabbit2, and
``/metrics`` read by prometheus-client's own parser."""

from __future__ import annotations

import pika
import pytest
from conftest import ManagementAddress
from management_helpers import client, eventually
from prometheus_client.parser import text_string_to_metric_families
from pyrabbit2.api import Client


@pytest.fixture
def rabbit(management: ManagementAddress) -> Client:
    return Client(management.url.removeprefix("http://"), "guest", "guest", timeout=10)


def test_pyrabbit2_drives_queues_exchanges_and_messages(rabbit: Client, unique: str) -> None:
    assert rabbit.is_alive()
    assert "/" in rabbit.get_vhost_names()
    rabbit.create_exchange("/", f"{unique}-x", "direct", durable=False)
    rabbit.create_queue("/", unique, durable=False)
    try:
        rabbit.create_binding("/", f"{unique}-x", unique, rt_key="k")
        assert rabbit.publish("/", f"{unique}-x", "k", "one") is True
        assert rabbit.publish("/", f"{unique}-x", "k", "two") is True
        assert rabbit.publish("/", f"{unique}-x", "other", "lost") is False

        def depth() -> int | None:
            try:
                return rabbit.get_queue_depth("/", unique)
            except KeyError:  # RabbitMQ's first statistics of a queue come a moment later
                return None

        eventually(lambda: depth() == 2, "a depth of 2", 15)
        assert unique in [q["name"] for q in rabbit.get_queues("/")]
        assert any(b["source"] == f"{unique}-x" for b in rabbit.get_queue_bindings("/", unique))
        messages = rabbit.get_messages("/", unique, count=1, requeue=False)
        assert messages[0]["payload"] == "one"
        rabbit.purge_queue("/", unique)
        eventually(lambda: depth() == 0, "an empty queue", 15)
        assert rabbit.get_overview()["object_totals"]["queues"] >= 1
        assert "guest" in [user["name"] for user in rabbit.get_users()]
    finally:
        rabbit.delete_queue("/", unique)
        rabbit.delete_exchange("/", f"{unique}-x")
    assert unique not in [q["name"] for q in rabbit.get_queues("/")]


def _families(text: str) -> dict[str, list]:
    found: dict[str, list] = {}
    for family in text_string_to_metric_families(text):
        found.setdefault(family.name, []).extend(family.samples)
    return found


@pytest.mark.warrenmq_only  # RabbitMQ serves them on another port (15692)
def test_metrics_parse_with_rabbitmq_names(management: ManagementAddress, unique: str) -> None:
    connection = pika.BlockingConnection(pika.URLParameters(management.amqp.url))
    try:
        channel = connection.channel()
        channel.queue_declare(unique)
        channel.confirm_delivery()
        for _ in range(3):
            channel.basic_publish("", unique, b"m")
        with client(management.url, auth=None) as http:  # no login, as RabbitMQ's plugin
            response = http.get("/metrics")
            assert response.status_code == 200
            assert response.headers["content-type"].startswith("text/plain")
            families = _families(response.text)
            for name in ("rabbitmq_queue_messages_ready", "rabbitmq_queue_messages_unacked",
                         "rabbitmq_queue_consumers", "rabbitmq_connections",
                         "rabbitmq_channels", "rabbitmq_queues"):  # fmt: skip
                assert name in families, name
            assert families["rabbitmq_connections"][0].value >= 1
            assert families["rabbitmq_queue_messages_ready"][0].labels == {}  # broker-wide

            def per_queue() -> dict[str, float] | None:
                text = http.get("/metrics/per-object").text
                samples = {
                    sample.name: sample.value
                    for family in text_string_to_metric_families(text)
                    for sample in family.samples
                    if sample.labels.get("queue") == unique
                }
                published = samples.get("rabbitmq_queue_messages_published_total")
                return samples if published == 3 else None

            samples = eventually(per_queue, "3 messages counted as published")
            assert samples["rabbitmq_queue_messages_ready"] == 3
            assert samples["rabbitmq_queue_consumers"] == 0
            received = _families(http.get("/metrics").text)["rabbitmq_global_messages_received"]
            assert received[0].value >= 3
        channel.queue_delete(unique)
    finally:
        connection.close()


@pytest.mark.warrenmq_only
def test_metrics_of_many_queues_stay_cheap(management: ManagementAddress, unique: str) -> None:
    with client(management.url) as http:
        for n in range(200):
            http.put(f"/api/queues/%2F/{unique}-{n}", json={"durable": False})
        try:
            text = http.get("/metrics/per-object").text
            ready = [
                sample
                for family in text_string_to_metric_families(text)
                if family.name == "rabbitmq_queue_messages_ready"
                for sample in family.samples
                if sample.labels["queue"].startswith(unique)
            ]
            assert len(ready) == 200
        finally:
            for n in range(200):
                http.delete(f"/api/queues/%2F/{unique}-{n}")


def test_unknown_api_path_is_a_json_404(management: ManagementAddress) -> None:
    with client(management.url) as http:
        response = http.get("/api/no-such-thing")
    assert response.status_code == 404
    assert response.json()["error"] == "Object Not Found"


def test_health_check(management: ManagementAddress) -> None:
    with client(management.url) as http:
        assert http.get("/api/aliveness-test/%2F").json() == {"status": "ok"}
