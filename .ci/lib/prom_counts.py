"""Compare bin/smoke's per-route auth-decision counts with a Prometheus query result.

usage: python3 prom_counts.py SMOKE_OUTPUT QUERY_JSON
SMOKE_OUTPUT holds bin/smoke's lines "smoke: counts route=/api/private allow=1 deny=4";
QUERY_JSON is /api/v1/query's answer to `sum by (route, outcome) (auth_decisions_total{...})`.
Exit 0 when they are equal, 1 otherwise (both are printed).
"""

import json
import sys


def expected_counts(path: str) -> dict[tuple[str, str], int]:
    """Non-zero (route, outcome) counts that bin/smoke reported."""
    counts: dict[tuple[str, str], int] = {}
    with open(path) as fh:
        for line in fh:
            if not line.startswith("smoke: counts route="):
                continue
            route, *pairs = line.removeprefix("smoke: counts route=").split()
            for pair in pairs:
                outcome, n = pair.split("=")
                if int(n):
                    counts[(route, outcome)] = int(n)
    return counts


def scraped_counts(path: str) -> dict[tuple[str, str], int]:
    """Non-zero (route, outcome) sums from a Prometheus instant-query answer."""
    with open(path) as fh:
        result = json.load(fh)["data"]["result"]
    counts = {
        (r["metric"].get("route", ""), r["metric"].get("outcome", "")): int(float(r["value"][1]))
        for r in result
    }
    return {k: v for k, v in counts.items() if v}


def main() -> int:
    """Print both sides and report whether they match."""
    expected = expected_counts(sys.argv[1])
    got = scraped_counts(sys.argv[2])
    print("bin/smoke: ", sorted(expected.items()))
    print("prometheus:", sorted(got.items()))
    if not expected:
        print("bin/smoke reported no per-route counts")
        return 1
    return 0 if got == expected else 1


if __name__ == "__main__":
    sys.exit(main())
