"""Authlib's bearer-token validator (RFC 6750), backed by this service's ``TokenVerifier``."""

from __future__ import annotations

from typing import Any

from authlib.oauth2.rfc6750 import BearerTokenValidator

from .errors import REALM
from .errors import InsufficientScopeError
from .tokens import AccessToken
from .tokens import TokenVerifier
from .tokens import deny


class Auth0BearerTokenValidator(BearerTokenValidator):
    """Authlib's bearer-token validator, backed by ``TokenVerifier``."""

    def __init__(self, verifier: TokenVerifier) -> None:
        super().__init__(realm=REALM)
        self._verifier = verifier

    def authenticate_token(self, token_string: str) -> AccessToken:
        """Verify the token string (signature and claims)."""
        return self._verifier.verify(token_string)

    def validate_token(self, token: AccessToken, scopes: list[str] | None, request: Any) -> None:
        """Check lifetime (with leeway) and that every required permission is granted."""
        if token.is_expired():
            raise deny("expired", "The token has expired.")
        for scope in scopes or ():
            if not token.grants(scope):
                raise InsufficientScopeError()
