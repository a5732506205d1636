"""Auth failures as RFC 6750 errors, each with a fixed status, body, headers and metric reason.

Descriptions are constant strings chosen here: nothing a client sent is ever echoed back.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache

from authlib.oauth2 import OAuth2Error

#: RFC 6750 §3: the realm named in every challenge.
REALM = "api"

Headers = tuple[tuple[str, str], ...]


@dataclass(frozen=True, slots=True)
class Challenges:
    """Which schemes a 401 challenges (RFC 9449 §7.1, RFC 9728 §5.1), fixed per app."""

    #: AUTH0_DPOP: "allowed" challenges Bearer and DPoP, "required" DPoP only, "disabled" Bearer.
    dpop: str = "disabled"
    dpop_algs: tuple[str, ...] = ()
    #: RFC 9728 §5.1: where the protected-resource metadata lives (with PUBLIC_URL only).
    resource_metadata: str | None = None


#: Today's challenges: Bearer only, no metadata pointer.
BEARER_ONLY = Challenges()
#: The schemes each AUTH0_DPOP mode challenges, in order.
_SCHEMES = {"disabled": ("bearer",), "allowed": ("bearer", "dpop"), "required": ("dpop",)}


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
    #: The scheme the client authenticated with ("bearer" or "dpop"), which carries ``error=``.
    scheme: str = "bearer"
    #: Further challenge parameters after the description (RFC 9470 §3 ``acr_values``, ``max_age``).
    params: tuple[tuple[str, str], ...] = ()

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
        """The Bearer WWW-Authenticate value, or None when no challenge applies."""
        return "Bearer " + ", ".join([f'realm="{REALM}"', *self._error_params("bearer")])

    def challenges(self, config: Challenges) -> list[str]:
        """Every WWW-Authenticate value of this refusal under ``config`` (RFC 9449 §7.1)."""
        bearer = self.challenge()
        if bearer is None:
            return []
        metadata = (
            [f'resource_metadata="{config.resource_metadata}"'] if config.resource_metadata else []
        )
        schemes = _SCHEMES[config.dpop]
        if self.status_code != 401 and self.scheme in schemes:
            schemes = (self.scheme,)  # 400/403 answer on the scheme the client used
        elif self.scheme == "dpop":
            # The challenge carrying the error comes first, so clients that read only the
            # first WWW-Authenticate field still see it (RFC 9110 §11.6.1 allows any order).
            schemes = schemes[::-1]
        values = []
        for scheme in schemes:
            if scheme == "bearer":
                values.append(", ".join([bearer, *metadata]))
            else:
                algs = f'algs="{" ".join(config.dpop_algs)}"'
                values.append("DPoP " + ", ".join([*self._error_params("dpop"), algs, *metadata]))
        return values

    def _error_params(self, scheme: str) -> list[str]:
        """The error parameters, on the scheme the client used only."""
        if not self.error or scheme != self.scheme:
            return []
        params = [f'error="{self.error}"']
        if self.scope:
            params.append(f'scope="{self.scope}"')
        params.append(f'error_description="{self.get_error_description()}"')
        params.extend(f'{name}="{value}"' for name, value in self.params)
        return params

    def response_parts(self, config: Challenges = BEARER_ONLY) -> tuple[int, bytes, Headers]:
        """Status, JSON body and headers, rendered once per distinct error."""
        # Error classes are hashable (type's own __hash__); mypy reads AuthError.__hash__ instead.
        return _render(
            type(self), self.get_error_description(), self.scope, self.scheme, config, self.params  # type: ignore[arg-type]
        )

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


class InsufficientUserAuthenticationError(AuthError):
    """The user's authentication is too weak or too old for the route (RFC 9470 §3, status 401).

    The challenge names what the route asks for (``acr_values``, ``max_age``), never what the
    token carried.
    """

    error = "insufficient_user_authentication"
    reason = "step_up"
    description = "A stronger or more recent user authentication is required."

    def __init__(self, params: tuple[tuple[str, str], ...]) -> None:
        super().__init__()
        self.params = params


class InvalidDPoPProofError(AuthError):
    """A DPoP proof failed one of the RFC 9449 §4.3 checks (RFC 9449 §7.1, status 401)."""

    error = "invalid_dpop_proof"
    scheme = "dpop"
    reason = "dpop_proof"
    description = "The DPoP proof is invalid."


class UseDPoPNonceError(AuthError):
    """The proof lacks the current server nonce (RFC 9449 §9); the response carries one."""

    error = "use_dpop_nonce"
    scheme = "dpop"
    reason = "dpop_nonce"
    description = "The DPoP proof must carry the server nonce sent in the DPoP-Nonce header."

    def __init__(self, nonce: str) -> None:
        super().__init__()
        self.nonce = nonce


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


class DPoPFloodError(AuthError):
    """The proof's key already holds its share of the replay store: nothing was recorded.

    The proof may well be valid, so this is not a 401 (which would make a client drop a good
    token): 429 with Retry-After (RFC 6585 §4), as for any client over its rate.
    """

    error = "temporarily_unavailable"
    status_code = 429
    reason = "dpop_flood"
    description = "This DPoP key has sent more unique proofs than the service holds for one key; retry later."
    retry_after = 10
    scheme = "dpop"

    def challenge(self) -> str | None:
        """No challenge: authentication did not fail."""
        return None


class ReplayFullError(KeysUnavailableError):
    """The replay store has no room for a new proof (its capacity is exhausted): not recorded."""

    reason = "dpop_replay_full"
    description = "The service cannot record DPoP proofs at the moment; retry shortly."
    retry_after = 1
    scheme = "dpop"


class ReplayStoreUnavailableError(ReplayFullError):
    """The replay store could not be asked (unreachable, timed out): nothing was recorded."""

    reason = "replay_store_unavailable"


class KeysPendingError(KeysUnavailableError):
    """An unknown kid while the fetch that could publish it is out of reach: no answer yet.

    The issuer is failing, or the fetch in flight ended without success or could not be waited
    for. A 401 would make the client throw away a token that may be good, so it is asked to
    retry in a second instead.
    """

    reason = "keys_pending"
    description = "The token's signing key is being looked up; retry shortly."
    retry_after = 1


@lru_cache(maxsize=256)
def _render(
    cls: type[AuthError],
    description: str,
    scope: str | None,
    scheme: str,
    config: Challenges,
    params: tuple[tuple[str, str], ...] = (),
) -> tuple[int, bytes, Headers]:
    """Render an error class, description and scope into response parts (cached: rejections are hot)."""
    error = AuthError.__new__(cls)
    AuthError.__init__(error, description)
    error.scope = scope
    error.scheme = scheme
    error.params = params
    # Compact, with a trailing newline: the bytes Flask's jsonify gives every other answer.
    body = json.dumps(dict(error.get_body()), separators=(",", ":")) + "\n"
    headers: list[tuple[str, str]] = [("Content-Type", "application/json")]
    for challenge in error.challenges(config):
        headers.append(("WWW-Authenticate", challenge))
    if cls.retry_after is not None:
        headers.append(("Retry-After", str(cls.retry_after)))
    # RFC 6750 §5.3 / RFC 9111: auth failures must not be cached by intermediaries.
    headers.append(("Cache-Control", "no-store"))
    return cls.status_code, body.encode(), tuple(headers)
