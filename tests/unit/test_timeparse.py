"""exporter/mapping/timeparse.py: docs/design.md, "Time"."""

from __future__ import annotations

import calendar
from datetime import datetime, timedelta, timezone

import pytest
from hypothesis import given
from hypothesis import strategies as st

from exporter.errors import MappingError
from exporter.mapping.timeparse import parse_optional_timestamp_ns, parse_timestamp_ns

NS = 1_000_000_000


def _ns(
    y: int, mo: int, d: int, h: int = 0, mi: int = 0, s: int = 0, frac_ns: int = 0, off_s: int = 0
) -> int:
    """Unix ns by integer math, independent of the code under test."""
    return (calendar.timegm((y, mo, d, h, mi, s, 0, 0, 0)) - off_s) * NS + frac_ns


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        # the two documented forms
        ("2025-03-13T02:41:15.144470Z", _ns(2025, 3, 13, 2, 41, 15, 144_470_000)),
        ("2025-03-12 00:59:55.465508+00:00", _ns(2025, 3, 12, 0, 59, 55, 465_508_000)),
        # pinned absolute values (checked by hand against `date -u -d`)
        ("2025-03-13T02:41:15.144470Z", 1_741_833_675_144_470_000),
        ("1970-01-01T00:00:00Z", 0),
        ("1970-01-01T00:00:00.000000001Z", 1),
        # no fraction, lowercase z, no offset (= UTC), no seconds, comma
        ("2025-03-13T02:41:15Z", _ns(2025, 3, 13, 2, 41, 15)),
        ("2025-03-13T02:41:15z", _ns(2025, 3, 13, 2, 41, 15)),
        ("2025-03-13t02:41:15", _ns(2025, 3, 13, 2, 41, 15)),
        ("2025-03-13 02:41:15", _ns(2025, 3, 13, 2, 41, 15)),
        ("2025-03-13T02:41Z", _ns(2025, 3, 13, 2, 41)),
        ("2025-03-13T02:41:15,25Z", _ns(2025, 3, 13, 2, 41, 15, 250_000_000)),
        # offsets
        ("2025-03-13T02:41:15+02:00", _ns(2025, 3, 13, 2, 41, 15, off_s=2 * 3600)),
        ("2025-03-13T02:41:15-0530", _ns(2025, 3, 13, 2, 41, 15, off_s=-(5 * 3600 + 30 * 60))),
        ("2025-03-13T02:41:15+05", _ns(2025, 3, 13, 2, 41, 15, off_s=5 * 3600)),
        ("2025-03-13T02:41:15.5-00:00", _ns(2025, 3, 13, 2, 41, 15, 500_000_000)),
        ("2025-03-13T02:41:15+23:59", _ns(2025, 3, 13, 2, 41, 15, off_s=23 * 3600 + 59 * 60)),
        # offset crossing midnight and a year
        ("2025-01-01T01:00:00+02:00", _ns(2024, 12, 31, 23)),
        # leap day and surrounding whitespace
        ("  2024-02-29T12:00:00Z \n", _ns(2024, 2, 29, 12)),
        ("2025-03-13T02:41:15 Z", _ns(2025, 3, 13, 2, 41, 15)),
        # more than 9 fraction digits: truncated to ns, never rounded up
        ("2025-03-13T02:41:15.1234567899Z", _ns(2025, 3, 13, 2, 41, 15, 123_456_789)),
    ],
)
def test_parses_to_exact_ns(text: str, expected: int) -> None:
    assert parse_timestamp_ns(text) == expected
    assert parse_optional_timestamp_ns(text) == expected


@pytest.mark.parametrize("digits", range(1, 10))
def test_fraction_digits(digits: int) -> None:
    fraction = "123456789"[:digits]
    expected = _ns(2025, 3, 13, 2, 41, 15, int(fraction) * 10 ** (9 - digits))
    assert parse_timestamp_ns(f"2025-03-13T02:41:15.{fraction}Z") == expected
    assert parse_timestamp_ns(f"2025-03-13 02:41:15.{fraction}+00:00") == expected


def test_microseconds_survive_exactly() -> None:
    # A float of Unix seconds would lose the last digits here.
    assert parse_timestamp_ns("2025-03-13T02:41:15.999999Z") % NS == 999_999_000
    assert parse_timestamp_ns("2099-12-31T23:59:59.000001Z") % 1000 == 0
    assert parse_timestamp_ns("2099-12-31T23:59:59.000001Z") % NS == 1000


@pytest.mark.parametrize(
    "value",
    [
        "",
        "   ",
        "garbage",
        "2025-03-13",
        "02:41:15",
        "2025/03/13 02:41:15",
        "2025-03-13T2:41:15Z",
        "2025-3-13T02:41:15Z",
        "2025-03-13T02:41:15.Z",
        "2025-03-13T02:41:15ZZ",
        "2025-03-13T02:41:15 UTC",
        "2025-03-13T02:41:15+053",
        "2025-03-13T02:41:15+5",
        "1741833675",
        # impossible dates and times
        "2025-02-30T00:00:00Z",
        "2025-02-29T00:00:00Z",
        "2025-13-01T00:00:00Z",
        "2025-00-10T00:00:00Z",
        "2025-03-32T00:00:00Z",
        "2025-03-13T24:00:00Z",
        "2025-03-13T23:60:00Z",
        "2025-03-13T23:59:61Z",
        "0000-01-01T00:00:00Z",
        # impossible offsets
        "2025-03-13T02:41:15+24:00",
        "2025-03-13T02:41:15-99:00",
        "2025-03-13T02:41:15+05:60",
        "2025-03-13T02:41:15+0575",
        # wrong types
        None,
        1741833675,
        1741833675.5,
        True,
        b"2025-03-13T02:41:15Z",
        ["2025-03-13T02:41:15Z"],
        {"t": "2025-03-13T02:41:15Z"},
        datetime(2025, 3, 13, tzinfo=timezone.utc),
    ],
)
def test_bad_values_raise_mapping_error(value: object) -> None:
    with pytest.raises(MappingError):
        parse_timestamp_ns(value)


@pytest.mark.parametrize("value", [None, "", "   "])
def test_optional_missing_is_none(value: object) -> None:
    assert parse_optional_timestamp_ns(value) is None


@pytest.mark.parametrize("value", ["garbage", 0, [], "2025-02-30T00:00:00Z"])
def test_optional_still_rejects_bad_values(value: object) -> None:
    with pytest.raises(MappingError):
        parse_optional_timestamp_ns(value)


def _parse_or_error(value: object) -> None:
    try:
        result = parse_timestamp_ns(value)
    except MappingError:
        return
    assert type(result) is int


@given(st.text())
def test_any_text_gives_int_or_mapping_error(text: str) -> None:
    _parse_or_error(text)


_TIMEY = st.from_regex(
    r"\A\s?\d{4}-\d{2}-\d{2}[T t]\d{2}:\d{2}(:\d{2})?"
    r"([.,]\d{1,12})?\s?([Zz]|[+-]\d{2}(:?\d{2})?)?\Z"
)


@given(_TIMEY)
def test_timestamp_shaped_text_gives_int_or_mapping_error(text: str) -> None:
    _parse_or_error(text)


_JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(),
    lambda children: st.lists(children) | st.dictionaries(st.text(), children),
    max_leaves=10,
)


@given(_JSON)
def test_any_json_value_gives_int_or_mapping_error(value: object) -> None:
    _parse_or_error(value)
    if value is None or (isinstance(value, str) and not value.strip()):
        assert parse_optional_timestamp_ns(value) is None


_DATETIMES = st.datetimes(
    min_value=datetime(1970, 1, 1), max_value=datetime(2100, 1, 1), timezones=st.none()
)


def _expected_ns(moment: datetime) -> int:
    delta = moment - datetime(1970, 1, 1)
    return (delta.days * 86_400 + delta.seconds) * NS + delta.microseconds * 1000


@given(_DATETIMES)
def test_round_trip_run_format(moment: datetime) -> None:
    text = moment.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    assert parse_timestamp_ns(text) == _expected_ns(moment)


@given(_DATETIMES)
def test_round_trip_workflow_format(moment: datetime) -> None:
    text = moment.replace(tzinfo=timezone.utc).isoformat(sep=" ", timespec="microseconds")
    assert text.endswith("+00:00")
    assert parse_timestamp_ns(text) == _expected_ns(moment)


@given(_DATETIMES, st.integers(min_value=-(23 * 60 + 59), max_value=23 * 60 + 59))
def test_round_trip_any_offset(moment: datetime, offset_minutes: int) -> None:
    zone = timezone(timedelta(minutes=offset_minutes))
    text = moment.replace(tzinfo=timezone.utc).astimezone(zone).isoformat(timespec="microseconds")
    assert parse_timestamp_ns(text) == _expected_ns(moment)
