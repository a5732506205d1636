"""Gateway mode in process: /auth/check reads the original request, decides by the policy, answers."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from flask.testing import FlaskClient
from joserfc.jwk import ECKey
from prometheus_client import REGISTRY

from dev_issuer.client import make_proof
from tests.support.appkit import bearer
from tests.support.appkit import client_for
from tests.support.issuer import LocalIssuer

KEY = ECKey.generate_key("P-256", private=True)
GATEWAY_URL = "https://gw.example:8443"
POLICY = """
rules:
  - name: orders-read
    path: /api/orders/<int:id>
    methods: [GET, HEAD]
    scopes: "read:orders"
  - name: orders-org
    path: /api/orgs/<org>/orders
    claims: {org_id: org_123}
  - name: catalog
    path: /api/catalog/<path:rest>
    optional: true
  - name: admin-host
    path: /admin
    host: admin.example.com
  - name: bound
    path: /api/bound
    dpop: required
  - name: bearer-only
    path: /api/bearer
    dpop: disabled
"""


@pytest.fixture(scope="module")
def policy_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("gateway") / "policy.yaml"
    path.write_text(POLICY)
    return path


@pytest.fixture(scope="module")
def client(module_issuer: LocalIssuer, policy_file: Path) -> FlaskClient:
    return client_for(
        module_issuer,
        GATEWAY_POLICY=str(policy_file),
        GATEWAY_CLAIM_HEADERS="org_id:X-Auth-Org,tier:X-Auth-Tier",
    )


def original(path: str, method: str = "GET", base: str = GATEWAY_URL) -> dict[str, str]:
    return {"X-Original-URL": f"{base}{path}", "X-Original-Method": method}


def decisions(route: str, outcome: str, reason: str) -> float:
    return sum(
        REGISTRY.get_sample_value(
            "auth_decisions_total", {"route": route, "outcome": outcome, "reason": reason, "scheme": s}
        )
        or 0.0
        for s in ("bearer", "dpop", "none")
    )


def identity(response: Any) -> dict[str, str]:
    return {k: v for k, v in response.headers.items() if k.lower().startswith("x-auth-")}


# -- the switch --------------------------------------------------------------------------------


def test_without_a_policy_auth_check_is_404_and_the_demo_routes_work(module_issuer: LocalIssuer) -> None:
    plain = client_for(module_issuer)
    assert plain.get("/auth/check", headers=original("/api/orders/1")).status_code == 404
    assert plain.get("/auth/check/api/orders/1").status_code == 404
    assert plain.get("/api/private", headers=bearer(module_issuer.mint())).status_code == 200


def test_with_a_policy_the_demo_routes_still_work(client: FlaskClient, module_issuer: LocalIssuer) -> None:
    assert client.get("/api/public").status_code == 200
    assert client.get("/api/private-scoped", headers=bearer(module_issuer.mint())).status_code == 200


# -- the original request ----------------------------------------------------------------------


@pytest.mark.parametrize("method", ["GET", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "HEAD"])
def test_auth_check_accepts_any_method(client: FlaskClient, module_issuer: LocalIssuer, method: str) -> None:
    token = module_issuer.mint(scope="read:orders")
    response = client.open(
        "/auth/check", method=method, headers={**original("/api/orders/1"), **bearer(token)}
    )
    assert response.status_code == 200


def test_forwarded_headers_describe_the_original_request(
    client: FlaskClient, module_issuer: LocalIssuer
) -> None:
    token = module_issuer.mint(scope="read:orders")
    headers = {"X-Forwarded-Method": "GET", "X-Forwarded-Uri": "/api/orders/7?x=1", **bearer(token)}
    assert client.get("/auth/check", headers=headers).status_code == 200
    headers["X-Forwarded-Method"] = "POST"  # the rule allows GET and HEAD only
    assert client.get("/auth/check", headers=headers).status_code == 403


def test_x_original_url_wins_over_forwarded_headers(client: FlaskClient, module_issuer: LocalIssuer) -> None:
    token = module_issuer.mint(scope="read:orders")
    headers = {**original("/api/orders/1"), "X-Forwarded-Method": "GET", "X-Forwarded-Uri": "/nowhere"}
    assert client.get("/auth/check", headers={**headers, **bearer(token)}).status_code == 200


def test_the_path_after_the_prefix_is_the_original_path(
    client: FlaskClient, module_issuer: LocalIssuer
) -> None:
    token = module_issuer.mint(scope="read:orders")
    assert client.get("/auth/check/api/orders/42", headers=bearer(token)).status_code == 200
    assert client.delete("/auth/check/api/orders/42", headers=bearer(token)).status_code == 403


def test_a_rule_host_matches_the_host_without_its_port(
    client: FlaskClient, module_issuer: LocalIssuer
) -> None:
    token = bearer(module_issuer.mint())
    assert (
        client.get(
            "/auth/check", headers={**original("/admin", base="http://Admin.Example.com:8080"), **token}
        ).status_code
        == 200
    )
    assert (
        client.get(
            "/auth/check", headers={**original("/admin", base="http://other.example.com"), **token}
        ).status_code
        == 403
    )
    forwarded = {"X-Forwarded-Method": "GET", "X-Forwarded-Uri": "/admin", **token}
    assert (
        client.get("/auth/check", headers={**forwarded, "X-Forwarded-Host": "admin.example.com"}).status_code
        == 200
    )
    # No X-Forwarded-Host: this request's Host; path-suffix mode: this request's Host too.
    assert (
        client.get("/auth/check", headers=forwarded, base_url="http://admin.example.com:3010").status_code
        == 200
    )
    assert (
        client.get("/auth/check/admin", headers=token, base_url="http://admin.example.com").status_code == 200
    )
    assert client.get("/auth/check/admin", headers=token).status_code == 403


@pytest.mark.parametrize(
    "headers",
    [
        {"X-Original-URL": "/api/orders/1", "X-Original-Method": "GET"},
        {"X-Original-URL": "http://gw/api/orders/1", "X-Original-Method": "FETCH"},
        {"X-Original-URL": "http://gw/api/orders/1", "X-Original-Method": "get"},
        {"X-Original-URL": "http://gw/api/orders/1"},
        {"X-Original-URL": "ftp://gw/api/orders/1", "X-Original-Method": "GET"},
        {"X-Original-URL": "http://gw/api/orders/1%0D%0ASet-Cookie:%20a=b", "X-Original-Method": "GET"},
        {"X-Original-URL": "http://gw/api/orders/1?a=%0a", "X-Original-Method": "GET"},
        {"X-Original-URL": "http://gw/api/or ders", "X-Original-Method": "GET"},
        {"X-Forwarded-Method": "BREW", "X-Forwarded-Uri": "/api/orders/1"},
        {"X-Forwarded-Method": "GET", "X-Forwarded-Uri": "/api/orders/1%0d%0aX:1"},
        {"X-Forwarded-Method": "GET", "X-Forwarded-Uri": "api/orders/1"},
        {"X-Forwarded-Method": "GET"},
        {"X-Forwarded-Uri": "/api/orders/1"},
        {"X-Forwarded-Method": "GET", "X-Forwarded-Uri": "/a", "X-Forwarded-Host": "a/b"},
        {"X-Original-URL": "http://gw/api/public/../orders/1", "X-Original-Method": "GET"},
        {"X-Original-URL": "http://gw/api/public/%2e%2e/orders/1", "X-Original-Method": "GET"},
        {"X-Forwarded-Method": "GET", "X-Forwarded-Uri": "/api/public/./../orders/1"},
        {"X-Forwarded-Method": "GET", "X-Forwarded-Uri": "/api/public/.%2E/orders/1?a=b"},
    ],
)
def test_a_malformed_original_request_is_400_invalid_request_counted_unmatched(
    client: FlaskClient, module_issuer: LocalIssuer, headers: dict[str, str]
) -> None:
    before = decisions("unmatched", "deny", "bad_original_request")
    response = client.get(
        "/auth/check", headers={**headers, **bearer(module_issuer.mint(scope="read:orders"))}
    )
    assert response.status_code == 400
    assert response.get_json()["error"] == "invalid_request"
    assert decisions("unmatched", "deny", "bad_original_request") == before + 1


def test_an_unknown_method_in_path_suffix_mode_is_400(client: FlaskClient) -> None:
    assert client.open("/auth/check/api/orders/1", method="BREW").status_code == 400


# -- allow -------------------------------------------------------------------------------------


def test_allow_is_200_empty_with_the_identity_headers(
    client: FlaskClient, module_issuer: LocalIssuer
) -> None:
    token = module_issuer.mint(
        {"sub": "auth0|u1", "azp": "app-1", "org_id": "org_9", "tier": 3},
        scope="read:orders write:orders",
        permissions=["admin:all", "read:orders"],
    )
    before = decisions("orders-read", "allow", "ok")
    response = client.get("/auth/check", headers={**original("/api/orders/1"), **bearer(token)})
    assert (response.status_code, response.data) == (200, b"")
    assert identity(response) == {
        "X-Auth-Subject": "auth0|u1",
        "X-Auth-Client": "app-1",
        "X-Auth-Scopes": "admin:all read:orders write:orders",
        "X-Auth-Issuer": module_issuer.url,
        "X-Auth-Org": "org_9",
        "X-Auth-Tier": "3",
    }
    assert decisions("orders-read", "allow", "ok") == before + 1


def test_the_client_header_falls_back_to_client_id(client: FlaskClient, module_issuer: LocalIssuer) -> None:
    token = module_issuer.mint({"client_id": "cid-7"}, drop=("azp",))
    response = client.get("/auth/check", headers={**original("/api/catalog/x"), **bearer(token)})
    assert response.headers["X-Auth-Client"] == "cid-7"


@pytest.mark.parametrize(
    ("value", "sent"),
    [
        ("org_1", "org_1"),
        (42, "42"),
        (2.5, "2.5"),
        ("x" * 256, "x" * 256),
        (True, None),
        (None, None),
        (["a"], None),
        ({"a": 1}, None),
        ("a\r\nX-Evil: 1", None),
        ("a\nb", None),
        ("x" * 257, None),
        ("東京", None),
    ],
)
def test_a_claim_header_is_sent_only_when_fit_for_a_header(
    client: FlaskClient, module_issuer: LocalIssuer, value: Any, sent: str | None
) -> None:
    before = REGISTRY.get_sample_value("gateway_claim_headers_omitted_total", {"header": "X-Auth-Org"}) or 0.0
    token = module_issuer.mint({"org_id": value})
    response = client.get("/auth/check", headers={**original("/api/catalog/x"), **bearer(token)})
    assert response.status_code == 200
    assert response.headers.get("X-Auth-Org") == sent
    after = REGISTRY.get_sample_value("gateway_claim_headers_omitted_total", {"header": "X-Auth-Org"}) or 0.0
    assert after == before + (1 if sent is None and value is not None else 0)


def test_an_optional_rule_without_a_token_allows_without_identity(client: FlaskClient) -> None:
    before = decisions("catalog", "allow", "anonymous")
    response = client.get(
        "/auth/check", headers={**original("/api/catalog/shoes"), "X-Auth-Subject": "admin"}
    )
    assert (response.status_code, response.data) == (200, b"")
    assert identity(response) == {}
    assert decisions("catalog", "allow", "anonymous") == before + 1


def test_an_optional_rule_still_refuses_a_bad_token(client: FlaskClient) -> None:
    response = client.get("/auth/check", headers={**original("/api/catalog/x"), **bearer("not-a-jwt")})
    assert response.status_code == 401


# -- deny --------------------------------------------------------------------------------------


def test_no_token_is_401_with_the_bearer_challenge_first(client: FlaskClient) -> None:
    response = client.get("/auth/check", headers=original("/api/orders/1"))
    assert response.status_code == 401
    challenges = response.headers.getlist("WWW-Authenticate")
    assert challenges[0] == 'Bearer realm="api"'
    assert response.headers["Cache-Control"] == "no-store"
    assert response.get_json()["error"]


def test_missing_permission_is_403_naming_the_rules_scope(
    client: FlaskClient, module_issuer: LocalIssuer
) -> None:
    response = client.get(
        "/auth/check", headers={**original("/api/orders/1"), **bearer(module_issuer.mint())}
    )
    assert response.status_code == 403
    assert 'scope="read:orders"' in response.headers["WWW-Authenticate"]
    assert response.headers["Cache-Control"] == "no-store"


def test_a_claim_check_failure_is_401(client: FlaskClient, module_issuer: LocalIssuer) -> None:
    path = "/api/orgs/x/orders"
    ok = client.get(
        "/auth/check", headers={**original(path), **bearer(module_issuer.mint({"org_id": "org_123"}))}
    )
    assert ok.status_code == 200
    wrong = client.get(
        "/auth/check", headers={**original(path), **bearer(module_issuer.mint({"org_id": "org_9"}))}
    )
    assert wrong.status_code == 401
    assert 'error="invalid_token"' in wrong.headers["WWW-Authenticate"]


@pytest.mark.parametrize(("path", "method"), [("/nowhere", "GET"), ("/api/orders/1", "DELETE")])
def test_no_rule_is_403_no_rule_counted_unmatched(
    client: FlaskClient, module_issuer: LocalIssuer, path: str, method: str
) -> None:
    before = decisions("unmatched", "deny", "no_rule")
    response = client.get("/auth/check", headers={**original(path, method), **bearer(module_issuer.mint())})
    assert response.status_code == 403
    body = response.get_json()
    assert body["error"] and body["error_description"]
    # Compact with a newline, as jsonify renders every other answer of the service.
    assert response.data == json.dumps(body, separators=(",", ":")).encode() + b"\n"
    assert response.headers["Cache-Control"] == "no-store"
    assert decisions("unmatched", "deny", "no_rule") == before + 1


def test_keys_unavailable_is_503(issuer: LocalIssuer, policy_file: Path) -> None:
    token = issuer.mint()
    issuer.go_down()
    down = client_for(issuer, GATEWAY_POLICY=str(policy_file))
    response = down.get("/auth/check", headers={**original("/api/catalog/x"), **bearer(token)})
    assert response.status_code == 503
    assert response.headers["Retry-After"]


# -- DPoP --------------------------------------------------------------------------------------


def dpop(token: str, url: str, method: str = "GET", **kwargs: Any) -> dict[str, str]:
    return {
        "Authorization": f"DPoP {token}",
        "DPoP": make_proof(KEY, method, url, access_token=token, **kwargs),
    }


def test_dpop_is_checked_against_the_original_method_and_url(
    client: FlaskClient, module_issuer: LocalIssuer
) -> None:
    token = module_issuer.mint({"cnf": {"jkt": KEY.thumbprint()}}, scope="read:orders")
    url = f"{GATEWAY_URL}/api/orders/5"
    ok = client.get("/auth/check", headers={**original("/api/orders/5"), **dpop(token, url)})
    assert ok.status_code == 200, ok.get_json()
    for proof_url, method in (("http://localhost/auth/check", "GET"), (url, "POST")):
        response = client.get(
            "/auth/check", headers={**original("/api/orders/5"), **dpop(token, proof_url, method)}
        )
        assert response.status_code == 401
        assert response.get_json()["error"] == "invalid_dpop_proof"
    # Path-suffix mode: htu is this request's scheme and Host with the original path.
    suffix = client.get("/auth/check/api/orders/5", headers=dpop(token, "http://localhost/api/orders/5"))
    assert suffix.status_code == 200


def test_a_rule_requiring_dpop_refuses_bearer_with_a_dpop_challenge(
    client: FlaskClient, module_issuer: LocalIssuer
) -> None:
    response = client.get("/auth/check", headers={**original("/api/bound"), **bearer(module_issuer.mint())})
    assert response.status_code == 401
    assert response.headers.getlist("WWW-Authenticate")[0].startswith("DPoP")


def test_a_rule_with_dpop_disabled_refuses_the_dpop_scheme(
    client: FlaskClient, module_issuer: LocalIssuer
) -> None:
    token = module_issuer.mint({"cnf": {"jkt": KEY.thumbprint()}})
    response = client.get(
        "/auth/check", headers={**original("/api/bearer"), **dpop(token, f"{GATEWAY_URL}/api/bearer")}
    )
    assert response.status_code in (400, 401)
    assert all(not c.startswith("DPoP") for c in response.headers.getlist("WWW-Authenticate"))


def test_a_dpop_nonce_challenge_carries_the_nonce(module_issuer: LocalIssuer, policy_file: Path) -> None:
    nonce_client = client_for(
        module_issuer, GATEWAY_POLICY=str(policy_file), AUTH0_DPOP_NONCE="1", AUTH0_DPOP_NONCE_SECRET="s3cret"
    )
    token = module_issuer.mint({"cnf": {"jkt": KEY.thumbprint()}})
    url = f"{GATEWAY_URL}/api/bound"
    first = nonce_client.get("/auth/check", headers={**original("/api/bound"), **dpop(token, url)})
    assert first.status_code == 401 and first.get_json()["error"] == "use_dpop_nonce"
    nonce = first.headers["DPoP-Nonce"]
    second = nonce_client.get(
        "/auth/check", headers={**original("/api/bound"), **dpop(token, url, nonce=nonce)}
    )
    assert second.status_code == 200


def test_dpop_htm_is_the_original_method_not_the_subrequests(
    client: FlaskClient, module_issuer: LocalIssuer
) -> None:
    """nginx's auth subrequest is always a GET: a proof for the client's POST must pass, one for GET not."""
    token = module_issuer.mint({"cnf": {"jkt": KEY.thumbprint()}})
    url = f"{GATEWAY_URL}/api/catalog/items"
    posted = {**original("/api/catalog/items", "POST"), **dpop(token, url, "POST")}
    assert client.get("/auth/check", headers=posted).status_code == 200
    as_get = {**original("/api/catalog/items", "POST"), **dpop(token, url, "GET")}
    response = client.get("/auth/check", headers=as_get)
    assert response.status_code == 401
    assert response.get_json()["error"] == "invalid_dpop_proof"


def test_dot_segments_in_path_suffix_mode_are_400(client: FlaskClient, module_issuer: LocalIssuer) -> None:
    response = client.get(
        "/auth/check/api/public/%2e%2e/orders/1", headers=bearer(module_issuer.mint(scope="read:orders"))
    )
    assert response.status_code == 400
    assert response.get_json()["error"] == "invalid_request"
