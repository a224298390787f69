"""Benchmarks of orchestra-otel against a naive baseline, on one machine in one run.

    python -m tests.bench.run [--quick] [--out tests/bench/results/latest.json]
                              [--only requests,adaptive,...] [--no-profile]
                              [--set SIZE=VALUE ...]

Every scenario (tests/bench/scenarios/) runs the real orchestra-otel (the CLI in a
subprocess; the real objects in-process only for the pure mapping cost and the profiles)
and the naive baseline of `tests/bench/naive_baseline.py` against the same emulated
Orchestra API and a real OTLP receiver (gRPC), and checks delivery (expected / received /
lost / duplicated spans). Prints a table with a verdict per target and writes everything
measured as JSON. Sizes: `Sizes` in tests/bench/sizes.py. See docs/performance.md.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, fields, replace
from pathlib import Path
from typing import Any

from tests.bench.common import NAIVE, OTEL, load_average, log
from tests.bench.report import notes, render, table
from tests.bench.scenarios import SCENARIOS
from tests.bench.sizes import QUICK, Sizes
from tests.support.world import REPO

__all__ = ["Sizes", "main"]


def _code_version() -> dict[str, Any]:
    """The commit measured, and whether exporter/ differed from it (others edit it too)."""

    def git(*args: str) -> str:
        result = subprocess.run(
            ["git", *args], cwd=REPO, capture_output=True, text=True, check=False
        )
        return result.stdout.strip()

    return {
        "commit": git("rev-parse", "HEAD"),
        "exporter_uncommitted_changes": bool(git("status", "--porcelain", "exporter")),
    }


def _size_value(current: Any, text: str) -> Any:
    """`text` read as the type of the size it replaces ("0.3,2.5" for a pair)."""
    if isinstance(current, bool):
        if text.lower() not in ("true", "false", "1", "0", "yes", "no"):
            raise ValueError(f"not a boolean: {text!r}")
        return text.lower() in ("true", "1", "yes")
    if isinstance(current, tuple):
        return tuple(type(item)(part) for item, part in zip(current, text.split(","), strict=True))
    return type(current)(text)


def _sizes(parser: argparse.ArgumentParser, quick: bool, settings: list[str]) -> Sizes:
    sizes = QUICK if quick else Sizes()
    names = {field.name for field in fields(Sizes)}
    for item in settings:
        name, _, value = item.partition("=")
        if name not in names:
            parser.error(f"--set: unknown size {name!r}")
        try:
            sizes = replace(sizes, **{name: _size_value(getattr(sizes, name), value)})
        except ValueError as exc:
            parser.error(f"--set {name}: {exc}")
    return sizes


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.bench.run")
    parser.add_argument("--quick", action="store_true", help="reduced sizes (smoke check)")
    parser.add_argument("--out", type=Path, default=REPO / "tests/bench/results/latest.json")
    parser.add_argument("--only", help=f"comma-separated subset of {','.join(SCENARIOS)}")
    parser.add_argument("--no-profile", action="store_true", help="skip the profiles")
    parser.add_argument(
        "--set", action="append", default=[], metavar="SIZE=VALUE", help="override one size"
    )
    args = parser.parse_args(argv)
    sizes = _sizes(parser, args.quick, args.set)
    chosen = args.only.split(",") if args.only else list(SCENARIOS)
    if args.no_profile and "profiles" in chosen:
        chosen.remove("profiles")
    unknown = set(chosen) - set(SCENARIOS)
    if unknown:
        parser.error(f"unknown scenarios: {', '.join(sorted(unknown))}")
    command = "python -m tests.bench.run " + " ".join(argv if argv is not None else sys.argv[1:])
    results: dict[str, Any] = {
        "command": command.strip(),
        "quick": args.quick,
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "machine": {
            "python": platform.python_version(),
            "platform": platform.platform(),
            "cpus": os.cpu_count(),
            "load_average_start": load_average(),
        },
        "code": _code_version(),
        "sizes": asdict(sizes),
        "scenarios": {},
        "durations_s": {},
        "load_average_after": {},
    }
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="orchestra-otel-bench-") as folder:
        for name, function in SCENARIOS.items():
            if name not in chosen:
                continue
            log(f"scenario {name} ...")
            began = time.monotonic()
            results["scenarios"][name] = function(sizes, Path(folder))
            results["durations_s"][name] = round(time.monotonic() - began, 1)
            results["load_average_after"][name] = load_average()
    results["durations_s"]["total"] = round(time.monotonic() - started, 1)
    results["machine"]["load_average_end"] = load_average()
    rows = table(results)
    results["table"] = [
        dict(zip(("figure", OTEL, NAIVE, "target", "verdict"), row, strict=True)) for row in rows
    ]
    results["notes"] = notes(results)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2, default=str) + "\n", encoding="utf-8")
    print(render(rows))
    for note in results["notes"]:
        print(f"\n* {note}")
    print(
        f"\n{results['durations_s']['total']:.0f} s in all; load average "
        f"{results['machine']['load_average_start']} -> {results['machine']['load_average_end']}"
        f" on {results['machine']['cpus']} CPUs; commit {results['code']['commit'][:9]}; "
        f"JSON: {args.out}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
