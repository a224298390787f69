"""The emulator's hostile-API switches, over real sockets: what each one sends.

The daemon's behaviour against them is tests/reliability/test_hostile_api.py; these
tests pin down the switches themselves, so a user rehearsing a failure gets what the
docstring of exporter/emulator/faults.py promises.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from urllib.parse import quote

import httpx
import pytest

from exporter.emulator import Emulator, FaultRule, Scenario, demo
from exporter.emulator.hostile import HOSTILE_PREFIX, HOSTILE_SUFFIX
from tests.support.clock import ManualClock

T0 = 1_750_000_000.0


@pytest.fixture
def emulator() -> Iterator[Emulator]:
    clock = ManualClock(T0)
    scenario = Scenario(demo.demo_workflows(T0), clock=clock, seed=3)
    for workflow_id in scenario.workflow_ids():
        scenario.add_history(workflow_id, 3, every=30.0, duration=(1.0, 5.0))
    with Emulator(scenario, api_key=None) as running:
        yield running


@pytest.fixture
def client(emulator: Emulator) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=emulator.base_url, timeout=30) as http:
        yield http


def workflow(emulator: Emulator) -> str:
    return emulator.scenario.workflow_ids()[0]


def first_run(emulator: Emulator) -> str:
    return str((emulator.scenario.runs(workflow(emulator)) or [])[0]["id"])


def steps_url(emulator: Emulator, run_id: str) -> str:
    segment = quote(run_id, safe="")
    if not segment.strip("."):  # httpx would resolve a "." or ".." segment away
        segment = segment.replace(".", "%2E")
    return f"/workflows/{workflow(emulator)}/runs/{segment}/steps"


def test_ignore_offset_serves_the_first_page_whatever_the_offset(
    emulator: Emulator, client: httpx.Client
) -> None:
    url = f"/workflows/{workflow(emulator)}/runs"
    first = client.get(url, params={"limit": 1}).json()
    emulator.faults.add(FaultRule(action="ignore_offset", kind="list_runs", times=None))
    assert client.get(url, params={"limit": 1, "offset": 2}).json() == first
    emulator.faults.clear()
    assert client.get(url, params={"limit": 1, "offset": 2}).json() != first


def test_huge_pads_the_real_answer_and_sends_no_length(
    emulator: Emulator, client: httpx.Client
) -> None:
    url = steps_url(emulator, first_run(emulator))
    real = client.get(url)
    emulator.faults.add(FaultRule(action="huge", kind="steps", size=3_000_000))
    huge = client.get(url)
    assert "content-length" not in huge.headers
    assert huge.headers["transfer-encoding"] == "chunked"
    assert len(huge.content) == len(real.content) + 3_000_000
    assert huge.json() == real.json()


def test_flood_appends_tiny_records(emulator: Emulator, client: httpx.Client) -> None:
    url = steps_url(emulator, first_run(emulator))
    real = client.get(url).json()
    emulator.faults.add(FaultRule(action="flood", kind="steps", records=10_000))
    flooded = client.get(url).json()
    assert flooded[: len(real)] == real
    assert flooded[len(real) :] == [{"id": f"flood-{n}"} for n in range(10_000)]
    # An empty list gets the records alone; an object gets them in a `flood` array.
    emulator.faults.add(FaultRule(action="flood", kind="list_runs", records=2))
    empty_page = client.get(f"/workflows/{workflow(emulator)}/runs", params={"offset": 50})
    assert empty_page.json() == [{"id": "flood-0"}, {"id": "flood-1"}]
    emulator.faults.add(FaultRule(action="flood", kind="diagram", records=1))
    diagram = client.get(f"/workflows/{workflow(emulator)}/diagram").json()
    assert diagram["flood"] == [{"id": "flood-0"}] and "diagram" in diagram


def test_trickle_sends_the_real_answer_slowly_with_its_length(
    emulator: Emulator, client: httpx.Client
) -> None:
    url = steps_url(emulator, first_run(emulator))
    real = client.get(url).content
    chunk = len(real) // 4 + 1
    emulator.faults.add(FaultRule(action="trickle", kind="steps", chunk=chunk, delay=0.1))
    started = time.monotonic()
    with client.stream("GET", url) as response:
        assert response.headers["content-length"] == str(len(real))
        pieces = list(response.iter_raw())
    assert time.monotonic() - started >= 0.3  # four pieces, three pauses
    assert b"".join(pieces) == real


def test_stopping_the_emulator_ends_a_trickle(emulator: Emulator, client: httpx.Client) -> None:
    emulator.faults.add(FaultRule(action="trickle", kind="steps", chunk=1, delay=10))
    failures: list[BaseException] = []

    def read() -> None:
        try:
            client.get(steps_url(emulator, first_run(emulator)))
        except httpx.HTTPError as error:
            failures.append(error)

    reader = threading.Thread(target=read)
    reader.start()
    time.sleep(0.3)
    started = time.monotonic()
    emulator.stop()
    reader.join(timeout=10)
    assert not reader.is_alive() and failures
    assert time.monotonic() - started < 5


@pytest.mark.parametrize("depth", [5, 100_000])
def test_deep_nests_an_array_in_the_first_record(
    emulator: Emulator, client: httpx.Client, depth: int
) -> None:
    url = steps_url(emulator, first_run(emulator))
    real = client.get(url).json()
    emulator.faults.add(FaultRule(action="deep", kind="steps", depth=depth))
    body = client.get(url).content
    marker = b'"nested": '
    nested = body[body.index(marker) + len(marker) :]
    assert nested.startswith(b"[" * depth + b"]" * depth)
    if depth < 500:
        first, *rest = json.loads(body)
        assert first.pop("nested") == json.loads(b"[" * depth + b"]" * depth)
        assert [first, *rest] == real


def test_control_chars_wrap_every_free_text_but_what_the_api_is_addressed_by(
    emulator: Emulator, client: httpx.Client
) -> None:
    runs_url = f"/workflows/{workflow(emulator)}/runs"
    real_runs = client.get(runs_url).json()
    real_steps = client.get(steps_url(emulator, first_run(emulator))).json()
    emulator.faults.add(FaultRule(action="control_chars", times=None))
    runs = client.get(runs_url).json()
    steps = client.get(steps_url(emulator, first_run(emulator))).json()
    workflows = client.get("/workflows").json()

    def hostile(text: str) -> str:
        return f"{HOSTILE_PREFIX}{text}{HOSTILE_SUFFIX}"

    assert [run["id"] for run in runs] == [run["id"] for run in real_runs]
    for run, real in zip(runs, real_runs, strict=True):
        for key in ("status", "start_time", "end_time"):
            assert run[key] == real[key]
    assert [wf["workflow_id"] for wf in workflows] == emulator.scenario.workflow_ids()
    assert workflows[0]["name"] == hostile(str(emulator.scenario.workflow_records()[0]["name"]))
    assert [step["id"] for step in steps] == [hostile(step["id"]) for step in real_steps]
    assert [step["node_id"] for step in steps] == [hostile(s["node_id"]) for s in real_steps]
    assert [step["status"] for step in steps] == [step["status"] for step in real_steps]


@pytest.mark.parametrize("run_id", ["../../x", "r1?admin=true", "r2#frag", "..", "a\x1b[2K\nb"])
def test_a_run_can_be_served_under_any_id(
    emulator: Emulator, client: httpx.Client, run_id: str
) -> None:
    control = httpx.Client(base_url=f"{emulator.root_url}/_emulator")
    added = control.post("/runs", json={"workflow_id": workflow(emulator), "run_id": run_id})
    assert added.json()["run_id"] == run_id
    emulator.scenario.clock.advance(600)  # type: ignore[attr-defined]
    steps = client.get(steps_url(emulator, run_id))
    assert steps.status_code == 200 and steps.json()
    again = control.post("/runs", json={"workflow_id": workflow(emulator), "run_id": run_id})
    assert again.status_code == 400
    assert control.post("/runs", json={"workflow_id": workflow(emulator), "run_id": ""}).is_error


@pytest.mark.parametrize(
    "bad", [{"size": -1}, {"records": -1}, {"depth": 0}, {"chunk": 0}, {"action": "explode"}]
)
def test_hostile_rules_reject_bad_values(bad: dict[str, object]) -> None:
    with pytest.raises(ValueError):
        FaultRule.from_json({"action": "huge", **bad})
