"""DPoP replay across pods: real gunicorn masters sharing one real redis-server on loopback."""

from __future__ import annotations

import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from joserfc.jwk import ECKey

from dev_issuer.client import make_proof
from service.config import default_replay_prefix
from tests.support.helpers import eventually
from tests.support.issuer import LocalIssuer
from tests.support.procs import Response
from tests.support.procs import Server
from tests.support.procs import ServerFactory
from tests.support.procs import metric_sum
from tests.support.procs import run_to_exit
from tests.support.procs import service_env
from tests.support.redis_server import RedisServer

pytestmark = pytest.mark.slow

KEY = ECKey.generate_key("P-256", private=True)
#: Not the service's 50 ms default: a loaded test machine must not turn a slow answer into an
#: outage where the test expects Redis to answer. The outage tests use the default.
PATIENT = "1"


@pytest.fixture
def redis_server() -> Iterator[RedisServer]:
    with RedisServer() as server:
        yield server


def redis_env(redis_server: RedisServer, **extra: str) -> dict[str, str]:
    return {"AUTH0_DPOP_REPLAY_URL": redis_server.url, "AUTH0_DPOP_REPLAY_TIMEOUT": PATIENT, **extra}


def bound_token(issuer: LocalIssuer, key: ECKey = KEY) -> str:
    return issuer.mint({"cnf": {"jkt": key.thumbprint()}})


def proof_for(server: Server, token: str, key: ECKey = KEY, **claims: Any) -> str:
    return make_proof(key, "GET", f"{server.base_url}/api/private", access_token=token, claims=claims)


def send(server: Server, token: str, proof: str) -> Response:
    """A DPoP request; the URL is the same path on every server, so one proof fits any of them."""
    return server.get("/api/private", headers={"Authorization": f"DPoP {token}", "DPoP": proof})


def store_count(servers: list[Server], result: str) -> float:
    return sum(metric_sum(s.metrics(), "dpop_replay_store_requests_total", result=result) for s in servers)


def warnings(server: Server) -> list[dict[str, Any]]:
    return [r for r in server.records() if r.get("level") in ("warning", "error", "critical")]


def test_two_pods_share_one_redis(
    module_issuer: LocalIssuer, gunicorn: ServerFactory, redis_server: RedisServer
) -> None:
    # Two pods behind one public name, as behind a load balancer.
    env = redis_env(redis_server, AUTH0_DPOP_IAT_OFFSET="60", PUBLIC_URL="https://api.test")
    pod_a = gunicorn(module_issuer, workers=2, env=env)
    pod_b = gunicorn(module_issuer, workers=2, env=env)
    client = redis_server.client()
    # Nothing connects at start: neither master nor an idle worker touches Redis.
    assert [c for c in client.client_list() if c["name"] == "flask-auth0-api-dpop"] == []
    token = bound_token(module_issuer)
    proof = make_proof(KEY, "GET", "https://api.test/api/private", access_token=token)
    assert send(pod_a, token, proof).status == 200
    replayed_b = send(pod_b, token, proof)
    assert replayed_b.status == 401 and replayed_b.json()["error"] == "invalid_dpop_proof"
    assert send(pod_a, token, proof).status == 401

    keys = client.keys("*")
    assert len(keys) == 1, keys
    prefix, digest = keys[0].rsplit(":", 1)
    assert prefix == default_replay_prefix(module_issuer.audience)
    assert len(digest) == 64 and KEY.thumbprint() not in keys[0]
    assert 55 <= client.ttl(keys[0]) <= 65
    # Refused proofs write nothing: a bad signature and the replays above.
    bad = proof[:-4] + ("AAAA" if not proof.endswith("AAAA") else "BBBB")
    assert send(pod_a, token, bad).status == 401
    assert client.keys("*") == keys

    assert store_count([pod_a, pod_b], "first") == 1
    assert store_count([pod_a, pod_b], "replay") == 2
    assert store_count([pod_a, pod_b], "error") == 0
    for server in (pod_a, pod_b):
        assert "dpop_replay_store_duration_seconds_bucket" in server.get("/metrics").body.decode()
        assert token not in server.output() and proof not in server.output()
    connections = [c for c in client.client_list() if c["name"] == "flask-auth0-api-dpop"]
    assert 1 <= len(connections) <= 4 * 4, connections  # at most one per serving thread


def test_eight_parallel_copies_of_one_proof_to_two_pods_give_exactly_one_200(
    module_issuer: LocalIssuer, gunicorn: ServerFactory, redis_server: RedisServer
) -> None:
    env = redis_env(redis_server, PUBLIC_URL="https://api.test")
    pods = [gunicorn(module_issuer, workers=2, env=env), gunicorn(module_issuer, workers=2, env=env)]
    token = bound_token(module_issuer)
    for _ in range(3):
        proof = make_proof(KEY, "GET", "https://api.test/api/private", access_token=token)
        with ThreadPoolExecutor(8) as pool:
            copies = [(pods[i % 2], proof) for i in range(8)]
            statuses = list(pool.map(lambda copy: send(copy[0], token, copy[1]).status, copies))
        assert sorted(statuses) == [200] + [401] * 7, statuses
    assert store_count(pods, "first") == 3
    assert store_count(pods, "replay") == 21


def test_a_future_dated_proof_keeps_its_key_until_its_own_window_ends(
    module_issuer: LocalIssuer, gunicorn: ServerFactory, redis_server: RedisServer
) -> None:
    server = gunicorn(module_issuer, workers=1, env=redis_env(redis_server, AUTH0_DPOP_IAT_OFFSET="60"))
    token = bound_token(module_issuer)
    assert send(server, token, proof_for(server, token, iat=int(time.time()) + 20)).status == 200
    (key,) = redis_server.client().keys("*")
    # iat + offset = now + 80: never sooner (a replay window), at most offset + leeway (30) away.
    assert 75 <= redis_server.client().ttl(key) <= 90


@pytest.mark.parametrize("fault", ["stopped", "paused"])
def test_an_outage_fails_dpop_closed_and_fast_bearer_stays_and_recovery_needs_no_restart(
    module_issuer: LocalIssuer, gunicorn: ServerFactory, redis_server: RedisServer, fault: str
) -> None:
    # The default AUTH0_DPOP_REPLAY_TIMEOUT (50 ms).
    server = gunicorn(module_issuer, workers=2, env={"AUTH0_DPOP_REPLAY_URL": redis_server.url})
    token = bound_token(module_issuer)
    assert send(server, token, proof_for(server, token)).status == 200
    assert server.get("/readyz").json()["replay_store"] == {"store": "redis", "status": "ready"}
    before = warnings(server)

    redis_server.stop() if fault == "stopped" else redis_server.pause()
    try:
        answers = [send(server, token, proof_for(server, token)) for _ in range(20)]
        for answer in answers:
            assert answer.status == 503, answer.body
            assert answer.json()["error"] == "temporarily_unavailable"
            assert answer.header("Retry-After") == "1"
        p99 = sorted(a.elapsed for a in answers)[18]
        assert p99 < 0.2, [round(a.elapsed, 3) for a in answers]
        assert server.get("/api/private", token=module_issuer.mint()).status == 200
        ready = server.get("/readyz")
        assert ready.status == 200
        assert ready.json()["replay_store"]["status"] == "unavailable"
        samples = server.metrics()
        assert metric_sum(samples, "auth_decisions_total", reason="replay_store_unavailable") == 20
        assert metric_sum(samples, "dpop_replay_store_requests_total", result="error") == 20
        downs = server.wait_for_record(lambda r: r.get("event") == "dpop_replay_store_down")
        assert downs and downs[0]["level"] == "warning" and downs[0]["fail"] == "closed"
        assert len(warnings(server)) - len(before) <= 6, warnings(server)
    finally:
        redis_server.start() if fault == "stopped" else redis_server.resume()

    def all_eight_pass() -> bool:
        with ThreadPoolExecutor(8) as pool:
            proofs = [proof_for(server, token) for _ in range(8)]
            return all(r.status == 200 for r in pool.map(lambda p: send(server, token, p), proofs))

    assert eventually(all_eight_pass, timeout=10, interval=0.2)
    assert server.wait_for_record(lambda r: r.get("event") == "dpop_replay_store_up")
    assert eventually(lambda: server.get("/readyz").json()["replay_store"]["status"] == "ready", timeout=5)
    assert len(warnings(server)) - len(before) <= 6, warnings(server)
    assert token not in server.output()


def test_the_service_starts_while_redis_is_down_and_uses_it_once_up(
    module_issuer: LocalIssuer, gunicorn: ServerFactory, tmp_path: Path
) -> None:
    redis_server = RedisServer()  # its port is chosen, the server not started
    try:
        server = gunicorn(module_issuer, workers=2, env={"AUTH0_DPOP_REPLAY_URL": redis_server.url})
        ready = server.get("/readyz")
        assert ready.status == 200 and ready.json()["replay_store"]["status"] == "unavailable"
        token = bound_token(module_issuer)
        refused = send(server, token, proof_for(server, token))
        assert refused.status == 503 and refused.header("Retry-After") == "1"
        assert server.get("/api/private", token=module_issuer.mint()).status == 200
        redis_server.start()
        assert eventually(lambda: send(server, token, proof_for(server, token)).status == 200, timeout=10)
    finally:
        redis_server.close()


def test_fail_open_falls_back_to_the_pod_local_table(
    module_issuer: LocalIssuer, gunicorn: ServerFactory, redis_server: RedisServer
) -> None:
    server = gunicorn(module_issuer, workers=2, env=redis_env(redis_server, AUTH0_DPOP_REPLAY_FAIL="open"))
    token = bound_token(module_issuer)
    assert send(server, token, proof_for(server, token)).status == 200
    redis_server.stop()
    proof = proof_for(server, token)
    assert send(server, token, proof).status == 200
    second = send(server, token, proof)
    assert second.status == 401 and second.json()["error"] == "invalid_dpop_proof"
    downs = server.wait_for_record(lambda r: r.get("event") == "dpop_replay_store_down")
    assert downs and downs[0]["level"] == "warning" and downs[0]["fail"] == "open"
    assert server.get("/readyz").json()["replay_store"]["fail"] == "open"


def test_one_keys_flood_never_refuses_another_keys_proof(
    module_issuer: LocalIssuer, gunicorn: ServerFactory, redis_server: RedisServer
) -> None:
    # A share of 1024 // 8 = 128 live entries per key in this pod, whatever Redis could hold.
    server = gunicorn(
        module_issuer, workers=2, env=redis_env(redis_server, AUTH0_DPOP_REPLAY_CAPACITY="1024")
    )
    token = bound_token(module_issuer)
    flood = [proof_for(server, token, iat=int(time.time()) + 25) for _ in range(1000)]
    with ThreadPoolExecutor(8) as pool:
        statuses = list(pool.map(lambda p: send(server, token, p).status, flood))
    assert set(statuses) <= {200, 429}, set(statuses)
    accepted = [p for p, status in zip(flood, statuses, strict=True) if status == 200]
    # At most the share, plus the requests in flight when the share filled up (8 threads).
    assert 1 <= len(accepted) <= 128 + 8, len(accepted)
    assert len(redis_server.client().keys("*")) == len(accepted)  # a refused proof writes nothing
    for _ in range(50):
        key = ECKey.generate_key("P-256", private=True)
        other_token = bound_token(module_issuer, key)
        answer = send(server, other_token, proof_for(server, other_token, key))
        assert answer.status == 200, answer.body
    # Past its share the flooding key's replays are still replays (a read-only EXISTS).
    for proof in accepted[:100]:
        replay = send(server, token, proof)
        assert replay.status == 401 and replay.json()["error"] == "invalid_dpop_proof"
    assert metric_sum(server.metrics(), "auth_decisions_total", reason="dpop_flood") == statuses.count(429)


def test_the_password_file_is_read_without_its_trailing_newline(
    module_issuer: LocalIssuer, gunicorn: ServerFactory, tmp_path: Path
) -> None:
    secret = tmp_path / "password"
    secret.write_text("s3cret-pw\n")
    with RedisServer(password="s3cret-pw") as redis_server:
        server = gunicorn(
            module_issuer,
            workers=1,
            env=redis_env(redis_server, AUTH0_DPOP_REPLAY_PASSWORD_FILE=str(secret)),
        )
        token = bound_token(module_issuer)
        assert send(server, token, proof_for(server, token)).status == 200
        assert len(redis_server.client().keys("*")) == 1
        assert "s3cret-pw" not in server.output()


@pytest.mark.parametrize(
    "url", ["http://127.0.0.1:6379/0", "unix:///run/redis.sock", "redis://:hunter2@/0", "valkey://h:6379"]
)
def test_a_bad_url_stops_the_start_naming_the_variable(
    module_issuer: LocalIssuer, tmp_path: Path, url: str
) -> None:
    (tmp_path / "prom").mkdir()
    env = service_env(module_issuer, tmp_path / "prom", {"AUTH0_DPOP_REPLAY_URL": url})
    code, out, err = run_to_exit(env, log_dir=tmp_path / "logs")
    assert code == 78
    lines = [line for line in err.splitlines() if line.strip()]
    assert lines and lines[-1].startswith("configuration error: AUTH0_DPOP_REPLAY_URL:"), err
    assert "hunter2" not in out + err
