"""Certificate-bound tokens (RFC 8705 §3) on the app's routes, in process, with real certificates."""

from __future__ import annotations

from typing import Any

import pytest
from joserfc.jwk import ECKey
from prometheus_client import REGISTRY

from dev_issuer.client import make_proof
from tests.support import certs
from tests.support.appkit import bearer
from tests.support.appkit import client_for
from tests.support.issuer import LocalIssuer

PRIVATE = "http://localhost/api/private"
KEY = ECKey.generate_key("P-256", private=True)


@pytest.fixture(scope="module")
def ca() -> certs.Issued:
    return certs.make_ca()


@pytest.fixture(scope="module")
def mine(ca: certs.Issued) -> certs.Issued:
    return certs.issue(ca, "client")


@pytest.fixture(scope="module")
def theirs(ca: certs.Issued) -> certs.Issued:
    return certs.issue(ca, "someone else")


@pytest.fixture(scope="module")
def client(module_issuer: LocalIssuer):
    return client_for(module_issuer)


def bound(issuer: LocalIssuer, cert: certs.Issued, **cnf: str) -> str:
    return issuer.mint({"cnf": {"x5t#S256": cert.thumbprint, **cnf}})


def with_cert(token: str, value: str | None, header: str = "X-Client-Cert") -> dict[str, str]:
    headers = bearer(token)
    if value is not None:
        headers[header] = value
    return headers


def decisions(reason: str, outcome: str = "deny") -> float:
    labels = {"route": "/api/private", "outcome": outcome, "reason": reason}
    return sum(
        REGISTRY.get_sample_value("auth_decisions_total", {**labels, "scheme": scheme}) or 0.0
        for scheme in ("bearer", "dpop")
    )


@pytest.mark.parametrize(
    "render",
    [certs.nginx_escaped, certs.rfc9440, certs.envoy_xfcc, certs.traefik],
    ids=["nginx-escaped-pem", "rfc9440", "envoy-xfcc", "traefik-base64-der"],
)
def test_a_bound_token_with_its_certificate_in_any_proxy_format_is_accepted(
    client, module_issuer, mine, theirs, render
) -> None:
    token = bound(module_issuer, mine)
    assert client.get("/api/private", headers=with_cert(token, render(mine))).status_code == 200
    refused = client.get("/api/private", headers=with_cert(token, render(theirs)))
    assert refused.status_code == 401


def test_another_certificate_is_refused_as_mtls_mismatch(client, module_issuer, mine, theirs) -> None:
    before = decisions("mtls_mismatch")
    response = client.get(
        "/api/private", headers=with_cert(bound(module_issuer, mine), certs.nginx_escaped(theirs))
    )
    assert response.status_code == 401
    assert 'error="invalid_token"' in response.headers["WWW-Authenticate"]
    assert response.json["error"] == "invalid_token"
    assert decisions("mtls_mismatch") == before + 1


@pytest.mark.parametrize("value", [None, "", "   "])
def test_no_certificate_is_refused_as_mtls_missing(client, module_issuer, mine, value) -> None:
    before = decisions("mtls_missing")
    response = client.get("/api/private", headers=with_cert(bound(module_issuer, mine), value))
    assert response.status_code == 401
    assert 'error="invalid_token"' in response.headers["WWW-Authenticate"]
    assert decisions("mtls_missing") == before + 1


@pytest.mark.parametrize("value", ["hello", ":aGVsbG8=:", "Hash=abc", "%ZZ", "MIIB" + "A" * 10])
def test_a_value_that_is_not_a_certificate_is_refused(client, module_issuer, mine, value) -> None:
    before = decisions("mtls_malformed")
    response = client.get("/api/private", headers=with_cert(bound(module_issuer, mine), value))
    assert response.status_code == 401
    assert decisions("mtls_malformed") == before + 1


def test_unbound_tokens_pass_in_allowed_mode_whatever_the_header(client, module_issuer) -> None:
    token = module_issuer.mint()
    assert client.get("/api/private", headers=bearer(token)).status_code == 200
    assert client.get("/api/private", headers=with_cert(token, "garbage")).status_code == 200


def test_required_mode_refuses_unbound_tokens_with_a_challenge(module_issuer, mine) -> None:
    client = client_for(module_issuer, AUTH0_MTLS="required")
    before = decisions("mtls_required")
    response = client.get("/api/private", headers=with_cert(module_issuer.mint(), certs.rfc9440(mine)))
    assert response.status_code == 401
    assert response.headers["WWW-Authenticate"].startswith('Bearer realm="api", error="invalid_token"')
    assert decisions("mtls_required") == before + 1
    token = bound(module_issuer, mine)
    assert client.get("/api/private", headers=with_cert(token, certs.rfc9440(mine))).status_code == 200


def test_disabled_mode_ignores_bindings(module_issuer, mine, theirs) -> None:
    client = client_for(module_issuer, AUTH0_MTLS="disabled")
    token = bound(module_issuer, mine)
    assert client.get("/api/private", headers=bearer(token)).status_code == 200
    body = client.get("/.well-known/oauth-protected-resource").get_json()
    assert "tls_client_certificate_bound_access_tokens" not in body


@pytest.mark.parametrize("mode", ["allowed", "required"])
def test_the_metadata_document_advertises_bound_tokens(module_issuer, mode) -> None:
    body = client_for(module_issuer, AUTH0_MTLS=mode).get("/.well-known/oauth-protected-resource").json
    assert body["tls_client_certificate_bound_access_tokens"] is True


def test_the_header_name_is_configurable(module_issuer, mine) -> None:
    client = client_for(module_issuer, AUTH0_MTLS_CERT_HEADER="X-Forwarded-Client-Cert")
    token = bound(module_issuer, mine)
    xfcc = certs.envoy_xfcc(mine)
    ok = client.get("/api/private", headers=with_cert(token, xfcc, "X-Forwarded-Client-Cert"))
    assert ok.status_code == 200
    assert client.get("/api/private", headers=with_cert(token, xfcc)).status_code == 401


def dpop_headers(token: str, cert: str | None) -> dict[str, Any]:
    headers = {"Authorization": f"DPoP {token}", "DPoP": make_proof(KEY, "GET", PRIVATE, access_token=token)}
    if cert is not None:
        headers["X-Client-Cert"] = cert
    return headers


def test_a_token_bound_both_ways_must_satisfy_both(client, module_issuer, mine, theirs) -> None:
    token = bound(module_issuer, mine, jkt=KEY.thumbprint())
    assert client.get("/api/private", headers=dpop_headers(token, certs.traefik(mine))).status_code == 200
    missing = client.get("/api/private", headers=dpop_headers(token, None))
    assert missing.status_code == 401
    # The refusal is on the scheme the request used (DPoP).
    challenges = missing.headers.getlist("WWW-Authenticate")
    assert any(c.startswith('DPoP error="invalid_token"') for c in challenges)
    wrong = client.get("/api/private", headers=dpop_headers(token, certs.traefik(theirs)))
    assert wrong.status_code == 401
    # The certificate alone is not enough: the DPoP binding still holds.
    assert client.get("/api/private", headers=with_cert(token, certs.traefik(mine))).status_code == 401
    other_key = ECKey.generate_key("P-256", private=True)
    foreign_proof = dpop_headers(token, certs.traefik(mine))
    foreign_proof["DPoP"] = make_proof(other_key, "GET", PRIVATE, access_token=token)
    assert client.get("/api/private", headers=foreign_proof).status_code == 401
