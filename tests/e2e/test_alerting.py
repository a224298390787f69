"""Alerting end to end: the real daemon, a real Prometheus and a real Alertmanager page a
webhook receiver inside the test.

The world: the emulator (the four demo workflows, a run of each every few seconds, all
succeeding), the real `orchestra-otel run` in a subprocess polling it every second and
exporting to a real OTLP receiver, Debian's Prometheus 2.42 scraping the daemon every
second (`scrape_interval` = `evaluation_interval` = 1 s) with the shipped rule file, and
Debian's Alertmanager 0.25 with the shipped deploy/alertmanager/alertmanager.yml, whose
webhook receiver is pointed at an HTTP server in this test and whose route timers are
shortened (group_wait 0s, group_interval 1s).

What it proves, with the measured latencies printed at the end of the pytest run:

(a) the first-ever failure of a node, 30 s after everything started, reaches the webhook
    within 30 s of the failed run's end, labelled with the workflow and the node, with
    trace links built from Prometheus' external labels;
(b) a second failure of the same node keeps the alert firing (Alertmanager's copy of it
    now says "2 time(s)") and, with two failed runs, OrchestraRunsFailing pages too;
(c) nothing pages for the nodes and workflows that only succeed, nor for the exporter's
    own health while it is healthy;
(d) OrchestraExporterApiAuthFailing, OrchestraExporterNoSuccessfulPoll and
    OrchestraExporterDown page when the key is rejected, the API is down, the daemon is
    stopped;
(e) and each of those, and OrchestraRunStuck, resolves when its condition clears.
OrchestraRunStuck is proven with the per-workflow override mechanism of the shipped
rules: an extra rule file sets the stuck threshold of one workflow to 15 s.

The workflow group of the rule file is loaded verbatim (checked below). The exporter's
health alerts have `for:` and windows of minutes, so the test loads a copy of that group
whose durations only are divided by 20 (`for`, range windows, `offset`, and the 300 s
threshold): `scaled_rules`, itself tested here to change nothing else.

The binaries come from `.ci/install-prometheus`. Without them this test skips, except
under CI (env CI set), where it fails.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from exporter.emulator import Emulator, Scenario
from exporter.emulator.demo import (
    HELLO_ID,
    JOKE_TO_SLACK_ID,
    NIGHTLY_REPORT_ID,
    SUPPORT_TRIAGE_ID,
    demo_workflows,
)
from exporter.mapping.timeparse import parse_timestamp_ns
from tests.deploy.promtool import find_tool, in_ci, run_promtool
from tests.e2e.alerting_stack import (
    RULES,
    Alertmanager,
    Notification,
    Prometheus,
    Webhook,
    alertmanager_config,
    answers,
    duration_seconds,
    free_port,
    running_webhook,
    scale_expr,
    scaled_rules,
    start_alertmanager,
    start_prometheus,
    wait_for,
)
from tests.e2e.latencies import record_latency
from tests.support.otlp_receiver import OtlpReceiver

pytestmark = pytest.mark.e2e

API_KEY = "alerting-key-3c9e1f"
HEALTH_GROUP = "orchestra-otel.exporter"
WORKFLOW_GROUP = "orchestra-otel.workflows"
FACTOR = Fraction(1, 20)
SECOND_THRESHOLDS = (300,)  # `time() - last_successful_poll > 300`
STUCK_THRESHOLD_S = 15
FAILING_NODE = "slack_integration"
QUIET_WORKFLOWS = (SUPPORT_TRIAGE_ID, NIGHTLY_REPORT_ID)
EXTERNAL_LABELS = {
    "grafana_url": "http://grafana.example:3000",
    "jaeger_url": "http://jaeger.example:16686",
    "runbook_url": "https://git.example/orchestra-otel/blob/main/deploy/prometheus/README.md",
}
HEALTH_ALERTS = {
    "OrchestraExporterDown",
    "OrchestraExporterNoSuccessfulPoll",
    "OrchestraExporterApiAuthFailing",
}
PAGE_DEADLINE = 60.0  # generous: a busy 2-core machine; the figures are printed


def shipped_rules() -> dict[str, Any]:
    document: dict[str, Any] = yaml.safe_load(RULES.read_text(encoding="utf-8"))
    return document


# --------------------------------------------------------------------------- scaling


def test_scaling_changes_the_durations_of_the_health_group_and_nothing_else() -> None:
    original = shipped_rules()
    scaled = scaled_rules(original, HEALTH_GROUP, FACTOR, SECOND_THRESHOLDS)
    assert scaled["groups"][0] == original["groups"][0]
    assert [g["name"] for g in scaled["groups"]] == [g["name"] for g in original["groups"]]
    groups = {g["name"]: g for g in original["groups"]}
    for name, group in groups.items():
        if name != HEALTH_GROUP:
            assert next(g for g in scaled["groups"] if g["name"] == name) == group
    health = next(g for g in scaled["groups"] if g["name"] == HEALTH_GROUP)
    changed = 0
    for before, after in zip(groups[HEALTH_GROUP]["rules"], health["rules"], strict=True):
        assert set(before) == set(after)
        for key in before:
            if key not in ("for", "expr"):
                assert after[key] == before[key], key
        assert duration_seconds(after["for"]) == duration_seconds(before["for"]) * FACTOR
        assert _masked(after["expr"]) == _masked(before["expr"]), before["alert"]
        for old, new in zip(_durations(before["expr"]), _durations(after["expr"]), strict=True):
            assert duration_seconds(new) == duration_seconds(old) * FACTOR
            changed += 1
        expected = [
            n * FACTOR if n in SECOND_THRESHOLDS else n for n in _comparisons(before["expr"])
        ]
        assert _comparisons(after["expr"]) == expected, before["alert"]
    assert changed == 7, "the health rules use 7 range windows and offsets"
    no_poll = next(r for r in health["rules"] if r["alert"] == "OrchestraExporterNoSuccessfulPoll")
    assert "> 15\n" in no_poll["expr"] and "[15s]" in no_poll["expr"]
    assert "offset 15s" in no_poll["expr"] and no_poll["for"] == "3s"
    down = next(r for r in health["rules"] if r["alert"] == "OrchestraExporterDown")
    assert down["for"] == "6s"


def test_scaling_by_one_is_the_identity_and_other_numbers_are_left_alone() -> None:
    original = shipped_rules()
    assert scaled_rules(original, HEALTH_GROUP, Fraction(1), SECOND_THRESHOLDS) == original
    expr = "rate(x[5m:1m]) > 300 and y > 3000 and z offset 1h30m < 300 and w >= 300.5"
    assert scale_expr(expr, Fraction(1, 20), (300,)) == (
        "rate(x[15s:1m]) > 15 and y > 3000 and z offset 270s < 15 and w >= 300.5"
    )
    assert scale_expr("a[10m] offset 1h > 300", Fraction(1), (300,)) == ("a[10m] offset 1h > 300")


def test_the_scaled_rule_file_passes_promtool(promtool: Path, tmp_path: Path) -> None:
    path = tmp_path / "rules.yml"
    scaled = scaled_rules(shipped_rules(), HEALTH_GROUP, FACTOR, SECOND_THRESHOLDS)
    path.write_text(yaml.safe_dump(scaled, sort_keys=False), encoding="utf-8")
    result = run_promtool(promtool, "check", "rules", path)
    assert result.returncode == 0, result.stdout + result.stderr


def _durations(expr: str) -> list[str]:
    return re.findall(r"(?:\[|offset\s+)((?:\d+(?:ms|s|m|h|d|w))+)", expr)


def _comparisons(expr: str) -> list[int]:
    return [int(n) for n in re.findall(r"[<>]=?\s*(\d+)\b(?!\.)", expr)]


def _masked(expr: str) -> str:
    """The expression with every duration and listed threshold replaced by a mark."""
    expr = re.sub(r"(\[|offset\s+)(?:\d+(?:ms|s|m|h|d|w))+", r"\1<D>", expr)
    return re.sub(r"([<>]=?\s*)\d+\b(?!\.)", r"\1<N>", expr)


# --------------------------------------------------------------------------- the daemon


def test_the_daemon_shows_zero_series_and_runs_in_flight_before_any_run_ends(
    tmp_path: Path,
) -> None:
    """What the rules rely on, scraped from the real daemon: every discovered workflow and
    typed graph node has its failed/completed counters at 0 before anything happened, and
    a run in flight shows in the gauges with its age."""
    now = time.time()
    scenario = Scenario(demo_workflows(now), clock=time.time, seed=5)
    scenario.add_run(HELLO_ID, start_at=now - 100, step_durations={"model_1": 3600})
    with Emulator(scenario, api_key=API_KEY) as emulator, OtlpReceiver() as receiver:
        daemon = Daemon(daemon_env(emulator, receiver, tmp_path), tmp_path)
        daemon.start()
        try:
            wait_for(lambda: answers(f"{daemon.url}/readyz"), 60, "the first successful poll")
            with urllib.request.urlopen(f"{daemon.url}/metrics", timeout=10) as response:
                text = response.read().decode()
        finally:
            daemon.stop()
    found = {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }
    expected_zeros = 0
    for workflow in scenario.workflow_records():
        workflow_labels = {"workflow_id": workflow["workflow_id"], "workflow": workflow["name"]}
        for outcome in ("completed", "failed"):
            key = tuple(sorted({**workflow_labels, "outcome": outcome}.items()))
            assert found[("orchestra_runs_total", key)] == 0, key
            for node, config in workflow["graph"]["nodes"].items():
                labels = {**workflow_labels, "node": node, "node_type": config["type"]}
                key = tuple(sorted({**labels, "outcome": outcome}.items()))
                assert found[("orchestra_steps_total", key)] == 0, key
                expected_zeros += 1
        in_flight = found[("orchestra_runs_in_flight", tuple(sorted(workflow_labels.items())))]
        age = found[
            ("orchestra_run_in_flight_oldest_age_seconds", tuple(sorted(workflow_labels.items())))
        ]
        if workflow["workflow_id"] == HELLO_ID:
            assert in_flight == 1 and 100 <= age < 200, (in_flight, age)
        else:
            assert in_flight == 0 and age == 0, (workflow["name"], in_flight, age)
    assert expected_zeros == 2 * 12  # the 12 nodes of the four demo workflows


# --------------------------------------------------------------------------- the world


@pytest.fixture(scope="module")
def programs() -> dict[str, Path]:
    found = {
        "prometheus": find_tool("prometheus"),
        # Debian's package installs it as prometheus-alertmanager; the install script as
        # alertmanager.
        "alertmanager": find_tool("alertmanager") or find_tool("prometheus-alertmanager"),
    }
    missing = [name for name, path in found.items() if path is None]
    templates = Path("/usr/share/prometheus/alertmanager/default.tmpl")
    if missing or not templates.is_file():
        reason = (
            f"missing {', '.join(missing) or str(templates)}: run .ci/install-prometheus "
            "(as root once, for Debian's Alertmanager templates)"
        )
        if in_ci():
            pytest.fail(f"{reason}; CI must have them", pytrace=False)
        pytest.skip(reason)
    return {name: path for name, path in found.items() if path is not None}


@dataclass
class Daemon:
    """The real `orchestra-otel run`, started and stopped as an operator would."""

    env: dict[str, str]
    folder: Path
    process: subprocess.Popen[bytes] | None = None
    starts: int = 0

    @property
    def url(self) -> str:
        return f"http://{self.env['ORCHESTRA_HTTP_ADDR']}"

    def start(self) -> None:
        self.starts += 1
        log = (self.folder / f"daemon-{self.starts}.log").open("wb")
        with log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "exporter", "run"],
                env=self.env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
            )

    def stop(self) -> None:
        process = self.process
        if process is None or process.poll() is not None:
            return
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)

    def log_tail(self) -> str:
        path = self.folder / f"daemon-{self.starts}.log"
        text = path.read_text(encoding="utf-8", errors="replace") if path.exists() else ""
        return "\n".join(text.splitlines()[-30:])


@dataclass
class World:
    scenario: Scenario
    emulator: Emulator
    daemon: Daemon
    prometheus: Prometheus
    alertmanager: Alertmanager
    webhook: Webhook
    ready_at: float  # time.time() when every part was up and the daemon scraped
    test: pytest.Item  # where the measured latencies are recorded

    def run_end(self, workflow_id: str, run_id: str) -> float:
        """The run's end time (Unix seconds) as the API reports it, once it has ended."""

        def ended() -> float | None:
            record = self.scenario.run(workflow_id, run_id)
            end = record["end_time"] if record else None
            return parse_timestamp_ns(end) / 1e9 if end else None

        value: float = wait_for(ended, 60, f"run {run_id} to end")
        return value

    def page(self, status: str, alertname: str) -> Notification:
        """The first notification of `alertname` with that status the webhook received."""

        def found() -> Notification | None:
            self.check_alive()
            return self.webhook.first(status, alertname=alertname)

        try:
            notification: Notification = wait_for(found, PAGE_DEADLINE, f"{alertname} ({status})")
        except AssertionError as error:
            raise AssertionError(f"{error}\n{self.diagnosis()}") from None
        return notification

    def diagnosis(self) -> str:
        alerts = [(a["labels"]["alertname"], a["state"]) for a in self.prometheus.alerts()]
        received = [(n.alertname, n.status) for n in self.webhook.received()]
        return (
            f"Prometheus alerts: {alerts}\nwebhook received: {received}\n"
            f"daemon log:\n{self.daemon.log_tail()}\n"
            f"Prometheus log:\n{self.prometheus.program.log_tail()}\n"
            f"Alertmanager log:\n{self.alertmanager.program.log_tail()}"
        )

    def check_alive(self) -> None:
        self.prometheus.program.check_alive()
        self.alertmanager.program.check_alive()

    def measure(self, name: str, seconds: float) -> float:
        record_latency(self.test, name, seconds)
        return seconds


@pytest.fixture
def world(
    programs: dict[str, Path], tmp_path: Path, request: pytest.FixtureRequest
) -> Iterator[World]:
    now = time.time()
    scenario = Scenario(demo_workflows(now), clock=time.time, seed=5)
    for workflow_id in scenario.workflow_ids():
        scenario.add_schedule(workflow_id, 5.0, first_at=now + 1, jitter=1.0, duration=(1, 2.5))
    emulator = Emulator(scenario, api_key=API_KEY)
    emulator.start()
    receiver = OtlpReceiver()
    receiver.start()
    daemon = Daemon(daemon_env(emulator, receiver, tmp_path), tmp_path)
    stack: list[Callable[[], None]] = [receiver.stop, emulator.stop]
    try:
        with running_webhook() as webhook:
            daemon.start()
            stack.append(daemon.stop)
            wait_for(
                lambda: answers(f"{daemon.url}/readyz"), 60, "the daemon's first successful poll"
            )
            alertmanager = start_alertmanager(
                programs["alertmanager"],
                tmp_path / "alertmanager",
                alertmanager_config(webhook.url),
            )
            stack.append(alertmanager.program.stop)
            # The rules are loaded once the daemon has been scraped: a Prometheus evaluates
            # before its first scrape (up to 5 s after start), which the shipped `for: 1m`
            # of OrchestraExporterNoSuccessfulPoll covers and its scaled 3 s does not.
            config = prometheus_config(
                tmp_path / "prometheus", daemon.url, alertmanager.program.port
            )
            prometheus = start_prometheus(
                programs["prometheus"], tmp_path / "prometheus", {**config, "rule_files": []}
            )
            stack.append(prometheus.program.stop)
            wait_for(
                lambda: prometheus.query('up{job="orchestra-otel"} == 1'),
                30,
                "Prometheus' first scrape of the daemon",
            )
            prometheus.reload(config)
            yield World(
                scenario,
                emulator,
                daemon,
                prometheus,
                alertmanager,
                webhook,
                time.time(),
                request.node,
            )
    finally:
        for stop in reversed(stack):
            stop()


def daemon_env(emulator: Emulator, receiver: OtlpReceiver, folder: Path) -> dict[str, str]:
    """`orchestra-otel run` polling the emulator every second, exporting to the receiver,
    serving /metrics on a free port; nothing of the caller's ORCHESTRA_/OTEL_ settings."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ORCHESTRA_", "OTEL_"))}
    env.update(receiver.env("grpc"))
    env.update(
        {
            "ORCHESTRA_BASE_URL": emulator.base_url,
            "ORCHESTRA_API_KEY": API_KEY,
            "ORCHESTRA_STATE_PATH": str(folder / "ledger.db"),
            "ORCHESTRA_HTTP_ADDR": f"127.0.0.1:{free_port()}",
            "ORCHESTRA_POLL_INTERVAL": "1",
            # An idle workflow is polled at least every 5 s: the page latency is bounded by
            # the idle poll interval (ORCHESTRA_POLL_INTERVAL_MAX) plus the rule evaluation.
            "ORCHESTRA_POLL_INTERVAL_MAX": "5",
            "OTEL_METRICS_EXPORTER": "none",
            "OTEL_EXPORTER_OTLP_TIMEOUT": "3",
        }
    )
    return env


def prometheus_config(folder: Path, daemon_url: str, alertmanager_port: int) -> dict[str, Any]:
    folder.mkdir(parents=True, exist_ok=True)
    rules = scaled_rules(shipped_rules(), HEALTH_GROUP, FACTOR, SECOND_THRESHOLDS)
    workflows = next(g for g in rules["groups"] if g["name"] == WORKFLOW_GROUP)
    assert workflows == next(g for g in shipped_rules()["groups"] if g["name"] == WORKFLOW_GROUP)
    (folder / "orchestra-otel-rules.yml").write_text(yaml.safe_dump(rules, sort_keys=False))
    # The per-workflow override pattern of deploy/prometheus/README.md, as a user writes it.
    overrides = {
        "groups": [
            {
                "name": "orchestra-otel.overrides",
                "rules": [
                    {
                        "record": "orchestra:run_stuck_threshold_seconds",
                        "labels": {"workflow_id": HELLO_ID},
                        "expr": f"vector({STUCK_THRESHOLD_S})",
                    }
                ],
            }
        ]
    }
    (folder / "overrides.yml").write_text(yaml.safe_dump(overrides, sort_keys=False))
    return {
        "global": {
            "scrape_interval": "1s",
            "scrape_timeout": "1s",
            "evaluation_interval": "1s",
            "external_labels": EXTERNAL_LABELS,
        },
        "rule_files": ["orchestra-otel-rules.yml", "overrides.yml"],
        "alerting": {
            "alertmanagers": [{"static_configs": [{"targets": [f"127.0.0.1:{alertmanager_port}"]}]}]
        },
        "scrape_configs": [
            {
                "job_name": "orchestra-otel",
                "static_configs": [{"targets": [daemon_url.removeprefix("http://")]}],
            }
        ],
    }


# --------------------------------------------------------------------------- the test


def test_alerts_page_and_resolve_end_to_end(world: World) -> None:
    started = time.monotonic()
    scenario = world.scenario

    # A run of `hi` that hangs for 40 s (its threshold: 15 s, by override).
    stuck_run = scenario.add_run(HELLO_ID, step_durations={"model_1": 40.0})
    stuck_start = parse_timestamp_ns(scenario.run(HELLO_ID, stuck_run)["start_time"]) / 1e9

    # (a) The first failure of slack_integration ends 30 s after everything started.
    _sleep_until(world.ready_at + 28)
    first = scenario.add_run(
        JOKE_TO_SLACK_ID, fail_node=FAILING_NODE, step_durations={"model": 1, FAILING_NODE: 1}
    )
    first_end = world.run_end(JOKE_TO_SLACK_ID, first)
    page = world.page("firing", "OrchestraStepFailed")
    latency = world.measure("first failure: run end -> webhook", page.received - first_end)
    world.measure("first failure: everything started -> run end", first_end - world.ready_at)
    assert page.labels["workflow"] == "joke-to-slack", page.labels
    assert page.labels["workflow_id"] == JOKE_TO_SLACK_ID
    assert page.labels["node"] == FAILING_NODE
    assert page.labels["node_type"] == "integration"
    assert page.annotations["summary"] == f"Step {FAILING_NODE} of workflow joke-to-slack failed"
    _check_links(page)
    assert latency <= 30, f"paged {latency:.1f}s after the failed run ended"

    # (b) The second failure of the same node: still firing, now counting 2, and two
    # failed runs page OrchestraRunsFailing.
    second = scenario.add_run(
        JOKE_TO_SLACK_ID, fail_node=FAILING_NODE, step_durations={"model": 1, FAILING_NODE: 1}
    )
    second_end = world.run_end(JOKE_TO_SLACK_ID, second)

    def counted_twice() -> bool:
        return any(
            alert["labels"].get("node") == FAILING_NODE
            and "failed 2 time(s)" in alert["annotations"].get("description", "")
            for alert in world.alertmanager.alerts()
        )

    wait_for(counted_twice, PAGE_DEADLINE, "Alertmanager's alert to count 2 failures")
    world.measure("second failure: run end -> Alertmanager shows 2", time.time() - second_end)
    runs_page = world.page("firing", "OrchestraRunsFailing")
    world.measure("second failed run: run end -> webhook", runs_page.received - second_end)
    assert runs_page.labels["workflow_id"] == JOKE_TO_SLACK_ID
    assert world.webhook.first("resolved", alertname="OrchestraStepFailed") is None

    # OrchestraRunStuck, through the override, and resolved when the run ends.
    stuck = world.page("firing", "OrchestraRunStuck")
    crossed = stuck_start + STUCK_THRESHOLD_S
    world.measure("stuck run: threshold crossed -> webhook", stuck.received - crossed)
    assert stuck.labels["workflow_id"] == HELLO_ID and stuck.labels["workflow"] == "hi"
    threshold = f"stuck threshold of {STUCK_THRESHOLD_S}s."
    assert threshold in stuck.annotations["description"], stuck.annotations
    stuck_end = world.run_end(HELLO_ID, stuck_run)
    resolved = world.page("resolved", "OrchestraRunStuck")
    world.measure("stuck run: run end -> resolved at webhook", resolved.received - stuck_end)

    # (c) Nothing else paged: not the nodes and workflows that only succeed, not the
    # exporter's health; and nothing else is even pending.
    unexpected = [n for n in world.webhook.received() if not _expected_in_phase_one(n.labels)]
    assert not unexpected, unexpected
    pending = [a for a in world.prometheus.alerts() if not _expected_in_phase_one(a["labels"])]
    assert not pending, pending
    phase_two = time.time()

    # (d, e) A rejected key, the API down, the daemon stopped: each pages, and resolves
    # once fixed (the daemon starts again on the same ledger).
    def reject_key() -> None:
        world.emulator.api_key = "rotated-elsewhere"

    def fix_key() -> None:
        world.emulator.api_key = API_KEY

    _breaks_and_heals(
        world,
        "OrchestraExporterApiAuthFailing",
        ("key rejected", reject_key),
        ("key fixed", fix_key),
    )
    _breaks_and_heals(
        world,
        "OrchestraExporterNoSuccessfulPoll",
        ("API down", world.emulator.stop),
        ("API back", world.emulator.start),
    )
    _breaks_and_heals(
        world,
        "OrchestraExporterDown",
        ("daemon stopped", world.daemon.stop),
        ("daemon restarted", world.daemon.start),
    )

    # Over the whole test: the only pages were the ones above.
    for notification in world.webhook.received():
        labels = notification.labels
        if notification.received < phase_two or labels["alertname"] not in HEALTH_ALERTS:
            assert _expected_in_phase_one(labels), notification
    assert world.prometheus.rule_errors() == []
    world.measure("wall time of the test", time.monotonic() - started)


def _breaks_and_heals(
    world: World,
    alertname: str,
    fault: tuple[str, Callable[[], object]],
    fix: tuple[str, Callable[[], object]],
) -> None:
    """Inject the fault, wait for the page; fix it, wait for the resolution; measure both."""
    for (name, action), status in ((fault, "firing"), (fix, "resolved")):
        action()
        at = time.time()
        notification = world.page(status, alertname)
        suffix = "webhook" if status == "firing" else "resolved at webhook"
        world.measure(f"{name} -> {suffix}", notification.received - at)


def _expected_in_phase_one(labels: Mapping[str, str]) -> bool:
    """Alerts for the failing node's workflow, and the stuck run's: nothing else."""
    workflow_id = labels.get("workflow_id")
    if workflow_id == JOKE_TO_SLACK_ID:
        return labels.get("alertname") != "OrchestraStepFailed" or labels["node"] == FAILING_NODE
    return workflow_id == HELLO_ID and labels.get("alertname") == "OrchestraRunStuck"


def _check_links(page: Notification) -> None:
    """The trace links: the configured base URLs, the workflow and the node, quoted."""
    grafana = urllib.parse.urlsplit(page.annotations["grafana_traces"])
    assert f"{grafana.scheme}://{grafana.netloc}" == EXTERNAL_LABELS["grafana_url"]
    assert grafana.path == "/explore"
    panes = json.loads(urllib.parse.parse_qs(grafana.query)["panes"][0])
    (query,) = next(iter(panes.values()))["queries"]
    assert query["datasource"]["uid"] == "tempo"
    assert query["query"] == (
        f'{{ span.orchestra.workflow.id = "{JOKE_TO_SLACK_ID}" && '
        f'span.orchestra.node.id = "{FAILING_NODE}" && status = error }}'
    )
    jaeger = urllib.parse.urlsplit(page.annotations["jaeger_traces"])
    assert f"{jaeger.scheme}://{jaeger.netloc}" == EXTERNAL_LABELS["jaeger_url"]
    params = urllib.parse.parse_qs(jaeger.query)
    assert params["service"] == ["orchestra"]
    assert json.loads(params["tags"][0]) == {
        "orchestra.workflow.id": JOKE_TO_SLACK_ID,
        "orchestra.node.id": FAILING_NODE,
        "error": "true",
    }
    assert (
        page.annotations["runbook_url"] == EXTERNAL_LABELS["runbook_url"] + "#orchestrastepfailed"
    )


def _sleep_until(moment: float) -> None:
    """The scenario's timing (when a run starts), not a wait for a result."""
    delay = moment - time.time()
    if delay > 0:
        time.sleep(delay)
