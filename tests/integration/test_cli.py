"""The real command line, in a subprocess, against the emulator and a real OTLP receiver."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from tests.support.daemon import wait_for
from tests.support.ledger import LedgerView
from tests.support.otlp_receiver import ReceivedSpan
from tests.support.world import API_KEY, World

pytestmark = pytest.mark.integration

PROTOCOLS = ["grpc", "http/protobuf"]
STATUS_ERROR = 2  # OTLP Status.STATUS_CODE_ERROR


def roots(spans: list[ReceivedSpan]) -> list[ReceivedSpan]:
    return [span for span in spans if not span.parent_span_id]


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_once_exports_every_finished_run_then_nothing(world: World, protocol: str) -> None:
    expected = world.finished_runs()
    first = world.cli("once", protocol=protocol)
    assert first.returncode == 0, first.stderr
    spans = world.receiver.wait_for_spans(world.expected_span_count(), timeout=10)
    assert {span.protocol for span in spans} == {"grpc" if protocol == "grpc" else "http"}
    # One trace per run, its id the run id; one root and one child per step.
    traces = world.receiver.traces()
    assert set(traces) == {run_id.replace("-", "") for run_id in expected}
    for run_id, steps in expected.items():
        trace = traces[run_id.replace("-", "")]
        assert len(roots(trace)) == 1
        assert sorted(s.attributes["orchestra.step.id"] for s in trace if s.parent_span_id) == (
            sorted(str(step["id"]) for step in steps)
        )
    assert world.receiver.duplicate_count() == 0
    failed_roots = [r for r in roots(spans) if r.status_code == STATUS_ERROR]
    assert failed_roots, "the scenario has failing runs; their roots must say ERROR"
    # Request budget: one workflow list, one history page per workflow, one steps call per run.
    requests = world.requests()
    assert requests.get("list_workflows") == 1
    assert requests.get("list_runs") == len(world.scenario.workflow_ids())
    assert requests.get("steps") == len(expected)
    assert "poll:" in first.stderr and API_KEY not in first.stderr + first.stdout

    world.emulator.reset_stats()
    second = world.cli("once", protocol=protocol)
    assert second.returncode == 0, second.stderr
    assert world.requests().get("steps", 0) == 0, "an exported run was fetched again"
    assert world.requests().get("list_runs") == len(world.scenario.workflow_ids())
    time.sleep(0.3)
    assert world.receiver.span_count() == len(spans), "the second once exported again"


def test_receiver_down_then_up_loses_nothing(world: World) -> None:
    world.receiver.stop()
    down = world.cli("once", protocol="http/protobuf")
    assert down.returncode == 1, down.stderr
    assert "not confirmed" in down.stderr
    # Nothing was acknowledged: every span waits in the ledger's spool.
    assert LedgerView(world.state_path).spool_count() == world.expected_span_count()
    world.receiver.start()
    world.emulator.reset_stats()
    up = world.cli("once", protocol="http/protobuf")
    assert up.returncode == 0, up.stderr
    world.receiver.wait_for_spans(world.expected_span_count(), timeout=10)
    assert world.receiver.duplicate_count() == 0
    # The spool, not the API, supplied them: no run was fetched a second time.
    assert world.requests().get("steps", 0) == 0
    assert LedgerView(world.state_path).spool_count() == 0


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_daemon_exports_runs_that_finish_while_it_runs(world: World, protocol: str) -> None:
    assert world.cli("once", protocol=protocol).returncode == 0
    baseline = world.receiver.span_count()
    workflow_id = world.scenario.workflow_ids()[1]  # joke-to-slack: model -> slack
    run_id = world.scenario.add_run(workflow_id, step_durations={"model": 2.0})
    with world.daemon(protocol=protocol, ORCHESTRA_POLL_INTERVAL="0.5") as daemon:
        world.clock.advance(1.0)  # the model step is running: nothing to export yet
        wait_for(lambda: daemon.polls() >= 2, 30, "the daemon did not poll the running step")
        world.clock.advance(1.5)  # model done, slack running: the model span goes out
        trace_id = run_id.replace("-", "")
        wait_for(
            lambda: any(s.name == "model" for s in world.receiver.traces().get(trace_id, [])),
            15,
            "the finished model step of a run still in flight was not exported",
        )
        assert not roots(world.receiver.traces()[trace_id]), "root sent before the run ended"
        world.clock.advance(30)  # the run ends
        wait_for(
            lambda: len(roots(world.receiver.traces().get(trace_id, []))) == 1,
            15,
            "the root span did not follow the run's end",
        )
        code, took = daemon.terminate(timeout=30)
    assert code == 0, daemon.stderr
    assert took < 25, "SIGTERM took too long"
    trace = world.receiver.traces()[trace_id]
    assert sorted(s.name for s in trace) == sorted(["joke-to-slack", "model", "slack_integration"])
    assert world.receiver.span_count() == baseline + 3
    assert world.receiver.duplicate_count() == 0


def test_wrong_api_key_is_exit_2_and_said_once(world: World) -> None:
    result = world.cli("once", ORCHESTRA_API_KEY="wrong-key-1234")
    assert result.returncode == 2, result.stderr
    assert "rejected the API key" in result.stderr
    assert result.stderr.count("rejected the API key") == 1
    assert "wrong-key-1234" not in result.stderr + result.stdout


def test_bad_configuration_lists_every_problem(world: World) -> None:
    result = world.cli(
        "once",
        ORCHESTRA_POLL_INTERVAL="soon",
        ORCHESTRA_SHARD="4/2",
        ORCHESTRA_LOG_LEVEL="loud",
    )
    assert result.returncode == 2
    for key in ("ORCHESTRA_POLL_INTERVAL", "ORCHESTRA_SHARD", "ORCHESTRA_LOG_LEVEL"):
        assert key in result.stderr
    assert "Traceback" not in result.stderr


def test_export_run_sends_one_run_again(world: World) -> None:
    workflow_id = world.scenario.workflow_ids()[0]
    run = (world.scenario.runs(workflow_id) or [])[0]
    result = world.cli("export-run", workflow_id, str(run["id"]))
    assert result.returncode == 0, result.stderr
    spans = world.receiver.wait_for_spans(1, timeout=10)
    assert {s.trace_id for s in spans} == {str(run["id"]).replace("-", "")}
    assert len(roots(spans)) == 1


def test_check_reports_api_and_otlp(world: World) -> None:
    ok = world.cli("check")
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert "Orchestra API: ok" in ok.stdout and "OTLP endpoint: ok" in ok.stdout
    world.receiver.stop()
    down = world.cli("check")
    assert down.returncode == 1
    assert "OTLP endpoint: FAILED" in down.stdout


def test_check_names_an_otlp_setting_the_exporter_refuses(world: World) -> None:
    result = world.cli("check", OTEL_EXPORTER_OTLP_COMPRESSION="deflate")
    assert result.returncode == 1, result.stdout + result.stderr
    line = next(x for x in result.stdout.splitlines() if x.startswith("OTLP endpoint:"))
    assert line.startswith("OTLP endpoint: FAILED, grpc") and "COMPRESSION" in line, line
    assert "Traceback" not in result.stderr
    assert "polling:" in result.stdout  # the other checks still ran


def test_convert_turns_the_documented_steps_into_otlp_json(world: World, shared_dir: Path) -> None:
    steps = shared_dir / "fixtures" / "steps-model-slack.json"
    result = world.cli("convert", str(steps))
    assert result.returncode == 0, result.stderr
    document = json.loads(result.stdout)
    spans = document["resourceSpans"][0]["scopeSpans"][0]["spans"]
    assert {span["traceId"] for span in spans} == {"5b69669f975a49afa33a61ff9ae5a20f"}
    assert sorted(span["name"] for span in spans) == ["model", "slack_integration", "unknown"]
