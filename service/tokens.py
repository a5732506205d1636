"""Access-token verification: Auth0 / RFC 9068 JWTs checked per RFC 8725.

Order matters for cost: size, shape, header and unverified claims are checked before any key
lookup (which may fetch) and before the RSA verify, so junk and replayed-elsewhere tokens are
refused cheaply. A verified token is remembered by the SHA-256 of its text until the earlier of
its expiry and the freshness of the key set that verified it, in a cache bounded both in entries
and in bytes.
"""

from __future__ import annotations

import binascii
import hashlib
import math
import sys
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any
from typing import Final

import orjson
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding
from joserfc.jws import JWSRegistry

from .config import Settings
from .config import key_type_for
from .errors import InvalidTokenError
from .errors import KeysUnavailableError
from .jwks import FetchError
from .jwks import FetchEvent
from .jwks import JWKSCache
from .jwks import VerificationKey

_TO_STANDARD_B64 = bytes.maketrans(b"-_", b"+/")
_PADDING = (b"", b"=", b"==", b"=")  # length % 4 == 1 is impossible; strict mode refuses it
#: RFC 4648 §3.5: a canonical encoding leaves the unused low bits of its last character zero.
#: The characters allowed last, by segment length % 4 (2: 4 unused bits, 3: 2 unused bits), so
#: no token has a second spelling (its cache key and any deny-list entry stay unique).
_CANONICAL_LAST = ("", "", "AQgw", "AEIMQUYcgkosw048")
#: RFC 8725 §3.5 / RFC 7515 §4.1.2-6: keys named by the token itself are never trusted.
_KEY_BEARING_HEADERS = ("jku", "x5u", "jwk", "x5c")
#: Distinct valid token headers remembered checked (a handful per issuer key; bounded).
_HEADER_CACHE_SIZE = 256
#: Claims up to this much JSON stay parsed in the verified-token cache, so a hit returns the
#: verified token as it is; larger ones (RBAC tokens with hundreds of permissions, whose parsed
#: claims and permission set cost about five times their JSON) are kept as compact JSON and parsed
#: again on each hit.
_PARSED_MAX_JSON = 1024
#: Bytes a cache entry costs beyond its own objects (OrderedDict slot and link, the SHA-256 key,
#: the size tuple), measured with tracemalloc by `python -m bench.cache_memory`.
_ENTRY_OVERHEAD = 300
#: RFC 9068 §2.1 uses "at+jwt"; Auth0's default profile sends "JWT" (RFC 7519 §5.1).
_ACCEPTED_TYP = frozenset({"jwt", "at+jwt", "application/at+jwt"})


def deny(reason: str, description: str) -> InvalidTokenError:
    """Build an invalid_token error with a metric reason and a fixed description."""
    return InvalidTokenError(description, reason=reason)


@dataclass(slots=True)
class AccessToken:
    """A verified access token, shaped for Authlib's ``TokenMixin`` protocol."""

    claims: dict[str, Any]
    #: The published key that verified it: a cached answer lasts only while it stays current.
    key: VerificationKey
    kid: str
    permissions: frozenset[str]
    expires_at: float
    leeway: int
    #: The trusted issuer whose keys verified it (its ``iss``).
    issuer: str = ""

    @property
    def sub(self) -> str | None:
        """The token's subject."""
        return self.claims.get("sub")

    @property
    def client(self) -> str | None:
        """The OAuth client the token was issued to (azp, or RFC 9068's client_id)."""
        return self.claims.get("azp") or self.claims.get("client_id")

    # Read access like Authlib's JWTClaims (a dict), so views written against Authlib's JWT
    # validators (``current_token["sub"]``) work unchanged:
    # https://docs.authlib.org/en/latest/specs/rfc9068.html
    def __getitem__(self, name: str) -> Any:
        """The claim ``name`` (KeyError when absent)."""
        return self.claims[name]

    def __contains__(self, name: object) -> bool:
        """Whether the token carries the claim ``name``."""
        return name in self.claims

    def get(self, name: str, default: Any = None) -> Any:
        """The claim ``name``, or ``default`` when absent."""
        return self.claims.get(name, default)

    def keys(self) -> Any:
        """The claim names (so ``dict(current_token)`` copies the claims)."""
        return self.claims.keys()

    def get_scope(self) -> str:
        """All granted permissions, space-delimited (scope claim plus Auth0 RBAC permissions)."""
        return " ".join(sorted(self.permissions))

    def is_expired(self) -> bool:
        """Expiry with the clock leeway applied (Authlib's default ignores leeway)."""
        return time.time() >= self.expires_at + self.leeway

    def is_revoked(self) -> bool:
        """JWTs are not revocable here; their lifetime is the control."""
        return False

    def grants(self, permission: str) -> bool:
        """Whether the token carries ``permission`` exactly (no prefix matching)."""
        return permission in self.permissions


@dataclass(frozen=True, slots=True)
class _CompactToken:
    """A verified token remembered with its claims as JSON: what a cache hit needs to rebuild it."""

    claims_json: bytes
    key: VerificationKey
    kid: str
    expires_at: float
    leeway: int
    issuer: str

    def expand(self) -> AccessToken:
        """The verified token again (claims parsed anew)."""
        claims = orjson.loads(self.claims_json)
        return AccessToken(
            claims, self.key, self.kid, _permissions(claims), self.expires_at, self.leeway,
            self.issuer,
        )


def _cache_entry(token: AccessToken) -> tuple[AccessToken | _CompactToken, int]:
    """What the cache keeps for a verified token, and the bytes it counts against the budget."""
    claims_json = orjson.dumps(token.claims)
    if len(claims_json) <= _PARSED_MAX_JSON:
        return token, _parsed_size(token)
    # orjson hands back its growable output buffer, often twice the JSON: keep an exact copy.
    exact = bytes(memoryview(claims_json))
    compact = _CompactToken(exact, token.key, token.kid, token.expires_at, token.leeway, token.issuer)
    return compact, sys.getsizeof(compact) + sys.getsizeof(exact) + _ENTRY_OVERHEAD


def _parsed_size(token: AccessToken) -> int:
    """Bytes a parsed token holds: its object, claims (values one level deep) and permissions."""
    claims = token.claims
    size = _ENTRY_OVERHEAD + sys.getsizeof(token) + sys.getsizeof(claims)
    for value in claims.values():
        size += sys.getsizeof(value)
        if isinstance(value, list):
            size += sum(map(sys.getsizeof, value))
    return size + sys.getsizeof(token.permissions) + sum(map(sys.getsizeof, token.permissions))


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
    ) -> None:
        caches = (jwks,) if isinstance(jwks, JWKSCache) else tuple(jwks)
        self._settings = settings
        self._caches: dict[str, JWKSCache] = {cache.issuer: cache for cache in caches}
        #: Told hit (True) or miss (False) for every lookup in the verified-token cache.
        self._on_cache_lookup = on_cache_lookup or (lambda hit: None)
        self._algorithms = frozenset(settings.algorithms)
        self._signature_checks = {alg: _signature_check(alg) for alg in settings.algorithms}
        # Insertion-ordered, oldest evicted first; OrderedDict pops its head in O(1) where a
        # plain dict's next(iter()) would rescan the slots freed by earlier evictions.
        self._cache: OrderedDict[bytes, tuple[AccessToken | _CompactToken, int]] = OrderedDict()
        self._cache_size = settings.token_cache_size
        self._cache_budget = settings.token_cache_bytes
        self._cache_bytes = 0
        self._cache_lock = threading.Lock()
        self._headers: dict[str, tuple[str, str]] = {}

    @property
    def caches(self) -> tuple[JWKSCache, ...]:
        """Every trusted issuer's key cache, in configuration order."""
        return tuple(self._caches.values())

    @property
    def cached_bytes(self) -> int:
        """Bytes the verified-token cache counts against AUTH0_TOKEN_CACHE_BYTES now."""
        return self._cache_bytes

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
                return entry if type(entry) is AccessToken else entry.expand()
            self._on_cache_lookup(False)
        access_token = self._verify_fully(token)
        if self._cache_size:
            self._remember(digest, access_token)
        return access_token

    def _still_valid(self, token: AccessToken | _CompactToken) -> bool:
        """Whether the full check would still accept a cached token now.

        The key that verified it must still be the one the usable key set holds for its kid:
        each fetch makes new key objects, so a refresh (which drops removed keys) or a set past
        max-stale ends the entry. The token must be unexpired.
        """
        return (
            self._caches[token.issuer].current_key(token.kid) is token.key
            and time.time() < token.expires_at + token.leeway
        )

    def _remember(self, digest: bytes, token: AccessToken) -> None:
        """Insert into the cache, evicting the oldest entries beyond its entry or byte bound."""
        entry, size = _cache_entry(token)
        cache = self._cache
        with self._cache_lock:
            replaced = cache.pop(digest, None)
            if replaced is not None:
                self._cache_bytes -= replaced[1]
            while cache and (
                len(cache) >= self._cache_size or self._cache_bytes + size > self._cache_budget
            ):
                self._cache_bytes -= cache.popitem(last=False)[1][1]
            if size <= self._cache_budget:
                cache[digest] = (entry, size)
                self._cache_bytes += size

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
            checked = self._check_header(_decode_json(header_b64, "header"))
            if len(self._headers) < _HEADER_CACHE_SIZE:
                self._headers[header_b64] = checked
        alg, kid = checked
        claims = _decode_json(payload_b64, "payload")
        now = time.time()
        jwks = self._issuer_keys(claims.get("iss"))
        expires_at = self._check_claims(claims, now)
        signature = _b64decode(signature_b64) if signature_b64 else b""
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
        permissions = _permissions(claims)
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
        if not _is_time(exp):
            raise deny("bad_claims", "The token has no valid expiry.")
        if now >= exp + leeway:
            raise deny("expired", "The token has expired.")
        nbf = claims.get("nbf")
        if nbf is not None:
            if not _is_time(nbf):
                raise deny("bad_claims", "The token's not-before time is invalid.")
            if now + leeway < nbf:
                raise deny("not_yet_valid", "The token is not valid yet.")
        iat = claims.get("iat")
        if iat is not None:
            if not _is_time(iat):
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
        return float(exp)

    def _key(self, jwks: JWKSCache, kid: str, alg: str) -> VerificationKey:
        """Find the verification key for ``kid`` at the token's issuer and check it fits ``alg``."""
        try:
            key = jwks.get(kid)
        except FetchError:
            raise KeysUnavailableError() from None
        if key is None:
            raise deny("unknown_kid", "The token was signed with an unknown key.")
        # RFC 8725 §3.1: the key type and the JWK's own alg must agree with the token's alg.
        if key.kty != key_type_for(alg) or (key.alg is not None and key.alg != alg):
            raise deny("bad_alg", "The token's algorithm does not match its key.")
        return key


def _pss(digest: hashes.HashAlgorithm) -> padding.PSS:
    """RSASSA-PSS padding as RFC 7518 §3.5 fixes it: MGF1 with the same hash, salt of hash size."""
    return padding.PSS(mgf=padding.MGF1(digest), salt_length=digest.digest_size)


#: (padding, hash) per RSA JWS algorithm: RFC 7518 §3.3 (RSnnn, RSASSA-PKCS1-v1_5) and §3.5
#: (PSnnn, RSASSA-PSS), on cryptography's public API.
_RSA_SCHEMES: Final[dict[str, tuple[padding.AsymmetricPadding, hashes.HashAlgorithm]]] = {
    "RS256": (padding.PKCS1v15(), hashes.SHA256()),
    "RS384": (padding.PKCS1v15(), hashes.SHA384()),
    "RS512": (padding.PKCS1v15(), hashes.SHA512()),
    "PS256": (_pss(hashes.SHA256()), hashes.SHA256()),
    "PS384": (_pss(hashes.SHA384()), hashes.SHA384()),
    "PS512": (_pss(hashes.SHA512()), hashes.SHA512()),
}


def _signature_check(alg: str) -> Callable[[bytes, bytes, VerificationKey], bool]:
    """The verify function for ``alg`` (RFC 7518 §3).

    RSA signatures are checked on the pre-resolved public key with our own (padding, hash)
    table: no key re-resolution per call (this is the hot path of every uncached token). Other
    families go through joserfc's public JWS algorithm registry.
    """
    if alg in _RSA_SCHEMES:
        pad, digest = _RSA_SCHEMES[alg]

        def rsa_check(message: bytes, signature: bytes, key: VerificationKey) -> bool:
            try:
                key.native.verify(signature, message, pad, digest)
            except InvalidSignature:
                return False
            return True

        return rsa_check

    model = JWSRegistry.algorithms[alg]

    def generic_check(message: bytes, signature: bytes, key: VerificationKey) -> bool:
        return bool(model.verify(message, signature, key.key))

    return generic_check


def _is_time(value: Any) -> bool:
    """A NumericDate (RFC 7519 §2): a finite number, not a boolean."""
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _b64decode(segment: str) -> bytes:
    """Strict, canonical base64url decoding (RFC 7515 §2, RFC 4648 §3.5)."""
    # '+', '/' and '=' would pass the translation below, so they are refused first; strict
    # mode then rejects every other character outside the alphabet (and impossible lengths).
    if not segment or "+" in segment or "/" in segment or "=" in segment:
        raise deny("malformed", "The access token is not valid base64url.")
    tail = len(segment) % 4
    if tail > 1 and segment[-1] not in _CANONICAL_LAST[tail]:
        raise deny("malformed", "The access token is not canonical base64url.")
    try:
        # bytes.translate runs in C; str.translate would cost a dict lookup per character.
        data = segment.encode("ascii").translate(_TO_STANDARD_B64) + _PADDING[len(segment) % 4]
        return binascii.a2b_base64(data, strict_mode=True)
    except (binascii.Error, ValueError):  # UnicodeEncodeError is a ValueError
        raise deny("malformed", "The access token is not valid base64url.") from None


def _decode_json(segment: str, part: str) -> dict[str, Any]:
    """Decode a base64url JSON object segment of the token."""
    raw = _b64decode(segment)
    try:
        value = orjson.loads(raw)
    except (ValueError, RecursionError):  # orjson.JSONDecodeError is a ValueError
        raise deny("malformed", f"The token {part} is not valid JSON.") from None
    if not isinstance(value, dict):
        raise deny("malformed", f"The token {part} is not a JSON object.")
    return value


def _permissions(claims: dict[str, Any]) -> frozenset[str]:
    """Union of the space-delimited ``scope`` (RFC 8693 §4.2) and Auth0 RBAC ``permissions``."""
    granted = set(claims.get("scope", "").split(" "))
    granted.discard("")
    granted.update(claims.get("permissions") or ())
    return frozenset(granted)


def verifier_for(
    settings: Settings,
    on_fetch: Callable[[FetchEvent], None],
    on_cache_lookup: Callable[[bool], None] | None = None,
) -> TokenVerifier:
    """Build a verifier with its own process-level JWKS cache per trusted issuer."""
    issuers = settings.issuers or (settings.issuer,)
    caches = [JWKSCache(settings, issuer=issuer, on_fetch=on_fetch) for issuer in issuers]
    return TokenVerifier(settings, caches, on_cache_lookup)
