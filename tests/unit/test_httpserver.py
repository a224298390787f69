"""exporter/httpserver.py over real loopback sockets: answers, bad requests, and the bounds
that keep a flood of clients from taking threads, descriptors or the probes (issue 11,
finding 3; the 1,000-connection run against the daemon is in tests/reliability)."""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Iterator

import pytest

from exporter import httpserver
from exporter.httpserver import HttpServer
from exporter.telemetry import Telemetry


@pytest.fixture
def server() -> Iterator[HttpServer]:
    telemetry = Telemetry()
    telemetry.state.last_poll_ok = time.time()
    running = HttpServer(("127.0.0.1", 0), telemetry, poll_interval=30)
    running.start()
    yield running
    running.stop()


def exchange(server: HttpServer, request: bytes, timeout: float = 5) -> bytes:
    with socket.create_connection(server.address, timeout=timeout) as sock:
        sock.sendall(request)
        chunks = []
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    return b"".join(chunks)


def status_of(response: bytes) -> int:
    return int(response.split(b" ", 2)[1])


def get(server: HttpServer, path: str) -> bytes:
    return exchange(server, f"GET {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode())


def test_probes_and_metrics(server: HttpServer) -> None:
    health = get(server, "/healthz")
    assert status_of(health) == 200 and health.endswith(b'{"status": "ok"}\n')
    ready = get(server, "/readyz?verbose=1")
    assert status_of(ready) == 200
    assert json.loads(ready.split(b"\r\n\r\n", 1)[1]) == {"ready": True, "reasons": []}
    metrics = get(server, "/metrics")
    assert status_of(metrics) == 200 and b"orchestra_otel_polls_total" in metrics
    assert b"Content-Type: text/plain" in metrics
    openmetrics = exchange(
        server, b"GET /metrics HTTP/1.1\r\nAccept: application/openmetrics-text\r\n\r\n"
    )
    assert b"application/openmetrics-text" in openmetrics and openmetrics.endswith(b"# EOF\n")
    assert status_of(get(server, "/nope")) == 404


def test_head_has_no_body_and_other_methods_are_refused(server: HttpServer) -> None:
    head = exchange(server, b"HEAD /healthz HTTP/1.1\r\n\r\n")
    assert status_of(head) == 200 and head.endswith(b"\r\n\r\n")
    assert b"Content-Length: 17" in head
    assert status_of(exchange(server, b"POST /healthz HTTP/1.1\r\n\r\n")) == 405


@pytest.mark.parametrize(
    "request_bytes",
    [b"GARBAGE\r\n\r\n", b"\r\n", b"GET /healthz\r\n\r\n", b"GET /healthz HTTX/1.1\r\n\r\n"],
)
def test_malformed_requests_get_400(server: HttpServer, request_bytes: bytes) -> None:
    assert status_of(exchange(server, request_bytes)) == 400


def test_bare_lf_line_ends_are_read(server: HttpServer) -> None:
    assert status_of(exchange(server, b"GET /healthz HTTP/1.0\nHost: x\n\n")) == 200


@pytest.mark.parametrize("shape", ["one long line", "many headers"])
def test_an_oversized_head_gets_431(server: HttpServer, shape: str) -> None:
    if shape == "one long line":
        request = b"GET /healthz HTTP/1.1\r\nX: " + b"a" * 40_000 + b"\r\n\r\n"
    else:
        request = b"GET /healthz HTTP/1.1\r\n" + b"X-Header: value\r\n" * 2_000 + b"\r\n"
    try:
        response = exchange(server, request)
    except ConnectionResetError:
        return  # closed while we were still sending: refused all the same
    assert status_of(response) == 431


def test_a_half_sent_request_is_cut_off_after_the_head_timeout(
    server: HttpServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(httpserver, "HEAD_TIMEOUT_S", 0.5)
    with socket.create_connection(server.address, timeout=10) as sock:
        sock.sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\n")  # never finished
        started = time.monotonic()
        assert sock.recv(1024) == b""  # closed by the server, nothing sent
        waited = time.monotonic() - started
    assert 0.3 < waited < 5, waited


def test_idle_connections_beyond_the_cap_push_out_the_oldest(server: HttpServer) -> None:
    server.max_connections = 16
    idle = []
    try:
        for _ in range(40):
            sock = socket.create_connection(server.address, timeout=5)
            sock.sendall(b"GET /metrics HTTP/1.1\r\n")
            idle.append(sock)
        # Every new connection, a probe included, is served while 40 idle ones wait.
        for _ in range(5):
            assert status_of(get(server, "/healthz")) == 200
        # Over the cap, each new connection pushed out the oldest idle one.
        oldest = idle[: 40 - 16]
        assert all(was_closed(sock) for sock in oldest)
    finally:
        for sock in idle:
            sock.close()


def was_closed(sock: socket.socket) -> bool:
    """The server closed (or reset) it; it sends nothing to a half-sent request."""
    sock.settimeout(2)
    try:
        return sock.recv(1) == b""
    except ConnectionResetError:
        return True
    except TimeoutError:
        return False


def test_the_server_uses_one_thread_whatever_the_clients_do(server: HttpServer) -> None:
    before = threading.active_count()
    idle = [socket.create_connection(server.address, timeout=5) for _ in range(100)]
    try:
        for sock in idle:
            sock.sendall(b"GET /")
        assert status_of(get(server, "/healthz")) == 200
        assert threading.active_count() == before
    finally:
        for sock in idle:
            sock.close()


def test_a_busy_port_is_a_configuration_error(server: HttpServer) -> None:
    from exporter.errors import ConfigError

    with pytest.raises(ConfigError, match=r"ORCHESTRA_HTTP_ADDR: cannot listen on 127\.0\.0\.1:"):
        HttpServer(server.address, Telemetry(), poll_interval=30)
