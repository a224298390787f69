"""Timestamps as the Orchestra API writes them, to integer Unix nanoseconds.

The API writes two forms (``2025-03-13T02:41:15.144470Z`` on runs and steps,
``2025-03-12 00:59:55.465508+00:00`` on workflows). We accept both on every record,
with or without fractions, with any offset, and treat a missing offset as UTC.
Arithmetic stays in integers: a float of Unix seconds loses the last microsecond
digits, and OTLP wants exact nanoseconds.
"""

from __future__ import annotations

import calendar
import re
from datetime import datetime

from exporter.errors import MappingError

_TIMESTAMP = re.compile(
    r"""
    ^\s*
    (?P<date>[0-9]{4}-[0-9]{2}-[0-9]{2})
    [Tt\ ]
    (?P<time>[0-9]{2}:[0-9]{2})
    (?::(?P<seconds>[0-9]{2})(?:[.,](?P<fraction>[0-9]{1,9})[0-9]*)?)?
    \s*
    (?P<offset>[Zz]|[+-][0-9]{2}(?::?[0-9]{2})?)?
    \s*$
    """,
    re.VERBOSE,
)

_NS_PER_SECOND = 1_000_000_000
_MAX_NS = 2**64


def parse_timestamp_ns(value: object) -> int:
    """Return Unix nanoseconds for one API timestamp, or raise MappingError."""
    if not isinstance(value, str):
        raise MappingError(f"timestamp is not a string: {type(value).__name__}")
    match = _TIMESTAMP.match(value)
    if match is None:
        raise MappingError(f"unrecognised timestamp {value[:64]!r}")
    time_part = f"{match['time']}:{match['seconds'] or '00'}"
    try:
        whole = datetime.fromisoformat(f"{match['date']}T{time_part}")
    except ValueError as exc:
        raise MappingError(f"impossible timestamp {value[:64]!r}") from exc
    seconds = calendar.timegm(whole.timetuple())
    nanos = _fraction_to_ns(match["fraction"])
    result = (seconds - _offset_seconds(match["offset"])) * _NS_PER_SECOND + nanos
    if not 0 <= result < _MAX_NS:
        # OTLP times are unsigned 64-bit nanoseconds: 1970 to 2554.
        raise MappingError(f"timestamp {value[:64]!r} is outside 1970..2554")
    return result


def parse_optional_timestamp_ns(value: object) -> int | None:
    """Like parse_timestamp_ns, but None and empty strings mean "not recorded"."""
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    return parse_timestamp_ns(value)


def lenient_timestamp_ns(value: object) -> int | None:
    """Like parse_optional_timestamp_ns, but a value that does not parse is None too.

    For decisions that must not fail on a bad record (is this run in the window?); the
    mapping itself reports such values as problems.
    """
    try:
        return parse_optional_timestamp_ns(value)
    except MappingError:
        return None


def _fraction_to_ns(fraction: str | None) -> int:
    if not fraction:
        return 0
    return int(fraction.ljust(9, "0"))


def _offset_seconds(offset: str | None) -> int:
    if offset is None or offset in ("Z", "z"):
        return 0
    sign = -1 if offset[0] == "-" else 1
    digits = offset[1:].replace(":", "")
    hours, minutes = int(digits[:2]), int(digits[2:4] or 0)
    if hours > 23 or minutes > 59:
        raise MappingError(f"impossible UTC offset {offset!r}")
    return sign * (hours * 3600 + minutes * 60)
