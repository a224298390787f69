"""TLS for the tests: self-signed certificates, the files a TLS server needs, and TCP
relays: a TLS-terminating one in front of the emulator, so the daemon meets a real
handshake against an untrusted certificate, and a plain one that counts what crosses it."""

from __future__ import annotations

import contextlib
import select
import shutil
import socket
import ssl
import subprocess
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

DEFAULT_COMMON_NAME = "orchestra-otel test"


@dataclass(frozen=True)
class ServerTls:
    """What a test server serves TLS with; `client_ca` set: clients must present a
    certificate it signed (mutual TLS)."""

    cert: Path
    key: Path
    client_ca: Path | None = None

    def server_context(self) -> ssl.SSLContext:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(self.cert, self.key)
        if self.client_ca is not None:
            context.verify_mode = ssl.CERT_REQUIRED
            context.load_verify_locations(self.client_ca)
        return context


def make_self_signed_cert(
    directory: Path, *, common_name: str = DEFAULT_COMMON_NAME
) -> tuple[Path, Path] | None:
    """A self-signed certificate for 127.0.0.1 and localhost: (cert.pem, key.pem).

    It is its own CA, so it can be trusted as is: by a client (as the server's CA) or
    by a server (as the CA of client certificates). Uses the `cryptography` package
    when installed, else the `openssl` command; None when neither is available.
    """
    directory.mkdir(parents=True, exist_ok=True)
    cert_path, key_path = directory / "cert.pem", directory / "key.pem"
    try:
        _cert_with_cryptography(cert_path, key_path, common_name)
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
            f"/CN={common_name}",
            "-addext",
            "subjectAltName=IP:127.0.0.1,DNS:localhost",
        ],
        check=True,
        capture_output=True,
        timeout=60,
    )
    return cert_path, key_path


def _cert_with_cryptography(cert_path: Path, key_path: Path, common_name: str) -> None:
    import datetime
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
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


class TcpRelay:
    """A TCP relay on 127.0.0.1 to `upstream`; with `context`, it terminates TLS first.

    Counts the bytes clients sent through it, so a test can see what crossed the wire
    (gzip-compressed or not), and, with TLS, finished and failed handshakes, so a test
    can tell that a client gave up on the certificate (and sent no request) rather than
    never connecting at all.
    """

    def __init__(self, upstream: tuple[str, int], context: ssl.SSLContext | None = None) -> None:
        self._upstream = upstream
        self._context = context
        self._listener = socket.create_server(("127.0.0.1", 0))
        self._listener.settimeout(0.1)
        self.port = int(self._listener.getsockname()[1])
        self._stopping = threading.Event()
        self._lock = threading.Lock()
        self.handshakes_ok = 0
        self.handshakes_failed = 0
        self._bytes_from_clients = 0
        self._thread = threading.Thread(target=self._accept_loop, daemon=True)

    @property
    def bytes_from_clients(self) -> int:
        with self._lock:
            return self._bytes_from_clients

    def start(self) -> TcpRelay:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stopping.set()
        self._thread.join(timeout=5)
        self._listener.close()

    def __enter__(self) -> TcpRelay:
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
        client = self._handshake(connection)
        if client is None:
            return
        try:
            upstream = socket.create_connection(self._upstream, timeout=10)
        except OSError:
            client.close()
            return
        self._pump(client, upstream)

    def _handshake(self, connection: socket.socket) -> socket.socket | None:
        if self._context is None:
            return connection
        try:
            client = self._context.wrap_socket(connection, server_side=True)
        except (ssl.SSLError, OSError):
            with self._lock:
                self.handshakes_failed += 1
            connection.close()
            return None
        with self._lock:
            self.handshakes_ok += 1
        return client

    def _pump(self, client: socket.socket, upstream: socket.socket) -> None:
        """One thread per connection, so the TLS object is never used by two at once."""
        try:
            while not self._stopping.is_set():
                if isinstance(client, ssl.SSLSocket) and client.pending():
                    readable: list[Any] = [client]
                else:
                    readable, _, _ = select.select([client, upstream], [], [], 0.2)
                for source in readable:
                    data = source.recv(65536)
                    if not data:
                        return
                    if source is client:
                        with self._lock:
                            self._bytes_from_clients += len(data)
                    (upstream if source is client else client).sendall(data)
        except OSError:
            return
        finally:
            for end in (client, upstream):
                with contextlib.suppress(OSError):
                    end.close()


class TlsProxy(TcpRelay):
    """A TLS-terminating TCP proxy on 127.0.0.1: https://127.0.0.1:port -> plain upstream."""

    def __init__(self, upstream: tuple[str, int], cert: Path, key: Path) -> None:
        super().__init__(upstream, ServerTls(cert, key).server_context())

    def start(self) -> TlsProxy:
        super().start()
        return self

    def __enter__(self) -> TlsProxy:
        return self.start()
