"""DPoP requests with the replay store in Redis (loopback) against the pod-local table, in one run.

Usage (repo root): .venv/bin/python -m bench.replay_store [--requests 1000] [--repeats 7]

Two apps of ours (``create_app``, production settings, logs to /dev/null) trust one local issuer:
one records proofs in the pod-local table, the other in a real redis-server on a loopback port
(Debian's package, started here, stopped by PID). Each request is ``GET /api/private`` with one hot
DPoP-bound token and a fresh ES256 proof, through the WSGI callable. The apps take turns within
every repeat; the figure kept is the minimum over repeats (the run least disturbed by others).

The round trip alone is measured the same way: the pod-local app with the same
``SET key 1 NX PXAT ms`` written on a bare socket after each request, so Redis is woken from the
same idle state as in a real request (a tight loop of bare SETs would find it awake and cost less).
Redis's app minus that is the client's work: redis-py packing and parsing, the store's own code,
its metric and the connection handling. Wall time and this process's CPU time are both reported;
on a loaded machine the CPU figures are the steadier ones (waiting for Redis costs no CPU).
"""

from __future__ import annotations

import argparse
import gc
import hashlib
import json
import socket
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench.wsgi import WSGIApp
from bench.wsgi import _call
from bench.wsgi import _environ
from bench.wsgi import _quiet_stdout
from bench.wsgi import _start_issuer

ROOT = Path(__file__).resolve().parent.parent
#: The issue's budget: one round trip plus at most this much client work per request.
CLIENT_BUDGET_US = 30.0


def build_apps(issuer: Any, redis_url: str) -> dict[str, WSGIApp]:
    """Ours with the pod-local table and ours with Redis: the same settings otherwise."""
    import os
    import tempfile

    os.environ.setdefault("PROMETHEUS_MULTIPROC_DIR", tempfile.mkdtemp(prefix="bench-replay-metrics-"))
    from service.app import create_app
    from service.config import Settings

    base = {"AUTH0_ISSUER": issuer.url, "AUTH0_AUDIENCE": issuer.audience, "AUTH0_JWKS_URI": issuer.jwks_uri}
    apps = {
        "pod-local table": create_app(Settings.from_env(base)),
        "redis (loopback)": create_app(Settings.from_env({**base, "AUTH0_DPOP_REPLAY_URL": redis_url})),
    }
    gc.collect()
    gc.freeze()
    return apps


def dpop_environs(issuer: Any, count: int) -> list[dict[str, Any]]:
    """``count`` DPoP requests to /api/private: one bound token (hot after the first), fresh proofs."""
    from joserfc import jwt
    from joserfc.jwk import ECKey
    from joserfc.jwk import RSAKey

    from bench.material import _claims
    from dev_issuer.client import make_proof

    signer = RSAKey.import_key(issuer.material.key_path.read_bytes())
    kid = json.loads(issuer.material.jwks_path.read_text())["keys"][0]["kid"]
    client = ECKey.generate_key("P-256", private=True)
    claims = _claims(issuer.url, issuer.audience, "auth0|dpop-bench", int(time.time()))
    claims["cnf"] = {"jkt": client.thumbprint()}
    token = jwt.encode({"alg": "RS256", "typ": "JWT", "kid": kid}, claims, signer)
    url = "http://127.0.0.1:3010/api/private"  # what _environ's Host, scheme and path make
    environs = []
    for _ in range(count):
        environ = _environ("/api/private", None)
        environ["HTTP_AUTHORIZATION"] = f"DPoP {token}"
        environ["HTTP_DPOP"] = make_proof(client, "GET", url, access_token=token)
        environs.append(environ)
    return environs


def raw_round_trips(port: int, count: int) -> Callable[[], None]:
    """A bare-socket ``SET <prefix>:<sha256 hex> 1 NX PXAT <ms>`` per call: the round trip alone."""
    sock = socket.create_connection(("127.0.0.1", port))
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    counter = iter(range(1 << 62))

    def one() -> None:
        key = f"dpop-jti:0123456789abcdef:{hashlib.sha256(str(next(counter)).encode()).hexdigest()}"
        expiry = str(int(time.time() * 1000) + 300_000)
        parts = ["SET", key, "1", "NX", "PXAT", expiry]
        command = f"*{len(parts)}\r\n" + "".join(f"${len(p)}\r\n{p}\r\n" for p in parts)
        sock.sendall(command.encode())
        if not sock.recv(64).startswith(b"+OK"):
            raise SystemExit("bench.replay_store: raw SET was not answered +OK")

    one.close = sock.close  # type: ignore[attr-defined]
    return one


def timed(calls: list[Callable[[], Any]]) -> tuple[float, float]:
    """(wall µs, CPU µs) per call over the calls."""
    wall, cpu = time.perf_counter_ns(), time.process_time_ns()
    for call in calls:
        call()
    n = len(calls)
    return (time.perf_counter_ns() - wall) / n / 1000, (time.process_time_ns() - cpu) / n / 1000


def main(argv: list[str] | None = None) -> int:
    """Run the comparison and print a markdown table (and JSON with --json)."""
    parser = argparse.ArgumentParser(prog="python -m bench.replay_store", description=__doc__)
    parser.add_argument("--requests", type=int, default=1000)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--issuer-port", type=int, default=3018)
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args(argv)

    from tests.support.redis_server import RedisServer

    issuer, stop_issuer = _start_issuer(args.issuer_port, 8)
    redis = RedisServer().start()
    real_stdout = _quiet_stdout()
    runs: dict[str, list[tuple[float, float]]] = {}
    try:
        apps = build_apps(issuer, redis.url)
        raw = raw_round_trips(redis.port, args.requests)
        local = apps["pod-local table"]

        def local_and_raw(environ: dict[str, Any]) -> None:
            _call(local, environ)
            raw()

        variants: dict[str, Callable[[dict[str, Any]], Any]] = {
            "pod-local table": lambda e: _call(local, e),
            "redis (loopback)": lambda e: _call(apps["redis (loopback)"], e),
            "pod-local table + bare-socket SET": local_and_raw,
        }
        for repeat in range(args.repeats):
            names = list(variants)
            order = names[repeat % 3 :] + names[: repeat % 3]
            for name in order:
                environs = dpop_environs(issuer, args.requests + 1)
                variants[name](environs[0])
                runs.setdefault(name, []).append(
                    timed([lambda e=e, f=variants[name]: f(e) for e in environs[1:]])  # type: ignore[misc]
                )
        raw.close()  # type: ignore[attr-defined]
    finally:
        sys.stdout = real_stdout
        redis.close()
        stop_issuer()

    best = {name: (min(w for w, _ in r), min(c for _, c in r)) for name, r in runs.items()}
    local, remote = best["pod-local table"], best["redis (loopback)"]
    with_trip = best["pod-local table + bare-socket SET"]
    added = (remote[0] - local[0], remote[1] - local[1])
    trip = (with_trip[0] - local[0], with_trip[1] - local[1])
    client = (remote[0] - with_trip[0], remote[1] - with_trip[1])
    print(
        f"DPoP request (hot bound token, fresh ES256 proof) through the WSGI app: µs per request, "
        f"min of {args.repeats} × {args.requests}, the stores interleaved.\n"
    )
    print("| | wall µs | CPU µs |")
    print("|---|---:|---:|")
    for name, (wall, cpu) in best.items():
        print(f"| {name} | {wall:.1f} | {cpu:.1f} |")
    print(f"| Redis adds | {added[0]:.1f} | {added[1]:.1f} |")
    print(f"| of which the round trip (bare-socket SET) | {trip[0]:.1f} | {trip[1]:.1f} |")
    print(f"| of which client work | {client[0]:.1f} | {client[1]:.1f} |")
    verdict = "met" if client[1] <= CLIENT_BUDGET_US else "NOT met"
    print(f"\nBudget: one round trip + ≤ {CLIENT_BUDGET_US:.0f} µs of client work (CPU): {verdict}.")
    if args.json:
        args.json.write_text(json.dumps({"runs": runs, "best": best}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
