"""Verified-token cache memory: bytes per entry, measured with tracemalloc.

Usage (repo root): .venv/bin/python -m bench.cache_memory [--entries 2000]
Rows: a small Auth0-shaped token (one scope) and a large RBAC token (500 permissions, ~14.6 KB),
each verified once per distinct token so every verification adds one cache entry. What a row
reports is the traced memory the cache holds per entry (the token texts themselves are allocated
before tracing starts), what the cache counts per entry against AUTH0_TOKEN_CACHE_BYTES, and how
many such entries fit in its default.
"""

from __future__ import annotations

import argparse
import gc
import tracemalloc

from service.config import DEFAULTS
from service.config import Settings
from service.jose.verifier import verifier_for
from tests.support.issuer import LocalIssuer

SHAPES = {
    "small (1 scope)": None,
    "RBAC, 500 permissions": [f"read:resource-{i:04d}" for i in range(500)],
}


def per_entry(
    issuer: LocalIssuer, permissions: list[str] | None, entries: int
) -> tuple[int, float, float]:
    """(token length, traced and counted bytes per entry) for `entries` distinct tokens."""
    settings = Settings.from_env(
        {
            "AUTH0_ISSUER": issuer.url,
            "AUTH0_AUDIENCE": issuer.audience,
            "AUTH0_TOKEN_CACHE_SIZE": str(entries + 1),
            "AUTH0_TOKEN_CACHE_BYTES": str(1 << 40),
        }
    )
    verifier = verifier_for(settings, lambda _event: None)
    tokens = [issuer.mint({"jti": f"t{i}"}, permissions=permissions) for i in range(entries + 1)]
    verifier.verify(tokens[0])  # key fetch and header cache out of the measurement
    counted = verifier.cached_bytes
    gc.collect()
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    for token in tokens[1:]:
        verifier.verify(token)
    gc.collect()
    after = tracemalloc.get_traced_memory()[0]
    tracemalloc.stop()
    return len(tokens[1]), (after - before) / entries, (verifier.cached_bytes - counted) / entries


def main(argv: list[str] | None = None) -> int:
    """Print one row per token shape."""
    parser = argparse.ArgumentParser(prog="python -m bench.cache_memory", description=__doc__)
    parser.add_argument("--entries", type=int, default=2000)
    args = parser.parse_args(argv)
    budget = int(DEFAULTS["AUTH0_TOKEN_CACHE_BYTES"][0])
    print(f"| token | length | traced bytes per entry | counted | entries in {budget >> 20} MiB |")
    print("|---|---:|---:|---:|---:|")
    with LocalIssuer() as issuer:
        for name, permissions in SHAPES.items():
            length, traced, counted = per_entry(issuer, permissions, args.entries)
            fits = int(budget // counted)
            print(f"| {name} | {length} | {traced:,.0f} | {counted:,.0f} | {fits:,} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
