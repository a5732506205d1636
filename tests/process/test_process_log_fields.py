"""Log lines that join up, from a real gunicorn: W3C trace context, and probes left out of the log."""

from __future__ import annotations

import secrets
from typing import Any

import pytest

from tests.support.issuer import LocalIssuer
from tests.support.procs import Server
from tests.support.procs import ServerFactory

pytestmark = pytest.mark.slow

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
SPAN_ID = "00f067aa0ba902b7"


def _lines_of(server: Server, rid: str, count: int = 1) -> list[dict[str, Any]]:
    """The log records of the request with id `rid` (waiting for its access line)."""
    server.wait_for_record(
        lambda r: r.get("event") == "http_request" and r.get("request_id") == rid, count=count
    )
    return [r for r in server.records() if r.get("request_id") == rid]


@pytest.fixture(scope="module")
def server(module_issuer: LocalIssuer, module_gunicorn: ServerFactory) -> Server:
    """Two workers with the default LOG_ACCESS_PROBES (0)."""
    return module_gunicorn(module_issuer, workers=2)


@pytest.mark.parametrize(
    ("traceparent", "route"),
    [
        (f"00-{TRACE_ID}-{SPAN_ID}-01", "/api/private"),
        (f"00-{TRACE_ID}-{SPAN_ID}-00", "/api/private-scoped"),
        # A later version may carry more fields; its first four still identify the trace.
        (f"cc-{TRACE_ID}-{SPAN_ID}-01-what-the-future-holds", "/api/private"),
    ],
)
def test_traceparent_puts_trace_and_span_on_every_line_of_the_request(
    server: Server, module_issuer: LocalIssuer, traceparent: str, route: str
) -> None:
    rid = f"trace-{secrets.token_hex(4)}"
    headers = {"traceparent": traceparent, "X-Request-ID": rid}
    resp = server.get(route, token=module_issuer.mint(), headers=headers)
    assert resp.status == 200
    lines = _lines_of(server, rid)
    events = {r["event"] for r in lines}
    assert {"auth_decision", "http_request"} <= events, lines
    for record in lines:
        assert (record.get("trace_id"), record.get("span_id")) == (TRACE_ID, SPAN_ID), record


@pytest.mark.parametrize(
    "traceparent",
    [
        f"00-{TRACE_ID.upper()}-{SPAN_ID}-01",  # uppercase hex
        f"00-{'0' * 32}-{SPAN_ID}-01",  # all-zero trace id
        f"00-{TRACE_ID}-{'0' * 16}-01",  # all-zero parent id
        f"ff-{TRACE_ID}-{SPAN_ID}-01",  # forbidden version
        f"00-{TRACE_ID}-{SPAN_ID}-01-extra",  # version 00 has exactly four fields
        f"00-{TRACE_ID[:-1]}-{SPAN_ID}-01",  # short trace id
        f"00-{TRACE_ID}-{SPAN_ID}-01, 00-{TRACE_ID}-{SPAN_ID}-01",  # two headers, joined
        'zz-"injected":true-' + "x" * 3000,
    ],
)
def test_malformed_traceparent_is_ignored_and_never_echoed(
    server: Server, module_issuer: LocalIssuer, traceparent: str
) -> None:
    rid = f"badtrace-{secrets.token_hex(4)}"
    resp = server.get(
        "/api/private", token=module_issuer.mint(), headers={"traceparent": traceparent, "X-Request-ID": rid}
    )
    assert resp.status == 200
    assert traceparent not in resp.body.decode() and "traceparent" not in resp.headers
    lines = _lines_of(server, rid)
    assert {"auth_decision", "http_request"} <= {r["event"] for r in lines}
    for record in lines:
        assert "trace_id" not in record and "span_id" not in record, record
    assert traceparent not in server.stdout()


def test_successful_probes_leave_no_access_line_but_failures_do(
    server: Server, module_issuer: LocalIssuer
) -> None:
    """LOG_ACCESS_PROBES=0: /healthz, /readyz, /metrics 2xx are silent; other requests are not."""
    probe_ids = {}
    for path in ("/healthz", "/readyz", "/metrics"):
        rid = f"probe-{secrets.token_hex(4)}"
        assert server.get(path, headers={"X-Request-ID": rid}).status == 200
        probe_ids[path] = rid
    # A failing probe (405) and an ordinary request, sent after the probes: once their lines are
    # written, the probes' lines would be too (one gunicorn stdout, in order per worker).
    failed = f"probe-fail-{secrets.token_hex(4)}"
    assert server.get("/healthz", method="POST", headers={"X-Request-ID": failed}).status == 405
    public = f"public-{secrets.token_hex(4)}"
    assert server.get("/api/public", headers={"X-Request-ID": public}).status == 200
    for _ in range(4):  # both workers have written what they had before
        _lines_of(server, public)
        _lines_of(server, failed)
        rid = f"flush-{secrets.token_hex(4)}"
        server.get("/api/public", headers={"X-Request-ID": rid})
        _lines_of(server, rid)
    access = [r for r in server.records() if r.get("event") == "http_request"]
    logged = {r["request_id"] for r in access}
    assert not logged & set(probe_ids.values()), [r for r in access if r["request_id"] in probe_ids.values()]
    assert failed in logged and public in logged


def test_probe_access_lines_are_kept_with_log_access_probes_1(
    module_issuer: LocalIssuer, gunicorn: ServerFactory
) -> None:
    server = gunicorn(module_issuer, workers=1, env={"LOG_ACCESS_PROBES": "1"})
    for path in ("/healthz", "/readyz", "/metrics"):
        rid = f"kept-{secrets.token_hex(4)}"
        assert server.get(path, headers={"X-Request-ID": rid}).status == 200
        (line,) = [r for r in _lines_of(server, rid) if r["event"] == "http_request"]
        assert line["route"] == path and line["status"] == 200


def test_unready_probe_is_always_logged(issuer: LocalIssuer, gunicorn: ServerFactory) -> None:
    """/readyz answering 503 (no keys: the issuer is down) is logged by default."""
    issuer.go_down()
    server = gunicorn(issuer, workers=1)
    rid = f"unready-{secrets.token_hex(4)}"
    assert server.get("/readyz", headers={"X-Request-ID": rid}).status == 503
    (line,) = [r for r in _lines_of(server, rid) if r["event"] == "http_request"]
    assert line["status"] == 503 and line["route"] == "/readyz"
    issuer.come_up()
