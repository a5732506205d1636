"""The per-worker JWKS cache, driven through real gunicorn workers against a real local issuer."""

from __future__ import annotations

import json
import time

import pytest

from tests.support.helpers import eventually
from tests.support.helpers import get_many
from tests.support.helpers import statuses
from tests.support.helpers import warm
from tests.support.issuer import Key
from tests.support.issuer import LocalIssuer
from tests.support.procs import Response
from tests.support.procs import Server
from tests.support.procs import ServerFactory
from tests.support.procs import metric_sum

pytestmark = pytest.mark.slow

WORKERS = 2


def _random_kid_tokens(issuer: LocalIssuer, n: int) -> list[str | None]:
    """n tokens, each signed by a key with its own unpublished kid."""
    key = Key.generate()
    # One RSA key, many kids: generating 100 RSA keys would dominate the test's run time.
    return [issuer.mint(key=key, kid=f"random-{i}-{time.monotonic_ns()}") for i in range(n)]


def _assert_unavailable(resp: Response) -> None:
    """A 503 temporarily_unavailable with Retry-After (the client did nothing wrong)."""
    assert resp.status == 503, (resp.status, resp.body[:300])
    assert resp.header("Retry-After"), resp.headers
    assert resp.json()["error"] == "temporarily_unavailable"


def _wait_all_ok(server: Server, token: str, *, timeout: float, run: int = 10) -> bool:
    """True once `run` consecutive protected requests succeed, within `timeout`."""
    return eventually(
        lambda: statuses(get_many(server, "/api/private", [token] * run, concurrency=5)) == [200] * run,
        timeout=timeout,
        interval=0.2,
    )


def _wait_all_rejected(server: Server, token: str, *, timeout: float, run: int = 10) -> bool:
    """True once `run` consecutive protected requests get 401, within `timeout`."""
    return eventually(
        lambda: statuses(get_many(server, "/api/private", [token] * run, concurrency=5)) == [401] * run,
        timeout=timeout,
        interval=0.2,
    )


@pytest.fixture(scope="module")
def steady(module_issuer: LocalIssuer, module_gunicorn: ServerFactory) -> Server:
    """Two workers, TTL 600 s, cooldown 30 s: fetch counts under load."""
    return module_gunicorn(
        module_issuer,
        workers=WORKERS,
        env={"AUTH0_JWKS_TTL": "600", "AUTH0_JWKS_COOLDOWN": "30"},
    )


class TestSteadyState:
    """One long-TTL, long-cooldown server shared by these tests (run in order)."""

    @pytest.fixture
    def server(self, steady: Server) -> Server:
        """The shared steady-state server."""
        return steady

    def test_cold_burst_of_random_kids_is_single_flight_per_worker(
        self, server: Server, module_issuer: LocalIssuer
    ) -> None:
        """100 parallel unknown-kid requests, cold cache: at most one fetch per worker, all 401."""
        module_issuer.reset_counts()
        responses = get_many(server, "/api/private", _random_kid_tokens(module_issuer, 100), concurrency=50)
        assert statuses(responses) == [401] * 100
        for resp in responses:
            assert 'error="invalid_token"' in (resp.header("WWW-Authenticate") or "")
        assert module_issuer.jwks_fetches <= WORKERS

    def test_known_kid_needs_at_most_one_fetch_per_worker(
        self, server: Server, module_issuer: LocalIssuer
    ) -> None:
        """Hundreds of requests with a published kid never refetch within the TTL."""
        warm(server, module_issuer, WORKERS)
        module_issuer.reset_counts()
        token = module_issuer.mint()
        assert statuses(get_many(server, "/api/private", [token] * 200, concurrency=20)) == [200] * 200
        assert module_issuer.jwks_fetches == 0

    def test_random_kids_within_cooldown_cause_no_new_fetch_storm(
        self, server: Server, module_issuer: LocalIssuer
    ) -> None:
        """Two warm bursts of 100 random kids: at most one refresh per worker overall, all 401."""
        warm(server, module_issuer, WORKERS)
        module_issuer.reset_counts()
        for _ in range(2):
            got = statuses(
                get_many(server, "/api/private", _random_kid_tokens(module_issuer, 100), concurrency=50)
            )
            assert got == [401] * 100
        assert module_issuer.jwks_fetches <= WORKERS
        # The known key is still served from the cache afterwards.
        assert server.get("/api/private", token=module_issuer.mint()).status == 200

    def test_jwks_fetches_metric_counts_successes(self, server: Server, module_issuer: LocalIssuer) -> None:
        """Successful fetches show in jwks_fetches_total{outcome="success"}; none failed."""
        samples = server.metrics()
        assert metric_sum(samples, "jwks_fetches_total", outcome="success") >= 1
        assert metric_sum(samples, "jwks_fetches_total", outcome="error") == 0


def test_rotation_is_accepted_without_restart(issuer: LocalIssuer, gunicorn: ServerFactory) -> None:
    """A newly published key works once the cooldown allows a refresh; the old one still works.

    Requests are sent one at a time until every worker has refreshed (concurrent requests during
    one refresh: tests/process/test_process_jwks_rotation.py).
    """
    server = gunicorn(issuer, workers=WORKERS, env={"AUTH0_JWKS_COOLDOWN": "1"})
    warm(server, issuer, WORKERS)
    old_token = issuer.mint()
    issuer.rotate(keep_old=True)
    new_token = issuer.mint()
    time.sleep(1.2)
    assert eventually(
        lambda: all(server.get("/api/private", token=new_token).status == 200 for _ in range(10)),
        timeout=10,
        interval=0,
    ), "the rotated key was not picked up by an unknown-kid refresh"
    assert statuses(get_many(server, "/api/private", [new_token] * 20, concurrency=5)) == [200] * 20
    assert statuses(get_many(server, "/api/private", [old_token] * 10, concurrency=5)) == [200] * 10
    assert server.workers() and server.alive()


def test_issuer_down_at_start_then_recovers(issuer: LocalIssuer, gunicorn: ServerFactory) -> None:
    """No keys ever: public 200, protected 503 + Retry-After, /readyz 503; heals by itself."""
    issuer.go_down()
    server = gunicorn(issuer, workers=WORKERS, env={"AUTH0_JWKS_COOLDOWN": "1", "AUTH0_HTTP_TIMEOUT": "1"})
    token = issuer.mint()
    assert server.get("/api/public").status == 200
    assert server.get("/healthz").status == 200
    for path in ("/api/private", "/api/private-scoped"):
        _assert_unavailable(server.get(path, token=token))
    assert server.get("/readyz").status == 503
    workers_before = server.workers()
    assert len(workers_before) == WORKERS
    samples = server.metrics()
    assert metric_sum(samples, "auth_decisions_total", reason="keys_unavailable") >= 2
    issuer.come_up()
    assert eventually(
        lambda: all(server.get("/readyz").status == 200 for _ in range(6)), timeout=10, interval=0.3
    ), "/readyz did not recover after the issuer came up"
    assert _wait_all_ok(server, token, timeout=5)
    assert server.workers() == workers_before, "workers were restarted instead of recovering"


BAD_BODIES = {
    "not_json": (b"{this is not json", 200),
    "not_an_object": (b'["keys"]', 200),
    "keys_not_a_list": (b'{"keys": "nope"}', 200),
    "empty_key_set": (b'{"keys": []}', 200),
    "only_symmetric_keys": (b'{"keys": [{"kty": "oct", "kid": "s", "k": "c2VjcmV0"}]}', 200),
    "rsa_key_missing_modulus": (b'{"keys": [{"kty": "RSA", "kid": "m", "e": "AQAB"}]}', 200),
    "server_error": (b'{"keys": []}', 500),
    "huge": (b'{"keys": [], "pad": "' + b"x" * (2 * 1024 * 1024) + b'"}', 200),
    "only_malformed_entries": (b'{"keys": [{"kty": ["RSA"], "kid": "x"}, {"kty": "RSA", "n": 1}]}', 200),
    "deeply_nested": (b'{"keys": ' + b"[" * 100_000 + b"]" * 100_000 + b"}", 200),
}


def test_bad_jwks_is_a_failed_fetch_not_a_crash(issuer: LocalIssuer, gunicorn: ServerFactory) -> None:
    """Each broken JWKS response yields 503 (nothing cached) or stale keys (cached), never a 500."""
    issuer.serve_raw(*BAD_BODIES["not_json"])
    # Near-zero cooldown/retry spacing so each request may try again without a long sleep.
    server = gunicorn(
        issuer,
        workers=1,
        env={"AUTH0_JWKS_COOLDOWN": "0.1", "AUTH0_JWKS_RETRY": "0.1", "AUTH0_JWKS_TTL": "1"},
    )
    workers = server.workers()
    token = issuer.mint()
    for name, (body, status) in BAD_BODIES.items():
        issuer.serve_raw(body, status, {"Content-Type": "application/json"})
        before = issuer.jwks_fetches
        time.sleep(0.15)
        resp = server.get("/api/private", token=token)
        assert resp.status == 503, (name, resp.status, resp.body[:200])
        assert issuer.jwks_fetches > before, f"{name}: no fetch attempted"
        assert server.get("/readyz").status == 503, name
        assert server.workers() == workers, f"{name}: worker died"
    assert metric_sum(server.metrics(), "jwks_fetches_total", outcome="error") >= len(BAD_BODIES)
    # A good response heals it; a later broken one leaves the last good keys in use.
    issuer.serve_raw(None)
    assert _wait_all_ok(server, token, timeout=5)
    for name in ("not_json", "empty_key_set", "huge"):
        issuer.serve_raw(*BAD_BODIES[name])
        time.sleep(1.1)  # past the 1 s TTL, so a refresh is due
        assert server.get("/api/private", token=token).status == 200, name
        assert server.get("/readyz").status == 200, name
    assert server.workers() == workers


def test_malformed_entries_are_skipped_and_a_malformed_document_keeps_the_last_good_set(
    issuer: LocalIssuer, gunicorn: ServerFactory
) -> None:
    """A `"kty": ["RSA"]` entry beside the valid key is skipped; a nested document is a failed fetch."""
    hostile = [{"kty": ["RSA"], "kid": "list-kty"}, {**issuer.new_key().public_jwk, "n": 12345}, [[[]]], None]
    doc = {"keys": [*hostile, issuer.current_key.public_jwk]}
    issuer.serve_raw(json.dumps(doc).encode(), 200, {"Content-Type": "application/json"})
    server = gunicorn(issuer, workers=WORKERS, env={"AUTH0_JWKS_TTL": "1", "AUTH0_JWKS_RETRY": "1"})
    warm(server, issuer, WORKERS)
    token = issuer.mint()
    assert all(server.get("/readyz").status == 200 for _ in range(6))
    issuer.serve_raw(*BAD_BODIES["deeply_nested"])
    assert eventually(
        lambda: all(v >= 1 for v in server.per_worker("jwks_fetches_total", outcome="error").values()),
        timeout=5,
    ), "the nested document was not counted as a failed fetch in every worker"
    assert statuses(get_many(server, "/api/private", [token] * 20, concurrency=5)) == [200] * 20
    assert all(server.get("/readyz").status == 200 for _ in range(6))
    failures = server.wait_for_record(lambda r: r.get("event") == "jwks_fetch_failed")
    assert failures and "not valid JSON" in failures[-1]["error"], failures
    assert server.workers() and server.alive()


def test_fetch_timeout_is_honoured(issuer: LocalIssuer, gunicorn: ServerFactory) -> None:
    """A JWKS endpoint slower than AUTH0_HTTP_TIMEOUT gives a prompt 503, not a hung request."""
    issuer.delay = 4.0
    server = gunicorn(issuer, workers=1, env={"AUTH0_HTTP_TIMEOUT": "1", "AUTH0_JWKS_COOLDOWN": "1"})
    token = issuer.mint()
    resp = server.get("/api/private", token=token)
    _assert_unavailable(resp)
    # Timeout 1 s; allow a discovery fallback attempt plus scheduling slack, but well under 4 s.
    assert resp.elapsed < 3.5, resp.elapsed
    issuer.delay = 0.0
    assert _wait_all_ok(server, token, timeout=6)


def test_jwks_uri_override_skips_discovery(issuer: LocalIssuer, gunicorn: ServerFactory) -> None:
    """With AUTH0_JWKS_URI set, keys load from it and discovery is never consulted."""
    issuer.serve_raw_discovery(b"broken", 500)
    server = gunicorn(issuer, workers=1, env={"AUTH0_JWKS_URI": issuer.jwks_uri})
    assert server.get("/api/private", token=issuer.mint()).status == 200
    assert issuer.discovery_fetches == 0


def test_discovery_failure_falls_back_to_well_known_jwks(
    issuer: LocalIssuer, gunicorn: ServerFactory
) -> None:
    """Without discovery the service falls back to {issuer}.well-known/jwks.json."""
    issuer.serve_raw_discovery(b'{"error": "not_found"}', 404)
    server = gunicorn(issuer, workers=1)
    assert server.get("/api/private", token=issuer.mint()).status == 200
    assert issuer.jwks_fetches >= 1


def test_stale_refresh_does_not_make_requests_wait(issuer: LocalIssuer, gunicorn: ServerFactory) -> None:
    """Once the key set is stale and the issuer is slow, known-kid requests still answer fast."""
    server = gunicorn(
        issuer,
        workers=1,
        env={"AUTH0_JWKS_TTL": "1", "AUTH0_JWKS_COOLDOWN": "1", "AUTH0_HTTP_TIMEOUT": "5"},
    )
    token = issuer.mint()
    assert server.get("/api/private", token=token).status == 200
    issuer.delay = 3.0
    time.sleep(1.3)
    slowest = 0.0
    for _ in range(10):
        resp = server.get("/api/private", token=token)
        assert resp.status == 200
        slowest = max(slowest, resp.elapsed)
    assert slowest < 1.5, f"a request waited {slowest:.2f}s on the background refresh"
    issuer.delay = 0.0


def test_fresh_instance_becomes_ready_by_itself(issuer: LocalIssuer, gunicorn: ServerFactory) -> None:
    """/readyz loads the key set on its own: ready without any API traffic."""
    server = gunicorn(issuer, workers=2)
    assert eventually(
        lambda: all(server.get("/readyz").status == 200 for _ in range(6)), timeout=10, interval=0.2
    )
    assert 1 <= issuer.jwks_fetches <= 2
