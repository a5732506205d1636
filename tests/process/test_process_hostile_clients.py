"""Slow, idle and oversized clients against real gunicorn with its real config (loopback only)."""

from __future__ import annotations

import json
import re
import socket
import time

import pytest

from tests.support import hostile
from tests.support.helpers import warm
from tests.support.issuer import LocalIssuer
from tests.support.procs import Server
from tests.support.procs import ServerFactory
from tests.support.procs import metric_sum

pytestmark = pytest.mark.slow

#: The default header deadline (service.config.DEFAULTS), which the tests run with.
HEADER_TIMEOUT = 10.0


def _json_refusal(raw: bytes, status: int) -> dict[str, str]:
    """Assert `raw` is the worker's JSON refusal with `status`; return its body."""
    head, _, body = raw.partition(b"\r\n\r\n")
    assert head.startswith(f"HTTP/1.1 {status} ".encode()), raw[:200]
    assert re.search(rb"\r\nX-Request-ID: [0-9a-f]{32}\r\n", head + b"\r\n"), head
    assert b"Content-Type: application/json" in head, head
    return json.loads(body)


@pytest.fixture(scope="module")
def server(module_issuer: LocalIssuer, module_gunicorn: ServerFactory) -> Server:
    """The default configuration (2 workers x 4 threads), warmed: every worker has the keys."""
    srv = module_gunicorn(module_issuer, workers=None, env={"GUNICORN_GRACEFUL_TIMEOUT": None})
    # Generous: on a loaded 2-core machine booting and warming both workers can take a while.
    srv.wait_booted(2, timeout=60)
    warm(srv, module_issuer, 2, timeout=60)
    return srv


def test_slow_and_idle_connections_leave_the_api_fast_and_close_at_the_deadline(
    server: Server, module_issuer: LocalIssuer
) -> None:
    """100 slowloris + 100 idle sockets: probes answer under 100 ms at p99, slow ones get 408 at 10 s."""
    token = module_issuer.mint()
    before = metric_sum(server.metrics(), "http_requests_total", route="unmatched", status="408")
    with hostile.swarm(server.port, slow=100, idle=100) as crowd:
        time.sleep(0.5)  # let both workers accept the whole crowd before probing
        probes = hostile.probe(server, token, count=300, until=crowd.opened[crowd.idle[-1]] + 7)
        assert not probes.failures, probes.failures[:10]
        assert len(probes.latencies) >= 100, len(probes.latencies)
        assert probes.p99() < 0.100, sorted(probes.latencies)[-10:]
        crowd.wait_closed(timeout=HEADER_TIMEOUT + 8)
        slow = crowd.lifetimes(crowd.slow)
        idle = crowd.lifetimes(crowd.idle)
        assert None not in slow and None not in idle, (slow.count(None), idle.count(None))
        # Closed at the deadline (the poller checks it about once a second), not before.
        for lifetimes in (slow, idle):
            assert HEADER_TIMEOUT - 0.5 <= min(lifetimes), min(lifetimes)  # type: ignore[type-var]
            assert max(lifetimes) <= HEADER_TIMEOUT + 4, max(lifetimes)  # type: ignore[type-var]
        for sock in crowd.slow:
            body = _json_refusal(crowd.received.get(sock, b""), 408)
            assert body["error"] == "invalid_request"
        assert not any(crowd.received.get(sock) for sock in crowd.idle)
    after = metric_sum(server.metrics(), "http_requests_total", route="unmatched", status="408")
    assert after - before == 100


def test_huge_heads_cost_little_worker_cpu(server: Server) -> None:
    """8 maximal accepted heads and 8 of the 26 MB attack heads cost under 1 s of CPU in all."""
    spent, (accepted, attacked) = hostile.worker_cpu(server, lambda: hostile.huge_heads(server, 8))
    assert all(raw.startswith(b"HTTP/1.1 200 ") for raw in accepted), [r[:60] for r in accepted]
    for raw in attacked:
        # The worker answers 431 after 64 KiB; a client still sending may see a reset instead.
        assert raw == b"" or _json_refusal(raw, 431)["error"] == "invalid_request", raw[:200]
    assert spent < 1.0, spent
    assert server.alive()


@pytest.mark.parametrize(
    ("extra", "status"),
    [
        (b"X-Big: " + b"a" * 33_000 + b"\r\n", 431),  # one field over the 32 KiB field limit
        (b"".join(b"X-Pad-%d: " % i + b"a" * 30_000 + b"\r\n" for i in range(3)), 431),  # head > 64 KiB
    ],
    ids=["field", "head"],
)
def test_oversized_heads_get_the_json_431(server: Server, extra: bytes, status: int) -> None:
    """A field or a whole head over its limit gets the worker's JSON 431, echoing nothing."""
    raw = server.send_raw(b"GET /api/public HTTP/1.1\r\nHost: x\r\n" + extra + b"\r\n")
    assert _json_refusal(raw, status)["error"] == "invalid_request"
    assert b"aaaa" not in raw


def test_token_over_the_app_cap_gets_401_and_over_the_field_limit_431(
    server: Server, module_issuer: LocalIssuer
) -> None:
    """Just over 16 KiB: the app's RFC 6750 401; over the 32 KiB field: the worker's 431."""
    just_over = module_issuer.mint({"padding": "x" * 13_000})
    assert 16_384 < len(just_over) < 32_000, len(just_over)
    resp = server.get("/api/private", token=just_over)
    assert resp.status == 401 and 'error="invalid_token"' in (resp.header("WWW-Authenticate") or "")
    too_big = module_issuer.mint({"padding": "x" * 30_000})
    raw = server.send_raw(
        f"GET /api/private HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {too_big}\r\n\r\n".encode()
    )
    assert _json_refusal(raw, 431)["error"] == "invalid_request"
    assert too_big.encode() not in raw and too_big not in server.output()


@pytest.mark.parametrize(
    "coding", ["xchunked", "identity, chunked", "x-custom, chunked", "chunked, identity", "identity"]
)
def test_transfer_codings_rfc9112_does_not_define_get_501_naming_the_client_problem(
    server: Server, coding: str
) -> None:
    """501 (RFC 9112 §6.1) with a JSON body that blames the coding, never server_error."""
    raw = server.send_raw(
        f"POST /api/public HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: {coding}\r\n\r\n0\r\n\r\n".encode()
    )
    body = _json_refusal(raw, 501)
    assert body["error"] == "invalid_request"
    assert "Transfer-Encoding" in body["error_description"]


@pytest.mark.parametrize("coding", ["gzip", "chunked, gzip"])
def test_transfer_codings_not_ending_in_chunked_get_400(server: Server, coding: str) -> None:
    """Defined codings without chunked last: the body length is unknown, so 400 (RFC 9112 §6.3)."""
    raw = server.send_raw(
        f"POST /api/public HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: {coding}\r\n\r\n0\r\n\r\n".encode()
    )
    assert _json_refusal(raw, 400)["error"] == "invalid_request"


def test_chunked_alone_is_still_accepted(server: Server) -> None:
    """The one coding a request may use keeps working."""
    raw = server.send_raw(b"GET /api/public HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n"
                          b"Connection: close\r\n\r\n0\r\n\r\n")
    assert raw.startswith(b"HTTP/1.1 200 "), raw[:200]


def test_requests_refused_before_the_app_are_counted(server: Server) -> None:
    """400/414/431/501 refusals appear in http_requests_total under route "unmatched"."""
    cases = {
        ("400", "GET"): b"GET /api/public HTTP/1.1\r\nHost: x\r\nBad Header\r\n\r\n",
        ("400", "other"): b"BREW /pot HTTP/1.1\r\nHost: x\r\nBad Header\r\n\r\n",
        ("414", "GET"): b"GET /" + b"a" * 5000 + b" HTTP/1.1\r\nHost: x\r\n\r\n",
        ("431", "GET"): b"GET / HTTP/1.1\r\nHost: x\r\nX: " + b"a" * 40_000 + b"\r\n\r\n",
        ("501", "POST"): b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: xchunked\r\n\r\n",
    }

    def counts() -> dict[tuple[str, str], float]:
        samples = server.metrics()
        return {
            key: metric_sum(samples, "http_requests_total", route="unmatched", status=key[0], method=key[1])
            for key in cases
        }

    before = counts()
    for (status, _), raw in cases.items():
        _json_refusal(server.send_raw(raw), int(status))
    after = counts()
    assert {key: after[key] - before[key] for key in cases} == dict.fromkeys(cases, 1.0)


def test_pipelined_requests_on_one_connection_are_all_answered(server: Server) -> None:
    """Read-ahead past one request is the next request's head, not lost bytes."""
    one = b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n"
    raw = server.send_raw(one * 3 + b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    assert raw.count(b"HTTP/1.1 200 ") == 4, raw[:400]


def test_a_small_body_sent_with_its_head_keeps_the_connection_alive(server: Server) -> None:
    """A body already buffered with the head is no reason to close."""
    raw = server.send_raw(
        b"POST /api/public HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\nab"
        b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    assert raw.startswith(b"HTTP/1.1 405 ") and raw.count(b"HTTP/1.1 200 ") == 1, raw[:400]


def test_slow_unread_bodies_hold_no_thread(server: Server, module_issuer: LocalIssuer) -> None:
    """Bodies trickled to routes that never read them: the request is answered and closed."""
    socks = []
    try:
        for _ in range(16):
            sock = socket.create_connection(("127.0.0.1", server.port), timeout=5)
            sock.sendall(b"POST /api/public HTTP/1.1\r\nHost: x\r\nContent-Length: 100000\r\n\r\n0123")
            socks.append(sock)
        time.sleep(0.3)
        probes = hostile.probe(server, module_issuer.mint(), count=40)
        assert not probes.failures, probes.failures
        # Drained on a thread, each body would hold one for 5 s (all 8 are taken by 16 bodies).
        assert max(probes.latencies) < 2.0, sorted(probes.latencies)[-5:]
        for sock in socks:
            raw = hostile.read_response(sock)
            assert raw.startswith(b"HTTP/1.1 405 ") and b"Connection: close" in raw, raw[:200]
    finally:
        for sock in socks:
            sock.close()


def test_clients_that_never_close_do_not_stall_the_worker(
    module_issuer: LocalIssuer, module_gunicorn: ServerFactory
) -> None:
    """Connections answered with Connection: close but never closed by the client linger off-thread."""
    srv = module_gunicorn(module_issuer, workers=1)
    socks = []
    try:
        for _ in range(10):
            sock = socket.create_connection(("127.0.0.1", srv.port), timeout=5)
            sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            socks.append(sock)
        time.sleep(0.2)
        started = time.monotonic()
        probes = hostile.probe(srv, module_issuer.mint(), count=20)
        assert not probes.failures, probes.failures
        # gunicorn's own close drains each such socket for up to 2 s on the worker's main loop.
        assert time.monotonic() - started < 5.0
    finally:
        for sock in socks:
            sock.close()


def test_idle_connections_do_not_delay_shutdown(
    module_issuer: LocalIssuer, module_gunicorn: ServerFactory
) -> None:
    """SIGTERM closes connections that never sent a byte at once instead of waiting them out."""
    srv = module_gunicorn(module_issuer, workers=1)
    socks = [socket.create_connection(("127.0.0.1", srv.port), timeout=5) for _ in range(20)]
    try:
        time.sleep(0.3)
        started = time.monotonic()
        assert srv.terminate() == 0
        assert time.monotonic() - started < HEADER_TIMEOUT / 2
    finally:
        for sock in socks:
            sock.close()


def _request(*fields: bytes, line: bytes = b"POST / HTTP/1.1", body: bytes = b"") -> bytes:
    """A raw request head with Host and `fields`, then `body`."""
    return b"\r\n".join((line, b"Host: x", *fields)) + b"\r\n\r\n" + body


#: Malformed or oversized requests and the status each gets, whichever parser gunicorn uses.
PARSER_CASES = {
    "ok": (_request(b"Connection: close", line=b"GET /healthz HTTP/1.1"), 200),
    "no colon": (_request(b"Bad Header"), 400),
    "bare LF": (b"GET / HTTP/1.1\nHost: x\n\n", 400),
    "control byte": (_request(b"X: a\x01b"), 400),
    "bad method": (_request(line=b"G@T / HTTP/1.1"), 400),
    "two spaces": (_request(line=b"GET  / HTTP/1.1"), 400),
    "HTTP/2.0 line": (_request(line=b"GET / HTTP/2.0"), 400),
    "CL and TE": (_request(b"Content-Length: 3", b"Transfer-Encoding: chunked"), 400),
    "TE not last chunked": (_request(b"Transfer-Encoding: chunked, gzip"), 400),
    "Expect": (_request(b"Expect: tea"), 417),
    "long line": (_request(line=b"GET /" + b"a" * 5000 + b" HTTP/1.1"), 414),
    "big field": (_request(b"X: " + b"a" * 40_000), 431),
    "many fields": (_request(*(b"X-%d: y" % i for i in range(101))), 431),
    "big head": (_request(*(b"X-%d: " % i + b"a" * 30_000 for i in range(3))), 431),
    "xchunked": (_request(b"Transfer-Encoding: xchunked"), 501),
    "identity, chunked": (_request(b"Transfer-Encoding: identity, chunked", body=b"0\r\n\r\n"), 501),
    "chunked, identity": (_request(b"Transfer-Encoding: chunked, identity"), 501),
}


def _has_c_parser() -> bool:
    """True when gunicorn_h1c is importable (bin/test installs it where a compiler exists)."""
    try:
        import gunicorn_h1c  # noqa: F401
    except ImportError:
        return False
    return True


@pytest.mark.parametrize(
    "parser",
    ["python", pytest.param("fast", marks=pytest.mark.skipif(not _has_c_parser(), reason="no gunicorn_h1c"))],
)
def test_both_http_parsers_give_the_same_json_answers_and_limits(
    parser: str, module_issuer: LocalIssuer, module_gunicorn: ServerFactory
) -> None:
    """Python or C parser: the same statuses, JSON bodies and limits; the start-up log names it."""
    srv = module_gunicorn(module_issuer, workers=1, args=("--http-parser", parser))
    got = {}
    for name, (raw, status) in PARSER_CASES.items():
        answer = srv.send_raw(raw)
        got[name] = int(answer.split(b" ", 2)[1]) if answer.startswith(b"HTTP/1.1 ") else answer[:40]
        if status != 200 and got[name] == status:
            _json_refusal(answer, status)
    assert got == {name: status for name, (_, status) in PARSER_CASES.items()}
    logged = srv.wait_for_record(lambda r: str(r.get("event", "")).startswith("Using HTTP parser: "))
    assert logged and logged[0]["event"].split(": ", 1)[1].split(" ")[0] == parser, logged
