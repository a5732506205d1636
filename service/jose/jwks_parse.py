"""Parsing a JWKS document (RFC 7517 §5) into the public signing keys this service may use."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from cryptography.hazmat.primitives.asymmetric import rsa
from joserfc.jwk import Key
from joserfc.jwk import import_key

from ..config import key_type_for
from .jwks_fetch import FetchError
from .primitives import has_private_members


@dataclass(frozen=True, slots=True)
class VerificationKey:
    """A published public key with what the validator checks against, resolved once per fetch."""

    key: Key
    kty: str
    alg: str | None
    native: Any

    @classmethod
    def of(cls, key: Key) -> VerificationKey:
        """Resolve the joserfc key's type, pinned algorithm and cryptography public key."""
        alg = key.get("alg")
        return cls(key, key.key_type, alg if isinstance(alg, str) else None, key.public_key)



def parse_jwks(body: bytes, algorithms: tuple[str, ...]) -> dict[str, VerificationKey]:
    """Import the usable public signing keys of a JWKS document (RFC 7517 §5)."""
    try:
        doc = json.loads(body)
    except (ValueError, RecursionError):
        raise FetchError("JWKS is not valid JSON") from None
    entries = doc.get("keys") if isinstance(doc, dict) else None
    if not isinstance(entries, list):
        raise FetchError("JWKS has no 'keys' array")
    wanted_kty = {key_type_for(a) for a in algorithms}
    keys: dict[str, VerificationKey] = {}
    ambiguous: set[str] = set()
    for entry in entries:
        key = _usable_key(entry, wanted_kty, algorithms)
        if key is None:
            continue
        kid = entry["kid"]
        held = keys.get(kid)
        if held is None and kid not in ambiguous:
            keys[kid] = VerificationKey.of(key)
        elif held is not None and held.key.thumbprint() != key.thumbprint():
            # RFC 7517 §4.5: distinct keys get distinct kids. Two keys under one kid leave it
            # unclear which one a token means, so neither verifies anything.
            del keys[kid]
            ambiguous.add(kid)
    if not keys:
        raise FetchError("JWKS holds no usable signing key")
    return keys


def _usable_key(entry: Any, wanted_kty: set[str], algorithms: tuple[str, ...]) -> Key | None:
    """Return the imported key if the JWK is a public signing key we may use, else None."""
    if not (
        isinstance(entry, dict)
        and _has_kid(entry)
        and _is_wanted_type(entry, wanted_kty)
        and _is_for_signatures(entry)
        and _alg_is_allowed(entry, algorithms)
        # A private member in a published JWKS is a misconfiguration; never hold private keys.
        and not has_private_members(entry)
    ):
        return None
    key = _import(entry)
    if key is None or _is_too_weak(key):
        return None
    return key


def _has_kid(entry: dict[str, Any]) -> bool:
    """A non-empty string kid: tokens name their key by it."""
    kid = entry.get("kid")
    return isinstance(kid, str) and bool(kid)


def _is_wanted_type(entry: dict[str, Any], wanted_kty: set[str]) -> bool:
    """A key type one of the allowed algorithms can use (RFC 7518 §6.1)."""
    kty = entry.get("kty")
    return isinstance(kty, str) and kty in wanted_kty


def _is_for_signatures(entry: dict[str, Any]) -> bool:
    """``use`` absent or "sig" (RFC 7517 §4.2), ``key_ops`` absent or allowing "verify" (§4.3)."""
    ops = entry.get("key_ops")
    return entry.get("use", "sig") == "sig" and (
        ops is None or (isinstance(ops, list) and "verify" in ops)
    )


def _alg_is_allowed(entry: dict[str, Any], algorithms: tuple[str, ...]) -> bool:
    """No pinned ``alg``, or an allowed one that fits the key type (RFC 7517 §4.4)."""
    if "alg" not in entry:
        return True
    alg = entry["alg"]
    return isinstance(alg, str) and alg in algorithms and key_type_for(alg) == entry["kty"]


def _import(entry: dict[str, Any]) -> Key | None:
    """The joserfc key for a JWK, or None if it cannot be imported."""
    try:
        return import_key(entry)
    except Exception:
        # joserfc reports bad members as JoseError, ValueError, TypeError or KeyError (an
        # unknown curve) depending on which one is wrong: whatever it says, the key is unusable.
        return None


def _is_too_weak(key: Key) -> bool:
    """RSA keys under 2048 bits (RFC 7518 §3.3)."""
    public = key.public_key
    return isinstance(public, rsa.RSAPublicKey) and public.key_size < 2048
