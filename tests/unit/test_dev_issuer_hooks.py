"""The dev issuer's runtime hooks, as tests and the benchmark drive them over real HTTP."""

from __future__ import annotations

import base64
import json
import urllib.request

from dev_issuer.app import create_app
from dev_issuer.config import IssuerSettings
from dev_issuer.server import BackgroundServer
from tests.support.issuer import LocalIssuer


def _get(url: str) -> tuple[int, dict[str, str], bytes]:
    """GET a URL and return status, headers and body."""
    with urllib.request.urlopen(url, timeout=5) as response:
        return response.status, dict(response.headers.items()), response.read()


def test_jwks_fetches_are_counted_per_client_tag(issuer: LocalIssuer) -> None:
    """?client= labels a fetch in /stats; untagged fetches have their own row."""
    _get(issuer.jwks_uri + "?client=ours")
    _get(issuer.jwks_uri + "?client=ours")
    _get(issuer.jwks_uri)
    _, _, body = _get(issuer.url + "stats")
    assert json.loads(body) == {"ours": 2, "untagged": 1}
    assert issuer.jwks_fetches == 3


def test_jwks_max_age_setting_sets_cache_control() -> None:
    """DEV_ISSUER_JWKS_MAX_AGE becomes a public max-age on the JWKS answer only."""
    settings = IssuerSettings.from_env({"DEV_ISSUER_JWKS_MAX_AGE": "600"})
    server = BackgroundServer(create_app(settings)).start()
    try:
        base = f"http://127.0.0.1:{server.port}/"
        _, headers, _ = _get(base + ".well-known/jwks.json")
        assert headers["Cache-Control"] == "public, max-age=600"
        _, headers, _ = _get(base + ".well-known/openid-configuration")
        assert "Cache-Control" not in headers
    finally:
        server.stop()


def test_canned_answer_carries_only_the_given_headers(issuer: LocalIssuer) -> None:
    """A canned JWKS body is served byte for byte with no default Content-Type added."""
    issuer.serve_raw(b"not json", 200)
    _, headers, body = _get(issuer.jwks_uri)
    assert body == b"not json"
    assert "Content-Type" not in headers


def test_token_endpoint_signs_with_the_rotated_key(issuer: LocalIssuer) -> None:
    """After rotation the issuer's own token endpoint signs with the new current key."""
    new = issuer.rotate()
    request = urllib.request.Request(
        issuer.url + "oauth/token",
        data=json.dumps(
            {
                "grant_type": "client_credentials",
                "client_id": "dev-client",
                "client_secret": "dev-secret",
                "audience": issuer.audience,
            }
        ).encode(),
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=5) as response:
        token = json.loads(response.read())["access_token"]
    header = json.loads(base64.urlsafe_b64decode(token.split(".")[0] + "=="))
    assert header["kid"] == new.kid
