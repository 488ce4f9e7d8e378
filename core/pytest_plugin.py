"""Opt-in pytest fixtures for testing warrenmq plugins against a real broker.

Enable in a ``conftest.py`` with ``pytest_plugins = ["warrenmq.pytest_plugin"]``; override
``warrenmq_plugins`` to return the plugin modules or objects under test.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from .testing import RunningBroker, running_broker


@pytest.fixture
def warrenmq_plugins() -> list[Any]:
    """Extra plugins to register in ``warrenmq_broker`` (none by default)."""
    return []


@pytest.fixture
def warrenmq_broker(warrenmq_plugins: list[Any]) -> Iterator[RunningBroker]:
    """A broker with the entry-point plugins plus ``warrenmq_plugins``, on an ephemeral port.

    ``.host``, ``.port`` and ``.url`` address it; ``.broker`` is the ``warrenmq.Broker``.
    """
    with running_broker(plugins=warrenmq_plugins) as running:
        yield running
