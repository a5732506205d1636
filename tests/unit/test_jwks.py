"""The JWKS cache against a real local issuer: TTL, cooldown, single flight, outages, bad documents."""

from __future__ import annotations

import json
import threading
import time

import pytest

from service.jwks import FetchError
from service.jwks import FetchEvent
from service.jwks import JWKSCache
from tests.appkit import settings_for
from tests.issuer import LocalIssuer


def cache_for(issuer: LocalIssuer, fetches: list[str] | None = None, **env: str) -> JWKSCache:
    """A cache wired to the issuer, recording fetch outcomes."""
    record = fetches if fetches is not None else []
    return JWKSCache(settings_for(issuer, **env), on_fetch=lambda event: record.append(event.outcome))


def test_known_kid_costs_one_fetch_per_ttl() -> None:
    with LocalIssuer() as issuer:
        cache = cache_for(issuer)
        for _ in range(500):
            assert cache.get(issuer.current_key.kid) is not None
        assert issuer.jwks_fetches == 1
        assert issuer.discovery_fetches == 1


def test_stale_key_set_is_refreshed_without_dropping_it() -> None:
    with LocalIssuer() as issuer:
        cache = cache_for(issuer, AUTH0_JWKS_TTL="1")
        kid = issuer.current_key.kid
        assert cache.get(kid) is not None
        time.sleep(1.1)
        assert cache.get(kid) is not None
        assert issuer.wait_for_fetches(2)


@pytest.mark.parametrize(
    "cache_control, expected_ttl",
    [("public, max-age=1", 1.0), ("max-age=86400", 600.0), ("no-cache", 600.0), ("max-age=0", 1.0)],
)
def test_cache_control_max_age_caps_but_never_extends_the_ttl(cache_control: str, expected_ttl: float):
    with LocalIssuer() as issuer:
        issuer.cache_control = cache_control
        cache = cache_for(issuer, AUTH0_JWKS_TTL="600")
        cache.get(issuer.current_key.kid)
        keyset = cache.keyset
        assert keyset is not None and keyset.fresh_until - keyset.fetched_at == pytest.approx(expected_ttl)


def test_unknown_kid_flood_causes_one_fetch_per_cooldown_single_flight() -> None:
    with LocalIssuer() as issuer:
        cache = cache_for(issuer, AUTH0_JWKS_COOLDOWN="1")
        cache.get(issuer.current_key.kid)
        time.sleep(1.1)  # the cooldown counts from the last fetch
        issuer.reset_counts()
        issuer.delay = 0.2  # keep the refresh in flight while the flood arrives
        results: list[object] = []
        barrier = threading.Barrier(100)

        def attempt(i: int) -> None:
            barrier.wait()
            results.append(cache.get(f"random-{i}"))

        threads = [threading.Thread(target=attempt, args=(i,)) for i in range(100)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert results == [None] * 100
        assert issuer.jwks_fetches == 1
        issuer.delay = 0
        assert cache.get("another-random") is None
        assert issuer.jwks_fetches == 1


def test_unknown_kid_right_after_a_fetch_waits_for_the_cooldown() -> None:
    with LocalIssuer() as issuer:
        cache = cache_for(issuer, AUTH0_JWKS_COOLDOWN="30")
        cache.get(issuer.current_key.kid)
        new = issuer.rotate()
        assert cache.get(new.kid) is None
        assert issuer.jwks_fetches == 1


def test_rotated_key_is_found_by_an_unknown_kid_refresh() -> None:
    with LocalIssuer() as issuer:
        cache = cache_for(issuer, AUTH0_JWKS_COOLDOWN="0.5")
        cache.get(issuer.current_key.kid)
        new = issuer.rotate()
        time.sleep(0.6)
        assert cache.get(new.kid) is not None


def test_issuer_outage_keeps_the_last_good_keys_and_counts_the_failure() -> None:
    with LocalIssuer() as issuer:
        fetches: list[str] = []
        cache = cache_for(issuer, fetches, AUTH0_JWKS_TTL="1")
        kid = issuer.current_key.kid
        cache.get(kid)
        issuer.go_down()
        time.sleep(1.1)
        for _ in range(5):
            assert cache.get(kid) is not None
            time.sleep(0.05)
        assert "error" in fetches
        assert cache.last_error is not None


def test_issuer_down_at_start_raises_then_recovers() -> None:
    with LocalIssuer() as issuer:
        issuer.go_down()
        cache = cache_for(issuer)
        with pytest.raises(FetchError):
            cache.get(issuer.current_key.kid)
        assert cache.ensure_loaded() is False
        issuer.come_up()
        assert cache.ensure_loaded() is True
        assert cache.get(issuer.current_key.kid) is not None


def test_failed_fetches_are_retried_at_most_every_retry_interval() -> None:
    with LocalIssuer() as issuer:
        issuer.serve_raw(b"oops", 500)
        cache = cache_for(issuer, AUTH0_JWKS_URI=issuer.jwks_uri, AUTH0_JWKS_RETRY="30")
        for _ in range(20):
            with pytest.raises(FetchError):
                cache.get(issuer.current_key.kid)
        assert issuer.jwks_fetches == 1


@pytest.mark.parametrize(
    "body",
    [
        b"not json",
        b"[]",
        b'{"keys": "x"}',
        b'{"keys": []}',
        b'{"keys": [{"kty": "oct", "k": "c2VjcmV0", "kid": "h"}]}',
        b'{"keys": [{"kty": "RSA", "kid": "x", "n": "AQAB", "e": "AQAB"}]}',
        b"{" * 100_000,
        b'{"keys": [' + b'{"kty": "EC"},' * 30_000 + b"{}]}",
    ],
)
def test_unusable_jwks_is_a_failed_fetch_not_a_crash(body: bytes) -> None:
    with LocalIssuer() as issuer:
        issuer.serve_raw(body, 200, {"Content-Type": "application/json"})
        fetches: list[str] = []
        cache = cache_for(issuer, fetches, AUTH0_JWKS_URI=issuer.jwks_uri)
        with pytest.raises(FetchError):
            cache.get("whatever")
        assert fetches == ["error"]


def test_jwks_keys_with_private_members_or_enc_use_are_ignored() -> None:
    with LocalIssuer() as issuer:
        good = issuer.current_key.public_jwk
        enc = {**issuer.new_key().public_jwk, "use": "enc"}
        private = {**issuer.new_key().public_jwk, "d": "AQAB"}
        issuer.serve_raw(json.dumps({"keys": [good, enc, private]}).encode(), 200, {})
        cache = cache_for(issuer, AUTH0_JWKS_URI=issuer.jwks_uri)
        assert cache.get(good["kid"]) is not None
        assert set(cache.keyset.keys) == {good["kid"]}


def test_fetch_honours_the_timeout() -> None:
    with LocalIssuer() as issuer:
        issuer.delay = 3
        cache = cache_for(issuer, AUTH0_JWKS_URI=issuer.jwks_uri, AUTH0_HTTP_TIMEOUT="0.5")
        started = time.monotonic()
        with pytest.raises(FetchError):
            cache.get(issuer.current_key.kid)
        assert time.monotonic() - started < 2.5


def test_discovery_falls_back_to_the_auth0_jwks_path() -> None:
    with LocalIssuer() as issuer:
        issuer.serve_raw_discovery(b"{}", 404)
        cache = cache_for(issuer)
        assert cache.get(issuer.current_key.kid) is not None


def test_discovery_naming_another_issuer_is_refused() -> None:
    with LocalIssuer() as issuer:
        doc = {**issuer.discovery(), "issuer": "https://evil.example/"}
        issuer.serve_raw_discovery(json.dumps(doc).encode(), 200)
        cache = cache_for(issuer)
        with pytest.raises(FetchError):
            cache.get(issuer.current_key.kid)
        assert issuer.jwks_fetches == 0


def test_forked_child_starts_with_an_empty_cache() -> None:
    import os

    with LocalIssuer() as issuer:
        cache = cache_for(issuer)
        cache.get(issuer.current_key.kid)
        read, write = os.pipe()
        pid = os.fork()
        if pid == 0:  # child: must not reuse the parent's state or lock
            os.write(write, b"1" if cache.keyset is None else b"0")
            os._exit(0)
        os.waitpid(pid, 0)
        assert os.read(read, 1) == b"1"


def test_on_fetch_receives_one_event_per_fetch_with_issuer_outcome_duration_and_key_count() -> None:
    with LocalIssuer() as issuer:
        events: list[FetchEvent] = []
        settings = settings_for(issuer, AUTH0_JWKS_URI=issuer.jwks_uri, AUTH0_JWKS_COOLDOWN="0")
        cache = JWKSCache(settings, issuer=issuer.url, on_fetch=events.append)
        cache.get(issuer.current_key.kid)
        issuer.go_down()
        cache.get("unknown-kid")
        assert [(e.issuer, e.outcome, e.keys) for e in events] == [
            (issuer.url, "success", 1),
            (issuer.url, "error", 1),
        ]
        assert events[0].error is None and events[1].error
        assert all(0 <= e.duration < 5 for e in events)
