"""Secrets and exposure: the API key, prompt content, the state file, the HTTP port, TLS.

docs/design.md, "Settings": "The API key never appears in logs, spans, metrics, the state file
or errors." A distinctive key is used for real (the emulator only answers to it), and
every byte the daemon produced is searched for it: stdout and stderr of every command,
every OTLP request the receiver accepted (spans, resources, events, headers, metrics),
`/metrics` and the probes, the SQLite ledger with its -wal and -shm files.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import stat
import subprocess
import traceback
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from exporter.emulator import FaultRule
from tests.support.daemon import Daemon, wait_for
from tests.support.otlp_receiver import OtlpReceiver, ReceivedSpan
from tests.support.ports import listening_sockets, port_is_free
from tests.support.tls import TlsProxy, make_self_signed_cert
from tests.support.world import World

pytestmark = pytest.mark.integration

DEFAULT_HTTP_PORT = 9464


@pytest.fixture
def api_key() -> str:
    return f"sk-SECRET-{secrets.token_hex(16)}"


def occurrences(secret: str, blobs: dict[str, bytes | str]) -> list[str]:
    """Names of the blobs that contain `secret` (as UTF-8 bytes, or UTF-16 in SQLite)."""
    needles = [secret.encode(), secret.encode("utf-16-le"), secret.encode("utf-16-be")]
    found = []
    for name, blob in blobs.items():
        data = blob.encode("utf-8", "surrogateescape") if isinstance(blob, str) else blob
        if any(needle in data for needle in needles):
            found.append(name)
    return found


def state_files(state_path: Path) -> dict[str, bytes]:
    """The SQLite ledger and its -wal/-shm/-journal companions, as they are on disk now."""
    files = {}
    for suffix in ("", "-wal", "-shm", "-journal"):
        path = Path(str(state_path) + suffix)
        with contextlib.suppress(FileNotFoundError):
            files[path.name] = path.read_bytes()
    return files


def needles(key: str) -> list[str]:
    """The key, and its random part alone (a leak that mangled the prefix still counts)."""
    return [key, key.rsplit("-", 1)[-1]]


def leaks(key: str, blobs: dict[str, Any]) -> list[str]:
    found: list[str] = []
    for needle in needles(key):
        found.extend(occurrences(needle, blobs))
    return sorted(set(found))


def receiver_blobs(receiver: OtlpReceiver) -> dict[str, bytes | str]:
    """Every accepted OTLP request, byte for byte, its headers, and the metric points."""
    blobs: dict[str, bytes | str] = {}
    for index, request in enumerate(receiver.requests()):
        blobs[f"otlp request {index} ({request.protocol})"] = request.request.SerializeToString()
        blobs[f"otlp request {index} headers"] = json.dumps(request.headers)
    blobs["otlp spans"] = repr(receiver.spans())
    blobs["otlp metric points"] = repr(receiver.metric_points())
    return blobs


def assert_mode_0600(paths: list[Path]) -> None:
    for path in paths:
        mode = stat.S_IMODE(path.stat().st_mode)
        assert mode == 0o600, f"{path.name} is {oct(mode)}, not 0o600"


# --------------------------------------------------------------------------- the key


@pytest.mark.parametrize("source", ["env", "key-file"])
def test_the_api_key_never_leaks(world: World, tmp_path: Path, api_key: str, source: str) -> None:
    world.emulator.api_key = api_key  # the emulator answers to this key and no other
    if source == "env":
        key_env = {"ORCHESTRA_API_KEY": api_key}
    else:
        key_file = tmp_path / "orchestra.key"
        key_file.write_text(f"\n  {api_key}  \n")  # surrounding whitespace is stripped
        key_file.chmod(0o600)
        key_env = {"ORCHESTRA_API_KEY": "", "ORCHESTRA_API_KEY_FILE": str(key_file)}
    debug = {**key_env, "ORCHESTRA_LOG_LEVEL": "debug", "OTEL_EXPORTER_OTLP_TIMEOUT": "1"}
    text, as_json = {"ORCHESTRA_LOG_FORMAT": "text"}, {"ORCHESTRA_LOG_FORMAT": "json"}
    blobs: dict[str, Any] = {}

    def command(label: str, expected: int, *args: str, **extra: str) -> None:
        result = world.cli(*args, **{**debug, **extra})
        blobs[f"{label}: stdout"] = result.stdout
        blobs[f"{label}: stderr"] = result.stderr
        assert result.returncode == expected, f"{label}: {result.stdout}\n{result.stderr}"

    def daemon_output(label: str, daemon: Daemon) -> None:
        for path in ("/metrics", "/readyz", "/healthz"):
            blobs[f"{label}: GET {path}"] = daemon.get(path)[1]
        for name, data in state_files(world.state_path).items():
            blobs[f"{label}: {name}"] = data

    # Success paths, debug logs in both formats.
    command("once", 0, "once", **text)
    assert " DEBUG " in blobs["once: stderr"], "debug logging is not on: the test proves little"
    world.receiver.wait_for_spans(world.expected_span_count(), timeout=10)
    command("check", 0, "check", **as_json)

    workflow_id = world.scenario.workflow_ids()[1]
    with world.daemon(ORCHESTRA_POLL_INTERVAL="0.3", **debug, **text) as daemon:
        world.scenario.add_run(workflow_id)
        world.clock.advance(120)  # the new run finishes
        world.receiver.wait_for_spans(world.expected_span_count(), timeout=15)
        wait_for(lambda: daemon.polls() >= 2, 10, "no poll after the export")
        files = [Path(str(world.state_path) + s) for s in ("", "-wal", "-shm")]
        assert_mode_0600([f for f in files if f.exists()])
        daemon_output("daemon text", daemon)
        assert daemon.stop() == 0, daemon.stderr
    blobs["daemon text: stderr"], blobs["daemon text: stdout"] = daemon.stderr, daemon.stdout

    # Failure paths: the API answers 500, then rejects the key; the OTLP endpoint is down.
    with world.daemon(ORCHESTRA_POLL_INTERVAL="0.3", **debug, **as_json) as daemon:
        wait_for(lambda: daemon.polls() >= 1, 15, "the daemon did not poll")
        world.emulator.faults.add(FaultRule(action="status", status=500, times=None))
        seen = daemon.polls()
        wait_for(lambda: daemon.polls() >= seen + 1, 15, "no poll while the API fails")
        world.emulator.faults.clear()
        world.emulator.api_key = "someone-elses-key"
        wait_for(
            lambda: daemon.metric("orchestra_otel_api_auth_failing") == 1, 15, "401 not noticed"
        )
        daemon_output("daemon 401", daemon)
        world.emulator.api_key = api_key
        wait_for(lambda: daemon.metric("orchestra_otel_api_auth_failing") == 0, 15, "no recovery")
        world.receiver.stop()
        world.scenario.add_run(workflow_id)
        world.clock.advance(120)
        wait_for(
            lambda: daemon.metric("orchestra_otel_export_failures_total") >= 1,
            20,
            "the failing export was not noticed",
        )
        daemon_output("daemon otlp down", daemon)
        assert daemon.stop() == 0, daemon.stderr
    blobs["daemon json: stderr"], blobs["daemon json: stdout"] = daemon.stderr, daemon.stdout
    assert '"level": "debug"' in daemon.stderr
    for name, data in state_files(world.state_path).items():  # the spool holds spans
        blobs[f"after outage: {name}"] = data

    # The commands' own error paths: API 500 and OTLP down at once, then a rejected key.
    world.emulator.faults.add(FaultRule(action="status", status=500, times=None))
    command("once 500, otlp down", 1, "once", ORCHESTRA_POLL_INTERVAL="0.2", **as_json)
    world.emulator.faults.clear()
    world.emulator.api_key = "someone-elses-key"
    command("check 401, otlp down", 2, "check", **text)
    world.receiver.start()
    world.emulator.api_key = api_key
    command("once after the outages", 0, "once", **text)

    blobs.update(receiver_blobs(world.receiver))
    # The key was really used: the emulator accepted requests that carried it.
    assert world.emulator.stats()["by_status"]["list_workflows"].get("200", 0) >= 3
    assert world.receiver.span_count() >= world.expected_span_count()
    assert not leaks(api_key, blobs), f"the API key leaked into: {leaks(api_key, blobs)}"


def test_a_key_echoed_by_the_api_is_redacted_from_the_logs(world: World, api_key: str) -> None:
    """Some APIs quote the token in their error body; the daemon logs must not repeat it."""
    world.emulator.api_key = api_key
    echo = json.dumps({"detail": f"token {api_key} is not allowed here"})
    run_id = str((world.scenario.runs(world.scenario.workflow_ids()[0]) or [])[0]["id"])
    world.emulator.faults.add(
        FaultRule(action="status", kind="steps", status=400, body=echo, path_contains=run_id)
    )
    once = world.cli("once", ORCHESTRA_API_KEY=api_key)
    assert once.returncode == 1, once.stderr
    assert "400" in once.stderr, "the failing request is not reported"
    world.emulator.faults.add(FaultRule(action="status", status=401, body=echo, times=None))
    rejected = world.cli("once", ORCHESTRA_API_KEY=api_key, ORCHESTRA_LOG_FORMAT="json")
    assert rejected.returncode == 2, rejected.stderr
    blobs = {
        "once 400 stderr": once.stderr,
        "once 400 stdout": once.stdout,
        "once 401 stderr": rejected.stderr,
        "once 401 stdout": rejected.stdout,
    }
    assert not leaks(api_key, blobs), leaks(api_key, blobs)


def test_check_does_not_print_a_key_echoed_by_the_api(world: World, api_key: str) -> None:
    world.emulator.api_key = api_key
    echo = json.dumps({"detail": f"token {api_key} is not allowed here"})
    world.emulator.faults.add(FaultRule(action="status", status=401, body=echo, times=None))
    check = world.cli("check", ORCHESTRA_API_KEY=api_key)
    assert check.returncode == 2, check.stdout + check.stderr
    assert "rejected" in check.stdout
    blobs = {"check stdout": check.stdout, "check stderr": check.stderr}
    assert not leaks(api_key, blobs), check.stdout


CONFIG_MISTAKES: dict[str, tuple[str | None, dict[str, str], str]] = {
    # name: (YAML config text or None, environment, what the error must name)
    "yaml-unclosed-list": ("api_key: {key}\npoll_interval: [1, 2\n", {}, "not valid YAML"),
    "yaml-colon-in-value": ("api_key: {key}: oops\n", {}, "not valid YAML"),
    "yaml-key-as-list": ("api_key: [{key}]\n", {}, "api_key"),
    "yaml-misspelt-name": ("apikey: {key}\n", {}, "apikey"),
    "yaml-key-in-other-fields": (
        "api_key: {key}\npoll_interval: {key}\nbase_url: {key}\nshard: {key}\n"
        "http_addr: {key}\nlog_level: {key}\ncapture_content: {key}\n",
        {},
        "poll_interval",
    ),
    "key-pasted-into-key-file-variable": (None, {"ORCHESTRA_API_KEY_FILE": "{key}"}, "KEY_FILE"),
    "key-and-key-file-both-set": (
        None,
        {"ORCHESTRA_API_KEY": "{key}", "ORCHESTRA_API_KEY_FILE": "{key}"},
        "not both",
    ),
    "another-setting-wrong": (
        None,
        {"ORCHESTRA_API_KEY": "{key}", "ORCHESTRA_POLL_INTERVAL": "soon"},
        "ORCHESTRA_POLL_INTERVAL",
    ),
}


def test_configuration_errors_never_echo_the_key(
    world: World, tmp_path: Path, api_key: str
) -> None:
    """Each mistake is its own `once` (run side by side: each is only a start-up)."""

    def attempt(mistake: str) -> None:
        config_text, env, named = CONFIG_MISTAKES[mistake]
        extra = {"ORCHESTRA_API_KEY": ""}
        extra.update({name: value.format(key=api_key) for name, value in env.items()})
        args = ["once"]
        if config_text is not None:
            config = tmp_path / f"{mistake}.yaml"
            config.write_text(config_text.format(key=api_key))
            args += ["--config", str(config)]
        result = world.cli(*args, **extra)
        assert result.returncode == 2, result.stderr
        assert named in result.stderr, f"the error does not name the problem:\n{result.stderr}"
        assert "Traceback" not in result.stderr
        blobs = {"stdout": result.stdout, "stderr": result.stderr}
        assert not leaks(api_key, blobs), f"the key is echoed:\n{result.stderr}"

    with ThreadPoolExecutor(max_workers=4) as pool:
        futures = {mistake: pool.submit(attempt, mistake) for mistake in CONFIG_MISTAKES}
        problems = {
            mistake: "".join(traceback.format_exception_only(error)).strip()
            for mistake, future in futures.items()
            if (error := future.exception(timeout=120)) is not None
        }
    assert not problems, "\n\n".join(f"[{name}] {text}" for name, text in problems.items())
    assert world.emulator.stats()["total"] == 0


def test_a_base64_key_pasted_into_the_key_file_variable_is_not_echoed(world: World) -> None:
    key = f"sk-SECRET/{secrets.token_hex(12)}+Zm9v="  # base64 alphabet: '/' and '+'
    result = world.cli("once", ORCHESTRA_API_KEY="", ORCHESTRA_API_KEY_FILE=key)
    assert result.returncode == 2, result.stderr
    assert "ORCHESTRA_API_KEY_FILE" in result.stderr
    assert not leaks(key, {"stdout": result.stdout, "stderr": result.stderr}), result.stderr


# --------------------------------------------------------------------------- content


CONTENT_ATTRIBUTES = {
    "gen_ai.input.messages",
    "gen_ai.output.messages",
    "gen_ai.tool.call.arguments",
    "gen_ai.tool.call.result",
    "orchestra.step.input",
    "orchestra.step.output",
    "orchestra.run.input",
    "orchestra.run.output",
}


def prompt_texts(world: World) -> dict[str, list[str]]:
    """step id -> the prompts and completions of its model call, as the API served them."""
    texts: dict[str, list[str]] = {}
    for workflow_id in world.scenario.workflow_ids():
        for run in world.scenario.runs(workflow_id) or []:
            for step in world.scenario.steps(workflow_id, str(run["id"])) or []:
                found = []
                inputs, outputs = step.get("inputs") or {}, step.get("outputs") or {}
                for message in inputs.get("messages") or []:
                    found.append(message.get("content"))
                if isinstance(outputs, dict):
                    for choice in outputs.get("choices") or []:
                        found.append((choice.get("message") or {}).get("content"))
                texts[str(step["id"])] = [t for t in found if isinstance(t, str) and t]
    return {step_id: found for step_id, found in texts.items() if found}


def fragments(text: str) -> list[str]:
    """Pieces of a text that must not show up anywhere (raw, or escaped inside JSON)."""
    lines = [line.strip() for line in text.splitlines() if len(line.strip()) >= 12]
    return lines + [json.dumps(line)[1:-1] for line in lines]


def span_text(span: ReceivedSpan) -> str:
    return json.dumps(
        [
            span.name,
            span.attributes,
            [list(event) for event in span.events],
            span.status_message,
            span.resource_attributes,
        ],
        ensure_ascii=False,
        default=str,
    )


def content_of(spans: list[ReceivedSpan]) -> dict[tuple[str, str, str], str]:
    return {
        (span.trace_id, span.span_id, name): value
        for span in spans
        for name, value in span.attributes.items()
        if name in CONTENT_ATTRIBUTES
    }


def test_content_is_off_by_default_and_truncated_when_on(world: World, tmp_path: Path) -> None:
    texts = prompt_texts(world)
    assert texts, "the scenario has no model steps: nothing to check"
    expected = world.expected_span_count()

    def export(label: str, **extra: str) -> list[ReceivedSpan]:
        world.receiver.clear()
        result = world.cli("once", ORCHESTRA_STATE_PATH=str(tmp_path / f"{label}.db"), **extra)
        assert result.returncode == 0, result.stderr
        return world.receiver.wait_for_spans(expected, timeout=10)

    default = export("default")
    assert not content_of(default), "content attributes exported without opt-in"
    for span in default:
        text = span_text(span)
        for step_texts in texts.values():
            for piece in (p for t in step_texts for p in fragments(t)):
                assert piece not in text, f"prompt/output text {piece!r} in span {span.name}"

    full = export("full", ORCHESTRA_CAPTURE_CONTENT="true", ORCHESTRA_CONTENT_MAX_LENGTH="100000")
    captured = content_of(full)
    names = {name for _, _, name in captured}
    assert {"gen_ai.input.messages", "gen_ai.output.messages"} <= names, names
    by_step = {s.attributes.get("orchestra.step.id"): s for s in full}
    for step_id, step_texts in texts.items():
        span = by_step[step_id]
        held = span.attributes.get("gen_ai.input.messages", "") + span.attributes.get(
            "gen_ai.output.messages", ""
        )
        for piece in (p for t in step_texts for p in fragments(t)[:1]):
            assert piece in held or json.dumps(piece)[1:-1] in held, (step_id, piece, held)

    limit = 40
    cut = export("cut", ORCHESTRA_CAPTURE_CONTENT="true", ORCHESTRA_CONTENT_MAX_LENGTH=str(limit))
    truncated = content_of(cut)
    assert truncated.keys() == captured.keys()
    shortened = 0
    for where, value in truncated.items():
        whole = captured[where]
        assert len(value) <= limit, (where, value)
        if len(whole) <= limit:
            assert value == whole, where
        else:
            shortened += 1
            if whole[:1] in "[{":  # JSON stays JSON: texts inside are cut, never the document
                json.loads(value)
                assert "…" in value or len(value) < len(whole), (where, value, whole)
            else:
                kept = value.rstrip("…")
                assert whole.startswith(kept) and len(kept) >= limit - 1, (where, value, whole)
    assert shortened, "no captured value was longer than the limit: truncation untested"


# --------------------------------------------------------------------------- exposure


def test_state_files_are_private_even_with_a_permissive_umask(world: World) -> None:
    previous = os.umask(0)  # inherited by the daemon: SQLite alone would create 0666 files
    try:
        daemon = world.daemon(ORCHESTRA_POLL_INTERVAL="0.5")
    finally:
        os.umask(previous)
    with daemon:
        world.receiver.wait_for_spans(world.expected_span_count(), timeout=15)
        files = [Path(str(world.state_path) + suffix) for suffix in ("", "-wal", "-shm")]
        wait_for(lambda: all(f.exists() for f in files), 10, "no WAL files")
        assert_mode_0600(files)
        assert daemon.stop() == 0, daemon.stderr
    assert_mode_0600([f for f in files if f.exists()])


def test_http_server_listens_on_loopback_only_by_default(world: World) -> None:
    if not port_is_free(DEFAULT_HTTP_PORT):
        pytest.skip(f"port {DEFAULT_HTTP_PORT} is busy on this machine")
    with world.daemon(drop=["ORCHESTRA_HTTP_ADDR"], ORCHESTRA_POLL_INTERVAL="1") as daemon:
        assert daemon.http_base == f"http://127.0.0.1:{DEFAULT_HTTP_PORT}", daemon.stderr
        assert daemon.get("/healthz")[0] == 200
        listeners = listening_sockets(daemon.process.pid)
        ours = [item for item in listeners if item.port == DEFAULT_HTTP_PORT]
        assert [(item.family, item.address) for item in ours] == [("tcp", "127.0.0.1")], listeners
        assert all(item.address in ("127.0.0.1", "::1") for item in listeners), listeners
        with contextlib.suppress(FileNotFoundError):
            ss = subprocess.run(["ss", "-ltn"], capture_output=True, text=True, timeout=10)
            lines = [line for line in ss.stdout.splitlines() if f":{DEFAULT_HTTP_PORT} " in line]
            assert lines and all(f"127.0.0.1:{DEFAULT_HTTP_PORT}" in line for line in lines), lines
        assert daemon.stop() == 0, daemon.stderr


@pytest.fixture
def tls_proxy(world: World, tmp_path: Path) -> Iterator[tuple[TlsProxy, Path]]:
    made = make_self_signed_cert(tmp_path)
    if made is None:
        pytest.skip("neither the cryptography package nor the openssl command is available")
    cert, key = made
    with TlsProxy(("127.0.0.1", world.emulator.port), cert, key) as proxy:
        yield proxy, cert


def test_api_certificates_are_verified_unless_a_ca_file_is_given(
    world: World, tls_proxy: tuple[TlsProxy, Path]
) -> None:
    proxy, cert = tls_proxy
    url = f"https://127.0.0.1:{proxy.port}{world.emulator.base_path}"
    refused = world.cli("once", ORCHESTRA_BASE_URL=url)
    assert refused.returncode == 1, refused.stderr
    assert "Traceback" not in refused.stderr
    assert proxy.handshakes_failed >= 1 and proxy.handshakes_ok == 0
    assert world.emulator.stats()["total"] == 0, "a request went through an untrusted TLS link"
    assert world.receiver.span_count() == 0

    trusted = world.cli("once", ORCHESTRA_BASE_URL=url, ORCHESTRA_CA_FILE=str(cert))
    assert trusted.returncode == 0, trusted.stderr
    assert proxy.handshakes_ok >= 1
    world.receiver.wait_for_spans(world.expected_span_count(), timeout=10)
    assert world.receiver.duplicate_count() == 0


def test_a_certificate_failure_is_explained(world: World, tls_proxy: tuple[TlsProxy, Path]) -> None:
    proxy, _ = tls_proxy
    url = f"https://127.0.0.1:{proxy.port}{world.emulator.base_path}"
    with ThreadPoolExecutor(max_workers=2) as pool:
        runs = [
            pool.submit(world.cli, command, ORCHESTRA_BASE_URL=url, ORCHESTRA_POLL_INTERVAL="0.5")
            for command in ("once", "check")
        ]
        once, check = (run.result(timeout=90) for run in runs)
    assert once.returncode == 1 and check.returncode == 1
    for output in (once.stderr, check.stdout):
        assert "certificate" in output.lower(), output
