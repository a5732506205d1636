"""The hostile-JWKS scenario: the JWKS endpoint hangs while unknown-kid attackers flood the service.

Meanwhile clients whose token's key is cached keep calling; the process test holds their answers
to 200 and `bench.jwks_hostile` reports their latency. Loopback only, bounded in time.
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from dataclasses import dataclass

from tests.support.issuer import LocalIssuer
from tests.support.procs import REPO
from tests.support.procs import Server

#: What the hanging endpoint waits before answering: longer than any fetch timeout.
HANG = 120.0
#: The service's JWKS timings for the siege: short TTL and cooldown, so refreshes keep coming.
SIEGE_ENV = {
    "AUTH0_JWKS_TTL": "2",
    "AUTH0_JWKS_COOLDOWN": "1",
    "AUTH0_HTTP_TIMEOUT": "5",
    "AUTH0_JWKS_RETRY": "5",
}


@dataclass(frozen=True)
class Outcome:
    """The cached-token clients' (status, seconds) per request; the attackers' status counts."""

    cached: list[tuple[int, float]]
    attacked: dict[str, int]


def spawn_flood(port: int, tokens: list[str], connections: int, seconds: float) -> subprocess.Popen[str]:
    """Start tests.support.flood in its own process (its client work stays off this interpreter)."""
    job = {"port": port, "path": "/api/private", "tokens": tokens}
    job.update(connections=connections, seconds=seconds)
    proc = subprocess.Popen(
        [sys.executable, "-m", "tests.support.flood"],
        cwd=REPO,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdin is not None
    proc.stdin.write(json.dumps(job))
    proc.stdin.close()
    return proc


def siege(
    server: Server, issuer: LocalIssuer, *, seconds: float, attackers: int = 8, clients: int = 4
) -> Outcome:
    """Hang the issuer's JWKS, flood unknown kids from `attackers` connections, time cached tokens."""
    token = issuer.mint()
    attacker_key = issuer.new_key()
    # Only the public iss/aud/exp are right; the kids are unpublished and the signature is ours.
    attack = [issuer.mint(key=attacker_key, kid=f"attacker-{i}") for i in range(64)]
    issuer.delay = HANG  # accepts connections, never answers in time
    flood = spawn_flood(server.port, attack, connections=attackers, seconds=seconds)
    results: list[tuple[int, float]] = []
    lock = threading.Lock()
    deadline = time.monotonic() + seconds

    def legit() -> None:
        while time.monotonic() < deadline:
            resp = server.get("/api/private", token=token)
            with lock:
                results.append((resp.status, resp.elapsed))

    threads = [threading.Thread(target=legit) for _ in range(clients)]
    try:
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert flood.stdout is not None
        attacked = json.loads(flood.stdout.read())
        flood.wait(timeout=30)
    finally:
        issuer.delay = 0.0
        if flood.poll() is None:
            flood.kill()
            flood.wait()
        if flood.stdout is not None:
            flood.stdout.close()
    return Outcome(results, attacked)
