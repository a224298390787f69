"""The NAIVE BASELINE: the straightforward exporter a user would write in an afternoon.

Every poll it lists the runs of every workflow (limit 100), fetches the steps of every
listed run, and turns each finished run it has not exported yet (an in-memory set) into
spans with the OpenTelemetry SDK tracer: TracerProvider + BatchSpanProcessor (defaults)
+ the same OTLP exporter class orchestra-otel uses, with explicit start/end times taken
from the records. No ledger, no spool, no paging (except in `backfill`, which pages the
history with offset because otherwise it could not backfill at all).

It reads the same environment as orchestra-otel: ORCHESTRA_BASE_URL, ORCHESTRA_API_KEY and
the standard OTEL_EXPORTER_OTLP_* variables (read by the SDK exporter itself).

    python -m tests.bench.naive_baseline run --interval 2     # poll until SIGTERM
    python -m tests.bench.naive_baseline control              # stdin: "poll" / "exit"
    python -m tests.bench.naive_baseline backfill             # page every run once, exit

Each poll logs one `naive poll: ...` line on stderr; `control` and `backfill` also print
one JSON object per command on stdout.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import time
from datetime import datetime
from typing import Any

import httpx
from opentelemetry import trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.trace import Status, StatusCode

TERMINAL = {"completed", "failed", "error", "cancelled", "canceled", "skipped", "timeout"}
FAILED = {"failed", "error", "timeout"}


def _ns(text: str | None) -> int | None:
    """What a user writes: fromisoformat, float seconds, times 1e9."""
    if not text:
        return None
    return int(datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp() * 1e9)


def spans_for_run(
    tracer: trace.Tracer, workflow: dict[str, Any], run: dict[str, Any], steps: list[Any]
) -> int:
    """One root span for the run, one child per step; returns how many spans were made."""
    status = str(run.get("status") or "").lower()
    common = {"orchestra.workflow.id": workflow["workflow_id"], "orchestra.run.id": run["id"]}
    starts = [_ns(s.get("start_time")) for s in steps] + [_ns(run.get("start_time"))]
    ends = [_ns(s.get("end_time")) for s in steps] + [_ns(run.get("end_time"))]
    start = min(t for t in starts if t is not None)
    end = max(t for t in ends if t is not None)
    root = tracer.start_span(
        workflow.get("name") or workflow["workflow_id"],
        start_time=start,
        attributes={**common, "orchestra.run.status": status},
    )
    context = trace.set_span_in_context(root)
    for step in steps:
        step_start = _ns(step.get("start_time")) or start
        span = tracer.start_span(
            step.get("node_id") or "step",
            context=context,
            start_time=step_start,
            attributes={
                **common,
                "orchestra.step.id": step["id"],
                "orchestra.node.id": step.get("node_id") or "",
                "orchestra.step.status": step.get("status") or "",
            },
        )
        if str(step.get("status")).lower() in FAILED or step.get("error"):
            span.set_status(Status(StatusCode.ERROR, str(step.get("error") or "")))
        span.end(end_time=_ns(step.get("end_time")) or step_start)
    if status in FAILED:
        root.set_status(Status(StatusCode.ERROR, str(run.get("error") or "")))
    root.end(end_time=end)
    return len(steps) + 1


def _otlp_exporter() -> Any:
    if os.environ.get("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc") == "grpc":
        from opentelemetry.exporter.otlp.proto.grpc import trace_exporter as grpc_exporter

        return grpc_exporter.OTLPSpanExporter()
    from opentelemetry.exporter.otlp.proto.http import trace_exporter as http_exporter

    return http_exporter.OTLPSpanExporter()


class NaiveExporter:
    def __init__(self, base_url: str, api_key: str) -> None:
        self.http = httpx.Client(
            base_url=base_url.rstrip("/"),
            headers={"Authorization": f"Bearer {api_key}"},
            timeout=30,
        )
        self.provider = TracerProvider(resource=Resource.create({"service.name": "orchestra"}))
        self.provider.add_span_processor(BatchSpanProcessor(_otlp_exporter()))
        self.tracer = self.provider.get_tracer("naive-orchestra-exporter")
        self.exported: set[str] = set()
        self.requests = 0
        self.spans = 0
        self.workflows: list[dict[str, Any]] = self._get("/workflows")

    def _get(self, path: str, **params: Any) -> Any:
        self.requests += 1
        response = self.http.get(path, params=params or None)
        response.raise_for_status()
        return response.json()

    def poll(self) -> dict[str, int]:
        before_requests, before_spans = self.requests, self.spans
        for workflow in self.workflows:
            workflow_id = workflow["workflow_id"]
            for run in self._get(f"/workflows/{workflow_id}/runs", limit=100):
                steps = self._get(f"/workflows/{workflow_id}/runs/{run['id']}/steps")
                self._export(workflow, run, steps)
        return {"requests": self.requests - before_requests, "spans": self.spans - before_spans}

    def backfill(self) -> dict[str, int]:
        for workflow in self.workflows:
            workflow_id = workflow["workflow_id"]
            offset = 0
            while True:
                page = self._get(f"/workflows/{workflow_id}/runs", limit=100, offset=offset)
                for run in page:
                    steps = self._get(f"/workflows/{workflow_id}/runs/{run['id']}/steps")
                    self._export(workflow, run, steps)
                if len(page) < 100:
                    break
                offset += len(page)
        return {"requests": self.requests, "spans": self.spans}

    def _export(self, workflow: dict[str, Any], run: dict[str, Any], steps: list[Any]) -> None:
        status = str(run.get("status") or "").lower()
        finished = run.get("end_time") is not None or status in TERMINAL
        if not finished or run["id"] in self.exported:
            return
        self.exported.add(run["id"])
        self.spans += spans_for_run(self.tracer, workflow, run, steps)

    def close(self) -> None:
        self.provider.shutdown()  # flushes the BatchSpanProcessor
        self.http.close()


def _log(kind: str, result: dict[str, int], started: float) -> None:
    print(
        f"naive {kind}: {result['requests']} requests, {result['spans']} spans, "
        f"{time.monotonic() - started:.3f}s",
        file=sys.stderr,
        flush=True,
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="naive_baseline")
    parser.add_argument("mode", choices=("run", "control", "backfill"))
    parser.add_argument("--interval", type=float, default=30.0)
    args = parser.parse_args(argv)
    exporter = NaiveExporter(os.environ["ORCHESTRA_BASE_URL"], os.environ["ORCHESTRA_API_KEY"])
    try:
        if args.mode == "backfill":
            started = time.monotonic()
            result = exporter.backfill()
            exporter.close()
            _log("backfill", result, started)
            print(json.dumps(result), flush=True)
            return 0
        if args.mode == "control":
            for line in sys.stdin:
                command = line.strip()
                if command == "poll":
                    started = time.monotonic()
                    result = exporter.poll()
                    _log("poll", result, started)
                    print(json.dumps(result), flush=True)
                elif command == "exit":
                    break
            exporter.close()
            print(json.dumps({"exported_runs": len(exporter.exported)}), flush=True)
            return 0
        state = {"stopping": False, "sleeping": False}

        def on_term(*_: object) -> None:
            state["stopping"] = True
            if state["sleeping"]:
                raise _Stop  # cut the sleep short; a poll under way finishes first

        signal.signal(signal.SIGTERM, on_term)
        try:
            while not state["stopping"]:
                started = time.monotonic()
                _log("poll", exporter.poll(), started)
                state["sleeping"] = True
                if not state["stopping"]:
                    time.sleep(args.interval)  # what a user writes: poll, sleep, repeat
                state["sleeping"] = False
        except _Stop:
            pass
        exporter.close()
        return 0
    except KeyboardInterrupt:
        exporter.close()
        return 0


class _Stop(Exception):
    pass


if __name__ == "__main__":
    raise SystemExit(main())
