"""DPoP against real gunicorn with 2 workers: replay refused across workers, nonces, modes."""

from __future__ import annotations

import pytest
from joserfc.jwk import ECKey

from dev_issuer.client import make_proof
from tests.support.issuer import LocalIssuer
from tests.support.procs import Response
from tests.support.procs import Server
from tests.support.procs import ServerFactory

pytestmark = pytest.mark.slow

KEY = ECKey.generate_key("P-256", private=True)
#: Bounded attempts to land a request on the other worker (the kernel picks the acceptor).
ATTEMPTS = 60


def bound_token(issuer: LocalIssuer) -> str:
    return issuer.mint({"cnf": {"jkt": KEY.thumbprint()}})


def send(server: Server, token: str, proof: str, path: str = "/api/private") -> Response:
    return server.get(path, headers={"Authorization": f"DPoP {token}", "DPoP": proof})


def proof_for(server: Server, token: str, nonce: str | None = None, path: str = "/api/private") -> str:
    return make_proof(KEY, "GET", f"{server.base_url}{path}", access_token=token, nonce=nonce)


def served_by(server: Server, **labels: str) -> set[int]:
    """The workers whose counters show at least one such decision."""
    return {pid for pid, n in server.per_worker("auth_decisions_total", **labels).items() if n}


def test_a_proof_replayed_on_another_worker_is_refused(
    module_issuer: LocalIssuer, gunicorn: ServerFactory
) -> None:
    server = gunicorn(module_issuer, workers=2)
    token = bound_token(module_issuer)
    proof = proof_for(server, token)
    assert send(server, token, proof).status == 200
    first = served_by(server, outcome="allow", scheme="dpop")
    assert len(first) == 1
    others: set[int] = set()
    for _ in range(ATTEMPTS):
        replay = send(server, token, proof)
        assert replay.status == 401, replay.body
        assert replay.json()["error"] == "invalid_dpop_proof"
        others = served_by(server, reason="dpop_replay") - first
        if others:
            break
    assert others, "no replay reached the second worker"
    records = server.wait_for_record(lambda r: r.get("reason") == "dpop_replay")
    assert records and records[0]["scheme"] == "dpop"
    assert proof not in server.output() and token not in server.output()


def test_the_nonce_flow_holds_across_workers(module_issuer: LocalIssuer, gunicorn: ServerFactory) -> None:
    # No AUTH0_DPOP_NONCE_SECRET: the master draws one before forking, so both workers agree.
    server = gunicorn(module_issuer, workers=2, env={"AUTH0_DPOP_NONCE": "1"})
    token = bound_token(module_issuer)
    asked = send(server, token, proof_for(server, token))
    assert asked.status == 401 and asked.json()["error"] == "use_dpop_nonce"
    assert (asked.header("WWW-Authenticate") or "").startswith('DPoP error="use_dpop_nonce"')
    nonce = asked.header("DPoP-Nonce")
    assert nonce
    for _ in range(ATTEMPTS):
        response = send(server, token, proof_for(server, token, nonce))
        assert response.status == 200, response.body
        if len(served_by(server, outcome="allow", scheme="dpop")) == 2:
            break
    assert len(served_by(server, outcome="allow", scheme="dpop")) == 2
    assert len(served_by(server, reason="dpop_nonce")) == 1


def test_required_mode_takes_dpop_only(module_issuer: LocalIssuer, gunicorn: ServerFactory) -> None:
    server = gunicorn(module_issuer, workers=2, env={"AUTH0_DPOP": "required"})
    refused = server.get("/api/private", token=module_issuer.mint())
    assert refused.status == 401
    assert (refused.header("WWW-Authenticate") or "").startswith("DPoP ")
    assert "Bearer" not in (refused.header("WWW-Authenticate") or "")
    token = bound_token(module_issuer)
    assert send(server, token, proof_for(server, token)).status == 200
    metadata = server.get("/.well-known/oauth-protected-resource").json()
    assert metadata["dpop_bound_access_tokens_required"] is True


def test_disabled_mode_answers_as_before_dpop(module_issuer: LocalIssuer, gunicorn: ServerFactory) -> None:
    server = gunicorn(module_issuer, workers=2, env={"AUTH0_DPOP": "disabled"})
    token = bound_token(module_issuer)
    refused = send(server, token, proof_for(server, token))
    assert refused.status == 401
    assert refused.header("WWW-Authenticate") == 'Bearer realm="api"'
    assert server.get("/api/private", token=token).status == 200
