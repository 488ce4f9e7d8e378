"""A browser's MQTT.js over WebSocket: headless chromium loads a page that connects to the
broker with MQTT.js's browser bundle, subscribes, publishes, and shows what it received; an
AMQP consumer on amq.topic sees the same message."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import urlencode

import pika
import pytest
from browser_helpers import browser_page, serve_directory
from pika_helpers import get_bodies

from warrenmq.broker import Settings
from warrenmq.testing import running_broker

PAGES = Path(__file__).resolve().parent / "browser"


@pytest.mark.warrenmq_only
def test_mqtt_js_in_a_browser(unique: str) -> None:
    settings = Settings(host="127.0.0.1", amqp_port=0, ws_port=0)
    with running_broker(settings) as running, serve_directory(PAGES) as site:
        info = next(i for i in running.broker.listeners if i.spec.transport == "websocket")
        connection = pika.BlockingConnection(pika.URLParameters(running.url))
        channel = connection.channel()
        channel.queue_declare(unique)
        channel.queue_bind(unique, "amq.topic", f"{unique}.*")
        query = urlencode(
            {"url": f"ws://{info.host}:{info.port}/ws", "topic": unique, "id": unique}
        )
        with browser_page() as page:
            page.goto(f"{site}/mqtt.html?{query}")
            received = page.locator("#received li")
            received.first.wait_for()
            assert received.all_text_contents() == [f"{unique}/hello: hello from the browser"]
            assert page.locator("#status").text_content() == "subscribed"
            views = running.call(running.broker.connection_views)
            view = next(v for v in views if v.protocol == "mqtt")
            assert (view.transport, view.client["client_id"]) == ("ws", unique)
        assert get_bodies(channel, unique) == [b"hello from the browser"]
        connection.close()
