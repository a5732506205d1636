"""Bench keys, JWKS and pre-minted tokens, cached under bench/results/cache between runs."""

from __future__ import annotations

import base64
import json
import os
import secrets
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from joserfc import jwt
from joserfc.jwk import RSAKey

from dev_issuer.keys import SigningKey

# Bump when the material's shape changes, so older caches are re-minted.
FORMAT = 2
AUDIENCE = "https://api.bench.local"
SCOPE = "read:messages"
# Tokens live two days; material older than a day is re-minted so a run never meets an expired one.
TOKEN_LIFETIME = 2 * 86400
REMINT_AFTER = 86400
SIGNATURE_BYTES = 256  # RSA-2048

TOKEN_FILES = ("hot", "cold", "badsig", "unknownkid")


@dataclass(frozen=True)
class Material:
    """Paths and facts about one set of bench keys and tokens."""

    directory: Path
    issuer: str
    audience: str
    count: int

    def tokens(self, name: str) -> Path:
        """Return the file holding one token per line for a token kind."""
        return self.directory / f"{name}.txt"

    @property
    def jwks_path(self) -> Path:
        """Return the public JWKS of key_path (the dev issuer serves the same set)."""
        return self.directory / "jwks.json"

    @property
    def key_path(self) -> Path:
        """Return the private key (bench-only, never a secret of anything real)."""
        return self.directory / "key.pem"

    def hot_token(self) -> str:
        """Return the single hot token (carries read:messages)."""
        return self.tokens("hot").read_text().strip()

    def first(self, name: str) -> str:
        """Return the first token of a token file."""
        with self.tokens(name).open() as fh:
            return fh.readline().strip()


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _segment(obj: dict[str, Any]) -> str:
    return _b64(json.dumps(obj, separators=(",", ":")).encode())


def _claims(issuer: str, audience: str, sub: str, now: int) -> dict[str, Any]:
    # The shape of an Auth0 access token in the default profile (no jti/client_id).
    return {
        "iss": issuer,
        "sub": sub,
        "aud": [audience, f"{issuer}userinfo"],
        "iat": now,
        "exp": now + TOKEN_LIFETIME,
        "azp": "bench-client",
        "scope": f"openid profile {SCOPE}",
    }


_WORKER_KEY: RSAKey | None = None


def _init_worker(pem: bytes) -> None:
    global _WORKER_KEY
    _WORKER_KEY = RSAKey.import_key(pem)


def _mint_chunk(args: tuple[str, str, str, int, int, int]) -> list[str]:
    issuer, audience, kid, start, stop, now = args
    assert _WORKER_KEY is not None
    header = {"alg": "RS256", "typ": "JWT", "kid": kid}
    return [
        jwt.encode(header, _claims(issuer, audience, f"auth0|bench{i:08d}", now), _WORKER_KEY)
        for i in range(start, stop)
    ]


def _forged(issuer: str, audience: str, prefix: str, count: int, now: int, kid: Any) -> list[str]:
    # Right shape and claims, random signature: costs an attacker nothing, costs the server a verify.
    out = []
    for i in range(count):
        header = {"alg": "RS256", "typ": "JWT", "kid": kid() if callable(kid) else kid}
        body = _segment(_claims(issuer, audience, f"auth0|{prefix}{i:08d}", now))
        out.append(f"{_segment(header)}.{body}.{_b64(secrets.token_bytes(SIGNATURE_BYTES))}")
    return out


def _write_lines(path: Path, lines: list[str]) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text("\n".join(lines) + "\n")
    tmp.replace(path)


def prepare(directory: Path, issuer: str, count: int, audience: str = AUDIENCE) -> Material:
    """Load cached bench material, minting keys and `count` cold tokens when missing or stale."""
    directory.mkdir(parents=True, exist_ok=True)
    meta_path = directory / "meta.json"
    material = Material(directory, issuer, audience, count)
    try:
        meta = json.loads(meta_path.read_text())
    except (OSError, ValueError):
        meta = {}
    fresh = (
        meta.get("format") == FORMAT
        and meta.get("issuer") == issuer
        and meta.get("audience") == audience
        and meta.get("count", 0) >= count
        and time.time() - meta.get("minted_at", 0) < REMINT_AFTER
        and all(material.tokens(name).exists() for name in TOKEN_FILES)
        and material.jwks_path.exists()
    )
    if fresh:
        return Material(directory, issuer, audience, meta["count"])

    started = time.monotonic()
    # The dev issuer serves this key from DEV_ISSUER_KEY_FILE with the same (thumbprint) kid.
    signing_key = SigningKey.generate()
    kid = signing_key.kid
    pem = RSAKey.import_key(signing_key.private).as_pem(private=True)
    material.key_path.write_bytes(pem)
    os.chmod(material.key_path, 0o600)
    material.jwks_path.write_text(json.dumps(signing_key.jwks()))

    now = int(time.time())
    workers = max(1, os.cpu_count() or 1)
    step = max(1, count // (workers * 8))
    chunks = [(issuer, audience, kid, s, min(s + step, count), now) for s in range(0, count, step)]
    with ProcessPoolExecutor(workers, initializer=_init_worker, initargs=(pem,)) as pool:
        cold = [t for chunk in pool.map(_mint_chunk, chunks) for t in chunk]
    _init_worker(pem)
    assert _WORKER_KEY is not None
    hot = jwt.encode(
        {"alg": "RS256", "typ": "JWT", "kid": kid},
        _claims(issuer, audience, "auth0|bench-hot", now),
        _WORKER_KEY,
    )
    _write_lines(material.tokens("hot"), [hot])
    _write_lines(material.tokens("cold"), cold)
    _write_lines(material.tokens("badsig"), _forged(issuer, audience, "badsig", count, now, kid))
    _write_lines(
        material.tokens("unknownkid"),
        _forged(issuer, audience, "nokid", count, now, lambda: secrets.token_hex(8)),
    )
    meta_path.write_text(
        json.dumps(
            {
                "format": FORMAT,
                "issuer": issuer,
                "audience": audience,
                "count": count,
                "minted_at": now,
                "mint_seconds": round(time.monotonic() - started, 2),
            }
        )
    )
    return material
