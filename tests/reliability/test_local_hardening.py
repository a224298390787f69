"""Issue 11 (local half): a flooded metrics port, hostile text, a bad key file, a damaged or
planted state file. Each test drives the real command in a subprocess against the
emulator and the real OTLP receiver, and looks from outside: exit codes, stderr and
stdout, /proc, the files on disk, what the receiver got.
"""

from __future__ import annotations

import json
import os
import re
import resource
import secrets
import selectors
import shutil
import socket
import sqlite3
import stat
import threading
import time
from collections.abc import Iterator
from datetime import datetime, timezone
from pathlib import Path

import pytest

from exporter.emulator import FaultRule
from exporter.textsafe import is_unsafe
from tests.support.daemon import Daemon, orchestra_otel, run_command, wait_for
from tests.support.delivery import delivery
from tests.support.world import World, demo_world

pytestmark = pytest.mark.integration

EXIT_CONFIG = 2
EXIT_STATE = 3


@pytest.fixture
def world(tmp_path: Path) -> Iterator[World]:
    with demo_world(tmp_path, history=2, seed=11) as made:
        yield made


def start(world: World, **env: str) -> Daemon:
    """`run` as every daemon here runs: polls every 0.5 s, OTLP timeout 2 s."""
    return world.daemon(**{"OTEL_EXPORTER_OTLP_TIMEOUT": "2", **env})


def unsafe_characters(text: str) -> list[str]:
    """Control/format characters other than the line breaks between lines."""
    return sorted({f"U+{ord(c):04X}" for c in text.replace("\n", "") if is_unsafe(c)})


# --------------------------------------------------------------------------- the port

IDLE_CONNECTIONS = 1000
# A request head that is never finished: no empty line ever follows.
HALF_SENT = b"GET /metrics HTTP/1.1\r\nHost: orchestra-otel\r\nAccept: */*\r\n"


class IdleFlood:
    """Keeps `count` connections open to the port, each with a half-sent request.

    Whatever the server drops is opened again, once a second, for as long as the flood
    runs: the daemon faces `count` idle clients the whole time.
    """

    def __init__(self, port: int, count: int) -> None:
        self.port = port
        self.count = count
        self.opened = 0
        self.dropped_by_server = 0
        self.refused = 0
        self._selector = selectors.DefaultSelector()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._keep_open, daemon=True)

    def __enter__(self) -> IdleFlood:
        self._top_up()
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._stop.set()
        self._thread.join(timeout=30)
        for key in list(self._selector.get_map().values()):
            self._selector.unregister(key.fileobj)
            key.fileobj.close()  # type: ignore[union-attr]
        self._selector.close()

    @property
    def open_now(self) -> int:
        return len(self._selector.get_map())

    def _top_up(self) -> None:
        while len(self._selector.get_map()) < self.count and not self._stop.is_set():
            try:
                sock = socket.create_connection(("127.0.0.1", self.port), timeout=5)
                sock.sendall(HALF_SENT)
            except OSError:
                self.refused += 1
                if self.refused > 10 * self.count:
                    return
                continue
            sock.setblocking(False)
            self._selector.register(sock, selectors.EVENT_READ)
            self.opened += 1

    def _keep_open(self) -> None:
        while not self._stop.wait(1.0):
            # The server never answers a half-sent request: readable means it closed.
            for key, _ in self._selector.select(timeout=0):
                self._selector.unregister(key.fileobj)
                key.fileobj.close()  # type: ignore[union-attr]
                self.dropped_by_server += 1
            self._top_up()


@pytest.fixture
def enough_descriptors() -> Iterator[None]:
    """This test process holds the 1,000 client sockets itself."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = IDLE_CONNECTIONS + 500
    if soft < wanted:
        if hard != resource.RLIM_INFINITY and hard < wanted:
            pytest.skip(f"RLIMIT_NOFILE hard limit {hard} < {wanted}")
        resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))
    yield
    resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


@pytest.mark.usefixtures("enough_descriptors")
def test_a_thousand_idle_connections_neither_add_threads_nor_stop_polls_exports_probes(
    world: World,
) -> None:
    """Finding 3: 2,000 half-sent requests made 2,002 threads, and under a process limit
    the daemon could start no export thread. Now the HTTP side uses a fixed number of
    threads, and everything else goes on while 1,000 idle clients hold the port."""
    with start(world) as daemon:
        wait_for(daemon.ready, 30, lambda: f"never ready:\n{daemon.stderr[-3000:]}")
        wait_for(lambda: delivery(world).complete, 30, lambda: delivery(world).summary())
        threads_before = daemon.threads()
        peak = threads_before
        probe_seconds: list[float] = []

        with IdleFlood(daemon.port, IDLE_CONNECTIONS) as flood:
            assert flood.opened >= IDLE_CONNECTIONS, f"only {flood.opened} connections opened"
            polls_at_start = daemon.metric("orchestra_otel_polls_total")
            run_ids = world.add_finished_runs()
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                peak = max(peak, daemon.threads())
                for path in ("/healthz", "/readyz"):
                    started = time.monotonic()
                    status, body = daemon.get(path, timeout=5)
                    probe_seconds.append(time.monotonic() - started)
                    assert status == 200, (path, status, body)
                polls = daemon.metric("orchestra_otel_polls_total") - polls_at_start
                if polls >= 5 and delivery(world).complete and len(probe_seconds) >= 40:
                    break
                time.sleep(0.2)
            peak = max(peak, daemon.threads())
            figures = (
                f"threads {threads_before} before, {peak} at most with {IDLE_CONNECTIONS} idle "
                f"connections ({flood.opened} opened, {flood.dropped_by_server} dropped by the "
                f"server); {len(probe_seconds)} probes, slowest {max(probe_seconds):.3f}s; "
                f"{polls:.0f} polls; {delivery(world).summary()}"
            )
            print(figures)
            assert daemon.alive, daemon.stderr[-3000:]
            assert polls >= 5, f"polls stalled: {figures}"
            assert delivery(world).complete, f"exports stalled ({len(run_ids)} runs): {figures}"
            # No thread per connection (that was +1,000); the margin covers the poller's
            # short-lived export threads and asyncio's executor growing on a busy machine.
            assert peak <= threads_before + 16, figures
        code, _ = daemon.terminate()
        assert code == 0, daemon.stderr[-3000:]
    log = daemon.stdout + daemon.stderr
    assert "Traceback" not in log, log[max(0, log.find("Traceback") - 600) :][:4000]


# --------------------------------------------------------------------------- hostile text

HOSTILE_NAME = "evil\x1b[2K\rname\x00\x85\u202eeman"
FORGED = "\n2026-01-01T00:00:00 INFO    forged line"
HOSTILE_STEP_ID = f"step-1{FORGED}\x1b]0;title\x07"
HOSTILE_ERROR = "\x1b[2K\rall good\x9b2K\u2066"
HOSTILE_DETAIL = f"bad request\r\x1b[1A\x1b[2K{FORGED}\u202e"


def iso(seconds: float) -> str:
    return datetime.fromtimestamp(seconds, timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def add_hostile_records(world: World) -> tuple[str, str]:
    """A workflow whose name, step ids and error text hold control characters; a run of
    another workflow whose steps request fails with a hostile error body."""
    template = world.scenario.workflow_records()[0]
    workflow_id = "hostile-workflow"
    world.scenario.add_static_workflow(
        {**template, "workflow_id": workflow_id, "name": HOSTILE_NAME}
    )
    node = next(iter(template["graph"]["nodes"]))
    now = world.clock()
    run_id = "0c1d2e3f-4a5b-4c6d-8e7f-8091a2b3c4d5"

    def step(
        step_id: str, start: float | None, status: str, error: str | None
    ) -> dict[str, object]:
        return {
            "id": step_id,
            "node_id": node,
            "status": status,
            "start_time": iso(start) if start is not None else None,
            "end_time": iso(start + 1) if start is not None else None,
            "error": error,
            "outputs": {},
            "inputs": {"run_id": run_id},
        }

    world.scenario.add_static_run(
        workflow_id,
        {
            "id": run_id,
            "status": "failed",
            "start_time": iso(now - 120),
            "end_time": iso(now - 100),
        },
        [
            step(HOSTILE_STEP_ID, now - 119, "failed", HOSTILE_ERROR),
            step(HOSTILE_STEP_ID, now - 118, "completed", None),  # a duplicate: logged
            step(f"no-times{FORGED}", None, "completed", None),  # no times: logged
        ],
    )
    victim_workflow = world.scenario.workflow_ids()[0]
    victim_run = str((world.scenario.runs(victim_workflow) or [])[0]["id"])
    fail_with_hostile_detail(world, "steps", path_contains=victim_run)
    return workflow_id, run_id


def fail_with_hostile_detail(world: World, kind: str, path_contains: str | None = None) -> None:
    """Every `kind` request answers 400 with a detail full of control characters."""
    body = json.dumps({"detail": HOSTILE_DETAIL})
    world.emulator.faults.add(
        FaultRule(
            action="status",
            kind=kind,
            status=400,
            body=body,
            path_contains=path_contains,
            times=None,
        )
    )


TEXT_LINE = re.compile(
    r"^(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d (DEBUG|INFO|WARNING|ERROR|CRITICAL) |    )"
)


def test_api_text_cannot_forge_log_lines_or_steer_the_terminal(world: World) -> None:
    """Finding 4, logs: a hostile step id, error body and workflow name, in text and
    JSON logs at debug, through `once`."""
    add_hostile_records(world)
    text = world.cli("once", ORCHESTRA_LOG_LEVEL="debug", ORCHESTRA_LOG_FORMAT="text")
    assert text.returncode == 1, text.stderr  # the victim run's steps request fails
    lines = text.stderr.splitlines()
    assert unsafe_characters(text.stderr) == []
    strays = [line for line in lines if not TEXT_LINE.match(line)]
    assert strays == [], strays
    assert not any("forged line" in line and line.startswith("2026-01-01") for line in lines)
    # The hostile texts did reach the log, escaped.
    assert "step-1\\n2026-01-01T00:00:00 INFO    forged line\\x1b]0;title\\x07" in text.stderr
    assert "bad request\\r\\x1b[1A\\x1b[2K\\n2026-01-01T00:00:00" in text.stderr

    world.receiver.clear()
    as_json = world.cli(
        "once",
        ORCHESTRA_LOG_LEVEL="debug",
        ORCHESTRA_LOG_FORMAT="json",
        ORCHESTRA_STATE_PATH=str(world.state_path) + ".json-run",
    )
    assert as_json.returncode == 1, as_json.stderr
    assert unsafe_characters(as_json.stderr) == []
    messages = [json.loads(line)["message"] for line in as_json.stderr.splitlines()]
    joined = "\n".join(messages)
    assert HOSTILE_STEP_ID in joined, "the step id does not reach the JSON log intact"
    assert HOSTILE_DETAIL[:40] in joined


def test_check_shows_hostile_workflow_names_and_errors_escaped(world: World) -> None:
    """Finding 4, `check`: ESC, CR and NUL from workflow names were printed raw."""
    add_hostile_records(world)
    check = world.cli("check")
    assert unsafe_characters(check.stdout + check.stderr) == []
    assert "evil\\x1b[2K\\rname\\x00\\x85\\u202eeman" in check.stdout, check.stdout

    fail_with_hostile_detail(world, "list_workflows")
    failing = world.cli("check")
    assert failing.returncode == 1, failing.stdout
    assert "Orchestra API: FAILED" in failing.stdout
    assert unsafe_characters(failing.stdout + failing.stderr) == []
    assert "bad request\\r\\x1b[1A" in failing.stdout


# --------------------------------------------------------------------------- the key


@pytest.fixture
def api_key() -> str:
    return f"sk-SECRET-{secrets.token_hex(16)}"


def key_occurrences(key: str, text: str) -> int:
    random_part = key.rsplit("-", 1)[-1]
    return text.count(random_part)


@pytest.mark.parametrize("command", ["once", "check", "run"])
def test_a_key_file_of_two_lines_is_refused_and_never_logged(
    world: World, tmp_path: Path, api_key: str, command: str
) -> None:
    """Finding 5: `sk-...\\n# rotated` was logged 6 times at debug, inside httpcore's
    "Illegal header value" error and its traceback."""
    world.emulator.api_key = api_key
    key_file = tmp_path / "api-key"
    key_file.write_text(f"{api_key}\n# rotated 2026-01-01\n")
    key_file.chmod(0o600)
    result = world.cli(
        command,
        ORCHESTRA_API_KEY="",
        ORCHESTRA_API_KEY_FILE=str(key_file),
        ORCHESTRA_LOG_LEVEL="debug",
        timeout=60,
    )
    output = result.stdout + result.stderr
    print(f"{command}: exit {result.returncode}, key seen {key_occurrences(api_key, output)} times")
    assert key_occurrences(api_key, output) == 0, output
    assert result.returncode == EXIT_CONFIG, output
    assert f"ORCHESTRA_API_KEY_FILE: the file {key_file} does not hold a key" in result.stderr
    assert "Traceback" not in output
    assert world.emulator.stats()["total"] == 0


def test_a_rotated_key_file_of_two_lines_is_not_used_nor_logged(
    world: World, tmp_path: Path, api_key: str
) -> None:
    """The daemon re-reads the key file while the API rejects its key: a rewritten file
    that holds no single token is refused (said once), and the fixed file is taken."""
    old_key, new_key = api_key, f"sk-SECRET-{secrets.token_hex(16)}"
    world.emulator.api_key = old_key
    key_file = tmp_path / "api-key"
    key_file.write_text(old_key)
    key_file.chmod(0o600)
    env = {
        "ORCHESTRA_API_KEY": "",
        "ORCHESTRA_API_KEY_FILE": str(key_file),
        "ORCHESTRA_LOG_LEVEL": "debug",
    }
    with start(world, **env) as daemon:
        wait_for(daemon.ready, 30, lambda: daemon.stderr[-3000:])
        world.emulator.api_key = new_key
        wait_for(lambda: not daemon.ready(), 20, "the rejected key was not noticed")
        key_file.write_text(f"{new_key}\n# rotated today\n")
        polls = daemon.metric("orchestra_otel_polls_total")
        wait_for(lambda: daemon.metric("orchestra_otel_polls_total") >= polls + 3, 20, "no polls")
        assert daemon.stderr.count("holds no key") == 1, daemon.stderr[-3000:]
        assert not daemon.ready()
        key_file.write_text(f"{new_key}\n")
        wait_for(daemon.ready, 20, lambda: daemon.stderr[-3000:])
        code, _ = daemon.terminate()
        assert code == 0
    log = daemon.stdout + daemon.stderr
    assert key_occurrences(old_key, log) == 0 and key_occurrences(new_key, log) == 0


# --------------------------------------------------------------------------- the state file


def test_a_symlinked_state_path_is_refused_and_its_target_left_alone(
    world: World, tmp_path: Path
) -> None:
    """Finding 11: a dangling symlink created its target; an empty target was
    overwritten."""
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    dangling, empty = elsewhere / "created.db", elsewhere / "empty.db"
    empty.write_bytes(b"")
    os.utime(empty, (1_000_000_000, 1_000_000_000))
    for target in (dangling, empty):
        link = tmp_path / f"link-to-{target.name}"
        link.symlink_to(target)
        result = world.cli("once", ORCHESTRA_STATE_PATH=str(link))
        assert result.returncode == EXIT_STATE, result.stderr
        assert f"the state file {link} is a symbolic link" in result.stderr
        assert "Traceback" not in result.stderr
    checked = world.cli("check", ORCHESTRA_STATE_PATH=str(tmp_path / "link-to-created.db"))
    assert checked.returncode == EXIT_STATE, checked.stdout
    assert "state file: FAILED, the state file" in checked.stdout
    assert not dangling.exists(), "the dangling link's target was created"
    assert empty.read_bytes() == b"" and empty.stat().st_mtime == 1_000_000_000
    assert world.emulator.stats()["total"] == 0

    # The same for the files SQLite keeps beside the ledger.
    ledger = tmp_path / "ledger.db"
    wal_target = elsewhere / "wal"
    Path(f"{ledger}-wal").symlink_to(wal_target)
    result = world.cli("once", ORCHESTRA_STATE_PATH=str(ledger))
    assert result.returncode == EXIT_STATE, result.stderr
    assert f"{ledger}-wal is a symbolic link" in result.stderr
    assert not wal_target.exists()


def test_existing_state_files_are_made_private(world: World) -> None:
    """Finding 11: an existing 0644 or 0666 ledger was left as it was."""
    first = world.cli("once")
    assert first.returncode == 0, first.stderr
    modes = {"": 0o666, "-wal": 0o644, "-shm": 0o644}
    for suffix, mode in modes.items():
        path = Path(f"{world.state_path}{suffix}")
        path.touch()  # SQLite takes an empty -wal or -shm as "nothing in it"
        path.chmod(mode)
    with start(world) as daemon:
        wait_for(daemon.ready, 30, lambda: daemon.stderr[-3000:])
        found = {
            suffix: oct(stat.S_IMODE(Path(f"{world.state_path}{suffix}").stat().st_mode))
            for suffix in modes
        }
        assert found == dict.fromkeys(modes, oct(0o600)), found
        code, _ = daemon.terminate()
        assert code == 0


def read_only_runner(folder: Path, how: str) -> list[str]:
    """argv prefix that runs a command with `folder` not writable, even for root."""
    if how == "filesystem":
        if os.geteuid() != 0 or shutil.which("unshare") is None:
            pytest.skip("a read-only mount needs root and unshare")
        script = (
            f'mount --bind "{folder}" "{folder}" && '
            f'mount -o remount,bind,ro "{folder}" && exec "$@"'
        )
        return ["unshare", "-m", "sh", "-c", script, "sh"]
    folder.chmod(0o500)
    if os.geteuid() != 0:
        return []
    if shutil.which("setpriv") is None:
        pytest.skip("root ignores folder permissions, and setpriv is missing to drop that")
    return ["setpriv", "--bounding-set=-dac_override,-dac_read_search,-fowner"]


@pytest.mark.parametrize("existing", [False, True], ids=["new ledger", "existing ledger"])
@pytest.mark.parametrize("how", ["folder", "filesystem"], ids=["0500 folder", "ro mount"])
def test_a_read_only_state_folder_gives_a_clear_error(
    world: World, tmp_path: Path, how: str, existing: bool
) -> None:
    """Finding 11: a read-only directory gave a raw traceback."""
    folder = tmp_path / "state"
    folder.mkdir()
    ledger = folder / "ledger.db"
    if existing:
        made = world.cli("once", ORCHESTRA_STATE_PATH=str(ledger))
        assert made.returncode == 0, made.stderr
    prefix = read_only_runner(folder, how)
    try:
        result = run_command(
            [*prefix, *orchestra_otel("once")],
            world.env(ORCHESTRA_STATE_PATH=str(ledger)),
            timeout=90,
        )
    finally:
        folder.chmod(0o700)
    assert result.returncode == EXIT_STATE, result.stderr
    assert "Traceback" not in result.stderr
    assert str(ledger) in result.stderr
    assert "folder the daemon can write" in result.stderr or "-wal and -shm" in result.stderr


def corrupt_a_table_page(ledger: Path, table: str) -> None:
    with sqlite3.connect(ledger) as db:
        (root_page,) = db.execute(
            "SELECT rootpage FROM sqlite_master WHERE name = ?", (table,)
        ).fetchone()
        (page_size,) = db.execute("PRAGMA page_size").fetchone()
    db.close()
    with ledger.open("r+b") as file:
        file.seek((root_page - 1) * page_size)
        file.write(b"\x0d\xff\xff\xff\xff\xff" + os.urandom(64))


@pytest.mark.parametrize("damage", ["not a database", "a damaged page"])
def test_a_damaged_ledger_is_refused_at_start_with_the_way_out(world: World, damage: str) -> None:
    """Finding 6 (state file): a damaged ledger failed every poll with "database disk
    image is malformed". Now the start refuses it (exit 3) saying how to recover, and the
    recovery the README describes works: move it aside, then backfill the window."""
    made = world.cli("once")
    assert made.returncode == 0, made.stderr
    world.receiver.wait_for_spans(world.expected_span_count(), timeout=15)
    if damage == "not a database":
        world.state_path.write_bytes(os.urandom(8192))
    else:
        corrupt_a_table_page(world.state_path, "runs")
    requests_before = world.emulator.stats()["total"]
    started = time.monotonic()
    result = world.cli("once")
    elapsed = time.monotonic() - started
    print(f"{damage}: exit {result.returncode} in {elapsed:.1f}s: {result.stderr.strip()}")
    assert result.returncode == EXIT_STATE, result.stderr
    assert f"the state file {world.state_path} is damaged" in result.stderr
    assert "move it aside" in result.stderr and "backfill" in result.stderr
    assert "Traceback" not in result.stderr
    assert world.emulator.stats()["total"] == requests_before, "it polled a damaged ledger"

    world.state_path.rename(world.state_path.with_suffix(".damaged"))
    world.receiver.clear()
    recovered = world.cli("backfill", "--since", "2h")
    assert recovered.returncode == 0, recovered.stderr
    assert delivery(world).complete, delivery(world).summary()


# --------------------------------------------------------------------------- the base URL


def test_credentials_in_the_base_url_never_reach_the_output(world: World) -> None:
    """Finding 12: `user:pw@` in ORCHESTRA_BASE_URL was echoed by `check` and the
    start-up log line."""
    password = f"pw-{secrets.token_hex(8)}"
    url = world.emulator.base_url.replace("http://", f"http://robot:{password}@", 1)
    outputs = {}
    for command in ("check", "once"):
        result = world.cli(command, ORCHESTRA_BASE_URL=url, ORCHESTRA_LOG_LEVEL="debug")
        outputs[command] = result.stdout + result.stderr
    assert "API http://***@127.0.0.1:" in outputs["check"], outputs["check"]
    assert world.emulator.stats()["total"] >= 2, "the URL was not used: the test proves little"
    for command, output in outputs.items():
        assert password not in output and "robot:" not in output, (command, output[-3000:])


def test_clear_text_http_to_another_host_is_refused_before_any_request(world: World) -> None:
    """Finding 12: http:// to a host other than loopback sent the bearer key in clear."""
    refused = world.cli("once", ORCHESTRA_BASE_URL="http://orchestra.invalid/api/v1/workflow")
    assert refused.returncode == EXIT_CONFIG, refused.stderr
    assert "ORCHESTRA_BASE_URL: http:// to orchestra.invalid would send the API key in clear" in (
        refused.stderr
    )
    assert "ORCHESTRA_ALLOW_INSECURE_HTTP=true" in refused.stderr

    allowed = world.cli(
        "once",
        ORCHESTRA_BASE_URL="http://orchestra.invalid/api/v1/workflow",
        ORCHESTRA_ALLOW_INSECURE_HTTP="true",
        ORCHESTRA_API_TIMEOUT="2",
    )
    assert allowed.returncode == 1, allowed.stderr  # no such host: it tried, after warning
    (warning,) = [line for line in allowed.stderr.splitlines() if "in clear" in line]
    assert " WARNING " in warning and "ORCHESTRA_ALLOW_INSECURE_HTTP=true" in warning
