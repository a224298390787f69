"""/metrics, /healthz and /readyz on ORCHESTRA_HTTP_ADDR (127.0.0.1:9464 by default).

One thread runs an asyncio server of its own, so scrapes and probes answer even while a
poll keeps the daemon's event loop busy. Whatever clients do, the server stays bounded:

* one thread, whatever the number of connections (a thread per connection let 2,000
  half-sent requests start 2,000 threads, and then the daemon could start no other);
* a request head must arrive whole within HEAD_TIMEOUT_S and fit in MAX_HEAD_BYTES;
* at most `max_connections` are open (well below the file descriptor limit, which the
  API and OTLP clients need too): a new connection pushes out the oldest one, so a
  flood of idle connections cannot lock a probe out;
* at most MAX_WRITING responses are being sent at once, each within WRITE_TIMEOUT_S: a
  client that does not read its /metrics body is cut off, and its buffer freed.

/metrics negotiates the OpenMetrics format (which carries exemplars) or the classic
Prometheus text format from the Accept header. Each connection serves one request.
"""

from __future__ import annotations

import asyncio
import http.client
import io
import json
import logging
import resource
import socket
import threading
from collections import OrderedDict
from http import HTTPStatus
from typing import Any, Final

from prometheus_client.exposition import choose_encoder

from exporter.errors import ConfigError
from exporter.telemetry import Telemetry
from exporter.textsafe import escape_control

log = logging.getLogger(__name__)

HEAD_TIMEOUT_S: Final = 10.0
WRITE_TIMEOUT_S: Final = 10.0
MAX_HEAD_BYTES: Final = 16 * 1024
MAX_WRITING: Final = 8
LISTEN_BACKLOG: Final = 128


def connection_cap() -> int:
    """Connections held open at most: an eighth of the descriptor limit, 16 to 256."""
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY:
        return 256
    return max(16, min(256, soft // 8))


class HttpServer:
    def __init__(
        self, address: tuple[str, int], telemetry: Telemetry, poll_interval: float
    ) -> None:
        self._routes = _Routes(telemetry, poll_interval)
        try:
            self._socket = _listen(address)
        except OSError as exc:
            host, port = address
            raise ConfigError(
                [f"ORCHESTRA_HTTP_ADDR: cannot listen on {host}:{port} ({exc.strerror or exc})"]
            ) from exc
        self.max_connections = connection_cap()
        self._loop = asyncio.new_event_loop()
        self._stopping = asyncio.Event()
        self._reading: OrderedDict[asyncio.StreamWriter, None] = OrderedDict()
        self._writing: OrderedDict[asyncio.StreamWriter, None] = OrderedDict()
        self._handlers: set[asyncio.Task[Any]] = set()
        self._warned_full = False
        self._thread = threading.Thread(target=self._serve, name="orchestra-otel-http", daemon=True)

    @property
    def address(self) -> tuple[str, int]:
        host, port = self._socket.getsockname()[:2]
        return str(host), int(port)

    def start(self) -> None:
        self._thread.start()
        host, port = self.address
        log.info("metrics at http://%s:%d/metrics, probes at /healthz and /readyz", host, port)

    def stop(self) -> None:
        if not self._thread.is_alive():
            self._socket.close()
            return
        self._loop.call_soon_threadsafe(self._stopping.set)
        self._thread.join(timeout=5)

    # --- the server thread -------------------------------------------------------------

    def _serve(self) -> None:
        try:
            self._loop.run_until_complete(self._main())
        finally:
            self._loop.close()

    async def _main(self) -> None:
        server = await asyncio.start_server(
            self._handle, sock=self._socket, limit=MAX_HEAD_BYTES, backlog=LISTEN_BACKLOG
        )
        await self._stopping.wait()
        server.close()
        for writer in [*self._reading, *self._writing]:
            writer.transport.abort()
        # Let the handlers see their aborted connections out before the loop closes.
        if self._handlers:
            await asyncio.wait(self._handlers, timeout=2)
        await server.wait_closed()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        handler = asyncio.current_task()
        if handler is not None:
            self._handlers.add(handler)
        self._admit(writer)
        try:
            method, response = await self._answer(reader)
            self._reading.pop(writer, None)
            self._start_writing(writer)
            writer.transport.set_write_buffer_limits(high=0)  # drain() = all handed over
            writer.write(response.encode(include_body=method != "HEAD"))
            await asyncio.wait_for(writer.drain(), WRITE_TIMEOUT_S)
            writer.close()
        except (TimeoutError, ConnectionError, asyncio.IncompleteReadError):
            pass  # a slow, silent or vanished client: cut off below
        finally:
            self._reading.pop(writer, None)
            self._writing.pop(writer, None)
            if not writer.is_closing():  # whatever went wrong, the socket is released
                writer.transport.abort()
            self._handlers.discard(handler)

    async def _answer(self, reader: asyncio.StreamReader) -> tuple[str, _Response]:
        try:
            head = await asyncio.wait_for(_read_head(reader), HEAD_TIMEOUT_S)
        except _BadRequest as exc:
            return "", _Response.json(exc.status, {"error": exc.reason})
        response = self._routes.respond(head)
        log.debug("http: %s %s %d", head.method, escape_control(head.path), response.status)
        return head.method, response

    def _admit(self, writer: asyncio.StreamWriter) -> None:
        if len(self._reading) + len(self._writing) >= self.max_connections:
            oldest = self._reading if self._reading else self._writing
            evicted, _ = oldest.popitem(last=False)
            evicted.transport.abort()
            if not self._warned_full:
                self._warned_full = True
                log.warning(
                    "the metrics port holds %d connections at most; dropping the oldest "
                    "(a client opens connections without sending requests)",
                    self.max_connections,
                )
        self._reading[writer] = None

    def _start_writing(self, writer: asyncio.StreamWriter) -> None:
        if len(self._writing) >= MAX_WRITING:
            slowest, _ = self._writing.popitem(last=False)
            slowest.transport.abort()
        self._writing[writer] = None


def _listen(address: tuple[str, int]) -> socket.socket:
    host, port = address
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.create_server((host, port), family=family, backlog=LISTEN_BACKLOG)
    sock.setblocking(False)
    return sock


class _BadRequest(Exception):
    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


class _Head:
    def __init__(self, method: str, path: str, headers: http.client.HTTPMessage) -> None:
        self.method = method
        self.path = path
        self.headers = headers


async def _read_head(reader: asyncio.StreamReader) -> _Head:
    """The request line and headers, up to the empty line (CRLF or bare LF)."""
    lines: list[bytes] = []
    size = 0
    while True:
        try:
            line = await reader.readline()
        except ValueError:  # one line longer than the reader's limit
            raise _BadRequest(431, "request head too large") from None
        if not line.endswith(b"\n"):
            raise asyncio.IncompleteReadError(line, None)
        size += len(line)
        if size > MAX_HEAD_BYTES:
            raise _BadRequest(431, "request head too large")
        if line in (b"\r\n", b"\n"):
            break
        lines.append(line)
    if not lines:
        raise _BadRequest(400, "no request line")
    parts = lines[0].decode("latin-1").split()
    if len(parts) != 3 or not parts[2].startswith("HTTP/"):
        raise _BadRequest(400, "malformed request line")
    try:
        headers = http.client.parse_headers(io.BytesIO(b"".join(lines[1:]) + b"\r\n"))
    except http.client.HTTPException:
        raise _BadRequest(431, "too many or too long headers") from None
    return _Head(parts[0], parts[1], headers)


class _Response:
    def __init__(self, status: int, body: bytes, content_type: str) -> None:
        self.status = status
        self.body = body
        self.content_type = content_type

    @classmethod
    def json(cls, status: int, document: dict[str, Any]) -> _Response:
        return cls(status, json.dumps(document).encode() + b"\n", "application/json")

    def encode(self, *, include_body: bool) -> bytes:
        phrase = HTTPStatus(self.status).phrase
        head = (
            f"HTTP/1.1 {self.status} {phrase}\r\n"
            f"Server: orchestra-otel\r\n"
            f"Content-Type: {self.content_type}\r\n"
            f"Content-Length: {len(self.body)}\r\n"
            "Connection: close\r\n\r\n"
        )
        return head.encode("latin-1") + (self.body if include_body else b"")


class _Routes:
    def __init__(self, telemetry: Telemetry, poll_interval: float) -> None:
        self._telemetry = telemetry
        self._poll_interval = poll_interval

    def respond(self, head: _Head) -> _Response:
        if head.method not in ("GET", "HEAD"):
            return _Response.json(405, {"error": "only GET and HEAD"})
        path = head.path.split("?", 1)[0]
        if path == "/metrics":
            encoder, content_type = choose_encoder(head.headers.get("Accept", ""))
            return _Response(200, encoder(self._telemetry.registry), content_type)
        if path == "/healthz":
            return _Response.json(200, {"status": "ok"})
        if path == "/readyz":
            ready, reasons = self._telemetry.state.readiness(self._poll_interval)
            return _Response.json(200 if ready else 503, {"ready": ready, "reasons": reasons})
        return _Response.json(404, {"error": "not found; try /metrics, /healthz or /readyz"})
