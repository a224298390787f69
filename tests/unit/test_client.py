"""exporter/source/client.py in process, over httpx.MockTransport: milliseconds per case.

Paths, retries, Retry-After and its cap, byte and record caps, the per-attempt deadline
and the mapping of every failure into the exception tree. The same client against the
real emulator over sockets is tests/integration/test_client.py; the daemon against a
hostile emulator is tests/reliability/test_hostile_api.py.
"""

from __future__ import annotations

import asyncio
import gzip
import json
import random
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine
from email.utils import formatdate
from typing import Any, TypeVar
from urllib.parse import quote, unquote

import httpx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from exporter.errors import (
    ApiAuthError,
    ApiError,
    ApiNotFoundError,
    ApiRequestError,
    ApiResponseError,
    ApiResponseTooLargeError,
    ApiUnavailableError,
)
from exporter.source.body import Decoded, decode_json
from exporter.source.client import OrchestraClient
from exporter.source.models import (
    MAX_NESTING,
    TOO_DEEP,
    DepthChecked,
    RejectedRecord,
    Step,
    parse_records,
)
from exporter.source.retry import RetryPolicy

BASE = "https://orchestra.test/api/v1/workflow"
KEY = "sk-test-0123456789"
WF = "wf-1"
STEP = {"id": "s1", "node_id": "model", "status": "completed"}
_T = TypeVar("_T")


class Api:
    """A scripted API: answers from a handler, and every request it saw."""

    def __init__(self, handler: Callable[[httpx.Request], httpx.Response | Awaitable[Any]]):
        self._handler = handler
        self.requests: list[httpx.Request] = []

    async def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        answer = self._handler(request)
        if asyncio.iscoroutine(answer):
            answer = await answer
        assert isinstance(answer, httpx.Response)
        return answer


def client_for(api: Api, **options: Any) -> OrchestraClient:
    options.setdefault("retry", RetryPolicy(base_delay=0.001, max_delay=0.005))
    return OrchestraClient(
        BASE, KEY, transport=httpx.MockTransport(api), rng=random.Random(0), **options
    )


def run(coroutine: Coroutine[Any, Any, _T]) -> _T:
    return asyncio.run(coroutine)


async def call(client: OrchestraClient, fetch: Callable[[OrchestraClient], Awaitable[_T]]) -> _T:
    async with client:
        return await fetch(client)


def steps_of(client: OrchestraClient) -> Awaitable[Any]:
    return client.get_steps(WF, "r1")


def ok_steps(request: httpx.Request) -> httpx.Response:
    return httpx.Response(200, json=[STEP])


class Stream:
    """A streamed body (no Content-Length) that counts what the client pulled from it."""

    def __init__(self, chunk: bytes, count: int, *, pause: float = 0.0) -> None:
        self.chunk, self.count, self.pause = chunk, count, pause
        self.sent = 0

    async def __aiter__(self) -> AsyncIterator[bytes]:
        for _ in range(self.count):
            if self.pause:
                await asyncio.sleep(self.pause)
            self.sent += len(self.chunk)
            yield self.chunk


# --------------------------------------------------------------------------- paths

HOSTILE_IDS = [
    "../../x",
    "r1?admin=true",
    "r2#frag",
    "..",
    ".",
    "...",
    "r3/steps",
    "r4%2F..%2Fx",
    "a b\x1b[2K\r\n\x00",
    "ünïcødé-\u202e",
    "5b69669f-975a-49af-a33a-61ff9ae5a20f",
]


@pytest.mark.parametrize("run_id", HOSTILE_IDS)
def test_every_id_is_exactly_one_path_segment(run_id: str) -> None:
    api = Api(ok_steps)
    run(call(client_for(api), lambda c: c.get_steps(run_id, run_id)))
    (request,) = api.requests
    path = request.url.raw_path.decode("ascii")
    prefix = "/api/v1/workflow/workflows/"
    assert path.startswith(prefix), path
    segments = path[len(prefix) :].split("/")
    assert len(segments) == 4 and segments[1::2] == ["runs", "steps"], path
    assert unquote(segments[0]) == unquote(segments[2]) == run_id
    assert request.url.query == b""
    assert request.url.host == "orchestra.test"


def test_ids_are_quoted_on_every_endpoint() -> None:
    odd = "w/../x?y#z"
    api = Api(
        lambda request: httpx.Response(
            200,
            json={"diagram": "graph"} if request.url.path.endswith("diagram") else [{"id": "r"}],
        )
    )

    async def every_endpoint(client: OrchestraClient) -> None:
        await client.list_runs(odd, limit=7, offset=3)
        await client.get_run(odd, odd)
        await client.get_steps(odd, odd)
        await client.get_diagram(odd)

    run(call(client_for(api), every_endpoint))
    q = quote(odd, safe="")
    assert [r.url.raw_path.decode() for r in api.requests] == [
        f"/api/v1/workflow/workflows/{q}/runs?limit=7&offset=3",
        f"/api/v1/workflow/workflows/{q}/runs/{q}",
        f"/api/v1/workflow/workflows/{q}/runs/{q}/steps",
        f"/api/v1/workflow/workflows/{q}/diagram",
    ]


def test_an_empty_id_is_refused_without_a_request() -> None:
    api = Api(ok_steps)
    with pytest.raises(ApiRequestError, match="empty id"):
        run(call(client_for(api), lambda c: c.get_steps(WF, "")))
    assert api.requests == []


# --------------------------------------------------------------------------- byte cap


def test_a_declared_length_over_the_cap_is_refused_unread() -> None:
    stream = Stream(b"x" * 1024, 2048)  # 2 MiB
    api = Api(
        lambda request: httpx.Response(
            200, headers={"Content-Length": str(2 * 1024 * 1024)}, content=stream
        )
    )
    client = client_for(api, max_response_bytes=1024 * 1024)
    with pytest.raises(ApiResponseTooLargeError) as caught:
        run(call(client, steps_of))
    assert stream.sent == 0
    assert caught.value.endpoint == "steps"
    assert str(caught.value).startswith("steps: the API's answer is too large")
    assert "ORCHESTRA_API_MAX_RESPONSE_BYTES" in str(caught.value)


def test_a_streamed_body_is_read_no_further_than_the_cap() -> None:
    stream = Stream(b" " * (64 * 1024), 3200)  # 200 MiB of whitespace, no length declared
    api = Api(lambda request: httpx.Response(200, content=stream))
    client = client_for(api, max_response_bytes=1024 * 1024)
    with pytest.raises(ApiResponseTooLargeError):
        run(call(client, steps_of))
    assert stream.sent <= 1024 * 1024 + 64 * 1024
    # Final: not retried, and counted as refused rather than as a 200.
    assert len(api.requests) == 1
    assert client.stats.requests == {("steps", "too_large"): 1}
    assert not client.stats.retries


def test_a_body_of_exactly_the_cap_is_read() -> None:
    body = json.dumps([STEP]).encode()
    padded = body[:-1] + b" " * (4096 - len(body)) + body[-1:]
    api = Api(lambda request: httpx.Response(200, content=padded))
    steps = run(call(client_for(api, max_response_bytes=4096), steps_of))
    assert [step.id for step in steps] == ["s1"]


def test_a_compressed_body_is_capped_by_its_decompressed_size() -> None:
    bomb = gzip.compress(b"[" + b" " * (8 * 1024 * 1024) + b"]")  # 8 MiB -> ~8 KiB
    api = Api(
        lambda request: httpx.Response(200, headers={"Content-Encoding": "gzip"}, content=bomb)
    )
    with pytest.raises(ApiResponseTooLargeError):
        run(call(client_for(api, max_response_bytes=1024 * 1024), steps_of))


# --------------------------------------------------------------------------- record cap


def test_more_records_than_the_cap_are_refused() -> None:
    records = [{"id": f"s{i}"} for i in range(101)]
    api = Api(lambda request: httpx.Response(200, json=records))
    client = client_for(api, max_records=100)
    with pytest.raises(ApiResponseTooLargeError) as caught:
        run(call(client, steps_of))
    assert "more than 100 records" in str(caught.value)
    assert "ORCHESTRA_API_MAX_RECORDS" in str(caught.value)
    assert len(api.requests) == 1
    assert client.stats.requests == {("steps", "too_large"): 1}

    api_at_cap = Api(lambda request: httpx.Response(200, json=records[:100]))
    assert len(run(call(client_for(api_at_cap, max_records=100), steps_of))) == 100


def test_the_record_cap_stops_decoding_before_the_rest_of_the_flood() -> None:
    # Garbage after record 10: refused for the count, so nothing past the cap was decoded.
    flood = b"[" + b",".join(b'{"id":"s%d"}' % i for i in range(10)) + b",{{{garbage"
    assert decode_json(bytearray(flood), 10) == Decoded(problem="too_many_records")
    assert decode_json(bytearray(flood), 11).problem == "not_json"


def test_decoding_frees_the_raw_body() -> None:
    raw = bytearray(json.dumps([STEP]).encode())
    assert decode_json(raw, 10) == Decoded([STEP])
    assert raw == bytearray()  # the bytes are not kept next to the records built from them


# --------------------------------------------------------------------------- nesting


def test_the_decoder_bounds_each_records_depth_once() -> None:
    """A record deeper than MAX_NESTING is TOO_DEEP in its place; one whose text opens no
    more brackets than that is provably shallow and never walked again by parse_records."""
    deep: object = {"id": "deep"}
    for _ in range(MAX_NESTING + 1):
        deep = {"x": deep}
    shallow_but_braced = {"id": "s1", "error": "{" * (2 * MAX_NESTING)}
    bushy = {"id": "s2", "outputs": [[1]] * (MAX_NESTING + 1)}  # many brackets, 3 levels
    raw = bytearray(json.dumps([STEP, deep, shallow_but_braced, bushy]).encode())
    decoded = decode_json(raw, 10).value
    assert isinstance(decoded, DepthChecked)
    assert decoded == [STEP, TOO_DEEP, shallow_but_braced, bushy]
    steps, rejected = parse_records(decoded, Step)
    assert [step.id for step in steps] == [STEP["id"], "s1", "s2"]
    assert [(r.index, r.reason) for r in rejected] == [
        (1, f"nested deeper than {MAX_NESTING} levels")
    ]


def test_an_answer_nested_too_deeply_for_the_decoder_is_a_final_response_error() -> None:
    deep = b"[" * 100_000 + b"]" * 100_000
    api = Api(lambda request: httpx.Response(200, content=deep))
    client = client_for(api)
    with pytest.raises(ApiResponseTooLargeError) as caught:
        run(call(client, steps_of))
    assert str(caught.value) == "steps: the API's answer is nested too deeply to be read"
    assert len(api.requests) == 1  # the same answer would come again
    assert client.stats.requests == {("steps", "too_deep"): 1}


def test_a_record_nested_deeper_than_the_limit_is_skipped_and_reported() -> None:
    deep: Any = []
    for _ in range(MAX_NESTING + 5):
        deep = [deep]
    shallow: Any = []
    for _ in range(MAX_NESTING - 2):
        shallow = [shallow]
    records = [{"id": "deep", "outputs": deep}, {"id": "ok", "outputs": shallow}]
    api = Api(lambda request: httpx.Response(200, content=json.dumps(records).encode()))
    rejected: list[tuple[str, RejectedRecord]] = []
    client = client_for(api, on_rejected=lambda endpoint, r: rejected.append((endpoint, r)))
    steps = run(call(client, steps_of))
    assert [step.id for step in steps] == ["ok"]
    assert rejected == [("steps", RejectedRecord(0, f"nested deeper than {MAX_NESTING} levels"))]


# --------------------------------------------------------------------------- deadline


def test_a_trickled_body_is_cut_at_the_deadline_of_the_attempt() -> None:
    stream = Stream(b" ", 10_000, pause=0.01)  # a byte every 10 ms: ~100 s in all
    api = Api(lambda request: httpx.Response(200, content=stream))
    client = client_for(api, timeout=0.3, retry=RetryPolicy(max_attempts=1))
    started = time.monotonic()
    with pytest.raises(ApiUnavailableError) as caught:
        run(call(client, steps_of))
    elapsed = time.monotonic() - started
    assert "steps: the API did not answer in time (0.3s" in str(caught.value)
    assert elapsed < 5, elapsed
    assert 0 < stream.sent < 10_000
    assert client.stats.requests == {("steps", "timeout"): 1}


def test_a_slow_header_counts_against_the_same_deadline() -> None:
    async def slow(request: httpx.Request) -> httpx.Response:
        await asyncio.sleep(5)
        return httpx.Response(200, json=[STEP])

    client = client_for(Api(slow), timeout=0.2, retry=RetryPolicy(max_attempts=2, base_delay=0.01))
    with pytest.raises(ApiUnavailableError, match="did not answer in time"):
        run(call(client, steps_of))
    assert client.stats.requests == {("steps", "timeout"): 2}  # a timeout is retried


def test_an_answer_within_the_deadline_is_read_whatever_its_pace() -> None:
    body = json.dumps([STEP]).encode()

    async def pieces() -> AsyncIterator[bytes]:
        for index in range(0, len(body), 8):
            await asyncio.sleep(0.002)
            yield body[index : index + 8]

    api = Api(lambda request: httpx.Response(200, content=pieces()))
    steps = run(call(client_for(api, timeout=5), steps_of))
    assert [step.id for step in steps] == ["s1"]


# --------------------------------------------------------------------------- Retry-After


def rate_limited(retry_after: str) -> Api:
    return Api(lambda request: httpx.Response(429, headers={"Retry-After": retry_after}))


@pytest.mark.parametrize(
    "retry_after",
    ["999999999", formatdate(time.time() + 10 * 365 * 86_400, usegmt=True)],
    ids=["seconds", "date"],
)
def test_an_absurd_retry_after_pauses_for_the_cap_only(retry_after: str) -> None:
    api = rate_limited(retry_after)
    client = client_for(api, retry=RetryPolicy(max_attempts=1, max_retry_after=300))
    with pytest.raises(ApiUnavailableError):
        run(call(client, steps_of))
    assert 299 < client.pause_remaining() <= 300
    assert client.paused_until == pytest.approx(time.monotonic() + 300, abs=1.5)
    assert (client.stats.retry_after_pauses, client.stats.retry_after_capped) == (1, 1)
    assert client.stats.rate_limited == 1
    # Paused: the next call gives up at once (the wait is longer than a poll) and sends
    # nothing.
    with pytest.raises(ApiUnavailableError, match="wait 300s more"):
        run(call(client, steps_of))
    assert len(api.requests) == 1


def test_a_retry_after_within_the_cap_is_kept_as_sent() -> None:
    client = client_for(rate_limited("120"), retry=RetryPolicy(max_attempts=1))
    with pytest.raises(ApiUnavailableError):
        run(call(client, steps_of))
    assert 119 < client.pause_remaining() <= 120
    assert (client.stats.retry_after_pauses, client.stats.retry_after_capped) == (1, 0)


def test_the_capped_pause_is_waited_out_before_the_retry() -> None:
    arrived: list[float] = []

    def answer(request: httpx.Request) -> httpx.Response:
        arrived.append(time.monotonic())
        if len(arrived) == 1:
            return httpx.Response(429, headers={"Retry-After": "3600"})
        return ok_steps(request)

    retry = RetryPolicy(base_delay=0.001, max_delay=1.0, max_retry_after=0.2)
    client = client_for(Api(answer), retry=retry)
    steps = run(call(client, steps_of))
    assert [step.id for step in steps] == ["s1"]
    assert arrived[1] - arrived[0] >= 0.2  # the capped pause, not the 3600 s asked for
    assert client.pause_remaining() == 0.0
    assert client.stats.retry_after_capped == 1


def test_no_pause_without_a_retry_after() -> None:
    client = client_for(Api(ok_steps))
    run(call(client, steps_of))
    assert client.pause_remaining() == 0.0 and client.paused_until == 0.0


# --------------------------------------------------------------------------- retries


def test_transient_failures_are_retried_then_succeed() -> None:
    answers = iter([503, 502])

    def answer(request: httpx.Request) -> httpx.Response:
        status = next(answers, 200)
        return httpx.Response(status, json=[STEP] if status == 200 else {"detail": "busy"})

    client = client_for(Api(answer))
    steps = run(call(client, steps_of))
    assert [s.id for s in steps] == ["s1"]
    assert client.stats.retries == {"steps": 2}
    assert client.stats.requests == {("steps", "503"): 1, ("steps", "502"): 1, ("steps", "200"): 1}


def test_retries_stop_at_max_attempts() -> None:
    api = Api(lambda request: httpx.Response(503, json={"detail": "down"}))
    with pytest.raises(ApiUnavailableError, match="steps: the API answered 503"):
        run(call(client_for(api), steps_of))
    assert len(api.requests) == RetryPolicy().max_attempts


@pytest.mark.parametrize(
    ("answer", "error"),
    [
        (httpx.Response(200, text="<html>sign in</html>"), ApiResponseError),
        (httpx.Response(200, json={"data": [STEP]}), ApiResponseError),
    ],
    ids=["not-json", "wrong-shape"],
)
def test_an_unreadable_2xx_is_retried(answer: httpx.Response, error: type[ApiError]) -> None:
    api = Api(lambda request: answer)
    with pytest.raises(error) as caught:
        run(call(client_for(api), steps_of))
    assert type(caught.value) is error and caught.value.endpoint == "steps"
    assert len(api.requests) == RetryPolicy().max_attempts


@pytest.mark.parametrize(
    ("status", "error"),
    [(401, ApiAuthError), (403, ApiAuthError), (404, ApiNotFoundError), (400, ApiRequestError)],
)
def test_hopeless_statuses_are_not_retried_and_quote_the_detail(
    status: int, error: type[ApiError]
) -> None:
    api = Api(lambda request: httpx.Response(status, json={"detail": f"no: {KEY} rejected"}))
    with pytest.raises(error) as caught:
        run(call(client_for(api), steps_of))
    assert str(caught.value) == f"steps: the API answered {status}: no: [REDACTED] rejected"
    assert caught.value.status == status
    assert len(api.requests) == 1


def test_a_huge_error_body_is_not_read_whole() -> None:
    stream = Stream(b"x" * (64 * 1024), 1600)  # 100 MiB
    api = Api(lambda request: httpx.Response(400, content=stream))
    with pytest.raises(ApiRequestError) as caught:
        run(call(client_for(api), steps_of))
    assert str(caught.value) == "steps: the API answered 400"
    assert stream.sent <= 128 * 1024


@pytest.mark.parametrize(
    ("failure", "outcome", "text"),
    [
        (httpx.ConnectError("refused"), "connection_error", "cannot reach the API"),
        (httpx.ReadTimeout("slow"), "timeout", "did not answer in time"),
    ],
)
def test_transport_failures_become_api_unavailable(
    failure: Exception, outcome: str, text: str
) -> None:
    def fail(request: httpx.Request) -> httpx.Response:
        raise failure

    client = client_for(Api(fail), retry=RetryPolicy(max_attempts=1))
    with pytest.raises(ApiUnavailableError, match=text):
        run(call(client, steps_of))
    assert client.stats.requests == {("steps", outcome): 1}


def test_history_pages_send_limit_and_offset() -> None:
    page = [{"id": f"r{i}", "status": "completed"} for i in range(100)]
    api = Api(lambda request: httpx.Response(200, json=page))
    runs = run(call(client_for(api), lambda c: c.list_runs(WF, offset=200)))
    assert len(runs) == 100
    assert dict(api.requests[0].url.params) == {"limit": "100", "offset": "200"}


# --------------------------------------------------------------------------- decoding

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(),
    lambda children: (
        st.lists(children, max_size=5) | st.dictionaries(st.text(max_size=5), children, max_size=5)
    ),
    max_leaves=30,
)


@settings(max_examples=200)
@given(value=json_values, indent=st.sampled_from([None, 0, 2]))
def test_decode_json_reads_what_json_loads_reads(value: Any, indent: int | None) -> None:
    raw = json.dumps(value, indent=indent).encode()
    assert decode_json(bytearray(raw), 1_000) == Decoded(json.loads(raw))


@pytest.mark.parametrize(
    "text",
    [b" [ 1 , 2 ] \n", b"[]", b" [ ] ", b'\xef\xbb\xbf[{"a": 1}]', b'{"a": [1]}', b"3"],
)
def test_decode_json_whitespace_bom_and_scalars(text: bytes) -> None:
    assert decode_json(bytearray(text), 10) == Decoded(json.loads(text))


@pytest.mark.parametrize(
    "text", [b"", b"[1,]", b"[1 2]", b"[1] x", b"[1", b"[,1]", b"{", b"nope", b"[\xff]"]
)
def test_decode_json_refuses_what_json_loads_refuses(text: bytes) -> None:
    with pytest.raises(ValueError):
        json.loads(text)
    decoded = decode_json(bytearray(text), 10)
    assert decoded.problem == "not_json" and decoded.detail


def test_decode_json_tells_a_nesting_too_deep_for_the_decoder() -> None:
    deep = b"[" * 100_000 + b"]" * 100_000
    assert decode_json(bytearray(deep), 10) == Decoded(problem="too_deep")


def test_decode_json_replaces_lone_surrogates() -> None:
    decoded = decode_json(bytearray(b'[{"a": "x\\ud800y"}]'), 10)
    assert decoded == Decoded([{"a": "x\ufffdy"}])
