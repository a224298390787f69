"""Helpers for the API-fault and secret-handling tests.

Everything is real: the daemon runs as `python -m exporter run` in a subprocess, the
emulator and the OTLP receiver listen on real sockets, TLS is a real handshake. The
tests look at the daemon the way an operator would: its stderr, `/metrics`, `/readyz`,
the sockets it listens on (/proc), its state files, and the emulator's request log.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import re
import select
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import threading
import urllib.error
import urllib.request
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

from exporter.emulator import Emulator
from tests.integration.harness import World, wait_until

# The retry contract of the API client (docs/design.md, "Request budget"): at most
# 4 attempts per request, equal-jitter exponential backoff from 0.5 s (the n-th retry waits
# between half and all of 0.5 * 2**(n-1) s), capped at min(30 s, the poll interval).
MAX_ATTEMPTS = 4
BASE_DELAY = 0.5


def backoff_window(retry: int, cap: float = 30.0) -> tuple[float, float]:
    """The (shortest, longest) wait before retry number `retry` (1-based)."""
    step = min(cap, BASE_DELAY * 2 ** (retry - 1))
    return step / 2, step


# --------------------------------------------------------------------------- request log


@dataclass(frozen=True)
class Arrival:
    """One request as the emulator saw it arrive."""

    at: float  # time.monotonic() on arrival (same clock as the test process)
    wall: float  # time.time() on arrival
    kind: str
    path: str
    status: int | None  # None: still in flight; 0: connection reset without an answer


def arrivals(
    emulator: Emulator, kind: str | None = None, contains: str | None = None
) -> list[Arrival]:
    """API requests in arrival order, optionally only one kind and paths containing text."""
    found = []
    for entry in emulator.stats()["recent"]:
        if kind is not None and entry["kind"] != kind:
            continue
        if contains is not None and contains not in entry["path"]:
            continue
        found.append(
            Arrival(entry["at"], entry["wall"], entry["kind"], entry["path"], entry["status"])
        )
    return found


def gaps(items: list[Arrival]) -> list[float]:
    return [later.at - earlier.at for earlier, later in itertools.pairwise(items)]


def describe(items: Iterable[Arrival], since: float | None = None) -> str:
    """A readable request log for assertion messages."""
    items = list(items)
    origin = since if since is not None else (items[0].at if items else 0.0)
    return "\n".join(
        f"  +{item.at - origin:7.3f}s {item.kind:<14} {item.status!s:<4} {item.path}"
        for item in items
    )


def control(
    emulator: Emulator, method: str, path: str, body: Any = None, *, timeout: float = 5
) -> Any:
    """Call the emulator's control API over HTTP, like an operator's script would."""
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(
        f"{emulator.root_url}/_emulator/{path}",
        data=data,
        method=method,
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=timeout) as response:
        return json.loads(response.read() or b"null")


# --------------------------------------------------------------------------- the daemon


class RunningDaemon:
    """`orchestra-otel run` in a subprocess, with its output collected as it comes."""

    def __init__(self, process: subprocess.Popen[str]) -> None:
        self.process = process
        self._lock = threading.Lock()
        self._out: list[str] = []
        self._err: list[str] = []
        self._readers = [
            threading.Thread(target=self._read, args=(process.stdout, self._out), daemon=True),
            threading.Thread(target=self._read, args=(process.stderr, self._err), daemon=True),
        ]
        for reader in self._readers:
            reader.start()
        self._http_base: str | None = None

    def _read(self, stream: Any, sink: list[str]) -> None:
        for line in stream:
            with self._lock:
                sink.append(line)

    @property
    def stdout(self) -> str:
        with self._lock:
            return "".join(self._out)

    @property
    def stderr(self) -> str:
        with self._lock:
            return "".join(self._err)

    @property
    def alive(self) -> bool:
        return self.process.poll() is None

    def wait_for_stderr(self, pattern: str, timeout: float = 15) -> re.Match[str]:
        found: list[re.Match[str]] = []

        def seen() -> bool:
            if not self.alive and not found:
                raise AssertionError(f"the daemon exited early:\n{self.stderr[-3000:]}")
            match = re.search(pattern, self.stderr)
            if match:
                found.append(match)
            return bool(match)

        wait_until(seen, timeout, f"{pattern!r} never appeared on stderr:\n{self.stderr[-3000:]}")
        return found[0]

    @property
    def http_base(self) -> str:
        """http://host:port of /metrics, from the daemon's own start-up log line."""
        if self._http_base is None:
            match = self.wait_for_stderr(r"metrics at (http://[^/\s]+)/metrics")
            self._http_base = match.group(1)
        return self._http_base

    def get(self, path: str) -> tuple[int, str]:
        try:
            with urllib.request.urlopen(self.http_base + path, timeout=5) as response:
                return response.status, response.read().decode()
        except urllib.error.HTTPError as error:
            return error.code, error.read().decode()

    def readyz(self) -> tuple[int, dict[str, Any]]:
        status, body = self.get("/readyz")
        return status, json.loads(body)

    def metric(self, name: str, **labels: str) -> float:
        """Sum of the samples called `name` whose labels include `labels` (0 if none)."""
        status, text = self.get("/metrics")
        assert status == 200, text
        total = 0.0
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                if sample.name != name:
                    continue
                if all(sample.labels.get(key) == value for key, value in labels.items()):
                    total += sample.value
        return total

    def polls(self) -> int:
        return int(self.metric("orchestra_otel_polls_total"))

    def stop(self, timeout: float = 30) -> int:
        """SIGTERM, then wait for the exit and the last of its output."""
        if self.alive:
            self.process.send_signal(signal.SIGTERM)
        try:
            code = self.process.wait(timeout=timeout)
        finally:
            if self.alive:
                self.process.kill()
                self.process.wait(timeout=5)
            for reader in self._readers:
                reader.join(timeout=5)
        return code

    def __enter__(self) -> RunningDaemon:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        if self.alive:
            self.process.kill()
            self.process.wait(timeout=5)
        for reader in self._readers:
            reader.join(timeout=5)


def start_daemon(
    world: World, *, drop: Iterable[str] = (), protocol: str = "grpc", **extra: str
) -> RunningDaemon:
    """Start `orchestra-otel run` against the world; `drop` removes variables from its env.

    Unless told otherwise, /metrics is served on a free loopback port.
    """
    extra.setdefault("ORCHESTRA_HTTP_ADDR", "127.0.0.1:0")
    env = world.env(protocol, **extra)
    for name in drop:
        env.pop(name, None)
    process = subprocess.Popen(
        [sys.executable, "-m", "exporter", "run"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    return RunningDaemon(process)


# --------------------------------------------------------------------------- sockets


@dataclass(frozen=True)
class Listener:
    family: str  # "tcp" or "tcp6"
    address: str  # dotted quad or full IPv6 text
    port: int


def _decode_address(text: str, family: str) -> tuple[str, int]:
    host_hex, port_hex = text.split(":")
    raw = bytes.fromhex(host_hex)
    if family == "tcp":
        address = socket.inet_ntop(socket.AF_INET, raw[::-1])
    else:  # four little-endian 32-bit words
        words = b"".join(raw[i : i + 4][::-1] for i in range(0, 16, 4))
        address = socket.inet_ntop(socket.AF_INET6, words)
    return address, int(port_hex, 16)


def listening_sockets(pid: int) -> list[Listener]:
    """TCP sockets in LISTEN state owned by process `pid` (from /proc, as `ss -ltnp` does)."""
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        with contextlib.suppress(OSError):
            target = fd.readlink().as_posix()
            if target.startswith("socket:["):
                inodes.add(target[len("socket:[") : -1])
    found = []
    for family in ("tcp", "tcp6"):
        table = Path(f"/proc/net/{family}")
        if not table.exists():
            continue
        for line in table.read_text().splitlines()[1:]:
            fields = line.split()
            if fields[3] == "0A" and fields[9] in inodes:  # 0A: TCP_LISTEN
                address, port = _decode_address(fields[1], family)
                found.append(Listener(family, address, port))
    return found


def port_is_free(port: int) -> bool:
    """True when nothing listens on `port` on any address (IPv4 wildcard bind succeeds)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        try:
            probe.bind(("0.0.0.0", port))
        except OSError:
            return False
    return True


# --------------------------------------------------------------------------- TLS


def make_self_signed_cert(directory: Path) -> tuple[Path, Path] | None:
    """A self-signed certificate for 127.0.0.1 and localhost: (cert.pem, key.pem).

    Uses the `cryptography` package when installed, else the `openssl` command;
    None when neither is available.
    """
    cert_path, key_path = directory / "cert.pem", directory / "key.pem"
    try:
        _cert_with_cryptography(cert_path, key_path)
        return cert_path, key_path
    except ImportError:
        pass
    openssl = shutil.which("openssl")
    if openssl is None:
        return None
    subprocess.run(
        [
            openssl,
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-keyout",
            str(key_path),
            "-out",
            str(cert_path),
            "-days",
            "2",
            "-subj",
            "/CN=orchestra-otel test",
            "-addext",
            "subjectAltName=IP:127.0.0.1,DNS:localhost",
        ],
        check=True,
        capture_output=True,
        timeout=60,
    )
    return cert_path, key_path


def _cert_with_cryptography(cert_path: Path, key_path: Path) -> None:
    import datetime
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "orchestra-otel test")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=2))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.IPAddress(ipaddress.ip_address("127.0.0.1")), x509.DNSName("localhost")]
            ),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))


class TlsProxy:
    """A TLS-terminating TCP proxy on 127.0.0.1: https://127.0.0.1:port -> plain upstream.

    Counts finished and failed TLS handshakes, so a test can tell that a client gave up
    on the certificate (and sent no request) rather than never connecting at all.
    """

    def __init__(self, upstream: tuple[str, int], cert: Path, key: Path) -> None:
        self._upstream = upstream
        self._context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self._context.load_cert_chain(cert, key)
        self._listener = socket.create_server(("127.0.0.1", 0))
        self._listener.settimeout(0.1)
        self.port = int(self._listener.getsockname()[1])
        self._stopping = threading.Event()
        self._lock = threading.Lock()
        self.handshakes_ok = 0
        self.handshakes_failed = 0
        self._thread = threading.Thread(target=self._accept_loop, daemon=True)

    def start(self) -> TlsProxy:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stopping.set()
        self._thread.join(timeout=5)
        self._listener.close()

    def __enter__(self) -> TlsProxy:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def _accept_loop(self) -> None:
        while not self._stopping.is_set():
            try:
                connection, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            threading.Thread(target=self._serve, args=(connection,), daemon=True).start()

    def _serve(self, connection: socket.socket) -> None:
        connection.settimeout(10)
        try:
            client = self._context.wrap_socket(connection, server_side=True)
        except (ssl.SSLError, OSError):
            with self._lock:
                self.handshakes_failed += 1
            connection.close()
            return
        with self._lock:
            self.handshakes_ok += 1
        try:
            upstream = socket.create_connection(self._upstream, timeout=10)
        except OSError:
            client.close()
            return
        self._pump(client, upstream)

    def _pump(self, client: ssl.SSLSocket, upstream: socket.socket) -> None:
        """One thread per connection, so the TLS object is never used by two at once."""
        try:
            while not self._stopping.is_set():
                if client.pending():
                    readable: list[Any] = [client]
                else:
                    readable, _, _ = select.select([client, upstream], [], [], 0.2)
                for source in readable:
                    data = source.recv(65536)
                    if not data:
                        return
                    (upstream if source is client else client).sendall(data)
        except OSError:
            return
        finally:
            for end in (client, upstream):
                with contextlib.suppress(OSError):
                    end.close()


# --------------------------------------------------------------------------- secrets


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
