"""`python -m exporter.emulator`: serve an emulated Orchestra API until Ctrl-C or SIGTERM."""

from __future__ import annotations

import argparse
import signal
import sys
import threading
from types import FrameType

from exporter.emulator.demo import demo_scenario
from exporter.emulator.fixtures import fixture_scenario
from exporter.emulator.scenario import Scenario
from exporter.emulator.server import Emulator


def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m exporter.emulator",
        description="Serve an emulated Arcee Orchestra workflow API over HTTP.",
    )
    parser.add_argument(
        "--host", default="127.0.0.1", help="address to bind (default: %(default)s)"
    )
    parser.add_argument(
        "--port", type=int, default=8080, help="0 picks a free port (default: %(default)s)"
    )
    parser.add_argument(
        "--scenario",
        choices=("demo", "fixtures"),
        default="demo",
        help="demo: workflows that keep running; fixtures: the documented payloads",
    )
    parser.add_argument("--api-key", default="demo-key", help="bearer token clients must send")
    parser.add_argument("--seed", type=int, default=0, help="seed of the generated ids and texts")
    return parser.parse_args(argv)


def _build_scenario(name: str, seed: int) -> Scenario:
    return demo_scenario(seed=seed) if name == "demo" else fixture_scenario(seed=seed)


def main(argv: list[str] | None = None) -> int:
    args = _parse_args(argv)
    stop = threading.Event()

    def request_stop(signum: int, frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, request_stop)
    signal.signal(signal.SIGINT, request_stop)
    emulator = Emulator(
        _build_scenario(args.scenario, args.seed),
        host=args.host,
        port=args.port,
        api_key=args.api_key,
    )
    try:
        emulator.start()
    except OSError as error:
        print(f"cannot listen on {args.host}:{args.port}: {error.strerror}", file=sys.stderr)
        return 1
    try:
        # The URL alone on stdout, so scripts can read it; the rest is for people.
        print(emulator.base_url, flush=True)
        print(
            f"Orchestra emulator ({args.scenario}) serving; API key {args.api_key!r}; "
            "Ctrl-C stops it",
            file=sys.stderr,
            flush=True,
        )
        while not stop.wait(0.5):
            pass
    finally:
        emulator.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
