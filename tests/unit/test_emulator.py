"""The Orchestra API emulator, driven over real sockets with httpx."""

from __future__ import annotations

import email.utils
import http.client
import json
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from exporter.emulator import (
    CodeNode,
    Emulator,
    Failure,
    FaultRule,
    IntegrationNode,
    ModelNode,
    Scenario,
    WorkflowSpec,
    demo,
    demo_scenario,
    fixture_scenario,
)
from exporter.emulator.fixtures import (
    FIXTURE_HI_WORKFLOW_ID,
    FIXTURE_JOKE_WORKFLOW_ID,
    FIXTURE_STEPS_RUN_ID,
    packaged_fixtures,
)
from exporter.emulator.graph import END, START, mermaid_diagram
from tests.support.clock import ManualClock

RUN_TIME = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{6}Z$")
WORKFLOW_TIME = re.compile(r"^\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2}\.\d{6}\+00:00$")
T0 = 1_750_000_000.0
WF = "11111111-2222-4333-8444-555555555555"
AUTH = {"Authorization": "Bearer demo-key"}


def load_fixture(name: str) -> Any:
    return json.loads((packaged_fixtures() / name).read_text(encoding="utf-8"))


def chain_workflow() -> WorkflowSpec:
    """fetch (code) -> model -> notify (slack), the three documented node kinds."""
    fetch = CodeNode(node_id="fetch", results=lambda rng, data: {"rows": 3}, stdout="ok\n")
    model = ModelNode(node_id="model", replies=("Three rows for {{prompt}}.",))
    notify = IntegrationNode(
        node_id="notify",
        app_name="slack",
        action="SLACK_SENDS_A_MESSAGE_TO_A_SLACK_CHANNEL",
        input_mapping={"channel": "#ops", "text": "{{model}}"},
        failure=Failure("channel_not_found", soft=True),
    )
    return WorkflowSpec(
        workflow_id=WF,
        name="chain",
        description="code, then model, then slack",
        nodes=(fetch, model, notify),
        edges=((START, "fetch"), ("fetch", "model"), ("model", "notify"), ("notify", END)),
        selected_output="model",
        sample_inputs=({"prompt": "the report"},),
    )


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock(T0)


@pytest.fixture
def scenario(clock: ManualClock) -> Scenario:
    return Scenario([chain_workflow()], clock=clock, seed=7)


@pytest.fixture
def emulator(scenario: Scenario) -> Iterator[Emulator]:
    with Emulator(scenario) as running:
        yield running


@pytest.fixture
def client(emulator: Emulator) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=emulator.base_url, headers=AUTH, timeout=5) as http:
        yield http


def finished_run(scenario: Scenario, clock: ManualClock, **kwargs: Any) -> str:
    durations = {"fetch": 0.5, "model": 2.5, "notify": 1.2}
    run_id = scenario.add_run(WF, step_durations=durations, **kwargs)
    clock.advance(10)
    return run_id


# ---------------------------------------------------------------------------- shapes


def test_workflow_records_have_the_fixture_shape(client: httpx.Client) -> None:
    documented = load_fixture("workflows.json")[1]
    response = client.get("/workflows")
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    [workflow] = response.json()
    assert list(workflow) == list(documented)
    assert list(workflow["graph"]) == list(documented["graph"])
    assert WORKFLOW_TIME.match(workflow["created_at"])
    assert WORKFLOW_TIME.match(workflow["updated_at"])
    graph = workflow["graph"]
    assert {node_id: node["type"] for node_id, node in graph["nodes"].items()} == {
        "fetch": "code",
        "model": "model",
        "notify": "integration",
    }
    assert list(graph["nodes"]["model"]["metadata"]) == list(
        documented["graph"]["nodes"]["model"]["metadata"]
    )
    assert graph["edges"] == [
        ["START", "fetch"],
        ["fetch", "model"],
        ["model", "notify"],
        ["notify", "END"],
    ]
    assert (graph["entry_point"], graph["finish_point"], graph["selectedOutput"]) == (
        "fetch",
        "notify",
        "model",
    )
    canvas = json.loads(graph["node_metadata"])  # a JSON string, as documented
    assert [node["type"] for node in canvas["nodes"]] == ["start", "code", "model", "integration"]


def test_run_and_steps_have_the_fixture_shape(
    client: httpx.Client, scenario: Scenario, clock: ManualClock
) -> None:
    run_id = finished_run(scenario, clock)
    documented_run = load_fixture("runs-list.json")[0]
    documented_model, documented_slack = load_fixture("steps-model-slack.json")

    [run] = client.get(f"/workflows/{WF}/runs").json()
    assert list(run) == list(documented_run)
    assert run["id"] == run_id and run["status"] == "completed" and run["error"] is None
    assert RUN_TIME.match(run["start_time"]) and RUN_TIME.match(run["end_time"])
    assert run["elapsed_time"] == 4  # 0.12 + 0.5 + 2.5 + 1.2 + pauses, truncated
    assert run["inputs"] == {"prompt": "the report"}
    assert run["outputs"] == "Three rows for the report."
    assert list(run["all_outputs"]) == ["prompt", "fetch", "model", "notify"]
    assert run["all_outputs"]["notify"]["successful"] is True

    steps = client.get(f"/workflows/{WF}/runs/{run_id}/steps").json()
    assert [step["node_id"] for step in steps] == ["fetch", "model", "notify"]
    fetch, model, notify = steps
    for step in steps:
        assert list(step) == list(documented_model)
        assert step["status"] == "completed" and step["error"] is None
        assert RUN_TIME.match(step["start_time"]) and RUN_TIME.match(step["end_time"])
        assert step["inputs"]["run_id"] == run_id
        assert step["step_metadata"] is None and step["tokens"] == 0
    assert [step["elapsed_time"] for step in steps] == [0, 2, 1]
    assert list(model["inputs"]) == list(documented_model["inputs"])
    assert list(model["outputs"]) == list(documented_model["outputs"])
    assert model["outputs"]["id"].startswith("chatcmpl-")
    usage = model["outputs"]["usage"]
    assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"] > 0
    assert model["inputs"]["messages"] == [{"role": "user", "content": "the report"}]
    assert list(notify["inputs"]) == list(documented_slack["inputs"])
    assert list(notify["outputs"]["result"]) == list(documented_slack["outputs"]["result"])
    assert notify["inputs"]["input_mapping"] == {
        "channel": "#ops",
        "text": "Three rows for the report.",
    }
    assert fetch["outputs"]["data"]["results"] == {"rows": 3}
    assert list(fetch["outputs"]) == ["data", "error", "successfull", "successful"]
    assert fetch["outputs"]["data"]["sandbox_id"].startswith("sandbox-")
    # input_data: the workflow inputs plus every upstream node's published output
    assert list(notify["inputs"]["input_data"]) == ["prompt", "fetch", "model"]
    assert notify["inputs"]["input_data"]["model"] == "Three rows for the report."


def test_get_run_is_a_one_element_array_unless_configured(
    scenario: Scenario, clock: ManualClock
) -> None:
    run_id = finished_run(scenario, clock)
    for as_array in (True, False):
        with Emulator(scenario, run_as_array=as_array) as emulator:
            body = httpx.get(
                f"{emulator.base_url}/workflows/{WF}/runs/{run_id}", headers=AUTH
            ).json()
        run = body[0] if as_array else body
        assert isinstance(body, list) == as_array
        assert run["id"] == run_id


def test_diagram_is_mermaid_built_from_the_graph(client: httpx.Client) -> None:
    diagram = client.get(f"/workflows/{WF}/diagram").json()["diagram"]
    assert diagram.startswith("graph TD\n")
    assert "    fetch --> model" in diagram.splitlines()
    assert "    START((START))" in diagram.splitlines()
    documented = load_fixture("workflows.json")[1]["graph"]
    assert mermaid_diagram(documented) == load_fixture("diagram.json")["diagram"]


# ---------------------------------------------------------------------------- progress


def test_a_run_progresses_with_the_clock(
    client: httpx.Client, scenario: Scenario, clock: ManualClock
) -> None:
    run_id = scenario.add_run(WF, step_durations={"fetch": 1.0, "model": 2.0, "notify": 1.0})

    def state() -> tuple[dict[str, Any], list[dict[str, Any]]]:
        [run] = client.get(f"/workflows/{WF}/runs/{run_id}").json()
        return run, client.get(f"/workflows/{WF}/runs/{run_id}/steps").json()

    run, steps = state()
    assert (run["status"], run["end_time"], run["outputs"], steps) == ("running", None, None, [])

    clock.advance(1.5)  # fetch done, model under way
    run, steps = state()
    assert run["status"] == "running" and run["elapsed_time"] == 1
    assert [(s["node_id"], s["status"]) for s in steps] == [
        ("fetch", "completed"),
        ("model", "running"),
    ]
    assert steps[1]["end_time"] is None and steps[1]["outputs"] is None
    assert list(run["all_outputs"]) == ["prompt", "fetch"]

    clock.advance(3.0)  # all steps done
    run, steps = state()
    assert run["status"] == "completed" and RUN_TIME.match(run["end_time"])
    assert [s["status"] for s in steps] == ["completed"] * 3
    assert steps == sorted(steps, key=lambda s: s["start_time"])


def test_a_run_that_has_not_started_is_invisible(
    client: httpx.Client, scenario: Scenario, clock: ManualClock
) -> None:
    run_id = scenario.add_run(WF, start_at=T0 + 60)
    assert client.get(f"/workflows/{WF}/runs").json() == []
    assert client.get(f"/workflows/{WF}/runs/{run_id}").status_code == 404
    clock.advance(61)
    assert [run["id"] for run in client.get(f"/workflows/{WF}/runs").json()] == [run_id]


def test_a_hard_failure_stops_the_run(clock: ManualClock) -> None:
    scenario = Scenario([chain_workflow()], clock=clock, failed_status="error")
    run_id = finished_run(scenario, clock, fail_node="model")
    run = scenario.run(WF, run_id)
    steps = scenario.steps(WF, run_id)
    assert run is not None and steps is not None
    assert (run["status"], run["error"], run["outputs"]) == (
        "error",
        "RateLimitError: upstream model returned 429",
        None,
    )
    assert [(s["node_id"], s["status"]) for s in steps] == [
        ("fetch", "completed"),
        ("model", "error"),
    ]
    assert steps[1]["error"] == run["error"] and steps[1]["outputs"] is None


def test_a_soft_failure_reports_successful_false(
    client: httpx.Client, scenario: Scenario, clock: ManualClock
) -> None:
    run_id = finished_run(scenario, clock, fail_node="notify")
    [run] = client.get(f"/workflows/{WF}/runs/{run_id}").json()
    notify = client.get(f"/workflows/{WF}/runs/{run_id}/steps").json()[-1]
    assert run["status"] == "completed"
    assert (notify["status"], notify["error"]) == ("completed", None)
    assert notify["outputs"]["result"] == {
        "data": {},
        "error": "channel_not_found",
        "successfull": False,
        "successful": False,
    }
    # The same node can fail hard too.
    hard_id = finished_run(scenario, clock, fail_node="notify", fail_soft=False)
    [hard] = client.get(f"/workflows/{WF}/runs/{hard_id}").json()
    assert (hard["status"], hard["error"]) == ("failed", "channel_not_found")


def test_schedules_make_runs_lazily_and_reproducibly(clock: ManualClock) -> None:
    def build(seed: int) -> Scenario:
        scenario = Scenario([chain_workflow()], clock=ManualClock(T0), seed=seed)
        scenario.add_schedule(WF, 5.0, duration=(1.0, 2.0), failure_rate=0.5, fail_runs={1})
        return scenario

    first, again, other = build(1), build(1), build(2)
    for scenario in (first, again, other):
        assert isinstance(scenario.clock, ManualClock)
        scenario.clock.advance(12)  # runs at 0, 5, 10
    runs = first.runs(WF)
    assert runs is not None and len(runs) == 3
    assert runs == again.runs(WF)
    assert [r["id"] for r in runs] != [r["id"] for r in other.runs(WF) or []]
    assert [run["start_time"] for run in runs] == sorted(
        (r["start_time"] for r in runs), reverse=True
    )
    assert runs[2]["status"] == "completed"  # 1-2 s long, started 12 s ago
    assert runs[1]["status"] == "failed" or runs[1]["all_outputs"]["notify"]["successful"] is False


def test_history_failure_rate_is_deterministic(clock: ManualClock) -> None:
    def outcomes(seed: int) -> list[bool]:
        scenario = Scenario([chain_workflow()], clock=clock, seed=seed)
        scenario.add_history(WF, 40, every=10, failure_rate=0.4)
        # `notify` is the only node declaring a failure, a soft one: successful false
        return [run["all_outputs"]["notify"]["successful"] for run in scenario.runs(WF) or []]

    assert outcomes(3) == outcomes(3)
    assert len(outcomes(3)) == 40
    assert 6 <= outcomes(3).count(False) <= 26
    assert outcomes(3) != outcomes(4)


def test_demo_shows_finished_runs_and_failures_within_30_seconds(clock: ManualClock) -> None:
    scenario = demo_scenario(clock)
    names = {record["name"] for record in scenario.workflow_records()}
    assert names == {"hi", "joke-to-slack", "support-triage", "nightly-report"}
    history = {wf: len(scenario.runs(wf) or []) for wf in scenario.workflow_ids()}
    assert all(count >= 3 for count in history.values())  # finished runs from the last minutes

    clock.advance(25)
    all_runs = [run for wf in scenario.workflow_ids() for run in scenario.runs(wf) or []]
    assert len(all_runs) - sum(history.values()) >= 12  # new runs keep coming
    assert sum(run["status"] == "completed" for run in all_runs) >= 20
    assert any(run["status"] == "failed" for run in all_runs)
    soft = [
        value
        for run in all_runs
        for value in run["all_outputs"].values()
        if isinstance(value, dict) and value.get("successful") is False
    ]
    assert soft  # an integration answered successful: false


def test_demo_branches_and_joins() -> None:
    clock = ManualClock(T0)
    scenario = demo_scenario(clock)
    clock.advance(40)
    for run in scenario.runs(demo.SUPPORT_TRIAGE_ID) or []:
        nodes = [s["node_id"] for s in scenario.steps(demo.SUPPORT_TRIAGE_ID, run["id"]) or []]
        assert not {"slack_escalation", "email_reply"} <= set(nodes)  # one branch only
    for run in scenario.runs(demo.NIGHTLY_REPORT_ID) or []:
        steps = {s["node_id"]: s for s in scenario.steps(demo.NIGHTLY_REPORT_ID, run["id"]) or []}
        if "post_report" in steps:
            upstream = steps["post_report"]["inputs"]["input_data"]
            assert {"fetch_metrics", "summarize", "build_chart"} <= set(upstream)
            # the two branches run side by side
            assert steps["build_chart"]["start_time"] == steps["summarize"]["start_time"]


# ---------------------------------------------------------------------------- errors


def test_auth_is_required(emulator: Emulator) -> None:
    url = f"{emulator.base_url}/workflows"
    with httpx.Client() as plain:
        for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": "demo-key"}):
            response = plain.get(url, headers=headers)
            assert response.status_code == 401
            assert response.json() == {"detail": "Invalid or missing API key"}
        assert plain.get(url, headers=AUTH).status_code == 200


def test_unknown_things_are_404(client: httpx.Client) -> None:
    for path in (
        "/workflows/nope/runs",
        f"/workflows/{WF}/runs/nope",
        f"/workflows/{WF}/runs/nope/steps",
        "/workflows/nope/diagram",
        "/elsewhere",
    ):
        response = client.get(path)
        assert response.status_code == 404, path
        assert "detail" in response.json()


@pytest.mark.parametrize("query", ["limit=0", "limit=101", "limit=ten", "offset=-1"])
def test_bad_paging_is_400(client: httpx.Client, query: str) -> None:
    response = client.get(f"/workflows/{WF}/runs?{query}")
    assert response.status_code == 400
    assert "detail" in response.json()


def test_paging_is_newest_first_and_bounded(scenario: Scenario, clock: ManualClock) -> None:
    ids = scenario.add_history(WF, 30, every=10)  # oldest first
    newest_first = ids[::-1]
    with (
        Emulator(scenario, history_limit=25) as emulator,
        httpx.Client(base_url=emulator.base_url, headers=AUTH) as client,
    ):

        def page(query: str) -> list[str]:
            return [run["id"] for run in client.get(f"/workflows/{WF}/runs?{query}").json()]

        assert page("limit=10") == newest_first[:10]
        assert page("limit=10&offset=10") == newest_first[10:20]
        assert page("limit=10&offset=20") == newest_first[20:25]  # only the newest 25 listed
        assert page("") == newest_first[:25]
        assert page("limit=5&offset=30") == []
        # Runs beyond the listed window stay reachable by id.
        assert client.get(f"/workflows/{WF}/runs/{ids[0]}").status_code == 200


def test_execute_starts_a_run_now(client: httpx.Client) -> None:
    response = client.post(f"/workflows/{WF}/execute", json={"prompt": "hello"})
    assert response.status_code == 200
    body = response.json()
    assert body["message"] == "Workflow execution started"
    [run] = client.get(f"/workflows/{WF}/runs/{body['run_id']}").json()
    assert (run["status"], run["inputs"]) == ("running", {"prompt": "hello"})
    bad = client.post(f"/workflows/{WF}/execute", content=b"[1, 2]")
    assert bad.status_code == 400
    assert client.post("/workflows/nope/execute", json={}).status_code == 404
    assert client.get(f"/workflows/{WF}/execute").status_code == 405


# ---------------------------------------------------------------------------- fixtures


def test_fixture_scenario_serves_the_fixtures_unchanged() -> None:
    with (
        Emulator(fixture_scenario()) as emulator,
        httpx.Client(base_url=emulator.base_url, headers=AUTH) as client,
    ):
        joke = f"/workflows/{FIXTURE_JOKE_WORKFLOW_ID}"
        hi_run = load_fixture("run.json")[0]["id"]
        assert client.get("/workflows").json() == load_fixture("workflows.json")
        assert client.get(f"{joke}/runs").json() == load_fixture("runs-list.json")
        assert client.get(f"{joke}/runs/{FIXTURE_STEPS_RUN_ID}/steps").json() == load_fixture(
            "steps-model-slack.json"
        )
        assert client.get(f"{joke}/diagram").json() == load_fixture("diagram.json")
        hi = f"/workflows/{FIXTURE_HI_WORKFLOW_ID}"
        assert client.get(f"{hi}/runs/{hi_run}").json() == load_fixture("run.json")
        # The fixture workflows can still be executed.
        run_id = client.post(f"{hi}/execute", json={"query": "hi"}).json()["run_id"]
        assert client.get(f"{hi}/runs/{run_id}").status_code == 200


def test_fixture_scenario_reads_a_shared_folder(tmp_path: Any) -> None:
    folder = tmp_path / "fixtures"
    folder.mkdir()
    for name in (
        "workflows.json",
        "runs-list.json",
        "run.json",
        "steps-model-slack.json",
        "diagram.json",
    ):
        (folder / name).write_text(json.dumps(load_fixture(name)))
    scenario = fixture_scenario(tmp_path)
    assert scenario.workflow_records() == load_fixture("workflows.json")


# ---------------------------------------------------------------------------- faults


def test_status_faults_answer_json_or_html(emulator: Emulator, client: httpx.Client) -> None:
    emulator.faults.add(FaultRule(action="status", status=503, kind="list_workflows"))
    emulator.faults.add(FaultRule(action="status", status=502, body_format="html"))
    first = client.get("/workflows")
    assert (first.status_code, first.json()) == (503, {"detail": "Service Unavailable"})
    second = client.get(f"/workflows/{WF}/runs")
    assert second.status_code == 502 and second.headers["content-type"].startswith("text/html")
    assert "502 Bad Gateway" in second.text
    assert client.get("/workflows").status_code == 200  # each rule hit once


def test_rate_limit_sends_retry_after_in_seconds_or_as_a_date(
    emulator: Emulator, client: httpx.Client
) -> None:
    emulator.faults.add(FaultRule(action="rate_limit", retry_after=2))
    emulator.faults.add(FaultRule(action="rate_limit", retry_after=30, retry_after_format="date"))
    seconds = client.get("/workflows")
    assert (seconds.status_code, seconds.headers["retry-after"]) == (429, "2")
    dated = client.get("/workflows")
    assert dated.status_code == 429
    moment = email.utils.parsedate_to_datetime(dated.headers["retry-after"]).timestamp()
    assert time.time() + 29 <= moment <= time.time() + 32


def test_truncated_body_is_a_protocol_error(emulator: Emulator, client: httpx.Client) -> None:
    emulator.faults.add(FaultRule(action="truncate", kind="list_runs"))
    with pytest.raises(httpx.RemoteProtocolError):
        client.get(f"/workflows/{WF}/runs")
    assert client.get(f"/workflows/{WF}/runs").status_code == 200


def test_reset_is_a_connection_error(emulator: Emulator, client: httpx.Client) -> None:
    emulator.faults.add(FaultRule(action="reset", kind="diagram"))
    with pytest.raises(httpx.TransportError):
        client.get(f"/workflows/{WF}/diagram")
    assert client.get(f"/workflows/{WF}/diagram").status_code == 200


def test_delay_trips_a_client_timeout(emulator: Emulator, client: httpx.Client) -> None:
    emulator.faults.add(FaultRule(action="delay", delay=0.5))
    with pytest.raises(httpx.ReadTimeout):
        client.get("/workflows", timeout=0.1)
    emulator.faults.add(FaultRule(action="delay", delay=0.1))
    assert client.get("/workflows").status_code == 200  # a short delay is just slow


def test_bodies_that_are_not_what_they_should_be(emulator: Emulator, client: httpx.Client) -> None:
    emulator.faults.add(FaultRule(action="html"))
    emulator.faults.add(FaultRule(action="not_json"))
    emulator.faults.add(FaultRule(action="wrong_shape", times=2))
    html = client.get("/workflows")
    assert html.status_code == 200 and html.headers["content-type"].startswith("text/html")
    text = client.get("/workflows")
    assert text.status_code == 200
    with pytest.raises(json.JSONDecodeError):
        text.json()
    wrapped = client.get("/workflows").json()
    assert isinstance(wrapped, dict) and isinstance(wrapped["data"], list)
    diagram = client.get(f"/workflows/{WF}/diagram").json()
    assert isinstance(diagram, list)
    assert isinstance(client.get("/workflows").json(), list)


def test_fault_rules_count_down_match_by_kind_and_can_be_unlimited(
    emulator: Emulator, client: httpx.Client
) -> None:
    emulator.faults.add(FaultRule(action="status", status=500, kind="steps", times=None))
    emulator.faults.add(FaultRule(action="status", status=503, kind="list_runs", times=2))
    codes = [client.get(f"/workflows/{WF}/runs").status_code for _ in range(3)]
    assert codes == [503, 503, 200]
    assert client.get("/workflows").status_code == 200
    assert [client.get(f"/workflows/{WF}/runs/x/steps").status_code for _ in range(3)] == [500] * 3
    emulator.faults.clear()
    assert client.get(f"/workflows/{WF}/runs/x/steps").status_code == 404


def test_fault_rules_reject_bad_json() -> None:
    with pytest.raises(ValueError):
        FaultRule.from_json({"action": "explode"})
    with pytest.raises(ValueError):
        FaultRule.from_json({"action": "status", "colour": "red"})
    with pytest.raises(ValueError):
        FaultRule.from_json({"action": "status", "kind": "everything"})


# ---------------------------------------------------------------------------- control


def test_control_endpoints_steer_the_emulator(emulator: Emulator, client: httpx.Client) -> None:
    control = httpx.Client(base_url=f"{emulator.root_url}/_emulator")
    added = control.post(
        "/faults",
        json={"rules": [{"action": "rate_limit", "kind": "list_workflows", "retry_after": 3}]},
    )
    assert added.status_code == 200 and added.json()["added"] == 1
    assert control.get("/faults").json()["rules"][0]["remaining"] == 1
    assert client.get("/workflows").headers["retry-after"] == "3"
    control.post("/faults", json={"action": "status", "status": 500, "times": None})
    assert control.delete("/faults").status_code == 200
    assert client.get("/workflows").status_code == 200
    assert control.post("/faults", json={"action": "nope"}).status_code == 400

    made = control.post(
        "/runs", json={"workflow_id": WF, "fail_node": "model", "durations": {"fetch": 0.1}}
    )
    run_id = made.json()["run_id"]
    assert [run["id"] for run in client.get(f"/workflows/{WF}/runs").json()] == [run_id]
    assert control.post("/runs", json={"workflow_id": "nope"}).status_code == 404
    assert control.post("/runs", json={"workflow_id": WF, "fail_node": "nope"}).status_code == 400

    assert control.post("/clock", json={"advance": 10}).json()["now"] == T0 + 10
    [run] = client.get(f"/workflows/{WF}/runs/{run_id}").json()
    assert run["status"] == "failed"

    assert control.post("/api-key", json={"api_key": "rotated"}).status_code == 200
    assert client.get("/workflows").status_code == 401
    assert client.get("/workflows", headers={"Authorization": "Bearer rotated"}).status_code == 200
    control.close()


def test_clock_control_needs_a_manual_clock() -> None:
    with Emulator(Scenario([chain_workflow()])) as emulator:
        response = httpx.post(f"{emulator.root_url}/_emulator/clock", json={"advance": 1})
    assert response.status_code == 409


def test_requests_are_counted(emulator: Emulator, client: httpx.Client) -> None:
    emulator.faults.add(FaultRule(action="rate_limit", kind="list_runs"))
    emulator.faults.add(FaultRule(action="reset", kind="list_workflows"))
    client.get(f"/workflows/{WF}/runs")
    client.get(f"/workflows/{WF}/runs?limit=5")
    with pytest.raises(httpx.TransportError):
        client.get("/workflows")
    httpx.get(f"{emulator.root_url}/_emulator/stats")  # control calls are not counted
    stats = emulator.stats()
    assert stats["total"] == 3
    assert stats["by_kind"] == {"list_runs": 2, "list_workflows": 1}
    assert stats["by_status"] == {"list_runs": {"429": 1, "200": 1}, "list_workflows": {"0": 1}}
    recent = stats["recent"]
    assert [entry["path"] for entry in recent] == [
        f"/api/v1/workflow/workflows/{WF}/runs",
        f"/api/v1/workflow/workflows/{WF}/runs?limit=5",
        "/api/v1/workflow/workflows",
    ]
    assert recent[0]["at"] <= recent[1]["at"] <= recent[2]["at"] <= time.monotonic()
    over_http = httpx.get(f"{emulator.root_url}/_emulator/stats").json()
    assert over_http["by_kind"] == stats["by_kind"]
    httpx.delete(f"{emulator.root_url}/_emulator/stats")
    assert emulator.stats()["total"] == 0


# ---------------------------------------------------------------------------- server


def test_connections_are_kept_alive(emulator: Emulator) -> None:
    connection = http.client.HTTPConnection("127.0.0.1", emulator.port, timeout=5)
    for _ in range(3):
        connection.request("GET", "/api/v1/workflow/workflows", headers=AUTH)
        response = connection.getresponse()
        assert response.status == 200 and json.loads(response.read())
    connection.close()


def test_stop_is_quick_and_a_restart_reuses_the_port(scenario: Scenario) -> None:
    emulator = Emulator(scenario)
    url = emulator.start()
    with httpx.Client(headers=AUTH) as client:
        assert client.get(f"{url}/workflows").status_code == 200  # leaves a kept-alive connection
        began = time.monotonic()
        emulator.stop()
        assert time.monotonic() - began < 1
        with pytest.raises(httpx.TransportError):
            client.get(f"{url}/workflows")
        assert emulator.start() == url
        try:
            assert client.get(f"{url}/workflows").status_code == 200
        finally:
            emulator.stop()
    emulator.stop()  # twice is fine


def test_module_runs_until_sigterm() -> None:
    process = subprocess.Popen(
        [sys.executable, "-m", "exporter.emulator", "--port", "0", "--scenario", "fixtures"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None
        base_url = process.stdout.readline().strip()
        assert base_url.startswith("http://127.0.0.1:") and base_url.endswith("/api/v1/workflow")
        response = httpx.get(f"{base_url}/workflows", headers=AUTH)
        assert response.json() == load_fixture("workflows.json")
        process.terminate()
        assert process.wait(timeout=5) == 0
    finally:
        process.kill()
        process.wait()
