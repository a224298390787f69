"""The one wrapper around a real process of ours: `orchestra-otel run` (or once, demo, any
command) in a subprocess, observed from outside the way an operator would.

    with Daemon(orchestra_otel("run"), env) as daemon:     # or world.daemon(...)
        daemon.wait_for_stderr(r"poll:")                    # its log, as it comes
        daemon.metric("orchestra_otel_polls_total")         # /metrics, parsed
        daemon.readyz()                                     # (503, {"ready": False, ...})
        code = daemon.stop()                                # SIGTERM, then its exit code

* Output: stdout and stderr are read line by line by two threads as they come (a pipe
  nobody reads would fill up during a long outage and block the daemon on a log write),
  each line kept with its time.monotonic() arrival time.
* HTTP: the daemon announces `metrics at http://HOST:PORT/metrics` on stderr; with
  `ORCHESTRA_HTTP_ADDR=127.0.0.1:0` the OS picks the port and that line says which, so
  tests never guess ports and can run side by side.
* Ending: `stop()` (SIGTERM, as systemd or Kubernetes would), `terminate()` (the same,
  timed), `kill()` (SIGKILL: no flush, like an OOM kill). Leaving the `with` block
  SIGKILLs whatever still runs.

`run_command()` is the one way to run a command to completion (`once`, `check`, ...).
"""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import IO, Any, TypeVar

from tests.support.metrics import PROMETHEUS_TEXT, Scrape, parse

REPO = Path(__file__).resolve().parents[2]
ANNOUNCED = re.compile(r"metrics at (http://[^/\s]+)/metrics")
STARTUP_TIMEOUT_S = 60.0  # imports alone take seconds on a busy 2-core machine

_T = TypeVar("_T")
Line = tuple[float, str]  # (time.monotonic() when read, the line without its newline)


def orchestra_otel(*args: str) -> list[str]:
    """argv of the real command line, from this checkout (`python -m exporter ...`)."""
    return [sys.executable, "-m", "exporter", *args]


def run_command(
    argv: Sequence[str],
    env: Mapping[str, str] | None = None,
    *,
    timeout: float = 90,
    cwd: Path | None = None,
) -> subprocess.CompletedProcess[str]:
    """Run a command to completion and capture its output (it never raises on exit codes)."""
    return subprocess.run(
        [str(arg) for arg in argv],
        env=None if env is None else dict(env),
        cwd=cwd,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def wait_for(
    condition: Callable[[], _T],
    timeout: float,
    message: str | Callable[[], str],
    step: float = 0.1,
) -> _T:
    """Poll `condition` until it returns something truthy, and return that value.

    Raises AssertionError with `message` (a text, or a function making one at that
    moment) when `timeout` seconds pass first.
    """
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            text = message() if callable(message) else message
            raise AssertionError(f"timed out after {timeout:.0f}s: {text}")
        time.sleep(step)


class Daemon:
    """A subprocess whose output is collected as it comes, with HTTP and /proc readings."""

    def __init__(
        self,
        argv: Sequence[str],
        env: Mapping[str, str] | None = None,
        *,
        cwd: Path | None = None,
        stdin: bool = False,
    ) -> None:
        self.argv = [str(arg) for arg in argv]
        self._cond = threading.Condition()
        self.out: list[Line] = []
        self.err: list[Line] = []
        self._http_base: str | None = None
        self.started_wall = time.time()
        self.started = time.monotonic()
        self.process = subprocess.Popen(
            self.argv,
            env=None if env is None else dict(env),
            cwd=cwd,
            stdin=subprocess.PIPE if stdin else subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            errors="replace",
            bufsize=1,
        )
        self._readers = [
            threading.Thread(target=self._read, args=(stream, sink), daemon=True)
            for stream, sink in ((self.process.stdout, self.out), (self.process.stderr, self.err))
        ]
        for reader in self._readers:
            reader.start()

    # --- output ------------------------------------------------------------------------

    def _read(self, stream: IO[str], sink: list[Line]) -> None:
        for line in stream:
            with self._cond:
                sink.append((time.monotonic(), line.rstrip("\n")))
                self._cond.notify_all()

    def _text(self, sink: list[Line]) -> str:
        with self._cond:
            return "".join(line + "\n" for _, line in sink)

    @property
    def stdout(self) -> str:
        return self._text(self.out)

    @property
    def stderr(self) -> str:
        return self._text(self.err)

    def tail(self, lines: int = 40) -> str:
        """The last lines of stderr, for assertion messages."""
        with self._cond:
            return "\n".join(line for _, line in self.err[-lines:])

    def lines(self, needle: str, *, stream: str = "err") -> list[Line]:
        """Lines of stderr (or stdout, `stream="out"`) containing `needle`, with their times."""
        with self._cond:
            source = self.err if stream == "err" else self.out
            return [item for item in source if needle in item[1]]

    def wait_lines(
        self, needle: str, count: int, timeout: float, *, stream: str = "err"
    ) -> list[Line]:
        """Wait until `count` lines contain `needle`; raises if the process exits first."""

        def enough() -> list[Line] | None:
            found = self.lines(needle, stream=stream)
            return found if len(found) >= count else None

        return self._await(enough, timeout, f"{count} x {needle!r}")

    def wait_for_stderr(self, pattern: str, timeout: float = 15) -> re.Match[str]:
        """The first match of the regular expression `pattern` on stderr, once it appears."""
        return self._await(lambda: re.search(pattern, self.stderr), timeout, repr(pattern))

    def _await(self, find: Callable[[], _T | None], timeout: float, what: str) -> _T:
        """Wait, woken by every new line, until `find()` finds something; fail when the
        process exits or `timeout` passes first."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                found = find()
                if found:
                    return found
                if self.process.poll() is not None:
                    self._cond.wait(0.2)  # its last lines may still be on the way
                    if found := find():
                        return found
                    raise AssertionError(f"{self.argv} exited before {what}:\n{self.tail()}")
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(f"{what} not seen in {timeout}s:\n{self.tail()}")
                self._cond.wait(min(left, 0.5))

    def send(self, line: str) -> None:
        """Write a line to its stdin (started with `stdin=True`)."""
        assert self.process.stdin is not None, "started without stdin=True"
        self.process.stdin.write(line + "\n")
        self.process.stdin.flush()

    # --- HTTP: /metrics, /healthz, /readyz ---------------------------------------------

    @property
    def http_base(self) -> str:
        """http://host:port of /metrics and the probes, from the daemon's start-up line."""
        if self._http_base is None:
            match = self.wait_for_stderr(ANNOUNCED.pattern, timeout=STARTUP_TIMEOUT_S)
            self._http_base = match.group(1)
        return self._http_base

    @property
    def port(self) -> int:
        """The port of /metrics and the probes (the one the OS gave it, with port 0)."""
        port = urllib.parse.urlsplit(self.http_base).port
        assert port is not None, self.http_base
        return port

    def http_up(self) -> bool:
        """/healthz answers 200 now (False, without waiting, before the server is up)."""
        if self._http_base is None:
            match = ANNOUNCED.search(self.stderr)
            if match is None:
                return False
            self._http_base = match.group(1)
        try:
            return self.get("/healthz", timeout=1.0)[0] == 200
        except OSError:
            return False

    def get(self, path: str, *, accept: str | None = None, timeout: float = 5.0) -> tuple[int, str]:
        """(status, body) of GET `path`; error statuses are answers too, not exceptions."""
        headers = {"Accept": accept} if accept else {}
        request = urllib.request.Request(self.http_base + path, headers=headers)
        try:
            with urllib.request.urlopen(request, timeout=timeout) as response:
                return int(response.status), response.read().decode()
        except urllib.error.HTTPError as error:
            return int(error.code), error.read().decode()

    def scrape(self, accept: str = PROMETHEUS_TEXT) -> str:
        """The text of /metrics in the format `accept` asks for."""
        status, text = self.get("/metrics", accept=accept)
        assert status == 200, f"/metrics answered {status}: {text[:500]}"
        return text

    def metrics(self, accept: str = PROMETHEUS_TEXT) -> Scrape:
        return parse(self.scrape(accept))

    def metric(self, name: str, **labels: str) -> float:
        """Sum of the samples called `name` whose labels include `labels` (0 when none)."""
        return self.metrics().value(name, **labels)

    def polls(self) -> int:
        return int(self.metric("orchestra_otel_polls_total"))

    def readyz(self) -> tuple[int, dict[str, Any]]:
        status, body = self.get("/readyz")
        return status, json.loads(body)

    def ready(self) -> bool:
        """/readyz answers 200 (False too while the HTTP server is not up yet)."""
        if not self.http_up():
            return False
        return self.readyz()[0] == 200

    # --- the process -------------------------------------------------------------------

    @property
    def pid(self) -> int:
        return self.process.pid

    @property
    def alive(self) -> bool:
        return self.process.poll() is None

    @property
    def returncode(self) -> int | None:
        return self.process.returncode

    def _status(self, field: str) -> int:
        """A number from /proc/PID/status (the memory figures are in kB)."""
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            if line.startswith(f"{field}:"):
                return int(line.split()[1])
        raise AssertionError(f"no {field} for pid {self.pid}")

    def rss_kb(self) -> int:
        """Resident set size now (VmRSS), in kB."""
        return self._status("VmRSS")

    def peak_rss_kb(self) -> int:
        """The highest resident set size so far (VmHWM), in kB: a spike between two
        readings of rss_kb() is not missed."""
        return self._status("VmHWM")

    def threads(self) -> int:
        """How many threads the process has now."""
        return self._status("Threads")

    def terminate(self, timeout: float = 40.0) -> tuple[int, float]:
        """SIGTERM; returns (exit code, seconds it took to exit). SIGKILL after `timeout`."""
        started = time.monotonic()
        if self.alive:
            self.process.send_signal(signal.SIGTERM)
        try:
            code = self.process.wait(timeout=timeout)
        finally:
            self.close()
        return code, time.monotonic() - started

    def wait(self, timeout: float) -> int:
        """Wait for it to end on its own (`once`, `demo --duration`); its exit code, once
        its last output was read. SIGKILLed, and TimeoutExpired raised, after `timeout`."""
        try:
            return self.process.wait(timeout=timeout)
        finally:
            self.close()

    def stop(self, timeout: float = 30.0) -> int:
        """SIGTERM, then its exit code once it exited and its last output was read."""
        return self.terminate(timeout)[0]

    def kill(self) -> None:
        """SIGKILL: no flush, no cleanup, like an OOM kill or a power cut of the process."""
        self.close()

    def close(self) -> None:
        """SIGKILL whatever still runs; wait for it and for the last of its output."""
        if self.alive:
            self.process.kill()
        self.process.wait(timeout=10)
        for reader in self._readers:
            reader.join(timeout=5)
        if self.process.stdin is not None:
            self.process.stdin.close()

    def __enter__(self) -> Daemon:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
