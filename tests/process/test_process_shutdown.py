"""SIGTERM handling of the real gunicorn process: in-flight requests finish, exit 0, on time."""

from __future__ import annotations

import threading
import time

import pytest

from tests.support.issuer import LocalIssuer
from tests.support.procs import Response
from tests.support.procs import ServerFactory
from tests.support.procs import read_json_lines

pytestmark = pytest.mark.slow

GRACEFUL = 10


def test_sigterm_lets_an_in_flight_request_finish(issuer: LocalIssuer, gunicorn: ServerFactory) -> None:
    """A request slowed by a cold-cache JWKS fetch completes with 200 after SIGTERM; exit 0."""
    issuer.delay = 3.0
    server = gunicorn(
        issuer,
        workers=1,
        env={"AUTH0_HTTP_TIMEOUT": "8", "GUNICORN_GRACEFUL_TIMEOUT": str(GRACEFUL)},
    )
    token = issuer.mint()
    result: dict[str, Response | BaseException] = {}

    def call() -> None:
        try:
            result["resp"] = server.get("/api/private", token=token, timeout=30)
        except BaseException as exc:  # reported by the assertion below
            result["resp"] = exc

    thread = threading.Thread(target=call, daemon=True)
    thread.start()
    assert issuer.wait_for_fetches(1, timeout=5), "request never reached the JWKS fetch"
    time.sleep(0.3)  # the worker is now blocked inside the delayed fetch
    sent = time.monotonic()
    server.signal(15)
    code = server.proc.wait(timeout=GRACEFUL + 10)
    took = time.monotonic() - sent
    thread.join(timeout=10)
    resp = result.get("resp")
    assert isinstance(resp, Response), f"in-flight request failed: {resp!r}"
    assert resp.status == 200, resp.body[:300]
    assert code == 0, server.output()[-2000:]
    assert took < GRACEFUL + 2, took
    _, bad = read_json_lines(server.stdout_path)
    assert not bad, bad[:5]


def test_sigterm_on_idle_server_exits_zero_promptly(issuer: LocalIssuer, gunicorn: ServerFactory) -> None:
    """An idle two-worker server exits 0 well within graceful_timeout."""
    server = gunicorn(issuer, workers=2)
    assert server.get("/api/private", token=issuer.mint()).status == 200
    sent = time.monotonic()
    assert server.terminate(timeout=GRACEFUL + 10) == 0
    assert time.monotonic() - sent < 5
    assert "Traceback" not in server.output()


def test_no_new_connections_after_shutdown(issuer: LocalIssuer, gunicorn: ServerFactory) -> None:
    """Once the master has exited the port no longer answers (no orphaned workers)."""
    server = gunicorn(issuer, workers=2)
    workers = server.workers()
    assert server.terminate() == 0
    with pytest.raises(OSError):
        server.get("/healthz", timeout=2)
    for pid in workers:
        try:
            stat = open(f"/proc/{pid}/stat").read()
        except OSError:
            continue
        assert stat.rsplit(")", 1)[1].split()[0] == "Z", f"worker {pid} outlived the master"
