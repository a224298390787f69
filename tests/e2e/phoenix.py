"""Arize Phoenix, a real OTLP trace store, started and read for the end-to-end tests.

Phoenix lives in its own virtualenv (`.ci/install-phoenix`, default `.ci/phoenix-venv`):
it pins its own OpenTelemetry versions, which must not meet the product's. The binary is
`$PHOENIX_BIN` when set, else `.ci/phoenix-venv/bin/phoenix`.

Each server gets free ports on 127.0.0.1 and a temporary working directory (its SQLite
database), so runs never see each other's traces. Its gRPC listener binds every interface
whatever PHOENIX_HOST says, so the tests send OTLP over HTTP to `/v1/traces` only.

Facts about Phoenix's REST API that the readers below rely on (checked on 20.26):

* `GET /v1/projects/<name>/spans?limit=N[&cursor=C]` pages by `next_cursor` (null on the
  last page) and answers 404 until the project's first span is stored.
* Spans are stored asynchronously: `POST /v1/traces` answers before they are queryable.
* `attributes` comes back flat (`{"gen_ai.request.model": ...}`); older versions nested
  dotted names (`{"gen_ai": {"request": {"model": ...}}}`): `flat_attributes` reads both.
* `status_code` is the string `UNSET`, `OK` or `ERROR`; `start_time`/`end_time` are ISO
  8601 strings with microseconds and an offset; `span_kind` is the OpenInference kind
  (LLM, TOOL, CHAIN, ... or UNKNOWN), not the OTLP span kind.
* Trace ids are unique across projects: a trace id stored in one project never shows
  in another, so tests sharing a server must not export the same runs twice.
"""

from __future__ import annotations

import os
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx

from tests.support.ports import free_port

REPO = Path(__file__).resolve().parents[2]
DEFAULT_BINARY = REPO / ".ci" / "phoenix-venv" / "bin" / "phoenix"
# A cold start measured 55-70 s on a 2-core machine (importing Phoenix alone takes ~25 s,
# its database migrations ~5 s); the default leaves room for a busy CI machine.
START_TIMEOUT = float(os.environ.get("PHOENIX_START_TIMEOUT", "150"))
STOP_GRACE = 15.0

Span = dict[str, Any]


def phoenix_binary() -> Path:
    """Where the Phoenix executable is expected: $PHOENIX_BIN, else the CI virtualenv."""
    configured = os.environ.get("PHOENIX_BIN")
    return Path(configured) if configured else DEFAULT_BINARY


def phoenix_installed(binary: Path) -> bool:
    return binary.is_file() and os.access(binary, os.X_OK)


@dataclass
class Phoenix:
    process: subprocess.Popen[bytes]
    http_port: int
    grpc_port: int
    working_dir: Path
    log_path: Path
    started_in: float = 0.0
    _client: httpx.Client = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self._client = httpx.Client(base_url=self.base_url, timeout=30.0)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    def otlp_env(self, project: str) -> dict[str, str]:
        """The OTEL_* variables that send a program's traces to `project` over HTTP."""
        return {
            "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf",
            "OTEL_EXPORTER_OTLP_ENDPOINT": self.base_url,
            "OTEL_RESOURCE_ATTRIBUTES": f"openinference.project.name={project}",
            # Phoenix stores traces only: no metrics push, no failure logs (README).
            "OTEL_METRICS_EXPORTER": "none",
            "OTEL_LOGS_EXPORTER": "none",
        }

    def spans(self, project: str, *, page_size: int = 100) -> list[Span]:
        """Every span of `project`, following `next_cursor`; [] while it does not exist."""
        found: list[Span] = []
        params: dict[str, str | int] = {"limit": page_size}
        for _ in range(10_000):  # a bound, far above any test's span count
            response = self._client.get(f"/v1/projects/{project}/spans", params=params)
            if response.status_code == 404 and not found:
                return []
            response.raise_for_status()
            body = response.json()
            found.extend(body["data"])
            cursor = body.get("next_cursor")
            if not cursor:
                return found
            params["cursor"] = cursor
        raise AssertionError(f"Phoenix kept paging spans of {project} past 10,000 pages")

    def wait_for_spans(
        self, project: str, count: int, *, timeout: float = 60.0, page_size: int = 100
    ) -> list[Span]:
        """Spans of `project` once at least `count` are stored (Phoenix stores them late)."""
        deadline = time.monotonic() + timeout
        spans: list[Span] = []
        while time.monotonic() < deadline:
            spans = self.spans(project, page_size=page_size)
            if len(spans) >= count:
                return spans
            self.check_alive()
            time.sleep(0.5)
        raise AssertionError(
            f"Phoenix stored {len(spans)} spans of project {project} within {timeout:.0f}s, "
            f"expected {count}"
        )

    def check_alive(self) -> None:
        if self.process.poll() is not None:
            raise AssertionError(
                f"Phoenix exited with code {self.process.returncode}:\n{self.log_tail()}"
            )

    def log_tail(self, lines: int = 40) -> str:
        try:
            text = self.log_path.read_text(encoding="utf-8", errors="replace")
        except OSError:
            return "(no log)"
        return "\n".join(text.splitlines()[-lines:])

    def close(self) -> None:
        self._client.close()


def start_phoenix(binary: Path, working_dir: Path, *, timeout: float = START_TIMEOUT) -> Phoenix:
    """Start `phoenix serve` on free loopback ports and return once its HTTP API answers."""
    http_port = free_port()
    grpc_port = free_port("")  # Phoenix binds gRPC on every interface: pick one free there
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PHOENIX_", "OTEL_"))}
    env.update(
        {
            "PHOENIX_WORKING_DIR": str(working_dir),
            "PHOENIX_HOST": "127.0.0.1",
            "PHOENIX_PORT": str(http_port),
            "PHOENIX_GRPC_PORT": str(grpc_port),
            "PHOENIX_TELEMETRY_ENABLED": "false",
            # Its assistant's tools are of no use to a test and need the network.
            "PHOENIX_AGENTS_DISABLE_WEB_ACCESS": "true",
            "PHOENIX_AGENTS_DISABLE_BASH": "true",
            "PHOENIX_AGENTS_DISABLE_GITHUB": "true",
        }
    )
    log_path = working_dir / "phoenix.log"
    started = time.monotonic()
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [str(binary), "serve"],
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=working_dir,
            start_new_session=True,  # its own process group: stop_phoenix ends all of it
        )
    phoenix = Phoenix(process, http_port, grpc_port, working_dir, log_path)
    try:
        _wait_ready(phoenix, started + timeout)
    except BaseException:
        stop_phoenix(phoenix)
        raise
    phoenix.started_in = time.monotonic() - started
    return phoenix


def _wait_ready(phoenix: Phoenix, deadline: float) -> None:
    url = f"{phoenix.base_url}/v1/projects"
    while time.monotonic() < deadline:
        phoenix.check_alive()
        try:
            if httpx.get(url, timeout=2.0).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    raise AssertionError(
        f"Phoenix did not answer on {url} within {START_TIMEOUT:.0f}s "
        f"(PHOENIX_START_TIMEOUT):\n{phoenix.log_tail()}"
    )


def stop_phoenix(phoenix: Phoenix, grace: float = STOP_GRACE) -> None:
    """SIGTERM to Phoenix's process group, SIGKILL if it is still there after `grace`."""
    phoenix.close()
    process = phoenix.process
    if process.poll() is None:
        _signal_group(process, signal.SIGTERM)
        try:
            process.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            _signal_group(process, signal.SIGKILL)
            process.wait(timeout=grace)
    # Children left behind by a process that already exited (none are expected).
    _signal_group(process, signal.SIGKILL)


def _signal_group(process: subprocess.Popen[bytes], signum: int) -> None:
    with suppress(ProcessLookupError):
        os.killpg(process.pid, signum)  # the group start_new_session made for this process


@contextmanager
def running_phoenix(binary: Path, *, timeout: float = START_TIMEOUT) -> Iterator[Phoenix]:
    with tempfile.TemporaryDirectory(prefix="phoenix-e2e-") as tmp:
        phoenix = start_phoenix(binary, Path(tmp), timeout=timeout)
        try:
            yield phoenix
        finally:
            stop_phoenix(phoenix)


# --- reading what Phoenix returns ---------------------------------------------------------


def flat_attributes(attributes: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """Dotted names -> values, whether Phoenix returned them flat or nested by dots.

    Lists stay values (OTLP array attributes such as gen_ai.response.finish_reasons).
    """
    flat: dict[str, Any] = {}
    for key, value in attributes.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            flat.update(flat_attributes(value, f"{name}."))
        else:
            flat[name] = value
    return flat


def parse_time(text: str) -> datetime:
    """An ISO 8601 timestamp from Phoenix or the Orchestra API, as an aware datetime."""
    return datetime.fromisoformat(text.replace("Z", "+00:00"))
