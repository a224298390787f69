"""Ports and sockets, as the tests see them from outside a process.

Servers of our own (the emulator, the OTLP receiver, the daemon's HTTP endpoint) bind
port 0 and report the port the OS gave them: no test ever guesses a port, so tests can
run side by side (pytest-xdist). `free_port` is only for programs that must be told a
port number up front (Phoenix).
"""

from __future__ import annotations

import contextlib
import socket
from dataclasses import dataclass
from pathlib import Path


def free_port(host: str = "127.0.0.1") -> int:
    """A port that was free on `host` a moment ago (for programs that cannot bind 0)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def port_is_free(port: int) -> bool:
    """True when nothing listens on `port` on any address (IPv4 wildcard bind succeeds)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        try:
            probe.bind(("0.0.0.0", port))
        except OSError:
            return False
    return True


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
