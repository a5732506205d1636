"""The verified-token cache is bounded in bytes too, and large tokens are kept compact."""

from __future__ import annotations

import time

import pytest

from service.config import Settings
from service.jose.jwks_cache import JWKSCache
from service.jose.verifier import TokenVerifier
from tests.support.issuer import LocalIssuer

RBAC = [f"read:resource-{i:04d}" for i in range(500)]
BUDGET = 65536


@pytest.fixture
def lookups() -> list[bool]:
    """Hit (True) / miss (False) of every cache lookup, in order."""
    return []


def verifier(issuer: LocalIssuer, lookups: list[bool], **env: str) -> TokenVerifier:
    """A verifier with its own key cache, recording cache lookups."""
    settings = Settings.from_env(
        {"AUTH0_ISSUER": issuer.url, "AUTH0_AUDIENCE": issuer.audience, **env}
    )
    keys = JWKSCache(settings, issuer=issuer.url, on_fetch=lambda _event: None)
    return TokenVerifier(settings, keys, on_cache_lookup=lookups.append)


def test_large_tokens_stop_at_the_byte_budget(module_issuer: LocalIssuer, lookups: list[bool]) -> None:
    check = verifier(module_issuer, lookups, AUTH0_TOKEN_CACHE_BYTES=str(BUDGET))
    tokens = [module_issuer.mint({"jti": f"big-{i}"}, permissions=RBAC) for i in range(12)]
    for token in tokens:
        check.verify(token)
        assert 0 < check.cached_bytes <= BUDGET
    # A compact entry is ~11 KiB, so five fit in 64 KiB: the newest are hits, the oldest gone.
    lookups.clear()
    for token in reversed(tokens):
        check.verify(token)
    hits = lookups[:5]
    assert hits == [True] * 5 and lookups[6:] == [False] * 6


def test_a_compact_entry_answers_like_the_verified_token(module_issuer: LocalIssuer, lookups) -> None:
    check = verifier(module_issuer, lookups)
    token = module_issuer.mint({"sub": "auth0|rbac"}, permissions=RBAC)
    first = check.verify(token)
    again = check.verify(token)
    assert lookups == [False, True]
    assert again is not first  # rebuilt from its JSON, not the kept object
    assert again.claims == first.claims and again.permissions == first.permissions
    assert again.sub == "auth0|rbac" and again.grants("read:resource-0499")
    assert (again.key, again.kid, again.expires_at, again.issuer) == (
        first.key, first.kid, first.expires_at, first.issuer,
    )


def test_a_typical_token_is_served_as_it_was_verified(module_issuer: LocalIssuer, lookups) -> None:
    check = verifier(module_issuer, lookups)
    token = module_issuer.mint()
    assert check.verify(token) is check.verify(token)
    assert lookups == [False, True]


def test_a_large_token_costs_its_json_not_its_parsed_claims(module_issuer: LocalIssuer, lookups) -> None:
    check = verifier(module_issuer, lookups)
    token = module_issuer.mint(permissions=RBAC)
    check.verify(token)
    payload_json = len(token.split(".")[1]) * 3 // 4
    # The parsed claims and permission set of this token cost ~54 KiB; its JSON ~10.5 KiB.
    assert check.cached_bytes < payload_json + 1024


def test_re_verifying_a_token_does_not_count_it_twice(module_issuer: LocalIssuer, lookups) -> None:
    check = verifier(module_issuer, lookups, AUTH0_JWKS_TTL="1")
    token = module_issuer.mint(permissions=RBAC)
    check.verify(token)
    once = check.cached_bytes
    time.sleep(1.2)  # the key set is no longer fresh: the cached entry is not used, but replaced
    check.verify(token)
    assert lookups == [False, False]
    assert check.cached_bytes == once
