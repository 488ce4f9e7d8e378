"""A store plugin is told of every durable definition a client creates or removes."""

from __future__ import annotations

from typing import Any

import pika

import warrenmq
from warrenmq import Settings, Store
from warrenmq.testing import running_broker


class RecordingStore(Store):
    name = "recording"
    calls: list[tuple[str, str]] = []

    def save_exchange(self, exchange: Any) -> None:
        self.calls.append(("save_exchange", exchange.name))

    def delete_exchange(self, exchange: Any) -> None:
        self.calls.append(("delete_exchange", exchange.name))

    def save_queue(self, queue: Any) -> None:
        self.calls.append(("save_queue", queue.name))

    def delete_queue(self, queue: Any) -> None:
        self.calls.append(("delete_queue", queue.name))

    def save_binding(self, binding: Any) -> None:
        self.calls.append(("save_binding", f"{binding.source.name}->{binding.destination.name}"))

    def delete_binding(self, binding: Any) -> None:
        self.calls.append(("delete_binding", f"{binding.source.name}->{binding.destination.name}"))


class RecordingStorePlugin:
    __name__ = "recording-store"

    @staticmethod
    @warrenmq.hookimpl
    def warrenmq_register_stores(registry: Any) -> None:
        registry.add(RecordingStore)


def test_durable_definitions_reach_the_store_and_transient_ones_do_not() -> None:
    RecordingStore.calls = []
    settings = Settings(amqp_port=0, store="recording")
    with running_broker(settings, plugins=[RecordingStorePlugin]) as running:
        connection = pika.BlockingConnection(pika.URLParameters(running.url))
        try:
            channel = connection.channel()
            channel.exchange_declare("orders", "topic", durable=True)
            channel.exchange_declare("scratch", "fanout")
            channel.queue_declare("billing", durable=True)
            channel.queue_declare("temp")
            channel.queue_bind("billing", "orders", "order.#")
            channel.queue_bind("temp", "orders", "order.#")
            channel.queue_unbind("billing", "orders", "order.#")
            channel.queue_delete("billing")
            channel.exchange_delete("orders")
            channel.exchange_delete("scratch")
            channel.queue_delete("temp")
        finally:
            connection.close()
    assert RecordingStore.calls == [
        ("save_exchange", "orders"),
        ("save_queue", "billing"),
        ("save_binding", "orders->billing"),
        ("delete_binding", "orders->billing"),
        ("delete_queue", "billing"),
        ("delete_exchange", "orders"),
    ]
