"""The export ceiling: a bare loop exporting pre-built spans with the OTLP transport.

    python -m tests.bench.ceiling SPANS_FILE [--batch 512]

SPANS_FILE holds one span per line, base64 of its spooled form (the OTLP Span bytes of
`exporter.spool.outgoing_span`), built by the benchmark from the very runs the backfill
exports. They are decoded into `SpanSpec`s before the clock starts, as the ceiling has
always started from span objects; then the loop does the least any exporter must: encode
each span (`SpanSpec.encode`), frame `--batch` of them into a request with this
process's resource and scope (`Framer`, as delivery does), and send it through the same
transport orchestra-otel builds (`bytes_exporter`, configured by the OTEL_EXPORTER_OTLP_*
environment). Prints one JSON object: spans, batches, failures, wall and CPU seconds of
the loop alone.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import sys
import time

from opentelemetry.proto.trace.v1.trace_pb2 import Span

from exporter.app import mapping_options
from exporter.config import load_settings
from exporter.mapping.otlp import decode_span
from exporter.sink.encoding import TRACES, Framer
from exporter.sink.otlp import otlp_protocol
from exporter.sink.transport import bytes_exporter


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="ceiling")
    parser.add_argument("spans_file")
    parser.add_argument("--batch", type=int, default=512)
    args = parser.parse_args(argv)
    options = mapping_options(load_settings(environ=os.environ, require_api_key=False))
    framer = Framer.of(options.resource, options.scope)
    with open(args.spans_file, encoding="ascii") as handle:
        spans = [
            decode_span(Span.FromString(base64.b64decode(line))) for line in handle if line.strip()
        ]
    exporter = bytes_exporter(TRACES, otlp_protocol(os.environ))
    exporter.send(b"", 0)  # connect first (an empty request), as a running daemon has
    failures = 0
    wall0, cpu0 = time.perf_counter(), time.process_time()
    for start in range(0, len(spans), args.batch):
        batch = [span.encode().SerializeToString() for span in spans[start : start + args.batch]]
        if not exporter.send(framer.request(batch), len(batch)):
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
