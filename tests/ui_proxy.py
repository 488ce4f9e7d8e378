"""Serve the management UI's static files and forward ``/api/`` to another management API.

Only for running the UI tests against RabbitMQ (``WARRENMQ_TEST_EXTERNAL``): its management
plugin serves its own UI, so the test serves ours in front of RabbitMQ's API, the way the
warrenmq plugin serves it in front of its own. The UI then shows it works against both.
"""

from __future__ import annotations

import http.client
import mimetypes
import threading
import urllib.parse
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

FORWARDED = ("authorization", "content-type", "x-reason")


@contextmanager
def serve_ui(static: Path, api: str) -> Iterator[str]:
    """Serve ``static`` at ``/`` and ``/static/``; forward ``/api/`` to ``api`` (its base
    URL); yields this server's base URL."""
    upstream = urllib.parse.urlsplit(api)

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: object) -> None:
            pass

        def _reply(self, status: int, headers: list[tuple[str, str]], body: bytes) -> None:
            self.send_response(status)
            for name, value in headers:
                self.send_header(name, value)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            with suppress(ConnectionError):  # the page went away meanwhile
                self.wfile.write(body)

        def _static(self) -> None:
            path = urllib.parse.urlsplit(self.path).path
            name = "index.html" if path == "/" else path.removeprefix("/static/")
            file = (static / name).resolve()
            if not file.is_relative_to(static.resolve()) or not file.is_file():
                self._reply(404, [], b"not found")
                return
            kind = mimetypes.guess_type(file.name)[0] or "application/octet-stream"
            self._reply(200, [("Content-Type", kind)], file.read_bytes())

        def _handle(self) -> None:
            if not self.path.startswith("/api/"):
                self._static()
                return
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else None
            headers = {k: v for k, v in self.headers.items() if k.lower() in FORWARDED}
            connection = http.client.HTTPConnection(upstream.netloc, timeout=30)
            try:
                connection.request(
                    self.command, upstream.path.rstrip("/") + self.path, body, headers
                )
                answer = connection.getresponse()
                data = answer.read()
            finally:
                connection.close()
            kept = [
                (k, v)
                for k, v in answer.getheaders()
                if k.lower() in ("content-type", "www-authenticate")
            ]
            self._reply(answer.status, kept, data)

        do_GET = do_PUT = do_POST = do_DELETE = _handle

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, name="ui-proxy", daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/"
    finally:
        server.shutdown()
        server.server_close()
