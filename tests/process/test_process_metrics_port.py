"""METRICS_PORT: /metrics from the gunicorn master on its own port, exact over workers; 404 on the app."""

from __future__ import annotations

import os
import signal
import socket
from pathlib import Path

import pytest

from tests.support.helpers import eventually
from tests.support.helpers import get_many
from tests.support.helpers import statuses
from tests.support.helpers import warm
from tests.support.issuer import LocalIssuer
from tests.support.procs import ServerFactory
from tests.support.procs import free_port
from tests.support.procs import http_get
from tests.support.procs import metric_sum
from tests.support.procs import parse_metrics
from tests.support.procs import run_to_exit
from tests.support.procs import service_env

pytestmark = pytest.mark.slow

WORKERS = 2


def _scrape(port: int) -> list[tuple[str, dict[str, str], float]]:
    """Scrape the metrics port (asserting 200 and the Prometheus text format)."""
    resp = http_get(port, "/metrics")
    assert resp.status == 200, resp.body[:300]
    assert (resp.header("Content-Type") or "").startswith("text/plain")
    return parse_metrics(resp.body.decode())


def test_metrics_move_to_their_port_and_stay_exact(issuer: LocalIssuer, gunicorn: ServerFactory) -> None:
    metrics_port = free_port()
    server = gunicorn(issuer, workers=WORKERS, env={"METRICS_PORT": str(metrics_port)})
    # The app port no longer serves them, whichever worker answers.
    for resp in get_many(server, "/metrics", [None] * 6, concurrency=3):
        assert resp.status == 404 and b"auth_decisions_total" not in resp.body
    # Every worker serves (and counts) some traffic: the totals must still be exact.
    warm(server, issuer, WORKERS)
    before = _scrape(metrics_port)
    token = issuer.mint()
    mix = [token] * 24 + [None] * 9
    assert sorted(statuses(get_many(server, "/api/private", mix, concurrency=8))) == [200] * 24 + [401] * 9
    for _ in range(3):
        samples = _scrape(metrics_port)
        for outcome, expected in (("allow", 24), ("deny", 9)):
            delta = metric_sum(samples, "auth_decisions_total", outcome=outcome) - metric_sum(
                before, "auth_decisions_total", outcome=outcome
            )
            assert delta == expected, (outcome, delta)
        assert metric_sum(samples, "http_requests_total", route="unmatched", status="404") == 6
    total = metric_sum(_scrape(metrics_port), "auth_decisions_total")
    served = server.per_worker("auth_decisions_total")
    assert sum(served.values()) == total and all(served.values()), served
    # Only /metrics is served there; the API is not.
    assert http_get(metrics_port, "/api/public").status == 404
    assert http_get(metrics_port, "/metrics", method="POST").status == 405
    # A dead worker's counts survive, and the master keeps serving while it is replaced.
    victim = max(served, key=lambda pid: served[pid])
    os.kill(victim, signal.SIGKILL)
    assert eventually(lambda: victim not in server.workers() and len(server.workers()) == WORKERS, timeout=15)
    assert metric_sum(_scrape(metrics_port), "auth_decisions_total") == total
    assert server.terminate() == 0


def test_metrics_port_listens_on_the_apps_interface(issuer: LocalIssuer, gunicorn: ServerFactory) -> None:
    """Bound like the app (loopback here), never on every interface when the app is not."""
    metrics_port = free_port()
    server = gunicorn(issuer, workers=1, env={"METRICS_PORT": str(metrics_port)})
    listening = [
        line.split()[1]
        for line in Path("/proc/net/tcp").read_text().splitlines()[1:]
        if line.split()[3] == "0A" and int(line.split()[1].split(":")[1], 16) == metrics_port
    ]
    assert listening == [f"0100007F:{metrics_port:04X}"], listening
    assert server.get("/healthz").status == 200


@pytest.mark.parametrize(
    ("value", "message"),
    [("http", "METRICS_PORT"), ("70000", "METRICS_PORT"), ("-1", "METRICS_PORT")],
)
def test_bad_metrics_port_stops_start_with_one_line(
    issuer: LocalIssuer, tmp_path: Path, value: str, message: str
) -> None:
    env = service_env(issuer, tmp_path / "prom", {"METRICS_PORT": value})
    code, _, stderr = run_to_exit(env, log_dir=tmp_path / "logs")
    assert code == 78, stderr
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and message in lines[0], stderr


def test_busy_metrics_port_stops_start_with_one_line(issuer: LocalIssuer, tmp_path: Path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        env = service_env(issuer, tmp_path / "prom", {"METRICS_PORT": str(port)})
        code, _, stderr = run_to_exit(env, log_dir=tmp_path / "logs")
    assert code == 78, stderr
    assert "METRICS_PORT" in stderr and str(port) in stderr
