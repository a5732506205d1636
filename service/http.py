"""HTTP plumbing: request ids (X-Request-ID), structlog context, HTTP metrics, JSON error pages."""

from __future__ import annotations

import itertools
import os
import re
import secrets
import time

import structlog
from flask import Flask
from flask import Response
from flask import jsonify
from flask import request
from werkzeug.exceptions import HTTPException

from . import metrics
from .logging import REQUEST_ID_ENVIRON_KEY
from .logging import ROUTE_ENVIRON_KEY
from .logging import SERVER_REQUEST_ID_ENVIRON_KEY
from .logging import TRACE_ENVIRON_KEY
from .logging import get_logger
from .tracecontext import parse_traceparent

HEADER = "X-Request-ID"
#: WSGI environ key for when the app started on the request (perf_counter seconds).
_STARTED_ENVIRON_KEY = "service.started"
#: A well-formed id is reused; anything else (log injection, huge values) is replaced.
_WELL_FORMED = re.compile(r"[A-Za-z0-9._:-]{1,128}")
#: Methods counted by name; anything else is "other" so clients cannot mint label values.
_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})

log = get_logger("service.http")

_ids: tuple[int, str, itertools.count[int]] | None = None


def new_request_id() -> str:
    """A fresh request id: 32 hex digits from a random per-process prefix and a counter.

    As unique as a uuid4 in practice without a getrandom() syscall per request; the prefix is
    drawn again in a forked child so workers never share a sequence.
    """
    global _ids
    ids = _ids
    if ids is None or ids[0] != os.getpid():
        ids = _ids = (os.getpid(), secrets.token_hex(8), itertools.count())
    return f"{ids[1]}{next(ids[2]):016x}"


def _start() -> None:
    """Adopt or mint the request id and bind it to every log line of this request.

    A client can send any well-formed id, also one it (or someone else) used before; then the
    lines of this request also carry ``server_request_id``, an id the service chose, so one
    request's lines stay tellable apart from another's.
    """
    environ = request.environ
    incoming = environ.get("HTTP_X_REQUEST_ID")
    environ[_STARTED_ENVIRON_KEY] = time.perf_counter()
    structlog.contextvars.clear_contextvars()
    if incoming and _WELL_FORMED.fullmatch(incoming):
        server_id = environ[SERVER_REQUEST_ID_ENVIRON_KEY] = new_request_id()
        environ[REQUEST_ID_ENVIRON_KEY] = incoming
        structlog.contextvars.bind_contextvars(request_id=incoming, server_request_id=server_id)
    else:
        request_id = environ[REQUEST_ID_ENVIRON_KEY] = new_request_id()
        structlog.contextvars.bind_contextvars(request_id=request_id)
    # A W3C traceparent joins this request's lines to the caller's trace; an invalid one is
    # ignored (and never logged: it is client text).
    trace = parse_traceparent(environ.get("HTTP_TRACEPARENT"))
    if trace is not None:
        environ[TRACE_ENVIRON_KEY] = trace
        structlog.contextvars.bind_contextvars(trace_id=trace[0], span_id=trace[1])


def _finish(response: Response) -> Response:
    """Echo the request id and count the request under its route template."""
    # One context lookup for the whole hook: each ``request.x`` goes through werkzeug's proxy.
    current = request._get_current_object()  # type: ignore[attr-defined]
    environ = current.environ
    request_id = environ.get(REQUEST_ID_ENVIRON_KEY)
    if request_id is not None:
        response.headers[HEADER] = request_id
    rule = current.url_rule
    route = rule.rule if rule is not None else "unmatched"
    environ[ROUTE_ENVIRON_KEY] = route
    method = _method_label(current.method)
    metrics.http_request(route, method, str(response.status_code)).inc()
    started = environ.get(_STARTED_ENVIRON_KEY)
    if started is not None:
        metrics.http_duration(route, method).observe(time.perf_counter() - started)
    return response


def _method_label(method: str) -> str:
    """A method as a bounded label: known verbs by name, anything else ``other``."""
    return method if method in _METHODS else "other"


def count_unmatched(method: str, status: int) -> None:
    """Count a request answered before routing (gunicorn's parser or the worker's limits)."""
    label = _method_label(method)
    metrics.http_request("unmatched", label, str(status)).inc()


def _teardown(_exc: BaseException | None) -> None:
    """Drop the request's log context so a reused thread starts clean."""
    structlog.contextvars.clear_contextvars()


def _http_error(error: HTTPException) -> Response | tuple[Response, int]:
    """JSON bodies for 404/405 and friends, like the API's own errors."""
    if error.response is not None:
        # abort(response): an answer already prepared (e.g. an auth refusal), sent as is.
        return error.response
    code = error.code or 500
    name = (error.name or "error").lower().replace(" ", "_")
    response = jsonify(error=name, error_description=error.description)
    if error.code == 405 and error.valid_methods:
        response.headers["Allow"] = ", ".join(error.valid_methods)
    return response, code


def _unexpected(error: Exception) -> tuple[Response, int]:
    """Log a bug with its traceback and answer a generic 500."""
    log.exception("unhandled_exception", error_type=type(error).__name__)
    return jsonify(error="server_error", error_description="Internal error."), 500


def init_app(app: Flask) -> None:
    """Register the request hooks and error handlers."""
    app.before_request(_start)
    app.after_request(_finish)
    app.teardown_request(_teardown)
    app.register_error_handler(HTTPException, _http_error)
    app.register_error_handler(Exception, _unexpected)
