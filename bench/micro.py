"""In-process micro-benchmark: microseconds per token validation, ours vs the RSA floor.

Usage (repo root): .venv/bin/python -m bench.micro [--tokens-per-repeat 2000] [--repeats 5]
Rows: the raw RSA-2048 PKCS#1 v1.5 verify of each token's own signature with `cryptography`
(the floor no validator can beat), our validator on cold tokens (each seen once) and on one hot
token, and for reference the quickstart's Authlib validator and a bare joserfc decode+claims check.
"""

from __future__ import annotations

import argparse
import base64
import gc
import json
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding
from cryptography.hazmat.primitives.asymmetric.rsa import RSAPublicKey
from cryptography.hazmat.primitives.serialization import load_pem_private_key
from joserfc import jwt
from joserfc.jwk import KeySet

from bench.material import AUDIENCE
from bench.material import Material
from bench.material import prepare
from dev_issuer.app import create_app
from dev_issuer.config import IssuerSettings
from dev_issuer.keys import SigningKey
from dev_issuer.server import BackgroundServer

ROOT = Path(__file__).resolve().parent.parent
Validate = Callable[[str], Any]


def build_ours(issuer: str, audience: str, jwks_uri: str) -> Validate:
    """Return our validator's per-request call (the one place to adapt if service/ changes)."""
    from service.config import Settings
    from service.tokens import verifier_for

    settings = Settings.from_env(
        {"AUTH0_ISSUER": issuer, "AUTH0_AUDIENCE": audience, "AUTH0_JWKS_URI": jwks_uri}
    )
    return verifier_for(settings, lambda event: None).verify


def build_quickstart(issuer: str, audience: str, keyset: KeySet) -> Validate:
    """Return the quickstart's check: Authlib rfc7523 authenticate_token + validate_token."""
    from authlib.oauth2.rfc7523 import JWTBearerTokenValidator

    validator = JWTBearerTokenValidator(keyset)
    validator.claims_options = {
        "exp": {"essential": True},
        "aud": {"essential": True, "value": audience},
        "iss": {"essential": True, "value": issuer},
    }

    def validate(token: str) -> Any:
        """Authenticate then validate, as Authlib's ResourceProtector does."""
        result = validator.authenticate_token(token)
        validator.validate_token(result, None, None)
        return result

    return validate


def build_joserfc(issuer: str, audience: str, keyset: KeySet) -> Validate:
    """Return a bare joserfc decode + claims registry check (a library-level reference)."""
    registry = jwt.JWTClaimsRegistry(
        leeway=5,
        iss={"essential": True, "value": issuer},
        aud={"essential": True, "value": audience},
        exp={"essential": True},
    )

    def validate(token: str) -> Any:
        """Decode, verify and check claims."""
        decoded = jwt.decode(token, keyset, algorithms=["RS256"])
        registry.validate(decoded.claims)
        return decoded

    return validate


def build_floor(public_key: RSAPublicKey, tokens: list[str]) -> Validate:
    """Return only the RSA verify of each token's own signature (split and decoded beforehand)."""
    pkcs1 = padding.PKCS1v15()
    sha256 = hashes.SHA256()
    prepared = {}
    for token in tokens:
        signing_input, _, signature = token.rpartition(".")
        raw = base64.urlsafe_b64decode(signature + "=" * (-len(signature) % 4))
        prepared[token] = (raw, signing_input.encode())

    def validate(token: str) -> Any:
        """Verify the pre-split signature: nothing but the public-key operation and SHA-256."""
        raw, signed = prepared[token]
        public_key.verify(raw, signed, pkcs1, sha256)

    return validate


def time_per_call(fn: Validate, tokens: list[str]) -> float:
    """Return microseconds per call over the tokens (one call each)."""
    start = time.perf_counter_ns()
    for token in tokens:
        fn(token)
    return (time.perf_counter_ns() - start) / len(tokens) / 1000


def bench_cold(fn: Validate, tokens: list[str], per_repeat: int, repeats: int) -> list[float]:
    """Time disjoint slices so every call sees a token this validator never saw."""
    return [time_per_call(fn, tokens[r * per_repeat : (r + 1) * per_repeat]) for r in range(repeats)]


def bench_hot(fn: Validate, token: str, per_repeat: int, repeats: int) -> list[float]:
    """Time the same token over and over (after one warming call)."""
    fn(token)
    return [time_per_call(fn, [token] * per_repeat) for _ in range(repeats)]


def main(argv: list[str] | None = None) -> int:
    """Run the micro-benchmark and print a markdown table (and JSON with --json)."""
    parser = argparse.ArgumentParser(prog="python -m bench.micro", description=__doc__)
    parser.add_argument("--tokens-per-repeat", type=int, default=2000)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--issuer-port", type=int, default=3019, help="as bench/run (3019)")
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args(argv)

    issuer = f"http://127.0.0.1:{args.issuer_port}/"
    needed = args.tokens_per_repeat * args.repeats
    material: Material = prepare(ROOT / "bench" / "results" / "cache", issuer, needed)
    cold = material.tokens("cold").read_text().split()
    hot = material.hot_token()
    keyset = KeySet.import_key_set(json.loads(material.jwks_path.read_text()))
    private = load_pem_private_key(material.key_path.read_bytes(), password=None)
    public_key = private.public_key()
    assert isinstance(public_key, RSAPublicKey)

    settings = IssuerSettings(port=args.issuer_port, issuer=issuer, audiences=(AUDIENCE,))
    key = SigningKey.from_pem_file(str(material.key_path))
    server = BackgroundServer(create_app(settings, key), port=args.issuer_port).start()
    rows: list[dict[str, Any]] = []
    try:
        candidates: list[tuple[str, Callable[[], Validate]]] = [
            (
                "raw RSA-2048 PKCS#1 v1.5 verify (floor)",
                lambda: build_floor(public_key, cold[:needed] + [hot]),
            ),
            ("ours", lambda: build_ours(issuer, AUDIENCE, f"{issuer}.well-known/jwks.json")),
            ("quickstart (Authlib rfc7523)", lambda: build_quickstart(issuer, AUDIENCE, keyset)),
            ("joserfc decode + claims", lambda: build_joserfc(issuer, AUDIENCE, keyset)),
        ]
        for name, factory in candidates:
            try:
                fn = factory()
                fn(hot)  # loads keys (ours fetches the JWKS here) and checks the token is accepted
            except Exception as exc:  # report and go on: one broken candidate must not hide the rest
                rows.append({"validator": name, "error": f"{type(exc).__name__}: {exc}"})
                continue
            gc.collect()
            cold_us = bench_cold(fn, cold, args.tokens_per_repeat, args.repeats)
            hot_us = bench_hot(fn, hot, args.tokens_per_repeat, args.repeats)
            rows.append(
                {
                    "validator": name,
                    "cold_us": round(statistics.median(cold_us), 2),
                    "hot_us": round(statistics.median(hot_us), 2),
                    "cold_us_runs": [round(v, 2) for v in cold_us],
                    "hot_us_runs": [round(v, 2) for v in hot_us],
                }
            )
    finally:
        server.stop()

    floor = rows[0].get("cold_us")
    print(
        f"Micro-benchmark: µs per validation, median of {args.repeats} × "
        f"{args.tokens_per_repeat} calls (cold: each token once; hot: one token).\n"
    )
    print("| validator | cold µs | hot µs | cold / floor |")
    print("|---|---:|---:|---:|")
    for row in rows:
        if "error" in row:
            print(f"| {row['validator']} | — | — | unavailable: {row['error']} |")
            continue
        ratio = f"{row['cold_us'] / floor:.2f}" if floor else "—"
        print(f"| {row['validator']} | {row['cold_us']:.1f} | {row['hot_us']:.1f} | {ratio} |")
    print("\nGoals: ours cold / floor <= 1.5; ours hot <= 10 µs.")
    if args.json:
        args.json.write_text(json.dumps({"rows": rows}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
