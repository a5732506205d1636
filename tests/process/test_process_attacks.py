"""Attack and malformed tokens and headers against real gunicorn: 400/401, never 2xx or 5xx."""

from __future__ import annotations

import http.client

import pytest

from tests.support import mint as tokens
from tests.support.issuer import LocalIssuer
from tests.support.procs import Server
from tests.support.procs import ServerFactory

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def server(module_issuer: LocalIssuer, module_gunicorn: ServerFactory) -> Server:
    """Two workers, warmed so every attack meets a populated key cache."""
    srv = module_gunicorn(module_issuer, workers=2)
    assert srv.get("/api/private", token=module_issuer.mint()).status == 200
    return srv


def test_every_attack_token_is_refused(server: Server, module_issuer: LocalIssuer) -> None:
    """Each attack token gets an RFC 6750 401 invalid_token from the app.

    The oversized one is 20 KB: above AUTH0_MAX_TOKEN_BYTES, within gunicorn's field limit, so the
    app refuses it (larger fields get the worker's 431, tested with the hostile clients).
    """
    attacker_path = "/attacker/jwks.json"
    attacks = tokens.all_attacks(module_issuer)
    attacks["huge"] = tokens.huge(module_issuer, 20_000)
    attacks["jku_local"] = tokens.jku(module_issuer, module_issuer.url + attacker_path.lstrip("/"))
    attacks["x5u_local"] = tokens.x5u(module_issuer, module_issuer.url + "attacker/cert.pem")
    failures = []
    for name, token in attacks.items():
        for path in ("/api/private", "/api/private-scoped"):
            resp = server.get(path, token=token)
            allowed = {401}
            if resp.status not in allowed:
                failures.append((name, path, resp.status, resp.body[:120]))
            elif resp.status == 401:
                challenge = resp.header("WWW-Authenticate") or ""
                if 'error="invalid_token"' not in challenge:
                    failures.append((name, path, "challenge", challenge))
                body = resp.json()
                if token in resp.body.decode() or set(body) < {"error", "error_description"}:
                    failures.append((name, path, "body", body))
    assert not failures, failures
    fetched = {path for path, _ in module_issuer.requests}
    assert not any(p.startswith("/attacker") for p in fetched), fetched


@pytest.mark.parametrize(
    "value",
    [
        "Bearer",
        "Bearer ",
        "Bearer a b",
        "Basic dXNlcjpwYXNz",
        "bearer",
        "Token abc",
        "Bearer \u00e9t\u00e9",
        "Bearer " + "a" * 15000,
        "Bearer ..",
        "Bearer a.b.c",
        ",,,,",
    ],
    ids=lambda v: v[:20].encode("ascii", "backslashreplace").decode(),
)
def test_malformed_authorization_is_4xx(server: Server, value: str) -> None:
    """Junk Authorization headers give 400 invalid_request or 401, never 200 or 5xx."""
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
    try:
        conn.putrequest("GET", "/api/private")
        conn.putheader("Authorization", value.encode("utf-8"))
        conn.putheader("Connection", "close")
        conn.endheaders()
        resp = conn.getresponse()
        resp.read()
        assert resp.status in (400, 401), (value[:40], resp.status)
    finally:
        conn.close()


def test_server_survives_the_onslaught(server: Server, module_issuer: LocalIssuer) -> None:
    """After everything above the server still runs, verifies good tokens, and logged no crash."""
    assert server.alive()
    assert server.get("/api/private", token=module_issuer.mint()).status == 200
    assert "Traceback" not in server.output()
