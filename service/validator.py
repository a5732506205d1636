"""Authlib's bearer-token validator (RFC 6750), backed by this service's ``TokenVerifier``."""

from __future__ import annotations

from typing import Any

from authlib.oauth2.rfc6750 import BearerTokenValidator

from .claims import ClaimCheck
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

    @property
    def verifier(self) -> TokenVerifier:
        """The verifier (and through it the key caches) this validator uses."""
        return self._verifier

    def authenticate_token(self, token_string: str) -> AccessToken:
        """Verify the token string (signature and claims)."""
        return self._verifier.verify(token_string)

    def validate_token(
        self,
        token: AccessToken,
        scopes: list[str] | None,
        request: Any,
        claims: ClaimCheck | None = None,
    ) -> None:
        """Check lifetime (with leeway), the route's claim checks, then its required permissions.

        ``scopes`` has Authlib's meaning (``TokenValidator.scope_insufficient``): a list of
        alternatives, any one of which suffices, each a space-delimited set that is all-of.
        Permissions match exactly (scope plus Auth0 RBAC ``permissions``).
        """
        if token.is_expired():
            raise deny("expired", "The token has expired.")
        # A failed claim check means the token is not acceptable here at all: 401 invalid_token,
        # as express-oauth2-jwt-bearer answers claimEquals/claimCheck; only scopes are 403.
        if claims is not None and not claims(token.claims):
            raise deny("claim_check", "The access token does not meet this route's claim requirements.")
        if scopes and not any(token.permissions.issuperset(s.split()) for s in scopes):
            raise InsufficientScopeError.for_scopes(scopes)
