"""Token checks (RFC 8725, RFC 9068, Auth0): every attack and claim rule, in process over real HTTP."""

from __future__ import annotations

import time

import pytest

from service.web.state import state_of
from tests.support import mint as tokens
from tests.support.appkit import app_for
from tests.support.appkit import bearer
from tests.support.appkit import client_for
from tests.support.clock import ManualClock
from tests.support.helpers import eventually
from tests.support.issuer import LocalIssuer

ATTACKS = [
    "alg_none", "alg_none_with_signature", "hs256_public_key", "hs256_public_jwk_json", "disallowed_alg",
    "jku", "x5u", "embedded_jwk", "x5c", "unknown_crit", "jwe_shaped", "bad_base64", "non_json_header",
    "non_json_payload", "json_array_payload", "wrong_signature", "tampered_payload", "huge", "two_parts",
]


@pytest.fixture(scope="module")
def client(module_issuer: LocalIssuer):
    """One app for the module: attack tokens must not poison its cache."""
    return client_for(module_issuer)


def _status(client, token: str, path: str = "/api/private") -> tuple[int, dict, str]:
    response = client.get(path, headers=bearer(token))
    return response.status_code, response.get_json(silent=True) or {}, response.headers.get(
        "WWW-Authenticate", ""
    )


def test_valid_token_is_accepted(client, module_issuer: LocalIssuer) -> None:
    assert client.get("/api/private", headers=bearer(module_issuer.mint())).status_code == 200


@pytest.mark.parametrize("attack", ATTACKS)
def test_attack_token_is_refused_with_invalid_token(client, module_issuer: LocalIssuer, attack: str) -> None:
    token = getattr(tokens, attack)(module_issuer)
    status, body, challenge = _status(client, token)
    assert status == 401, (attack, body)
    assert body["error"] == "invalid_token"
    assert 'error="invalid_token"' in challenge
    assert token not in str(body) and token not in challenge


@pytest.mark.parametrize("alg", ["none", "None", "NONE", "HS256", "HS512", "RS512", "ES256"])
def test_algorithms_outside_the_allow_list_are_refused_before_any_fetch(alg: str) -> None:
    with LocalIssuer() as issuer:
        client = client_for(issuer)
        token = tokens.alg_none(issuer, alg=alg) if alg.lower() == "none" else issuer.mint(alg=alg) \
            if alg.startswith(("HS", "RS")) else tokens.alg_none(issuer, alg=alg)
        status, _, _ = _status(client, token)
        assert status == 401
        assert issuer.jwks_fetches == 0 and issuer.discovery_fetches == 0


def test_key_bearing_headers_never_trigger_a_fetch_of_their_url() -> None:
    with LocalIssuer() as issuer:
        client = client_for(issuer)
        for token in (tokens.jku(issuer, issuer.url + "attacker.json"),
                      tokens.x5u(issuer, issuer.url + "attacker.pem")):
            assert _status(client, token)[0] == 401
        assert all("attacker" not in path for path, _ in issuer.requests)


@pytest.mark.parametrize(
    "claims, drop, expected",
    [
        ({"iss": "https://evil.example/"}, (), 401),
        ({}, ("iss",), 401),
        ({"aud": "https://other.api"}, (), 401),
        ({}, ("aud",), 401),
        ({"aud": ["https://other.api", "https://x"]}, (), 401),
        ({"aud": ["https://other.api", "AUD"]}, (), 200),
        ({}, ("exp",), 401),
        ({"exp": "9999999999"}, (), 401),
        ({"exp": True}, (), 401),
        ({"iat": "now"}, (), 401),
        ({"nbf": [1]}, (), 401),
        ({"sub": 42}, (), 401),
        ({"scope": ["read:messages"]}, (), 401),
        ({"permissions": "read:messages"}, (), 401),
        ({}, ("sub", "azp", "iat"), 200),
    ],
)
def test_registered_claims_are_enforced(client, module_issuer: LocalIssuer, claims, drop, expected) -> None:
    if claims.get("aud") and isinstance(claims["aud"], list):
        claims = {"aud": [module_issuer.audience if a == "AUD" else a for a in claims["aud"]]}
    status, body, _ = _status(client, module_issuer.mint(claims, drop=drop))
    assert status == expected, body


def test_auth0_default_profile_without_client_id_or_jti_is_accepted(client, module_issuer) -> None:
    token = module_issuer.mint(drop=("jti", "client_id"))
    assert _status(client, token)[0] == 200


@pytest.mark.parametrize(
    "offset, expected",
    [(-3, 200), (-10, 401)],  # default leeway 5 s applies to exp too
)
def test_exp_honours_the_clock_leeway(client, module_issuer: LocalIssuer, offset: int, expected: int) -> None:
    now = int(time.time())
    token = module_issuer.mint({"exp": now + offset, "iat": now - 60})
    assert _status(client, token)[0] == expected


@pytest.mark.parametrize("claim", ["nbf", "iat"])
@pytest.mark.parametrize("offset, expected", [(3, 200), (60, 401)])
def test_nbf_and_iat_honour_the_clock_leeway(client, module_issuer, claim, offset, expected) -> None:
    token = module_issuer.mint({claim: int(time.time()) + offset})
    status, body, _ = _status(client, token)
    assert status == expected, body


@pytest.mark.parametrize("typ, expected", [("JWT", 200), ("at+jwt", 200), ("application/at+jwt", 200),
                                           ("JOSE", 401), ("dpop+jwt", 401)])
def test_typ_when_present_must_name_an_access_token(client, module_issuer, typ, expected) -> None:
    assert _status(client, module_issuer.mint(header={"typ": typ}))[0] == expected


def test_a_token_without_typ_is_accepted(client, module_issuer) -> None:
    assert _status(client, module_issuer.mint(header={"typ": None}))[0] == 200


def test_a_token_without_kid_is_refused(client, module_issuer) -> None:
    assert _status(client, module_issuer.mint(header={"kid": None}))[0] == 401


def test_a_non_finite_exp_is_refused(client, module_issuer: LocalIssuer) -> None:
    from tests.support.issuer import compact

    header = {"alg": "RS256", "typ": "JWT", "kid": module_issuer.current_key.kid}
    claims = module_issuer.claims()
    token = compact(header, claims, module_issuer.current_key, "RS256")
    # Swap in a payload whose exp is 1e400 (parsed as infinity) and re-sign it.
    import json

    from tests.support.issuer import b64url

    payload = json.dumps(claims).replace(str(claims["exp"]), "1e400")
    h = token.split(".")[0]
    signing_input = f"{h}.{b64url(payload.encode())}".encode()
    forged = signing_input.decode() + "." + b64url(module_issuer.current_key.sign(signing_input))
    assert _status(client, forged)[0] == 401


@pytest.mark.parametrize(
    "scope, permissions, expected",
    [
        ("read:messages", None, 200),
        ("openid read:messages profile", None, 200),
        (None, ["read:messages"], 200),
        ("read:messages2", None, 403),
        ("read:message", None, 403),
        (None, ["read:messages2", "write:messages"], 403),
        (None, None, 403),
        ("", [], 403),
    ],
)
def test_scoped_route_needs_read_messages_in_scope_or_permissions(
    client, module_issuer, scope, permissions, expected
) -> None:
    token = module_issuer.mint(scope=scope, permissions=permissions)
    status, body, challenge = _status(client, token, "/api/private-scoped")
    assert status == expected, body
    if expected == 403:
        assert body["error"] == "insufficient_scope"
        assert 'error="insufficient_scope"' in challenge and 'scope="read:messages"' in challenge


def test_hot_token_is_served_from_the_verified_token_cache_until_it_expires() -> None:
    with LocalIssuer() as issuer:
        clock = ManualClock()
        client = client_for(issuer, clock, AUTH0_LEEWAY="0")
        token = issuer.mint(ttl=2)
        assert _status(client, token)[0] == 200
        assert _status(client, token)[0] == 200
        clock.advance(2.2)
        assert _status(client, token)[0] == 401


def test_cached_token_is_refused_once_its_key_is_gone_and_the_ttl_passed() -> None:
    with LocalIssuer() as issuer:
        clock = ManualClock()
        client = client_for(issuer, clock, AUTH0_JWKS_TTL="1")
        old = issuer.current_key
        token = issuer.mint()
        assert _status(client, token)[0] == 200
        issuer.rotate(keep_old=False)
        assert old.kid not in [k.kid for k in issuer.keys]
        clock.advance(1.3)  # the refresher fetches the set without the old key
        assert eventually(lambda: _status(client, token)[0] == 401, timeout=5)


def test_token_cache_can_be_disabled() -> None:
    with LocalIssuer() as issuer:
        client = client_for(issuer, AUTH0_TOKEN_CACHE_SIZE="0")
        token = issuer.mint()
        assert [_status(client, token)[0] for _ in range(3)] == [200, 200, 200]


def test_token_cache_is_bounded() -> None:
    with LocalIssuer() as issuer:
        app = app_for(issuer, AUTH0_TOKEN_CACHE_SIZE="3")
        client = app.test_client()
        for _ in range(10):
            assert client.get("/api/private", headers=bearer(issuer.mint())).status_code == 200
        assert len(state_of(app).verifier._cache) <= 3
