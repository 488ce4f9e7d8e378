"""``warrenmq ctl`` run as a command against a broker the test started (its management API);
the same commands work against RabbitMQ's (WARRENMQ_TEST_MANAGEMENT_EXTERNAL)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pika
import pytest
from conftest import ManagementAddress
from management_helpers import client, eventually


def ctl(management: ManagementAddress, *args: str, env: dict[str, str] | None = None,
        stdin: str | None = None) -> subprocess.CompletedProcess[str]:  # fmt: skip
    return subprocess.run(
        [sys.executable, "-m", "warrenmq", "ctl", "--url", management.url, *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env={**os.environ, **(env or {})},
        input=stdin,
    )


def _rows(output: str) -> list[list[str]]:
    return [line.split() for line in output.splitlines()]


def test_list_queues_as_a_table_and_as_json(management: ManagementAddress, unique: str) -> None:
    with client(management.url) as http:
        http.put(f"/api/queues/%2F/{unique}", json={"durable": False})
        for _ in range(2):
            http.post("/api/exchanges/%2F/amq.default/publish",
                      json={"properties": {}, "routing_key": unique, "payload": "x",
                            "payload_encoding": "string"})  # fmt: skip
        try:
            eventually(lambda: [unique, "2", "0"] in _rows(ctl(management, "list", "queues").stdout),
                       "the queue with 2 messages")  # fmt: skip
            table = ctl(management, "list", "queues")
            assert table.returncode == 0, table.stderr
            assert _rows(table.stdout)[0] == ["name", "messages", "consumers"]
            listed = ctl(management, "list", "queues", "name", "messages_ready", "durable",
                         "--format", "json")  # fmt: skip
            assert listed.returncode == 0, listed.stderr
            mine = [q for q in json.loads(listed.stdout) if q["name"] == unique]
            assert mine == [{"name": unique, "messages_ready": 2, "durable": False}]
            purged = ctl(management, "purge", "queue", unique)
            assert purged.returncode == 0, purged.stderr
            eventually(lambda: [unique, "0", "0"] in _rows(ctl(management, "list", "queues").stdout),
                       "the queue purged")  # fmt: skip
        finally:
            http.delete(f"/api/queues/%2F/{unique}")


def test_other_lists_use_rabbitmqctl_column_names(management: ManagementAddress) -> None:
    expected = {
        "exchanges": ["name", "type"],
        "bindings": ["source_name", "source_kind", "destination_name", "destination_kind",
                     "routing_key", "arguments"],
        "connections": ["name", "user", "peer_host", "peer_port", "state"],
        "consumers": ["queue_name", "channel", "consumer_tag", "ack_required", "prefetch_count",
                      "active"],
        "users": ["user", "tags"],
        "vhosts": ["name"],
    }  # fmt: skip
    for kind, header in expected.items():
        result = ctl(management, "list", kind)
        assert result.returncode == 0, (kind, result.stderr)
        assert _rows(result.stdout)[0] == header, kind
    assert ["amq.direct", "direct"] in _rows(ctl(management, "list", "exchanges").stdout)
    assert ["guest", "administrator"] in _rows(ctl(management, "list", "users").stdout)
    assert ["/"] in _rows(ctl(management, "list", "vhosts").stdout)


def test_close_a_connection(management: ManagementAddress) -> None:
    parameters = pika.URLParameters(management.amqp.url)
    parameters.client_properties = {"connection_name": "to-be-closed-by-ctl"}
    connection = pika.BlockingConnection(parameters)
    try:

        def listed() -> str | None:
            result = ctl(management, "list", "connections", "name", "user_provided_name",
                         "--format", "json")  # fmt: skip
            for item in json.loads(result.stdout):
                if item["user_provided_name"] == "to-be-closed-by-ctl":
                    return str(item["name"])
            return None

        name = eventually(listed, "the connection listed")
        closed = ctl(management, "close", "connection", name, "--reason", "maintenance")
        assert closed.returncode == 0, closed.stderr
        with pytest.raises(pika.exceptions.ConnectionClosedByBroker) as info:
            for _ in range(100):
                connection.process_data_events(0.1)
        assert info.value.reply_code == 320
        assert "maintenance" in info.value.reply_text
        eventually(lambda: listed() is None, "the connection gone")
    finally:
        if connection.is_open:
            connection.close()


def test_export_and_import_definitions(
    management: ManagementAddress, unique: str, tmp_path: Path
) -> None:
    file = tmp_path / "definitions.json"
    source = {"queues": [{"name": unique, "vhost": "/", "durable": False, "auto_delete": False,
                          "arguments": {"x-max-length": 5}}]}  # fmt: skip
    file.write_text(json.dumps(source))
    try:
        imported = ctl(management, "import", str(file))
        assert imported.returncode == 0, imported.stderr
        exported_file = tmp_path / "exported.json"
        exported = ctl(management, "export", str(exported_file))
        assert exported.returncode == 0, exported.stderr
        queues = json.loads(exported_file.read_text())["queues"]
        assert {"name": unique, "x-max-length": 5} in [
            {"name": q["name"], **q["arguments"]} for q in queues
        ]
        to_stdout = ctl(management, "export", "-")
        assert unique in [q["name"] for q in json.loads(to_stdout.stdout)["queues"]]
    finally:
        with client(management.url) as http:
            http.delete(f"/api/queues/%2F/{unique}")


def test_status(management: ManagementAddress) -> None:
    result = ctl(management, "status")
    assert result.returncode == 0, result.stderr
    assert "listeners:" in result.stdout
    assert "queues:" in result.stdout
    as_json = json.loads(ctl(management, "status", "--format", "json").stdout)
    assert "object_totals" in as_json


def test_errors_go_to_stderr_with_a_non_zero_status(
    management: ManagementAddress, tmp_path: Path
) -> None:
    refused = ctl(management, "list", "queues", "--password", "wrong")
    assert refused.returncode == 2
    assert refused.stdout == ""
    assert "warrenmq ctl: Login failed (HTTP 401" in refused.stderr
    from_env = ctl(management, "list", "queues", env={"WARRENMQ_PASSWORD": "wrong"})
    assert from_env.returncode == 2
    missing = ctl(management, "purge", "queue", "no-such-queue-for-ctl")
    assert missing.returncode == 2
    assert "HTTP 404" in missing.stderr
    bad_file = tmp_path / "bad.json"
    bad_file.write_text("{not json")
    bad = ctl(management, "import", str(bad_file))
    assert bad.returncode == 2
    assert "invalid JSON" in bad.stderr
    unreachable = subprocess.run(
        [sys.executable, "-m", "warrenmq", "ctl", "--url", "http://127.0.0.1:9", "status"],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert unreachable.returncode == 1
    assert "cannot reach the management API" in unreachable.stderr
    assert "Traceback" not in unreachable.stderr + refused.stderr + bad.stderr
