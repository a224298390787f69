"""The emulator's HTTP messages: a parsed request, an answer, and the JSON helpers of both.

Plain values shared by the parts of the emulator: the transport (transport.py) builds a
`Request` from the wire, the emulated API (api.py) and the control endpoints (control.py)
answer it with a `Response`, and an `HttpError` raised by either becomes an error answer
in FastAPI's shape (`{"detail": ...}`).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from email.message import Message
from typing import Any


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


class HttpError(Exception):
    """Raised inside an endpoint: answer `status` with `detail` and stop handling."""

    def __init__(self, status: int, detail: str) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail


def json_response(status: int, payload: Any, headers: dict[str, str] | None = None) -> Response:
    return Response(status, json.dumps(payload).encode(), headers=headers or {})


def error_response(status: int, detail: str, headers: dict[str, str] | None = None) -> Response:
    # FastAPI's error shape: a guess, the docs show no error body (docs/orchestra-api.md, "Basics").
    return json_response(status, {"detail": detail}, headers)


def int_param(query: dict[str, list[str]], name: str, default: int) -> int:
    """The last value of query parameter `name` as an integer; HttpError 400 if it is none."""
    values = query.get(name)
    if not values:
        return default
    try:
        return int(values[-1])
    except ValueError as error:
        raise HttpError(400, f"{name} must be an integer") from error


def json_value(body: bytes) -> Any:
    try:
        return json.loads(body or b"null")
    except ValueError as error:
        raise HttpError(400, "the request body is not valid JSON") from error


def json_object(body: bytes) -> dict[str, Any]:
    """The request body as a JSON object; an empty body is `{}`."""
    value = json_value(body) if body.strip() else {}
    if not isinstance(value, dict):
        raise HttpError(400, "the request body must be a JSON object")
    return value
