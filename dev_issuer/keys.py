"""RS256 signing key of the DEVELOPMENT issuer: generated per process or loaded from a PEM file."""

from __future__ import annotations

import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.rsa import RSAPrivateKey
from cryptography.hazmat.primitives.serialization import load_pem_private_key
from joserfc import jwt
from joserfc.jwk import RSAKey

from dev_issuer.config import IssuerConfigError

ALGORITHM = "RS256"
_MIN_BITS = 2048


class SigningKey:
    """An RSA private key with its RFC 7638 thumbprint as kid."""

    def __init__(self, private_key: RSAPrivateKey) -> None:
        """Wrap a private key; the kid is derived from its public part."""
        if private_key.key_size < _MIN_BITS:
            raise IssuerConfigError(f"DEV_ISSUER_KEY_FILE key must be >= {_MIN_BITS} bits")
        thumb = RSAKey.import_key(private_key).thumbprint()
        self._key = RSAKey.import_key(
            private_key, parameters={"kid": thumb, "use": "sig", "alg": ALGORITHM}
        )
        self.kid = thumb

    @classmethod
    def generate(cls) -> SigningKey:
        """Generate a fresh RSA-2048 key (lives only in this process's memory)."""
        generated = RSAKey.generate_key(2048, private=True)
        assert generated.private_key is not None
        return cls(generated.private_key)

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

    def public_jwk(self) -> dict[str, Any]:
        """Return the public JWK (never private members)."""
        return dict(self._key.as_dict(private=False))

    def jwks(self) -> dict[str, Any]:
        """Return the JWK Set document served at /.well-known/jwks.json."""
        return {"keys": [self.public_jwk()]}

    def sign(self, claims: Mapping[str, Any]) -> str:
        """Sign claims as a compact RS256 JWT with Auth0's default header (typ JWT, kid)."""
        header = {"alg": ALGORITHM, "typ": "JWT", "kid": self.kid}
        return jwt.encode(header, dict(claims), self._key, algorithms=[ALGORITHM])


def now() -> int:
    """Return the current Unix time in whole seconds."""
    return int(time.time())
