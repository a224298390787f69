"""Fault injection: rules that make the next matching requests misbehave on purpose.

A rule names an endpoint kind (or `*`), how many requests it hits (or unlimited) and one
action. The server asks the plan before answering; the first rule that matches and still
has hits left is used and loses one hit.

Rules are added over HTTP too (`POST /_emulator/faults` with a rule object, a list, or
`{"rules": [...]}`; `GET` lists them, `DELETE` clears them), so a user can rehearse any
of these failures against a real daemon:

    curl -s localhost:8080/_emulator/faults -d '{"action": "huge", "size": 200000000}'
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields
from email.utils import formatdate
from typing import Any, Literal, cast, get_args

ENDPOINT_KINDS = ("list_workflows", "list_runs", "get_run", "steps", "diagram", "execute")

FaultAction = Literal[
    "status",
    "rate_limit",
    "delay",
    "truncate",
    "reset",
    "html",
    "not_json",
    "wrong_shape",
    # A hostile or badly broken API (what a client must survive without harm):
    "ignore_offset",
    "huge",
    "flood",
    "trickle",
    "deep",
    "control_chars",
]
FAULT_ACTIONS: tuple[str, ...] = get_args(FaultAction)


@dataclass(frozen=True)
class FaultRule:
    """One kind of misbehaviour for the next `times` requests of endpoint `kind`.

    Actions:
      status       answer `status` (500, 502, 503, ...) with a JSON body, or an HTML page
                   when `body_format="html"` (what a proxy in front of the API sends)
      rate_limit   429 with `Retry-After: <retry_after>` as whole seconds, or as an
                   HTTP-date when `retry_after_format="date"`
      delay        wait `delay` seconds, then answer normally (trips client timeouts)
      truncate     promise more bytes in Content-Length than are sent, then close
      reset        close the connection (TCP RST) without answering
      html         200 with an HTML page
      not_json     200 with plain text
      wrong_shape  200 with valid JSON of the wrong shape (an array wrapped in an
                   object, an object wrapped in an array)
    A hostile API (each answer stays valid JSON unless said otherwise):
      ignore_offset  the run history ignores `offset`: every page is the first one, so
                   paging never ends by itself
      huge         the real answer with `size` bytes of whitespace inside it, streamed
                   (chunked, no Content-Length): valid JSON of any size
      flood        `records` more tiny records `{"id": "flood-N"}` after the real ones
                   (an object answer gets them as a `flood` array), streamed (chunked)
      trickle      the real answer, `chunk` bytes at a time, `delay` seconds apart
                   (Content-Length is sent: every read sees progress, the whole is slow)
      deep         the real answer with an array nested `depth` levels deep in its first
                   record (or in the object), e.g. 100000 levels
      control_chars  every free-text string of the answer wrapped in terminal escapes,
                   CR/LF, NUL, BEL, C1 and bidi controls (see HOSTILE_TEXT); the ids
                   the API is addressed by, timestamps and statuses are left alone
      An absurd Retry-After is `rate_limit` with e.g. `retry_after: 999999999`.
    `body` replaces the body of `status`, `html`, `not_json` and `wrong_shape` answers.
    `path_contains` narrows the rule to request paths containing that text.
    """

    action: FaultAction
    kind: str = "*"
    times: int | None = 1  # None: every matching request until cleared
    status: int = 503
    body_format: Literal["json", "html"] = "json"
    body: str | None = None
    retry_after: float = 1.0
    retry_after_format: Literal["seconds", "date"] = "seconds"
    delay: float = 1.0
    path_contains: str | None = None
    size: int = 200_000_000  # huge: bytes of padding
    records: int = 1_500_000  # flood: extra records
    depth: int = 100_000  # deep: nesting levels
    chunk: int = 1  # trickle: bytes per write

    def __post_init__(self) -> None:
        if self.action not in FAULT_ACTIONS:
            raise ValueError(f"action must be one of {', '.join(FAULT_ACTIONS)}")
        if self.kind != "*" and self.kind not in ENDPOINT_KINDS:
            raise ValueError(f"kind must be '*' or one of {', '.join(ENDPOINT_KINDS)}")
        if self.times is not None and self.times < 1:
            raise ValueError("times must be 1 or more, or null for unlimited")
        if not 100 <= self.status <= 599:
            raise ValueError("status must be an HTTP status code")
        if self.body_format not in ("json", "html"):
            raise ValueError("body_format must be 'json' or 'html'")
        if self.retry_after_format not in ("seconds", "date"):
            raise ValueError("retry_after_format must be 'seconds' or 'date'")
        if self.retry_after < 0 or self.delay < 0:
            raise ValueError("retry_after and delay must not be negative")
        if self.size < 0 or self.records < 0 or self.depth < 1 or self.chunk < 1:
            raise ValueError("size and records must not be negative, depth and chunk >= 1")

    def matches(self, kind: str, path: str) -> bool:
        if self.kind != "*" and self.kind != kind:
            return False
        return self.path_contains is None or self.path_contains in path

    def retry_after_header(self, now: float | None = None) -> str:
        """The Retry-After value; a date is rounded up so it never comes early."""
        if self.retry_after_format == "date":
            moment = time.time() if now is None else now
            return formatdate(math.ceil(moment + self.retry_after), usegmt=True)
        return str(math.ceil(self.retry_after))

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> FaultRule:
        """Build a rule from its JSON form; raises ValueError on unknown or bad fields."""
        if not isinstance(data, Mapping):
            raise ValueError("a fault rule must be a JSON object")
        known = {field.name for field in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown fault rule field(s): {', '.join(unknown)}")
        if "action" not in data:
            raise ValueError("a fault rule needs an 'action'")
        try:
            return cls(**cast(dict[str, Any], dict(data)))
        except TypeError as error:
            raise ValueError(str(error)) from error


@dataclass(eq=False)  # identity: `remove` must take this very entry
class _ArmedRule:
    rule: FaultRule
    remaining: int | None  # None: unlimited


class FaultPlan:
    """The active rules, in the order they were added. Thread-safe."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._armed: list[_ArmedRule] = []

    def add(self, rule: FaultRule) -> None:
        with self._lock:
            self._armed.append(_ArmedRule(rule, rule.times))

    def clear(self) -> None:
        with self._lock:
            self._armed.clear()

    def take(self, kind: str, path: str) -> FaultRule | None:
        """The rule for this request, if any; uses up one of its hits."""
        with self._lock:
            for armed in self._armed:
                if armed.rule.matches(kind, path):
                    if armed.remaining is not None:
                        armed.remaining -= 1
                        if armed.remaining == 0:
                            self._armed.remove(armed)
                    return armed.rule
            return None

    def describe(self) -> list[dict[str, Any]]:
        """Each active rule in JSON form with `remaining` hits (null: unlimited)."""
        with self._lock:
            return [{**armed.rule.to_json(), "remaining": armed.remaining} for armed in self._armed]

    def __len__(self) -> int:
        with self._lock:
            return len(self._armed)


def rules_from_json(payload: Any) -> list[FaultRule]:
    """Rules from a control request: one rule object, a list, or `{"rules": [...]}`."""
    if isinstance(payload, Mapping) and "rules" in payload:
        payload = payload["rules"]
    items = payload if isinstance(payload, list) else [payload]
    return [FaultRule.from_json(item) for item in items]
