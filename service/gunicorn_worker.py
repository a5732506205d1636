"""gunicorn's gthread worker, answering requests its own HTTP parser rejects like the app does.

gunicorn refuses malformed HTTP (bad request line, control bytes in a header, oversized headers)
before the app sees it, with an HTML page that quotes the offending input. Here those answers
are JSON, carry an ``X-Request-ID``, never echo the input, and the access line names the same id.
"""

from __future__ import annotations

import json
from typing import Any

import structlog
from gunicorn import util
from gunicorn.workers.gthread import ThreadWorker

from .http import new_request_id
from .logging import parse_error_context


def _write_error(sock: Any, status_int: int, reason: str, mesg: str) -> None:
    """Replacement for gunicorn.util.write_error: a JSON error without the rejected input."""
    request_id = getattr(parse_error_context, "request_id", None) or new_request_id()
    error = "invalid_request" if status_int < 500 else "server_error"
    body = json.dumps({"error": error, "error_description": reason}).encode()
    head = (
        f"HTTP/1.1 {status_int} {reason}\r\nConnection: close\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n"
        f"X-Request-ID: {request_id}\r\n\r\n"
    )
    util.write_nonblock(sock, head.encode("latin-1") + body)


class Worker(ThreadWorker):
    """The gthread worker with JSON answers for requests that never reach the app."""

    def init_process(self) -> None:
        """Install the JSON error writer in this worker process (gunicorn calls it by name)."""
        util.write_error = _write_error
        super().init_process()

    def handle_error(self, req: Any, client: Any, addr: Any, exc: Exception) -> None:
        """Give the refusal a request id shared by its response and its access line."""
        request_id = parse_error_context.request_id = new_request_id()
        try:
            # gunicorn's "Invalid request" warning goes through stdlib logging, whose structlog
            # bridge merges these contextvars: the warning carries the id too.
            with structlog.contextvars.bound_contextvars(request_id=request_id):
                super().handle_error(req, client, addr, exc)
        finally:
            parse_error_context.request_id = None
