"""A real Prometheus, a real Alertmanager and a webhook receiver, for tests/e2e/test_alerting.py.

The programs are Debian's (`.ci/install-prometheus` puts `prometheus` and `alertmanager` in
.ci/bin): Prometheus 2.42 and Alertmanager 0.25. Every process gets free loopback ports and
its own folder under the test's tmp_path, writes its log there, and is stopped by its
process id. Facts the helpers rely on (measured, see ../shared/FIELD-NOTES.md):

* Debian's Alertmanager reads its notification templates from the fixed path
  /usr/share/prometheus/alertmanager/ and never becomes ready without them; the install
  script copies them there when it runs as root.
* `--cluster.listen-address=` (empty) starts Alertmanager without gossip.
* Prometheus sends a firing alert to Alertmanager again only after
  `--rules.alert.resend-delay` (default 1m): the tests set 1s so that changed annotations
  reach Alertmanager at once.
"""

from __future__ import annotations

import copy
import json
import re
import signal
import socket
import subprocess
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import closing, contextmanager
from dataclasses import dataclass, field
from fractions import Fraction
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import yaml

from tests.deploy.promtool import REPO

RULES = REPO / "deploy" / "prometheus" / "orchestra-otel-rules.yml"
ALERTMANAGER_CONFIG = REPO / "deploy" / "alertmanager" / "alertmanager.yml"
START_TIMEOUT = 60.0
STOP_GRACE = 10.0

JsonDict = dict[str, Any]


def free_port() -> int:
    with closing(socket.socket(socket.AF_INET, socket.SOCK_STREAM)) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def wait_for(condition: Callable[[], Any], timeout: float, what: str, *, every: float = 0.2) -> Any:
    """The first truthy value of `condition()`, polled until `timeout` seconds passed."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(every)


def get_json(url: str, timeout: float = 5.0) -> Any:
    with urllib.request.urlopen(url, timeout=timeout) as response:
        return json.loads(response.read().decode())


def answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2.0) as response:
            return bool(response.status == 200)
    except (urllib.error.URLError, OSError):
        return False


# --------------------------------------------------------------------------- processes


@dataclass
class Program:
    """A started server process, its port and its log."""

    name: str
    process: subprocess.Popen[bytes]
    port: int
    log_path: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def check_alive(self) -> None:
        if self.process.poll() is not None:
            raise AssertionError(
                f"{self.name} exited with code {self.process.returncode}:\n{self.log_tail()}"
            )

    def log_tail(self, lines: int = 30) -> str:
        try:
            text = self.log_path.read_text(encoding="utf-8", errors="replace")
        except OSError:
            return "(no log)"
        return "\n".join(text.splitlines()[-lines:])

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=STOP_GRACE)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=STOP_GRACE)


def start_program(name: str, argv: Sequence[str], folder: Path, port: int) -> Program:
    """Start `argv`, logging to folder/<name>.log, and wait until /-/ready answers 200."""
    folder.mkdir(parents=True, exist_ok=True)
    log_path = folder / f"{name}.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            list(argv), stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, cwd=folder
        )
    program = Program(name, process, port, log_path)
    try:

        def ready() -> bool:
            program.check_alive()
            return answers(f"{program.url}/-/ready")

        wait_for(ready, START_TIMEOUT, f"{name} to become ready", every=0.1)
    except BaseException:
        program.stop()
        raise
    return program


@dataclass
class Prometheus:
    program: Program
    config_path: Path

    def reload(self, config: JsonDict) -> None:
        """Write a new configuration, SIGHUP, and wait until its rule groups are loaded."""
        write_yaml(self.config_path, config)
        self.program.process.send_signal(signal.SIGHUP)
        wanted = {
            group["name"]
            for name in config.get("rule_files", [])
            for group in yaml.safe_load((self.config_path.parent / name).read_text())["groups"]
        }

        def loaded() -> bool:
            self.program.check_alive()
            body = get_json(f"{self.program.url}/api/v1/rules")
            return {group["name"] for group in body["data"]["groups"]} == wanted

        wait_for(loaded, 30, "Prometheus to load the new rule files")

    def query(self, expr: str) -> list[JsonDict]:
        url = f"{self.program.url}/api/v1/query?" + urllib.parse.urlencode({"query": expr})
        body = get_json(url)
        assert body["status"] == "success", body
        result: list[JsonDict] = body["data"]["result"]
        return result

    def alerts(self) -> list[JsonDict]:
        """Pending and firing alerts, with labels, annotations, state and value."""
        body = get_json(f"{self.program.url}/api/v1/alerts")
        alerts: list[JsonDict] = body["data"]["alerts"]
        return alerts

    def rule_errors(self) -> list[str]:
        """Rules whose last evaluation failed (a wrong expression fails only at run time)."""
        body = get_json(f"{self.program.url}/api/v1/rules")
        return [
            f"{rule['name']}: {rule['lastError']}"
            for group in body["data"]["groups"]
            for rule in group["rules"]
            if rule.get("lastError")
        ]


def write_yaml(path: Path, document: JsonDict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(document, sort_keys=False), encoding="utf-8")


def start_server(
    name: str, binary: Path, folder: Path, config: JsonDict, flags: Sequence[str]
) -> tuple[Program, Path]:
    """Write `config` to folder/<name>.yml and start `binary` with it on a free port."""
    port = free_port()
    config_path = folder / f"{name}.yml"
    write_yaml(config_path, config)
    argv = [
        str(binary),
        f"--config.file={config_path}",
        f"--web.listen-address=127.0.0.1:{port}",
        "--log.level=warn",
        *flags,
    ]
    return start_program(name, argv, folder, port), config_path


def start_prometheus(binary: Path, folder: Path, config: JsonDict) -> Prometheus:
    flags = [f"--storage.tsdb.path={folder / 'data'}", "--rules.alert.resend-delay=1s"]
    return Prometheus(*start_server("prometheus", binary, folder, config, flags))


@dataclass
class Alertmanager:
    program: Program

    def alerts(self) -> list[JsonDict]:
        """Active alerts (API v2): labels, annotations, status.state."""
        alerts: list[JsonDict] = get_json(f"{self.program.url}/api/v2/alerts?active=true")
        return alerts


def start_alertmanager(binary: Path, folder: Path, config: JsonDict) -> Alertmanager:
    # An empty cluster address: no gossip, no port of its own.
    flags = [f"--storage.path={folder / 'data'}", "--cluster.listen-address="]
    program, _ = start_server("alertmanager", binary, folder, config, flags)
    return Alertmanager(program)


# --------------------------------------------------------------------------- the webhook


@dataclass(frozen=True)
class Notification:
    """One alert of one webhook request, as Alertmanager sent it."""

    received: float  # time.time() on arrival
    status: str  # firing | resolved
    labels: Mapping[str, str]
    annotations: Mapping[str, str]

    @property
    def alertname(self) -> str:
        return self.labels.get("alertname", "")


@dataclass
class Webhook:
    """An HTTP server that records every alert Alertmanager posts to it."""

    server: ThreadingHTTPServer
    notifications: list[Notification] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/alerts"

    def received(self) -> list[Notification]:
        with self.lock:
            return list(self.notifications)

    def first(self, status: str, **labels: str) -> Notification | None:
        for notification in self.received():
            if notification.status == status and all(
                notification.labels.get(name) == value for name, value in labels.items()
            ):
                return notification
        return None

    def record(self, payload: JsonDict) -> None:
        now = time.time()
        with self.lock:
            for alert in payload.get("alerts", []):
                self.notifications.append(
                    Notification(now, alert["status"], alert["labels"], alert["annotations"])
                )


@contextmanager
def running_webhook() -> Iterator[Webhook]:
    holder: list[Webhook] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            holder[0].record(json.loads(self.rfile.read(length) or b"{}"))
            self.send_response(200)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    holder.append(Webhook(server))
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05})
    thread.start()
    try:
        yield holder[0]
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


# --------------------------------------------------------------------------- configs


def alertmanager_config(webhook_url: str) -> JsonDict:
    """deploy/alertmanager/alertmanager.yml with every webhook sent to `webhook_url` and
    the root route's timers shortened (group_wait 0s, group_interval 1s): the routing
    tree and grouping stay the shipped ones."""
    config: JsonDict = yaml.safe_load(ALERTMANAGER_CONFIG.read_text(encoding="utf-8"))
    for receiver in config["receivers"]:
        for webhook in receiver.get("webhook_configs", []):
            webhook["url"] = webhook_url
    config["route"].update({"group_wait": "0s", "group_interval": "1s", "repeat_interval": "1h"})
    return config


# --------------------------------------------------------------------------- durations

_UNITS = {"ms": Fraction(1, 1000), "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
_DURATION = r"(?:\d+(?:ms|s|m|h|d|w))+"
_RANGE = re.compile(rf"\[({_DURATION})(?=[\]:])")
_OFFSET = re.compile(rf"\boffset\s+({_DURATION})")
_PART = re.compile(r"(\d+)(ms|s|m|h|d|w)")


def duration_seconds(text: str) -> Fraction:
    if not re.fullmatch(_DURATION, text):
        raise ValueError(f"not a Prometheus duration: {text!r}")
    return sum((int(n) * Fraction(_UNITS[unit]) for n, unit in _PART.findall(text)), Fraction(0))


def whole_seconds(seconds: Fraction) -> int:
    if seconds.denominator != 1:
        raise ValueError(f"{seconds} s is not a whole number of seconds")
    return seconds.numerator


def format_duration(seconds: Fraction) -> str:
    """In the largest unit that divides it: 300 -> 5m, 15 -> 15s (1m stays 1m)."""
    whole = whole_seconds(seconds)
    for unit in ("w", "d", "h", "m"):
        size = int(_UNITS[unit])
        if whole and whole % size == 0:
            return f"{whole // size}{unit}"
    return f"{whole}s"


def scaled_rules(
    document: JsonDict, group: str, factor: Fraction, seconds: Sequence[int] = ()
) -> JsonDict:
    """A copy of a rule file in which only the durations of one group are scaled.

    In that group each rule's `for`, every range `[5m]` (and subquery range), every
    `offset 5m`, and every comparison with one of the `seconds` thresholds (`> 300`) is
    multiplied by `factor`; nothing else changes (tests/e2e/test_alerting.py checks it).
    The other groups are left exactly as they are.
    """
    scaled = copy.deepcopy(document)
    matching = [g for g in scaled["groups"] if g["name"] == group]
    if len(matching) != 1:
        raise ValueError(f"no single group named {group!r}")
    for rule in matching[0]["rules"]:
        if "for" in rule:
            rule["for"] = format_duration(duration_seconds(str(rule["for"])) * factor)
        rule["expr"] = scale_expr(rule["expr"], factor, seconds)
    return scaled


def scale_expr(expr: str, factor: Fraction, seconds: Sequence[int] = ()) -> str:
    def duration(match: re.Match[str]) -> str:
        text = match.group(0)
        value = match.group(1)
        scaled = format_duration(duration_seconds(value) * factor)
        return text[: match.start(1) - match.start(0)] + scaled

    expr = _RANGE.sub(duration, expr)
    expr = _OFFSET.sub(duration, expr)
    for threshold in seconds:
        scaled = whole_seconds(threshold * factor)
        expr = re.sub(rf"(?P<op>[<>]=?\s*){threshold}\b(?!\.)", rf"\g<op>{scaled}", expr)
    return expr
