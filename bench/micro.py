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
    from service.jose.verifier import verifier_for

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


def build_dpop_pair(
    issuer: str, audience: str, jwks_uri: str, key_pem: bytes, per_repeat: int, repeats: int
) -> tuple[Validate, Validate, list[str], str]:
    """Bearer and DPoP per-request calls of ours on one DPoP-bound token, and fresh proofs.

    Both calls verify the (cached, hot) token; the DPoP one also checks its binding and one
    proof, each seen once, exactly as ``DPoPTokenValidator`` does per request.
    """
    from joserfc.jwk import ECKey
    from joserfc.jwk import RSAKey

    from bench.material import KID
    from bench.material import _claims
    from dev_issuer.client import make_proof
    from service.config import Settings
    from service.jose import dpop
    from service.jose.access_token import bound_key
    from service.jose.replay_table import table_for
    from service.jose.verifier import verifier_for

    settings = Settings.from_env(
        {"AUTH0_ISSUER": issuer, "AUTH0_AUDIENCE": audience, "AUTH0_JWKS_URI": jwks_uri}
    )
    verifier = verifier_for(settings, lambda event: None)
    client_key = ECKey.generate_key("P-256", private=True)
    claims = _claims(issuer, audience, "auth0|dpop", int(time.time()))
    claims["cnf"] = {"jkt": client_key.thumbprint()}
    token = jwt.encode({"alg": "RS256", "typ": "JWT", "kid": KID}, claims, RSAKey.import_key(key_pem))
    url = "http://127.0.0.1:3010/api/private"
    proofs = [make_proof(client_key, "GET", url, access_token=token) for _ in range(per_repeat * repeats + 1)]
    checker = dpop.verifier_for(settings, table_for(settings.dpop))

    def bearer(_: str) -> Any:
        """The Bearer request: the token alone."""
        return verifier.verify(token)

    def with_proof(proof: str) -> Any:
        """The DPoP request: the token, its binding and this request's proof."""
        access = verifier.verify(token)
        checker.verify(proof, method="GET", url=url, access_token=token, jkt=bound_key(access))
        return access

    return bearer, with_proof, proofs, token


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


def build_es256_floor(proofs: list[str]) -> Validate:
    """Only the ECDSA P-256 verify of each proof's own signature, split and decoded beforehand."""
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature
    from joserfc.jwk import ECKey

    header = json.loads(base64.urlsafe_b64decode(proofs[0].split(".")[0] + "=="))
    public = ECKey.import_key(header["jwk"]).public_key
    assert isinstance(public, ec.EllipticCurvePublicKey)
    ecdsa = ec.ECDSA(hashes.SHA256())
    prepared = {}
    for proof in proofs:
        signing_input, _, signature = proof.rpartition(".")
        raw = base64.urlsafe_b64decode(signature + "=" * (-len(signature) % 4))
        der = encode_dss_signature(int.from_bytes(raw[:32], "big"), int.from_bytes(raw[32:], "big"))
        prepared[proof] = (der, signing_input.encode())

    def validate(proof: str) -> Any:
        """Verify the pre-split signature: nothing but the public-key operation and SHA-256."""
        der, signed = prepared[proof]
        public.verify(der, signed, ecdsa)

    return validate


def bench_dpop(issuer: str, material: Material, per_repeat: int, repeats: int) -> list[dict[str, Any]]:
    """Bearer and DPoP requests interleaved per repeat (min of repeats), plus the ES256 floor."""
    per_repeat = min(per_repeat, 1000)  # each proof is signed beforehand (~50 µs each)
    jwks_uri = f"{issuer}.well-known/jwks.json"
    key_pem = material.key_path.read_bytes()
    bearer, with_proof, proofs, token = build_dpop_pair(
        issuer, AUDIENCE, jwks_uri, key_pem, per_repeat, repeats
    )
    floor = build_es256_floor(proofs)
    with_proof(proofs.pop())  # loads the keys and caches the token
    gc.collect()
    bearer_us, dpop_us, floor_us = [], [], []
    for r in range(repeats):
        batch = proofs[r * per_repeat : (r + 1) * per_repeat]
        bearer_us.append(time_per_call(bearer, [token] * per_repeat))
        dpop_us.append(time_per_call(with_proof, batch))
        floor_us.append(time_per_call(floor, batch))
    best_bearer, best_dpop = min(bearer_us), min(dpop_us)
    return [
        {"request": "raw ES256 verify of each proof (floor of the extra)", "us": round(min(floor_us), 2)},
        {"request": "Bearer (ours, hot token)", "us": round(best_bearer, 2), "runs": bearer_us},
        {
            "request": "DPoP (ours, hot token + fresh ES256 proof)",
            "us": round(best_dpop, 2),
            "extra_us": round(best_dpop - best_bearer, 2),
            "runs": dpop_us,
        },
    ]


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
        dpop_rows = bench_dpop(issuer, material, args.tokens_per_repeat, args.repeats)
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
    print(
        "\nDPoP (RFC 9449) next to Bearer: µs per request on one DPoP-bound token (hot in the token "
        "cache),\nthe DPoP row with a fresh ES256 proof per request (binding, htu, ath, signature, "
        "cross-worker replay store).\n"
    )
    print("| request | µs | DPoP − Bearer µs |")
    print("|---|---:|---:|")
    for row in dpop_rows:
        print(f"| {row['request']} | {row['us']:.1f} | {row.get('extra_us', 0):.1f} |")
    if args.json:
        args.json.write_text(json.dumps({"rows": rows, "dpop": dpop_rows}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
