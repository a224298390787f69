"""Bodies of a hostile API: huge, flooded, trickled, deeply nested or full of control codes.

Pure functions of the real answer (JSON bytes) and the fault's parameters, used by the
server for the `huge`, `flood`, `trickle`, `deep` and `control_chars` faults. Large bodies
are generated as they are sent, so the emulator itself never holds them in memory.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any, Final

# Wrapped around every free-text string by `control_chars`: a terminal line erase and a
# carriage return (rewrites what a terminal shows), a newline (forges a log line), NUL,
# BEL, C1 NEL, a bidi override and isolate, and a zero-width space (Unicode Cf).
HOSTILE_PREFIX: Final = "\x1b[2K\r"
HOSTILE_SUFFIX: Final = "\n\x00\x07\x85\u202e\u2066\u200b"
HOSTILE_TEXT: Final = (HOSTILE_PREFIX, HOSTILE_SUFFIX)

# Left alone by `control_chars` in every record: what the API is addressed by and what a
# client needs to understand a record at all (times and statuses).
_ADDRESSES: Final = {"list_workflows": "workflow_id", "list_runs": "id", "get_run": "id"}
_STRUCTURAL: Final = frozenset({"status", "start_time", "end_time", "elapsed_time"})

_CHUNK: Final = 64 * 1024
_DEEP_MARK: Final = "__emulator_deep_value__"


def padded_chunks(body: bytes, size: int) -> Iterator[bytes]:
    """`body` with `size` bytes of whitespace before its last byte: still the same JSON."""
    yield body[:-1]
    full, rest = divmod(size, _CHUNK)
    block = b" " * _CHUNK
    for _ in range(full):
        yield block
    if rest:
        yield b" " * rest
    yield body[-1:]


def flood_chunks(body: bytes, records: int) -> Iterator[bytes]:
    """`records` tiny records after the real ones (in a `flood` array for an object)."""
    stripped = body.rstrip()
    is_object = stripped.endswith(b"}")
    yield stripped[:-1]
    has_items = stripped[1:-1].strip() != b""
    if is_object:
        yield b', "flood": [' if has_items else b'"flood": ['
    elif has_items:
        yield b","
    batch = 4096
    for first in range(0, records, batch):
        numbers = range(first, min(first + batch, records))
        text = ",".join(f'{{"id":"flood-{number}"}}' for number in numbers)
        yield (b"," if first else b"") + text.encode()
    yield b"]}" if is_object else b"]"


def trickle_chunks(body: bytes, chunk: int) -> Iterator[bytes]:
    for start in range(0, len(body), chunk):
        yield body[start : start + chunk]


def nested(body: bytes, depth: int) -> bytes:
    """The answer with an array nested `depth` levels deep in its first record.

    Built as text: no JSON library can write (or read) such a value recursively.
    """
    payload = json.loads(body)
    if isinstance(payload, dict):
        payload["nested"] = _DEEP_MARK
    elif isinstance(payload, list) and payload and isinstance(payload[0], dict):
        payload[0]["nested"] = _DEEP_MARK
    elif isinstance(payload, list):
        payload.append(_DEEP_MARK)
    else:
        return body
    deep = b"[" * depth + b"]" * depth
    return json.dumps(payload).encode().replace(json.dumps(_DEEP_MARK).encode(), deep, 1)


def with_control_chars(body: bytes, kind: str) -> bytes:
    """Every free-text string wrapped in HOSTILE_TEXT (see the module constants)."""
    try:
        payload = json.loads(body)
    except ValueError:
        return body
    address = _ADDRESSES.get(kind)
    records = payload if isinstance(payload, list) else [payload]
    hostile = [_record_with_control_chars(record, address) for record in records]
    return json.dumps(hostile if isinstance(payload, list) else hostile[0]).encode()


def _record_with_control_chars(record: Any, address: str | None) -> Any:
    if not isinstance(record, dict):
        return _hostile(record)
    kept = _STRUCTURAL | ({address} if address else set())
    return {key: value if key in kept else _hostile(value) for key, value in record.items()}


def _hostile(value: Any) -> Any:
    if isinstance(value, str):
        return f"{HOSTILE_PREFIX}{value}{HOSTILE_SUFFIX}"
    if isinstance(value, list):
        return [_hostile(item) for item in value]
    if isinstance(value, dict):
        return {key: _hostile(item) for key, item in value.items()}
    return value
