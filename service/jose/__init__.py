"""Pure token and key logic (no Flask, no gunicorn): access tokens, JWKS, DPoP proofs, replay, nonces.

The names below are loaded on first use, so the gunicorn master can import ``service.jose.replay``
and ``service.jose.nonce`` (standard library only) without loading the JOSE libraries.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING
from typing import Any

if TYPE_CHECKING:
    from .access_token import AccessToken
    from .dpop import ProofVerifier
    from .errors import AuthError
    from .jwks_cache import JWKSCache
    from .verifier import TokenVerifier

__all__ = ["AccessToken", "AuthError", "JWKSCache", "ProofVerifier", "TokenVerifier"]

_HOMES = {
    "AccessToken": "access_token",
    "AuthError": "errors",
    "JWKSCache": "jwks_cache",
    "ProofVerifier": "dpop",
    "TokenVerifier": "verifier",
}


def __getattr__(name: str) -> Any:
    """Import a re-exported name from its module on first use (PEP 562)."""
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{home}"), name)
