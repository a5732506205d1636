"""Access-token verification: Auth0 / RFC 9068 JWTs checked per RFC 8725.

Order matters for cost: size, shape, header and unverified claims are checked before any key
lookup (which may fetch) and before the signature check, so junk and replayed-elsewhere tokens
are refused cheaply. A verified token is remembered (``VerifiedTokenCache``) by the SHA-256 of
its text.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from collections.abc import Sequence
from typing import Any

from ..config import ClaimRules
from ..config import Settings
from ..config import key_type_for
from .access_token import AccessToken
from .access_token import CompactToken
from .access_token import VerifiedTokenCache
from .access_token import permissions_of
from .clock import SYSTEM
from .clock import Clock
from .errors import InvalidTokenError
from .errors import KeysPendingError
from .errors import KeysUnavailableError
from .jwks_cache import FetchEvent
from .jwks_cache import JWKSCache
from .jwks_cache import KeyPending
from .jwks_fetch import FetchError
from .jwks_parse import VerificationKey
from .primitives import HeaderCache
from .primitives import b64decode
from .primitives import decode_json
from .primitives import is_numeric_date
from .signatures import signature_check
from .wait_seats import WaitSeats

#: RFC 8725 §3.5 / RFC 7515 §4.1.2-6: keys named by the token itself are never trusted.
_KEY_BEARING_HEADERS = ("jku", "x5u", "jwk", "x5c")
#: Distinct valid token headers remembered checked (a handful per issuer key; bounded).
_HEADER_CACHE_SIZE = 256
#: RFC 9068 §2.1 uses "at+jwt"; Auth0's default profile sends "JWT" (RFC 7519 §5.1).
_ACCEPTED_TYP = frozenset({"jwt", "at+jwt", "application/at+jwt"})
#: RFC 9068 §2.1 alone (AUTH0_STRICT_PROFILE): Auth0 sends it only when the API opts in.
_STRICT_TYP = frozenset({"at+jwt", "application/at+jwt"})
#: RFC 9068 §2.2 claims beyond iss/exp/aud (always required here) that the strict profile requires.
_STRICT_CLAIMS = ("client_id", "iat", "jti", "sub")


def deny(reason: str, description: str) -> InvalidTokenError:
    """Build an invalid_token error with a metric reason and a fixed description."""
    return InvalidTokenError(description, reason=reason)


class TokenVerifier:
    """Checks a compact JWS access token against its issuer's keys and this API's claims.

    Each trusted issuer has its own key cache. The unverified ``iss`` only selects among the
    configured ones (exact match, else refused before any I/O); a token is therefore only ever
    checked against the keys of the issuer it names, never another's.
    """

    def __init__(
        self,
        settings: Settings,
        jwks: JWKSCache | Sequence[JWKSCache],
        on_cache_lookup: Callable[[bool], None] | None = None,
        clock: Clock = SYSTEM,
    ) -> None:
        caches = (jwks,) if isinstance(jwks, JWKSCache) else tuple(jwks)
        self._settings = settings
        #: Wall time for exp/nbf/iat and the cache's expiry (the clock's own function: no frame).
        self._now = clock.time
        self._caches: dict[str, JWKSCache] = {cache.issuer: cache for cache in caches}
        #: Told hit (True) or miss (False) for every lookup in the verified-token cache.
        self._on_cache_lookup = on_cache_lookup or (lambda hit: None)
        self._algorithms = frozenset(settings.algorithms)
        self._rules = settings.claim_rules
        self._signature_checks = {alg: signature_check(alg) for alg in settings.algorithms}
        self._cache = VerifiedTokenCache(settings.token_cache_size, settings.token_cache_bytes)
        self._cache_size = settings.token_cache_size
        self._headers: HeaderCache[tuple[str, str]] = HeaderCache(_HEADER_CACHE_SIZE)

    @property
    def caches(self) -> tuple[JWKSCache, ...]:
        """Every trusted issuer's key cache, in configuration order."""
        return tuple(self._caches.values())

    @property
    def cached_bytes(self) -> int:
        """Bytes the verified-token cache counts against AUTH0_TOKEN_CACHE_BYTES now."""
        return self._cache.bytes

    def verify(self, token: str) -> AccessToken:
        """Return the verified token or raise an ``AuthError`` saying why not."""
        if len(token) > self._settings.max_token_bytes:
            raise deny("malformed", "The access token is too large.")
        digest = b""
        if self._cache_size:
            digest = hashlib.sha256(token.encode("latin-1")).digest()
            cached = self._cache.get(digest)
            if cached is not None and self._still_valid(entry := cached[0]):
                self._on_cache_lookup(True)
                return entry if isinstance(entry, AccessToken) else entry.expand()
            self._on_cache_lookup(False)
        access_token = self._verify_fully(token)
        if self._cache_size:
            self._cache.remember(digest, access_token)
        return access_token

    def _still_valid(self, token: AccessToken | CompactToken) -> bool:
        """Whether the full check would still accept a cached token now.

        The key that verified it must still be the one the usable key set holds for its kid:
        each fetch makes new key objects, so a refresh (which drops removed keys) or a set past
        max-stale ends the entry. The token must be unexpired.
        """
        return (
            self._caches[token.issuer].current_key(token.kid) is token.key
            and self._now() < token.expires_at + token.leeway
        )

    def _verify_fully(self, token: str) -> AccessToken:
        """The full check: shape, header, claims, key and signature."""
        parts = token.split(".")
        if len(parts) != 3:
            if len(parts) == 5:
                raise deny("malformed", "Encrypted (JWE) tokens are not accepted.")
            raise deny("malformed", "The access token is not a compact JWS.")
        header_b64, payload_b64, signature_b64 = parts
        # Every token of an issuer key shares one header: check each distinct one once.
        checked = self._headers.get(header_b64)
        if checked is None:
            checked = self._check_header(decode_json(header_b64, "header"))
            self._headers.put(header_b64, checked)
        alg, kid = checked
        claims = decode_json(payload_b64, "payload")
        now = self._now()
        jwks = self._issuer_keys(claims.get("iss"))
        expires_at = self._check_claims(claims, now)
        signature = b64decode(signature_b64) if signature_b64 else b""
        if not signature:
            raise deny("bad_signature", "The token is not signed.")
        key = self._key(jwks, kid, alg)
        signing_input = token[: len(header_b64) + 1 + len(payload_b64)].encode("ascii")
        try:
            valid = self._signature_checks[alg](signing_input, signature, key)
        except (ValueError, TypeError):
            valid = False
        if not valid:
            raise deny("bad_signature", "The token signature is invalid.")
        permissions = permissions_of(claims)
        return AccessToken(
            claims, key, kid, permissions, expires_at, self._settings.leeway, jwks.issuer
        )

    def _check_header(self, header: dict[str, Any]) -> tuple[str, str]:
        """Check the JOSE header (RFC 7515 §4, RFC 8725 §3); return its alg and kid."""
        alg = header.get("alg")
        # RFC 8725 §3.1: only allow-listed algorithms, decided before any key is touched.
        if not isinstance(alg, str) or alg not in self._algorithms:
            raise deny("bad_alg", "The token's signing algorithm is not accepted.")
        for name in _KEY_BEARING_HEADERS:
            if name in header:
                raise deny("bad_header", "Tokens that carry their own keys are not accepted.")
        # RFC 7515 §4.1.11: we understand no extensions, so any 'crit' must be refused.
        if "crit" in header:
            raise deny("bad_header", "The token uses critical header extensions.")
        typ = header.get("typ")
        if typ is not None and (not isinstance(typ, str) or typ.lower() not in _ACCEPTED_TYP):
            raise deny("bad_typ", "The token type is not an access token.")
        if self._rules.strict_profile and (not isinstance(typ, str) or typ.lower() not in _STRICT_TYP):
            raise deny("strict_profile", "The token is not an RFC 9068 access token (typ at+jwt).")
        kid = header.get("kid")
        if not isinstance(kid, str) or not kid:
            raise deny("bad_header", "The token has no key id.")
        return alg, kid

    def _issuer_keys(self, iss: Any) -> JWKSCache:
        """The key cache of the configured issuer the token names (RFC 9068 §4: exact match)."""
        jwks = self._caches.get(iss) if isinstance(iss, str) else None
        if jwks is None:
            raise deny("bad_issuer", "The token was issued by an untrusted issuer.")
        return jwks

    def _check_claims(self, claims: dict[str, Any], now: float) -> float:
        """Check registered claims (RFC 7519 §4.1, RFC 9068 §4); return ``exp``."""
        leeway = self._settings.leeway
        aud = claims.get("aud")
        audience = self._settings.audience
        if isinstance(aud, str):
            aud_ok = aud == audience
        elif isinstance(aud, list) and all(isinstance(a, str) for a in aud):
            aud_ok = audience in aud
        else:
            aud_ok = False
        if not aud_ok:
            raise deny("bad_audience", "The token is not intended for this API.")
        exp = claims.get("exp")
        if not is_numeric_date(exp):
            raise deny("bad_claims", "The token has no valid expiry.")
        if now >= exp + leeway:
            raise deny("expired", "The token has expired.")
        nbf = claims.get("nbf")
        if nbf is not None:
            if not is_numeric_date(nbf):
                raise deny("bad_claims", "The token's not-before time is invalid.")
            if now + leeway < nbf:
                raise deny("not_yet_valid", "The token is not valid yet.")
        iat = claims.get("iat")
        if iat is not None:
            if not is_numeric_date(iat):
                raise deny("bad_claims", "The token's issued-at time is invalid.")
            if now + leeway < iat:
                raise deny("not_yet_valid", "The token was issued in the future.")
        for name in ("sub", "scope", "azp", "client_id"):
            if name in claims and not isinstance(claims[name], str):
                raise deny("bad_claims", f"The token's '{name}' claim has the wrong type.")
        permissions = claims.get("permissions")
        if permissions is not None and not (
            isinstance(permissions, list) and all(isinstance(p, str) for p in permissions)
        ):
            raise deny("bad_claims", "The token's 'permissions' claim has the wrong type.")
        return self._check_rules(claims, float(exp), now)

    def _check_rules(self, claims: dict[str, Any], exp: float, now: float) -> float:
        """AUTH0_STRICT_PROFILE, AUTH0_ORGANIZATION, AUTH0_MAX_TOKEN_AGE; return the usable-until time.

        With a maximum age the token stops being usable at ``iat + age``, which may come before
        ``exp``: the verified-token cache and ``is_expired`` then see that earlier time.
        """
        rules = self._rules
        # RFC 9068 §2.2: jti is a string like client_id and sub (their types are checked above).
        if rules.strict_profile and (
            any(name not in claims for name in _STRICT_CLAIMS) or not isinstance(claims["jti"], str)
        ):
            raise deny("strict_profile", "The token lacks claims RFC 9068 requires.")
        if rules.organizations and not _in_organization(claims, rules):
            raise deny("bad_organization", "The token is not for an organization this API accepts.")
        if rules.max_token_age is not None:
            iat = claims.get("iat")
            # express-oauth2-jwt-bearer's maxTokenAge: iat > now - leeway - age.
            if iat is None or now - self._settings.leeway - rules.max_token_age >= iat:
                raise deny("token_too_old", "The token was issued too long ago.")
            return min(exp, float(iat) + rules.max_token_age)
        return exp

    def _key(self, jwks: JWKSCache, kid: str, alg: str) -> VerificationKey:
        """Find the verification key for ``kid`` at the token's issuer and check it fits ``alg``."""
        try:
            key = jwks.get(kid)
        except FetchError:
            raise KeysUnavailableError() from None
        except KeyPending:
            raise KeysPendingError() from None
        if key is None:
            raise deny("unknown_kid", "The token was signed with an unknown key.")
        # RFC 8725 §3.1: the key type and the JWK's own alg must agree with the token's alg.
        if key.kty != key_type_for(alg) or (key.alg is not None and key.alg != alg):
            raise deny("bad_alg", "The token's algorithm does not match its key.")
        return key


def _in_organization(claims: dict[str, Any], rules: ClaimRules) -> bool:
    """Auth0's organization check: ``org_id`` exactly, or ``org_name`` case-insensitively.

    https://auth0.com/docs/manage-users/organizations/using-tokens
    """
    org_id = claims.get("org_id")
    if isinstance(org_id, str) and org_id in rules.organization_ids:
        return True
    org_name = claims.get("org_name")
    return isinstance(org_name, str) and org_name.lower() in rules.organization_names


def verifier_for(
    settings: Settings,
    on_fetch: Callable[[FetchEvent], None],
    on_cache_lookup: Callable[[bool], None] | None = None,
    clock: Clock = SYSTEM,
) -> TokenVerifier:
    """Build a verifier with its own process-level JWKS cache per trusted issuer.

    The caches share one set of waiting seats: the bound on waiting requests is the worker's.
    """
    issuers = settings.issuers or (settings.issuer,)
    seats = WaitSeats(1)
    caches = [
        JWKSCache(settings, issuer=issuer, on_fetch=on_fetch, seats=seats, clock=clock) for issuer in issuers
    ]
    return TokenVerifier(settings, caches, on_cache_lookup, clock)
