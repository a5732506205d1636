"""The route contract and RFC 6750 error shapes, in process against a real local issuer."""

from __future__ import annotations

import pytest

from tests.support.appkit import bearer
from tests.support.appkit import client_for
from tests.support.helpers import eventually
from tests.support.issuer import LocalIssuer


@pytest.fixture(scope="module")
def client(module_issuer: LocalIssuer):
    return client_for(module_issuer, CORS_ALLOWED_ORIGINS="https://spa.example")


@pytest.mark.parametrize(
    "path, none, plain, scoped",
    [
        ("/api/public", 200, 200, 200),
        ("/api/private", 401, 200, 200),
        ("/api/private-scoped", 401, 403, 200),
    ],
)
def test_route_table(client, module_issuer: LocalIssuer, path, none, plain, scoped) -> None:
    assert client.get(path).status_code == none
    assert client.get(path, headers=bearer("not-a-jwt")).status_code == none
    assert client.get(path, headers=bearer(module_issuer.mint(scope=None))).status_code == plain
    response = client.get(path, headers=bearer(module_issuer.mint(scope="read:messages")))
    assert response.status_code == scoped
    assert "message" in response.get_json()


def test_missing_token_is_401_with_a_bare_challenge(client) -> None:
    response = client.get("/api/private")
    assert response.status_code == 401
    assert response.headers["WWW-Authenticate"] == 'Bearer realm="api"'
    body = response.get_json()
    assert set(body) == {"error", "error_description"}


def test_rejected_token_is_401_invalid_token_without_echoing_it(client) -> None:
    token = "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJ4In0.c2lnbmF0dXJl"
    response = client.get("/api/private", headers=bearer(token))
    assert response.status_code == 401
    challenge = response.headers["WWW-Authenticate"]
    assert challenge.startswith('Bearer realm="api", error="invalid_token"')
    assert token not in response.get_data(as_text=True) and token not in challenge


def test_insufficient_scope_is_403_naming_the_scope(client, module_issuer) -> None:
    response = client.get("/api/private-scoped", headers=bearer(module_issuer.mint(scope="read:other")))
    assert response.status_code == 403
    assert response.get_json()["error"] == "insufficient_scope"
    challenge = response.headers["WWW-Authenticate"]
    assert 'error="insufficient_scope"' in challenge and 'scope="read:messages"' in challenge


@pytest.mark.parametrize(
    "header",
    ["Bearer", "Bearer ", "Bearer a b", "Bearer a,b", "Bearer\ta b", "bearer  x y z"],
)
def test_malformed_authorization_is_400_invalid_request(client, header: str) -> None:
    response = client.get("/api/private", headers={"Authorization": header})
    assert response.status_code == 400
    assert response.get_json()["error"] == "invalid_request"
    assert 'error="invalid_request"' in response.headers["WWW-Authenticate"]


@pytest.mark.parametrize("header", ["Basic dXNlcjpwYXNz", "Token abc", "", "   ", "Bearer\x00x"])
def test_other_or_junk_authorization_is_never_200_or_5xx(client, header: str) -> None:
    status = client.get("/api/private", headers={"Authorization": header}).status_code
    assert status in (400, 401)


def test_token_in_query_string_is_refused(client, module_issuer) -> None:
    response = client.get(f"/api/private?access_token={module_issuer.mint()}")
    assert response.status_code == 400


def test_scheme_is_case_insensitive(client, module_issuer) -> None:
    response = client.get("/api/private", headers={"Authorization": f"bEaReR {module_issuer.mint()}"})
    assert response.status_code == 200


def test_cors_preflight_never_needs_a_token(client) -> None:
    response = client.options(
        "/api/private-scoped",
        headers={
            "Origin": "https://spa.example",
            "Access-Control-Request-Method": "GET",
            "Access-Control-Request-Headers": "authorization",
        },
    )
    assert response.status_code == 200
    assert response.headers["Access-Control-Allow-Origin"] == "https://spa.example"
    assert "authorization" in response.headers["Access-Control-Allow-Headers"].lower()


def test_cors_refuses_unlisted_origins(client) -> None:
    response = client.get("/api/public", headers={"Origin": "https://evil.example"})
    assert "Access-Control-Allow-Origin" not in response.headers


def test_request_id_is_reused_when_well_formed(client) -> None:
    response = client.get("/api/public", headers={"X-Request-ID": "abc-123_x.y:z"})
    assert response.headers["X-Request-ID"] == "abc-123_x.y:z"


@pytest.mark.parametrize("incoming", [None, "", "has space", "x" * 200, "bad\"quote", "新"])
def test_request_id_is_generated_when_missing_or_malformed(client, incoming) -> None:
    headers = {"X-Request-ID": incoming} if incoming is not None else {}
    response = client.get("/api/private", headers=headers)
    generated = response.headers["X-Request-ID"]
    assert generated and generated != incoming and len(generated) == 32


def test_unknown_route_is_json_404(client) -> None:
    response = client.get("/nope")
    assert response.status_code == 404 and response.get_json()["error"] == "not_found"


def test_healthz_is_200_even_when_the_issuer_is_down() -> None:
    with LocalIssuer() as issuer:
        client = client_for(issuer)
        issuer.go_down()
        assert client.get("/healthz").status_code == 200
        assert client.get("/readyz").status_code == 503


def test_keys_unavailable_is_503_with_retry_after_not_401() -> None:
    with LocalIssuer() as issuer:
        client = client_for(issuer)
        token = issuer.mint()
        issuer.go_down()
        assert client.get("/api/public").status_code == 200
        response = client.get("/api/private", headers=bearer(token))
        assert response.status_code == 503
        assert response.headers["Retry-After"].isdigit()
        assert response.get_json()["error"] == "temporarily_unavailable"
        issuer.come_up()
        assert eventually(lambda: client.get("/readyz").status_code == 200, timeout=3)
        assert client.get("/api/private", headers=bearer(token)).status_code == 200


def test_metrics_endpoint_serves_prometheus_text(client, module_issuer) -> None:
    client.get("/api/private", headers=bearer(module_issuer.mint()))
    response = client.get("/metrics")
    assert response.status_code == 200
    assert response.content_type.startswith("text/plain")
    text = response.get_data(as_text=True)
    assert 'auth_decisions_total{outcome="allow",reason="ok",route="/api/private",scheme="bearer"}' in text
    assert "jwks_fetches_total" in text and "http_requests_total" in text


def test_metrics_labels_use_route_templates_not_raw_paths(client) -> None:
    client.get("/api/secret-user-123")
    text = client.get("/metrics").get_data(as_text=True)
    assert "secret-user-123" not in text
    assert 'route="unmatched"' in text


def test_requests_without_origin_get_vary_but_no_cors_headers(client) -> None:
    response = client.get("/api/public")
    assert "Origin" in response.headers.get("Vary", "")
    assert "Access-Control-Allow-Origin" not in response.headers


def test_generated_request_ids_are_unique(client) -> None:
    ids = {client.get("/api/public").headers["X-Request-ID"] for _ in range(200)}
    assert len(ids) == 200
