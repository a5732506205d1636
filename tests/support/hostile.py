"""Hostile clients for process tests and the CI stage: slowloris, idle sockets, huge heads.

Every client here targets loopback only, opens a bounded number of sockets and stops by itself.
"""

from __future__ import annotations

import math
import os
import selectors
import socket
import threading
import time
from collections.abc import Callable
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from dataclasses import field
from pathlib import Path

from tests.support.helpers import parallel
from tests.support.procs import Response
from tests.support.procs import Server

#: What a slowloris client sends first: a request line and one field, never the blank line.
SLOW_HEAD = b"GET /api/public HTTP/1.1\r\nHost: x\r\n"
#: The original attack: 100 header fields of 262,140 bytes each (26 MB of head).
ATTACK_FIELDS = 100
ATTACK_FIELD_BYTES = 262_140


def connect(port: int) -> socket.socket:
    """A loopback TCP connection to the service."""
    return socket.create_connection(("127.0.0.1", port), timeout=10)


@dataclass
class Swarm:
    """Open connections that send part of a head (slow) or nothing (idle); when each closed."""

    slow: list[socket.socket] = field(default_factory=list)
    idle: list[socket.socket] = field(default_factory=list)
    opened: dict[socket.socket, float] = field(default_factory=dict)
    closed: dict[socket.socket, float] = field(default_factory=dict)
    received: dict[socket.socket, bytes] = field(default_factory=dict)
    _stop: threading.Event = field(default_factory=threading.Event)

    def trickle(self, interval: float = 1.0) -> None:
        """Send one more header field to every open slow connection each interval (slowloris)."""
        while not self._stop.wait(interval):
            for sock in self.slow:
                if sock not in self.closed:
                    try:
                        sock.send(b"X-Slow: 1\r\n")
                    except OSError:
                        pass

    def wait_closed(self, timeout: float) -> None:
        """Record when the server closes each connection (EOF or reset), for up to `timeout`."""
        sel = selectors.DefaultSelector()
        for sock in self.slow + self.idle:
            sock.setblocking(False)
            sel.register(sock, selectors.EVENT_READ)
        deadline = time.monotonic() + timeout
        try:
            while len(self.closed) < len(self.opened) and time.monotonic() < deadline:
                for key, _ in sel.select(timeout=0.2):
                    sock = key.fileobj
                    try:
                        data = sock.recv(65536)  # type: ignore[union-attr]
                    except BlockingIOError:
                        continue
                    except OSError:
                        data = b""
                    if data:
                        self.received[sock] = self.received.get(sock, b"") + data  # type: ignore[index]
                        continue
                    self.closed[sock] = time.monotonic()  # type: ignore[index]
                    sel.unregister(sock)
        finally:
            sel.close()

    def lifetimes(self, group: list[socket.socket]) -> list[float | None]:
        """Seconds each connection of `group` stayed open (None: still open)."""
        return [
            self.closed[s] - self.opened[s] if s in self.closed else None for s in group
        ]


@contextmanager
def swarm(port: int, *, slow: int, idle: int) -> Iterator[Swarm]:
    """Open `slow` slowloris and `idle` silent connections; close whatever is left at exit."""
    crowd = Swarm()
    trickler = threading.Thread(target=crowd.trickle, daemon=True)
    try:
        for _ in range(slow):
            sock = connect(port)
            sock.sendall(SLOW_HEAD)
            crowd.slow.append(sock)
            crowd.opened[sock] = time.monotonic()
        for _ in range(idle):
            sock = connect(port)
            crowd.idle.append(sock)
            crowd.opened[sock] = time.monotonic()
        trickler.start()
        yield crowd
    finally:
        crowd._stop.set()
        if trickler.is_alive():
            trickler.join(timeout=5)
        for sock in crowd.slow + crowd.idle:
            sock.close()


@dataclass
class Probes:
    """Latencies and statuses of sequential probe requests."""

    latencies: list[float] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)

    def p99(self) -> float:
        """The 99th-percentile latency in seconds (nearest rank)."""
        ordered = sorted(self.latencies)
        return ordered[max(0, math.ceil(0.99 * len(ordered)) - 1)] if ordered else math.inf


def probe(server: Server, token: str, *, count: int, until: float | None = None) -> Probes:
    """Alternate /healthz and /api/private with `token`, each on a fresh connection."""
    result = Probes()
    for i in range(count):
        if until is not None and time.monotonic() >= until:
            break
        path, kwargs = ("/healthz", {}) if i % 2 == 0 else ("/api/private", {"token": token})
        try:
            resp: Response = server.get(path, timeout=5, **kwargs)
        except OSError as error:
            result.failures.append(f"{path}: {error!r}")
            continue
        result.latencies.append(resp.elapsed)
        if resp.status != 200:
            result.failures.append(f"{path}: {resp.status}")
    return result


def max_head(path: str = "/api/public") -> bytes:
    """The largest head the service accepts: two fields just under the per-field limit."""
    line = f"GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n".encode()
    fields = b"".join(f"X-Pad-{i}: ".encode() + b"a" * 32_000 + b"\r\n" for i in range(2))
    head = line + fields + b"\r\n"
    assert len(head) < 65536, len(head)
    return head


def read_response(sock: socket.socket) -> bytes:
    """Everything the server sends until it closes (or resets) the connection."""
    received = b""
    try:
        while chunk := sock.recv(65536):
            received += chunk
    except OSError:
        pass
    return received


def send_attack_head(port: int) -> bytes:
    """Send the 26 MB head until the server stops reading; return what it answered."""
    with connect(port) as sock:
        try:
            sock.sendall(b"GET /api/public HTTP/1.1\r\nHost: x\r\n")
            value = b"a" * ATTACK_FIELD_BYTES
            for i in range(ATTACK_FIELDS):
                sock.sendall(f"X-Big-{i}: ".encode() + value + b"\r\n")
            sock.sendall(b"\r\n")
        except OSError:
            pass
        return read_response(sock)


def send_max_head(port: int) -> bytes:
    """Send the largest accepted head and return the response."""
    with connect(port) as sock:
        sock.sendall(max_head())
        return read_response(sock)


def cpu_seconds(pids: list[int]) -> float:
    """User plus system CPU seconds the processes have used so far, from /proc/PID/stat."""
    ticks = os.sysconf("SC_CLK_TCK")
    total = 0
    for pid in pids:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        # After the command name: state is field 3, so utime (14) and stime (15) are 11 and 12.
        total += int(fields[11]) + int(fields[12])
    return total / ticks


def worker_cpu(server: Server, work: Callable[[], object]) -> tuple[float, object]:
    """CPU seconds the server's workers spent while `work` ran, and what it returned."""
    pids = server.workers()
    before = cpu_seconds(pids)
    result = work()
    # The last bytes may still be in flight to a worker: let it finish its share.
    time.sleep(0.3)
    return cpu_seconds(pids) - before, result


def huge_heads(server: Server, n: int = 8) -> tuple[list[bytes], list[bytes]]:
    """n maximal accepted heads and n 26 MB attack heads, each batch sent in parallel."""
    accepted = parallel(lambda _: send_max_head(server.port), n, concurrency=n)
    attacked = parallel(lambda _: send_attack_head(server.port), n, concurrency=n)
    return accepted, attacked
