"""The alerting metrics, scraped from the real daemon and received over OTLP."""

from __future__ import annotations

import re
import signal
import socket
import sqlite3
import subprocess
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.harness import World, make_world, stop_daemon, wait_until

pytestmark = pytest.mark.integration

OPENMETRICS = "application/openmetrics-text; version=1.0.0"
SAMPLE = re.compile(r"^(?P<name>[a-zA-Z_:][\w:]*)(?:\{(?P<labels>[^}]*)\})? (?P<value>\S+)")
LABEL = re.compile(r'(\w+)="((?:[^"\\]|\\.)*)"')


@pytest.fixture
def world(tmp_path: Path) -> Iterator[World]:
    yield from make_world(tmp_path)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def scrape(port: int, accept: str = OPENMETRICS) -> str:
    request = urllib.request.Request(f"http://127.0.0.1:{port}/metrics", headers={"Accept": accept})
    with urllib.request.urlopen(request, timeout=5) as response:
        return str(response.read().decode())


def samples(text: str, name: str) -> list[tuple[dict[str, str], float, str]]:
    """(labels, value, the exemplar part after '#') of every sample called `name`."""
    found = []
    for line in text.splitlines():
        match = SAMPLE.match(line)
        if match and match["name"] == name:
            labels = dict(LABEL.findall(match["labels"] or ""))
            exemplar = line.split(" # ", 1)[1] if " # " in line else ""
            found.append((labels, float(match["value"]), exemplar))
    return found


def readyz(port: int) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=5) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode()
    except urllib.error.URLError:
        return 0, "not listening yet"


def served_step_outcomes(world: World) -> Counter[tuple[str, str]]:
    """(node, outcome) of every step of every finished run, as the emulator served them."""
    counts: Counter[tuple[str, str]] = Counter()
    for steps in world.finished_runs().values():
        for step in steps:
            failed = step["status"] == "failed" or bool(step["error"])
            outputs = step.get("outputs")
            result = outputs.get("result") if isinstance(outputs, dict) else None
            if isinstance(result, dict) and result.get("successful") is False:
                failed = True
            if isinstance(outputs, dict) and outputs.get("successful") is False:
                failed = True
            counts[(str(step["node_id"]), "failed" if failed else str(step["status"]))] += 1
    return counts


def scraped_step_outcomes(text: str) -> Counter[tuple[str, str]]:
    counts: Counter[tuple[str, str]] = Counter()
    for labels, value, _ in samples(text, "orchestra_steps_total"):
        counts[(labels["node"], labels["outcome"])] += int(value)
    return counts


def start(world: World, port: int, **extra: str) -> subprocess.Popen[str]:
    return world.daemon(
        ORCHESTRA_HTTP_ADDR=f"127.0.0.1:{port}", ORCHESTRA_POLL_INTERVAL="0.5", **extra
    )


def test_counts_match_what_the_api_served_even_after_a_kill(world: World) -> None:
    port = free_port()
    expected = served_step_outcomes(world)
    assert any(outcome == "failed" for _, outcome in expected), "the scenario must fail somewhere"
    daemon = start(world, port)
    try:
        wait_until(lambda: world.receiver.span_count() >= world.expected_span_count(), 20, "export")
        wait_until(lambda: scraped_step_outcomes(scrape(port)) == expected, 10, "step counts")
        runs = samples(scrape(port), "orchestra_runs_total")
        assert sum(value for _, value, _ in runs) == len(world.finished_runs())
    finally:
        daemon.send_signal(signal.SIGKILL)
        daemon.wait(timeout=10)
    # More runs finish while it is down; the restarted daemon counts them, and only them.
    workflow_id = world.scenario.workflow_ids()[1]
    world.scenario.add_run(workflow_id, start_at=world.clock() - 20, fail_node="slack_integration")
    expected = served_step_outcomes(world)
    restarted = start(world, port)
    try:
        wait_until(lambda: world.receiver.span_count() >= world.expected_span_count(), 20, "export")
        wait_until(lambda: scraped_step_outcomes(scrape(port)) == expected, 10, "recount")
        assert scraped_step_outcomes(scrape(port)) == expected, "counted twice after restart"
    finally:
        code, stderr = stop_daemon(restarted)
    assert code == 0, stderr


def test_failure_exemplar_points_at_a_failed_run(world: World) -> None:
    port = free_port()
    daemon = start(world, port)
    try:
        wait_until(lambda: world.receiver.span_count() >= world.expected_span_count(), 20, "export")
        text = scrape(port)
    finally:
        code, stderr = stop_daemon(daemon)
    assert code == 0, stderr
    # Nodes that never failed show failed=0 (created at discovery), with no run to point at.
    failed = [
        s for s in samples(text, "orchestra_steps_total") if s[0]["outcome"] == "failed" and s[1]
    ]
    assert failed
    failed_traces = {span.trace_id for span in world.receiver.spans() if span.status_code == 2}
    for labels, _, exemplar in failed:
        match = re.search(r'trace_id="([0-9a-f]{32})"', exemplar)
        assert match, f"no exemplar on {labels}"
        assert match.group(1) in failed_traces
    # Duration histograms carry exemplars too; plain Prometheus text has none.
    assert any(e for _, _, e in samples(text, "orchestra_step_duration_seconds_bucket"))
    assert " # {" not in scrape_after_restart_free(world)


def scrape_after_restart_free(world: World) -> str:
    """The classic text format from a fresh daemon (no exemplars in that format)."""
    port = free_port()
    daemon = start(world, port)
    try:
        wait_until(lambda: readyz(port)[0] == 200, 15, "ready")
        return scrape(port, accept="text/plain")
    finally:
        stop_daemon(daemon)


@pytest.mark.parametrize("protocol", ["grpc", "http/protobuf"])
def test_metrics_arrive_over_otlp(world: World, protocol: str) -> None:
    result = world.cli("once", protocol=protocol)
    assert result.returncode == 0, result.stderr
    points = world.receiver.metric_points()
    by_name = {point.name: point for point in points}
    assert {
        "orchestra.steps",
        "orchestra.runs",
        "orchestra.step.duration",
        "orchestra.run.duration",
        "gen_ai.client.token.usage",
        "gen_ai.client.operation.duration",
    } <= set(by_name)
    assert by_name["gen_ai.client.operation.duration"].unit == "s"
    assert by_name["gen_ai.client.token.usage"].unit == "{token}"
    tokens = [p for p in points if p.name == "gen_ai.client.token.usage"]
    assert {p.attributes["gen_ai.token.type"] for p in tokens} == {"input", "output"}
    assert all("gen_ai.request.model" in p.attributes for p in tokens)
    steps = [p for p in points if p.name == "orchestra.steps"]
    assert sum(p.value for p in steps) == sum(len(s) for s in world.finished_runs().values())
    assert all(
        {"orchestra.workflow.id", "orchestra.node.id", "orchestra.outcome"} <= set(p.attributes)
        for p in steps
    )
    failed_durations = [
        p
        for p in points
        if p.name == "orchestra.step.duration" and p.attributes["orchestra.outcome"] == "failed"
    ]
    assert failed_durations and all(p.exemplar_trace_ids for p in failed_durations)
    assert not any("run" in key and "id" in key for p in points for key in p.attributes)


def test_readyz_turns_unready_when_api_or_backend_is_down(world: World) -> None:
    port = free_port()
    daemon = start(world, port, OTEL_EXPORTER_OTLP_TIMEOUT="1")
    try:
        wait_until(lambda: readyz(port)[0] == 200, 15, "ready at first")
        world.emulator.api_key = "rotated-elsewhere"
        wait_until(lambda: readyz(port)[0] == 503, 15, "unready when the key is rejected")
        assert "rejects the API key" in readyz(port)[1]
        world.emulator.api_key = "test-key-9f3a7c"
        wait_until(lambda: readyz(port)[0] == 200, 15, "ready again")
        world.receiver.stop()
        world.scenario.add_run(world.scenario.workflow_ids()[0], start_at=world.clock() - 30)
        wait_until(lambda: readyz(port)[0] == 503, 20, "unready when exports fail")
        assert "export is failing" in readyz(port)[1]
        world.receiver.start()
        wait_until(lambda: readyz(port)[0] == 200, 90, "ready after the backend returns")
    finally:
        code, stderr = stop_daemon(daemon)
    assert code == 0, stderr
    with sqlite3.connect(world.state_path) as db:
        assert db.execute("SELECT count(*) FROM spool").fetchone()[0] == 0


def test_the_reference_list_of_the_rules_and_dashboard_matches_a_real_scrape(
    world: World,
) -> None:
    """deploy/ (alert rules, dashboard) may only use tests/deploy/metric_names.py; that list
    must be exactly what the daemon really serves, names and labels."""
    from tests.deploy.metric_names import METRICS, family_of

    port = free_port()
    daemon = start(world, port)
    try:
        wait_until(lambda: world.receiver.span_count() >= world.expected_span_count(), 20, "export")
        text = scrape(port, accept="text/plain")
    finally:
        stop_daemon(daemon)
    served: dict[str, set[str]] = {}
    for line in text.splitlines():
        # Families with no sample yet (e.g. no export failed) still declare their type.
        declared = re.match(r"^# TYPE (\S+) (counter|gauge|histogram)$", line)
        if declared:
            name = declared[1]
            if declared[2] == "counter" and not name.endswith("_total"):
                name += "_total"
            family = family_of(name)
            assert family is not None, f"served but not in the reference list: {name}"
            served.setdefault(family.name, set())
            continue
        match = SAMPLE.match(line)
        if match is None:
            continue
        family = family_of(match["name"])
        assert family is not None, f"served but not in the reference list: {match['name']}"
        served.setdefault(family.name, set()).update(
            name for name, _ in LABEL.findall(match["labels"] or "") if name != "le"
        )
    assert set(served) == set(METRICS), "reference list and scrape differ"
    for name, labels in served.items():
        assert labels <= METRICS[name].labels, f"{name}: labels {labels - METRICS[name].labels}"
