"""Failures as OTLP log records, through the real command line and a real receiver.

docs/design.md, "Failures as logs": every failed step and failed run is also one ERROR log
record carrying its span's trace and span ids, stamped at the span's end; captured with
the span and deleted from the spool only once the log exporter confirmed it.
"""

from __future__ import annotations

import json
import signal
import time
from collections import Counter

import pytest

from tests.support.daemon import wait_for
from tests.support.ledger import LedgerView
from tests.support.otlp_receiver import ReceivedSpan
from tests.support.world import World

pytestmark = pytest.mark.integration

PROTOCOLS = ["grpc", "http/protobuf"]
STATUS_ERROR = 2
SEVERITY_ERROR = 17


def failed_spans(world: World) -> dict[tuple[str, str], ReceivedSpan]:
    return {span.key: span for span in world.receiver.spans() if span.status_code == STATUS_ERROR}


def export_everything(
    world: World, protocol: str, **env: str
) -> dict[tuple[str, str], ReceivedSpan]:
    result = world.cli("once", protocol=protocol, **env)
    assert result.returncode == 0, result.stderr
    world.receiver.wait_for_spans(world.expected_span_count(), timeout=10)
    failed = failed_spans(world)
    assert len(failed) >= 2, "the scenario has failing steps and runs"
    return failed


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_every_failure_is_one_log_record_tied_to_its_span(world: World, protocol: str) -> None:
    failed = export_everything(world, protocol)
    world.receiver.wait_for_logs(len(failed), timeout=10)
    time.sleep(0.3)  # nothing more may come
    logs = world.receiver.logs()
    assert Counter(log.key for log in logs) == Counter(list(failed)), "one record per failure"
    assert {log.protocol for log in logs} == {"grpc" if protocol == "grpc" else "http"}
    for log in logs:
        span = failed[log.key]
        assert (log.severity_number, log.severity_text) == (SEVERITY_ERROR, "ERROR")
        assert log.time_unix_nano == span.end_ns
        assert log.body == span.status_message
        for key in ("orchestra.workflow.id", "orchestra.run.id", "error.type"):
            assert log.attributes[key] == span.attributes[key], key
        if span.parent_span_id:
            assert log.attributes["orchestra.node.id"] == span.attributes["orchestra.node.id"]


def test_logs_exporter_none_sends_no_log_record(world: World) -> None:
    export_everything(world, "grpc", OTEL_LOGS_EXPORTER="none")
    time.sleep(0.5)
    assert world.receiver.logs() == []
    assert LedgerView(world.state_path).spool_count("logs") == 0


@pytest.mark.parametrize("opt_in", ["logs", "logs/dup"])
def test_exceptions_move_onto_the_log_records_when_asked(world: World, opt_in: str) -> None:
    failed = export_everything(
        world, "grpc", OTEL_SEMCONV_EXCEPTION_SIGNAL_OPT_IN=opt_in, ORCHESTRA_LOG_LEVEL="debug"
    )
    logs = {log.key: log for log in world.receiver.wait_for_logs(len(failed), timeout=10)}
    exceptions = [log for log in logs.values() if "exception.message" in log.attributes]
    assert exceptions, "the scenario's failures include exceptions (RateLimitError: ...)"
    for log in exceptions:
        span = failed[log.key]
        events = [event for event in span.events if event.name == "exception"]
        assert len(events) == (1 if opt_in == "logs/dup" else 0), span.name
        assert log.attributes["exception.message"]
        assert (
            log.attributes.get("exception.type", span.attributes["error.type"])
            == (span.attributes["error.type"])
        )


def test_an_outage_loses_no_log_record_and_duplicates_none(world: World) -> None:
    world.receiver.stop()
    down = world.cli("once", protocol="http/protobuf")
    assert down.returncode == 1, down.stderr
    spooled = LedgerView(world.state_path).spool_count("logs")
    assert spooled >= 2, "failure log records wait in the spool while the backend is down"
    world.receiver.start()
    up = world.cli("once", protocol="http/protobuf")
    assert up.returncode == 0, up.stderr
    failed = failed_spans(world)
    logs = world.receiver.wait_for_logs(len(failed), timeout=10)
    assert Counter(log.key for log in logs) == Counter(list(failed))
    assert len(failed) == spooled
    assert LedgerView(world.state_path).spool_count("logs") == 0


def test_a_sigkill_loses_no_log_record(world: World) -> None:
    """Killed while the receiver holds its exports: after a restart everything arrives,
    and a record is sent twice at most (sent, not yet confirmed at the kill)."""
    world.receiver.set_delay(1.5)
    with world.daemon(ORCHESTRA_POLL_INTERVAL="0.5") as daemon:
        wait_for(lambda: world.receiver.attempt_count() >= 1, 20, "a first export attempt")
        daemon.process.send_signal(signal.SIGKILL)
        daemon.process.wait(timeout=10)
    world.receiver.set_delay(0)
    with world.daemon(ORCHESTRA_POLL_INTERVAL="0.5") as daemon:
        wait_for(lambda: _all_logs_arrived(world), 30, lambda: daemon.tail())
        assert daemon.stop() == 0
    copies = Counter(log.key for log in world.receiver.logs())
    assert set(copies) == set(failed_spans(world))
    assert max(copies.values()) <= 2


def _all_logs_arrived(world: World) -> bool:
    if len(world.receiver.unique_span_keys()) < world.expected_span_count():
        return False
    keys = {log.key for log in world.receiver.logs()}
    return keys >= set(failed_spans(world))


def test_the_daemons_own_log_lines_about_a_run_carry_its_trace_id(world: World) -> None:
    """JSON logs: a line about a run links to the run's trace (Loki, Elastic)."""
    workflow_id = world.scenario.workflow_ids()[0]
    world.clock.advance(60)
    run_id = world.scenario.add_run(
        workflow_id, start_at=world.clock() - 30, inputs={"traceparent": "not-a-traceparent"}
    )
    result = world.cli("once", ORCHESTRA_LOG_FORMAT="json")
    assert result.returncode == 0, result.stderr
    lines = [json.loads(line) for line in result.stderr.splitlines() if line.startswith("{")]
    about = [line for line in lines if run_id in line["message"]]
    assert about, result.stderr
    assert {line.get("trace_id") for line in about} == {run_id.replace("-", "")}
