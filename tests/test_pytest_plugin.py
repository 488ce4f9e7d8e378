"""The opt-in pytest fixtures a plugin author enables with
``pytest_plugins = ["warrenmq.pytest_plugin"]``, run as that author would run them."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

PLUGIN = """
from typing import Any

from warrenmq import Binding, Exchange, ExchangeType, Message, Router, hookimpl


class EverythingRouter(Router):
    def __init__(self) -> None:
        self.targets: dict[Any, None] = {}

    def add_binding(self, binding: Binding) -> None:
        self.targets[binding.destination] = None

    def remove_bindings(self, bindings: Any) -> None:
        for binding in bindings:
            self.targets.pop(binding.destination, None)

    def route(self, message: Message) -> Any:
        return self.targets.keys()


class Everything(ExchangeType):
    name = "x-everything"

    @classmethod
    def create_router(cls, exchange: Exchange) -> Router:
        return EverythingRouter()


@hookimpl
def warrenmq_register_exchange_types(registry: Any) -> None:
    registry.add(Everything)
"""

CONFTEST = """
import pytest

import everything

pytest_plugins = ["warrenmq.pytest_plugin"]


@pytest.fixture
def warrenmq_plugins():
    return [everything]
"""

TEST = """
import pika


def test_custom_exchange_type(warrenmq_broker):
    connection = pika.BlockingConnection(pika.URLParameters(warrenmq_broker.url))
    channel = connection.channel()
    channel.exchange_declare("all", "x-everything")
    channel.queue_declare("q")
    channel.queue_bind("q", "all", "ignored")
    channel.basic_publish("all", "any.key", b"hello")
    method, _, body = channel.basic_get("q", auto_ack=True)
    connection.close()
    assert body == b"hello"
"""


def test_plugin_author_fixtures(tmp_path: Path) -> None:
    (tmp_path / "everything.py").write_text(textwrap.dedent(PLUGIN))
    (tmp_path / "conftest.py").write_text(textwrap.dedent(CONFTEST))
    (tmp_path / "test_everything.py").write_text(textwrap.dedent(TEST))
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(tmp_path)],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "1 passed" in result.stdout
