"""The claim rules of Auth0's SDKs: AUTH0_ORGANIZATION, AUTH0_MAX_TOKEN_AGE, AUTH0_STRICT_PROFILE."""

from __future__ import annotations

import time

import pytest
from prometheus_client import REGISTRY

from service.config import ConfigError
from service.config import Settings
from service.jose.verifier import verifier_for
from tests.support.appkit import bearer
from tests.support.appkit import client_for
from tests.support.appkit import settings_for
from tests.support.issuer import LocalIssuer


def decisions(reason: str) -> float:
    labels = {"route": "/api/private", "outcome": "deny", "reason": reason, "scheme": "bearer"}
    return REGISTRY.get_sample_value("auth_decisions_total", labels) or 0.0


def refused_as(client, token: str, reason: str) -> None:
    before = decisions(reason)
    response = client.get("/api/private", headers=bearer(token))
    assert response.status_code == 401
    assert 'error="invalid_token"' in response.headers["WWW-Authenticate"]
    assert decisions(reason) == before + 1


@pytest.fixture(scope="module")
def orgs(module_issuer: LocalIssuer):
    return client_for(module_issuer, AUTH0_ORGANIZATION="org_abc, Acme-Corp ,org_def")


@pytest.mark.parametrize(
    "claims", [{"org_id": "org_abc"}, {"org_id": "org_def"}, {"org_name": "acme-corp"},
               {"org_name": "ACME-CORP"}, {"org_id": "org_zzz", "org_name": "Acme-Corp"}],
)
def test_a_token_of_a_listed_organization_is_accepted(orgs, module_issuer, claims) -> None:
    assert orgs.get("/api/private", headers=bearer(module_issuer.mint(claims))).status_code == 200


@pytest.mark.parametrize(
    "claims", [{}, {"org_id": "ORG_ABC"}, {"org_id": "org_abcd"}, {"org_name": "org_abc"},
               {"org_id": "acme-corp"}, {"org_id": ["org_abc"]}, {"org_name": "acme"}],
)
def test_a_token_of_another_organization_is_refused(orgs, module_issuer, claims) -> None:
    refused_as(orgs, module_issuer.mint(claims), "bad_organization")


def test_without_the_setting_organizations_are_not_checked(client, module_issuer) -> None:
    assert client.get("/api/private", headers=bearer(module_issuer.mint())).status_code == 200


def test_max_token_age_requires_a_recent_iat(module_issuer) -> None:
    client = client_for(module_issuer, AUTH0_MAX_TOKEN_AGE="60")
    now = int(time.time())
    recent = module_issuer.mint({"iat": now - 30})
    assert client.get("/api/private", headers=bearer(recent)).status_code == 200
    refused_as(client, module_issuer.mint({"iat": now - 120}), "token_too_old")
    refused_as(client, module_issuer.mint(drop=("iat",)), "token_too_old")


def test_an_aged_token_stops_being_usable_when_it_gets_too_old_even_when_cached(module_issuer) -> None:
    settings = settings_for(module_issuer, AUTH0_MAX_TOKEN_AGE="60")
    verifier = verifier_for(settings, on_fetch=lambda event: None)
    iat = int(time.time()) - 30
    token = verifier.verify(module_issuer.mint({"iat": iat}, ttl=3600))
    assert token.expires_at == iat + 60  # the cache and is_expired() end it at iat + age


STRICT = {"client_id": "my-client", "jti": "abc-123"}


@pytest.mark.parametrize("typ", ["at+jwt", "application/at+jwt", "AT+JWT"])
def test_the_strict_profile_accepts_rfc9068_tokens(module_issuer, typ) -> None:
    client = client_for(module_issuer, AUTH0_STRICT_PROFILE="1")
    token = module_issuer.mint(STRICT, header={"typ": typ})
    assert client.get("/api/private", headers=bearer(token)).status_code == 200


@pytest.mark.parametrize(
    ("claims", "header", "drop"),
    [(STRICT, {"typ": "JWT"}, ()), (STRICT, {"typ": None}, ()), ({"jti": "x"}, {"typ": "at+jwt"}, ()),
     (STRICT, {"typ": "at+jwt"}, ("jti",)), (STRICT, {"typ": "at+jwt"}, ("sub",)),
     (STRICT, {"typ": "at+jwt"}, ("iat",)), ({**STRICT, "jti": 5}, {"typ": "at+jwt"}, ())],
    ids=["typ-JWT", "no-typ", "no-client_id", "no-jti", "no-sub", "no-iat", "jti-number"],
)
def test_the_strict_profile_refuses_the_rest(module_issuer, claims, header, drop) -> None:
    client = client_for(module_issuer, AUTH0_STRICT_PROFILE="1")
    refused_as(client, module_issuer.mint(claims, header=header, drop=drop), "strict_profile")


def test_auth0s_default_tokens_pass_without_the_strict_profile(client, module_issuer) -> None:
    token = module_issuer.mint(header={"typ": "JWT"})
    assert client.get("/api/private", headers=bearer(token)).status_code == 200


@pytest.mark.parametrize(
    ("name", "value"),
    [("AUTH0_MTLS", "maybe"), ("AUTH0_MAX_TOKEN_AGE", "-1"), ("AUTH0_MAX_TOKEN_AGE", "soon"),
     ("AUTH0_MAX_TOKEN_AGE", "0"), ("AUTH0_MAX_TOKEN_AGE", "1.5"), ("AUTH0_STRICT_PROFILE", "yes"),
     ("AUTH0_MTLS_CERT_HEADER", "X_Client_Cert"), ("AUTH0_MTLS_CERT_HEADER", "Authorization"),
     ("AUTH0_ORGANIZATION", "org_\\x01")],
)
def test_invalid_values_stop_the_start_naming_the_variable(module_issuer, name, value) -> None:
    env = {"AUTH0_ISSUER": module_issuer.url, "AUTH0_AUDIENCE": "a", name: value.replace("\\x01", "\x01")}
    with pytest.raises(ConfigError, match=f"^{name}: "):
        Settings.from_env(env)
