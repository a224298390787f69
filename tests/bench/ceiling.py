"""The export ceilings: bare loops exporting pre-built spans, nothing else.

    python -m tests.bench.ceiling SPANS_FILE [--batch 512] [--sdk]

SPANS_FILE holds one span per line, base64 of its spooled form (the OTLP Span bytes of
`exporter.spool.outgoing_span`), built by the benchmark from the very runs the backfill
exports. They are decoded before the clock starts, as the ceilings have always started
from span objects. Then the loop does the least an exporter must:

* default (the bytes ceiling): encode each `SpanSpec` (`SpanSpec.encode`), frame `--batch`
  of them into a request with this process's resource and scope (`Framer`, as delivery
  does), and send it through the transport orchestra-otel builds (`bytes_exporter`);
* `--sdk` (the SDK ceiling, issue 14's yardstick): the same spans as the SDK's
  `ReadableSpan`s, exported `--batch` at a time by the SDK's own OTLP span exporter (its
  pure-Python encoder and its transport): what any exporter built on the SDK pays.

Both are configured by the OTEL_EXPORTER_OTLP_* environment. Prints one JSON object:
spans, batches, failures, wall and CPU seconds of the loop alone.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any

from opentelemetry.proto.trace.v1.trace_pb2 import Span
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace.export import SpanExportResult

from exporter.app import mapping_options
from exporter.config import load_settings
from exporter.mapping.otlp import SpanSpec, decode_span
from exporter.sink.encoding import TRACES, Framer
from exporter.sink.otlp import otlp_protocol
from exporter.sink.transport import bytes_exporter, sdk_exporter
from tests.unit.test_encoding import readable  # SpanSpec -> the SDK's ReadableSpan

Loop = Callable[[int, int], bool]  # export spans[start:stop]; True when it was accepted


def _bytes_loop(specs: Sequence[SpanSpec], resource: Resource, scope: Any) -> tuple[Loop, Any]:
    framer = Framer.of(resource, scope)
    exporter = bytes_exporter(TRACES, otlp_protocol(os.environ))
    exporter.send(b"", 0)  # connect first (an empty request), as a running daemon has

    def export(start: int, stop: int) -> bool:
        batch = [span.encode().SerializeToString() for span in specs[start:stop]]
        return bool(exporter.send(framer.request(batch), len(batch)))

    return export, exporter


def _sdk_loop(specs: Sequence[SpanSpec], resource: Resource, scope: Any) -> tuple[Loop, Any]:
    spans = [readable(spec, resource, scope) for spec in specs]
    exporter = sdk_exporter(otlp_protocol(os.environ), "trace_exporter", "OTLPSpanExporter")
    exporter.export([])  # connect first (an empty request), as a running daemon has

    def export(start: int, stop: int) -> bool:
        return bool(exporter.export(spans[start:stop]) is SpanExportResult.SUCCESS)

    return export, exporter


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="ceiling")
    parser.add_argument("spans_file")
    parser.add_argument("--batch", type=int, default=512)
    parser.add_argument("--sdk", action="store_true", help="the SDK's spans and exporter")
    args = parser.parse_args(argv)
    options = mapping_options(load_settings(environ=os.environ, require_api_key=False))
    with open(args.spans_file, encoding="ascii") as handle:
        specs = [
            decode_span(Span.FromString(base64.b64decode(line))) for line in handle if line.strip()
        ]
    make = _sdk_loop if args.sdk else _bytes_loop
    export, exporter = make(specs, options.resource, options.scope)
    failures = 0
    wall0, cpu0 = time.perf_counter(), time.process_time()
    for start in range(0, len(specs), args.batch):
        if not export(start, start + args.batch):
            failures += 1
    wall, cpu = time.perf_counter() - wall0, time.process_time() - cpu0
    exporter.shutdown()
    print(
        json.dumps(
            {
                "spans": len(specs),
                "batches": -(-len(specs) // args.batch),
                "failures": failures,
                "wall_s": wall,
                "cpu_s": cpu,
            }
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
