"""The tests' one harness package: every helper that more than one test module uses.

    world.py         World, demo_world(), open_world(): emulator + OTLP receiver + ledger;
                     World.cli() runs a command, World.daemon() starts `run` (the `world`
                     fixture is demo_world(tmp_path)); user_env(), daemon_env()
    daemon.py        Daemon: the real orchestra-otel (or any command) in a subprocess:
                     output, /metrics, /readyz, /proc, SIGTERM/SIGKILL; run_command(),
                     orchestra_otel(), wait_for()
    metrics.py       parse() a /metrics scrape with prometheus_client's parsers
    ports.py         free_port() (only for programs that cannot bind 0), listening sockets
    delivery.py      what must arrive vs what the receiver got (span identities, Delivery)
    ledger.py        LedgerView: the SQLite ledger opened read-only; ledgers as schema 3
                     wrote them (SCHEMA_3, legacy_json, spool_legacy)
    sinks.py         RecordingSink: an in-process sink that keeps (or refuses) what it is
                     sent, read back into spans and log records
    api_log.py       the emulator's request log (arrivals, gaps), control API, retry contract
    clock.py         ManualClock: the scenario clock a test moves (in process or over HTTP)
    tls.py           a self-signed certificate and a TLS proxy in front of the emulator
    otlp_receiver.py a real OTLP receiver (gRPC + HTTP, official protobufs, fault switches)
    fixtures.py      the shared pytest fixtures (imported by tests/conftest.py)

Tests that need a process (signals, kills, sockets) run the real daemon through Daemon;
everything listens on ports the OS picked and writes under tmp_path, so the suite runs
in parallel (pytest-xdist).
"""
