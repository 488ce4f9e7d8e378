"""``warrenmq run --management-port``: the listener's lifetime inside the broker, and what the
log says at start, on declares and deletes, and on bad input (never a traceback)."""

from __future__ import annotations

import re
import signal
import socket
import subprocess
import sys
from pathlib import Path
from urllib.parse import quote

import pika
import pytest
from example_plugins import broker_process
from management_helpers import client

pytestmark = pytest.mark.warrenmq_only


def _http_port(line: str) -> int:
    found = re.search(r"http://[^:]+:(\d+)/", line)
    assert found, line
    return int(found.group(1))


def test_the_log_tells_what_happens(tmp_path: Path) -> None:
    with broker_process(
        "--management-port", "0", "--log-level", "debug", "--data-dir", str(tmp_path),
        "--store", "disk",
    ) as (process, log, amqp_port):  # fmt: skip
        url = f"http://127.0.0.1:{_http_port(log.wait_for('management API'))}"
        with client(url) as http:
            assert http.put("/api/queues/%2F/logged-q", json={"durable": True}).status_code == 201
            log.wait_for("queue 'logged-q' declared in vhost '/' (durable)")
            http.put("/api/exchanges/%2F/logged-x", json={"type": "fanout"})
            log.wait_for("exchange 'logged-x' (fanout) declared in vhost '/'")
            assert http.post("/api/queues/%2F/logged-q/get", content=b"{oops").status_code == 400
            assert http.get("/api/queues/%2F/logged-q", auth=("guest", "bad")).status_code == 401
            with socket.create_connection(("127.0.0.1", _http_port(log.text))) as raw:
                raw.sendall(b"NOT HTTP AT ALL\r\n\r\n")
                raw.recv(1024)
            http.delete("/api/exchanges/%2F/logged-x")
            log.wait_for("exchange 'logged-x' deleted from vhost '/'")
        connection = pika.BlockingConnection(pika.ConnectionParameters("127.0.0.1", amqp_port))
        channel = connection.channel()
        channel.queue_delete("logged-q")
        log.wait_for("queue 'logged-q' deleted from vhost '/'")
        with pytest.raises(pika.exceptions.ChannelClosedByBroker):
            channel.queue_declare("amq.reserved-name")
        connection.close()
        process.send_signal(signal.SIGINT)
        assert process.wait(10) == 0
        text = log.finish()
    for expected in ("plugins: ", "management", f"data directory {tmp_path}",
                     "recovered 0 durable queues", "1 user, vhosts: /",
                     "listening for amqp on tcp 127.0.0.1:", "broker stopped"):  # fmt: skip
        assert expected in text, expected
    assert "Traceback" not in text


def test_a_busy_management_port_stops_start_up_with_a_clear_message() -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        result = subprocess.run(
            [sys.executable, "-m", "warrenmq", "run", "--port", "0", "--store", "memory",
             "--management-port", str(port)],
            capture_output=True, text=True, timeout=30, check=False,
        )  # fmt: skip
    assert result.returncode == 1
    assert f"cannot start the broker: [Errno 98] management API on 127.0.0.1:{port}" in (
        result.stderr
    )
    assert "Traceback" not in result.stderr


def test_management_is_off_unless_asked() -> None:
    with broker_process("--store", "memory") as (process, log, _):
        log.wait_for("memory alarm at")  # the last line of start-up
        assert "management API" not in log.text


def test_enabled_in_the_config_file(tmp_path: Path) -> None:
    config = tmp_path / "warrenmq.toml"
    config.write_text(
        '[broker]\nstore = "memory"\n\n[plugins.management]\nenabled = true\nport = 0\n'
    )
    with broker_process("--config", str(config)) as (_, log, _):
        url = f"http://127.0.0.1:{_http_port(log.wait_for('management API'))}"
        with client(url) as http:
            assert http.get("/api/overview").status_code == 200
    bad = tmp_path / "bad.toml"
    bad.write_text("[plugins.management]\nport = 99999\n")
    checked = subprocess.run(
        [sys.executable, "-m", "warrenmq", "config", "check", str(bad)],
        capture_output=True, text=True, timeout=30, check=False,
    )  # fmt: skip
    assert checked.returncode == 2
    assert "port" in checked.stderr and "0 to 65535" in checked.stderr


def test_users_made_through_the_api_last_across_a_restart(tmp_path: Path) -> None:
    for start in range(2):
        with broker_process(
            "--management-port", "0", "--data-dir", str(tmp_path), "--store", "disk"
        ) as (_, log, _):  # fmt: skip
            url = f"http://127.0.0.1:{_http_port(log.wait_for('management API'))}"
            with client(url) as http:
                if start == 0:
                    made = http.put(
                        "/api/users/kept", json={"password": "pw", "tags": "monitoring"}
                    )
                    assert made.status_code == 201
                    assert http.put("/api/vhosts/kept-vhost", json={}).status_code == 201
                users = {u["name"]: u["tags"] for u in http.get("/api/users").json()}
                assert users["kept"] == ["monitoring"]
                assert "kept-vhost" in [v["name"] for v in http.get("/api/vhosts").json()]
            with client(url, auth=("kept", "pw")) as kept:
                assert kept.get("/api/whoami").json() == {"name": "kept", "tags": ["monitoring"]}


def test_mqtt_clients_are_connections_too(unique: str) -> None:
    from management_helpers import eventually, management_settings
    from mqtt_helpers import Client, MQTTAddress

    from warrenmq.testing import running_broker

    with running_broker(management_settings(mqtt_port=0)) as running:
        host, port = running.address("management")
        mqtt = Client(MQTTAddress(*running.address("mqtt")), unique, clean=False)
        assert mqtt.connect() == (0, False)
        try:
            assert mqtt.subscribe(("sensors/+/temperature", 1)) == [1]
            with client(f"http://{host}:{port}") as http:
                found = eventually(
                    lambda: [c for c in http.get("/api/connections").json()
                             if c["client_properties"].get("client_id") == unique],
                    "the MQTT connection listed",
                )[0]  # fmt: skip
                assert found["protocol"] == "MQTT 3.1.1"
                assert found["user"] == "guest"
                queues = [q["name"] for q in http.get("/api/queues").json()]
                assert any(unique in name for name in queues)  # the subscription's queue
                closed = http.delete(f"/api/connections/{quote(found['name'], safe='')}")
                assert closed.status_code == 204
                assert mqtt.disconnected.wait(10)
        finally:
            mqtt.drop()
