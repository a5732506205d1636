"""Auth failures as RFC 6750 errors, each with a fixed status, body, headers and metric reason.

Descriptions are constant strings chosen here: nothing a client sent is ever echoed back.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from functools import lru_cache

from authlib.oauth2 import OAuth2Error

#: RFC 6750 §3: the realm named in every challenge.
REALM = "api"

Headers = tuple[tuple[str, str], ...]


class AuthError(OAuth2Error):
    """Base of every refusal; ``reason`` is the bounded label used in logs and metrics."""

    error: str | None = None
    status_code = 401
    reason = "invalid_token"
    description = "The access token is invalid."
    #: RFC 6750 §3: the scope a client needs, named in the challenge when set.
    scope: str | None = None
    #: Seconds for a Retry-After header (RFC 9110 §10.2.3), when the client should simply retry.
    retry_after: int | None = None

    def __init__(self, description: str | None = None, *, reason: str | None = None) -> None:
        # Deliberately not OAuth2Error.__init__: it re-validates the description character by
        # character on every refusal (~20 µs), and ours are fixed strings checked once by the
        # tests (test_errors.py) against the same RFC 6749 §5.2 character set.
        Exception.__init__(self, description or self.description)
        if description is not None:
            self.description = description
        if reason is not None:
            self.reason = reason
        self.state = self.redirect_uri = self.uri = None
        self.redirect_fragment = False

    def challenge(self) -> str | None:
        """The WWW-Authenticate value, or None when no challenge applies."""
        params = [f'realm="{REALM}"']
        if self.error:
            params.append(f'error="{self.error}"')
            if self.scope:
                params.append(f'scope="{self.scope}"')
            params.append(f'error_description="{self.get_error_description()}"')
        return "Bearer " + ", ".join(params)

    def response_parts(self) -> tuple[int, bytes, Headers]:
        """Status, JSON body and headers, rendered once per distinct error."""
        return _render(type(self), self.get_error_description(), self.scope)

    def get_body(self) -> list[tuple[str, str]]:
        """The JSON members of the error body."""
        return [("error", self.error or "unauthorized"), ("error_description", self.description)]


class MissingTokenError(AuthError):
    """No credentials: RFC 6750 §3.1 says no error code, just the challenge."""

    error = None
    reason = "missing_token"
    description = "An access token is required: send 'Authorization: Bearer <token>'."


class InvalidRequestError(AuthError):
    """Malformed Authorization header (RFC 6750 §3.1 invalid_request, status 400)."""

    error = "invalid_request"
    status_code = 400
    reason = "invalid_request"
    description = "The Authorization header is malformed; expected 'Bearer <token>'."


class InvalidTokenError(AuthError):
    """A presented token was rejected (RFC 6750 §3.1 invalid_token, status 401)."""

    error = "invalid_token"


class InsufficientScopeError(AuthError):
    """A valid token lacks the permission the route needs (RFC 6750 §3.1, status 403)."""

    error = "insufficient_scope"
    status_code = 403
    reason = "insufficient_scope"
    description = "The access token lacks a permission this route requires."

    @classmethod
    def for_scopes(cls, scopes: Sequence[str]) -> InsufficientScopeError:
        """The refusal naming what a route requires: Authlib's alternatives, each all-of."""
        return cls(*_scope_texts(tuple(scopes)))

    def __init__(self, description: str | None = None, scope: str | None = None) -> None:
        super().__init__(description)
        if scope is not None:
            self.scope = scope


@lru_cache(maxsize=256)
def _scope_texts(scopes: tuple[str, ...]) -> tuple[str | None, str | None]:
    """Description and challenge ``scope`` for required alternatives (route constants, cached).

    RFC 6750 §3 lets ``scope`` list what the resource needs; with alternatives it names the
    first one (a client asking for it will succeed) and the description lists them all.
    """
    if not scopes:
        return None, None
    first = scopes[0]
    if len(scopes) > 1:
        listed = ", ".join(f"'{alternative}'" for alternative in scopes)
        return f"The access token lacks the permissions this route requires, one of: {listed}.", first
    if " " in first:
        return f"The access token lacks the '{first}' permissions (all are required).", first
    return f"The access token lacks the '{first}' permission.", first


class KeysUnavailableError(AuthError):
    """No usable signing keys: the issuer is unreachable and nothing is cached.

    The client did nothing wrong, so this is 503 with Retry-After, not a 401 that would make it
    throw away a good token.
    """

    error = "temporarily_unavailable"
    status_code = 503
    reason = "keys_unavailable"
    description = "Signing keys are temporarily unavailable; retry shortly."
    retry_after = 5

    def challenge(self) -> str | None:
        """No challenge: authentication did not fail."""
        return None


@lru_cache(maxsize=256)
def _render(cls: type[AuthError], description: str, scope: str | None) -> tuple[int, bytes, Headers]:
    """Render an error class, description and scope into response parts (cached: rejections are hot)."""
    error = cls(description)
    error.scope = scope
    body = json.dumps(dict(error.get_body()))
    headers: list[tuple[str, str]] = [("Content-Type", "application/json")]
    challenge = error.challenge()
    if challenge:
        headers.append(("WWW-Authenticate", challenge))
    if cls.retry_after is not None:
        headers.append(("Retry-After", str(cls.retry_after)))
    # RFC 6750 §5.3 / RFC 9111: auth failures must not be cached by intermediaries.
    headers.append(("Cache-Control", "no-store"))
    return cls.status_code, body.encode(), tuple(headers)
