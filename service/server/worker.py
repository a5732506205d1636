"""gunicorn's gthread worker, hardened against slow, idle and oversized clients.

Stock gthread hands every accepted connection to a thread, which then blocks in ``recv`` until
the request head arrives: a few connections that send part of a head (slowloris) or nothing
take every thread. Here the worker's poller reads request heads without blocking: a
connection reaches a thread only once its whole head is buffered. A head must arrive within
``GUNICORN_HEADER_TIMEOUT`` seconds and fit ``MAX_HEAD_BYTES``; otherwise the poller answers
408/414/431 itself. Closing lingers on the poller too (RFC 9112 §9.6), never in a blocking loop.

Requests refused before the app (the worker's limits, or HTTP gunicorn's parser rejects) get a
JSON body with an ``X-Request-ID``, never echo the input, log one access line and count in
``http_requests_total`` under route ``unmatched``.
"""

from __future__ import annotations

import errno
import json
import os
import selectors
import socket
import threading
import time
from dataclasses import dataclass
from datetime import datetime
from datetime import timedelta
from functools import partial
from importlib import metadata
from typing import Any
from typing import Final

import structlog
from gunicorn.http import errors as http_errors
from gunicorn.http.body import LengthReader
from gunicorn.workers.gthread import TConn
from gunicorn.workers.gthread import ThreadWorker

from ..config import server_int
from ..metrics import count_unmatched
from ..request_ids import REQUEST_ID_ENVIRON_KEY
from ..request_ids import ROUTE_ENVIRON_KEY
from ..request_ids import new_request_id
from . import request_head

#: How long a closing connection may keep sending before it is cut (gunicorn's close_graceful).
LINGER_SECONDS: Final = 2.0
#: How much a closing connection may still send (gunicorn's close_graceful).
LINGER_BYTES: Final = 65536

#: The request head this thread is serving (``head``), for the answer if gunicorn refuses it.
parse_error_context = threading.local()


@dataclass(frozen=True, slots=True)
class Refusal:
    """What the client is told when its request never reaches the app."""

    status: int
    reason: str
    description: str

    def render(self, request_id: str) -> bytes:
        """The complete HTTP/1.1 response: JSON, X-Request-ID, and the connection closing."""
        error = "server_error" if self.status == 500 else "invalid_request"
        # Compact, with a trailing newline: the bytes Flask's jsonify gives the app's answers.
        fields = {"error": error, "error_description": self.description}
        body = (json.dumps(fields, separators=(",", ":")) + "\n").encode()
        head = (
            f"HTTP/1.1 {self.status} {self.reason}\r\nConnection: close\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n"
            f"X-Request-ID: {request_id}\r\n\r\n"
        )
        return head.encode("latin-1") + body


BAD_REQUEST: Final = Refusal(400, "Bad Request", "Malformed HTTP request.")
TIMEOUT: Final = Refusal(408, "Request Timeout", "The request head did not arrive in time.")
URI_TOO_LONG: Final = Refusal(414, "URI Too Long", "The request line is too long.")
HEAD_TOO_LARGE: Final = Refusal(
    431, "Request Header Fields Too Large", "A header field or the request head is too large."
)
UNSUPPORTED_CODING: Final = Refusal(
    501, "Not Implemented", "Unsupported Transfer-Encoding: send chunked or a Content-Length."
)
INTERNAL: Final = Refusal(500, "Internal Server Error", "Internal error.")
NO_HOST: Final = Refusal(400, "Bad Request", "An HTTP/1.1 request needs exactly one Host header.")


class HostHeaderError(http_errors.ParseException):
    """RFC 9112 §3.2: no Host in an HTTP/1.1 request, or more than one Host field."""

#: gunicorn's parse errors and our answer to each; any other ParseException is a 400.
_PARSE_REFUSALS: Final = (
    (http_errors.LimitRequestLine, URI_TOO_LONG),
    (http_errors.LimitRequestHeaders, HEAD_TOO_LARGE),
    (http_errors.UnsupportedTransferCoding, UNSUPPORTED_CODING),
    (http_errors.ExpectationFailed, Refusal(417, "Expectation Failed", "Unsupported Expect value.")),
    (http_errors.ForbiddenProxyRequest, Refusal(403, "Forbidden", "PROXY protocol not allowed.")),
    (HostHeaderError, NO_HOST),
    # Response-side header errors and configuration problems are ours, not the client's.
    (http_errors.InvalidResponseHeader, INTERNAL),
    (http_errors.InvalidResponseHeaderName, INTERNAL),
    (http_errors.ConfigurationProblem, INTERNAL),
)
_BY_STATUS: Final = {request_head.URI_TOO_LONG: URI_TOO_LONG, request_head.HEAD_TOO_LARGE: HEAD_TOO_LARGE}


def refusal_for(exc: BaseException) -> Refusal | None:
    """Our answer to a request gunicorn's parser rejected, or None for an unexpected error."""
    for cls, refusal in _PARSE_REFUSALS:
        if isinstance(exc, cls):
            return refusal
    return BAD_REQUEST if isinstance(exc, http_errors.ParseException) else None


class Conn(TConn):
    """A gthread connection that carries the request head its worker's poller read ahead."""

    def __init__(self, worker: Worker, *args: Any) -> None:
        """Remember the worker, whose poller lingers on this connection when it closes."""
        super().__init__(*args)
        self.worker = worker
        self.head = bytearray()
        self.scanned = 0
        self.deadline = 0.0

    def init(self) -> None:
        """Give the parser the buffered head, and bound every read the thread does."""
        super().init()
        if self.head:
            self.parser.unreader.unread(bytes(self.head))
            self.head = bytearray()
            self.scanned = 0
        # A request body (or a response write) on a thread still has a deadline per read.
        self.sock.settimeout(self.worker.header_timeout)

    def close(self, graceful: bool = False) -> None:
        """Close now, or linger on the poller (gunicorn lingers in a blocking loop)."""
        if graceful:
            self.worker.linger(self)
        else:
            super().close()


def http_parser(cfg: Any) -> str:
    """The HTTP/1.1 parser gunicorn picks for ``cfg``, by its own rules (setting ``http_parser``)."""
    if getattr(cfg, "http_parser", "auto") == "python":
        return "python"
    try:
        import gunicorn_h1c
    except ImportError:
        return "python"
    # gunicorn falls back to Python for an h1c without limits (< 0.4.1) or with these flags.
    limits = hasattr(gunicorn_h1c, "LimitRequestLine")
    if not limits or cfg.permit_obsolete_folding or cfg.strip_header_spaces:
        return "python"
    return f"fast (gunicorn_h1c {metadata.version('gunicorn_h1c')})"


class Worker(ThreadWorker):
    """gthread with request heads read by the poller, within a deadline and a size limit."""

    @classmethod
    def check_config(cls, cfg: Any, log: Any) -> None:
        """Name the active HTTP parser in the start-up log (the arbiter calls this once)."""
        super().check_config(cfg, log)
        log.info("Using HTTP parser: %s", http_parser(cfg))

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        """Read the header deadline (gunicorn.conf.py has validated it at start)."""
        super().__init__(*args, **kwargs)
        self.header_timeout = server_int(os.environ, "GUNICORN_HEADER_TIMEOUT", minimum=1)
        # Insertion order is deadline order: every entry gets now + the same constant.
        self.reading: dict[Conn, None] = {}
        self.lingering: dict[Conn, float] = {}
        # Reading ahead needs plain HTTP/1.x bytes: TLS and HTTP/2 prior knowledge keep
        # gthread's own path (this service terminates TLS in front of gunicorn).
        self.read_ahead = (
            not self.cfg.is_ssl
            and getattr(self.cfg, "protocol", "http") == "http"
            and getattr(self.cfg, "http2_cleartext", "off") not in ("prior-knowledge", "both")
        )

    def accept(self, listener: socket.socket) -> None:
        """Accept a connection and start reading its head on the poller."""
        try:
            sock, addr = listener.accept()
        except OSError as e:
            if e.errno not in (errno.EAGAIN, errno.ECONNABORTED, errno.EWOULDBLOCK):
                raise
            return
        self.nr_conns += 1
        self.enqueue_req(Conn(self, self.cfg, sock, addr, listener.getsockname()))

    def enqueue_req(self, conn: Conn) -> None:
        """Hand the connection to a thread once its head is buffered; until then, poll it."""
        if not self.read_ahead:
            super().enqueue_req(conn)
            return
        if conn.parser is not None:
            # Bytes a thread read past the last request: the start of the next head.
            conn.head[:0] = conn.parser.unreader.take_buffered()
        conn.deadline = time.monotonic() + self.header_timeout
        if conn.sock.gettimeout() != 0.0:  # already non-blocking unless a thread just served it
            conn.sock.setblocking(False)
        # The head is usually there already (the poller has just seen a kept-alive socket
        # readable; a new client sends right after connecting): read it now, not after one more
        # trip through the poller. Only a head still incomplete is polled.
        if self._advance(conn, False) and self._receive(conn, False) and self._advance(conn, False):
            self.reading[conn] = None
            self.poller.register(conn.sock, selectors.EVENT_READ, partial(self._on_head_bytes, conn))

    def _on_head_bytes(self, conn: Conn, _sock: Any) -> None:
        """Read what the client sent so far, without blocking."""
        if self._receive(conn, True):
            self._advance(conn, True)

    def _receive(self, conn: Conn, polled: bool) -> bool:
        """Buffer what the socket holds, without blocking; False once the client has gone."""
        try:
            data = conn.sock.recv(max(1, request_head.MAX_HEAD_BYTES + 1 - len(conn.head)))
        except (BlockingIOError, InterruptedError):
            return True
        except OSError:
            data = b""
        if not data:
            if polled:
                self._forget(conn)
            self.nr_conns -= 1
            conn.close()
            return False
        conn.head += data
        return True

    def _advance(self, conn: Conn, polled: bool) -> bool:
        """Dispatch, refuse or keep waiting, depending on what is buffered; True while waiting."""
        if not conn.head:
            return True
        verdict = request_head.scan(conn.head, conn.scanned, self.cfg.limit_request_line)
        conn.scanned = len(conn.head)
        if verdict == request_head.INCOMPLETE:
            return True
        if polled:
            self._forget(conn)
        if verdict == request_head.COMPLETE:
            # The bytes are buffered, not on the socket: gthread must not wait for data.
            conn.data_ready = True
            super().enqueue_req(conn)
        elif isinstance(verdict, int):
            self._refuse(conn, _BY_STATUS[verdict])
        return False

    def _forget(self, conn: Conn) -> None:
        """Stop polling a connection for its head."""
        self._unpoll(conn, self.reading)

    def _unpoll(self, conn: Conn, table: dict[Conn, Any]) -> None:
        """Drop a connection from one of the poller's tables and from the poller itself."""
        table.pop(conn, None)
        try:
            self.poller.unregister(conn.sock)
        except (KeyError, ValueError, OSError):
            pass

    def _refuse(self, conn: Conn, refusal: Refusal) -> None:
        """Answer from the poller a head that broke a limit, then close the connection."""
        self.nr_conns -= 1
        method = request_head.method_of(conn.head)
        request_id = new_request_id()
        with structlog.contextvars.bound_contextvars(request_id=request_id):
            self.log.warning("Refused request head from ip=%s: %s", _ip(conn.client), refusal.reason)
        self._record(refusal, method, None, conn.client, timedelta(0), request_id)
        try:
            conn.sock.send(refusal.render(request_id))
        except OSError:
            pass
        self.linger(conn)

    def linger(self, conn: Conn) -> None:
        """Half-close and drain on the poller until the client closes (RFC 9112 §9.6)."""
        try:
            conn.sock.setblocking(False)
            conn.sock.shutdown(socket.SHUT_WR)
        except OSError:
            conn.close()
            return
        self.lingering[conn] = time.monotonic() + LINGER_SECONDS
        conn.scanned = 0
        self.poller.register(conn.sock, selectors.EVENT_READ, partial(self._on_linger_bytes, conn))

    def _on_linger_bytes(self, conn: Conn, _sock: Any) -> None:
        """Discard what a closing client still sends; close at its EOF or the byte cap."""
        try:
            data = conn.sock.recv(LINGER_BYTES)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            data = b""
        conn.scanned += len(data)
        if not data or conn.scanned >= LINGER_BYTES:
            self._end_linger(conn)

    def _end_linger(self, conn: Conn) -> None:
        """Close a lingering connection for good."""
        self._unpoll(conn, self.lingering)
        conn.close()

    def murder_pending(self) -> None:
        """Also expire heads past their deadline and lingering closes past theirs."""
        super().murder_pending()
        now = time.monotonic()
        # Called once per poller wake-up: look at the oldest entry first and copy a table only
        # when something in it is due (insertion order is deadline order).
        oldest = next(iter(self.reading), None)
        if oldest is not None and (oldest.deadline <= now or not self.alive):
            self._expire_heads(now)
        if self.lingering and next(iter(self.lingering.values())) <= now:
            for conn, deadline in list(self.lingering.items()):
                if deadline > now:
                    break
                self._end_linger(conn)

    def _expire_heads(self, now: float) -> None:
        """Refuse heads past their deadline (all idle ones too when stopping)."""
        for conn in list(self.reading):
            if conn.deadline > now:
                if self.alive:
                    break
                if conn.head:
                    continue
            self._forget(conn)
            if conn.head:
                self._refuse(conn, TIMEOUT)
            else:
                # Never sent a byte (or stopping): nothing to answer.
                self.nr_conns -= 1
                conn.close()

    def handle(self, conn: Conn) -> Any:
        """Serve the buffered request on this thread (remembering its method for refusals)."""
        # Read only when a request is refused (Conn.init hands the parser a copy, then starts a
        # new buffer, so this one stays as received).
        parse_error_context.head = conn.head
        try:
            refused = _refused_before_parsing(conn.head)
            if refused is not None:
                self.handle_error(None, conn.sock, conn.client, refused)
                return False
            return super().handle(conn)
        finally:
            parse_error_context.head = None

    def handle_request(self, req: Any, conn: Conn) -> bool:
        """Serve the request; keep the connection only if its body is already buffered."""
        hosts = sum(1 for name, _ in req.headers if name == "HOST")
        # RFC 9112 §3.2: "MUST respond with a 400 (Bad Request) status code to any HTTP/1.1
        # request message that lacks a Host header field and to any request message that
        # contains more than one Host header field line". Neither parser checks it.
        if hosts > 1 or (hosts == 0 and req.version >= (1, 1)):
            self.handle_error(req, conn.sock, conn.client, HostHeaderError())
            return False
        if not _body_buffered(req, conn):
            # gthread drains a body the app left unread on this thread before keep-alive, for
            # up to 5 s: a slow sender would hold the thread. Closing lingers on the poller.
            req.force_close()
        return super().handle_request(req, conn)

    def handle_error(self, req: Any, client: Any, addr: Any, exc: BaseException) -> None:
        """Answer a request that never reached the app: JSON, an id, one log line, one count."""
        started = datetime.now()
        if req is None:
            req = getattr(exc, "req", None)
        refusal = refusal_for(exc)
        request_id = new_request_id()
        with structlog.contextvars.bound_contextvars(request_id=request_id):
            if refusal is None or refusal is INTERNAL:
                self.log.exception("Error handling request")
                refusal = INTERNAL
            else:
                # The error's name, never its text: gunicorn's messages quote the request line
                # or a header as received, query string (which may carry a secret) included.
                self.log.warning("Invalid request from ip=%s: %s", _ip(addr), type(exc).__name__)
        head = getattr(parse_error_context, "head", None)
        method = getattr(req, "method", None) or (request_head.method_of(head) if head else "")
        self._record(refusal, method, req, addr, datetime.now() - started, request_id)
        try:
            client.setblocking(False)
            client.send(refusal.render(request_id))
        except OSError:
            pass

    def _record(
        self, refusal: Refusal, method: str, req: Any, addr: Any, took: timedelta, request_id: str
    ) -> None:
        """Count the refusal and write its access line."""
        count_unmatched(method, refusal.status)
        head = getattr(parse_error_context, "head", None)
        environ = {
            "REQUEST_METHOD": method or None,
            # A parsed request's path has no query; else the request line's, cut before it.
            "PATH_INFO": getattr(req, "path", None) or (request_head.path_of(head) if head else None),
            "REMOTE_ADDR": _ip(addr),
            REQUEST_ID_ENVIRON_KEY: request_id,
            ROUTE_ENVIRON_KEY: "unmatched",
        }
        self.log.access(_Answered(refusal.status, refusal.reason), req, environ, took)


@dataclass(frozen=True, slots=True)
class _Answered:
    """The response-shaped facts the access line reads for a refusal."""

    status_code: int
    reason: str

    @property
    def status(self) -> str:
        """Status line text, as gunicorn's Response has it."""
        return f"{self.status_code} {self.reason}"

    @property
    def sent(self) -> None:
        """Body bytes are not tracked for refusals."""
        return None


def _refused_before_parsing(head: bytearray) -> Exception | None:
    """The parse error of a head both gunicorn parsers must refuse alike, checked up front."""
    if not head:
        return None
    if request_head.request_line_malformed(head):
        line = head.split(b"\r\n", 1)[0].decode("latin-1")
        return http_errors.InvalidRequestLine(line)
    coding = request_head.undefined_coding(head)
    return None if coding is None else http_errors.UnsupportedTransferCoding(coding)


def _body_buffered(req: Any, conn: Conn) -> bool:
    """True if the request has no body, or all of it is already read (so keep-alive is cheap)."""
    reader = req.body.reader
    if not isinstance(reader, LengthReader):
        return False
    return reader.length == 0 or reader.length <= len(conn.parser.unreader.buf.getvalue())


def _ip(addr: Any) -> str:
    """The peer address of a TCP client ('' for a UNIX socket)."""
    return addr[0] if isinstance(addr, tuple) and addr else ""
