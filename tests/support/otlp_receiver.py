"""A real OTLP trace receiver for tests: gRPC and HTTP (protobuf or JSON) on 127.0.0.1.

    with OtlpReceiver() as receiver:
        run_daemon(env=receiver.env("grpc"))
        spans = receiver.wait_for_spans(3, timeout=10)

Every accepted request is kept decoded, with the protocol it came on; `spans()` flattens
them into `ReceivedSpan` records, and `calls()` lists every export request of any signal
as it arrived (path, headers). Faults can be injected (`fail_next`, `reject_next`,
`set_down`, `set_delay`, `set_hang`), and `stop()` / `start()` makes a real outage:
nothing listens on the ports until `start()` binds the same ports again. With `tls=` both
servers speak TLS only (mutual TLS when the `ServerTls` names a client CA), and with
`http_path_prefix=` the HTTP paths sit under a prefix, as behind a reverse proxy.
"""

from __future__ import annotations

import base64
import binascii
import gzip
import json
import ssl
import threading
import time
import zlib
from collections import Counter, deque
from collections.abc import Callable, Iterable, Mapping
from concurrent import futures
from dataclasses import dataclass
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler
from types import TracebackType
from typing import Any, NamedTuple, NoReturn, TypeVar
from urllib.parse import urlsplit

import grpc
from google.protobuf import json_format
from google.protobuf.message import DecodeError
from google.rpc import error_details_pb2, status_pb2
from opentelemetry.proto.collector.logs.v1 import logs_service_pb2, logs_service_pb2_grpc
from opentelemetry.proto.collector.metrics.v1 import (
    metrics_service_pb2,
    metrics_service_pb2_grpc,
)
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc
from opentelemetry.proto.common.v1 import common_pb2
from opentelemetry.proto.trace.v1 import trace_pb2

from exporter.emulator.transport import ConnectionTracking
from tests.support.tls import ServerTls

__all__ = [
    "OtlpReceiver",
    "ReceivedCall",
    "ReceivedEvent",
    "ReceivedLink",
    "ReceivedLog",
    "ReceivedRequest",
    "ReceivedSpan",
]

ExportTraceServiceRequest = trace_service_pb2.ExportTraceServiceRequest
ExportTraceServiceResponse = trace_service_pb2.ExportTraceServiceResponse

TRACES_PATH = "/v1/traces"
LOGS_PATH = "/v1/logs"
METRICS_PATH = "/v1/metrics"
GRPC_TRACES_METHOD = "/opentelemetry.proto.collector.trace.v1.TraceService/Export"
GRPC_LOGS_METHOD = "/opentelemetry.proto.collector.logs.v1.LogsService/Export"
GRPC_METRICS_METHOD = "/opentelemetry.proto.collector.metrics.v1.MetricsService/Export"
_HTTP_SIGNALS = {TRACES_PATH: "traces", LOGS_PATH: "logs", METRICS_PATH: "metrics"}
DEFAULT_MAX_MESSAGE_BYTES = 64 * 1024 * 1024
_HANDSHAKE_TIMEOUT_S = 10.0
_PROTOBUF = "application/x-protobuf"
_JSON = "application/json"
_BIND_TIMEOUT_S = 5.0
_T = TypeVar("_T")


# --------------------------------------------------------------------------- records


class ReceivedEvent(NamedTuple):
    name: str
    time_ns: int
    attributes: dict[str, Any]


class ReceivedLink(NamedTuple):
    trace_id: str
    span_id: str
    attributes: dict[str, Any]


@dataclass(frozen=True)
class ReceivedSpan:
    """One span as received, flattened with its resource and scope.

    `kind` and `status_code` are the OTLP enum values (`trace_pb2.Span.SPAN_KIND_*`,
    `trace_pb2.Status.STATUS_CODE_*`); note that OTLP kinds are the SDK's `SpanKind` + 1.
    Array attributes decode to lists.
    """

    trace_id: str
    span_id: str
    parent_span_id: str
    name: str
    kind: int
    start_ns: int
    end_ns: int
    attributes: dict[str, Any]
    events: list[ReceivedEvent]
    links: list[ReceivedLink]
    status_code: int
    status_message: str
    resource_attributes: dict[str, Any]
    scope_name: str
    scope_version: str
    protocol: str

    @property
    def key(self) -> tuple[str, str]:
        return (self.trace_id, self.span_id)


@dataclass(frozen=True)
class ReceivedLog:
    """One OTLP log record as received (ids hex, attributes as Python values)."""

    trace_id: str
    span_id: str
    time_unix_nano: int
    severity_number: int
    severity_text: str
    body: Any
    attributes: dict[str, Any]
    event_name: str
    protocol: str

    @property
    def key(self) -> tuple[str, str]:
        return (self.trace_id, self.span_id)


def flatten_logs(
    request: logs_service_pb2.ExportLogsServiceRequest, protocol: str
) -> list[ReceivedLog]:
    return [
        ReceivedLog(
            record.trace_id.hex(),
            record.span_id.hex(),
            record.time_unix_nano,
            record.severity_number,
            record.severity_text,
            any_value_to_python(record.body),
            attributes_to_dict(record.attributes),
            record.event_name,
            protocol,
        )
        for resource in request.resource_logs
        for scope in resource.scope_logs
        for record in scope.log_records
    ]


@dataclass(frozen=True)
class ReceivedRequest:
    """One accepted export request. `headers` are lower-cased (gRPC: text metadata)."""

    protocol: str
    request: trace_service_pb2.ExportTraceServiceRequest
    headers: dict[str, str]
    received_at: float


@dataclass(frozen=True)
class ReceivedCall:
    """One export request of any signal as it arrived, before faults and decoding.

    `signal` is "traces", "logs", "metrics", or "" for an HTTP path that is none of them
    (answered 404); `path` is the HTTP URL path as sent (prefix included) or the gRPC
    method; `headers` are lower-cased (gRPC: text metadata).
    """

    protocol: str
    signal: str
    path: str
    headers: dict[str, str]


# --------------------------------------------------------------------------- decoding


def any_value_to_python(value: common_pb2.AnyValue) -> Any:
    """Decode an OTLP AnyValue into str/bool/int/float/bytes/list/dict (None when unset)."""
    kind = value.WhichOneof("value")
    if kind is None:
        return None
    if kind == "array_value":
        return [any_value_to_python(item) for item in value.array_value.values]
    if kind == "kvlist_value":
        return attributes_to_dict(value.kvlist_value.values)
    return getattr(value, kind)


def attributes_to_dict(attributes: Iterable[common_pb2.KeyValue]) -> dict[str, Any]:
    return {item.key: any_value_to_python(item.value) for item in attributes}


def _to_received_span(
    span: trace_pb2.Span,
    resource_attributes: dict[str, Any],
    scope: common_pb2.InstrumentationScope,
    protocol: str,
) -> ReceivedSpan:
    return ReceivedSpan(
        trace_id=span.trace_id.hex(),
        span_id=span.span_id.hex(),
        parent_span_id=span.parent_span_id.hex(),
        name=span.name,
        kind=span.kind,
        start_ns=span.start_time_unix_nano,
        end_ns=span.end_time_unix_nano,
        attributes=attributes_to_dict(span.attributes),
        events=[
            ReceivedEvent(event.name, event.time_unix_nano, attributes_to_dict(event.attributes))
            for event in span.events
        ],
        links=[
            ReceivedLink(
                link.trace_id.hex(), link.span_id.hex(), attributes_to_dict(link.attributes)
            )
            for link in span.links
        ],
        status_code=span.status.code,
        status_message=span.status.message,
        resource_attributes=resource_attributes,
        scope_name=scope.name,
        scope_version=scope.version,
        protocol=protocol,
    )


def flatten_request(
    request: trace_service_pb2.ExportTraceServiceRequest, protocol: str
) -> list[ReceivedSpan]:
    spans = []
    for resource_spans in request.resource_spans:
        resource = attributes_to_dict(resource_spans.resource.attributes)
        for scope_spans in resource_spans.scope_spans:
            for span in scope_spans.spans:
                spans.append(_to_received_span(span, resource, scope_spans.scope, protocol))
    return spans


def _decompress(body: bytes, encoding: str) -> bytes:
    encoding = encoding.strip().lower()
    if encoding in ("", "identity", "none"):
        return body
    if encoding == "gzip":
        return gzip.decompress(body)
    if encoding == "deflate":
        try:
            return zlib.decompress(body)
        except zlib.error:  # raw deflate stream without the zlib header
            return zlib.decompress(body, -zlib.MAX_WBITS)
    raise ValueError(f"unsupported Content-Encoding {encoding!r}")


def _items(obj: Mapping[str, Any], camel: str, snake: str) -> list[Any]:
    value = obj.get(camel, obj.get(snake, []))
    return value if isinstance(value, list) else []


_ID_KEYS = ("traceId", "trace_id", "spanId", "span_id", "parentSpanId", "parent_span_id")


def _hex_ids_to_base64(obj: dict[str, Any]) -> None:
    """OTLP/JSON ids are hex strings where protobuf JSON expects base64: convert in place."""
    for key in _ID_KEYS:
        value = obj.get(key)
        if isinstance(value, str) and value:
            obj[key] = base64.b64encode(bytes.fromhex(value)).decode("ascii")


def parse_json_request(body: bytes) -> trace_service_pb2.ExportTraceServiceRequest:
    """Parse OTLP/JSON: like protobuf JSON, except that trace and span ids are hex."""
    document = json.loads(body)
    if not isinstance(document, dict):
        raise ValueError("OTLP/JSON body must be an object")
    for resource_spans in _items(document, "resourceSpans", "resource_spans"):
        for scope_spans in _items(resource_spans, "scopeSpans", "scope_spans"):
            for span in _items(scope_spans, "spans", "spans"):
                _hex_ids_to_base64(span)
                for link in _items(span, "links", "links"):
                    _hex_ids_to_base64(link)
    request = ExportTraceServiceRequest()
    json_format.ParseDict(document, request)
    return request


def decode_http_body(
    body: bytes, content_type: str, content_encoding: str
) -> trace_service_pb2.ExportTraceServiceRequest:
    """Decode an OTLP/HTTP request body; raises ValueError/DecodeError when undecodable."""
    data = _decompress(body, content_encoding)
    if content_type == _JSON:
        return parse_json_request(data)
    request = ExportTraceServiceRequest()
    request.ParseFromString(data)
    return request


# --------------------------------------------------------------------------- faults


@dataclass(frozen=True)
class _Fault:
    grpc_code: grpc.StatusCode
    http_status: int
    retry_after: float | None
    message: str


_STOPPED = _Fault(grpc.StatusCode.UNAVAILABLE, 503, None, "receiver stopped")


def _retry_info_metadata(retry_after: float) -> tuple[tuple[str, bytes], ...]:
    info = error_details_pb2.RetryInfo()
    info.retry_delay.FromNanoseconds(round(retry_after * 1e9))
    return (("google.rpc.retryinfo-bin", info.SerializeToString()),)


def _format_retry_after(retry_after: float) -> str:
    return str(int(retry_after)) if float(retry_after).is_integer() else f"{retry_after:g}"


# --------------------------------------------------------------------------- HTTP server


class _HttpReply(NamedTuple):
    status: int
    content_type: str
    body: bytes
    headers: tuple[tuple[str, str], ...] = ()


def _reply(
    status: int,
    content_type: str,
    message: str = "",
    headers: tuple[tuple[str, str], ...] = (),
) -> _HttpReply:
    if content_type == _JSON:
        body = json.dumps({"message": message} if message else {}).encode()
    elif status == HTTPStatus.OK:
        body = ExportTraceServiceResponse().SerializeToString()
    else:
        body = status_pb2.Status(message=message).SerializeToString()
    return _HttpReply(status, content_type, body, headers)


HttpHandler = Callable[[str, Mapping[str, str], bytes], _HttpReply]


class _OtlpHttpServer(ConnectionTracking):
    """The emulator's connection-tracking server that can also serve TLS: the handshake
    runs in the connection's own thread, not in the accept loop."""

    def __init__(
        self,
        address: tuple[str, int],
        handle: HttpHandler,
        tls: ssl.SSLContext | None = None,
        on_handshake_failed: Callable[[], None] = lambda: None,
    ) -> None:
        self.handle = handle
        self._on_handshake_failed = on_handshake_failed
        super().__init__(address, _OtlpHttpHandler)
        if tls is not None:
            self.socket = tls.wrap_socket(
                self.socket, server_side=True, do_handshake_on_connect=False
            )

    def finish_request(self, request: Any, client_address: Any) -> None:
        if isinstance(request, ssl.SSLSocket):
            request.settimeout(_HANDSHAKE_TIMEOUT_S)
            try:
                request.do_handshake()
            except (ssl.SSLError, OSError):
                self._on_handshake_failed()
                return
            request.settimeout(None)
        super().finish_request(request, client_address)


class _OtlpHttpHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, like a real collector
    server: _OtlpHttpServer

    def log_message(self, format: str, *args: Any) -> None:
        """Silence the per-request log lines on stderr."""

    def do_POST(self) -> None:
        length = self.headers.get("Content-Length", "")
        if not length.isdigit():
            self.close_connection = True
            self._send(_reply(HTTPStatus.LENGTH_REQUIRED, _PROTOBUF, "Content-Length required"))
            return
        body = self.rfile.read(int(length))
        headers = {key.lower(): value for key, value in self.headers.items()}
        self._send(self.server.handle(urlsplit(self.path).path, headers, body))

    def do_GET(self) -> None:
        self._send(_reply(HTTPStatus.METHOD_NOT_ALLOWED, _PROTOBUF, "use POST"))

    def _send(self, reply: _HttpReply) -> None:
        self.send_response(reply.status)
        self.send_header("Content-Type", reply.content_type)
        self.send_header("Content-Length", str(len(reply.body)))
        for name, value in reply.headers:
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(reply.body)


class _HttpRunner:
    """An _OtlpHttpServer serving in a background thread."""

    def __init__(
        self,
        host: str,
        port: int,
        handle: HttpHandler,
        tls: ssl.SSLContext | None = None,
        on_handshake_failed: Callable[[], None] = lambda: None,
    ) -> None:
        self.server = _retry_bind(
            lambda: _OtlpHttpServer((host, port), handle, tls, on_handshake_failed)
        )
        self.port: int = self.server.server_address[1]
        self._thread = threading.Thread(
            target=self.server.serve_forever,
            kwargs={"poll_interval": 0.05},
            name=f"otlp-http-{self.port}",
            daemon=True,
        )
        self._thread.start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.server.close_open_connections()
        self._thread.join(timeout=5)


# --------------------------------------------------------------------------- gRPC server


GrpcHandler = Callable[
    [trace_service_pb2.ExportTraceServiceRequest, grpc.ServicerContext],
    trace_service_pb2.ExportTraceServiceResponse,
]


# protocol, signal, path, headers: records the call, and holds it while the receiver hangs
Arrival = Callable[[str, str, str, Mapping[str, str]], None]


def _grpc_headers(context: grpc.ServicerContext) -> dict[str, str]:
    metadata = {m.key.lower(): m.value for m in context.invocation_metadata()}
    return {key: value for key, value in metadata.items() if isinstance(value, str)}


class _TraceService(trace_service_pb2_grpc.TraceServiceServicer):
    def __init__(self, handle: GrpcHandler, arrive: Arrival) -> None:
        self._handle = handle
        self._arrive = arrive

    def Export(
        self,
        request: trace_service_pb2.ExportTraceServiceRequest,
        context: grpc.ServicerContext,
    ) -> trace_service_pb2.ExportTraceServiceResponse:
        self._arrive("grpc", "traces", GRPC_TRACES_METHOD, _grpc_headers(context))
        return self._handle(request, context)


MetricsHandler = Callable[[metrics_service_pb2.ExportMetricsServiceRequest, str], None]
LogsHandler = Callable[[logs_service_pb2.ExportLogsServiceRequest, str], None]


class _LogsService(logs_service_pb2_grpc.LogsServiceServicer):
    """Log records are stored as they come; trace faults do not apply to them."""

    def __init__(self, handle: LogsHandler, arrive: Arrival) -> None:
        self._handle = handle
        self._arrive = arrive

    def Export(
        self,
        request: logs_service_pb2.ExportLogsServiceRequest,
        context: grpc.ServicerContext,
    ) -> logs_service_pb2.ExportLogsServiceResponse:
        self._arrive("grpc", "logs", GRPC_LOGS_METHOD, _grpc_headers(context))
        self._handle(request, "grpc")
        return logs_service_pb2.ExportLogsServiceResponse()


class _MetricsService(metrics_service_pb2_grpc.MetricsServiceServicer):
    """Metrics are stored as they come; trace faults do not apply to them."""

    def __init__(self, handle: MetricsHandler, arrive: Arrival) -> None:
        self._handle = handle
        self._arrive = arrive

    def Export(
        self,
        request: metrics_service_pb2.ExportMetricsServiceRequest,
        context: grpc.ServicerContext,
    ) -> metrics_service_pb2.ExportMetricsServiceResponse:
        self._arrive("grpc", "metrics", GRPC_METRICS_METHOD, _grpc_headers(context))
        self._handle(request, "grpc")
        return metrics_service_pb2.ExportMetricsServiceResponse()


@dataclass(frozen=True)
class ReceivedMetricPoint:
    name: str
    unit: str
    kind: str  # "sum", "gauge" or "histogram"
    attributes: dict[str, Any]
    value: float  # sum/gauge value, or the histogram's count
    exemplar_trace_ids: tuple[str, ...]
    protocol: str


def flatten_metrics(
    request: metrics_service_pb2.ExportMetricsServiceRequest, protocol: str
) -> list[ReceivedMetricPoint]:
    points = []
    for resource_metrics in request.resource_metrics:
        for scope_metrics in resource_metrics.scope_metrics:
            for metric in scope_metrics.metrics:
                kind = metric.WhichOneof("data")
                data = getattr(metric, kind)
                for point in data.data_points:
                    if kind == "histogram":
                        value = float(point.count)
                    else:
                        which = point.WhichOneof("value")
                        value = float(getattr(point, which)) if which else 0.0
                    points.append(
                        ReceivedMetricPoint(
                            metric.name,
                            metric.unit,
                            kind,
                            attributes_to_dict(point.attributes),
                            value,
                            tuple(e.trace_id.hex() for e in point.exemplars if e.trace_id),
                            protocol,
                        )
                    )
    return points


def _no_arrival(protocol: str, signal: str, path: str, headers: Mapping[str, str]) -> None:
    """Record nothing, hold nothing."""


class _GrpcRunner:
    """A grpc.Server bound to host:port (exclusively: no SO_REUSEPORT sharing)."""

    def __init__(
        self,
        host: str,
        port: int,
        handle: GrpcHandler,
        max_message_bytes: int,
        handle_metrics: MetricsHandler | None = None,
        handle_logs: LogsHandler | None = None,
        *,
        arrive: Arrival = _no_arrival,
        tls: ServerTls | None = None,
    ) -> None:
        self._handle_metrics = handle_metrics
        self._handle_logs = handle_logs
        self._arrive = arrive
        self._credentials = None if tls is None else _grpc_server_credentials(tls)
        self._executor = futures.ThreadPoolExecutor(max_workers=16, thread_name_prefix="otlp-grpc")
        options = [
            ("grpc.max_receive_message_length", max_message_bytes),
            ("grpc.so_reuseport", 0),
        ]
        self.server, self.port = _retry_bind(lambda: self._bind(host, port, handle, options))
        self.server.start()

    def _bind(
        self, host: str, port: int, handle: GrpcHandler, options: list[tuple[str, int]]
    ) -> tuple[grpc.Server, int]:
        server = grpc.server(self._executor, options=options)
        trace_service_pb2_grpc.add_TraceServiceServicer_to_server(
            _TraceService(handle, self._arrive), server
        )
        if self._handle_metrics is not None:
            metrics_service_pb2_grpc.add_MetricsServiceServicer_to_server(
                _MetricsService(self._handle_metrics, self._arrive), server
            )
        if self._handle_logs is not None:
            logs_service_pb2_grpc.add_LogsServiceServicer_to_server(
                _LogsService(self._handle_logs, self._arrive), server
            )
        address = f"{host}:{port}"
        if self._credentials is None:
            return server, server.add_insecure_port(address)
        return server, server.add_secure_port(address, self._credentials)

    def stop(self) -> None:
        self.server.stop(grace=0).wait(timeout=5)
        self._executor.shutdown(wait=False, cancel_futures=True)


def _grpc_server_credentials(tls: ServerTls) -> grpc.ServerCredentials:
    client_ca = None if tls.client_ca is None else tls.client_ca.read_bytes()
    return grpc.ssl_server_credentials(
        [(tls.key.read_bytes(), tls.cert.read_bytes())],
        root_certificates=client_ca,
        require_client_auth=client_ca is not None,
    )


def _retry_bind(bind: Callable[[], _T]) -> _T:
    """Bind, retrying briefly: a port just released may still be busy for a moment."""
    deadline = time.monotonic() + _BIND_TIMEOUT_S
    while True:
        try:
            return bind()
        except (OSError, RuntimeError):
            if time.monotonic() >= deadline:
                raise
            time.sleep(0.05)


# --------------------------------------------------------------------------- receiver


class OtlpReceiver:
    """OTLP trace receiver over gRPC and HTTP, both on `host`, for tests.

    Ports are chosen free on the first `start()` (unless given) and kept for later starts.
    `tls`: both servers speak TLS only (and require client certificates when it names a
    client CA). `http_path_prefix` ("/otlp", say): the HTTP signal paths sit under it.
    """

    def __init__(
        self,
        *,
        host: str = "127.0.0.1",
        grpc_port: int = 0,
        http_port: int = 0,
        max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES,
        tls: ServerTls | None = None,
        http_path_prefix: str = "",
    ) -> None:
        self.host = host
        self._grpc_port = grpc_port
        self._http_port = http_port
        self._max_message_bytes = max_message_bytes
        self.tls = tls
        self._http_tls = None if tls is None else tls.server_context()
        self.http_path_prefix = http_path_prefix.rstrip("/")
        self._lifecycle = threading.RLock()
        self._grpc: _GrpcRunner | None = None
        self._http: _HttpRunner | None = None
        self._stopping = threading.Event()
        self._cond = threading.Condition()
        self._requests: list[ReceivedRequest] = []
        self._spans: list[ReceivedSpan] = []
        self._metric_points: list[ReceivedMetricPoint] = []
        self._logs: list[ReceivedLog] = []
        self._attempts: Counter[str] = Counter()
        self._attempt_times: list[tuple[str, float]] = []  # (protocol, time.monotonic())
        self._faults: deque[_Fault] = deque()
        self._down: _Fault | None = None
        self._delay_s = 0.0
        self._hung = False
        self._calls: list[ReceivedCall] = []
        self._tls_failures = 0

    # ----------------------------------------------------------------- lifecycle

    def start(self) -> OtlpReceiver:
        """Start both servers (same ports as before after a `stop()`); no-op if running."""
        with self._lifecycle:
            if self.is_running:
                return self
            self._stopping.clear()
            self._grpc = _GrpcRunner(
                self.host,
                self._grpc_port,
                self._handle_grpc,
                self._max_message_bytes,
                self._store_metrics,
                self._store_logs,
                arrive=self._arrive,
                tls=self.tls,
            )
            self._grpc_port = self._grpc.port
            try:
                self._http = _HttpRunner(
                    self.host,
                    self._http_port,
                    self._handle_http,
                    self._http_tls,
                    self._count_tls_failure,
                )
            except BaseException:
                self._grpc.stop()
                self._grpc = None
                raise
            self._http_port = self._http.port
        return self

    def stop(self) -> None:
        """Stop both servers and drop open connections: the ports refuse connections
        until `start()`. Received data and fault settings are kept."""
        with self._lifecycle:
            self._stopping.set()  # wake handlers sleeping in set_delay()
            with self._cond:
                self._cond.notify_all()  # and those held by set_hang()
            if self._grpc is not None:
                self._grpc.stop()
                self._grpc = None
            if self._http is not None:
                self._http.stop()
                self._http = None

    @property
    def is_running(self) -> bool:
        return self._grpc is not None and self._http is not None

    def __enter__(self) -> OtlpReceiver:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # ----------------------------------------------------------------- addresses

    @property
    def grpc_port(self) -> int:
        return self._require_port(self._grpc_port)

    @property
    def http_port(self) -> int:
        return self._require_port(self._http_port)

    @property
    def scheme(self) -> str:
        return "http" if self.tls is None else "https"

    @property
    def grpc_endpoint(self) -> str:
        """`http://host:port` for the gRPC exporter (the http scheme means insecure);
        `https://host:port` when serving TLS."""
        return f"{self.scheme}://{self.host}:{self.grpc_port}"

    @property
    def http_endpoint(self) -> str:
        """Base URL for OTEL_EXPORTER_OTLP_ENDPOINT (the path prefix included); the
        exporter appends /v1/traces."""
        return f"{self.scheme}://{self.host}:{self.http_port}{self.http_path_prefix}"

    @property
    def http_traces_url(self) -> str:
        """Full URL, for the HTTP exporter's `endpoint=` argument."""
        return self.http_endpoint + TRACES_PATH

    def env(self, protocol: str) -> dict[str, str]:
        """OTEL_EXPORTER_OTLP_* variables pointing a subprocess at this receiver.

        `protocol` is "grpc" or "http/protobuf" ("http" is accepted as an alias).
        Signal-specific variables (OTEL_EXPORTER_OTLP_TRACES_*) would override these.
        Serving TLS, the server certificate is trusted (OTEL_EXPORTER_OTLP_CERTIFICATE);
        a client certificate, for mutual TLS, is the caller's to add.
        """
        if protocol == "grpc":
            env = {
                "OTEL_EXPORTER_OTLP_ENDPOINT": self.grpc_endpoint,
                "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc",
            }
        elif protocol in ("http/protobuf", "http"):
            env = {
                "OTEL_EXPORTER_OTLP_ENDPOINT": self.http_endpoint,
                "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf",
            }
        else:
            raise ValueError(f"unknown OTLP protocol {protocol!r}; use 'grpc' or 'http/protobuf'")
        if self.tls is not None:
            env["OTEL_EXPORTER_OTLP_CERTIFICATE"] = str(self.tls.cert)
        elif protocol == "grpc":
            env["OTEL_EXPORTER_OTLP_INSECURE"] = "true"
        return env

    @staticmethod
    def _require_port(port: int) -> int:
        if port == 0:
            raise RuntimeError("OtlpReceiver has not been started yet")
        return port

    # ----------------------------------------------------------------- fault control

    def fail_next(
        self,
        n: int = 1,
        grpc_code: grpc.StatusCode = grpc.StatusCode.UNAVAILABLE,
        http_status: int = 503,
        *,
        retry_after: float | None = None,
    ) -> None:
        """Answer the next `n` requests (either protocol) with an error; they are not stored.

        `retry_after` (seconds) is sent as gRPC RetryInfo / HTTP Retry-After; the OTLP
        exporters then wait that long instead of their 1, 2, 4 s backoff.
        """
        fault = _Fault(grpc_code, http_status, retry_after, "injected failure")
        with self._cond:
            self._faults.extend([fault] * n)

    def reject_next(self, n: int = 1) -> None:
        """Answer the next `n` requests with a non-retryable INVALID_ARGUMENT / HTTP 400."""
        fault = _Fault(grpc.StatusCode.INVALID_ARGUMENT, 400, None, "injected rejection")
        with self._cond:
            self._faults.extend([fault] * n)

    def set_down(self, down: bool, *, retry_after: float | None = None) -> None:
        """While down, answer every request UNAVAILABLE / HTTP 503 (the ports stay open)."""
        fault = _Fault(grpc.StatusCode.UNAVAILABLE, 503, retry_after, "receiver is down")
        with self._cond:
            self._down = fault if down else None

    def set_delay(self, seconds: float) -> None:
        """Hold every request this long before answering (0 to stop); `stop()` cuts it short."""
        with self._cond:
            self._delay_s = seconds

    def set_hang(self, hang: bool) -> None:
        """While hung, hold every export request (any signal, either protocol) unanswered,
        after recording it in `calls()`; `set_hang(False)` or `stop()` lets them go."""
        with self._cond:
            self._hung = hang
            self._cond.notify_all()

    def pending_faults(self) -> int:
        with self._cond:
            return len(self._faults)

    # ----------------------------------------------------------------- stored data

    def requests(self, protocol: str | None = None) -> list[ReceivedRequest]:
        with self._cond:
            return [r for r in self._requests if protocol in (None, r.protocol)]

    def calls(self, signal: str | None = None) -> list[ReceivedCall]:
        """Every export request as it arrived (of `signal`, or all), in order, failed,
        rejected and held ones included; `clear()` forgets them."""
        with self._cond:
            return [c for c in self._calls if signal in (None, c.signal)]

    def wait_for_calls(self, n: int, timeout: float = 10.0) -> list[ReceivedCall]:
        """Block until at least `n` export requests arrived; AssertionError on timeout."""
        with self._cond:
            self._wait(lambda: len(self._calls) >= n, f">= {n} calls", timeout)
            return list(self._calls)

    def tls_handshake_failures(self) -> int:
        """TLS handshakes the HTTP server refused (the gRPC server does not report them)."""
        with self._cond:
            return self._tls_failures

    def wait_for_tls_handshake_failures(self, n: int, timeout: float = 10.0) -> int:
        """Block until the HTTP server refused at least `n` handshakes (the client may
        give up before the server has noticed); AssertionError on timeout."""
        with self._cond:
            self._wait(lambda: self._tls_failures >= n, f">= {n} failed TLS handshakes", timeout)
            return self._tls_failures

    def request_count(self) -> int:
        """Accepted (stored) requests."""
        with self._cond:
            return len(self._requests)

    def attempt_count(self, protocol: str | None = None) -> int:
        """Export attempts (gRPC Export or POST /v1/traces), failed and rejected included."""
        with self._cond:
            return self._attempts[protocol] if protocol else sum(self._attempts.values())

    def attempt_times(self, protocol: str | None = None) -> list[float]:
        """time.monotonic() at the arrival of each export attempt, in order: the waits
        between attempts are the client's backoff, without its connection set-up."""
        with self._cond:
            return [at for p, at in self._attempt_times if protocol in (None, p)]

    def spans(self, protocol: str | None = None) -> list[ReceivedSpan]:
        with self._cond:
            return [s for s in self._spans if protocol in (None, s.protocol)]

    def span_count(self) -> int:
        with self._cond:
            return len(self._spans)

    def traces(self) -> dict[str, list[ReceivedSpan]]:
        """trace_id -> its spans, in arrival order."""
        traces: dict[str, list[ReceivedSpan]] = {}
        for span in self.spans():
            traces.setdefault(span.trace_id, []).append(span)
        return traces

    def span_keys(self) -> list[tuple[str, str]]:
        """(trace_id, span_id) of every received span, duplicates included."""
        return [span.key for span in self.spans()]

    def unique_span_keys(self) -> set[tuple[str, str]]:
        return set(self.span_keys())

    def duplicate_spans(self) -> dict[tuple[str, str], int]:
        """(trace_id, span_id) received more than once -> times received."""
        counts = Counter(self.span_keys())
        return {key: count for key, count in counts.items() if count > 1}

    def duplicate_count(self) -> int:
        """Spans received beyond the first copy of each (trace_id, span_id)."""
        keys = self.span_keys()
        return len(keys) - len(set(keys))

    def clear(self) -> None:
        """Forget received data, calls, attempt counts and pending faults (not
        `set_down`/delay/hang)."""
        with self._cond:
            self._requests.clear()
            self._spans.clear()
            self._metric_points.clear()
            self._logs.clear()
            self._attempts.clear()
            self._attempt_times.clear()
            self._faults.clear()
            self._calls.clear()
            self._tls_failures = 0

    def wait_for_spans(self, n: int, timeout: float = 10.0) -> list[ReceivedSpan]:
        """Block until at least `n` spans were received; AssertionError on timeout."""
        with self._cond:
            self._wait(lambda: len(self._spans) >= n, f">= {n} spans", timeout)
            return list(self._spans)

    def wait_for_requests(self, n: int, timeout: float = 10.0) -> list[ReceivedRequest]:
        """Block until at least `n` requests were accepted; AssertionError on timeout."""
        with self._cond:
            self._wait(lambda: len(self._requests) >= n, f">= {n} requests", timeout)
            return list(self._requests)

    def _wait(self, ready: Callable[[], bool], expected: str, timeout: float) -> None:
        """Wait, holding the lock, until `ready()`; AssertionError naming `expected` after
        `timeout` seconds."""
        if not self._cond.wait_for(ready, timeout=timeout):
            raise AssertionError(f"expected {expected} within {timeout}s; {self._summary()}")

    def _summary(self) -> str:
        names = Counter(span.name for span in self._spans)
        return (
            f"got {len(self._spans)} spans in {len(self._requests)} accepted requests, "
            f"{len(self._logs)} log records, {len(self._calls)} calls of any signal, "
            f"{self._tls_failures} failed TLS handshakes "
            f"(attempts by protocol: {dict(self._attempts) or 'none'}; "
            f"running={self.is_running}, down={self._down is not None}, "
            f"pending faults={len(self._faults)}; span names: {dict(names.most_common(10))})"
        )

    # ----------------------------------------------------------------- request handling

    def _arrive(self, protocol: str, signal: str, path: str, headers: Mapping[str, str]) -> None:
        """Record the call; while `set_hang(True)`, hold it until released or stopped."""
        with self._cond:
            self._calls.append(ReceivedCall(protocol, signal, path, dict(headers)))
            self._cond.notify_all()
            self._cond.wait_for(lambda: not self._hung or self._stopping.is_set())

    def _count_tls_failure(self) -> None:
        with self._cond:
            self._tls_failures += 1
            self._cond.notify_all()

    def _admit(self, protocol: str) -> _Fault | None:
        """Count the attempt, hold it for the configured delay, return the fault to answer."""
        with self._cond:
            self._attempts[protocol] += 1
            self._attempt_times.append((protocol, time.monotonic()))
            self._cond.notify_all()
            delay = self._delay_s
        if delay > 0 and self._stopping.wait(delay):
            return _STOPPED
        with self._cond:
            if self._down is not None:
                return self._down
            return self._faults.popleft() if self._faults else None

    def _store_metrics(
        self, request: metrics_service_pb2.ExportMetricsServiceRequest, protocol: str
    ) -> None:
        points = flatten_metrics(request, protocol)
        with self._cond:
            self._metric_points.extend(points)
            self._cond.notify_all()

    def metric_points(self) -> list[ReceivedMetricPoint]:
        with self._cond:
            return list(self._metric_points)

    def _store_logs(
        self, request: logs_service_pb2.ExportLogsServiceRequest, protocol: str
    ) -> None:
        records = flatten_logs(request, protocol)
        with self._cond:
            self._logs.extend(records)
            self._cond.notify_all()

    def logs(self, protocol: str | None = None) -> list[ReceivedLog]:
        """Every log record received, in arrival order (copies of one record included)."""
        with self._cond:
            return [r for r in self._logs if protocol in (None, r.protocol)]

    def wait_for_logs(self, n: int, timeout: float = 10.0) -> list[ReceivedLog]:
        with self._cond:
            self._wait(lambda: len(self._logs) >= n, f">= {n} log records", timeout)
            return list(self._logs)

    def _store(
        self,
        protocol: str,
        request: trace_service_pb2.ExportTraceServiceRequest,
        headers: dict[str, str],
    ) -> None:
        spans = flatten_request(request, protocol)
        with self._cond:
            self._requests.append(ReceivedRequest(protocol, request, headers, time.time()))
            self._spans.extend(spans)
            self._cond.notify_all()

    def _handle_grpc(
        self,
        request: trace_service_pb2.ExportTraceServiceRequest,
        context: grpc.ServicerContext,
    ) -> trace_service_pb2.ExportTraceServiceResponse:
        fault = self._admit("grpc")
        if fault is not None:
            _abort_grpc(context, fault)
        self._store("grpc", request, _grpc_headers(context))
        return ExportTraceServiceResponse()

    def _handle_http(self, raw_path: str, headers: Mapping[str, str], body: bytes) -> _HttpReply:
        path = self._signal_path(raw_path)
        self._arrive("http", _HTTP_SIGNALS.get(path, ""), raw_path, headers)
        content_type = headers.get("content-type", "").split(";")[0].strip().lower()
        reply_type = _JSON if content_type == _JSON else _PROTOBUF
        if path == METRICS_PATH and content_type == _PROTOBUF:
            metrics_request = metrics_service_pb2.ExportMetricsServiceRequest()
            try:
                metrics_request.ParseFromString(
                    _decompress(body, headers.get("content-encoding", ""))
                )
            except (DecodeError, OSError, EOFError, zlib.error) as error:
                return _reply(HTTPStatus.BAD_REQUEST, reply_type, f"undecodable body: {error}")
            self._store_metrics(metrics_request, "http")
            return _reply(HTTPStatus.OK, reply_type)
        if path == LOGS_PATH and content_type == _PROTOBUF:
            logs_request = logs_service_pb2.ExportLogsServiceRequest()
            try:
                logs_request.ParseFromString(_decompress(body, headers.get("content-encoding", "")))
            except (DecodeError, OSError, EOFError, zlib.error) as error:
                return _reply(HTTPStatus.BAD_REQUEST, reply_type, f"undecodable body: {error}")
            self._store_logs(logs_request, "http")
            return _reply(HTTPStatus.OK, reply_type)
        if path != TRACES_PATH:
            return _reply(HTTPStatus.NOT_FOUND, reply_type, f"no such path {raw_path!r}")
        if content_type not in (_PROTOBUF, _JSON):
            return _reply(
                HTTPStatus.UNSUPPORTED_MEDIA_TYPE, reply_type, f"bad content type {content_type!r}"
            )
        fault = self._admit("http")
        if fault is not None:
            return _http_fault_reply(fault, reply_type)
        try:
            request = decode_http_body(body, content_type, headers.get("content-encoding", ""))
        except (ValueError, DecodeError, OSError, EOFError, zlib.error, binascii.Error) as error:
            return _reply(HTTPStatus.BAD_REQUEST, reply_type, f"undecodable body: {error}")
        self._store("http", request, dict(headers))
        return _reply(HTTPStatus.OK, reply_type)

    def _signal_path(self, raw_path: str) -> str:
        """The path below `http_path_prefix` ("" when the request is not under it)."""
        prefix = self.http_path_prefix
        if not prefix:
            return raw_path
        return raw_path[len(prefix) :] if raw_path.startswith(prefix + "/") else ""


def _abort_grpc(context: grpc.ServicerContext, fault: _Fault) -> NoReturn:
    if fault.retry_after is not None:
        context.set_trailing_metadata(_retry_info_metadata(fault.retry_after))
    context.abort(fault.grpc_code, fault.message)
    raise AssertionError("unreachable: context.abort() raises")


def _http_fault_reply(fault: _Fault, reply_type: str) -> _HttpReply:
    if fault.retry_after is None:
        return _reply(fault.http_status, reply_type, fault.message)
    headers = (("Retry-After", _format_retry_after(fault.retry_after)),)
    return _reply(fault.http_status, reply_type, fault.message, headers)
