"""The emulator's HTTP/1.1 transport: a threading server and the handler that speaks it.

Standard library only. The handler reads one request into a `Request`, hands it to the
server's `serve` callback (Emulator.serve) and writes back the `Delivery` it is given:
whole, truncated, reset, or streamed in chunks at a pace. Keep-alive stays on (httpx
reuses connections), so every whole answer carries Content-Length; the server tracks
open connections so that stopping it drops idle keep-alive ones too.
"""

from __future__ import annotations

import contextlib
import logging
import socket
import struct
import threading
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, cast
from urllib.parse import parse_qs, urlsplit

from exporter.emulator.answers import Delivery
from exporter.emulator.messages import Request, Response

log = logging.getLogger(__name__)

Serve = Callable[["RequestHandler", Request], None]


class ConnectionTracking(ThreadingHTTPServer):
    """A threading HTTP server that knows its open connections, so that stopping it can
    end idle keep-alive ones too (else a stopped server still answers on them). Also the
    test OTLP receiver's base."""

    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, address: tuple[str, int], handler: type[BaseHTTPRequestHandler]) -> None:
        self._connections: set[socket.socket] = set()
        self._connections_lock = threading.Lock()
        super().__init__(address, handler)

    def process_request(self, request: Any, client_address: Any) -> None:
        with self._connections_lock:
            self._connections.add(request)
        super().process_request(request, client_address)

    def shutdown_request(self, request: Any) -> None:
        with self._connections_lock:
            self._connections.discard(request)
        super().shutdown_request(request)

    def close_open_connections(self) -> None:
        with self._connections_lock:
            connections = list(self._connections)
        for connection in connections:
            with contextlib.suppress(OSError):  # already closed by the peer
                connection.shutdown(socket.SHUT_RDWR)


class ThreadedServer(ConnectionTracking):
    """One thread per connection; every request goes to `serve`. Used by `Emulator.start`."""

    def __init__(self, address: tuple[str, int], serve: Serve) -> None:
        self.serve = serve
        super().__init__(address, RequestHandler)

    def handle_error(self, request: Any, client_address: Any) -> None:
        # Clients that time out or hang up mid-answer are part of the job, not news.
        log.debug("emulator connection error from %s", client_address, exc_info=True)


class RequestHandler(BaseHTTPRequestHandler):
    """Reads requests of any method off one connection and writes what `serve` decides.

    `send` writes a whole `Response`; `deliver` carries out a `Delivery` (a reset, a
    truncated body, a chunked or paced stream), the only way faults reach the wire.
    """

    protocol_version = "HTTP/1.1"  # keep-alive: every answer carries Content-Length
    server_version = "orchestra-emulator"
    timeout = 30  # idle keep-alive connections close after this many seconds

    def version_string(self) -> str:
        return self.server_version

    def setup(self) -> None:
        super().setup()
        # Headers and body go out in two writes; with Nagle's algorithm the second waits for
        # the client's delayed ACK, which costs ~40 ms per request.
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def do_GET(self) -> None:
        self._handle()

    def do_POST(self) -> None:
        self._handle()

    def do_DELETE(self) -> None:
        self._handle()

    def do_PUT(self) -> None:
        self._handle()

    def do_PATCH(self) -> None:
        self._handle()

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("emulator: " + format, *args)

    def _handle(self) -> None:
        target = urlsplit(self.path)
        request = Request(
            method=self.command,
            target=self.path,
            path=target.path,
            query=parse_qs(target.query),
            headers=self.headers,
            body=self._read_body(),
        )
        cast(ThreadedServer, self.server).serve(self, request)

    def _read_body(self) -> bytes:
        if "chunked" in (self.headers.get("Transfer-Encoding") or "").lower():
            return self._read_chunked()
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length > 0 else b""

    def _read_chunked(self) -> bytes:
        body = b""
        while True:
            size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
            if size == 0:
                self.rfile.readline()  # the blank line after the last chunk
                return body
            body += self.rfile.read(size)
            self.rfile.readline()

    def deliver(self, delivery: Delivery, stopped: Callable[[float], bool]) -> None:
        """Send it; `stopped(seconds)` paces a slow body and says when the server stops."""
        if delivery.response is None:
            self._reset_connection()
        elif delivery.truncated:
            self._send_truncated(delivery.response)
        elif delivery.chunks is not None:
            self._send_stream(delivery, delivery.response, delivery.chunks(), stopped)
        else:
            self.send(delivery.response)

    def _send_stream(
        self,
        delivery: Delivery,
        response: Response,
        chunks: Iterator[bytes],
        stopped: Callable[[float], bool],
    ) -> None:
        chunked = delivery.length is None
        self.send_response(response.status)
        self.send_header("Content-Type", response.content_type)
        if chunked:
            self.send_header("Transfer-Encoding", "chunked")
        else:
            self.send_header("Content-Length", str(delivery.length))
        for name, value in response.headers.items():
            self.send_header(name, value)
        self.end_headers()
        for index, chunk in enumerate(chunks):
            if index and delivery.pace and stopped(delivery.pace):
                self.close_connection = True
                return
            if not chunk:
                continue
            self.wfile.write(b"%x\r\n%s\r\n" % (len(chunk), chunk) if chunked else chunk)
            self.wfile.flush()
        if chunked:
            self.wfile.write(b"0\r\n\r\n")

    def send(self, response: Response) -> None:
        self._send_head(response, len(response.body))
        self.wfile.write(response.body)

    def _send_truncated(self, response: Response) -> None:
        """Promise the whole body, send half of it, hang up."""
        self._send_head(response, len(response.body) + max(16, len(response.body)))
        self.wfile.write(response.body[: len(response.body) // 2])
        self.close_connection = True

    def _reset_connection(self) -> None:
        """Close with a TCP RST and no answer at all."""
        self.close_connection = True
        with contextlib.suppress(OSError):  # already gone
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            self.connection.close()

    def _send_head(self, response: Response, content_length: int) -> None:
        self.send_response(response.status)
        self.send_header("Content-Type", response.content_type)
        self.send_header("Content-Length", str(content_length))
        for name, value in response.headers.items():
            self.send_header(name, value)
        self.end_headers()
