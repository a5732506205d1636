"""AUTH0_TOKEN_CACHE_BYTES bounds the verified-token cache of a real gunicorn worker."""

from __future__ import annotations

import pytest

from tests.support.issuer import LocalIssuer
from tests.support.procs import ServerFactory
from tests.support.procs import metric_sum

pytestmark = pytest.mark.slow

RBAC = [f"read:resource-{i:04d}" for i in range(500)]


def test_large_tokens_beyond_the_byte_budget_are_verified_again(
    issuer: LocalIssuer, gunicorn: ServerFactory
) -> None:
    # 64 KiB holds five ~11 KiB entries; the entry count (10,000) is far away.
    server = gunicorn(issuer, workers=1, env={"AUTH0_TOKEN_CACHE_BYTES": "65536"})
    tokens = [issuer.mint({"jti": f"big-{i}"}, permissions=RBAC) for i in range(12)]
    for token in [*tokens, *reversed(tokens)]:
        resp = server.get("/api/private-scoped", token=token)
        assert resp.status == 200  # read:messages in scope; 500 RBAC permissions beside it
    samples = server.metrics()
    hits = metric_sum(samples, "token_cache_requests_total", result="hit")
    misses = metric_sum(samples, "token_cache_requests_total", result="miss")
    # Second pass, newest first: five still cached, the seven older ones evicted by bytes.
    assert (hits, misses) == (5, 19)


def test_the_byte_budget_must_leave_room_for_a_token(issuer: LocalIssuer, gunicorn: ServerFactory) -> None:
    server = gunicorn(issuer, workers=1, env={"AUTH0_TOKEN_CACHE_BYTES": "1024"}, wait=False)
    code = server.proc.wait(timeout=30)
    naming = [line for line in server.output().splitlines() if "AUTH0_TOKEN_CACHE_BYTES" in line]
    assert code == 78 and len(naming) == 1, server.output()[-2000:]
