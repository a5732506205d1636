"""Authlib's bearer-token validator (RFC 6750), backed by this service's ``TokenVerifier``."""

from __future__ import annotations

import time
from typing import Any

from authlib.oauth2.rfc6750 import BearerTokenValidator
from flask import g

from ..jose.access_token import AccessToken
from ..jose.access_token import bound_key
from ..jose.cert_binding import check_binding
from ..jose.claims import ClaimCheck
from ..jose.dpop import ProofVerifier
from ..jose.errors import REALM
from ..jose.errors import InsufficientScopeError
from ..jose.errors import InsufficientUserAuthenticationError
from ..jose.step_up import StepUp
from ..jose.urls import request_uris
from ..jose.verifier import TokenVerifier
from ..jose.verifier import deny

__all__ = ["Auth0BearerTokenValidator", "DPoPTokenValidator", "bound_key"]


class Auth0BearerTokenValidator(BearerTokenValidator):
    """Authlib's bearer-token validator, backed by ``TokenVerifier``."""

    def __init__(
        self,
        verifier: TokenVerifier,
        *,
        refuse_bound: bool = False,
        mtls: str = "disabled",
        cert_environ_key: str = "HTTP_X_CLIENT_CERT",
    ) -> None:
        super().__init__(realm=REALM)
        self._verifier = verifier
        #: RFC 9449 §7.2: with DPoP supported, a DPoP-bound token is not a bearer token.
        self._refuse_bound = refuse_bound
        #: AUTH0_MTLS, and where the proxy's certificate header is in the WSGI environ.
        self._mtls = mtls
        self._cert_key = cert_environ_key

    def authenticate_token(self, token_string: str) -> AccessToken:
        """Verify the token string (signature and claims)."""
        return self._verifier.verify(token_string)

    def check_proof(self, token: AccessToken, request: Any) -> None:
        """What the scheme checks beyond the token itself: nothing for Bearer."""

    def validate_token(
        self,
        token: AccessToken,
        scopes: list[str] | None,
        request: Any,
        claims: ClaimCheck | None = None,
        step_up: StepUp | None = None,
    ) -> None:
        """Check lifetime (with leeway), bindings, step-up, the route's claims, then its permissions.

        ``scopes`` has Authlib's meaning (``TokenValidator.scope_insufficient``): a list of
        alternatives, any one of which suffices, each a space-delimited set that is all-of.
        Permissions match exactly (scope plus Auth0 RBAC ``permissions``).
        """
        self.check_proof(token, request)
        if token.is_expired():
            raise deny("expired", "The token has expired.")
        if self._refuse_bound and bound_key(token) is not None:
            raise deny("dpop_bound_as_bearer", "A DPoP-bound token must be sent with the DPoP scheme.")
        # RFC 8705 §3 on every scheme: a token bound by cnf.jkt and x5t#S256 satisfies both.
        check_binding(token.claims, request.environ.get(self._cert_key), self._mtls)
        # RFC 9470 §3: before permissions, so a token failing both asks for the stronger login.
        if step_up is not None:
            unmet = step_up.unmet(token.claims, time.time(), token.leeway)
            if unmet:
                raise InsufficientUserAuthenticationError(unmet)
        # A failed claim check means the token is not acceptable here at all: 401 invalid_token,
        # as express-oauth2-jwt-bearer answers claimEquals/claimCheck; only scopes are 403.
        if claims is not None and not claims(token.claims):
            raise deny("claim_check", "The access token does not meet this route's claim requirements.")
        if scopes and not any(token.permissions.issuperset(s.split()) for s in scopes):
            raise InsufficientScopeError.for_scopes(scopes)


class DPoPTokenValidator(Auth0BearerTokenValidator):
    """Authlib's validator for ``Authorization: DPoP`` (RFC 9449 §7.1): token, binding and proof."""

    TOKEN_TYPE = "dpop"

    def __init__(
        self,
        verifier: TokenVerifier,
        proofs: ProofVerifier,
        public_urls: tuple[str, ...],
        *,
        mtls: str = "disabled",
        cert_environ_key: str = "HTTP_X_CLIENT_CERT",
    ) -> None:
        super().__init__(verifier, mtls=mtls, cert_environ_key=cert_environ_key)
        self._proofs = proofs
        self._public_urls = public_urls

    def check_proof(self, token: AccessToken, request: Any) -> None:
        """Check the binding and this request's proof: per request, never cached."""
        jkt = bound_key(token)
        if jkt is None:
            raise deny("dpop_unbound_token", "The token is not bound to a DPoP key.")
        environ = request.environ
        nonce = self._proofs.verify(
            environ["HTTP_DPOP"].strip(),
            # A gateway decision names the original request's method and URI (its own are
            # /auth/check's); own routes use this request's.
            method=request.method or environ["REQUEST_METHOD"],
            url=request.uri or request_uris(environ, self._public_urls),
            access_token=request.credentials,
            jkt=jkt,
        )
        if nonce is not None:
            g.dpop_nonce = nonce
