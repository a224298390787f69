"""Reading and decoding one API answer within bounds.

A broken or hostile API can send any number of bytes, as slowly as it likes, holding any
number of records nested as deep as it likes. The body is streamed up to a byte cap (a
larger one is never held in memory), and a top-level array is decoded one record at a
time up to a record cap, so a flood of tiny records is refused after the cap rather than
after the whole flood was built in memory. The client turns these outcomes into its
errors at its one boundary (exporter/source/transport.py and answers.py).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Final, Literal

import httpx

from exporter.source.models import (
    MAX_NESTING,
    TOO_DEEP,
    DepthChecked,
    may_hold_lone_surrogates,
    nested_deeper_than,
    replace_lone_surrogates,
)

DEFAULT_MAX_RESPONSE_BYTES: Final = 32 * 1024 * 1024
# Records in one answer at most: a run history page holds 100; a run of 10,000 steps is
# the largest the tests exercise. Tiny records cost ~1.3 KB each once decoded.
DEFAULT_MAX_RECORDS: Final = 20_000

_WHITESPACE: Final = re.compile(r"[ \t\n\r]*")
_DECODER: Final = json.JSONDecoder()


class _TooManyRecords(Exception):
    """The answer's top-level array holds more than the record cap."""


Problem = Literal["not_json", "too_many_records", "too_deep"]


@dataclass(frozen=True)
class Decoded:
    """A decoded answer, or why it could not be: a value, not an exception, because an
    exception would keep the whole answer (up to the byte cap) alive for as long as it
    lives, through its traceback's frames or JSONDecodeError.doc."""

    value: object = None
    problem: Problem | None = None
    detail: str = ""  # what the decoder said, for a body that is not JSON


async def read_capped(response: httpx.Response, limit: int) -> bytearray | None:
    """The body (decompressed), or None as soon as it is known to exceed `limit` bytes.

    A Content-Length above the limit is refused before reading anything; a body without
    one (chunked) is read until it passes the limit and no further.
    """
    declared = response.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        return None
    body = bytearray()
    async for chunk in response.aiter_bytes():
        if len(body) + len(chunk) > limit:
            return None
        body += chunk
    return body


async def read_prefix(response: httpx.Response, limit: int) -> bytes:
    """At most the first `limit` bytes: enough of an error page to quote its detail."""
    body = bytearray()
    async for chunk in response.aiter_bytes():
        body += chunk[: limit - len(body)]
        if len(body) >= limit:
            break
    return bytes(body)


def decode_json(raw: bytearray, max_records: int) -> Decoded:
    """JSON as json.loads reads bytes; a top-level array is decoded record by record.

    Consumes `raw`: it is cleared once decoded to text, so the bytes and the records
    built from them are never in memory together.
    """
    try:
        text = raw.decode(json.detect_encoding(raw), "surrogatepass")
    except UnicodeDecodeError as exc:
        return Decoded(problem="not_json", detail=exc.reason)
    finally:
        raw.clear()
    try:
        value = _decode_text(text, max_records)
    except _TooManyRecords:
        return Decoded(problem="too_many_records")
    except RecursionError:
        return Decoded(problem="too_deep")
    except json.JSONDecodeError as exc:
        return Decoded(problem="not_json", detail=f"{exc.msg} at line {exc.lineno}")
    return Decoded(value)


def _decode_text(text: str, max_records: int) -> object:
    start = _skip_whitespace(text, 0)
    if text.startswith("[", start):
        value: object = _decode_array(text, start + 1, max_records)
    else:
        value = _DECODER.decode(text)
    return replace_lone_surrogates(value) if may_hold_lone_surrogates(text) else value


def _decode_array(text: str, position: int, max_records: int) -> DepthChecked:
    """The array opened just before `position`, which must end the document."""
    items = DepthChecked()
    position = _skip_whitespace(text, position)
    if text.startswith("]", position):
        position += 1
    else:
        while True:
            if len(items) >= max_records:
                raise _TooManyRecords(max_records)
            item, end = _DECODER.raw_decode(text, position)
            items.append(_within_depth(item, text, position, end))
            position = end
            position = _skip_whitespace(text, position)
            if text.startswith(",", position):
                position = _skip_whitespace(text, position + 1)
            elif text.startswith("]", position):
                position += 1
                break
            else:
                raise json.JSONDecodeError("expected ',' or ']'", text, position)
    if _skip_whitespace(text, position) != len(text):
        raise json.JSONDecodeError("extra data", text, position)
    return items


def _within_depth(item: object, text: str, start: int, end: int) -> object:
    """The item, or TOO_DEEP. A record whose text opens no more than MAX_NESTING
    brackets cannot nest deeper (counted in C; brackets inside strings only make the
    count larger), so nearly every record skips the walk through its values."""
    brackets = text.count("{", start, end) + text.count("[", start, end)
    if brackets > MAX_NESTING and nested_deeper_than(item, MAX_NESTING):
        return TOO_DEEP
    return item


def _skip_whitespace(text: str, position: int) -> int:
    return _WHITESPACE.match(text, position).end()  # type: ignore[union-attr]
