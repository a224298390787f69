"""The export ceiling: a bare loop exporting pre-built spans with the OTLP exporter.

    python -m tests.bench.ceiling SPANS_FILE [--batch 512]

SPANS_FILE holds one spooled span per line (`exporter.spool.encode_span`), built by the
benchmark from the very runs the backfill exports. They are decoded into `ReadableSpan`s
before the clock starts; then the same exporter class orchestra-otel builds
(`build_span_exporter`, configured by the OTEL_EXPORTER_OTLP_* environment) exports them
in batches of `--batch`. Prints one JSON object: spans, batches, failures, wall and CPU
seconds of the loop alone.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

from opentelemetry.sdk.trace.export import SpanExportResult

from exporter.app import mapping_options
from exporter.config import load_settings
from exporter.sink.otlp import build_span_exporter, otlp_protocol
from exporter.spool import decode_span


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="ceiling")
    parser.add_argument("spans_file")
    parser.add_argument("--batch", type=int, default=512)
    args = parser.parse_args(argv)
    options = mapping_options(load_settings(environ=os.environ, require_api_key=False))
    with open(args.spans_file, encoding="utf-8") as handle:
        spans = [decode_span(line, options.resource, options.scope) for line in handle if line]
    exporter = build_span_exporter(otlp_protocol(os.environ))
    exporter.export([])  # connect first (an empty request), as a running daemon has
    failures = 0
    wall0, cpu0 = time.perf_counter(), time.process_time()
    for start in range(0, len(spans), args.batch):
        if exporter.export(spans[start : start + args.batch]) is not SpanExportResult.SUCCESS:
            failures += 1
    wall, cpu = time.perf_counter() - wall0, time.process_time() - cpu0
    exporter.shutdown()
    print(
        json.dumps(
            {
                "spans": len(spans),
                "batches": -(-len(spans) // args.batch),
                "failures": failures,
                "wall_s": wall,
                "cpu_s": cpu,
            }
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
