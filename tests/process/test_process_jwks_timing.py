"""The JWKS cache's timing guarantees, through real gunicorn workers and a real local issuer.

Removal within TTL + one round trip, RETRY only after failures, max-stale, no request held by a
hanging issuer, keys fetched at worker start. The guarantees are stated in docs/jwks-cache.md.
"""

from __future__ import annotations

import statistics
import time

import pytest

from tests.support.helpers import eventually
from tests.support.helpers import get_many
from tests.support.helpers import statuses
from tests.support.helpers import warm
from tests.support.issuer import LocalIssuer
from tests.support.kid_flood import SIEGE_ENV
from tests.support.kid_flood import siege
from tests.support.procs import Response
from tests.support.procs import Server
from tests.support.procs import ServerFactory
from tests.support.procs import metric_sum

pytestmark = pytest.mark.slow

WORKERS = 2


def _all_status(server: Server, token: str, n: int = 20) -> list[int]:
    """Statuses of n parallel protected requests with one token."""
    return statuses(get_many(server, "/api/private", [token] * n, concurrency=5))


def _assert_unavailable(resp: Response) -> None:
    """A 503 temporarily_unavailable with Retry-After."""
    assert resp.status == 503, (resp.status, resp.body[:300])
    assert resp.header("Retry-After"), resp.headers
    assert resp.json()["error"] == "temporarily_unavailable"


@pytest.mark.parametrize(
    "env, cache_control, ttl",
    [
        ({"AUTH0_JWKS_TTL": "1", "AUTH0_JWKS_RETRY": "5", "AUTH0_JWKS_COOLDOWN": "1"}, None, 1),
        ({"AUTH0_JWKS_TTL": "600", "AUTH0_JWKS_RETRY": "5", "AUTH0_JWKS_COOLDOWN": "1"}, "max-age=2", 2),
    ],
    ids=["ttl_1_retry_5", "max_age_2_retry_5"],
)
def test_removed_key_stops_within_the_ttl_and_failed_refreshes_are_counted_at_once(
    issuer: LocalIssuer, gunicorn: ServerFactory, env: dict[str, str], cache_control: str | None, ttl: int
) -> None:
    """RETRY never stretches the TTL: removal takes effect, then a 503 issuer is noticed, on time."""
    issuer.cache_control = cache_control
    server = gunicorn(issuer, workers=WORKERS, env=env)
    warm(server, issuer, WORKERS)
    removed = issuer.mint()
    issuer.rotate(keep_old=False)
    kept = issuer.mint()
    time.sleep(ttl + 1.5)
    # Never 200 again. A request may meet a routine refresh in flight and wait for it; past the
    # worker's waiting seats that is 503 keys_pending (docs/jwks-cache.md), otherwise 401.
    removed_statuses = _all_status(server, removed)
    assert set(removed_statuses) <= {401, 503} and 401 in removed_statuses, (
        "a removed key outlived TTL + one round trip",
        removed_statuses,
    )
    assert _all_status(server, kept) == [200] * 20

    errors_before = server.per_worker("jwks_fetches_total", outcome="error")
    issuer.serve_raw(b'{"error": "unavailable"}', 503, {"Content-Type": "application/json"})
    time.sleep(ttl + 1.5)
    # The last good keys keep serving; a known kid never gets a 503 during the outage.
    assert _all_status(server, kept) == [200] * 20
    assert all(server.get("/readyz").status == 200 for _ in range(6))
    errors = server.per_worker("jwks_fetches_total", outcome="error")
    assert all(errors[pid] > errors_before.get(pid, 0) for pid in errors), (errors_before, errors)
    failures = server.wait_for_record(lambda r: r.get("event") == "jwks_fetch_failed")
    assert failures and "HTTP 503" in failures[-1]["error"], failures


def test_key_set_past_max_stale_is_dropped_until_a_fetch_succeeds(
    issuer: LocalIssuer, gunicorn: ServerFactory
) -> None:
    """Last good keys serve through an outage for AUTH0_JWKS_MAX_STALE past the TTL, then 503."""
    ttl, max_stale = 1, 3
    env = {"AUTH0_JWKS_TTL": str(ttl), "AUTH0_JWKS_MAX_STALE": str(max_stale), "AUTH0_JWKS_RETRY": "1"}
    server = gunicorn(issuer, workers=WORKERS, env=env)
    warm(server, issuer, WORKERS)
    token = issuer.mint()
    issuer.serve_raw(b"broken", 500)
    outage = time.monotonic()
    time.sleep(1.5)
    assert _all_status(server, token) == [200] * 20, "stale keys within max-stale must still serve"
    # The last success came at most ~TTL before the outage: dropped by outage + TTL + max-stale.
    time.sleep(max(0.0, outage + ttl + max_stale + 1.0 - time.monotonic()))
    for resp in get_many(server, "/api/private", [token] * 10, concurrency=5):
        _assert_unavailable(resp)
    assert all(server.get("/readyz").status == 503 for _ in range(6))
    issuer.serve_raw(None)
    assert eventually(lambda: all(server.get("/readyz").status == 200 for _ in range(6)), timeout=6)
    assert _all_status(server, token) == [200] * 20


def test_hanging_issuer_and_unknown_kid_attackers_never_hold_cached_tokens_hostage(
    issuer: LocalIssuer, gunicorn: ServerFactory
) -> None:
    """JWKS endpoint hangs, 8 unknown-kid attackers for 10 s: cached valid tokens stay fast and 200.

    The attackers get 401 (unknown once a fetch ended without their kid) or 503 (no seat left to
    wait in, or the issuer failing), never anything else.
    """
    server = gunicorn(issuer, workers=WORKERS, env=SIEGE_ENV)
    warm(server, issuer, WORKERS)
    outcome = siege(server, issuer, seconds=10.0, attackers=8)
    results = outcome.cached
    bad = [status for status, _ in results if status != 200]
    assert results and not bad, f"{len(bad)} non-200 of {len(results)}: {sorted(set(bad))}"
    median = statistics.median(elapsed for _, elapsed in results)
    assert median < 0.05, f"median {median * 1000:.1f} ms over {len(results)} requests"
    assert outcome.attacked and set(outcome.attacked) <= {"401", "503"}, outcome.attacked


def test_every_worker_holds_keys_before_its_first_protected_request(
    issuer: LocalIssuer, gunicorn: ServerFactory
) -> None:
    """4 workers fetch at start, in the background: the first request each serves needs no fetch."""
    workers = 4
    server = gunicorn(issuer, workers=workers, env={"AUTH0_JWKS_TTL": "600", "AUTH0_JWKS_COOLDOWN": "30"})
    pids = server.workers()
    assert eventually(lambda: issuer.jwks_fetches == workers, timeout=10), issuer.jwks_fetches
    fetched = server.per_worker("jwks_fetches_total", outcome="success")
    assert fetched == {pid: 1.0 for pid in pids}, fetched
    token = issuer.mint()

    def every_worker_served() -> bool:
        assert _all_status(server, token, 4 * workers) == [200] * 4 * workers
        served = server.per_worker("auth_decisions_total", outcome="allow")
        return all(served.get(pid, 0) >= 1 for pid in pids)

    assert eventually(every_worker_served, timeout=15, interval=0)
    assert issuer.jwks_fetches == workers, "a worker's first protected request had to fetch"
    assert server.per_worker("jwks_fetches_total", outcome="success") == fetched
    assert metric_sum(server.metrics(), "jwks_fetches_total", outcome="error") == 0
    assert server.workers() == pids
