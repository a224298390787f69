"""Deterministic trace and span ids, so a re-export yields the very same spans.

Backends that deduplicate by (trace id, span id) then show a run once, however
often it was sent. The trace id is the run id itself when it is a UUID, so a user
can paste a run id (dashes removed) into Jaeger's or Tempo's trace lookup.
"""

from __future__ import annotations

import hashlib
import uuid
from functools import lru_cache

from opentelemetry.trace import SpanContext, TraceFlags

_ROOT_PREFIX = b"orchestra-otel/run/"
_STEP_PREFIX = b"orchestra-otel/step/"
_WAIT_PREFIX = b"orchestra-otel/wait/"


def trace_id_for_run(run_id: str) -> int:
    """The run id's 128 bits when it parses as a UUID, else SHA-256 of it (16 bytes)."""
    try:
        value = uuid.UUID(run_id).int
    except (ValueError, TypeError, AttributeError):
        value = 0
    return value or _digest_int(run_id.encode("utf-8", "surrogatepass"), 16)


@lru_cache(maxsize=4096)  # asked once per step of the run, for the parent
def root_span_id(run_id: str) -> int:
    return _digest_int(_ROOT_PREFIX + run_id.encode("utf-8", "surrogatepass"), 8)


def step_span_id(step_id: str) -> int:
    # Step ids look like UUIDs but are not always valid ones (the documented example
    # holds a 'g'), so they are hashed, never parsed.
    return _digest_int(_STEP_PREFIX + step_id.encode("utf-8", "surrogatepass"), 8)


def wait_span_id(step_id: str) -> int:
    """The `wait` span before a step (ORCHESTRA_WAIT_SPANS): one per step, stable."""
    return _digest_int(_WAIT_PREFIX + step_id.encode("utf-8", "surrogatepass"), 8)


def span_context(trace_id: int, span_id: int, *, remote: bool = False) -> SpanContext:
    """Sampled: every span we build is exported. `remote`: a caller's span (traceparent)."""
    return SpanContext(
        trace_id, span_id, is_remote=remote, trace_flags=TraceFlags(TraceFlags.SAMPLED)
    )


def format_trace_id(trace_id: int) -> str:
    return f"{trace_id:032x}"


def format_span_id(span_id: int) -> str:
    return f"{span_id:016x}"


# "surrogatepass": JSON may carry lone surrogates ("\ud800"); they still need an id.


def _digest_int(data: bytes, size: int) -> int:
    digest = hashlib.sha256(data).digest()
    # An all-zero id is invalid in OTLP; the next bytes of the digest stand in for it.
    for start in range(0, len(digest) - size + 1, size):
        value = int.from_bytes(digest[start : start + size], "big")
        if value:
            return value
    return 1
