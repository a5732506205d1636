"""DPoP edge cases, in process: dot segments in the path, the proof key's use and key_ops."""

from __future__ import annotations

from typing import Any

import pytest
from flask.testing import FlaskClient
from joserfc.jwk import ECKey
from prometheus_client import REGISTRY

from dev_issuer.client import make_proof
from tests.support import files_example
from tests.support.appkit import settings_for
from tests.support.issuer import LocalIssuer

KEY = ECKey.generate_key("P-256", private=True)
PUBLIC_JWK = KEY.as_dict(private=False)


def bound_token(issuer: LocalIssuer) -> str:
    """A token bound to KEY (RFC 9449 §6.1)."""
    return issuer.mint({"cnf": {"jkt": KEY.thumbprint()}})


def dpop(token: str, url: str, **kwargs: Any) -> dict[str, str]:
    """DPoP request headers with a fresh proof for GET url."""
    proof = make_proof(KEY, "GET", url, access_token=token, **kwargs)
    return {"Authorization": f"DPoP {token}", "DPoP": proof}


def denials(reason: str, route: str = "/api/private") -> float:
    """auth_decisions_total for a DPoP refusal with this reason."""
    labels = {"route": route, "outcome": "deny", "reason": reason, "scheme": "dpop"}
    return REGISTRY.get_sample_value("auth_decisions_total", labels) or 0.0


@pytest.fixture(scope="module")
def files(module_issuer: LocalIssuer) -> FlaskClient:
    """The app with /api/files/<path:name> behind require_auth()."""
    return files_example.create_app(settings_for(module_issuer)).test_client()


@pytest.mark.parametrize("path", ["/api/files/../private", "/api/files/%2e%2e/private",
                                  "/api/files/./../private", "/api/files/%2E%2E/private",
                                  "/api/files/.%2e/private"])
def test_a_path_with_dot_segments_never_matches_a_proof_for_the_resource_they_resolve_to(
    files: FlaskClient, module_issuer: LocalIssuer, path: str
) -> None:
    """The app routes the path as sent (name='../private'): a proof for /api/private is for another."""
    token = bound_token(module_issuer)
    response = files.get(path, headers=dpop(token, "http://localhost/api/private"))
    assert response.status_code in (400, 401), response.json
    # Nor does a proof signed for the dot-segment URL itself name what the app routes.
    response = files.get(path, headers=dpop(token, "http://localhost" + path))
    assert response.status_code in (400, 401), response.json


def test_a_path_parameter_route_accepts_its_own_proof(files: FlaskClient, module_issuer: LocalIssuer) -> None:
    token = bound_token(module_issuer)
    url = "http://localhost/api/files/reports/2026.txt"
    response = files.get("/api/files/reports/2026.txt", headers=dpop(token, url))
    assert response.status_code == 200, response.json
    assert response.json == {"name": "reports/2026.txt"}


@pytest.mark.parametrize(
    "extra",
    [{"key_ops": ["sign"]}, {"key_ops": ["encrypt", "wrapKey"]}, {"key_ops": []}, {"key_ops": "verify"},
     {"use": "enc"}, {"use": 1}],
    ids=["key_ops_sign", "key_ops_encrypt", "key_ops_empty", "key_ops_not_a_list", "use_enc", "use_number"],
)
def test_a_proof_key_not_for_verifying_signatures_is_a_dpop_jwk_refusal(
    client: FlaskClient, module_issuer: LocalIssuer, extra: dict[str, Any]
) -> None:
    """RFC 7517 §4.2-4.3: the proof's jwk must be usable to verify; else 401 invalid_dpop_proof."""
    token = bound_token(module_issuer)
    before = denials("dpop_jwk")
    proof = make_proof(KEY, "GET", "http://localhost/api/private", access_token=token,
                       header={"jwk": {**PUBLIC_JWK, **extra}})
    response = client.get("/api/private", headers={"Authorization": f"DPoP {token}", "DPoP": proof})
    assert response.status_code == 401
    assert response.json["error"] == "invalid_dpop_proof"
    assert any('error="invalid_dpop_proof"' in c for c in response.headers.getlist("WWW-Authenticate"))
    assert denials("dpop_jwk") == before + 1


@pytest.mark.parametrize("extra", [{"key_ops": ["verify"]}, {"key_ops": ["sign", "verify"]}, {"use": "sig"}])
def test_a_proof_key_marked_for_verifying_is_accepted(
    client: FlaskClient, module_issuer: LocalIssuer, extra: dict[str, Any]
) -> None:
    token = bound_token(module_issuer)
    proof = make_proof(KEY, "GET", "http://localhost/api/private", access_token=token,
                       header={"jwk": {**PUBLIC_JWK, **extra}})
    response = client.get("/api/private", headers={"Authorization": f"DPoP {token}", "DPoP": proof})
    assert response.status_code == 200, response.json
