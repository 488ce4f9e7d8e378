"""MQTT topics and filters, and their mapping onto ``amq.topic`` routing keys.

As RabbitMQ's MQTT plugin: ``/`` separates words (``.`` in AMQP), ``+`` is ``*`` and ``#``
is ``#``. A ``.`` inside an MQTT topic level therefore also separates words on the AMQP
side, and comes back to MQTT subscribers as ``/`` (RabbitMQ does the same).
"""

from __future__ import annotations


class BadTopic(ValueError):
    pass


def check_topic(topic: str) -> None:
    """A topic name a PUBLISH may carry: not empty, no wildcard."""
    if not topic:
        raise BadTopic("empty topic name")
    if "+" in topic or "#" in topic:
        raise BadTopic(f"wildcard in topic name '{topic}'")


def check_filter(topic_filter: str) -> None:
    """A SUBSCRIBE filter: ``#`` only as the last level, wildcards alone in their level."""
    if not topic_filter:
        raise BadTopic("empty topic filter")
    levels = topic_filter.split("/")
    for index, level in enumerate(levels):
        if "#" in level and (level != "#" or index != len(levels) - 1):
            raise BadTopic(f"'#' not alone at the end of '{topic_filter}'")
        if "+" in level and level != "+":
            raise BadTopic(f"'+' not alone in a level of '{topic_filter}'")


def to_amqp(topic: str) -> str:
    """An MQTT topic name or filter as an ``amq.topic`` routing key or binding key."""
    return topic.replace("/", ".").replace("+", "*")


def to_mqtt(routing_key: str) -> str:
    """An ``amq.topic`` routing key as the topic MQTT subscribers see."""
    return routing_key.replace(".", "/")


def matches(topic_filter: str, topic: str) -> bool:
    """Does ``topic_filter`` match ``topic`` (MQTT rules: wildcards skip ``$`` topics)?"""
    if topic.startswith("$") and topic_filter[:1] in ("+", "#"):
        return False
    wanted = topic_filter.split("/")
    levels = topic.split("/")
    for index, word in enumerate(wanted):
        if word == "#":
            return True
        if index >= len(levels):
            return False
        if word != "+" and word != levels[index]:
            return False
    return len(wanted) == len(levels)
