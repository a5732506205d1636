"""Our RSA (padding, hash) table agrees with an independent JWS implementation (joserfc)."""

from __future__ import annotations

import base64

import pytest
from joserfc import jws
from joserfc.jwk import RSAKey

from service.config import SUPPORTED_ALGORITHMS
from service.jose.jwks_parse import VerificationKey
from service.jose.signatures import signature_check as _signature_check

RSA_ALGORITHMS = sorted(a for a in SUPPORTED_ALGORITHMS if a[:2] in ("RS", "PS"))


@pytest.fixture(scope="module")
def rsa_key() -> RSAKey:
    """One RSA-2048 key for every algorithm."""
    return RSAKey.generate_key(2048, private=True)


def _sign(key: RSAKey, alg: str) -> tuple[bytes, bytes]:
    """Return (signing input, signature) of a joserfc compact JWS."""
    token = jws.serialize_compact({"alg": alg}, b"payload", key, algorithms=[alg])
    signing_input, _, signature = token.rpartition(".")
    return signing_input.encode(), base64.urlsafe_b64decode(signature + "=" * (-len(signature) % 4))


@pytest.mark.parametrize("alg", RSA_ALGORITHMS)
def test_rsa_signature_made_by_joserfc_verifies(rsa_key: RSAKey, alg: str) -> None:
    """A signature joserfc makes for an algorithm passes our check for that algorithm."""
    public = VerificationKey.of(RSAKey.import_key(rsa_key.as_dict(private=False)))
    message, signature = _sign(rsa_key, alg)
    assert _signature_check(alg)(message, signature, public)
    assert not _signature_check(alg)(message + b"x", signature, public)


@pytest.mark.parametrize("alg", RSA_ALGORITHMS)
def test_rsa_signature_of_another_algorithm_is_refused(rsa_key: RSAKey, alg: str) -> None:
    """Padding and hash are both part of the scheme: no other RSA algorithm's signature passes."""
    public = VerificationKey.of(RSAKey.import_key(rsa_key.as_dict(private=False)))
    for other in RSA_ALGORITHMS:
        if other != alg:
            message, signature = _sign(rsa_key, other)
            assert not _signature_check(alg)(message, signature, public), other
