"""How an answer goes out: whole, truncated, not at all, streamed, trickled or replaced.

`delivery_for` turns the real answer and the fault rule that hits the request (if any)
into a `Delivery`, the instructions the transport (transport.py) follows byte by byte.
Deciding here and writing there keeps the HTTP handler free of fault logic and this
module free of sockets. Used by `Emulator.serve` for every API request.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from http import HTTPStatus

from exporter.emulator import hostile
from exporter.emulator.faults import FaultRule
from exporter.emulator.messages import Request, Response, error_response, json_response

_HTML_PAGE = (
    "<!DOCTYPE html>\n<html><head><title>Sign in - Arcee Orchestra</title></head>"
    "<body><h1>Sign in</h1><p>Your session has expired.</p></body></html>\n"
)
_PLAIN_TEXT = "Orchestra is under maintenance. Please try again later.\n"
_HOSTILE_BODIES = frozenset({"huge", "flood", "trickle", "deep", "control_chars"})


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


def delivery_for(
    fault: FaultRule | None,
    kind: str,
    request: Request,
    answer: Callable[[Request], Response],
    wait: Callable[[float], bool],
) -> Delivery:
    """What to send, and how, for `request` of endpoint `kind` that `fault` (if any) hits.

    `answer(request)` makes the real answer; it is not called when the fault replaces it.
    `wait(seconds)` holds a `delay` fault and says True when the emulator stops meanwhile.
    """
    if fault is None:
        return Delivery(answer(request))
    if fault.action == "ignore_offset":
        without_offset = {k: v for k, v in request.query.items() if k != "offset"}
        return Delivery(answer(dataclasses.replace(request, query=without_offset)))
    if fault.action in _HOSTILE_BODIES:
        return _hostile_delivery(fault, kind, answer(request))
    if fault.action == "reset":
        return Delivery(None)
    if fault.action == "truncate":
        return Delivery(answer(request), truncated=True)
    if fault.action == "delay":
        stopped = wait(fault.delay)
        return Delivery(None if stopped else answer(request))
    if fault.action == "wrong_shape":
        return Delivery(_wrong_shape(answer(request), fault))
    return Delivery(fault_response(fault))


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
