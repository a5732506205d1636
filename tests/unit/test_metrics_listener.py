"""The METRICS_PORT listener in-process, over real loopback sockets: fixed threads, queue, caps, answers."""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Callable
from collections.abc import Iterable
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry
from prometheus_client import Counter
from prometheus_client import make_wsgi_app

from service.server import metrics_server
from service.server.metrics_server import MetricsListener
from service.server.metrics_server import answer

SCRAPE = b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n"
#: Scrapes served at once: a small fixed number.
SERVING = 4


def _app() -> Callable[..., Iterable[bytes]]:
    """prometheus_client's WSGI app over a registry holding one counter."""
    registry = CollectorRegistry()
    Counter("jobs", "Jobs done.", registry=registry).inc(3)
    return make_wsgi_app(registry)


class _Gate:
    """A WSGI app that holds every request until opened, counting those it holds."""

    def __init__(self) -> None:
        self.opened = threading.Event()
        self.inside = 0
        self.most = 0
        self._lock = threading.Lock()

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        with self._lock:
            self.inside += 1
            self.most = max(self.most, self.inside)
        self.opened.wait(10)
        with self._lock:
            self.inside -= 1
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b"ok\n"]


@contextmanager
def _listening(app: Callable[..., Iterable[bytes]]) -> Iterator[int]:
    """A started listener on a free loopback port; closed at exit."""
    sock = socket.create_server(("127.0.0.1", 0))
    listener = MetricsListener(sock, app)
    listener.start()
    try:
        yield sock.getsockname()[1]
    finally:
        listener.close()


def _send(port: int, data: bytes) -> socket.socket:
    """A connection that has sent `data`."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    sock.sendall(data)
    return sock


def _reply(sock: socket.socket, timeout: float = 10) -> bytes:
    """Everything until the server closes the connection."""
    sock.settimeout(timeout)
    received = b""
    try:
        while chunk := sock.recv(65536):
            received += chunk
    except ConnectionResetError:
        pass
    sock.close()
    return received


def _until(check: Callable[[], bool], timeout: float = 10) -> bool:
    """Poll until check() holds."""
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)
    return True


def test_a_scrape_gets_the_registry_as_prometheus_text() -> None:
    with _listening(_app()) as port:
        reply = _reply(_send(port, SCRAPE))
    assert reply.startswith(b"HTTP/1.1 200 OK\r\n")
    assert b"\r\nConnection: close\r\n" in reply and b"\njobs_total 3.0\n" in reply


@pytest.mark.parametrize(
    ("head", "status"),
    [
        (b"GET /metrics HTTP/1.0\r\n\r\n", 200),
        (b"GET /metrics?name[]=jobs_total HTTP/1.1\nHost: x\n\n", 200),
        (b"GET /other HTTP/1.1\r\nHost: x\r\n\r\n", 404),
        (b"POST /metrics HTTP/1.1\r\nHost: x\r\n\r\n", 405),
        (b"GET /metrics HTTP/1.1\r\n\r\n", 400),
        (b"GET /metrics HTTP/2.0\r\nHost: x\r\n\r\n", 400),
        (b"GET  /metrics HTTP/1.1\r\nHost: x\r\n\r\n", 400),
        (b"GET /metrics HTTP/1.1\r\nHost : x\r\n\r\n", 400),
        (b"GET /metrics HTTP/1.1\r\nHost: x\r\n folded\r\n\r\n", 400),
        (b"\r\n\r\n", 400),
        (b"\xff\xfe HTTP/1.1\r\n\r\n", 400),
    ],
)
def test_only_get_and_head_of_metrics_are_answered(head: bytes, status: int) -> None:
    assert answer(head, _app()).startswith(b"HTTP/1.1 %d " % status)


def test_head_gets_the_length_of_get_without_the_body() -> None:
    app = _app()
    got = answer(SCRAPE, app)
    head = answer(SCRAPE.replace(b"GET", b"HEAD"), app)
    assert got.startswith(head) and got.index(b"\r\n\r\n") + 4 == len(head) < len(got)


def test_gzip_and_openmetrics_come_from_prometheus_client() -> None:
    reply = answer(
        b"GET /metrics HTTP/1.1\r\nHost: x\r\nAccept: application/openmetrics-text; version=1.0.0\r\n"
        b"Accept-Encoding: gzip\r\n\r\n",
        _app(),
    )
    assert b"Content-Encoding: gzip" in reply and b"application/openmetrics-text" in reply


def test_four_scrapes_run_at_once_eight_wait_and_the_rest_get_503_without_a_thread() -> None:
    gate = _Gate()
    threads_before = threading.active_count()
    with _listening(gate) as port:
        threads_serving = threading.active_count()
        running = [_send(port, SCRAPE) for _ in range(SERVING)]
        assert _until(lambda: gate.inside == SERVING)
        waiting = [_send(port, SCRAPE) for _ in range(metrics_server.QUEUE_SIZE + 3)]
        refused = [reply for reply in map(_reply, waiting[-3:])]
        assert threading.active_count() == threads_serving
        gate.opened.set()
        answered = [_reply(sock) for sock in running + waiting[:-3]]
    assert threads_serving - threads_before == 1 + SERVING
    assert gate.most == SERVING
    assert all(reply.startswith(b"HTTP/1.1 503 ") and b"Retry-After: 1" in reply for reply in refused)
    assert all(reply.startswith(b"HTTP/1.1 200 ") for reply in answered), answered


def test_slow_heads_hold_no_thread_and_a_scrape_passes_them() -> None:
    with _listening(_app()) as port:
        threads = threading.active_count()
        slow = [_send(port, b"GET /metrics HTTP/1.1\r\nHost: x\r\n") for _ in range(50)]
        assert _reply(_send(port, SCRAPE)).startswith(b"HTTP/1.1 200 ")
        assert threading.active_count() == threads
        for sock in slow:
            sock.close()


def test_a_head_past_8_kib_gets_431() -> None:
    with _listening(_app()) as port:
        fits = b"GET /metrics HTTP/1.1\r\nHost: x\r\nX-Pad: "
        fits += b"a" * (8 * 1024 - len(fits) - 4) + b"\r\n\r\n"
        assert _reply(_send(port, fits)).startswith(b"HTTP/1.1 200 ")
        over = fits[:-4] + b"aa\r\n\r\n"
        assert _reply(_send(port, over)).startswith(b"HTTP/1.1 431 ")


def test_the_deadline_counts_from_accept_not_from_the_last_byte(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(metrics_server, "REQUEST_DEADLINE", 0.5)
    with _listening(_app()) as port:
        sock = _send(port, b"G")
        sock.settimeout(0.1)
        sent = 1
        reply = b""
        # A byte every 0.1 s would keep a per-read timeout of 0.5 s waiting for ever.
        for byte in b"ET /metrics HTTP/1.1\r\nHost: x\r\n":
            try:
                reply = sock.recv(100)
                break
            except TimeoutError:
                sock.send(bytes([byte]))
                sent += 1
        sock.close()
    assert reply.startswith(b"HTTP/1.1 408 ") and sent < 10, (sent, reply)


def test_connections_past_the_cap_close_the_oldest(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(metrics_server, "MAX_CONNECTIONS", 5)
    with _listening(_app()) as port:
        idle = [_send(port, b"") for _ in range(5)]
        time.sleep(0.2)
        assert _reply(_send(port, SCRAPE)).startswith(b"HTTP/1.1 200 ")
        # The first idle connection made room for the scrape.
        assert _reply(idle[0], timeout=2) == b""
        for sock in idle[1:]:
            sock.close()


def test_the_masters_listener_scrapes_without_a_lock_file(tmp_path: Path) -> None:
    """The master forks workers: a lock file open in a serving thread would be inherited by one."""
    listener = metrics_server.start("127.0.0.1", 0, str(tmp_path))
    try:
        reply = _reply(_send(listener.address[1], SCRAPE))
    finally:
        listener.close()
    assert reply.startswith(b"HTTP/1.1 200 ") and b"metrics_files_skipped 0.0" in reply
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("status", [400, 404, 405, 408, 431, 503])
def test_every_refusal_is_a_compact_json_error_like_the_app_ports(status: int) -> None:
    heads = {400: b"GET /metrics HTTP/1.1\r\n\r\n", 404: b"GET /other HTTP/1.1\r\nHost: x\r\n\r\n",
             405: b"POST /metrics HTTP/1.1\r\nHost: x\r\n\r\n"}
    reply = answer(heads[status], _app()) if status in heads else metrics_server._refusal(status)
    assert reply.startswith(b"HTTP/1.1 %d " % status)
    head, _, body = reply.partition(b"\r\n\r\n")
    assert b"\r\nContent-Type: application/json\r\n" in head
    parsed = json.loads(body)
    assert set(parsed) == {"error", "error_description"}
    assert body == json.dumps(parsed, separators=(",", ":")).encode() + b"\n"
