"""Contracts with libraries we lean on beyond their plainest use: each fails by name on an upgrade.

Add an entry when code relies on a library behaviour that is public but easy to change quietly.
"""

from __future__ import annotations

import inspect

import pytest
from authlib.oauth2 import OAuth2Error
from flask import Flask
from flask import Response
from flask_cors import cross_origin
from gunicorn.config import Config
from gunicorn.http import errors as http_errors
from gunicorn.http.body import LengthReader
from gunicorn.http.parser import RequestParser
from gunicorn.http.unreader import Unreader
from gunicorn.workers.gthread import TConn
from gunicorn.workers.gthread import ThreadWorker

from service.jose.errors import AuthError


def test_authlib_oauth2error_init_sets_nothing_autherror_lacks() -> None:
    """service/errors.py skips OAuth2Error.__init__ (it re-validates fixed descriptions per
    refusal); every attribute that __init__ sets must still exist on our errors."""
    reference = OAuth2Error(description="x", status_code=401, uri="https://example.com/")
    ours = AuthError("x")
    missing = sorted(name for name in vars(reference) if not hasattr(ours, name))
    assert not missing, f"authlib OAuth2Error.__init__ now sets {missing}: set them in AuthError"


def test_flask_cors_cross_origin_decorates_a_response_passthrough() -> None:
    """service/cors.py wraps a function returning the response it is given with
    flask_cors.cross_origin; the wrapper must add the CORS headers to that very response."""
    app = Flask(__name__)
    add = cross_origin(origins=["https://spa.example"], automatic_options=False)(
        lambda response: response
    )
    with app.test_request_context("/api/x", headers={"Origin": "https://spa.example"}):
        given = Response("body")
        answered = add(given)
    assert answered is given, "flask_cors.cross_origin no longer returns the wrapped response"
    assert given.headers.get("Access-Control-Allow-Origin") == "https://spa.example", (
        "flask_cors.cross_origin no longer sets Access-Control-Allow-Origin"
    )


def _params(func: object) -> list[str]:
    """Parameter names of a callable, self included."""
    return list(inspect.signature(func).parameters)  # type: ignore[arg-type]


# --- gunicorn gthread (service/gunicorn_worker.py subclasses TConn and ThreadWorker) ---------


@pytest.mark.parametrize(
    ("method", "params"),
    [
        ("accept", ["self", "listener"]),
        ("enqueue_req", ["self", "conn"]),
        ("murder_pending", ["self"]),
        ("handle", ["self", "conn"]),
        ("handle_request", ["self", "req", "conn"]),
        ("handle_error", ["self", "req", "client", "addr", "exc"]),
        ("finish_request", ["self", "conn", "fs"]),
        ("check_config", ["cfg", "log"]),
    ],
)
def test_gthread_worker_methods_the_service_overrides_keep_their_signature(method, params) -> None:
    """Worker overrides these by name; a rename or new parameter would bypass or break them."""
    assert _params(getattr(ThreadWorker, method)) == params, f"gunicorn ThreadWorker.{method} changed"


def test_gthread_connection_keeps_its_constructor_init_and_close() -> None:
    """Conn extends TConn(cfg, sock, client, server) and overrides init() and close(graceful)."""
    assert _params(TConn.__init__) == ["self", "cfg", "sock", "client", "server"]
    assert _params(TConn.init) == ["self"]
    assert _params(TConn.close) == ["self", "graceful"]


def test_gthread_skips_its_data_wait_for_connections_marked_ready() -> None:
    """Heads read ahead are buffered, not on the socket: handle() must trust conn.data_ready."""
    assert "conn.data_ready" in inspect.getsource(ThreadWorker.handle), "gthread no longer reads data_ready"


def test_gthread_closes_finished_connections_through_conn_close_graceful() -> None:
    """Worker moves gunicorn's blocking lingering close to the poller by overriding TConn.close."""
    source = inspect.getsource(ThreadWorker.finish_request)
    assert "conn.close(graceful=True)" in source, "gthread no longer closes through TConn.close"
    assert "conn.parser.unreader" in source, "gthread no longer re-enqueues read-ahead bytes"


def test_gthread_loop_calls_murder_pending_each_iteration() -> None:
    """Head deadlines are enforced from murder_pending(), which run() calls every loop."""
    assert "self.murder_pending()" in inspect.getsource(ThreadWorker.run)



def test_gthread_keeps_the_poller_and_connection_count_the_worker_shares() -> None:
    """Worker registers heads on ThreadWorker.poller and keeps nr_conns, which run() reads."""
    init = inspect.getsource(ThreadWorker.__init__)
    assert "self.poller = " in init and "self.nr_conns = 0" in init, "gthread renamed poller/nr_conns"
    dispatch = inspect.getsource(ThreadWorker.wait_for_and_dispatch_events)
    assert "self.poller.select" in dispatch, "gthread no longer dispatches from self.poller"
    assert "self.nr_conns" in inspect.getsource(ThreadWorker.run), "gthread's loop no longer reads nr_conns"
    conn = inspect.getsource(TConn.__init__)
    assert "self.sock = sock" in conn and "self.parser = None" in conn, "TConn renamed sock/parser"

def test_gunicorn_unreader_can_give_and_take_back_buffered_bytes() -> None:
    """Read-ahead moves between the worker's head buffer and the parser's unreader."""
    assert _params(Unreader.take_buffered) == ["self"]
    assert _params(Unreader.unread) == ["self", "data"]


@pytest.mark.parametrize(
    "name",
    [
        "ParseException",
        "LimitRequestLine",
        "LimitRequestHeaders",
        "UnsupportedTransferCoding",
        "ExpectationFailed",
        "ForbiddenProxyRequest",
        "InvalidResponseHeader",
        "InvalidResponseHeaderName",
        "ConfigurationProblem",
    ],
)
def test_gunicorn_parse_errors_the_worker_maps_still_exist(name: str) -> None:
    """Worker.handle_error maps these classes to statuses; ParseException is the 400 fallback."""
    cls = getattr(http_errors, name, None)
    assert isinstance(cls, type), f"gunicorn.http.errors.{name} is gone"
    assert issubclass(cls, http_errors.ParseException), f"{name} is no longer a ParseException"


def test_gunicorn_request_exposes_body_length_buffer_and_force_close() -> None:
    """Worker keeps a connection alive only when the body's remaining length is already buffered."""
    raw = b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nabc"
    parser = RequestParser(Config(), [raw], ("127.0.0.1", 1))
    req = next(parser)
    assert isinstance(req.body.reader, LengthReader), "gunicorn's body reader changed"
    assert req.body.reader.length == 5
    assert parser.unreader.buf.getvalue() == b"abc", "gunicorn's unreader buffer changed"
    req.force_close()
    assert req.should_close()


@pytest.mark.parametrize("setting", ["auto", "python"])
def test_the_logged_http_parser_is_the_one_gunicorn_picks(setting: str) -> None:
    """The start-up line ("Using HTTP parser") follows gunicorn's own (private) choice."""
    from gunicorn.http.message import _check_fast_parser

    from service.server.worker import http_parser

    cfg = Config()
    cfg.set("http_parser", setting)
    assert http_parser(cfg).startswith("fast") == _check_fast_parser(cfg)
