"""require_auth on a team's own routes: every Authlib form, per-route 403s, claims, labels, in process."""

from __future__ import annotations

import pytest
from authlib.integrations.flask_oauth2 import current_token
from flask import Blueprint
from flask import jsonify
from prometheus_client import REGISTRY

from service.auth import require_auth
from tests.support import orders_example
from tests.support.appkit import bearer
from tests.support.appkit import settings_for
from tests.support.issuer import LocalIssuer

extra = Blueprint("extra", __name__, url_prefix="/api/extra")


@extra.get("/bare")
@require_auth
def bare():
    """The bare decorator, as Authlib allows: any valid token."""
    return jsonify(sub=current_token.sub)


@extra.get("/any")
@require_auth()
def any_token():
    """Any valid token; the view sees the verified claims and permissions."""
    return jsonify(sub=current_token.sub, scope=current_token.get_scope(), aud=current_token.claims["aud"])


@extra.get("/mapping")
@require_auth()
def mapping():
    """Authlib's JWT idiom: the token reads like its claims dict."""
    has_aud = "aud" in current_token
    return jsonify(sub=current_token["sub"], azp=current_token.get("azp", "-"), has_aud=has_aud,
                   claims=dict(current_token))


@extra.get("/with")
def with_acquire():
    """Authlib's context-manager form."""
    with require_auth.acquire("read:orders") as token:
        return jsonify(sub=token.sub)


@extra.get("/predicate")
@require_auth(claims=lambda claims: claims.get("tier") in ("gold", "platinum"))
def predicate():
    """One predicate over all claims."""
    return jsonify(ok=True)


@extra.get("/per-claim")
@require_auth(claims={"amr": lambda amr: "mfa" in (amr or ()), "verified": True})
def per_claim():
    """A per-claim predicate and a boolean equality."""
    return jsonify(ok=True)


@extra.get("/buggy")
@require_auth(claims=lambda claims: claims["no-such-claim"])
def buggy():
    """A predicate that raises: must fail closed."""
    return jsonify(ok=True)


@pytest.fixture(scope="module")
def client(module_issuer: LocalIssuer):
    app = orders_example.create_app(settings_for(module_issuer))
    app.register_blueprint(extra)
    return app.test_client()


def _decisions(route: str, outcome: str, reason: str) -> float:
    labels = {"route": route, "outcome": outcome, "reason": reason}
    return sum(
        REGISTRY.get_sample_value("auth_decisions_total", {**labels, "scheme": scheme}) or 0.0
        for scheme in ("bearer", "dpop", "none")
    )


def _challenge(response) -> str:
    return response.headers.get("WWW-Authenticate", "")


@pytest.mark.parametrize(
    "scope, permissions, status",
    [
        ("read:orders", None, 200),
        (None, ["read:orders"], 200),
        ("read:orders:all", None, 403),
        ("read", None, 403),
        (None, None, 403),
    ],
)
def test_single_scope_route_matches_scope_and_rbac_permissions_exactly(
    client, module_issuer, scope, permissions, status
) -> None:
    token = module_issuer.mint(scope=scope, permissions=permissions)
    assert client.get("/api/orders/7", headers=bearer(token)).status_code == status


def test_parameterised_route_passes_its_arguments_and_the_current_token(client, module_issuer) -> None:
    response = client.get("/api/orders/42", headers=bearer(module_issuer.mint(scope="read:orders")))
    assert response.get_json() == {"id": 42, "requested_by": module_issuer.claims()["sub"]}


def test_custom_permission_403_names_the_route_permission(client, module_issuer) -> None:
    response = client.get("/api/orders/1", headers=bearer(module_issuer.mint(scope="read:messages")))
    assert response.status_code == 403
    assert _challenge(response) == (
        'Bearer realm="api", error="insufficient_scope", scope="read:orders", '
        "error_description=\"The access token lacks the 'read:orders' permission.\""
    )
    assert response.get_json() == {
        "error": "insufficient_scope",
        "error_description": "The access token lacks the 'read:orders' permission.",
    }
    assert "read:messages" not in _challenge(response)


@pytest.mark.parametrize(
    "scope, status",
    [
        ("read:orders write:orders", 201),
        ("write:orders read:orders extra", 201),
        ("write:orders", 403),
        ("read:orders", 403),
    ],
)
def test_space_delimited_scopes_are_all_required(client, module_issuer, scope, status) -> None:
    token = module_issuer.mint({"org_id": "org_123"}, scope=scope)
    response = client.post("/api/orders", headers=bearer(token))
    assert response.status_code == status
    if status == 403:
        assert 'scope="read:orders write:orders"' in _challenge(response)
        assert "all are required" in response.get_json()["error_description"]


@pytest.mark.parametrize(
    "scope, status",
    [
        ("delete:orders", 200), ("admin", 200), ("admin delete:orders", 200),
        ("write:orders", 403), (None, 403),
    ],
)
def test_list_of_alternatives_needs_any_one(client, module_issuer, scope, status) -> None:
    response = client.delete("/api/orders/9", headers=bearer(module_issuer.mint(scope=scope)))
    assert response.status_code == status


def test_alternatives_403_names_the_first_and_lists_all(client, module_issuer) -> None:
    response = client.delete("/api/orders/9", headers=bearer(module_issuer.mint(scope="read:orders")))
    assert 'scope="delete:orders"' in _challenge(response)
    description = response.get_json()["error_description"]
    assert "'delete:orders'" in description and "'admin'" in description
    assert f'error_description="{description}"' in _challenge(response)


def test_optional_route_runs_without_a_token_and_counts_it_anonymous(client) -> None:
    before = _decisions("/api/orders/feed", "allow", "anonymous")
    response = client.get("/api/orders/feed")
    assert response.status_code == 200 and response.get_json() == {"feed": "public"}
    assert _decisions("/api/orders/feed", "allow", "anonymous") == before + 1


def test_optional_route_with_a_valid_token_sees_it(client, module_issuer) -> None:
    response = client.get("/api/orders/feed", headers=bearer(module_issuer.mint(scope=None)))
    assert response.get_json() == {"feed": "yours", "sub": module_issuer.claims()["sub"]}


@pytest.mark.parametrize(
    "headers", [bearer("not-a-jwt"), {"Authorization": "Bearer a b"}, {"Authorization": "Basic dXNlcjpw"}]
)
def test_optional_route_still_refuses_a_bad_or_foreign_credential(client, headers) -> None:
    response = client.get("/api/orders/feed", headers=headers)
    assert response.status_code in (400, 401)
    assert _challenge(response).startswith('Bearer realm="api"')


def test_optional_route_refuses_an_expired_token(client, module_issuer) -> None:
    token = module_issuer.mint(claims={"exp": 1_000_000_000, "iat": 999_999_000})
    assert client.get("/api/orders/feed", headers=bearer(token)).status_code == 401


@pytest.mark.parametrize("path", ["/api/extra/bare", "/api/extra/any"])
def test_no_scope_forms_accept_any_valid_token(client, module_issuer, path) -> None:
    assert client.get(path).status_code == 401
    response = client.get(path, headers=bearer(module_issuer.mint(scope=None)))
    assert response.status_code == 200
    assert response.get_json()["sub"] == module_issuer.claims()["sub"]


def test_current_token_carries_claims_and_permissions(client, module_issuer) -> None:
    token = module_issuer.mint(scope="b a", permissions=["c"])
    body = client.get("/api/extra/any", headers=bearer(token)).get_json()
    assert body["scope"] == "a b c" and body["aud"] == module_issuer.audience


def test_current_token_reads_like_authlibs_claims_dict(client, module_issuer) -> None:
    response = client.get("/api/extra/mapping", headers=bearer(module_issuer.mint({"azp": "app-1"})))
    body = response.get_json()
    assert response.status_code == 200, body
    assert body["sub"] == module_issuer.claims()["sub"] and body["azp"] == "app-1" and body["has_aud"]
    assert body["claims"]["aud"] == module_issuer.audience


def test_acquire_context_manager_answers_and_counts_like_the_decorator(client, module_issuer) -> None:
    before = _decisions("/api/extra/with", "deny", "insufficient_scope")
    response = client.get("/api/extra/with", headers=bearer(module_issuer.mint(scope=None)))
    assert response.status_code == 403 and 'scope="read:orders"' in _challenge(response)
    assert _decisions("/api/extra/with", "deny", "insufficient_scope") == before + 1
    ok = client.get("/api/extra/with", headers=bearer(module_issuer.mint(scope="read:orders")))
    assert ok.status_code == 200


@pytest.mark.parametrize(
    "claims, status",
    [
        ({"org_id": "org_123"}, 201),
        ({"org_id": "org_999"}, 401),
        ({"org_id": ["org_123"]}, 401),
        ({}, 401),
    ],
)
def test_claim_equality(client, module_issuer, claims, status) -> None:
    token = module_issuer.mint(claims, scope="read:orders write:orders")
    response = client.post("/api/orders", headers=bearer(token))
    assert response.status_code == status
    if status == 401:
        assert response.get_json()["error"] == "invalid_token"
        assert 'error="invalid_token"' in _challenge(response)


def test_failed_claim_check_is_401_even_when_scopes_are_missing_too(client, module_issuer) -> None:
    before = _decisions("/api/orders", "deny", "claim_check")
    response = client.post("/api/orders", headers=bearer(module_issuer.mint({"org_id": "x"}, scope=None)))
    assert response.status_code == 401
    assert _decisions("/api/orders", "deny", "claim_check") == before + 1


@pytest.mark.parametrize("tier, status", [("gold", 200), ("platinum", 200), ("bronze", 401), (None, 401)])
def test_claim_predicate(client, module_issuer, tier, status) -> None:
    token = module_issuer.mint({"tier": tier} if tier else None)
    assert client.get("/api/extra/predicate", headers=bearer(token)).status_code == status


@pytest.mark.parametrize(
    "claims, status",
    [
        ({"amr": ["pwd", "mfa"], "verified": True}, 200),
        ({"amr": ["pwd"], "verified": True}, 401),
        ({"verified": True}, 401),
        ({"amr": ["mfa"], "verified": 1}, 401),
        ({"amr": ["mfa"], "verified": "true"}, 401),
    ],
)
def test_per_claim_predicates_and_boolean_equality(client, module_issuer, claims, status) -> None:
    token = module_issuer.mint(claims)
    assert client.get("/api/extra/per-claim", headers=bearer(token)).status_code == status


def test_a_raising_claim_predicate_fails_closed_as_401(client, module_issuer) -> None:
    response = client.get("/api/extra/buggy", headers=bearer(module_issuer.mint()))
    assert response.status_code == 401
    assert response.get_json()["error"] == "invalid_token"


def test_route_label_is_the_url_rule_never_the_raw_path(client, module_issuer) -> None:
    token = module_issuer.mint(scope="read:orders")
    before = _decisions("/api/orders/<int:order_id>", "allow", "ok")
    for order_id in (1, 2, 3):
        client.get(f"/api/orders/{order_id}", headers=bearer(token))
    assert _decisions("/api/orders/<int:order_id>", "allow", "ok") == before + 3
    text = client.get("/metrics").get_data(as_text=True)
    assert 'route="/api/orders/<int:order_id>"' in text
    assert 'route="/api/orders/2"' not in text


def test_demo_routes_keep_their_labels(client, module_issuer) -> None:
    before = _decisions("/api/private-scoped", "deny", "insufficient_scope")
    response = client.get("/api/private-scoped", headers=bearer(module_issuer.mint(scope=None)))
    assert 'scope="read:messages"' in _challenge(response)
    assert _decisions("/api/private-scoped", "deny", "insufficient_scope") == before + 1
    before = _decisions("/api/private", "allow", "ok")
    client.get("/api/private", headers=bearer(module_issuer.mint()))
    assert _decisions("/api/private", "allow", "ok") == before + 1


@pytest.mark.parametrize("scopes", ["", "read:orders  write:orders", 'a"b', ["ok", ""], [["a"]], "é"])
def test_malformed_required_scopes_are_refused_when_the_route_is_declared(scopes) -> None:
    with pytest.raises(ValueError):
        require_auth(scopes)


@pytest.mark.parametrize("claims", [{}, "org_id", {"": 1}, 42])
def test_malformed_claim_checks_are_refused_when_the_route_is_declared(claims) -> None:
    with pytest.raises(TypeError):
        require_auth(claims=claims)
