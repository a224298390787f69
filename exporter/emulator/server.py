"""A real HTTP server that answers like the Orchestra API (docs/orchestra-api.md).

Standard library only: a ThreadingHTTPServer in a background thread, speaking HTTP/1.1
with keep-alive (httpx reuses connections). API endpoints live under `base_path` and need
`Authorization: Bearer <api_key>`; control endpoints under `/_emulator/` at the server
root need nothing, so a test can steer an emulator that a daemon subprocess is polling.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import re
import socket
import struct
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from email.message import Message
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any, cast
from urllib.parse import parse_qs, unquote, urlsplit

from exporter.emulator import hostile
from exporter.emulator.faults import ENDPOINT_KINDS, FaultPlan, FaultRule, rules_from_json
from exporter.emulator.scenario import ManualClock, Scenario
from exporter.emulator.stats import NO_RESPONSE, RequestStats

log = logging.getLogger(__name__)

CONTROL_PREFIX = "/_emulator/"
MAX_LIMIT = 100  # the docs: "the last 100 runs", limit defaults to 100


@dataclass(frozen=True)
class Request:
    method: str
    target: str  # as sent: path and query
    path: str
    query: dict[str, list[str]]
    headers: Message
    body: bytes


@dataclass(frozen=True)
class Response:
    status: int
    body: bytes
    content_type: str = "application/json"
    headers: dict[str, str] = field(default_factory=dict)


def json_response(status: int, payload: Any, headers: dict[str, str] | None = None) -> Response:
    return Response(status, json.dumps(payload).encode(), headers=headers or {})


def error_response(status: int, detail: str, headers: dict[str, str] | None = None) -> Response:
    # FastAPI's error shape: a guess, the docs show no error body (docs/orchestra-api.md, "Basics").
    return json_response(status, {"detail": detail}, headers)


@dataclass(frozen=True)
class Delivery:
    """A response and the way it goes out: whole, truncated, or not at all (None: reset).

    With `chunks`, the body is those pieces instead of `response.body`, written `pace`
    seconds apart; `length` is the Content-Length to announce, or None for chunked
    transfer encoding (a body whose size nobody knows in advance).
    """

    response: Response | None
    truncated: bool = False
    chunks: Callable[[], Iterator[bytes]] | None = None
    length: int | None = None
    pace: float = 0.0


class HttpError(Exception):
    def __init__(self, status: int, detail: str) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail


@dataclass(frozen=True)
class _Route:
    pattern: re.Pattern[str]
    method: str
    kind: str


_ID = r"(?P<{}>[^/]+)"
_ROUTES = (
    _Route(re.compile(r"/workflows/?"), "GET", "list_workflows"),
    _Route(re.compile(rf"/workflows/{_ID.format('workflow_id')}/runs/?"), "GET", "list_runs"),
    _Route(
        re.compile(rf"/workflows/{_ID.format('workflow_id')}/runs/{_ID.format('run_id')}/?"),
        "GET",
        "get_run",
    ),
    _Route(
        re.compile(rf"/workflows/{_ID.format('workflow_id')}/runs/{_ID.format('run_id')}/steps/?"),
        "GET",
        "steps",
    ),
    _Route(re.compile(rf"/workflows/{_ID.format('workflow_id')}/diagram/?"), "GET", "diagram"),
    _Route(re.compile(rf"/workflows/{_ID.format('workflow_id')}/execute/?"), "POST", "execute"),
)

_HTML_PAGE = (
    "<!DOCTYPE html>\n<html><head><title>Sign in - Arcee Orchestra</title></head>"
    "<body><h1>Sign in</h1><p>Your session has expired.</p></body></html>\n"
)
_PLAIN_TEXT = "Orchestra is under maintenance. Please try again later.\n"


class Emulator:
    """The Orchestra API emulator: `start()` it, point a client at `base_url`, `stop()` it.

    Also a context manager. `faults` injects misbehaviour; `stats()` tells what arrived.
    """

    def __init__(
        self,
        scenario: Scenario,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        api_key: str | None = "demo-key",
        base_path: str = "/api/v1/workflow",
        history_limit: int = MAX_LIMIT,
        run_as_array: bool = True,
        recent_limit: int = 1000,
    ) -> None:
        self.scenario = scenario
        self.host = host
        self.port = port
        self.api_key = api_key  # None: no auth; may be changed while running (key rotation)
        self.base_path = "/" + base_path.strip("/") if base_path.strip("/") else ""
        self.history_limit = history_limit  # only the newest runs are listed (the docs' "last 100")
        self.run_as_array = run_as_array  # GET one run answers [run], as documented
        self.faults = FaultPlan()
        self.base_url = ""
        self._stats = RequestStats(recent_limit)
        self._stopping = threading.Event()
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> str:
        """Listen and serve in a background thread; returns `base_url`."""
        if self._server is not None:
            raise RuntimeError("the emulator is already running")
        self._stopping.clear()
        server = _Server((self.host, self.port), self)
        # Keep the bound port: a later start() after stop() comes back on the same one.
        self.port = int(server.server_address[1])
        self._server = server
        self._thread = threading.Thread(
            target=server.serve_forever,
            kwargs={"poll_interval": 0.05},  # stop() waits at most this long for the loop
            name=f"orchestra-emulator-{self.port}",
            daemon=True,
        )
        self._thread.start()
        self.base_url = self.root_url + self.base_path
        return self.base_url

    def stop(self) -> None:
        """Stop serving and drop every open connection; safe to call twice."""
        server, thread = self._server, self._thread
        if server is None:
            return
        self._stopping.set()  # wakes requests held by a `delay` fault
        server.shutdown()
        server.server_close()
        server.close_open_connections()
        if thread is not None:
            thread.join(timeout=5)
        self._server = None
        self._thread = None

    def __enter__(self) -> Emulator:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()

    @property
    def root_url(self) -> str:
        host = "127.0.0.1" if self.host in ("", "0.0.0.0") else self.host
        return f"http://{host}:{self.port}"

    # ------------------------------------------------------------------ stats

    def stats(self) -> dict[str, Any]:
        """`total`, `by_kind`, `by_status` ({kind: {"200": n}}) and `recent` requests.

        Each recent request: `at` (time.monotonic() on arrival), `wall` (time.time()),
        `method`, `kind`, `path` (with query), `status` (None in flight, 0 reset).
        Control requests are not counted.
        """
        return self._stats.snapshot()

    def reset_stats(self) -> None:
        self._stats.reset()

    # ------------------------------------------------------------------ serving

    def serve(self, handler: _Handler, request: Request) -> None:
        """Answer one request through `handler`, applying faults and counting it."""
        if request.path.startswith(CONTROL_PREFIX):
            handler.send(self._control(request))
            return
        kind, params, allowed = self._route(request.path)
        entry = self._stats.begin(request.method, kind, request.target)
        fault = self.faults.take(kind, request.target) if kind in ENDPOINT_KINDS else None

        def answer(asked: Request = request) -> Response:
            return self._answer(asked, kind, params, allowed)

        if fault is not None and fault.action == "ignore_offset":
            without_offset = {k: v for k, v in request.query.items() if k != "offset"}
            delivery = Delivery(answer(dataclasses.replace(request, query=without_offset)))
        elif fault is not None and fault.action in _HOSTILE_BODIES:
            delivery = _hostile_delivery(fault, kind, answer())
        else:
            delivery = self._delivery(fault, answer)
        # Counted before the bytes leave: a client that just got its answer sees it counted.
        self._stats.finish(
            entry, NO_RESPONSE if delivery.response is None else delivery.response.status
        )
        handler.deliver(delivery, self._stopping.wait)

    def _delivery(self, fault: FaultRule | None, answer: Callable[[], Response]) -> Delivery:
        """What to send, and how, for a request that `fault` (if any) hits."""
        if fault is None:
            return Delivery(answer())
        if fault.action == "reset":
            return Delivery(None)
        if fault.action == "truncate":
            return Delivery(answer(), truncated=True)
        if fault.action == "delay":
            stopped = self._stopping.wait(fault.delay)
            return Delivery(None if stopped else answer())
        if fault.action == "wrong_shape":
            return Delivery(_wrong_shape(answer(), fault))
        return Delivery(fault_response(fault))

    def _route(self, path: str) -> tuple[str, dict[str, str], str | None]:
        """(endpoint kind or "unknown", path parameters, the method the route takes)."""
        if self.base_path and not (path == self.base_path or path.startswith(self.base_path + "/")):
            return "unknown", {}, None
        relative = path[len(self.base_path) :]
        for route in _ROUTES:
            match = route.pattern.fullmatch(relative)
            if match:
                params = {name: unquote(value) for name, value in match.groupdict().items()}
                return route.kind, params, route.method
        return "unknown", {}, None

    def _answer(
        self, request: Request, kind: str, params: dict[str, str], allowed: str | None
    ) -> Response:
        if allowed is None:
            return error_response(404, "Not Found")
        if request.method != allowed:
            return error_response(405, "Method Not Allowed", {"Allow": allowed})
        if not self._authorized(request):
            return error_response(401, "Invalid or missing API key", {"WWW-Authenticate": "Bearer"})
        try:
            return self._endpoint(kind, request, params)
        except HttpError as error:
            return error_response(error.status, error.detail)
        except Exception:
            # A bug in the emulator: answer like a broken server rather than hang up.
            log.exception("emulator failed on %s %s", request.method, request.target)
            return error_response(500, "Internal Server Error")

    def _authorized(self, request: Request) -> bool:
        if self.api_key is None:
            return True
        scheme, _, token = (request.headers.get("Authorization") or "").partition(" ")
        return scheme.lower() == "bearer" and token.strip() == self.api_key

    def _endpoint(self, kind: str, request: Request, params: dict[str, str]) -> Response:
        if kind == "list_workflows":
            return json_response(200, self.scenario.workflow_records())
        workflow_id = params["workflow_id"]
        if not self.scenario.has_workflow(workflow_id):
            raise HttpError(404, f"Workflow {workflow_id} not found")
        if kind == "list_runs":
            return self._list_runs(workflow_id, request.query)
        if kind == "get_run":
            run = self.scenario.run(workflow_id, params["run_id"])
            if run is None:
                raise HttpError(404, f"Run {params['run_id']} not found")
            return json_response(200, [run] if self.run_as_array else run)
        if kind == "steps":
            steps = self.scenario.steps(workflow_id, params["run_id"])
            if steps is None:
                raise HttpError(404, f"Run {params['run_id']} not found")
            return json_response(200, steps)
        if kind == "diagram":
            return json_response(200, {"diagram": self.scenario.diagram(workflow_id)})
        return self._execute(workflow_id, request.body)

    def _list_runs(self, workflow_id: str, query: dict[str, list[str]]) -> Response:
        limit = _int_param(query, "limit", MAX_LIMIT)
        offset = _int_param(query, "offset", 0)
        if not 1 <= limit <= MAX_LIMIT:
            raise HttpError(400, f"limit must be between 1 and {MAX_LIMIT}")
        if offset < 0:
            raise HttpError(400, "offset must be 0 or more")
        runs = self.scenario.runs(
            workflow_id, offset=offset, limit=limit, newest=self.history_limit
        )
        return json_response(200, runs or [])

    def _execute(self, workflow_id: str, body: bytes) -> Response:
        inputs = _json_object(body)
        try:
            run_id = self.scenario.add_run(workflow_id, inputs=inputs)
        except ValueError as error:
            raise HttpError(400, str(error)) from error
        return json_response(200, {"message": "Workflow execution started", "run_id": run_id})

    # ------------------------------------------------------------------ control

    def _control(self, request: Request) -> Response:
        action = (request.method, request.path[len(CONTROL_PREFIX) :].strip("/"))
        try:
            if action == ("GET", "stats"):
                return json_response(200, self.stats())
            if action == ("DELETE", "stats"):
                self.reset_stats()
                return json_response(200, {"ok": True})
            if action == ("GET", "faults"):
                return json_response(200, {"rules": self.faults.describe()})
            if action == ("POST", "faults"):
                return self._add_faults(request.body)
            if action == ("DELETE", "faults"):
                self.faults.clear()
                return json_response(200, {"ok": True})
            if action == ("POST", "runs"):
                return self._add_run(request.body)
            if action == ("POST", "api-key"):
                return self._set_api_key(request.body)
            if action == ("POST", "clock"):
                return self._move_clock(request.body)
        except HttpError as error:
            return error_response(error.status, error.detail)
        return error_response(404, "Not Found")

    def _add_faults(self, body: bytes) -> Response:
        try:
            rules = rules_from_json(_json_value(body))
        except ValueError as error:
            raise HttpError(400, str(error)) from error
        for rule in rules:
            self.faults.add(rule)
        return json_response(200, {"added": len(rules), "rules": self.faults.describe()})

    def _add_run(self, body: bytes) -> Response:
        payload = _json_object(body)
        workflow_id = payload.get("workflow_id")
        if not isinstance(workflow_id, str):
            raise HttpError(400, "workflow_id (a string) is required")
        start_in = payload.get("start_in", 0)
        chosen_id = payload.get("run_id")
        if chosen_id is not None and not (isinstance(chosen_id, str) and chosen_id):
            raise HttpError(400, "run_id must be a non-empty string")
        try:
            run_id = self.scenario.add_run(
                workflow_id,
                start_at=self.scenario.clock() + float(start_in),
                fail_node=payload.get("fail_node"),
                step_durations=payload.get("durations"),
                inputs=payload.get("inputs"),
                fail_soft=payload.get("fail_soft"),
                fail_message=payload.get("fail_message"),
                run_id=chosen_id,
            )
        except KeyError as error:
            raise HttpError(404, f"Workflow {workflow_id} not found") from error
        except (ValueError, TypeError, AttributeError) as error:
            raise HttpError(400, str(error)) from error
        return json_response(200, {"workflow_id": workflow_id, "run_id": run_id})

    def _set_api_key(self, body: bytes) -> Response:
        api_key = _json_object(body).get("api_key")
        if not isinstance(api_key, str) or not api_key:
            raise HttpError(400, "api_key (a non-empty string) is required")
        self.api_key = api_key
        return json_response(200, {"ok": True})

    def _move_clock(self, body: bytes) -> Response:
        clock = self.scenario.clock
        if not isinstance(clock, ManualClock):
            raise HttpError(409, "the scenario runs on a real clock")
        payload = _json_object(body)
        try:
            moment = float(payload["set"]) if "set" in payload else None
            step = float(payload.get("advance", 0))
        except (TypeError, ValueError) as error:
            raise HttpError(400, "set and advance must be numbers of seconds") from error
        if moment is not None:
            clock.set(moment)
        clock.advance(step)
        return json_response(200, {"now": clock()})


def fault_response(rule: FaultRule) -> Response:
    """The answer of a fault that replaces the real one (status, rate_limit, html, not_json)."""
    if rule.action == "rate_limit":
        headers = {"Retry-After": rule.retry_after_header()}
        return error_response(429, "Rate limit exceeded", headers)
    if rule.action == "html":
        return Response(200, (rule.body or _HTML_PAGE).encode(), "text/html; charset=utf-8")
    if rule.action == "not_json":
        return Response(200, (rule.body or _PLAIN_TEXT).encode(), "text/plain; charset=utf-8")
    phrase = _reason(rule.status)
    if rule.body_format == "html":
        title = f"{rule.status} {phrase}"
        page = f"<html><head><title>{title}</title></head><body><center><h1>{title}</h1>"
        page += "</center><hr><center>nginx</center></body></html>\n"
        return Response(rule.status, (rule.body or page).encode(), "text/html; charset=utf-8")
    if rule.body is not None:
        return Response(rule.status, rule.body.encode())
    return error_response(rule.status, phrase)


_HOSTILE_BODIES = frozenset({"huge", "flood", "trickle", "deep", "control_chars"})


def _hostile_delivery(rule: FaultRule, kind: str, response: Response) -> Delivery:
    """The real answer, made huge, flooded, trickled, deeply nested or full of controls."""
    body = response.body
    if rule.action == "huge":
        return Delivery(response, chunks=lambda: hostile.padded_chunks(body, rule.size))
    if rule.action == "flood":
        return Delivery(response, chunks=lambda: hostile.flood_chunks(body, rule.records))
    if rule.action == "trickle":
        return Delivery(
            response,
            chunks=lambda: hostile.trickle_chunks(body, rule.chunk),
            length=len(body),
            pace=rule.delay,
        )
    if rule.action == "deep":
        return Delivery(dataclasses.replace(response, body=hostile.nested(body, rule.depth)))
    return Delivery(dataclasses.replace(response, body=hostile.with_control_chars(body, kind)))


def _wrong_shape(response: Response, rule: FaultRule) -> Response:
    """Valid JSON, wrong container: arrays come back wrapped in an object, objects in an array."""
    if rule.body is not None:
        return Response(200, rule.body.encode())
    payload = json.loads(response.body)
    reshaped = {"data": payload} if isinstance(payload, list) else [payload]
    return json_response(200, reshaped)


def _reason(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "Error"


def _int_param(query: dict[str, list[str]], name: str, default: int) -> int:
    values = query.get(name)
    if not values:
        return default
    try:
        return int(values[-1])
    except ValueError as error:
        raise HttpError(400, f"{name} must be an integer") from error


def _json_value(body: bytes) -> Any:
    try:
        return json.loads(body or b"null")
    except ValueError as error:
        raise HttpError(400, "the request body is not valid JSON") from error


def _json_object(body: bytes) -> dict[str, Any]:
    value = _json_value(body) if body.strip() else {}
    if not isinstance(value, dict):
        raise HttpError(400, "the request body must be a JSON object")
    return value


# ---------------------------------------------------------------------------- transport


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, address: tuple[str, int], emulator: Emulator) -> None:
        self.emulator = emulator
        self._connections: set[socket.socket] = set()
        self._connections_lock = threading.Lock()
        super().__init__(address, _Handler)

    def process_request(self, request: Any, client_address: Any) -> None:
        with self._connections_lock:
            self._connections.add(request)
        super().process_request(request, client_address)

    def shutdown_request(self, request: Any) -> None:
        with self._connections_lock:
            self._connections.discard(request)
        super().shutdown_request(request)

    def close_open_connections(self) -> None:
        """End idle keep-alive connections too, so a stopped emulator answers nothing."""
        with self._connections_lock:
            connections = list(self._connections)
        for connection in connections:
            with contextlib.suppress(OSError):  # already closed by the peer
                connection.shutdown(socket.SHUT_RDWR)

    def handle_error(self, request: Any, client_address: Any) -> None:
        # Clients that time out or hang up mid-answer are part of the job, not news.
        log.debug("emulator connection error from %s", client_address, exc_info=True)


class _Handler(BaseHTTPRequestHandler):
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
        cast(_Server, self.server).emulator.serve(self, request)

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
