"""The opt-in pytest fixtures a plugin author enables with
``pytest_plugins = ["warrenmq.pytest_plugin"]``, run as that author would run them."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

from dists import install_distribution

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


def _run_pytest(directory: Path, env: dict[str, str] | None = None) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(directory)],
        cwd=directory,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "1 passed" in result.stdout


def test_plugin_author_fixtures(tmp_path: Path) -> None:
    (tmp_path / "everything.py").write_text(textwrap.dedent(PLUGIN))
    (tmp_path / "conftest.py").write_text(textwrap.dedent(CONFTEST))
    (tmp_path / "test_everything.py").write_text(textwrap.dedent(TEST))
    _run_pytest(tmp_path)


def test_plugin_author_fixtures_with_the_plugin_installed(tmp_path: Path) -> None:
    """The package is installed (its entry point loads the module) and the conftest still
    passes the module in ``warrenmq_plugins``: it is registered once, not refused."""
    site = install_distribution(
        tmp_path / "site",
        "everything",
        "0.1",
        {"x-everything": "everything"},
        {"everything": PLUGIN},
    )
    project = tmp_path / "project"
    project.mkdir()
    (project / "conftest.py").write_text(textwrap.dedent(CONFTEST))
    (project / "test_everything.py").write_text(textwrap.dedent(TEST))
    _run_pytest(project, env={**os.environ, "PYTHONPATH": str(site)})
