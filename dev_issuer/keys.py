"""RSA signing keys of the DEVELOPMENT issuer: generated per process or loaded from a PEM file."""

from __future__ import annotations

import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import padding
from cryptography.hazmat.primitives.asymmetric.rsa import RSAPrivateKey
from cryptography.hazmat.primitives.serialization import load_pem_private_key
from joserfc import jwt
from joserfc.jwk import RSAKey

from dev_issuer.config import IssuerConfigError

ALGORITHM = "RS256"
_MIN_BITS = 2048
_HASHES: dict[str, type[hashes.SHA256 | hashes.SHA384 | hashes.SHA512]] = {
    "256": hashes.SHA256, "384": hashes.SHA384, "512": hashes.SHA512
}


class SigningKey:
    """An RSA private key with its kid (by default its RFC 7638 thumbprint)."""

    def __init__(self, private_key: RSAPrivateKey, kid: str | None = None) -> None:
        """Wrap a private key; without a kid, derive one from its public part."""
        if private_key.key_size < _MIN_BITS:
            raise IssuerConfigError(f"DEV_ISSUER_KEY_FILE key must be >= {_MIN_BITS} bits")
        self.kid = kid or RSAKey.import_key(private_key).thumbprint()
        self.private = private_key
        self._key = RSAKey.import_key(
            private_key, parameters={"kid": self.kid, "use": "sig", "alg": ALGORITHM}
        )
        self._public_jwk: dict[str, Any] = dict(self._key.as_dict(private=False))

    def __repr__(self) -> str:
        """Name the kid only (never key material)."""
        return f"SigningKey(kid={self.kid!r})"

    @classmethod
    def generate(cls, kid: str | None = None) -> SigningKey:
        """Generate a fresh RSA-2048 key (lives only in this process's memory)."""
        generated = RSAKey.generate_key(2048, private=True)
        assert generated.private_key is not None
        return cls(generated.private_key, kid)

    @classmethod
    def from_pem_file(cls, path: str) -> SigningKey:
        """Load an unencrypted PEM RSA private key, raising IssuerConfigError if unusable."""
        try:
            data = Path(path).read_bytes()
        except OSError as exc:
            raise IssuerConfigError(f"DEV_ISSUER_KEY_FILE cannot be read: {exc.strerror}") from None
        try:
            key = load_pem_private_key(data, password=None)
        except (ValueError, TypeError):
            raise IssuerConfigError(
                "DEV_ISSUER_KEY_FILE is not an unencrypted PEM private key"
            ) from None
        if not isinstance(key, RSAPrivateKey):
            raise IssuerConfigError("DEV_ISSUER_KEY_FILE must hold an RSA private key")
        return cls(key)

    @property
    def public_jwk(self) -> dict[str, Any]:
        """Return the public JWK (a copy; never private members)."""
        return dict(self._public_jwk)

    @property
    def public_pem(self) -> bytes:
        """Return the SubjectPublicKeyInfo PEM of the public half."""
        return self.private.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )

    def jwks(self) -> dict[str, Any]:
        """Return a JWK Set holding only this key's public half."""
        return {"keys": [self.public_jwk]}

    def sign(self, signing_input: bytes, alg: str = ALGORITHM) -> bytes:
        """Return the RFC 7518 section 3.3/3.5 RSnnn or PSnnn signature of signing_input."""
        family, bits = alg[:2], alg[2:]
        if bits not in _HASHES or family not in ("RS", "PS"):
            raise ValueError(f"SigningKey.sign does not do {alg}")
        digest = _HASHES[bits]()
        if family == "RS":
            return self.private.sign(signing_input, padding.PKCS1v15(), digest)
        pss = padding.PSS(mgf=padding.MGF1(digest), salt_length=digest.digest_size)
        return self.private.sign(signing_input, pss, digest)

    def encode_jwt(self, claims: Mapping[str, Any]) -> str:
        """Sign claims as a compact RS256 JWT with Auth0's default header (typ JWT, kid)."""
        header = {"alg": ALGORITHM, "typ": "JWT", "kid": self.kid}
        return jwt.encode(header, dict(claims), self._key, algorithms=[ALGORITHM])


def now() -> int:
    """Return the current Unix time in whole seconds."""
    return int(time.time())
