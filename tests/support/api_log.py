"""The emulated Orchestra API seen from a test: its request log, its control API, and the
retry contract the daemon's requests must keep.

The emulator logs every request with its monotonic arrival time (the same clock as the
test process): which requests were retried, how far apart, what was answered.
"""

from __future__ import annotations

import itertools
import json
import urllib.request
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from exporter.emulator import Emulator

# The retry contract of the API client (docs/design.md, "Request budget"): at most
# 4 attempts per request, equal-jitter exponential backoff from 0.5 s (the n-th retry waits
# between half and all of 0.5 * 2**(n-1) s), capped at min(30 s, the poll interval).
MAX_ATTEMPTS = 4
BASE_DELAY = 0.5


def backoff_window(retry: int, cap: float = 30.0) -> tuple[float, float]:
    """The (shortest, longest) wait before retry number `retry` (1-based)."""
    step = min(cap, BASE_DELAY * 2 ** (retry - 1))
    return step / 2, step


@dataclass(frozen=True)
class Arrival:
    """One request as the emulator saw it arrive."""

    at: float  # time.monotonic() on arrival (same clock as the test process)
    wall: float  # time.time() on arrival
    kind: str
    path: str
    status: int | None  # None: still in flight; 0: connection reset without an answer


def arrivals(
    emulator: Emulator, kind: str | None = None, contains: str | None = None
) -> list[Arrival]:
    """API requests in arrival order, optionally only one kind and paths containing text."""
    found = []
    for entry in emulator.stats()["recent"]:
        if kind is not None and entry["kind"] != kind:
            continue
        if contains is not None and contains not in entry["path"]:
            continue
        found.append(
            Arrival(entry["at"], entry["wall"], entry["kind"], entry["path"], entry["status"])
        )
    return found


def gaps(items: list[Arrival]) -> list[float]:
    """Seconds between consecutive arrivals."""
    return [later.at - earlier.at for earlier, later in itertools.pairwise(items)]


def describe(items: Iterable[Arrival], since: float | None = None) -> str:
    """A readable request log for assertion messages."""
    items = list(items)
    origin = since if since is not None else (items[0].at if items else 0.0)
    return "\n".join(
        f"  +{item.at - origin:7.3f}s {item.kind:<14} {item.status!s:<4} {item.path}"
        for item in items
    )


def steps_calls_by_run(emulator: Emulator) -> dict[str, int]:
    """run id -> how many times the steps of that run were asked for."""
    calls: dict[str, int] = {}
    for arrival in arrivals(emulator, kind="steps"):
        run_id = arrival.path.split("?", 1)[0].rstrip("/").split("/")[-2]
        calls[run_id] = calls.get(run_id, 0) + 1
    return calls


def control(
    emulator: Emulator | str, method: str, path: str, body: Any = None, *, timeout: float = 5
) -> Any:
    """Call the emulator's control API over HTTP, like an operator's script would.

    `emulator` is one of ours, or the root URL (http://host:port) of one in another
    process, such as the one `orchestra-otel demo` announces."""
    root_url = emulator if isinstance(emulator, str) else emulator.root_url
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(
        f"{root_url}/_emulator/{path}",
        data=data,
        method=method,
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=timeout) as response:
        return json.loads(response.read() or b"null")
