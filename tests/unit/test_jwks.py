"""The JWKS cache against a real local issuer: refresh, cooldown, waits, outages, max-stale."""

from __future__ import annotations

import gc
import json
import os
import threading
import time

import pytest
from cryptography.hazmat.primitives.asymmetric import rsa

from service.jose.jwks_cache import FetchEvent
from service.jose.jwks_cache import JWKSCache
from service.jose.jwks_cache import KeyPending
from service.jose.jwks_fetch import FetchError
from service.jose.jwks_fetch import downgrades as _downgrades
from service.jose.jwks_parse import parse_jwks
from tests.support.appkit import settings_for
from tests.support.clock import ManualClock
from tests.support.helpers import eventually
from tests.support.issuer import LocalIssuer
from tests.support.issuer import b64url


@pytest.fixture(autouse=True)
def _refreshers_end_with_their_test():
    """Each test's collected caches let their refresher threads end before the next test starts."""
    yield
    gc.collect()
    eventually(lambda: not any(t.name == "jwks-refresh" for t in threading.enumerate()), timeout=3)


def cache_for(
    issuer: LocalIssuer, fetches: list[str] | None = None, clock: ManualClock | None = None, **env: str
) -> JWKSCache:
    """A cache wired to the issuer, recording fetch outcomes (on a clock the test moves, if given)."""
    record = fetches if fetches is not None else []
    return JWKSCache(
        settings_for(issuer, **env),
        on_fetch=lambda event: record.append(event.outcome),
        clock=clock or ManualClock(),
    )


def timed(fn, *args):
    """Call fn(*args); return (result or the exception raised, seconds it took)."""
    started = time.monotonic()
    try:
        result = fn(*args)
    except Exception as exc:  # the caller asserts on what came back
        result = exc
    return result, time.monotonic() - started


# -- refresh schedule --------------------------------------------------------------------------


def test_known_kid_costs_one_fetch_per_ttl() -> None:
    with LocalIssuer() as issuer:
        cache = cache_for(issuer)
        for _ in range(500):
            assert cache.get(issuer.current_key.kid) is not None
        assert issuer.jwks_fetches == 1
        assert issuer.discovery_fetches == 1


def test_start_fetches_in_the_background_without_any_request() -> None:
    with LocalIssuer() as issuer:
        cache = cache_for(issuer)
        cache.start()
        assert eventually(cache.usable, timeout=5)
        assert issuer.jwks_fetches == 1


def test_good_set_is_refreshed_before_it_expires_without_traffic_whatever_the_retry() -> None:
    with LocalIssuer() as issuer:
        cache = cache_for(issuer, AUTH0_JWKS_TTL="1", AUTH0_JWKS_RETRY="30")
        first = cache.get(issuer.current_key.kid)
        assert issuer.wait_for_fetches(3, timeout=3.5), issuer.jwks_fetches
        keyset = cache.keyset
        assert keyset is not None and time.monotonic() < keyset.fresh_until
        assert cache.current_key(issuer.current_key.kid) is not first


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


def test_removed_key_stops_verifying_within_ttl_plus_one_round_trip() -> None:
    with LocalIssuer() as issuer:
        clock = ManualClock()
        cache = cache_for(issuer, clock=clock, AUTH0_JWKS_TTL="1", AUTH0_JWKS_COOLDOWN="30")
        old = issuer.current_key
        assert cache.get(old.kid) is not None
        issuer.rotate(keep_old=False)
        clock.advance(1.3)  # the refresher fetched at 0.9 s (a tenth of the TTL before expiry)
        assert eventually(lambda: cache.current_key(old.kid) is None, timeout=5)
        assert cache.get(old.kid) is None


# -- unknown kids ----------------------------------------------------------------------------


def test_unknown_kid_flood_causes_one_fetch_per_cooldown_single_flight() -> None:
    with LocalIssuer() as issuer:
        clock = ManualClock()
        cache = cache_for(issuer, clock=clock, AUTH0_JWKS_COOLDOWN="1")
        cache.get(issuer.current_key.kid)
        clock.advance(1.1)  # the cooldown counts from the last fetch
        issuer.reset_counts()
        issuer.delay = 0.5  # keep the refresh in flight while the flood arrives
        results: list[tuple[object, float]] = []
        barrier = threading.Barrier(100)

        def attempt(i: int) -> None:
            barrier.wait()
            results.append(timed(cache.get, f"random-{i}"))

        threads = [threading.Thread(target=attempt, args=(i,)) for i in range(100)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        found = [result for result, _ in results]
        # The request that claimed the refresh took the one seat; the others could not wait.
        assert found.count(None) == 1, found
        assert all(isinstance(result, KeyPending) for result in found if result is not None), found
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
        clock = ManualClock()
        cache = cache_for(issuer, clock=clock, AUTH0_JWKS_COOLDOWN="0.5")
        cache.get(issuer.current_key.kid)
        new = issuer.rotate()
        clock.advance(0.6)
        assert cache.get(new.kid) is not None


def test_unknown_kid_refresh_waits_at_most_the_http_timeout() -> None:
    with LocalIssuer() as issuer:
        env = {"AUTH0_JWKS_URI": issuer.jwks_uri, "AUTH0_JWKS_COOLDOWN": "0", "AUTH0_HTTP_TIMEOUT": "0.5"}
        cache = cache_for(issuer, **env)
        cache.get(issuer.current_key.kid)
        issuer.delay = 3
        found, elapsed = timed(cache.get, "unknown")
        # The fetch did not end in time: the kid may yet be published, so no "unknown".
        assert isinstance(found, KeyPending), found
        assert 0.4 < elapsed < 1.5, elapsed


def test_unknown_kid_while_the_issuer_fails_is_pending_at_once_without_a_fetch() -> None:
    with LocalIssuer() as issuer:
        fetches: list[str] = []
        cache = cache_for(issuer, fetches, AUTH0_JWKS_TTL="1", AUTH0_JWKS_COOLDOWN="0", AUTH0_JWKS_RETRY="30")
        cache.get(issuer.current_key.kid)
        issuer.serve_raw(b"down", 503)
        assert eventually(lambda: "error" in fetches, timeout=3)
        before = issuer.jwks_fetches
        for i in range(20):
            found, elapsed = timed(cache.get, f"unknown-{i}")
            assert isinstance(found, KeyPending) and elapsed < 0.1, found
        assert cache.get(issuer.current_key.kid) is not None
        assert issuer.jwks_fetches == before


# -- outages, waits and max-stale ---------------------------------------------------------------


def test_issuer_outage_keeps_the_last_good_keys_and_counts_the_failure() -> None:
    with LocalIssuer() as issuer:
        fetches: list[str] = []
        clock = ManualClock()
        cache = cache_for(issuer, fetches, clock, AUTH0_JWKS_TTL="1")
        kid = issuer.current_key.kid
        cache.get(kid)
        issuer.go_down()
        clock.advance(1.1)
        assert eventually(lambda: "error" in fetches, timeout=5)
        for _ in range(5):
            assert cache.get(kid) is not None
        assert cache.last_error is not None and cache.usable()


def test_hanging_issuer_never_makes_a_request_with_a_known_kid_wait() -> None:
    with LocalIssuer() as issuer:
        clock = ManualClock()
        env = {"AUTH0_JWKS_TTL": "1", "AUTH0_JWKS_COOLDOWN": "0", "AUTH0_HTTP_TIMEOUT": "1"}
        cache = cache_for(issuer, None, clock, **env)
        kid = issuer.current_key.kid
        cache.get(kid)
        issuer.delay = 30
        before = issuer.jwks_fetches
        clock.advance(1.2)  # stale now, the refresh hanging in flight
        assert eventually(lambda: issuer.jwks_fetches > before, timeout=5)
        slowest = 0.0
        for i in range(200):
            found, elapsed = timed(cache.get, kid if i % 2 else f"unknown-{i}")
            if i % 2:
                slowest = max(slowest, elapsed)
                assert found is not None
            else:
                # Joins the hanging refresh (or finds it failed): never told "unknown".
                assert isinstance(found, KeyPending), found
        assert slowest < 0.1, slowest
        issuer.delay = 0


def test_issuer_down_at_start_raises_then_recovers_by_itself() -> None:
    with LocalIssuer() as issuer:
        issuer.go_down()
        cache = cache_for(issuer, AUTH0_JWKS_RETRY="0.2")
        with pytest.raises(FetchError):
            cache.get(issuer.current_key.kid)
        assert not cache.usable()
        issuer.come_up()
        assert eventually(cache.usable, timeout=3)
        assert cache.get(issuer.current_key.kid) is not None


def test_while_the_issuer_is_known_to_fail_a_request_with_no_keys_gets_its_answer_at_once() -> None:
    with LocalIssuer() as issuer:
        issuer.serve_raw(b"oops", 500)
        cache = cache_for(issuer, AUTH0_JWKS_URI=issuer.jwks_uri, AUTH0_JWKS_RETRY="30")
        with pytest.raises(FetchError):
            cache.get(issuer.current_key.kid)
        for _ in range(20):
            failure, elapsed = timed(cache.get, issuer.current_key.kid)
            assert isinstance(failure, FetchError) and elapsed < 0.1
        assert issuer.jwks_fetches == 1


def test_first_request_waits_for_the_first_fetch_within_the_fetch_budget() -> None:
    with LocalIssuer() as issuer:
        issuer.delay = 0.3
        cache = cache_for(issuer)
        assert cache.get(issuer.current_key.kid) is not None


def test_key_set_past_max_stale_is_dropped_until_a_fetch_succeeds() -> None:
    with LocalIssuer() as issuer:
        clock = ManualClock()
        env = {"AUTH0_JWKS_TTL": "1", "AUTH0_JWKS_MAX_STALE": "1", "AUTH0_JWKS_RETRY": "0.2"}
        cache = cache_for(issuer, None, clock, **env)
        kid = issuer.current_key.kid
        cache.get(kid)
        issuer.serve_raw(b"broken", 500)
        clock.advance(1.5)
        assert cache.usable() and cache.get(kid) is not None  # stale, within max-stale
        clock.advance(0.7)
        assert not cache.usable()
        assert cache.current_key(kid) is None
        with pytest.raises(FetchError):
            cache.get(kid)
        issuer.serve_raw(None)
        assert eventually(cache.usable, timeout=3)
        assert cache.get(kid) is not None


def test_fetch_honours_the_timeout() -> None:
    with LocalIssuer() as issuer:
        issuer.delay = 3
        cache = cache_for(issuer, AUTH0_JWKS_URI=issuer.jwks_uri, AUTH0_HTTP_TIMEOUT="0.5")
        started = time.monotonic()
        with pytest.raises(FetchError):
            cache.get(issuer.current_key.kid)
        assert time.monotonic() - started < 2.5


def test_a_raising_fetch_callback_does_not_stop_the_refresher() -> None:
    with LocalIssuer() as issuer:

        def broken(event: FetchEvent) -> None:
            raise RuntimeError("callback bug")

        cache = JWKSCache(settings_for(issuer, AUTH0_JWKS_TTL="1"), on_fetch=broken)
        assert cache.get(issuer.current_key.kid) is not None
        assert issuer.wait_for_fetches(2, timeout=3)


# -- hostile documents ---------------------------------------------------------------------------

GOOD = "good"


def _good_entry(issuer: LocalIssuer) -> dict:
    """The issuer's current public JWK under the kid GOOD."""
    return {**issuer.current_key.public_jwk, "kid": GOOD}


_SPARE: list[dict] = []


def _rsa(issuer: LocalIssuer, **members: object) -> dict:
    """A real (unpublished) RSA public JWK with members overridden (None removes one)."""
    if not _SPARE:
        _SPARE.append(issuer.new_key().public_jwk)
    entry: dict = {**_SPARE[0], "kid": "hostile"}
    for name, value in members.items():
        if value is None:
            entry.pop(name, None)
        else:
            entry[name] = value
    return entry


#: An EC entry instead of the RSA one (the RSA members removed).
EC = {"kty": "EC", "alg": None, "n": None, "e": None}

#: Entries that must be skipped while the valid key next to them keeps working.
HOSTILE_ENTRIES = {
    "kty_list": {"kty": ["RSA"]},
    "kty_dict": {"kty": {"RSA": 1}},
    "kty_null": {"kty": None},
    "kty_symmetric": {"kty": "oct", "k": "c2VjcmV0"},
    "kid_int": {"kid": 7},
    "kid_list": {"kid": ["a"]},
    "kid_empty": {"kid": ""},
    "use_list": {"use": ["sig"]},
    "use_enc": {"use": "enc"},
    "key_ops_string": {"key_ops": "verify"},
    "key_ops_encrypt": {"key_ops": ["encrypt"]},
    "alg_list": {"alg": ["RS256"]},
    "alg_hmac": {"alg": "HS256"},
    "alg_for_another_kty": {"alg": "ES256"},
    "n_int": {"n": 12345},
    "n_nested": {"n": [[["AQAB"]]]},
    "n_missing": {"n": None},
    "e_dict": {"e": {"v": "AQAB"}},
    "n_not_base64": {"n": "%%%"},
    "private_d": {"d": "AQAB"},
    "private_oth": {"oth": []},
    "rsa_1024": "rsa_1024",
    "ec_curve_list": {**EC, "crv": ["P-256"], "x": "AA", "y": "AA"},
    "ec_unknown_curve": {**EC, "crv": "P-999", "x": "AA", "y": "AA"},
    "ec_coordinates_int": {**EC, "crv": "P-256", "x": 1, "y": 2},
    "null": None,
    "string": "RSA",
    "number": 1,
    "list": [{"kty": "RSA"}],
    "deep": "deep",
}


def _b64_int(value: int) -> str:
    """A JWK integer member (RFC 7518 §6.3.1): big-endian base64url."""
    return b64url(value.to_bytes((value.bit_length() + 7) // 8, "big"))


def _hostile_entry(issuer: LocalIssuer, name: str) -> object:
    """The named hostile entry, built around a real key where it needs one."""
    spec = HOSTILE_ENTRIES[name]
    if name == "rsa_1024":
        weak = rsa.generate_private_key(public_exponent=65537, key_size=1024).public_key()
        numbers = weak.public_numbers()
        return {"kty": "RSA", "kid": "weak", "n": _b64_int(numbers.n), "e": _b64_int(numbers.e)}
    if name == "deep":
        return json.loads("[" * 500 + "]" * 500)
    if isinstance(spec, dict):
        return _rsa(issuer, **spec)
    return spec


@pytest.mark.parametrize("name", list(HOSTILE_ENTRIES))
def test_malformed_entry_is_skipped_and_the_valid_key_beside_it_still_works(
    module_issuer: LocalIssuer, name: str
) -> None:
    doc = {"keys": [_hostile_entry(module_issuer, name), _good_entry(module_issuer)]}
    keys = parse_jwks(json.dumps(doc).encode(), ("RS256", "ES256"))
    assert set(keys) == {GOOD}
    published = module_issuer.current_key.private.public_key()
    assert keys[GOOD].native.public_numbers() == published.public_numbers()


#: Documents that must be an ordinary failed fetch: counted, and never a crash.
HOSTILE_DOCUMENTS = {
    "not_json": b"not json",
    "invalid_utf8": b'{"keys": ["\xff\xfe"]}',
    "top_level_list": b"[]",
    "top_level_string": b'"keys"',
    "top_level_null": b"null",
    "keys_string": b'{"keys": "x"}',
    "keys_object": b'{"keys": {"kty": "RSA"}}',
    "keys_null": b'{"keys": null}',
    "keys_empty": b'{"keys": []}',
    "only_symmetric": b'{"keys": [{"kty": "oct", "k": "c2VjcmV0", "kid": "h"}]}',
    "only_weak_rsa": b'{"keys": [{"kty": "RSA", "kid": "x", "n": "AQAB", "e": "AQAB"}]}',
    "unclosed_braces": b"{" * 100_000,
    "deeply_nested_arrays": b"[" * 100_000 + b"]" * 100_000,
    "deeply_nested_in_keys": b'{"keys": ' + b"[" * 60_000 + b"]" * 60_000 + b"}",
    "huge_array_of_junk": b'{"keys": [' + b'{"kty": "EC"},' * 15_000 + b"{}]}",
    "huge_array_of_nulls": b'{"keys": [' + b"null," * 40_000 + b"null]}",
    "huge_integer": b'{"keys": [' + b"9" * 10_000 + b"]}",
    "over_the_size_cap": b'{"keys": [], "pad": "' + b"x" * 300_000 + b'"}',
}


@pytest.mark.parametrize("name", list(HOSTILE_DOCUMENTS))
def test_malformed_document_is_a_failed_fetch_that_keeps_the_last_good_set(name: str) -> None:
    with LocalIssuer() as issuer:
        fetches: list[str] = []
        cache = cache_for(issuer, fetches, AUTH0_JWKS_URI=issuer.jwks_uri, AUTH0_JWKS_COOLDOWN="0")
        kid = issuer.current_key.kid
        assert cache.get(kid) is not None
        issuer.serve_raw(HOSTILE_DOCUMENTS[name], 200, {"Content-Type": "application/json"})
        # The refresh this allows fetches the hostile body; failed, it cannot say the kid is unknown.
        assert isinstance(timed(cache.get, "unknown-kid")[0], KeyPending)
        assert fetches == ["success", "error"]
        assert cache.get(kid) is not None and cache.usable()
        assert cache.last_error and "unexpected" not in cache.last_error


@pytest.mark.parametrize("name", ["not_json", "keys_null", "deeply_nested_arrays", "huge_array_of_junk"])
def test_malformed_document_with_nothing_cached_is_a_failed_fetch(name: str) -> None:
    with LocalIssuer() as issuer:
        issuer.serve_raw(HOSTILE_DOCUMENTS[name], 200, {"Content-Type": "application/json"})
        fetches: list[str] = []
        cache = cache_for(issuer, fetches, AUTH0_JWKS_URI=issuer.jwks_uri, AUTH0_JWKS_RETRY="30")
        with pytest.raises(FetchError):
            cache.get("whatever")
        assert fetches == ["error"]


def test_duplicate_kid_with_the_same_key_is_kept_once() -> None:
    with LocalIssuer() as issuer:
        good = _good_entry(issuer)
        issuer.serve_raw(json.dumps({"keys": [good, dict(good)]}).encode(), 200, {})
        cache = cache_for(issuer, AUTH0_JWKS_URI=issuer.jwks_uri)
        assert cache.get(GOOD) is not None
        assert set(cache.keyset.keys) == {GOOD}


def test_duplicate_kid_naming_two_different_keys_verifies_with_neither() -> None:
    with LocalIssuer() as issuer:
        other = issuer.new_key()
        twins = [{**issuer.new_key().public_jwk, "kid": "twin"} for _ in range(3)]
        doc = {"keys": [*twins, {**other.public_jwk, "kid": "other"}]}
        issuer.serve_raw(json.dumps(doc).encode(), 200, {})
        cache = cache_for(issuer, AUTH0_JWKS_URI=issuer.jwks_uri)
        assert cache.get("twin") is None
        assert set(cache.keyset.keys) == {"other"}


def test_mixed_valid_and_invalid_entries_keep_every_valid_key() -> None:
    with LocalIssuer() as issuer:
        valid = [issuer.new_key().public_jwk for _ in range(3)]
        junk = [_hostile_entry(issuer, name) for name in ("kty_list", "n_int", "null", "deep", "use_enc")]
        mixed = [entry for pair in zip(valid, junk, strict=False) for entry in pair] + junk[len(valid) :]
        issuer.serve_raw(json.dumps({"keys": mixed}).encode(), 200, {})
        cache = cache_for(issuer, AUTH0_JWKS_URI=issuer.jwks_uri)
        cache.start()
        assert eventually(cache.usable, timeout=3)
        assert set(cache.keyset.keys) == {entry["kid"] for entry in valid}


# -- discovery, callback, fork --------------------------------------------------------------------


def test_discovery_falls_back_to_the_auth0_jwks_path_on_404() -> None:
    with LocalIssuer() as issuer:
        issuer.serve_raw_discovery(b"{}", 404)
        cache = cache_for(issuer)
        assert cache.get(issuer.current_key.kid) is not None


def test_discovery_server_error_is_a_failed_fetch_not_a_fallback() -> None:
    with LocalIssuer() as issuer:
        issuer.serve_raw_discovery(b"{}", 500)
        cache = cache_for(issuer, AUTH0_JWKS_RETRY="30")
        with pytest.raises(FetchError, match="HTTP 500"):
            cache.get(issuer.current_key.kid)
        assert issuer.jwks_fetches == 0


def test_discovery_naming_another_issuer_is_refused() -> None:
    with LocalIssuer() as issuer:
        doc = {**issuer.discovery(), "issuer": "https://evil.example/"}
        issuer.serve_raw_discovery(json.dumps(doc).encode(), 200)
        cache = cache_for(issuer, AUTH0_JWKS_RETRY="30")
        with pytest.raises(FetchError):
            cache.get(issuer.current_key.kid)
        assert issuer.jwks_fetches == 0


def test_on_fetch_receives_one_event_per_fetch_with_issuer_outcome_duration_and_key_count() -> None:
    with LocalIssuer() as issuer:
        events: list[FetchEvent] = []
        env = {"AUTH0_JWKS_URI": issuer.jwks_uri, "AUTH0_JWKS_COOLDOWN": "0", "AUTH0_JWKS_RETRY": "30"}
        settings = settings_for(issuer, **env)
        cache = JWKSCache(settings, issuer=issuer.url, on_fetch=events.append)
        cache.get(issuer.current_key.kid)
        issuer.go_down()
        assert isinstance(timed(cache.get, "unknown-kid")[0], KeyPending)
        assert [(e.issuer, e.outcome, e.keys) for e in events] == [
            (issuer.url, "success", 1),
            (issuer.url, "error", 1),
        ]
        assert events[0].error is None and events[1].error
        assert all(0 <= e.duration < 5 for e in events)


def test_forked_child_starts_with_an_empty_cache_and_fetches_its_own() -> None:
    with LocalIssuer() as issuer:
        cache = cache_for(issuer)
        cache.get(issuer.current_key.kid)
        read, write = os.pipe()
        pid = os.fork()
        if pid == 0:  # child: must not reuse the parent's state, lock or refresher
            found = cache.get(issuer.current_key.kid) is not None
            os.write(write, b"1" if found else b"0")
            os._exit(0)
        os.waitpid(pid, 0)
        assert os.read(read, 1) == b"1"
        assert issuer.jwks_fetches == 2


@pytest.mark.parametrize(
    ("issuer", "jwks_uri", "downgrade"),
    [
        ("https://tenant.example/", "http://tenant.example/.well-known/jwks.json", True),
        ("https://tenant.example/", "HTTP://tenant.example/jwks", True),
        ("https://tenant.example/", "https://keys.example/jwks.json", False),
        ("HTTPS://tenant.example/", "http://tenant.example/jwks", True),
        ("http://127.0.0.1:3011/", "http://127.0.0.1:3011/.well-known/jwks.json", False),
    ],
)
def test_an_https_issuers_discovery_may_not_point_at_plain_http_keys(
    issuer: str, jwks_uri: str, downgrade: bool
) -> None:
    assert _downgrades(issuer, jwks_uri) is downgrade
