"""Prometheus metrics across real gunicorn workers: exact counts, labels, multiproc dir lifecycle."""

from __future__ import annotations

import os
import secrets
import signal
import time
from collections import Counter

import pytest

from tests.support.helpers import eventually
from tests.support.helpers import get_many
from tests.support.helpers import parallel
from tests.support.helpers import statuses
from tests.support.helpers import warm
from tests.support.issuer import Key
from tests.support.issuer import LocalIssuer
from tests.support.procs import Server
from tests.support.procs import ServerFactory
from tests.support.procs import metric_sum
from tests.support.procs import parse_metrics

pytestmark = pytest.mark.slow

WORKERS = 3
PRIVATE = "/api/private"
SCOPED = "/api/private-scoped"


def _decisions(samples: list[tuple[str, dict[str, str], float]]) -> Counter[tuple[str, str, str]]:
    """auth_decisions_total as a Counter keyed by (route, outcome, reason)."""
    out: Counter[tuple[str, str, str]] = Counter()
    for name, labels, value in samples:
        if name == "auth_decisions_total":
            out[(labels["route"], labels["outcome"], labels["reason"])] += int(value)
    return out


def _mixed_traffic(issuer: LocalIssuer) -> tuple[list[tuple[str, str | None]], dict[str, int]]:
    """A shuffled request mix and the exact decision counts it must produce."""
    good = issuer.mint()
    no_scope = issuer.mint(scope=None)
    expired = issuer.mint(ttl=-600)
    forged = issuer.mint(key=Key.generate(), kid=issuer.current_key.kid)
    mix: list[tuple[str, str | None]] = (
        [(PRIVATE, good)] * 40
        + [(SCOPED, good)] * 10
        + [(PRIVATE, None)] * 10
        + [(PRIVATE, forged)] * 8
        + [(PRIVATE, expired)] * 7
        + [(SCOPED, no_scope)] * 6
    )
    order = list(range(len(mix)))
    secrets.SystemRandom().shuffle(order)
    expected = {"allow": 50, "deny": 31, "private_allow": 40, "scoped_allow": 10, "scoped_deny": 6}
    return [mix[i] for i in order], expected


def _send(server: Server, mix: list[tuple[str, str | None]]) -> list[int]:
    """Send the mix in parallel, each on a new connection so every worker gets some."""
    return parallel(lambda i: server.get(mix[i][0], token=mix[i][1]).status, len(mix), concurrency=16)


@pytest.fixture(scope="module")
def server(module_issuer: LocalIssuer, module_gunicorn: ServerFactory) -> Server:
    """Three workers sharing one multiproc dir."""
    return module_gunicorn(module_issuer, workers=WORKERS)


def test_counts_are_exact_whichever_worker_answers(server: Server, module_issuer: LocalIssuer) -> None:
    """K allowed and M denied requests over several workers show up as exactly K and M."""
    warm(server, module_issuer, WORKERS)
    before = _decisions(server.metrics())
    before_http = server.metrics()
    served_before = server.per_worker("auth_decisions_total")
    mix, expected = _mixed_traffic(module_issuer)
    got = _send(server, mix)
    assert Counter(got) == Counter({200: 50, 401: 25, 403: 6}), Counter(got)
    assert server.metrics_dir is not None
    served = server.per_worker("auth_decisions_total")
    spread = [pid for pid, v in served.items() if v > served_before.get(pid, 0)]
    assert len(spread) >= 2, f"traffic did not spread over workers: {served_before} -> {served}"
    for _ in range(2 * WORKERS):
        samples = server.metrics()
        delta = _decisions(samples) - before
        allow = sum(v for (_, outcome, _), v in delta.items() if outcome == "allow")
        deny = sum(v for (_, outcome, _), v in delta.items() if outcome == "deny")
        assert (allow, deny) == (expected["allow"], expected["deny"]), delta
        assert delta[(PRIVATE, "allow", "ok")] == expected["private_allow"], delta
        assert delta[(SCOPED, "allow", "ok")] == expected["scoped_allow"], delta
        assert delta[(SCOPED, "deny", "insufficient_scope")] == expected["scoped_deny"], delta
        assert delta[(PRIVATE, "deny", "missing_token")] == 10, delta
        assert delta[(PRIVATE, "deny", "expired")] == 7, delta
        assert delta[(PRIVATE, "deny", "bad_signature")] == 8, delta
        http_ok = metric_sum(
            samples, "http_requests_total", route=PRIVATE, method="GET", status="200"
        ) - metric_sum(before_http, "http_requests_total", route=PRIVATE, method="GET", status="200")
        assert http_ok == 40
        hist = metric_sum(samples, "auth_decision_duration_seconds_count", route=PRIVATE)
        hist_before = metric_sum(before_http, "auth_decision_duration_seconds_count", route=PRIVATE)
        assert hist - hist_before == 40 + 10 + 8 + 7


def test_labels_are_route_templates_never_raw_paths_or_subjects(
    server: Server, module_issuer: LocalIssuer
) -> None:
    """Unknown paths, query strings and token subjects never become label values."""
    marker = "zq" + secrets.token_hex(6)
    token = module_issuer.mint({"sub": f"auth0|{marker}", "azp": f"client-{marker}"})
    paths = [
        f"/api/private?{marker}=1",
        f"/api/private/{marker}",
        f"/{marker}",
        f"/api/public/{marker}/x",
        f"/api/{marker}",
    ]
    for path in paths:
        resp = server.get(path, token=token)
        assert resp.status < 500, (path, resp.status)
    assert server.get(PRIVATE, token=token).status == 200
    text = server.get("/metrics").body.decode()
    assert marker not in text
    routes = {labels["route"] for _, labels, _ in parse_metrics(text) if "route" in labels}
    assert PRIVATE in routes
    for route in routes:
        assert "?" not in route and len(route) < 64, route
    assert len(routes) <= 12, routes


def test_metrics_output_is_prometheus_text(server: Server) -> None:
    """/metrics answers with the Prometheus text content type and parses."""
    resp = server.get("/metrics")
    assert resp.status == 200
    assert (resp.header("Content-Type") or "").startswith("text/plain")
    names = {name for name, _, _ in parse_metrics(resp.body.decode())}
    for expected in (
        "auth_decisions_total",
        "auth_decision_duration_seconds_bucket",
        "jwks_fetches_total",
        "http_requests_total",
        "http_request_duration_seconds_bucket",
    ):
        assert expected in names, expected


def test_jwks_fetch_outcomes_are_counted(issuer: LocalIssuer, gunicorn: ServerFactory) -> None:
    """Successful fetches match what the issuer served; a failed refresh counts as error.

    While the issuer fails, an unknown kid cannot be decided: 503 with reason keys_pending
    (docs/jwks-cache.md), and the refresh it asked for is counted as an error.
    """
    server = gunicorn(issuer, workers=2, env={"AUTH0_JWKS_COOLDOWN": "1"})
    warm(server, issuer, 2)
    samples = server.metrics()
    success = metric_sum(samples, "jwks_fetches_total", outcome="success")
    # Discovery documents may or may not be counted as fetches; JWKS downloads must be.
    assert issuer.jwks_fetches <= success <= issuer.jwks_fetches + issuer.discovery_fetches
    assert metric_sum(samples, "jwks_fetches_total", outcome="error") == 0
    issuer.go_down()
    time.sleep(1.2)
    unknown = issuer.mint(key=Key.generate())
    assert statuses(get_many(server, PRIVATE, [unknown] * 6, concurrency=3)) == [503] * 6
    assert eventually(
        lambda: metric_sum(server.metrics(), "jwks_fetches_total", outcome="error") >= 1, timeout=5
    )
    assert metric_sum(server.metrics(), "auth_decisions_total", reason="keys_pending") == 6
    issuer.come_up()


def test_multiproc_dir_is_wiped_at_start(issuer: LocalIssuer, gunicorn: ServerFactory) -> None:
    """A restart on the same directory starts from zero, ignoring a previous run's files."""
    metrics_dir = gunicorn.metrics_dir()
    first = gunicorn(issuer, workers=2, metrics_dir=metrics_dir)
    token = issuer.mint()
    assert statuses(get_many(first, PRIVATE, [token] * 12, concurrency=4)) == [200] * 12
    assert metric_sum(first.metrics(), "auth_decisions_total", outcome="allow") == 12
    assert first.terminate() == 0
    # A leftover from a crashed run with a reused pid; an unwiped dir would fail or double count.
    (metrics_dir / "counter_999999.db").write_bytes(b"\0" * 64)
    second = gunicorn(issuer, workers=2, metrics_dir=metrics_dir)
    assert not (metrics_dir / "counter_999999.db").exists()
    assert metric_sum(second.metrics(), "auth_decisions_total") == 0
    assert second.get(PRIVATE, token=token).status == 200
    assert metric_sum(second.metrics(), "auth_decisions_total", outcome="allow") == 1


def test_counts_exact_without_preset_multiproc_dir(issuer: LocalIssuer, gunicorn: ServerFactory) -> None:
    """With PROMETHEUS_MULTIPROC_DIR unset, gunicorn.conf.py provides one and counts stay exact."""
    server = gunicorn(issuer, workers=WORKERS, env={"PROMETHEUS_MULTIPROC_DIR": None})
    token = issuer.mint()
    got = statuses(get_many(server, PRIVATE, [token] * 45 + [None] * 15, concurrency=16))
    assert Counter(got) == Counter({200: 45, 401: 15})
    for _ in range(2 * WORKERS):
        samples = server.metrics()
        assert metric_sum(samples, "auth_decisions_total", outcome="allow") == 45
        assert metric_sum(samples, "auth_decisions_total", outcome="deny") == 15


def test_killed_worker_is_replaced_and_counts_survive(issuer: LocalIssuer, gunicorn: ServerFactory) -> None:
    """SIGKILL a worker: the master replaces it, marks it dead, and totals keep its counts."""
    server = gunicorn(issuer, workers=2)
    token = issuer.mint()
    assert statuses(get_many(server, PRIVATE, [token] * 30, concurrency=10)) == [200] * 30
    assert server.metrics_dir is not None
    server.wait_workers(2)
    served = server.per_worker("auth_decisions_total")
    # Kill the worker that answered most, so its counts must survive its death.
    victim = max(served, key=lambda pid: served[pid])
    assert served[victim] > 0
    os.kill(victim, signal.SIGKILL)
    assert eventually(lambda: victim not in server.workers() and len(server.workers()) == 2, timeout=15), (
        f"master did not replace worker {victim}: {server.workers()}"
    )
    server.wait_ready()
    assert server.alive()
    for _ in range(4):
        samples = server.metrics()
        assert metric_sum(samples, "auth_decisions_total", outcome="allow") == 30
    live = [p.name for p in server.metrics_dir.glob(f"gauge_live*_{victim}.db")]
    assert not live, f"dead worker's live gauges not removed: {live}"
    assert server.get(PRIVATE, token=token).status == 200
