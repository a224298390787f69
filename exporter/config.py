"""Settings: built-in defaults < YAML file < environment < command-line flags.

Every key has one name per source (``poll_interval`` in YAML, ``ORCHESTRA_POLL_INTERVAL``
in the environment, ``--poll-interval`` on the command line). Validation reports every
problem at once, each naming the key the way the user wrote it and what is allowed,
like the OpenTelemetry Collector's `Validate()`.
"""

from __future__ import annotations

import ipaddress
import os
import re
import stat
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Final, Literal
from urllib.parse import unquote, urlsplit, urlunsplit

import yaml
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
)

from exporter.errors import ConfigError
from exporter.mapping.cost import PriceTable
from exporter.mapping.logs import ExceptionSignal
from exporter.mapping.options import DEFAULT_PROVIDER, SpanNames, TraceparentMode
from exporter.prices import load_price_table
from exporter.schedule import ScheduleSettings
from exporter.sink.otlp import PROTOCOLS, otlp_endpoint, otlp_protocol
from exporter.source.body import DEFAULT_MAX_RECORDS, DEFAULT_MAX_RESPONSE_BYTES
from exporter.source.client import DEFAULT_BASE_URL, MAX_PAGE_SIZE

LOG_LEVELS: Final = ("debug", "info", "warning", "error")
DEFAULT_MAX_INTERVAL_S: Final = 300.0


@dataclass(frozen=True)
class Key:
    field: str
    env: str
    help: str

    @property
    def flag(self) -> str:
        return "--" + self.field.replace("_", "-")


KEYS: Final = (
    Key("base_url", "ORCHESTRA_BASE_URL", "API base URL"),
    Key("api_key", "ORCHESTRA_API_KEY", "bearer token (prefer the file or the environment)"),
    Key("api_key_file", "ORCHESTRA_API_KEY_FILE", "file holding the bearer token"),
    Key("workflows", "ORCHESTRA_WORKFLOWS", "'all' or comma-separated workflow ids"),
    Key("poll_interval", "ORCHESTRA_POLL_INTERVAL", "seconds between polls of an active workflow"),
    Key("poll_interval_min", "ORCHESTRA_POLL_INTERVAL_MIN", "seconds between polls, run in flight"),
    Key("poll_interval_max", "ORCHESTRA_POLL_INTERVAL_MAX", "most seconds between idle polls"),
    Key("poll_active_window", "ORCHESTRA_POLL_ACTIVE_WINDOW", "seconds active after a run"),
    Key(
        "lookback", "ORCHESTRA_LOOKBACK", "on first start, export runs that ended this recently (s)"
    ),
    Key("state_path", "ORCHESTRA_STATE_PATH", "SQLite ledger file"),
    Key("capture_content", "ORCHESTRA_CAPTURE_CONTENT", "put prompts/outputs on spans"),
    Key("content_max_length", "ORCHESTRA_CONTENT_MAX_LENGTH", "characters kept of each value"),
    Key("discovery_interval", "ORCHESTRA_DISCOVERY_INTERVAL", "seconds between workflow refreshes"),
    Key("shard", "ORCHESTRA_SHARD", "i/n: this replica's share of the workflows"),
    Key("http_addr", "ORCHESTRA_HTTP_ADDR", "host:port for /metrics, /healthz, /readyz, or off"),
    Key("log_level", "ORCHESTRA_LOG_LEVEL", "debug, info, warning or error"),
    Key("log_format", "ORCHESTRA_LOG_FORMAT", "text or json"),
    Key("api_timeout", "ORCHESTRA_API_TIMEOUT", "seconds before an API request times out"),
    Key("api_concurrency", "ORCHESTRA_API_CONCURRENCY", "API requests in flight at most"),
    Key(
        "api_max_response_bytes",
        "ORCHESTRA_API_MAX_RESPONSE_BYTES",
        "bytes of one API answer read at most",
    ),
    Key("api_max_records", "ORCHESTRA_API_MAX_RECORDS", "records in one API answer at most"),
    Key(
        "api_max_retry_after",
        "ORCHESTRA_API_MAX_RETRY_AFTER",
        "seconds a Retry-After may pause the client at most",
    ),
    Key("export_batch_size", "ORCHESTRA_EXPORT_BATCH_SIZE", "spans per OTLP request at most"),
    Key("retention", "ORCHESTRA_RETENTION", "seconds the ledger remembers finished runs"),
    Key("ca_file", "ORCHESTRA_CA_FILE", "CA bundle to verify the API's TLS certificate"),
    Key("openinference", "ORCHESTRA_OPENINFERENCE", "also write OpenInference names (Phoenix)"),
    Key("metrics_max_workflows", "ORCHESTRA_METRICS_MAX_WORKFLOWS", "workflow label values kept"),
    Key("metrics_max_nodes", "ORCHESTRA_METRICS_MAX_NODES", "node label values kept per workflow"),
    Key("genai_provider", "ORCHESTRA_GENAI_PROVIDER", "gen_ai.provider.name of model spans"),
    Key("span_names", "ORCHESTRA_SPAN_NAMES", "node (node ids) or semconv (chat {model}, ...)"),
    Key("traceparent_input", "ORCHESTRA_TRACEPARENT_INPUT", "run input holding a traceparent"),
    Key("traceparent_mode", "ORCHESTRA_TRACEPARENT_MODE", "link or parent: the caller's span"),
    Key("prices", "ORCHESTRA_PRICES", "YAML price table: cost of model steps (none: no cost)"),
    Key("wait_spans", "ORCHESTRA_WAIT_SPANS", "add INTERNAL wait spans for gaps between steps"),
    Key(
        "allow_insecure_http",
        "ORCHESTRA_ALLOW_INSECURE_HTTP",
        "true allows an http:// API other than loopback (the key travels in clear)",
    ),
)
# The GenAI conventions' own switch for content capture; ORCHESTRA_CAPTURE_CONTENT wins.
CAPTURE_CONTENT_ALIAS: Final = "OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT"
KEYS_BY_FIELD: Final = {key.field: key for key in KEYS}


def _workflow_list(value: object) -> object:
    if isinstance(value, str):
        items = [part.strip() for part in value.split(",") if part.strip()]
        if any(item.lower() == "all" for item in items):
            if len(items) > 1:
                raise ValueError("'all' cannot be combined with workflow ids")
            return ()
        return tuple(items)
    return value


def _shard(value: object) -> object:
    if isinstance(value, str):
        match = re.fullmatch(r"\s*(\d+)\s*/\s*(\d+)\s*", value)
        if match is None:
            raise ValueError("must look like i/n, e.g. 0/3")
        value = (int(match[1]), int(match[2]))
    if isinstance(value, (tuple, list)) and len(value) == 2:
        index, count = int(value[0]), int(value[1])
        if count < 1 or not 0 <= index < count:
            raise ValueError("needs n >= 1 and 0 <= i < n")
        return (index, count)
    return value


def _http_addr(value: object) -> object:
    # YAML 1.1 reads a bare `off` as False.
    if value is None or value is False:
        return None
    if isinstance(value, str) and value.strip().lower() in ("off", ""):
        return None
    if isinstance(value, str):
        host, sep, port = value.strip().rpartition(":")
        if not sep or not port.isdigit() or not 0 <= int(port) <= 65535:
            raise ValueError("must be host:port (port 0-65535) or off")
        return (host.strip("[]") or "127.0.0.1", int(port))
    return value


# Fields given as text in the environment, flags or YAML, parsed before validation.
WorkflowIds = Annotated[tuple[str, ...], BeforeValidator(_workflow_list)]
Shard = Annotated[tuple[int, int], BeforeValidator(_shard)]
HttpAddr = Annotated[tuple[str, int] | None, BeforeValidator(_http_addr)]


class Settings(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, arbitrary_types_allowed=True)

    base_url: str = DEFAULT_BASE_URL
    api_key: SecretStr | None = None
    api_key_file: Path | None = None
    workflows: WorkflowIds = ()  # empty: all
    poll_interval: float = Field(30.0, gt=0, le=86_400, allow_inf_nan=False)
    # None: the poll interval (no faster polling while a run is in flight).
    poll_interval_min: float | None = Field(None, gt=0, le=86_400, allow_inf_nan=False)
    # None: 300 s, or the poll interval when that is longer (no back-off then).
    poll_interval_max: float | None = Field(None, gt=0, le=86_400, allow_inf_nan=False)
    poll_active_window: float = Field(300.0, ge=0, le=7 * 86_400, allow_inf_nan=False)
    lookback: float = Field(3600.0, ge=0, allow_inf_nan=False)
    state_path: Path = Path("./orchestra-otel.db")
    capture_content: bool = False
    content_max_length: int = Field(2048, ge=16, le=1_000_000)
    discovery_interval: float = Field(300.0, gt=0, allow_inf_nan=False)
    shard: Shard = (0, 1)
    http_addr: HttpAddr = ("127.0.0.1", 9464)
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    log_format: Literal["text", "json"] = "text"
    api_timeout: float = Field(10.0, gt=0, le=600)
    api_concurrency: int = Field(4, ge=1, le=64)
    api_max_response_bytes: int = Field(DEFAULT_MAX_RESPONSE_BYTES, ge=64 * 1024, le=2**31)
    api_max_records: int = Field(DEFAULT_MAX_RECORDS, ge=MAX_PAGE_SIZE, le=10_000_000)
    api_max_retry_after: float = Field(300.0, ge=1, le=86_400, allow_inf_nan=False)
    export_batch_size: int = Field(512, ge=1, le=10_000)
    retention: float = Field(7 * 86_400.0, ge=3600, allow_inf_nan=False)
    ca_file: Path | None = None
    openinference: bool = False
    metrics_max_workflows: int = Field(200, ge=1, le=100_000)
    metrics_max_nodes: int = Field(100, ge=1, le=100_000)
    genai_provider: str = Field(DEFAULT_PROVIDER, min_length=1, max_length=128)
    span_names: SpanNames = "node"
    traceparent_input: str = Field("traceparent", max_length=256)  # empty: not looked for
    traceparent_mode: TraceparentMode = "link"
    prices: Path | None = None
    wait_spans: bool = False
    # Read from `prices` by load_settings, so its problems are reported with the others.
    price_table: PriceTable | None = Field(None, exclude=True)
    allow_insecure_http: bool = False
    otlp_protocol: str = "grpc"
    otlp_endpoint: str | None = None  # from OTEL_EXPORTER_OTLP_(TRACES_)ENDPOINT
    otlp_metrics: bool = True  # OTEL_METRICS_EXPORTER=none turns the metrics push off
    # OTEL_LOGS_EXPORTER: failed steps and runs as OTLP log records (otlp when an endpoint
    # is set), and OTEL_EXPORTER_OTLP_LOGS_PROTOCOL for them.
    otlp_logs: bool = False
    otlp_logs_protocol: str = "grpc"
    # OTEL_SEMCONV_EXCEPTION_SIGNAL_OPT_IN: exceptions as span events, logs, or both.
    exception_signal: ExceptionSignal = "spans"

    @field_validator("ca_file")
    @classmethod
    def _readable_file(cls, value: Path | None) -> Path | None:
        if value is not None and not value.is_file():
            raise ValueError(f"no such file: {value}")
        return value

    @field_validator("base_url")
    @classmethod
    def _url(cls, value: str) -> str:
        if not re.match(r"^https?://[^/\s]+", value):
            raise ValueError("must be an http:// or https:// URL")
        return value.rstrip("/")

    @field_validator("log_level", "log_format", "span_names", "traceparent_mode", mode="before")
    @classmethod
    def _lower(cls, value: object) -> object:
        return value.strip().lower() if isinstance(value, str) else value

    @field_validator("otlp_protocol", "otlp_logs_protocol")
    @classmethod
    def _protocol(cls, value: str) -> str:
        if value not in PROTOCOLS:
            raise ValueError(f"must be one of {', '.join(PROTOCOLS)}")
        return value

    @property
    def schedule(self) -> ScheduleSettings:
        interval = self.poll_interval
        return ScheduleSettings(
            interval_s=interval,
            min_interval_s=min(self.poll_interval_min or interval, interval),
            max_interval_s=max(self.poll_interval_max or DEFAULT_MAX_INTERVAL_S, interval),
            active_window_s=self.poll_active_window,
        )

    @property
    def otlp_enabled(self) -> bool:
        return bool(self.otlp_endpoint)

    @property
    def shown_base_url(self) -> str:
        """The API base URL fit for logs and terminals: credentials in it are masked."""
        return redact_url(self.base_url)

    def secrets(self) -> list[str]:
        """What the logs must never show: the key, and credentials in the base URL."""
        found = url_credentials(self.base_url)
        try:
            key = self.api_key_value()
        except (OSError, UnicodeDecodeError):
            key = None
        return [key, *found] if key else found

    def warnings(self) -> list[str]:
        """Settings that work but put the key at risk; logged once at start-up."""
        found = []
        if self.allow_insecure_http and not _transport_is_private(self.base_url):
            found.append(
                f"ORCHESTRA_ALLOW_INSECURE_HTTP=true: the API key is sent in clear to "
                f"{self.shown_base_url}; use https:// unless the network is yours alone"
            )
        if self.api_key_file is not None:
            found.extend(_key_file_exposure(self.api_key_file))
        return found

    def api_key_value(self) -> str | None:
        """The bearer token, from the key or the key file (surrounding whitespace stripped)."""
        if self.api_key is not None:
            return self.api_key.get_secret_value().strip()
        if self.api_key_file is not None:
            return self.api_key_file.read_text(encoding="utf-8").strip()
        return None


@dataclass(frozen=True)
class _Sourced:
    value: object
    label: str  # how the user wrote the key: ORCHESTRA_X, --x, or file.yaml: x


def load_settings(
    *,
    config_path: Path | None = None,
    environ: Mapping[str, str] | None = None,
    flags: Mapping[str, object] | None = None,
    require_api_key: bool = True,
) -> Settings:
    """Merge every source and validate once; raise ConfigError listing every problem."""
    environ = os.environ if environ is None else environ
    problems: list[str] = []
    merged: dict[str, _Sourced] = {}
    if config_path is not None:
        merged.update(_from_yaml(config_path, problems))
    merged.update(_from_env(environ))
    merged.update(
        {name: _Sourced(value, KEYS_BY_FIELD[name].flag) for name, value in (flags or {}).items()}
    )
    merged["otlp_protocol"] = _Sourced(otlp_protocol(environ), _protocol_variable(environ))
    merged["otlp_endpoint"] = _Sourced(otlp_endpoint(environ), "OTEL_EXPORTER_OTLP_ENDPOINT")
    merged["otlp_metrics"] = _Sourced(_metrics_exporter(environ, problems), "OTEL_METRICS_EXPORTER")
    merged["otlp_logs"] = _Sourced(_logs_exporter(environ, problems), "OTEL_LOGS_EXPORTER")
    merged["otlp_logs_protocol"] = _Sourced(
        otlp_protocol(environ, "LOGS"), _protocol_variable(environ, "LOGS")
    )
    merged["exception_signal"] = _Sourced(
        _exception_signal(environ, problems), "OTEL_SEMCONV_EXCEPTION_SIGNAL_OPT_IN"
    )
    problems.extend(_check_api_key(merged, require_api_key))
    problems.extend(_check_schedule(merged))
    settings = _validate(merged, problems)
    if settings is not None and settings.prices is not None:
        table = load_price_table(settings.prices, problems, merged["prices"].label)
        settings = settings.model_copy(update={"price_table": table})
    if settings is not None:
        problems.extend(_check_transport(settings, merged))
    if problems or settings is None:
        raise ConfigError(problems)
    return settings


def _logs_exporter(environ: Mapping[str, str], problems: list[str]) -> bool:
    """OTEL_LOGS_EXPORTER: `otlp` sends failures as log records, `none` does not.

    Unset, it is `otlp` when a logs endpoint is set (OTEL_EXPORTER_OTLP_LOGS_ENDPOINT or
    OTEL_EXPORTER_OTLP_ENDPOINT): where traces go, a collector usually takes logs too.
    """
    raw = environ.get("OTEL_LOGS_EXPORTER", "").strip().lower()
    if not raw:
        return otlp_endpoint(environ, "LOGS") is not None
    names = {name.strip() for name in raw.split(",")} - {""}
    unknown = names - {"otlp", "none", "console"}
    if unknown:
        problems.append(
            f"OTEL_LOGS_EXPORTER: {', '.join(sorted(unknown))} is not supported; use otlp or none"
        )
    return "otlp" in names


def _exception_signal(environ: Mapping[str, str], problems: list[str]) -> str:
    """OTEL_SEMCONV_EXCEPTION_SIGNAL_OPT_IN (v1.44 conventions): `logs` records exceptions
    on log records instead of span events, `logs/dup` on both; unset, span events."""
    raw = environ.get("OTEL_SEMCONV_EXCEPTION_SIGNAL_OPT_IN", "").strip().lower()
    if raw in ("", "spans"):
        return "spans"
    if raw not in ("logs", "logs/dup"):
        problems.append(f"OTEL_SEMCONV_EXCEPTION_SIGNAL_OPT_IN: {raw!r}: use logs or logs/dup")
        return "spans"
    return raw


def _metrics_exporter(environ: Mapping[str, str], problems: list[str]) -> bool:
    """OTEL_METRICS_EXPORTER: `otlp` (default) pushes metrics with the traces, `none` not.

    Jaeger and Tempo take traces only; there, /metrics is the way to the metrics.
    """
    names = {n.strip().lower() for n in environ.get("OTEL_METRICS_EXPORTER", "otlp").split(",")}
    names.discard("")
    unknown = names - {"otlp", "none", "prometheus"}
    if unknown:
        problems.append(
            f"OTEL_METRICS_EXPORTER: {', '.join(sorted(unknown))} is not supported; "
            "use otlp or none (/metrics is always served by run)"
        )
    return "otlp" in names


def _from_yaml(path: Path, problems: list[str]) -> dict[str, _Sourced]:
    try:
        document = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as exc:
        problems.append(f"{path}: cannot read the config file ({exc.strerror or exc})")
        return {}
    except yaml.YAMLError as exc:
        # PyYAML's own message quotes the offending line, which may hold the API key:
        # say where and what, never the text.
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        what = getattr(exc, "problem", None) or "syntax error"
        problems.append(f"{path}: not valid YAML{where}: {what}")
        return {}
    if document is None:
        return {}
    if not isinstance(document, dict):
        problems.append(f"{path}: must be a mapping of keys to values")
        return {}
    found: dict[str, _Sourced] = {}
    for name, value in document.items():
        if name not in KEYS_BY_FIELD:
            known = ", ".join(KEYS_BY_FIELD)
            problems.append(f"{path}: {name}: unknown key (known keys: {known})")
        else:
            found[name] = _Sourced(value, f"{path}: {name}")
    return found


def _from_env(environ: Mapping[str, str]) -> dict[str, _Sourced]:
    found = {
        key.field: _Sourced(environ[key.env], key.env)
        for key in KEYS
        if environ.get(key.env, "") != ""
    }
    if "capture_content" not in found and environ.get(CAPTURE_CONTENT_ALIAS, "") != "":
        found["capture_content"] = _Sourced(environ[CAPTURE_CONTENT_ALIAS], CAPTURE_CONTENT_ALIAS)
    return found


def _validate(merged: Mapping[str, _Sourced], problems: list[str]) -> Settings | None:
    try:
        return Settings.model_validate({name: item.value for name, item in merged.items()})
    except ValidationError as exc:
        for error in exc.errors(include_url=False, include_input=False):
            name = str(error["loc"][0]) if error["loc"] else ""
            label = merged[name].label if name in merged else "configuration"
            line = f"{label}: {_plain(error)}{_allowed(name)}"
            if line not in problems:  # one variable read for two settings: said once
                problems.append(line)
        return None


def _protocol_variable(environ: Mapping[str, str], signal: str = "TRACES") -> str:
    """The variable a signal's protocol was read from, as `otlp_protocol` reads them."""
    specific = f"OTEL_EXPORTER_OTLP_{signal}_PROTOCOL"
    return specific if environ.get(specific) else "OTEL_EXPORTER_OTLP_PROTOCOL"


def _check_api_key(merged: Mapping[str, _Sourced], required: bool) -> list[str]:
    """Checked on the raw values, so a missing key is reported with every other problem."""
    key, key_file = merged.get("api_key"), merged.get("api_key_file")
    if key is not None and key_file is not None:
        return [f"{key.label} and {key_file.label}: set one of the two, not both"]
    if key_file is not None:
        return _check_key_file(key_file)
    text = key.value.strip() if key is not None and isinstance(key.value, str) else ""
    if required and not text:
        return [
            "ORCHESTRA_API_KEY: required (or ORCHESTRA_API_KEY_FILE, a file holding it); "
            "make one in Orchestra under Settings -> API Tokens"
        ]
    if key is not None and text and not is_api_key_shaped(text):
        return [f"{key.label}: {KEY_SHAPE}"]
    return []


# A bearer token is one HTTP header token: anything else (a second line, a comment, a
# space) would be refused by the HTTP library, whose error quotes the header value.
_KEY_SHAPE_RE: Final = re.compile(r"[\x21-\x7e]+")
KEY_SHAPE: Final = (
    "the API key must be one token of visible ASCII characters (no spaces, no second "
    "line, no comments); the value is not shown here"
)


def is_api_key_shaped(key: str) -> bool:
    return _KEY_SHAPE_RE.fullmatch(key) is not None


def _check_key_file(key_file: _Sourced) -> list[str]:
    path = Path(str(key_file.value))
    try:
        content = path.read_text(encoding="utf-8").strip()
        if not content:
            return [f"{key_file.label}: the file {path} is empty"]
        if not is_api_key_shaped(content):
            return [f"{key_file.label}: the file {path} does not hold a key: {KEY_SHAPE}"]
    except OSError as exc:
        # Echo the value only when its folder exists: pasting the key itself into
        # ORCHESTRA_API_KEY_FILE is a common slip, and the error must not repeat it.
        shown = f" {path}" if os.sep in str(path) and path.parent.is_dir() else ""
        return [f"{key_file.label}: cannot read the file{shown} ({exc.strerror or 'error'})"]
    except UnicodeDecodeError:
        return [f"{key_file.label}: {path} is not text"]
    return []


def _check_schedule(merged: Mapping[str, _Sourced]) -> list[str]:
    """ORCHESTRA_POLL_INTERVAL_MIN <= ORCHESTRA_POLL_INTERVAL <= ORCHESTRA_POLL_INTERVAL_MAX,
    on the values as written (those that read as seconds at all: the others are reported
    by validation), so that an order mistake is reported with every other problem."""
    interval = _seconds_as_written(merged.get("poll_interval"))
    if "poll_interval" not in merged:
        interval = Settings.model_fields["poll_interval"].default
        interval_text = f"the poll interval (default {interval:g})"
    elif interval is None:
        return []
    else:
        interval_text = f"{merged['poll_interval'].label} ({interval:g})"
    found = []
    low = _seconds_as_written(merged.get("poll_interval_min"))
    if low is not None and low > interval:
        found.append(
            f"{merged['poll_interval_min'].label}: {low:g} is longer than {interval_text}; "
            "it is the pace while a run is in flight, at most the interval"
        )
    high = _seconds_as_written(merged.get("poll_interval_max"))
    if high is not None and high < interval:
        found.append(
            f"{merged['poll_interval_max'].label}: {high:g} is shorter than {interval_text}; "
            "it caps the idle back-off, at least the interval (equal to it: no back-off)"
        )
    return found


def _seconds_as_written(item: _Sourced | None) -> float | None:
    """A positive finite number of seconds, or None (unset, or not a valid value)."""
    if item is None or isinstance(item.value, bool):
        return None
    if not isinstance(item.value, (int, float, str)):
        return None
    try:
        value = float(item.value)
    except ValueError:
        return None
    return value if 0 < value < float("inf") else None


def _check_transport(settings: Settings, merged: Mapping[str, _Sourced]) -> list[str]:
    """http:// sends the bearer key in clear: only to loopback, or when allowed."""
    if settings.allow_insecure_http or _transport_is_private(settings.base_url):
        return []
    label = merged["base_url"].label if "base_url" in merged else "ORCHESTRA_BASE_URL"
    return [
        f"{label}: http:// to {_host(settings.base_url)} would send the API key in clear; "
        "use https://, or set ORCHESTRA_ALLOW_INSECURE_HTTP=true if the network is yours alone"
    ]


def _transport_is_private(url: str) -> bool:
    """https://, or http:// to this machine."""
    if not url.lower().startswith("http://"):
        return True
    host = _host(url)
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _host(url: str) -> str:
    try:
        return urlsplit(url).hostname or ""
    except ValueError:
        return ""


def redact_url(url: str) -> str:
    """`url` with any `user:password@` replaced by `***@`."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return url.rsplit("@", 1)[-1] if "@" in url else url
    if "@" not in parts.netloc:
        return url
    return urlunsplit(parts._replace(netloc="***@" + parts.netloc.rsplit("@", 1)[1]))


def url_credentials(url: str) -> list[str]:
    """The user info of `url` (and its password), as written and percent-decoded."""
    try:
        netloc = urlsplit(url).netloc
    except ValueError:
        return []
    if "@" not in netloc:
        return []
    userinfo = netloc.rsplit("@", 1)[0]
    password = userinfo.partition(":")[2]
    found = {userinfo, unquote(userinfo)} | ({password, unquote(password)} if password else set())
    return sorted(found, key=len, reverse=True)


def _key_file_exposure(path: Path) -> list[str]:
    """Others than the daemon can read the key file: a warning, not an error.

    Group read is how a Kubernetes secret (root:fsGroup, 0440) reaches a non-root pod;
    it is only surplus when the daemon owns the file itself.
    """
    try:
        info = path.stat()
    except OSError:
        return []
    mode = stat.S_IMODE(info.st_mode)
    others = bool(mode & stat.S_IROTH)
    group = bool(mode & stat.S_IRGRP) and info.st_uid == os.geteuid()
    if not (others or group):
        return []
    who = "everyone" if others else "its group"
    return [
        f"ORCHESTRA_API_KEY_FILE: {path} is readable by {who} (mode {mode:04o}); "
        f"chmod 600 it (or 400)"
    ]


def _plain(error: Any) -> str:
    message = str(error["msg"])
    for prefix in ("Value error, ", "Assertion failed, "):
        message = message.removeprefix(prefix)
    return message


def _allowed(name: str) -> str:
    key = KEYS_BY_FIELD.get(name)
    return f" ({key.help})" if key is not None else ""
