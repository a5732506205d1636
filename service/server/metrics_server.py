"""/metrics on its own port (METRICS_PORT), served by the gunicorn master with fixed threads.

The master is the pod: every bound here is fixed. One thread reads request heads from every
connection at once (a selector), so a slow or silent client holds a socket and at most
MAX_HEAD_BYTES, never a thread. A complete head goes to SERVING_THREADS threads through a queue
of QUEUE_SIZE; past that the answer is 503 at once. Each connection has REQUEST_DEADLINE seconds
from accept to its last byte out. Standard library plus prometheus_client only: no Flask here.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import queue
import selectors
import socket
import threading
import time
from collections.abc import Callable
from collections.abc import Iterable
from dataclasses import dataclass
from dataclasses import field
from typing import Any

from prometheus_client import CollectorRegistry
from prometheus_client import make_wsgi_app

from ..metric_files import FileCollector

#: Scrapes answered at once (Prometheus scrapes one target once per interval).
SERVING_THREADS = 4
#: Complete heads that may wait for a serving thread; more get 503 without waiting.
QUEUE_SIZE = 8
#: A scrape's request head: a request line and a few short fields fit many times over.
MAX_HEAD_BYTES = 8192
#: Seconds from accept to the last byte of the answer, however the client paces its bytes.
REQUEST_DEADLINE = 5.0
#: Connections reading their heads at once; a new one closes the oldest (nearest its deadline).
MAX_CONNECTIONS = 512
#: Connections accepted per wake-up, so reading heads never starves behind an accept flood.
_ACCEPTS_PER_TURN = 64

_log = logging.getLogger("service.server.metrics_server")

#: Refusal bodies: compact JSON and a newline, as the app port's jsonify renders its errors.
_ERRORS = {
    400: ("invalid_request", "The request is malformed."),
    404: ("not_found", "Only /metrics is served here."),
    405: ("method_not_allowed", "Only GET and HEAD are served here."),
    408: ("timeout", "The request was not received in time."),
    431: ("header_too_large", "The request head is too large."),
    503: ("busy", "Too many scrapes at once; retry."),
}
_REASONS = {
    200: "OK",
    400: "Bad Request",
    404: "Not Found",
    405: "Method Not Allowed",
    408: "Request Timeout",
    431: "Request Header Fields Too Large",
    500: "Internal Server Error",
    503: "Service Unavailable",
}

WsgiApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]


def _response(
    status: int, headers: Iterable[tuple[str, str]] = (), body: bytes = b"", *, head: bool = False
) -> bytes:
    """An HTTP/1.1 response that closes the connection (Content-Length always set)."""
    lines = [f"HTTP/1.1 {status} {_REASONS.get(status, 'OK')}"]
    lines += [f"{name}: {value}" for name, value in headers]
    lines += [f"Content-Length: {len(body)}", "Connection: close", "", ""]
    return "\r\n".join(lines).encode("latin-1") + (b"" if head else body)


def _refusal(status: int) -> bytes:
    """A short JSON refusal for a request that is never served."""
    error, description = _ERRORS[status]
    body = json.dumps({"error": error, "error_description": description}, separators=(",", ":")) + "\n"
    extra = [("Retry-After", "1")] if status == 503 else [("Allow", "GET, HEAD")] if status == 405 else []
    return _response(status, [("Content-Type", "application/json"), *extra], body.encode())


def _head_end(buffer: bytearray, start: int) -> int:
    """Index just past the blank line ending the head, or -1 (a bare LF ends lines too, RFC 9112 §2.2)."""
    at = buffer.find(b"\n\r\n", start)
    bare = buffer.find(b"\n\n", start)
    ends = [i for i in ((at + 3) if at >= 0 else -1, (bare + 2) if bare >= 0 else -1) if i >= 0]
    return min(ends) if ends else -1


def answer(head: bytes, app: WsgiApp) -> bytes:
    """The whole response to one request head (GET/HEAD /metrics, else 400/404/405)."""
    lines = head.decode("latin-1").split("\n")
    parts = lines[0].rstrip("\r").split(" ")
    if len(parts) != 3 or parts[2] not in ("HTTP/1.0", "HTTP/1.1"):
        return _refusal(400)
    method, target, version = parts
    fields: dict[str, str] = {}
    for line in lines[1:]:
        line = line.rstrip("\r")
        if not line:
            continue
        name, colon, value = line.partition(":")
        # RFC 9112 §5.1: no whitespace before the colon; §5.2: obsolete line folding refused.
        if not colon or not name or name != name.strip() or line[0] in " \t":
            return _refusal(400)
        fields[name.lower()] = value.strip()
    # RFC 9112 §3.2: an HTTP/1.1 request without Host gets 400.
    if version == "HTTP/1.1" and "host" not in fields:
        return _refusal(400)
    path, _, query = target.partition("?")
    if path != "/metrics":
        return _refusal(404)
    if method not in ("GET", "HEAD"):
        return _refusal(405)
    environ: dict[str, Any] = {"REQUEST_METHOD": "GET", "PATH_INFO": path, "QUERY_STRING": query}
    for name in ("accept", "accept-encoding"):
        if name in fields:
            environ["HTTP_" + name.upper().replace("-", "_")] = fields[name]
    started: list[Any] = []
    body = b"".join(app(environ, lambda status, headers, *_: started.extend((status, headers))))
    status, headers = started
    return _response(int(status.split(" ", 1)[0]), headers, body, head=method == "HEAD")


@dataclass(eq=False)
class _Connection:
    """A client connection and when it must be done."""

    sock: socket.socket
    deadline: float
    head: bytearray = field(default_factory=bytearray)


class MetricsListener:
    """Reads heads on one thread, answers on SERVING_THREADS; start() to run, close() to stop."""

    def __init__(self, listening: socket.socket, app: WsgiApp) -> None:
        """Serve `app` on the bound, listening socket."""
        self._listening = listening
        self._app = app
        self._selector = selectors.DefaultSelector()
        #: Connections still reading their heads, oldest first (dicts keep insertion order).
        self._reading: dict[socket.socket, _Connection] = {}
        self._ready: queue.Queue[_Connection | None] = queue.Queue(QUEUE_SIZE)
        #: Every open client socket, also those queued or being answered (closed in a fork child).
        self._open: set[socket.socket] = set()
        self._closing = threading.Event()
        self._threads: list[threading.Thread] = []

    @property
    def address(self) -> tuple[Any, ...]:
        """The bound address."""
        return tuple(self._listening.getsockname())

    def start(self) -> None:
        """Start the head reader and the serving threads (daemons: they end with the master)."""
        self._listening.setblocking(False)
        self._selector.register(self._listening, selectors.EVENT_READ)
        # Workers are forked from this process: they must not keep any of these sockets open.
        os.register_at_fork(after_in_child=self._close_in_child)
        self._threads = [threading.Thread(target=self._read_heads, name="metrics-heads", daemon=True)]
        self._threads += [
            threading.Thread(target=self._serve, name=f"metrics-{n}", daemon=True)
            for n in range(SERVING_THREADS)
        ]
        for thread in self._threads:
            thread.start()

    def close(self) -> None:
        """Stop every thread and close every socket (the master's exit does it too)."""
        self._closing.set()
        for _ in range(SERVING_THREADS):
            with contextlib.suppress(queue.Full):
                self._ready.put(None, timeout=REQUEST_DEADLINE)
        for thread in self._threads:
            thread.join(timeout=REQUEST_DEADLINE)
        self._close_in_child()

    def _close_in_child(self) -> None:
        """Close the listening socket, the selector and every client socket."""
        self._listening.close()
        self._selector.close()
        for sock in list(self._open):
            sock.close()
        self._open.clear()
        self._reading.clear()

    def _drop(self, conn: _Connection, reply: bytes = b"") -> None:
        """Stop reading a connection; send a short reply if the socket takes it at once; close."""
        self._reading.pop(conn.sock, None)
        with contextlib.suppress(KeyError, ValueError):
            self._selector.unregister(conn.sock)
        if reply:
            with contextlib.suppress(OSError):
                conn.sock.send(reply)
        self._close(conn.sock)

    def _close(self, sock: socket.socket) -> None:
        """Close a client socket and forget it."""
        self._open.discard(sock)
        sock.close()

    def _read_heads(self) -> None:
        """The selector loop: accept, read heads, expire them, hand complete ones on."""
        while not self._closing.is_set():
            try:
                self._turn()
            except Exception:
                # This thread is the listener: log and go on rather than stop serving.
                _log.exception("metrics_listener_error")
                time.sleep(0.1)

    def _turn(self) -> None:
        """One wake-up of the selector loop."""
        timeout = 1.0
        if self._reading:
            first = next(iter(self._reading.values()))
            timeout = min(timeout, max(0.0, first.deadline - time.monotonic()))
        for key, _ in self._selector.select(timeout):
            if key.fileobj is self._listening:
                self._accept()
            else:
                self._read(key.data)
        now = time.monotonic()
        while self._reading:
            first = next(iter(self._reading.values()))
            if first.deadline > now:
                break
            self._drop(first, _refusal(408))

    def _accept(self) -> None:
        """Accept what is waiting, closing the oldest head readers past MAX_CONNECTIONS."""
        for _ in range(_ACCEPTS_PER_TURN):
            try:
                sock, _ = self._listening.accept()
            except BlockingIOError:
                return
            except OSError:
                # Out of descriptors (EMFILE): free one; the client retries or its peer does.
                if self._reading:
                    self._drop(next(iter(self._reading.values())))
                return
            while len(self._reading) >= MAX_CONNECTIONS:
                self._drop(next(iter(self._reading.values())))
            sock.setblocking(False)
            conn = _Connection(sock, time.monotonic() + REQUEST_DEADLINE)
            self._open.add(sock)
            self._reading[sock] = conn
            self._selector.register(sock, selectors.EVENT_READ, conn)

    def _read(self, conn: _Connection) -> None:
        """Read what a connection sent; queue it once its head is complete."""
        try:
            data = conn.sock.recv(MAX_HEAD_BYTES + 1 - len(conn.head))
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if not data:
            self._drop(conn)
            return
        start = max(0, len(conn.head) - 2)
        conn.head += data
        end = _head_end(conn.head, start)
        if end < 0:
            if len(conn.head) > MAX_HEAD_BYTES:
                self._drop(conn, _refusal(431))
            return
        del conn.head[end:]
        self._reading.pop(conn.sock, None)
        self._selector.unregister(conn.sock)
        try:
            self._ready.put_nowait(conn)
        except queue.Full:
            self._drop(conn, _refusal(503))

    def _serve(self) -> None:
        """A serving thread: answer complete heads until close()."""
        while (conn := self._ready.get()) is not None:
            try:
                if time.monotonic() < conn.deadline:
                    self._send(conn, answer(bytes(conn.head), self._app))
            except Exception:
                _log.exception("metrics_scrape_failed")
                with contextlib.suppress(OSError):
                    self._send(conn, _response(500))
            finally:
                self._close(conn.sock)

    def _send(self, conn: _Connection, data: bytes) -> None:
        """Send all of data before the connection's deadline, or give up."""
        view = memoryview(data)
        while view:
            remaining = conn.deadline - time.monotonic()
            if remaining <= 0:
                return
            conn.sock.settimeout(remaining)
            try:
                sent = conn.sock.send(view)
            except (TimeoutError, OSError):
                return
            view = view[sent:]


def start(host: str, port: int, path: str) -> MetricsListener:
    """Listen on host:port and serve the metrics merged from `path` (raises OSError)."""
    registry = CollectorRegistry()
    # This process folds dead workers' files and forks new ones: see FileCollector.
    registry.register(FileCollector(path, lock_file=False))
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    listening = socket.create_server((host, port), family=family, backlog=128)
    listener = MetricsListener(listening, make_wsgi_app(registry))
    listener.start()
    return listener


def listen_host(address: Any) -> str:
    """The host of gunicorn's first bind address (metrics share the app's interface)."""
    if isinstance(address, tuple) and address and address[0]:
        return str(address[0])
    # A unix socket (or an empty host): every interface, like gunicorn's default for PORT.
    return "0.0.0.0"
