"""The METRICS_PORT listener of a real gunicorn master under slow and oversized clients.

Every attack here targets loopback, opens a bounded number of sockets and stops by itself. The
master's threads and resident memory are read from /proc/<pid>/status while it runs.
"""

from __future__ import annotations

import selectors
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from dataclasses import field
from pathlib import Path

import pytest

from tests.support.helpers import parallel
from tests.support.issuer import LocalIssuer
from tests.support.procs import Response
from tests.support.procs import Server
from tests.support.procs import ServerFactory
from tests.support.procs import free_port
from tests.support.procs import http_get

pytestmark = pytest.mark.slow

#: The attack of the audit: 300 connections, each sending one byte every 2 s.
SLOW_CONNECTIONS = 300
SLOW_INTERVAL = 2.0
#: Long enough for every slow connection to outlive a per-request deadline of a few seconds.
ATTACK_SECONDS = 12.0
#: The master's own thread plus the listener's (one head reader, four serving threads).
MAX_THREADS = 8
MAX_RSS_GROWTH_KB = 10 * 1024
#: A scrape under attack must be answered within this (the client gives up after it).
SCRAPE_TIMEOUT = 5.0
#: 6 MB of header fields, each under the 64 KiB line limit of most parsers.
BIG_FIELDS = 96
BIG_FIELD_BYTES = 64_000


def _status(pid: int) -> tuple[int, int]:
    """(Threads, VmRSS in kB) of a process, from /proc."""
    fields = dict(
        line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines() if ":" in line
    )
    return int(fields["Threads"]), int(fields["VmRSS"].split()[0])


@dataclass
class Sampler:
    """The highest thread count and RSS of a process, sampled until stopped."""

    pid: int
    threads: int = 0
    rss_kb: int = 0
    _stop: threading.Event = field(default_factory=threading.Event)

    def sample(self) -> None:
        """Read the process's status once."""
        threads, rss = _status(self.pid)
        self.threads, self.rss_kb = max(self.threads, threads), max(self.rss_kb, rss)

    def run(self) -> None:
        """Sample every 50 ms until stopped."""
        while True:
            self.sample()
            if self._stop.wait(0.05):
                return


@contextmanager
def sampling(pid: int) -> Iterator[Sampler]:
    """Sample the process's threads and RSS while the block runs."""
    sampler = Sampler(pid)
    thread = threading.Thread(target=sampler.run, daemon=True)
    thread.start()
    try:
        yield sampler
    finally:
        sampler._stop.set()
        thread.join(timeout=5)
        sampler.sample()


def slow_swarm(port: int, connections: int, interval: float, seconds: float) -> int:
    """Keep `connections` open that send one byte each `interval`, reopening closed ones, for
    `seconds`; returns how many the server closed."""
    selector = selectors.DefaultSelector()
    request = b"GET /metrics HTTP/1.1\r\nHost: x\r\nX-Slow: " + b"1" * 4096

    def open_one() -> None:
        sock = socket.create_connection(("127.0.0.1", port), timeout=5)
        sock.setblocking(False)
        selector.register(sock, selectors.EVENT_READ, [0])
        send(sock, selector.get_key(sock).data)

    def send(sock: socket.socket, sent: list[int]) -> None:
        try:
            sock.send(request[sent[0] % len(request) : sent[0] % len(request) + 1])
            sent[0] += 1
        except OSError:
            pass

    closed = 0
    stop = time.monotonic() + seconds
    try:
        for _ in range(connections):
            open_one()
        next_round = time.monotonic() + interval
        while time.monotonic() < stop:
            for key, _ in selector.select(timeout=max(0.0, min(next_round, stop) - time.monotonic())):
                sock = key.fileobj
                try:
                    data = sock.recv(4096)  # type: ignore[union-attr]
                except BlockingIOError:
                    continue
                except OSError:
                    data = b""
                if not data:
                    closed += 1
                    selector.unregister(sock)
                    sock.close()  # type: ignore[union-attr]
                    open_one()
            if time.monotonic() >= next_round:
                next_round += interval
                for key in list(selector.get_map().values()):
                    send(key.fileobj, key.data)  # type: ignore[arg-type]
    finally:
        for key in list(selector.get_map().values()):
            key.fileobj.close()  # type: ignore[union-attr]
        selector.close()
    return closed


def _start(issuer: LocalIssuer, gunicorn: ServerFactory) -> tuple[Server, int]:
    """One worker, METRICS_PORT on a free port, one scrape done (the master's first allocations)."""
    metrics_port = free_port()
    server = gunicorn(issuer, workers=1, env={"METRICS_PORT": str(metrics_port)})
    assert http_get(metrics_port, "/metrics").status == 200
    return server, metrics_port


def test_slow_connections_hold_no_thread_and_scrapes_still_answer(
    issuer: LocalIssuer, gunicorn: ServerFactory
) -> None:
    server, metrics_port = _start(issuer, gunicorn)
    idle_threads, idle_rss = _status(server.pid)
    scrapes: list[Response] = []

    def scrape_twice() -> None:
        for pause in (3.0, 4.0):
            time.sleep(pause)
            scrapes.append(http_get(metrics_port, "/metrics", timeout=SCRAPE_TIMEOUT))

    scraper = threading.Thread(target=scrape_twice)
    with sampling(server.pid) as most:
        scraper.start()
        closed = slow_swarm(metrics_port, SLOW_CONNECTIONS, SLOW_INTERVAL, ATTACK_SECONDS)
        scraper.join()
    print(
        f"master threads idle {idle_threads}, most {most.threads}; RSS idle {idle_rss} kB, "
        f"most {most.rss_kb} kB (+{most.rss_kb - idle_rss} kB); slow connections closed: {closed}"
    )
    assert most.threads <= MAX_THREADS, (idle_threads, most.threads)
    assert most.rss_kb - idle_rss < MAX_RSS_GROWTH_KB, (idle_rss, most.rss_kb)
    assert [resp.status for resp in scrapes] == [200, 200]
    # Every slow connection met its deadline at least once during the attack.
    assert closed >= SLOW_CONNECTIONS, closed
    assert server.alive() and http_get(metrics_port, "/metrics").status == 200


def test_a_request_dribbled_a_byte_a_second_is_closed_before_15_s(
    issuer: LocalIssuer, gunicorn: ServerFactory
) -> None:
    _, metrics_port = _start(issuer, gunicorn)
    head = b"GET /metrics HTTP/1.1\r\nHost: x\r\n" + b"X-Slow: 1\r\n" * 2
    sock = socket.create_connection(("127.0.0.1", metrics_port), timeout=5)
    sock.settimeout(1.0)
    started = time.monotonic()
    closed_after = None
    with sock:
        for byte in head:
            if time.monotonic() - started > 16.0:
                break
            try:
                sock.send(bytes([byte]))
                sock.recv(4096)
            except TimeoutError:
                continue
            except OSError:
                pass
            closed_after = time.monotonic() - started
            break
    print(f"dribbled request closed after {closed_after} s")
    assert closed_after is not None and closed_after < 15.0, closed_after


def _big_head(port: int) -> bytes:
    """Send 6 MB of header fields; what came back before the connection closed."""
    field_value = b"a" * BIG_FIELD_BYTES
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        try:
            sock.sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\n")
            for n in range(BIG_FIELDS):
                sock.sendall(b"X-Big-%d: %s\r\n" % (n, field_value))
            sock.sendall(b"\r\n")
        except OSError:
            pass
        received = b""
        try:
            while chunk := sock.recv(65536):
                received += chunk
        except OSError:
            pass
    return received


def test_six_megabytes_of_headers_are_refused_without_growing_rss(
    issuer: LocalIssuer, gunicorn: ServerFactory
) -> None:
    server, metrics_port = _start(issuer, gunicorn)
    _, idle_rss = _status(server.pid)
    with sampling(server.pid) as most:
        replies = parallel(lambda _: _big_head(metrics_port), 4, concurrency=4)
    print(f"master RSS idle {idle_rss} kB, most {most.rss_kb} kB (+{most.rss_kb - idle_rss} kB)")
    # Refused: a 431, or a reset before the answer could be read. Never served.
    assert all(reply == b"" or reply.startswith(b"HTTP/1.1 431 ") for reply in replies), [
        r[:60] for r in replies
    ]
    assert most.rss_kb - idle_rss < 4 * 1024, (idle_rss, most.rss_kb)
    assert http_get(metrics_port, "/metrics").status == 200
