"""Cached-token latency while the JWKS endpoint hangs and unknown-kid attackers flood the service.

Usage (repo root): .venv/bin/python -m bench.jwks_hostile [--seconds 10] [--attackers 8]
Real gunicorn (2 workers, default threads) trusts the dev issuer on loopback; once every worker
holds the keys, the issuer's JWKS answers hang for two minutes while `--attackers` connections
send tokens with unpublished kids and 4 clients send a token whose key is cached. Prints the
cached tokens' median and p99 latency and the status counts of both sides. The guarantee in
docs/jwks-cache.md is a median under 50 ms.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import tempfile
from collections import Counter
from pathlib import Path

from tests.support.helpers import warm
from tests.support.issuer import LocalIssuer
from tests.support.kid_flood import SIEGE_ENV
from tests.support.kid_flood import siege
from tests.support.procs import ServerFactory

WORKERS = 2


def measure(seconds: float, attackers: int) -> dict[str, object]:
    """Run the siege once; return the cached tokens' latencies and both sides' statuses."""
    with LocalIssuer() as issuer, tempfile.TemporaryDirectory() as tmp:
        factory = ServerFactory(Path(tmp))
        try:
            server = factory(issuer, workers=WORKERS, env=SIEGE_ENV)
            warm(server, issuer, WORKERS)
            outcome = siege(server, issuer, seconds=seconds, attackers=attackers)
        finally:
            factory.close()
    latencies = sorted(elapsed for _, elapsed in outcome.cached)
    p99 = latencies[max(0, math.ceil(0.99 * len(latencies)) - 1)]
    return {
        "cached_requests": len(latencies),
        "cached_median_ms": round(statistics.median(latencies) * 1000, 1),
        "cached_p99_ms": round(p99 * 1000, 1),
        "cached_statuses": dict(Counter(str(status) for status, _ in outcome.cached)),
        "attacker_statuses": outcome.attacked,
    }


def main() -> None:
    """Parse the options, measure, print one JSON line."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--attackers", type=int, default=8)
    args = parser.parse_args()
    print(json.dumps(measure(args.seconds, args.attackers)))


if __name__ == "__main__":
    main()
