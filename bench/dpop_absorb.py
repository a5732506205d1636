"""How many unique DPoP proofs a pod absorbs before it refuses any, against real gunicorn.

Usage (repo root): .venv/bin/python -m bench.dpop_absorb [--capacity 131072] [--keys 256]
Starts the dev issuer and gunicorn (2 workers, as the image) with AUTH0_DPOP_REPLAY_CAPACITY, then
sends unique, valid proofs dated now from --keys client keys (each well under its share) until the
first answer that is not 200. The server runs with AUTH0_DPOP_IAT_OFFSET=3600 so that no entry
expires during the run, which makes the count a fill of the table whatever the client's speed.
With the default offset an entry of a proof dated now lives 300 s, so a pod sustains
(accepted before the first refusal) / 300 unique proofs per second; proofs dated the full leeway
(30 s) ahead live 330 s.
"""

from __future__ import annotations

import argparse
import http.client
import tempfile
import threading
import time
from pathlib import Path

from joserfc.jwk import ECKey

from dev_issuer.client import make_proof
from service.config import DEFAULTS
from service.jose.replay import key_share
from tests.support.issuer import LocalIssuer
from tests.support.procs import launch
from tests.support.procs import metric_sum
from tests.support.procs import service_env

PATH = "/api/private"
#: Seconds a proof stays acceptable in the run: longer than any run, so nothing expires.
FILL_OFFSET = 3600


def absorb(port: int, clients: list[tuple[ECKey, str]], threads: int) -> tuple[int, int, float]:
    """Send unique proofs until the first refusal: (accepted before it, its status, seconds)."""
    lock = threading.Lock()
    accepted = 0
    refusal = 0
    stop = threading.Event()
    url = f"http://127.0.0.1:{port}{PATH}"

    def client(offset: int) -> None:
        nonlocal accepted, refusal
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        index = offset
        while not stop.is_set():
            key, token = clients[index % len(clients)]
            index += threads
            proof = make_proof(key, "GET", url, access_token=token)
            connection.request("GET", PATH, headers={"Authorization": f"DPoP {token}", "DPoP": proof})
            response = connection.getresponse()
            response.read()
            with lock:
                if response.status == 200 and not stop.is_set():
                    accepted += 1
                elif response.status != 200 and not refusal:
                    refusal = response.status
                    stop.set()
            if response.getheader("Connection", "").lower() == "close":
                connection.close()
                connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        connection.close()

    started = time.monotonic()
    workers = [threading.Thread(target=client, args=(n,)) for n in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    return accepted, refusal, time.monotonic() - started


def main(argv: list[str] | None = None) -> int:
    """Print what one pod absorbed."""
    parser = argparse.ArgumentParser(prog="python -m bench.dpop_absorb", description=__doc__)
    parser.add_argument("--capacity", type=int, default=int(DEFAULTS["AUTH0_DPOP_REPLAY_CAPACITY"][0]))
    parser.add_argument("--keys", type=int, default=256, help="client keys, round-robin (256)")
    parser.add_argument("--threads", type=int, default=8, help="client threads (8)")
    parser.add_argument("--workers", type=int, default=2, help="gunicorn workers (2, as the image)")
    args = parser.parse_args(argv)
    offset = int(DEFAULTS["AUTH0_DPOP_IAT_OFFSET"][0])
    leeway = int(DEFAULTS["AUTH0_DPOP_IAT_LEEWAY"][0])
    with LocalIssuer() as issuer, tempfile.TemporaryDirectory() as scratch:
        base = Path(scratch)
        (base / "prom").mkdir()
        env = service_env(
            issuer,
            base / "prom",
            {
                "AUTH0_DPOP_REPLAY_CAPACITY": str(args.capacity),
                "AUTH0_DPOP_IAT_OFFSET": str(FILL_OFFSET),
                "LOG_LEVEL": "warning",
            },
        )
        server = launch(env, log_dir=base / "logs", workers=args.workers)
        try:
            server.wait_ready()
            server.wait_booted(args.workers)
            clients = []
            for _ in range(args.keys):
                key = ECKey.generate_key("P-256", private=True)
                token = issuer.mint({"cnf": {"jkt": key.thumbprint()}}, ttl=2 * FILL_OFFSET)
                clients.append((key, token))
            accepted, status, seconds = absorb(server.port, clients, args.threads)
            samples = server.metrics()
        finally:
            server.stop()
    reasons = sorted(
        {labels["reason"] for name, labels, value in samples if name == "auth_decisions_total" and value}
        - {"ok"}
    )
    share = key_share(args.capacity)
    flood = metric_sum(samples, "auth_decisions_total", reason="dpop_flood")
    lines = [
        f"capacity {args.capacity}, {args.keys} keys, {args.threads} threads, {args.workers} worker(s)",
        f"accepted before the first refusal: {accepted} ({accepted / args.capacity:.1%} of capacity)",
        f"first refusal: HTTP {status}, reasons {reasons}, in {seconds:.0f} s ({accepted / seconds:.0f}/s)",
        f"unique proofs/s a pod absorbs: {accepted / offset:.0f} dated now (entries live {offset} s), "
        f"{accepted / (offset + leeway):.0f} dated {leeway} s ahead",
        f"one key alone: {share} live entries, {share / offset:.0f}/s; dpop_flood refusals: {flood:.0f}",
    ]
    if seconds > FILL_OFFSET:
        lines.append(f"warning: the run took over {FILL_OFFSET} s, entries expired: a rate, not a fill")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
