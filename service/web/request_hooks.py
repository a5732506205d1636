"""Flask request hooks: request ids (X-Request-ID), structlog context, HTTP metrics, JSON error pages."""

from __future__ import annotations

import time

import structlog
from flask import Flask
from flask import Response
from flask import jsonify
from flask import request
from werkzeug.exceptions import HTTPException
from werkzeug.sansio.response import Response as WerkzeugResponse

from .. import metrics
from ..logs import get_logger
from ..request_ids import HEADER
from ..request_ids import REQUEST_ID_ENVIRON_KEY
from ..request_ids import ROUTE_ENVIRON_KEY
from ..request_ids import SERVER_REQUEST_ID_ENVIRON_KEY
from ..request_ids import TRACE_ENVIRON_KEY
from ..request_ids import WELL_FORMED
from ..request_ids import new_request_id
from ..tracecontext import parse_traceparent

#: WSGI environ key for when the app started on the request (perf_counter seconds).
_STARTED_ENVIRON_KEY = "service.started"

log = get_logger("service.http")


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
    if incoming and WELL_FORMED.fullmatch(incoming):
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
    method = metrics.method_label(current.method)
    metrics.http_request(route, method, str(response.status_code)).inc()
    started = environ.get(_STARTED_ENVIRON_KEY)
    if started is not None:
        metrics.http_duration(route, method).observe(time.perf_counter() - started)
    return response


def _teardown(_exc: BaseException | None) -> None:
    """Drop the request's log context so a reused thread starts clean."""
    structlog.contextvars.clear_contextvars()


def _http_error(error: HTTPException) -> WerkzeugResponse | tuple[Response, int]:
    """JSON bodies for 404/405 and friends, like the API's own errors."""
    if error.response is not None:
        # abort(response): an answer already prepared (e.g. an auth refusal), sent as is.
        return error.response
    code = error.code or 500
    name = (error.name or "error").lower().replace(" ", "_")
    response = jsonify(error=name, error_description=error.description)
    valid_methods = getattr(error, "valid_methods", None)  # werkzeug's MethodNotAllowed has them
    if error.code == 405 and valid_methods:
        response.headers["Allow"] = ", ".join(valid_methods)
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
