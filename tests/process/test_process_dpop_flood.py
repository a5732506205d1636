"""A flood of unique DPoP proofs from one key, against real gunicorn: every other key is unaffected."""

from __future__ import annotations

import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor

import pytest
from joserfc.jwk import ECKey

from dev_issuer.client import make_proof
from tests.support.issuer import LocalIssuer
from tests.support.procs import Response
from tests.support.procs import Server
from tests.support.procs import ServerFactory
from tests.support.procs import metric_sum

pytestmark = pytest.mark.slow

PATH = "/api/private"
FLOOD = 3000


def send(server: Server, token: str, proof: str) -> Response:
    return server.get(PATH, headers={"Authorization": f"DPoP {token}", "DPoP": proof})


def fresh_proof(server: Server, key: ECKey, token: str, ahead: int = 0) -> str:
    claims = {"iat": int(time.time()) + ahead}
    return make_proof(key, "GET", server.base_url + PATH, access_token=token, claims=claims)


def test_a_flood_from_one_key_leaves_every_other_key_served(
    module_issuer: LocalIssuer, gunicorn: ServerFactory
) -> None:
    server = gunicorn(module_issuer, workers=2, env={"AUTH0_DPOP_REPLAY_CAPACITY": "1024"})
    flooder = ECKey.generate_key("P-256", private=True)
    flood_token = module_issuer.mint({"cnf": {"jkt": flooder.thumbprint()}})

    def flood_one(_: int) -> tuple[str, int]:
        # Dated as far ahead as the leeway allows: the longest-lived entries there are.
        proof = fresh_proof(server, flooder, flood_token, ahead=25)
        return proof, send(server, flood_token, proof).status

    with ThreadPoolExecutor(8) as pool:
        flood = list(pool.map(flood_one, range(FLOOD)))
    statuses = Counter(status for _, status in flood)
    assert set(statuses) <= {200, 429} and statuses[200] >= 1, statuses

    for _ in range(50):
        key = ECKey.generate_key("P-256", private=True)
        token = module_issuer.mint({"cnf": {"jkt": key.thumbprint()}})
        answer = send(server, token, fresh_proof(server, key, token))
        assert answer.status == 200, answer.body

    accepted = [proof for proof, status in flood if status == 200][:100]
    for proof in accepted:
        replay = send(server, flood_token, proof)
        assert replay.status == 401, replay.body
        assert replay.json()["error"] == "invalid_dpop_proof"

    # Past its share the flooding key is refused with a reason of its own, counted and logged.
    assert statuses[429] >= 1, statuses
    refused = server.wait_for_record(lambda r: r.get("reason") == "dpop_flood", count=statuses[429])
    assert len(refused) == statuses[429] and refused[0]["scheme"] == "dpop"
    samples = server.metrics()
    assert metric_sum(samples, "auth_decisions_total", reason="dpop_flood") == statuses[429]
    assert metric_sum(samples, "auth_decisions_total", reason="dpop_replay") == len(accepted)


def test_a_key_past_its_share_is_told_to_retry_later(
    module_issuer: LocalIssuer, gunicorn: ServerFactory
) -> None:
    server = gunicorn(module_issuer, workers=1, env={"AUTH0_DPOP_REPLAY_CAPACITY": "1024"})
    key = ECKey.generate_key("P-256", private=True)
    token = module_issuer.mint({"cnf": {"jkt": key.thumbprint()}})
    answers = [send(server, token, fresh_proof(server, key, token)) for _ in range(1024 // 8 + 1)]
    assert [a.status for a in answers[:-1]] == [200] * (1024 // 8)
    refused = answers[-1]
    assert refused.status == 429
    assert refused.json()["error"] == "temporarily_unavailable"
    assert int(refused.header("Retry-After") or "0") >= 1
    assert refused.header("WWW-Authenticate") is None
