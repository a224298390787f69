"""The `orchestra-otel` command line (docs/design.md, "Commands")."""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import socket
import sys
import tempfile
import time
from collections.abc import Sequence
from importlib import resources
from pathlib import Path
from typing import Final
from urllib.parse import urlparse

from exporter import __version__
from exporter.app import Runtime, mapping_options, open_runtime
from exporter.config import KEYS, Settings, load_settings
from exporter.errors import ApiAuthError, ApiError, ConfigError, OrchestraOtelError, StateError
from exporter.httpserver import HttpServer
from exporter.logs import configure_logging
from exporter.mapping.graph import graph_from_api
from exporter.mapping.spans import WorkflowInfo, map_run
from exporter.mapping.timeparse import lenient_timestamp_ns
from exporter.results import PollResult
from exporter.scheduler import Daemon
from exporter.sink.base import SpanSink
from exporter.sink.encoding import Framer, to_otlp_json
from exporter.sink.factory import build_sink
from exporter.sink.otlp import probe_endpoint
from exporter.source.models import Run, Step, Workflow, parse_records, replace_lone_surrogates
from exporter.textsafe import escape_control

log = logging.getLogger("orchestra-otel")

EXIT_OK: Final = 0
EXIT_FAILED: Final = 1
EXIT_CONFIG: Final = 2
# The state file cannot be used (damaged, a symlink, an unwritable place): restarting
# will not help, so systemd's RestartPreventExitStatus= names it.
EXIT_STATE: Final = 3

DEMO_API_KEY: Final = "demo-key"


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help(sys.stderr)
        return EXIT_CONFIG
    try:
        code: int = args.handler(args)
        return code
    except ConfigError as exc:
        print("orchestra-otel: invalid configuration:", file=sys.stderr)
        for problem in exc.problems:
            print(f"  {problem}", file=sys.stderr)
        return EXIT_CONFIG
    except ApiAuthError as exc:
        print(
            f"orchestra-otel: the API rejected the key: {escape_control(str(exc))}", file=sys.stderr
        )
        return EXIT_CONFIG
    except StateError as exc:
        print(f"orchestra-otel: {escape_control(str(exc))}", file=sys.stderr)
        return EXIT_STATE
    except OrchestraOtelError as exc:
        print(f"orchestra-otel: {escape_control(str(exc))}", file=sys.stderr)
        return EXIT_FAILED
    except KeyboardInterrupt:
        return EXIT_OK


# --- parser ------------------------------------------------------------------------------


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="orchestra-otel",
        description="Export Arcee Orchestra workflow runs as OpenTelemetry traces.",
    )
    parser.add_argument("--version", action="version", version=f"orchestra-otel {__version__}")
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--config", type=Path, help="YAML config file (see config/)")
    settings_flags = common.add_argument_group("settings (override the file and environment)")
    for key in KEYS:
        if key.field == "api_key":
            continue  # a key on the command line ends up in shell history and `ps`
        settings_flags.add_argument(
            key.flag, dest=f"set_{key.field}", metavar="VALUE", help=f"{key.help} [{key.env}]"
        )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")

    def command(name: str, help_text: str, handler: object) -> argparse.ArgumentParser:
        sub = commands.add_parser(name, parents=[common], help=help_text, description=help_text)
        sub.set_defaults(handler=handler)
        return sub

    command("run", "poll on a schedule until SIGTERM/SIGINT", _cmd_run)
    command("once", "one full cycle (discover, fetch, export), then exit", _cmd_once)
    demo = command(
        "demo",
        "run the built-in Orchestra emulator and the daemon against it (no account needed)",
        _cmd_demo,
    )
    demo.add_argument("--duration", type=float, help="stop after this many seconds")
    demo.add_argument("--port", type=int, default=0, help="emulator port (default: any free)")
    command("check", "validate config, test API auth and OTLP reachability", _cmd_check)
    backfill_cmd = command(
        "backfill", "export the run history of a time window (resumable)", _cmd_backfill
    )
    backfill_cmd.add_argument(
        "--since", required=True, help="start: 2025-03-01, 2025-03-01T10:00:00Z or 36h (ago)"
    )
    backfill_cmd.add_argument("--until", help="end, same forms (default: now)")
    backfill_cmd.add_argument(
        "--workflow", action="append", default=[], metavar="ID", help="only this workflow (repeat)"
    )
    export_run = command("export-run", "export one run now (backfill, debugging)", _cmd_export_run)
    export_run.add_argument("workflow_id")
    export_run.add_argument("run_id")
    convert = command(
        "convert",
        "offline: steps JSON (as the API returns it) -> OTLP JSON on stdout",
        _cmd_convert,
    )
    convert.add_argument("file", help="steps JSON file, or - for standard input")
    convert.add_argument("--run", type=Path, help="the run record (GET .../runs/{run_id})")
    convert.add_argument(
        "--workflows-file", type=Path, help="GET /workflows response (names, graph)"
    )
    convert.add_argument(
        "--workflow-id", help="workflow id (default: from --workflows-file if single)"
    )
    convert.add_argument("--run-id", help="run id (default: from the steps' inputs.run_id)")
    convert.add_argument("--indent", type=int, default=None, help="pretty-print JSON")
    return parser


def _flags(args: argparse.Namespace) -> dict[str, object]:
    return {
        key.field: getattr(args, f"set_{key.field}")
        for key in KEYS
        if getattr(args, f"set_{key.field}", None) is not None
    }


def _settings(args: argparse.Namespace, *, require_api_key: bool = True) -> Settings:
    settings = load_settings(
        config_path=args.config, flags=_flags(args), require_api_key=require_api_key
    )
    configure_logging(settings.log_level, settings.log_format, settings.secrets())
    for warning in settings.warnings():
        log.warning("%s", warning)
    return settings


# --- commands ----------------------------------------------------------------------------


def _cmd_run(args: argparse.Namespace) -> int:
    settings = _settings(args)
    sink = build_sink(settings, "export")
    return asyncio.run(_daemon(settings, sink, settings.api_key_value() or ""))


def _cmd_once(args: argparse.Namespace) -> int:
    settings = _settings(args)
    sink = build_sink(settings, "export")
    return asyncio.run(_once(settings, sink, settings.api_key_value() or ""))


def _cmd_export_run(args: argparse.Namespace) -> int:
    settings = _settings(args)
    sink = build_sink(settings, "export")

    async def run() -> int:
        runtime = open_runtime(settings, sink, settings.api_key_value() or "")
        try:
            result = await runtime.poller.export_run(args.workflow_id, args.run_id)
        finally:
            await runtime.close()
        _print_result(result)
        return _exit_code(result)

    return asyncio.run(run())


async def _once(settings: Settings, sink: SpanSink, api_key: str) -> int:
    runtime = open_runtime(settings, sink, api_key)
    try:
        result = await runtime.poll_and_log()
    finally:
        await runtime.close()
    return _exit_code(result)


async def _daemon(
    settings: Settings,
    sink: SpanSink,
    api_key: str,
    duration: float | None = None,
    *,
    any_port_if_busy: bool = False,
) -> int:
    runtime = open_runtime(settings, sink, api_key)
    schedule = settings.schedule
    log.info(
        "orchestra-otel %s: polling %s %s; exporting to %s",
        __version__,
        settings.shown_base_url,
        schedule.describe(),
        sink.name,
    )

    async def poll() -> None:
        await runtime.poll_and_log()

    runtime.telemetry.poll_tick.set(schedule.tick_s)
    daemon = Daemon(
        poll,
        runtime.discover,
        poll_interval=schedule.tick_s,
        discovery_interval=settings.discovery_interval,
        on_overrun=runtime.telemetry.poll_overruns.inc,
    )
    server = None
    try:
        if settings.http_addr is not None:
            server = _http_server(settings, runtime, any_port_if_busy)
            server.start()
        await daemon.run(duration)
    finally:
        if server is not None:
            server.stop()
        await runtime.close()
    log.info("stopped")
    return EXIT_OK


def _http_server(settings: Settings, runtime: Runtime, any_port_if_busy: bool) -> HttpServer:
    assert settings.http_addr is not None
    try:
        return HttpServer(settings.http_addr, runtime.telemetry, settings.poll_interval)
    except ConfigError:
        if not any_port_if_busy:
            raise
        # The demo must start even beside a real daemon holding the default port.
        host = settings.http_addr[0]
        return HttpServer((host, 0), runtime.telemetry, settings.poll_interval)


def _exit_code(result: PollResult) -> int:
    if result.auth_failed:
        return EXIT_CONFIG
    return EXIT_OK if result.ok and result.pending_spans == 0 else EXIT_FAILED


def _print_result(result: PollResult) -> None:
    print(result.summary(), file=sys.stderr)
    for error in result.errors:
        print(f"  {escape_control(error)}", file=sys.stderr)


_DEPLOYMENT_ONLY: Final = frozenset(
    {
        "ORCHESTRA_BASE_URL",
        "ORCHESTRA_API_KEY",
        "ORCHESTRA_API_KEY_FILE",
        "ORCHESTRA_STATE_PATH",
        "ORCHESTRA_WORKFLOWS",
        "ORCHESTRA_SHARD",
        "ORCHESTRA_CA_FILE",
    }
)
_DEMO_DEFAULTS: Final = {
    "ORCHESTRA_POLL_INTERVAL": "2",
    "ORCHESTRA_DISCOVERY_INTERVAL": "60",
    "ORCHESTRA_LOOKBACK": "900",
}
# The demo's workflows run every few seconds; none backs off for long.
_DEMO_IDLE_CAP: Final = "8"


def _cmd_demo(args: argparse.Namespace) -> int:
    from exporter.emulator import Emulator, demo_scenario

    state_dir = Path(tempfile.mkdtemp(prefix="orchestra-otel-demo-"))
    # The demo talks to its own emulator: the settings that point at a real deployment
    # (API, key, state file, workflow selection) must not leak into it; the others (logs,
    # the HTTP address, content capture, ...) apply, over quick demo defaults.
    env = {k: v for k, v in os.environ.items() if k not in _DEPLOYMENT_ONLY}
    flags = _flags(args)
    for name, value in _DEMO_DEFAULTS.items():
        env.setdefault(name, value)
    if env.get("ORCHESTRA_POLL_INTERVAL") == _DEMO_DEFAULTS["ORCHESTRA_POLL_INTERVAL"] and (
        "poll_interval" not in flags
    ):
        # Only over the demo's own pace: a user's longer interval would be above the cap.
        env.setdefault("ORCHESTRA_POLL_INTERVAL_MAX", _DEMO_IDLE_CAP)
    # Placeholder prices (packaged with the emulator), so the demo's trees show cost.
    prices = resources.files("exporter.emulator") / "data" / "demo-prices.yaml"
    env.setdefault("ORCHESTRA_PRICES", str(prices))
    env["ORCHESTRA_STATE_PATH"] = str(state_dir / "ledger.db")
    emulator = Emulator(demo_scenario(), port=args.port, api_key=DEMO_API_KEY)
    base_url = emulator.start()
    try:
        flags["base_url"] = base_url
        flags.pop("state_path", None)
        settings = load_settings(
            config_path=args.config, environ=env, flags=flags, require_api_key=False
        )
        configure_logging(settings.log_level, settings.log_format, [])
        sink = build_sink(settings, "demo")
        where = "printed below as trees (set OTEL_EXPORTER_OTLP_ENDPOINT to send them on)"
        if settings.otlp_enabled:
            where = f"sent to {settings.otlp_endpoint} ({settings.otlp_protocol}) and printed below"
        print(
            f"orchestra-otel demo: emulated Orchestra API at {base_url}\n"
            f"  polling every {settings.poll_interval:g}s; traces are {where}\n"
            f"  state: {settings.state_path}; stop with Ctrl-C"
            + (f" (or after {args.duration:g}s)" if args.duration else "")
            + "\n",
            flush=True,
        )
        return asyncio.run(
            _daemon(settings, sink, DEMO_API_KEY, duration=args.duration, any_port_if_busy=True)
        )
    finally:
        emulator.stop()


def _cmd_backfill(args: argparse.Namespace) -> int:
    from exporter.backfill import Progress, Window, backfill, describe_window, parse_time_arg

    settings = _settings(args)
    now = time.time()
    window = Window(
        parse_time_arg(args.since, now=now, flag="--since"),
        parse_time_arg(args.until, now=now, flag="--until") if args.until else int(now * 1e9),
        tuple(args.workflow),
    )
    if window.since_ns > window.until_ns:
        raise ConfigError(["--since: must be before --until"])
    sink = build_sink(settings, "export")

    async def run() -> int:
        runtime = open_runtime(settings, sink, settings.api_key_value() or "")
        log.info("backfill of %s", describe_window(window))
        try:
            result = await backfill(runtime.poller, window, Progress())
        finally:
            await runtime.close()
        _print_result(result)
        return _exit_code(result)

    return asyncio.run(run())


def _cmd_check(args: argparse.Namespace) -> int:
    settings = _settings(args)
    print(f"configuration: ok (API {settings.shown_base_url}, state {settings.state_path})")
    return asyncio.run(_check(settings))


async def _check(settings: Settings) -> int:
    code = EXIT_OK
    runtime: Runtime | None = None
    try:
        runtime = open_runtime(
            settings,
            build_sink(settings, "check"),
            settings.api_key_value() or "",
            push_metrics=False,
        )
        print(f"state file: ok ({settings.state_path}: {runtime.ledger.counts()})")
        try:
            await runtime.poller.workflows.refresh()
            workflows = runtime.poller.workflows.workflows.values()
            names = [escape_control(info.display_name) for info in workflows]
            shown = ", ".join(names[:10]) + (" ..." if len(names) > 10 else "")
            print(f"Orchestra API: ok, key accepted; {len(names)} workflows to export: {shown}")
        except ApiAuthError as exc:
            print(f"Orchestra API: FAILED, the key was rejected ({escape_control(str(exc))})")
            code = EXIT_CONFIG
        except ApiError as exc:
            print(f"Orchestra API: FAILED, {escape_control(str(exc))}")
            code = EXIT_FAILED
    except StateError as exc:
        print(f"state file: FAILED, {escape_control(str(exc))}")
        code = EXIT_STATE
    except OrchestraOtelError as exc:
        print(f"FAILED: {escape_control(str(exc))}")
        code = EXIT_FAILED
    finally:
        if runtime is not None:
            await runtime.close()
    otlp_ok, detail = await asyncio.to_thread(_check_otlp, settings)
    print(f"OTLP endpoint: {'ok' if otlp_ok else 'FAILED'}, {detail}")
    print(f"polling: {settings.schedule.describe()}")
    if settings.http_addr is None:
        print("metrics endpoint: off (ORCHESTRA_HTTP_ADDR=off)")
    else:
        host, port = settings.http_addr
        print(f"metrics endpoint: `run` serves http://{host}:{port}/metrics, /healthz, /readyz")
    if not otlp_ok and code == EXIT_OK:
        code = EXIT_FAILED
    return code


def _check_otlp(settings: Settings) -> tuple[bool, str]:
    """Send an empty export request: proves address, TLS, headers and protocol at once."""
    default_port = 4317 if settings.otlp_protocol == "grpc" else 4318
    endpoint = settings.otlp_endpoint or f"http://localhost:{default_port}"
    where = f"{settings.otlp_protocol} {endpoint}"
    parsed = urlparse(endpoint if "://" in endpoint else f"//{endpoint}")
    host = parsed.hostname or "localhost"
    port = parsed.port or default_port
    try:
        with socket.create_connection((host, port), timeout=3):
            pass
    except OSError as exc:
        return False, f"cannot connect to {where} ({exc.strerror or exc})"
    try:
        accepted = probe_endpoint(settings.otlp_protocol)
    except ConfigError as exc:  # an OTEL_EXPORTER_OTLP_* value the exporter refuses
        return False, f"{where}: {exc}"
    if not accepted:
        return False, f"{where} accepts connections but refused an empty export request"
    return True, f"{where} accepted an export request"


def _cmd_convert(args: argparse.Namespace) -> int:
    text = sys.stdin.read() if args.file == "-" else Path(args.file).read_text(encoding="utf-8")
    try:
        document = replace_lone_surrogates(json.loads(text))
    except ValueError as exc:
        raise ConfigError([f"{args.file}: not JSON ({exc})"]) from exc
    if not isinstance(document, list):
        raise ConfigError([f"{args.file}: expected the steps array the API returns"])
    steps, rejected = parse_records(document, Step)
    for bad in rejected:
        print(f"warning: step #{bad.index} skipped: {escape_control(bad.reason)}", file=sys.stderr)
    workflow = _convert_workflow(args)
    run = _convert_run(args, steps)
    settings = load_settings(environ=os.environ, require_api_key=False)
    options = mapping_options(settings)
    mapped = map_run(workflow, run, steps, options)
    for problem in mapped.problems:
        print(
            f"warning: {escape_control(problem.record)}: {escape_control(problem.reason)}",
            file=sys.stderr,
        )
    framer = Framer.of(options.resource, options.scope)
    print(to_otlp_json(framer, mapped.all_spans(), indent=args.indent))
    return EXIT_OK


def _convert_workflow(args: argparse.Namespace) -> WorkflowInfo:
    if args.workflows_file is None:
        return WorkflowInfo(args.workflow_id or "unknown")
    listed, _ = parse_records(json.loads(args.workflows_file.read_text(encoding="utf-8")), Workflow)
    chosen = [wf for wf in listed if args.workflow_id in (None, wf.workflow_id)]
    if len(chosen) != 1:
        raise ConfigError(["--workflow-id: name one of the workflows in --workflows-file"])
    return WorkflowInfo(chosen[0].workflow_id, chosen[0].name, graph_from_api(chosen[0].graph))


def _convert_run(args: argparse.Namespace, steps: list[Step]) -> Run:
    if args.run is not None:
        body = json.loads(args.run.read_text(encoding="utf-8"))
        body = body[0] if isinstance(body, list) and len(body) == 1 else body
        runs, _ = parse_records([body], Run)
        if not runs:
            raise ConfigError([f"--run: {args.run} holds no readable run record"])
        return runs[0]
    run_id = args.run_id or _run_id_from_steps(steps)
    if run_id is None:
        raise ConfigError(["--run-id: required (the steps carry no inputs.run_id)"])
    # Without the run record the run counts as ended when its last step did.
    ends = [t for t in (lenient_timestamp_ns(step.end_time) for step in steps) if t is not None]
    end = max(ends) if ends else None
    return Run(id=run_id, end_time=_iso(end) if end is not None else None)


def _run_id_from_steps(steps: list[Step]) -> str | None:
    for step in steps:
        if isinstance(step.inputs, dict) and isinstance(step.inputs.get("run_id"), str):
            return str(step.inputs["run_id"])
    return None


def _iso(ns: int) -> str:
    from datetime import datetime, timezone

    seconds, rest = divmod(ns, 1_000_000_000)
    stamp = datetime.fromtimestamp(seconds, timezone.utc).strftime("%Y-%m-%dT%H:%M:%S")
    return f"{stamp}.{rest:09d}Z"


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
