"""/metrics, /healthz and /readyz on ORCHESTRA_HTTP_ADDR (127.0.0.1:9464 by default).

A small threaded stdlib server: scrapes and probes must answer even while a poll keeps
the event loop busy. /metrics negotiates the OpenMetrics format (which carries
exemplars) or the classic Prometheus text format from the Accept header.
"""

from __future__ import annotations

import json
import logging
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from prometheus_client.exposition import choose_encoder

from exporter.errors import ConfigError
from exporter.telemetry import Telemetry

log = logging.getLogger(__name__)


class HttpServer:
    def __init__(
        self, address: tuple[str, int], telemetry: Telemetry, poll_interval: float
    ) -> None:
        handler = _handler_class(telemetry, poll_interval)
        try:
            self._server = ThreadingHTTPServer(address, handler)
        except OSError as exc:
            host, port = address
            raise ConfigError(
                [f"ORCHESTRA_HTTP_ADDR: cannot listen on {host}:{port} ({exc.strerror or exc})"]
            ) from exc
        self._server.daemon_threads = True
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="orchestra-otel-http", daemon=True
        )

    @property
    def address(self) -> tuple[str, int]:
        host, port = self._server.server_address[:2]
        return str(host), int(port)

    def start(self) -> None:
        self._thread.start()
        host, port = self.address
        log.info("metrics at http://%s:%d/metrics, probes at /healthz and /readyz", host, port)

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)


def _handler_class(telemetry: Telemetry, poll_interval: float) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        server_version = "orchestra-otel"

        def do_GET(self) -> None:
            path = self.path.split("?", 1)[0]
            if path == "/metrics":
                encoder, content_type = choose_encoder(self.headers.get("Accept", ""))
                self._send(200, encoder(telemetry.registry), content_type)
            elif path == "/healthz":
                self._send_json(200, {"status": "ok"})
            elif path == "/readyz":
                ready, reasons = telemetry.state.readiness(poll_interval)
                self._send_json(200 if ready else 503, {"ready": ready, "reasons": reasons})
            else:
                self._send_json(404, {"error": "not found; try /metrics, /healthz or /readyz"})

        def _send_json(self, status: int, body: dict[str, Any]) -> None:
            self._send(status, json.dumps(body).encode() + b"\n", "application/json")

        def _send(self, status: int, body: bytes, content_type: str) -> None:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            log.debug("http: " + format, *args)

    return Handler
