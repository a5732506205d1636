"""Per-route claim checks for ``require_auth(..., claims=...)``, compiled once per route.

In the spirit of express-oauth2-jwt-bearer's ``claimEquals`` / ``claimIncludes`` / ``claimCheck``
(https://github.com/auth0/node-oauth2-jwt-bearer): a mapping of claim name to the exact value
required (or to a predicate on that claim's value), or one predicate over all the claims.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from collections.abc import Mapping
from typing import Any

#: What a route passes: ``{"org_id": "org_123", "amr": lambda v: "mfa" in (v or ())}``
#: or ``lambda claims: ...``.
ClaimsSpec = Mapping[str, Any] | Callable[[dict[str, Any]], bool]
#: The compiled form the validator runs: True when the token's claims satisfy the route.
ClaimCheck = Callable[[dict[str, Any]], bool]


def compile_claims(spec: ClaimsSpec | None) -> ClaimCheck | None:
    """Turn a route's ``claims=`` argument into one predicate (None when there is nothing to check)."""
    if spec is None:
        return None
    if callable(spec):
        return lambda claims: bool(spec(claims))
    if not isinstance(spec, Mapping) or not spec:
        raise TypeError("claims= takes a non-empty mapping of claim name to value, or a callable")
    checks = tuple(_claim_check(name, expected) for name, expected in spec.items())
    return lambda claims: all(check(claims) for check in checks)


def _claim_check(name: str, expected: Any) -> ClaimCheck:
    """One claim's check: a predicate on its value (None when absent), or exact equality."""
    if not isinstance(name, str) or not name:
        raise TypeError("claims= names must be non-empty strings")
    if callable(expected):
        return lambda claims: bool(expected(claims.get(name)))
    return lambda claims: name in claims and _same(claims[name], expected)


def _same(actual: Any, expected: Any) -> bool:
    """JSON equality without Python's ``True == 1`` (a boolean claim never equals a number)."""
    return isinstance(actual, bool) is isinstance(expected, bool) and actual == expected


#: RFC 6749 §3.3 scope-token characters: what a route may require (and a challenge may name).
_SCOPE_TOKEN = re.compile(r"[\x21\x23-\x5b\x5d-\x7e]+")


def is_scope_list(value: object) -> bool:
    """True for a space-delimited list of RFC 6749 §3.3 scope tokens (one required alternative)."""
    return isinstance(value, str) and all(_SCOPE_TOKEN.fullmatch(part) for part in value.split(" "))
