"""exporter/source/retry.py: backoff, Retry-After and which statuses are retried."""

from __future__ import annotations

import random
from datetime import datetime, timedelta, timezone
from email.utils import format_datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st

from exporter.source.retry import RetryPolicy, is_retryable_status, parse_retry_after

NOW = datetime(2025, 3, 13, 2, 41, 15, tzinfo=timezone.utc)


def _step(policy: RetryPolicy, retry_number: int) -> float:
    return min(policy.max_delay, policy.base_delay * 2 ** max(retry_number - 1, 0))


def test_defaults() -> None:
    policy = RetryPolicy()
    assert policy.max_attempts >= 2
    assert 0 < policy.base_delay <= policy.max_delay


class _Fixed(random.Random):
    """A random source that always returns the given fraction of the range."""

    def __init__(self, fraction: float) -> None:
        super().__init__(0)
        self.fraction = fraction

    def uniform(self, a: float, b: float) -> float:
        return a + (b - a) * self.fraction


@pytest.mark.parametrize(
    ("retry_number", "low", "high"),
    [(1, 0.5, 1.0), (2, 1.0, 2.0), (3, 2.0, 4.0), (4, 4.0, 8.0), (5, 8.0, 16.0), (6, 8.0, 16.0)],
)
def test_backoff_grows_exponentially_then_caps(retry_number: int, low: float, high: float) -> None:
    policy = RetryPolicy(base_delay=1.0, max_delay=16.0)
    assert policy.backoff(retry_number, _Fixed(0.0)) == pytest.approx(low)
    assert policy.backoff(retry_number, _Fixed(1.0)) == pytest.approx(high)


def test_backoff_of_retry_zero_is_like_the_first() -> None:
    policy = RetryPolicy(base_delay=1.0, max_delay=16.0)
    assert policy.backoff(0, _Fixed(0.5)) == policy.backoff(1, _Fixed(0.5))


def test_backoff_is_jittered() -> None:
    policy = RetryPolicy(base_delay=1.0, max_delay=100.0)
    rng = random.Random(7)
    delays = {policy.backoff(4, rng) for _ in range(20)}
    assert len(delays) > 10  # not lockstep
    assert all(4.0 <= delay <= 8.0 for delay in delays)


def test_backoff_deterministic_with_seeded_random() -> None:
    policy = RetryPolicy()
    first = [policy.backoff(n, random.Random(42)) for n in range(1, 8)]
    second = [policy.backoff(n, random.Random(42)) for n in range(1, 8)]
    assert first == second
    sequence_a = [policy.backoff(n, rng) for rng in [random.Random(1)] for n in range(1, 8)]
    sequence_b = [policy.backoff(n, rng) for rng in [random.Random(1)] for n in range(1, 8)]
    assert sequence_a == sequence_b
    assert sequence_a != [policy.backoff(n, random.Random(2)) for n in range(1, 8)]


@given(
    retry_number=st.integers(min_value=0, max_value=64),
    base=st.floats(min_value=0.001, max_value=10),
    cap=st.floats(min_value=0.001, max_value=600),
    seed=st.integers(),
)
def test_backoff_always_within_half_step_and_step(
    retry_number: int, base: float, cap: float, seed: int
) -> None:
    policy = RetryPolicy(base_delay=base, max_delay=cap)
    step = _step(policy, retry_number)
    delay = policy.backoff(retry_number, random.Random(seed))
    assert step / 2 <= delay <= step
    assert delay <= cap


def test_backoff_capped_for_huge_retry_numbers() -> None:
    # Regression: base_delay * 2**(n-1) overflowed a float from retry ~1025.
    policy = RetryPolicy(base_delay=0.5, max_delay=30.0)
    assert 15.0 <= policy.backoff(2000, random.Random(0)) <= 30.0


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        ("\u0661\u0662\u0660", None),  # Arabic-Indic digits: not delta-seconds
        ("120", 120.0),
        ("0", 0.0),
        (" 7 ", 7.0),
        ("  ", None),
        ("", None),
        (None, None),
        ("soon", None),
        ("-5", None),
        ("1.5", None),
        ("1e3", None),
        ("Wed, 21 Oct 2015 99:28:00 GMT", None),
    ],
)
def test_parse_retry_after(header: str | None, expected: float | None) -> None:
    assert parse_retry_after(header, now=NOW) == expected


def test_parse_retry_after_http_date_in_future() -> None:
    header = format_datetime(NOW + timedelta(seconds=90), usegmt=True)
    assert parse_retry_after(header, now=NOW) == pytest.approx(90.0)


def test_parse_retry_after_http_date_in_past_is_zero() -> None:
    header = format_datetime(NOW - timedelta(hours=1), usegmt=True)
    assert parse_retry_after(header, now=NOW) == 0.0


def test_parse_retry_after_date_without_zone_is_utc() -> None:
    assert parse_retry_after("Thu, 13 Mar 2025 02:42:15 -0000", now=NOW) == pytest.approx(60.0)


def test_parse_retry_after_date_with_offset() -> None:
    # 04:42:15 at +02:00 is 02:42:15 UTC: one minute after NOW.
    assert parse_retry_after("Thu, 13 Mar 2025 04:42:15 +0200", now=NOW) == pytest.approx(60.0)


def test_parse_retry_after_without_now_uses_the_clock() -> None:
    header = format_datetime(datetime.now(timezone.utc) + timedelta(seconds=3600), usegmt=True)
    wait = parse_retry_after(header)
    assert wait is not None
    assert 3500 < wait <= 3600


def test_parse_retry_after_superscript_digit_is_garbage() -> None:
    # Regression: str.isdigit() is true for '²' (latin-1 0xB2, as httpx decodes a
    # non-UTF-8 header), and float('²') raised ValueError out of the client.
    assert parse_retry_after("²", now=NOW) is None


@pytest.mark.parametrize(
    "header", ["Wed, 21 Oct 9999999999 07:28:00 GMT", "Wed, 9999999999 Oct 2015 07:28:00 GMT"]
)
def test_parse_retry_after_overflowing_date_is_garbage(header: str) -> None:
    # Regression: parsedate_to_datetime raises OverflowError on 10-digit fields.
    assert parse_retry_after(header, now=NOW) is None


@given(st.text(alphabet=st.characters(codec="ascii"), max_size=40))
def test_parse_retry_after_ascii_garbage_never_raises(header: str) -> None:
    wait = parse_retry_after(header, now=NOW)
    assert wait is None or wait >= 0.0


@pytest.mark.parametrize("status", [408, 429, 500, 502, 503, 504])
def test_retryable_statuses(status: int) -> None:
    assert is_retryable_status(status) is True


@pytest.mark.parametrize("status", [200, 204, 301, 400, 401, 403, 404, 409, 422])
def test_non_retryable_statuses(status: int) -> None:
    assert is_retryable_status(status) is False
