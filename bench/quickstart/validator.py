"""The quickstart's validator: Authlib's JWTBearerTokenValidator over a JWKS fetched once.

Mirrors auth0-samples/auth0-python-api-samples (pyvnext-rewrite) `validator.py`. The only
changes: the key set is imported with joserfc's `KeySet` (Authlib 1.9 deprecates
`authlib.jose.JsonWebKey`), and the issuer URL is passed in so the bench can use a local
http:// issuer instead of `https://{domain}/`.
"""

from __future__ import annotations

import json
from urllib.request import urlopen

from authlib.oauth2.rfc7523 import JWTBearerTokenValidator
from joserfc.jwk import KeySet


class Auth0JWTBearerTokenValidator(JWTBearerTokenValidator):
    """Fetches the JWKS once at construction (per worker) and checks exp, aud and iss."""

    def __init__(self, issuer: str, audience: str) -> None:
        # Like the original: no timeout, no cache refresh, no retry.
        jsonurl = urlopen(f"{issuer}.well-known/jwks.json")
        public_key = KeySet.import_key_set(json.loads(jsonurl.read()))
        super().__init__(public_key)
        self.claims_options = {
            "exp": {"essential": True},
            "aud": {"essential": True, "value": audience},
            "iss": {"essential": True, "value": issuer},
        }
