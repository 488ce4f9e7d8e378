"""``/metrics`` in Prometheus' text format, with RabbitMQ's metric names where the concept is
the same (its ``rabbitmq_prometheus`` plugin).

``/metrics`` is broker-wide, as RabbitMQ's default endpoint: totals over all queues, no
labels. ``/metrics/per-object`` adds a series per queue labelled ``vhost`` and ``queue``.
The text is written directly, one line per sample: 10,000 queues take a few tens of
milliseconds. Counters (``*_total``) come from the last sample (at most 5 s old), so they
never go down when a queue or connection goes away; gauges are read at the scrape.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

from warrenmq import __version__
from warrenmq.broker import MESSAGE_OVERHEAD

from .render import QUEUE_BASE_MEMORY

if TYPE_CHECKING:
    from .api import Api

#: (name, type, help) of the per-queue series, in the order ``_queue_values`` gives them
QUEUE_SERIES = (
    ("rabbitmq_queue_messages_ready", "gauge", "Messages ready to be delivered to consumers"),
    ("rabbitmq_queue_messages_unacked", "gauge", "Messages delivered and not yet acknowledged"),
    ("rabbitmq_queue_messages", "gauge", "Messages ready and unacknowledged"),
    ("rabbitmq_queue_messages_ready_bytes", "gauge", "Bytes of the bodies of ready messages"),
    ("rabbitmq_queue_messages_unacked_bytes", "gauge", "Bytes of unacknowledged message bodies"),
    ("rabbitmq_queue_consumers", "gauge", "Consumers attached to the queue"),
    ("rabbitmq_queue_process_memory_bytes", "gauge", "Estimated memory the queue holds"),
    ("rabbitmq_queue_messages_published_total", "counter", "Messages the queue took in"),
    ("rabbitmq_queue_messages_delivered_total", "counter", "Deliveries and gets from the queue"),
    ("rabbitmq_queue_messages_acked_total", "counter", "Deliveries acknowledged"),
    ("rabbitmq_queue_messages_redelivered_total", "counter", "Messages delivered again"),
)


def _label(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def metrics_text(api: Api, per_object: bool = False) -> str:
    broker, sampler = api.broker, api.sampler
    lines: list[str] = []

    def family(name: str, kind: str, help_text: str) -> None:
        lines.append(f"# HELP {name} {help_text}")
        lines.append(f"# TYPE {name} {kind}")

    def single(name: str, kind: str, help_text: str, value: float) -> None:
        family(name, kind, help_text)
        lines.append(f"{name} {value}")

    queues = [queue for vhost in list(broker.vhosts.values()) for queue in vhost.queues.values()]
    counted = sampler.queues
    sums = [0] * len(QUEUE_SERIES)
    rows: list[tuple[str, list[int]]] = []
    for queue in queues:
        ready, unacked = queue.ready_count, queue.unacked_count
        ready_bytes, unacked_bytes = queue.ready_bytes, queue.unacked_bytes
        sampled = counted.get(queue)
        counters = sampled[0] if sampled is not None else (0, 0, 0, 0)
        values = [
            ready, unacked, ready + unacked, ready_bytes, unacked_bytes, len(queue.consumers),
            QUEUE_BASE_MEMORY + ready_bytes + unacked_bytes
            + MESSAGE_OVERHEAD * (ready + unacked),
            counters[0], counters[1], counters[2], counters[3],
        ]  # fmt: skip
        for index, value in enumerate(values):
            sums[index] += value
        if per_object:
            labels = f'{{vhost="{_label(queue.vhost.name)}",queue="{_label(queue.name)}"}}'
            rows.append((labels, values))
    for index, (name, kind, help_text) in enumerate(QUEUE_SERIES):
        family(name, kind, help_text)
        if per_object:
            lines.extend(f"{name}{labels} {values[index]}" for labels, values in rows)
        else:
            lines.append(f"{name} {sums[index]}")

    views = broker.connection_views()
    totals = dict(zip(("publish", "deliver", "ack", "redeliver"), sampler.totals(), strict=False))
    single("rabbitmq_queues", "gauge", "Queues", len(queues))
    single("rabbitmq_connections", "gauge", "Open connections", len(views))
    single("rabbitmq_channels", "gauge", "Open channels", sum(len(v.sessions) for v in views))
    single("rabbitmq_consumers", "gauge", "Consumers", sum(len(q.consumers) for q in queues))
    single("rabbitmq_global_messages_received_total", "counter",
           "Messages received from publishers", totals["publish"])  # fmt: skip
    single("rabbitmq_global_messages_delivered_total", "counter",
           "Messages delivered to consumers and gets", totals["deliver"])  # fmt: skip
    single("rabbitmq_global_messages_acknowledged_total", "counter",
           "Messages acknowledged by consumers", totals["ack"])  # fmt: skip
    single("rabbitmq_global_messages_redelivered_total", "counter",
           "Messages delivered again", totals["redeliver"])  # fmt: skip
    resident = broker.settings.memory_gauge()
    if resident is not None:
        single("rabbitmq_process_resident_memory_bytes", "gauge",
               "Resident memory of the broker process", resident)  # fmt: skip
    single("rabbitmq_resident_memory_limit_bytes", "gauge",
           "Memory above which publishers are blocked", broker.memory_limit() or 0)  # fmt: skip
    single("rabbitmq_alarms_memory_used_watermark", "gauge",
           "1 while the memory alarm is on", int(broker.memory_alarm))  # fmt: skip
    single("rabbitmq_alarms_free_disk_space_watermark", "gauge",
           "1 while the disk alarm is on", int(broker.disk_alarm))  # fmt: skip
    family("rabbitmq_build_info", "untyped", "warrenmq's version")
    lines.append(f'rabbitmq_build_info{{product="warrenmq",version="{__version__}"}} 1')
    family("rabbitmq_identity_info", "untyped", "The node")
    lines.append(f'rabbitmq_identity_info{{rabbitmq_node="{_label(_node())}"}} 1')
    lines.append("")
    return "\n".join(lines)


def _node() -> str:
    return f"warrenmq@{os.uname().nodename}"
