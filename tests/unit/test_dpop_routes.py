"""DPoP at the routes, in process: schemes, challenges (RFC 9449 §7.1), modes, nonces, metadata."""

from __future__ import annotations

import json
import time
from typing import Any

import pytest
from joserfc.jwk import ECKey
from prometheus_client import REGISTRY

from dev_issuer.client import make_proof
from service.jose import nonce
from tests.support.appkit import bearer
from tests.support.appkit import client_for
from tests.support.issuer import LocalIssuer

KEY = ECKey.generate_key("P-256", private=True)
PRIVATE = "http://localhost/api/private"


def bound_token(issuer: LocalIssuer, key: ECKey = KEY, **kwargs: Any) -> str:
    return issuer.mint({"cnf": {"jkt": key.thumbprint()}}, **kwargs)


def dpop(token: str, url: str = PRIVATE, method: str = "GET", **kwargs: Any) -> dict[str, str]:
    proof = make_proof(KEY, method, url, access_token=token, **kwargs)
    return {"Authorization": f"DPoP {token}", "DPoP": proof}


def challenges(response: Any) -> list[str]:
    return response.headers.getlist("WWW-Authenticate")


@pytest.fixture(scope="module")
def client(module_issuer: LocalIssuer):
    return client_for(module_issuer, CORS_ALLOWED_ORIGINS="https://spa.example")


def test_a_dpop_bound_token_with_its_proof_is_accepted(client, module_issuer: LocalIssuer) -> None:
    response = client.get("/api/private", headers=dpop(bound_token(module_issuer)))
    assert response.status_code == 200
    assert "DPoP-Nonce" not in response.headers


def test_scoped_routes_check_permissions_of_dpop_tokens(client, module_issuer: LocalIssuer) -> None:
    token = bound_token(module_issuer, scope=None)
    response = client.get("/api/private-scoped", headers=dpop(token, "http://localhost/api/private-scoped"))
    assert response.status_code == 403
    assert challenges(response) == [
        'DPoP error="insufficient_scope", scope="read:messages", '
        "error_description=\"The access token lacks the 'read:messages' permission.\", algs=\"ES256\""
    ]


def test_a_replayed_proof_is_refused(client, module_issuer: LocalIssuer) -> None:
    headers = dpop(bound_token(module_issuer))
    assert client.get("/api/private", headers=headers).status_code == 200
    response = client.get("/api/private", headers=headers)
    assert response.status_code == 401
    body = response.get_json()
    assert body == {"error": "invalid_dpop_proof", "error_description": "The DPoP proof is invalid."}
    assert challenges(response) == [
        'DPoP error="invalid_dpop_proof", error_description="The DPoP proof is invalid.", algs="ES256"',
        'Bearer realm="api"',
    ]


def test_every_request_checks_its_proof_even_for_a_cached_token(client, module_issuer: LocalIssuer) -> None:
    token = bound_token(module_issuer)
    assert client.get("/api/private", headers=dpop(token)).status_code == 200
    wrong_url = dpop(token, "http://localhost/api/public")
    assert client.get("/api/private", headers=wrong_url).status_code == 401


def test_a_dpop_bound_token_sent_as_bearer_is_refused(client, module_issuer: LocalIssuer) -> None:
    response = client.get("/api/private", headers=bearer(bound_token(module_issuer)))
    assert response.status_code == 401
    assert response.get_json()["error"] == "invalid_token"
    assert challenges(response)[0].startswith('Bearer realm="api", error="invalid_token"')
    assert challenges(response)[1] == 'DPoP algs="ES256"'


def test_an_unbound_token_with_the_dpop_scheme_is_refused(client, module_issuer: LocalIssuer) -> None:
    response = client.get("/api/private", headers=dpop(module_issuer.mint()))
    assert response.status_code == 401
    assert response.get_json()["error"] == "invalid_token"
    assert challenges(response)[0].startswith('DPoP error="invalid_token"')
    assert challenges(response)[1] == 'Bearer realm="api"'


def test_a_proof_bound_to_another_key_is_refused(client, module_issuer: LocalIssuer) -> None:
    other = ECKey.generate_key("P-256")
    response = client.get("/api/private", headers=dpop(bound_token(module_issuer, other)))
    assert response.status_code == 401
    assert response.get_json()["error"] == "invalid_dpop_proof"


@pytest.mark.parametrize(
    "headers",
    [
        {"DPoP": "a.b.c"},
        {"Authorization": "Bearer abc.def.ghi", "DPoP": "a.b.c"},
        {"Authorization": "DPoP abc.def.ghi"},
        {"Authorization": "DPoP abc.def.ghi", "DPoP": "a.b.c,d.e.f"},
        {"Authorization": "DPoP "},
        {"Authorization": "DPoP abc def", "DPoP": "a.b.c"},
    ],
)
def test_malformed_dpop_requests_are_400_invalid_request(client, headers: dict[str, str]) -> None:
    response = client.get("/api/private", headers=headers)
    assert response.status_code == 400
    assert response.get_json()["error"] == "invalid_request"
    assert challenges(response)[0].startswith('DPoP error="invalid_request"')


def test_two_dpop_header_fields_are_400(client, module_issuer: LocalIssuer) -> None:
    token = bound_token(module_issuer)
    proof = dpop(token)["DPoP"]
    headers = [("Authorization", f"DPoP {token}"), ("DPoP", proof), ("DPoP", proof)]
    assert client.get("/api/private", headers=headers).status_code == 400


def test_a_missing_token_is_challenged_for_both_schemes(client) -> None:
    response = client.get("/api/private")
    assert response.status_code == 401
    assert challenges(response) == ['Bearer realm="api"', 'DPoP algs="ES256"']


def test_a_bad_bearer_token_keeps_its_challenge_and_adds_dpop(client) -> None:
    response = client.get("/api/private", headers=bearer("not-a-jwt"))
    assert response.headers["WWW-Authenticate"].startswith('Bearer realm="api", error="invalid_token"')
    assert challenges(response)[1] == 'DPoP algs="ES256"'


def test_required_mode_refuses_bearer_with_only_a_dpop_challenge(module_issuer: LocalIssuer) -> None:
    client = client_for(module_issuer, AUTH0_DPOP="required", AUTH0_DPOP_ALGORITHMS="ES256,PS256")
    response = client.get("/api/private", headers=bearer(module_issuer.mint()))
    assert response.status_code == 401
    assert [c.split(" ")[0] for c in challenges(response)] == ["DPoP"]
    assert challenges(response)[0].endswith('algs="ES256 PS256"')
    assert challenges(client.get("/api/private")) == ['DPoP algs="ES256 PS256"']
    assert client.get("/api/private", headers=dpop(bound_token(module_issuer))).status_code == 200


def test_disabled_mode_is_bearer_only_as_before(module_issuer: LocalIssuer) -> None:
    client = client_for(module_issuer, AUTH0_DPOP="disabled")
    token = bound_token(module_issuer)
    assert client.get("/api/private", headers=bearer(token)).status_code == 200
    response = client.get("/api/private", headers=dpop(token))
    assert response.status_code == 401
    assert challenges(response) == ['Bearer realm="api"']
    assert "dpop_signing_alg_values_supported" not in client.get(
        "/.well-known/oauth-protected-resource"
    ).get_json()


def test_the_nonce_flow(module_issuer: LocalIssuer) -> None:
    client = client_for(module_issuer, AUTH0_DPOP_NONCE="1", AUTH0_DPOP_NONCE_SECRET="s3cret")
    token = bound_token(module_issuer)
    first = client.get("/api/private", headers=dpop(token))
    assert first.status_code == 401
    assert first.get_json()["error"] == "use_dpop_nonce"
    assert challenges(first)[0].startswith('DPoP error="use_dpop_nonce"')
    nonce = first.headers["DPoP-Nonce"]
    second = client.get("/api/private", headers=dpop(token, nonce=nonce))
    assert second.status_code == 200
    assert "DPoP-Nonce" not in second.headers  # still current: nothing new to hand out
    again = client_for(module_issuer, AUTH0_DPOP_NONCE="1", AUTH0_DPOP_NONCE_SECRET="s3cret")
    assert again.get("/api/private", headers=dpop(token, nonce=nonce)).status_code == 200


def test_a_success_with_the_previous_steps_nonce_carries_the_next_nonce(module_issuer: LocalIssuer) -> None:
    client = client_for(module_issuer, AUTH0_DPOP_NONCE="1", AUTH0_DPOP_NONCE_SECRET="s3cret")
    issuer = nonce.NonceIssuer(nonce.secret_bytes("s3cret"), 60)
    previous = issuer.current(time.time() - 60)
    response = client.get("/api/private", headers=dpop(bound_token(module_issuer), nonce=previous))
    assert response.status_code == 200
    assert response.headers["DPoP-Nonce"] in (issuer.current(), issuer.current(time.time() + 60))
    assert response.headers["DPoP-Nonce"] != previous


def test_public_url_sets_htu_and_points_challenges_at_the_metadata(module_issuer: LocalIssuer) -> None:
    client = client_for(module_issuer, PUBLIC_URL="https://api.example.com/")
    token = bound_token(module_issuer)
    assert client.get("/api/private", headers=dpop(token)).status_code == 401
    response = client.get("/api/private", headers=dpop(token, "https://api.example.com/api/private"))
    assert response.status_code == 200
    refused = client.get("/api/private")
    metadata = 'resource_metadata="https://api.example.com/.well-known/oauth-protected-resource"'
    assert challenges(refused) == [f'Bearer realm="api", {metadata}', f'DPoP algs="ES256", {metadata}']


def test_the_protected_resource_metadata_document(module_issuer: LocalIssuer) -> None:
    client = client_for(module_issuer, RESOURCE_NAME="Messages API")
    response = client.get("/.well-known/oauth-protected-resource")
    assert response.status_code == 200
    assert "max-age=" in response.headers["Cache-Control"]
    assert json.loads(response.data) == {
        "resource": module_issuer.audience,
        "authorization_servers": [module_issuer.url],
        "scopes_supported": ["read:messages"],
        "bearer_methods_supported": ["header"],
        "dpop_signing_alg_values_supported": ["ES256"],
        "dpop_bound_access_tokens_required": False,
        "tls_client_certificate_bound_access_tokens": True,
        "resource_name": "Messages API",
    }


def test_the_resource_is_public_url_when_that_is_the_audience(module_issuer: LocalIssuer) -> None:
    client = client_for(module_issuer, PUBLIC_URL="HTTPS://API.test:443", AUTH0_DPOP="required")
    body = client.get("/.well-known/oauth-protected-resource").get_json()
    assert body["resource"] == "HTTPS://API.test:443"
    assert body["dpop_bound_access_tokens_required"] is True


def test_cors_allows_the_dpop_header_and_exposes_nonces(client) -> None:
    preflight = client.options(
        "/api/private",
        headers={
            "Origin": "https://spa.example",
            "Access-Control-Request-Method": "GET",
            "Access-Control-Request-Headers": "authorization, dpop",
        },
    )
    assert "dpop" in preflight.headers["Access-Control-Allow-Headers"].lower()
    response = client.get("/api/private", headers={"Origin": "https://spa.example"})
    assert "DPoP-Nonce" in response.headers["Access-Control-Expose-Headers"]


def test_the_decision_counter_is_labelled_with_the_scheme(client, module_issuer: LocalIssuer) -> None:
    def count(scheme: str, outcome: str, reason: str) -> float:
        labels = {"route": "/api/private", "outcome": outcome, "reason": reason, "scheme": scheme}
        return REGISTRY.get_sample_value("auth_decisions_total", labels) or 0.0

    def counts() -> list[float]:
        cases = [("dpop", "allow", "ok"), ("bearer", "allow", "ok"), ("none", "deny", "missing_token")]
        return [count(*case) for case in cases]

    before = counts()
    client.get("/api/private", headers=dpop(bound_token(module_issuer)))
    client.get("/api/private", headers=bearer(module_issuer.mint()))
    client.get("/api/private")
    assert [b - a for a, b in zip(before, counts(), strict=True)] == [1, 1, 1]


def test_a_resource_with_a_path_has_its_metadata_under_that_path_too(module_issuer: LocalIssuer) -> None:
    client = client_for(module_issuer, AUTH0_AUDIENCE="https://api.example.com/v1")
    assert client.get("/.well-known/oauth-protected-resource/v1").get_json()["resource"] == (
        "https://api.example.com/v1"
    )
    assert client.get("/.well-known/oauth-protected-resource").status_code == 200
    assert client.get("/.well-known/oauth-protected-resource/other").status_code == 404


def test_the_metadata_names_every_configured_issuer(module_issuer: LocalIssuer) -> None:
    with LocalIssuer(audience=module_issuer.audience) as second:
        client = client_for(module_issuer, AUTH0_ISSUER=f"{module_issuer.url},{second.url}")
        servers = client.get("/.well-known/oauth-protected-resource").get_json()["authorization_servers"]
    assert servers == [module_issuer.url, second.url]
