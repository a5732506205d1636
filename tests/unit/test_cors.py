"""CORS on /api/*: answered for browsers' cross-origin requests only, never without an Origin."""

from __future__ import annotations

import pytest

from tests.support.appkit import app_for
from tests.support.issuer import LocalIssuer

SPA = "https://spa.example"


@pytest.fixture(scope="module")
def app(module_issuer: LocalIssuer):
    """One app allowing the SPA's origin (the shared ``client`` fixture talks to it)."""
    return app_for(module_issuer, CORS_ALLOWED_ORIGINS=SPA)


def _cors_headers(response) -> dict[str, str]:
    return {k: v for k, v in response.headers.items() if k.lower().startswith("access-control-")}


@pytest.mark.parametrize(
    ("method", "path", "status"),
    [
        ("GET", "/api/public", 200),
        ("GET", "/api/private", 401),
        ("POST", "/api/public", 405),
        ("GET", "/api/nope", 404),
    ],
)
def test_answers_without_origin_carry_no_cors_headers(client, method, path, status) -> None:
    """Errors included: without an Origin there is no CORS request to answer, only Vary."""
    response = client.open(path, method=method)
    assert response.status_code == status
    assert _cors_headers(response) == {}
    assert "Origin" in response.headers.get("Vary", "")


@pytest.mark.parametrize(("method", "status"), [("GET", 401), ("POST", 405)])
def test_cross_origin_errors_are_readable_by_the_allowed_origin(client, method, status) -> None:
    """A browser can read a 401/405 from /api: the refusal carries the CORS answer too."""
    response = client.open("/api/private", method=method, headers={"Origin": SPA})
    assert response.status_code == status
    assert response.headers["Access-Control-Allow-Origin"] == SPA
    assert "WWW-Authenticate" in response.headers["Access-Control-Expose-Headers"]


def test_cors_is_not_answered_outside_api(client) -> None:
    """Operational endpoints are not for browsers: no CORS headers even with an allowed Origin."""
    response = client.get("/healthz", headers={"Origin": SPA})
    assert _cors_headers(response) == {}


def test_preflight_is_answered_with_max_age(client) -> None:
    """A preflight gets the allowed headers and a 10-minute Access-Control-Max-Age."""
    response = client.options(
        "/api/private-scoped",
        headers={"Origin": SPA, "Access-Control-Request-Method": "GET"},
    )
    assert response.status_code == 200
    assert response.headers["Access-Control-Allow-Origin"] == SPA
    assert response.headers["Access-Control-Max-Age"] == "600"
