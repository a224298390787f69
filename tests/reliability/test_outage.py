"""A long OTLP backend outage, through the real daemon (`python -m exporter run`).

README "Delivery": while the backend is down, finished steps are mapped once and wait
on disk in the ledger's spool; polling goes on, exports back off (5 s doubling to 60 s),
no run is fetched twice and no memory is spent on the backlog; when the backend is back,
everything arrives once. This test makes the backend truly unreachable (the receiver's
ports closed) for ~15-20 s while runs keep finishing, and checks each of those promises
from outside: /metrics, /readyz, /proc, the ledger (read-only), the emulator's request
log and the receiver.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.api_log import steps_calls_by_run
from tests.support.daemon import wait_for
from tests.support.delivery import delivery
from tests.support.ledger import LedgerView
from tests.support.world import World, demo_world

pytestmark = [pytest.mark.integration, pytest.mark.slow]

PROTOCOLS = ["grpc", "http/protobuf"]
POLL_INTERVAL_S = 0.5
# README "Delivery": failed exports back off 5 s, doubling, capped at 60 s.
BACKOFF_BASE_S = 5.0
BACKOFF_CAP_S = 60.0
# The daemon's resident memory may grow by less than this from the first failed export
# to the end of the outage, while the spool fills up (~550 spans, content capture on).
# Loose on purpose (allocator and gRPC buffers move by a few MB): it catches a backlog
# or per-poll state that grows without bound, not a small in-RAM copy of the spool.
RSS_GROWTH_LIMIT_KB = 30 * 1024
RUNS_PER_TICK = 2  # per workflow, every poll interval: ~550 spans over the outage

FAILURES = "orchestra_otel_export_failures_total"
EXPORTED = "orchestra_otel_spans_exported_total"
PENDING = "orchestra_otel_pending_spans"
POLLS = "orchestra_otel_polls_total"
API_REQUESTS = "orchestra_otel_api_requests_total"
RUNS_COUNTED = "orchestra_runs_total"  # workflow metric: runs whose root was confirmed


@pytest.fixture
def world(tmp_path: Path) -> Iterator[World]:
    with demo_world(tmp_path, history=2, seed=11) as made:
        yield made


def max_export_attempts(outage_s: float) -> int:
    """Most export attempts the backoff schedule allows within `outage_s` seconds.

    Attempt 1 is free; attempt k+1 comes at least base*(1+2+...+2^(k-1)) seconds later
    (each failed attempt also takes time, which only lowers the count).
    """
    attempts, waited, delay = 1, 0.0, BACKOFF_BASE_S
    while waited + delay <= outage_s:
        waited += delay
        attempts += 1
        delay = min(delay * 2, BACKOFF_CAP_S)
    return attempts


def test_max_export_attempts_follows_the_documented_schedule() -> None:
    assert [max_export_attempts(s) for s in (0, 4.9, 5, 14.9, 15, 34.9, 35)] == [
        1,
        1,
        2,
        2,
        3,
        3,
        4,
    ]


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_outage_spools_to_disk_keeps_polling_and_delivers_everything_once(
    world: World, protocol: str
) -> None:
    ledger = LedgerView(world.state_path)
    with world.daemon(
        protocol=protocol,
        ORCHESTRA_POLL_INTERVAL=str(POLL_INTERVAL_S),
        OTEL_EXPORTER_OTLP_TIMEOUT="2",
        ORCHESTRA_CAPTURE_CONTENT="true",  # bigger spans: a backlog held in RAM would show
    ) as daemon:
        # --- healthy start: the history is delivered, the daemon is ready --------------
        wait_for(lambda: delivery(world).complete, 30, lambda: delivery(world).summary())
        wait_for(daemon.ready, 15, lambda: f"not ready: {daemon.readyz()}")
        wait_for(lambda: ledger.spool_count() == 0, 10, "spool not empty after a clean start")
        received_before = world.receiver.span_count()
        exported_before = daemon.metric(EXPORTED)
        runs_counted_before = daemon.metric(RUNS_COUNTED)
        failures_before = daemon.metric(FAILURES)
        polls_before = daemon.metric(POLLS)
        api_before = daemon.metric(API_REQUESTS)
        list_runs_before = world.requests().get("list_runs", 0)

        # --- the outage: nothing listens on the OTLP ports; runs keep finishing --------
        world.receiver.stop()
        outage_started = time.monotonic()
        outage_runs: list[str] = []
        spool_samples: list[int] = []
        rss_early_kb = 0
        second_failure_seen = 0.0
        while True:
            now = time.monotonic()
            failures = daemon.metric(FAILURES) - failures_before
            if failures >= 1 and not rss_early_kb:
                rss_early_kb = daemon.rss_kb()
            if failures >= 2 and not second_failure_seen:
                second_failure_seen = now
            # The third attempt is due 10 s after the second failure: stop adding runs
            # a few seconds before, so the checks below see a settled spool.
            if second_failure_seen and now - second_failure_seen > 5.0:
                break
            assert now - outage_started < 40, (
                f"fewer than 2 export failures in 40 s of outage ({failures}); log:\n"
                + daemon.stderr[-3000:]
            )
            outage_runs += world.add_finished_runs(per_workflow=RUNS_PER_TICK)
            spool_samples.append(ledger.spool_count())
            time.sleep(POLL_INTERVAL_S)

        finished = world.finished_runs()
        outage_spans = sum(1 + len(finished[run_id]) for run_id in outage_runs)
        # (a) every span of every run that finished during the outage waits in the spool,
        # none was confirmed, and /metrics and /readyz say so.
        wait_for(
            lambda: ledger.spool_count() == outage_spans,
            10,
            lambda: f"spool holds {ledger.spool_count()} spans, expected {outage_spans}",
        )
        spool_samples.append(ledger.spool_count())
        assert spool_samples == sorted(spool_samples), f"spool shrank: {spool_samples}"
        assert spool_samples[-1] > spool_samples[0]
        wait_for(
            lambda: daemon.metric(PENDING) == ledger.spool_count(),
            5,
            lambda: f"pending_spans {daemon.metric(PENDING)} != spool {ledger.spool_count()}",
        )
        assert world.receiver.span_count() == received_before
        assert daemon.metric(EXPORTED) == exported_before, "spans counted as exported"
        assert daemon.metric(RUNS_COUNTED) == runs_counted_before, "runs counted unconfirmed"
        export_failures = daemon.metric(FAILURES) - failures_before
        assert export_failures > 0
        status, body = daemon.readyz()
        assert status == 503, body
        assert any("export" in reason for reason in body["reasons"]), body

        # (b) polling went on (the daemon's own counters and the emulator agree), but
        # export attempts followed the backoff schedule instead of one per poll.
        outage_s = time.monotonic() - outage_started
        polls = daemon.metric(POLLS) - polls_before
        api_requests = daemon.metric(API_REQUESTS) - api_before
        list_runs = world.requests().get("list_runs", 0) - list_runs_before
        workflows = len(world.scenario.workflow_ids())
        assert polls >= 10, f"only {polls} polls in {outage_s:.1f}s of outage"
        assert list_runs >= workflows * 10, list_runs
        assert api_requests >= list_runs
        assert export_failures <= max_export_attempts(outage_s), (
            f"{export_failures} export attempts in {outage_s:.1f}s; the backoff allows "
            f"{max_export_attempts(outage_s)}"
        )
        assert polls >= 4 * export_failures, (polls, export_failures)

        # (d) the backlog lives on disk: resident memory stayed flat while it grew.
        rss_end_kb = daemon.rss_kb()
        spool_bytes = ledger.spool_bytes()
        assert rss_end_kb - rss_early_kb < RSS_GROWTH_LIMIT_KB, (rss_early_kb, rss_end_kb)

        # --- the backend comes back on the same ports, before the third attempt --------
        time.sleep(max(0.0, second_failure_seen + 8.0 - time.monotonic()))
        outage_s = time.monotonic() - outage_started
        world.receiver.start()
        recovered_started = time.monotonic()
        # (e) every finished run arrives: one root per run, one span per step, no copies.
        wait_for(lambda: delivery(world).complete, 45, lambda: delivery(world).summary())
        recovery_s = time.monotonic() - recovered_started
        wait_for(
            lambda: ledger.spool_count() == 0 and daemon.metric(PENDING) == 0,
            15,
            lambda: f"spool {ledger.spool_count()}, pending_spans {daemon.metric(PENDING)}",
        )
        wait_for(daemon.ready, 15, lambda: f"not ready: {daemon.readyz()}")
        result = delivery(world)
        assert result.duplicates == 0, world.receiver.duplicate_spans()
        assert result.received_spans == result.expected_spans
        assert daemon.metric(RUNS_COUNTED) == len(world.finished_runs())
        attempts_after = daemon.metric(FAILURES) - failures_before
        code, took = daemon.terminate(timeout=30)
        assert code == 0, daemon.stderr[-3000:]
        assert took < 25

    # (c) no run was fetched twice: one steps call per run, none during the outage or
    # the recovery for runs already captured (the spool, not the API, supplied them).
    calls = steps_calls_by_run(world.emulator)
    assert set(calls) == set(world.finished_runs()), "a finished run was never fetched"
    assert {run: n for run, n in calls.items() if n != 1} == {}, "a run was fetched twice"

    print(
        f"\n[{protocol}] outage {outage_s:.1f}s: {len(outage_runs)} runs / {outage_spans} spans"
        f" spooled ({spool_bytes / 1e6:.2f} MB on disk); {polls:.0f} polls, {list_runs}"
        f" list_runs calls, {export_failures:.0f}"
        f" export attempts (bound {max_export_attempts(outage_s)}; {attempts_after:.0f} by"
        f" recovery); RSS {rss_early_kb} kB -> {rss_end_kb} kB"
        f" (+{rss_end_kb - rss_early_kb} kB); recovery {recovery_s:.1f}s;"
        f" spans expected {result.expected_spans}, received {result.received_spans},"
        f" duplicates {result.duplicates}; steps calls {sum(calls.values())} for"
        f" {len(calls)} runs; SIGTERM exit {code} in {took:.1f}s"
    )
