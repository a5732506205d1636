"""The operating signals across real gunicorn workers: JWKS health, token cache, build info."""

from __future__ import annotations

import secrets
import time

import pytest

from tests.support.helpers import eventually
from tests.support.helpers import get_many
from tests.support.helpers import statuses
from tests.support.helpers import warm
from tests.support.issuer import LocalIssuer
from tests.support.procs import ServerFactory
from tests.support.procs import metric_sum

pytestmark = pytest.mark.slow

WORKERS = 2
PRIVATE = "/api/private"


def test_jwks_health_and_build_info_are_exact_across_workers(
    issuer: LocalIssuer, gunicorn: ServerFactory
) -> None:
    """Key count, last success, fetch timings and build info read the same whichever worker."""
    started = time.time()
    server = gunicorn(
        issuer, workers=WORKERS, env={"SERVICE_VERSION": "1.2.3", "SERVICE_REVISION": "abc123"}
    )
    warm(server, issuer, WORKERS)
    for _ in range(2 * WORKERS):
        samples = server.metrics()
        # "max" across workers, never a sum: 1 key held by 2 workers is still 1 key.
        assert metric_sum(samples, "jwks_keys", issuer=issuer.url) == 1
        last = metric_sum(samples, "jwks_last_success_timestamp_seconds", issuer=issuer.url)
        assert started - 1 <= last <= time.time() + 1
        fetches = metric_sum(samples, "jwks_fetches_total")
        timed = metric_sum(samples, "jwks_fetch_duration_seconds_count", issuer=issuer.url)
        assert timed == fetches >= WORKERS
        assert metric_sum(samples, "service_build_info") == 1
        assert metric_sum(samples, "service_build_info", version="1.2.3", revision="abc123") == 1
    issuer.rotate(keep_old=True)
    time.sleep(1.2)  # past the unknown-kid cooldown (1 s in tests)
    rotated = issuer.mint()
    # One at a time: a request arriving while a worker's unknown-kid refresh runs gets its 401.
    assert eventually(
        lambda: all(server.get(PRIVATE, token=rotated).status == 200 for _ in range(4 * WORKERS)),
        timeout=10,
        interval=0,
    )
    assert eventually(
        lambda: metric_sum(server.metrics(), "jwks_keys", issuer=issuer.url) == 2, timeout=5
    )


def test_token_cache_lookups_count_every_hit_and_miss(
    module_issuer: LocalIssuer, gunicorn: ServerFactory
) -> None:
    """N requests with one token: N lookups, at most one miss per worker, the rest hits."""
    server = gunicorn(module_issuer, workers=WORKERS)
    warm(server, module_issuer, WORKERS)
    before = server.metrics()
    token = module_issuer.mint({"jti": secrets.token_hex(8)})  # unlike warm()'s token
    assert statuses(get_many(server, PRIVATE, [token] * 30, concurrency=6)) == [200] * 30
    after = server.metrics()

    def delta(result: str) -> float:
        name = "token_cache_requests_total"
        return metric_sum(after, name, result=result) - metric_sum(before, name, result=result)

    assert delta("hit") + delta("miss") == 30
    # Concurrent first uses in one worker may each miss before one of them fills the cache.
    assert 1 <= delta("miss") <= WORKERS * 6
    assert delta("hit") >= 30 - WORKERS * 6
    # Missing tokens are refused before any lookup.
    assert statuses(get_many(server, PRIVATE, [None] * 3)) == [401] * 3
    final = server.metrics()
    assert metric_sum(final, "token_cache_requests_total") == metric_sum(after, "token_cache_requests_total")
