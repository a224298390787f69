"""CPU per step of mapping and encoding, against `json.loads` of the same steps."""

from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import Any

from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.sdk.trace import ReadableSpan, SpanProcessor, TracerProvider

from exporter.app import mapping_options
from exporter.config import load_settings
from exporter.emulator import Scenario
from exporter.mapping.graph import graph_from_api
from exporter.mapping.otlp import SpanSpec
from exporter.mapping.spans import WorkflowInfo, map_run
from exporter.sink.encoding import Framer
from exporter.source.models import Run, Step, Workflow, parse_records
from exporter.spool import outgoing_span
from exporter.state import Outgoing
from exporter.workflow_metrics import decode_facts
from tests.bench import naive_baseline
from tests.bench.common import (
    NAIVE,
    OTEL,
    demo_clones,
    finished_runs,
    log,
    timed,
)
from tests.bench.sizes import Sizes
from tests.support.clock import ManualClock


class _Collect(SpanProcessor):
    def __init__(self) -> None:
        self.spans: list[ReadableSpan] = []

    def on_end(self, span: ReadableSpan) -> None:
        self.spans.append(span)


def mapping_inputs(sizes: Sizes) -> dict[str, Any]:
    clock = ManualClock(time.time())
    now = clock()
    scenario = Scenario(demo_clones(4, now), clock=clock, seed=404)
    per_workflow = math.ceil(sizes.map_steps / 2.7 / 4)
    for workflow_id in scenario.workflow_ids():
        scenario.add_history(
            workflow_id, per_workflow, every=60.0, duration=(1.0, 6.0), failure_rate=0.1
        )
    records = {w["workflow_id"]: w for w in scenario.workflow_records()}
    infos = {}
    for workflow in parse_records(list(records.values()), Workflow)[0]:
        infos[workflow.workflow_id] = WorkflowInfo(
            workflow.workflow_id, workflow.name, graph_from_api(workflow.graph)
        )
    items = []
    for workflow_id, record in finished_runs(scenario):
        body = json.dumps(scenario.steps(workflow_id, str(record["id"])) or []).encode()
        items.append((workflow_id, record, body))
    return {"records": records, "infos": infos, "items": items}


def scenario_mapping(sizes: Sizes, tmp: Path) -> dict[str, Any]:
    """CPU per step: json.loads vs parse + map_run + OTLP encoding; naive SDK spans too.

    `otlp_encode` turns the mapped spans into request bytes: each span's OTLP message,
    serialised, framed in 512-span requests (what `to_protobuf` did before schema 4).
    `spool_roundtrip` is what a span costs on its way through the spool: the record a
    capture writes (`outgoing_span`: its bytes and metric samples) and the samples read
    back on confirmation. The span's serialisation happens there, so the whole path adds
    only the framing (`otlp_frame`) to it, not `otlp_encode` again.
    """
    data = mapping_inputs(sizes)
    items, infos, records = data["items"], data["infos"], data["records"]
    options = mapping_options(load_settings(environ={}, require_api_key=False))
    loaded = [json.loads(body) for _, _, body in items]
    steps_total = sum(len(steps) for steps in loaded)
    runs = [parse_records([record], Run)[0][0] for _, record, _ in items]
    parsed = [parse_records(steps, Step)[0] for steps in loaded]
    mapped: list[SpanSpec] = []
    framer = Framer.of(options.resource, options.scope)

    def do_json() -> None:
        for _, _, body in items:
            json.loads(body)

    def do_parse() -> None:
        for steps in loaded:
            parse_records(steps, Step)

    def do_map() -> None:
        mapped.clear()
        for (workflow_id, _, _), run, steps in zip(items, runs, parsed, strict=True):
            mapped.extend(map_run(infos[workflow_id], run, steps, options).all_spans())

    def do_encode() -> None:
        for start in range(0, len(mapped), 512):
            framer.request(
                [span.encode().SerializeToString() for span in mapped[start : start + 512]]
            )

    spooled: list[Outgoing] = []

    def do_spool() -> None:
        spooled[:] = [outgoing_span(span) for span in mapped]
        for outgoing in spooled:
            decode_facts(outgoing.samples)

    def do_frame() -> None:
        payloads = [outgoing.payload for outgoing in spooled]
        for start in range(0, len(payloads), 512):
            framer.request(payloads[start : start + 512])

    collector = _Collect()
    provider = TracerProvider()
    provider.add_span_processor(collector)
    tracer = provider.get_tracer("naive")

    def do_naive_spans() -> None:
        collector.spans.clear()
        for (workflow_id, record, _), steps in zip(items, loaded, strict=True):
            naive_baseline.spans_for_run(tracer, records[workflow_id], record, steps)

    def do_naive_encode() -> None:
        spans = collector.spans
        for start in range(0, len(spans), 512):
            encode_spans(spans[start : start + 512]).SerializeToString()

    repeats = sizes.map_repeats
    cost: dict[str, dict[str, Any]] = {}
    for name, function in (
        ("json_loads", do_json),
        ("parse_records", do_parse),
        ("map_run", do_map),
        ("otlp_encode", do_encode),
        ("spool_roundtrip", do_spool),
        ("otlp_frame", do_frame),
        ("naive_sdk_spans", do_naive_spans),
        ("naive_otlp_encode", do_naive_encode),
    ):
        wall, cpu, calls = timed(function, repeats, min_total_s=0.0 if repeats == 1 else 1.5)
        cost[name] = {
            "calls": calls,
            "cpu_s": cpu,
            "wall_s": wall,
            "us_per_step": cpu / steps_total * 1e6,
            "steps_per_s": steps_total / cpu if cpu else None,
        }
    json_cpu = cost["json_loads"]["cpu_s"]
    otel_core = cost["map_run"]["cpu_s"] + cost["otlp_encode"]["cpu_s"]
    otel_pipeline = (
        cost["parse_records"]["cpu_s"]
        + cost["map_run"]["cpu_s"]
        + cost["spool_roundtrip"]["cpu_s"]
        + cost["otlp_frame"]["cpu_s"]
    )
    naive_core = cost["naive_sdk_spans"]["cpu_s"] + cost["naive_otlp_encode"]["cpu_s"]
    expected_spans = steps_total + len(items)
    out: dict[str, Any] = {
        "sizes": {
            "runs": len(items),
            "steps": steps_total,
            "payload_bytes": sum(len(b) for _, _, b in items),
            "repeats": repeats,
        },
        "cost": cost,
        OTEL: {
            "map_encode_steps_per_s": steps_total / otel_core,
            "ratio_map_encode_vs_json": otel_core / json_cpu,
            "ratio_pipeline_vs_json": otel_pipeline / json_cpu,
            "pipeline_steps_per_s": steps_total / otel_pipeline,
            "delivery": {
                "expected": expected_spans,
                "received": len(mapped),
                "lost": expected_spans - len(mapped),
                "duplicated": 0,
            },
        },
        NAIVE: {
            "spans_encode_steps_per_s": steps_total / naive_core,
            "ratio_spans_encode_vs_json": naive_core / json_cpu,
            "delivery": {
                "expected": expected_spans,
                "received": len(collector.spans),
                "lost": expected_spans - len(collector.spans),
                "duplicated": 0,
            },
        },
    }
    log(
        f"mapping: {out[OTEL]['ratio_map_encode_vs_json']:.2f}x json (naive "
        f"{out[NAIVE]['ratio_spans_encode_vs_json']:.2f}x)"
    )
    return out
