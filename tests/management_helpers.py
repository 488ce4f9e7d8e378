"""Helpers for the management API's tests: settings that turn the plugin on, an httpx client."""

from __future__ import annotations

from typing import Any

import httpx

from warrenmq.broker import Settings

GUEST = ("guest", "guest")


def management_settings(**changes: Any) -> Settings:
    """Settings of a test broker: AMQP and the management API on ephemeral loopback ports."""
    plugin_config = changes.pop("plugin_config", {})
    section = {"enabled": True, "port": 0, "sample_interval": 0.2}
    section.update(plugin_config.pop("management", {}))
    return Settings(
        host="127.0.0.1",
        amqp_port=0,
        plugin_config={"management": section, **plugin_config},
        **changes,
    )


def client(url: str, auth: tuple[str, str] | None = GUEST) -> httpx.Client:
    return httpx.Client(base_url=url, auth=auth, timeout=10.0)


def eventually(condition: Any, what: str, timeout: float = 20.0) -> Any:
    """Poll ``condition()`` until it returns something true; fail naming ``what`` after
    ``timeout`` seconds. Returns that value."""
    import time

    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


def quoted(name: str) -> str:
    """A vhost or resource name as one path segment (``/`` is ``%2F``)."""
    from urllib.parse import quote

    return quote(name, safe="")


def add_user(http: httpx.Client, name: str, password: str, tags: str, vhost: str | None = "/"):
    """Create a user through the API (and full permissions in ``vhost`` unless None)."""
    response = http.put(f"/api/users/{name}", json={"password": password, "tags": tags})
    assert response.status_code in (201, 204), response.text
    if vhost is not None:
        response = http.put(
            f"/api/permissions/{quoted(vhost)}/{name}",
            json={"configure": ".*", "write": ".*", "read": ".*"},
        )
        assert response.status_code in (201, 204), response.text
