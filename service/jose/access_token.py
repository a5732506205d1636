"""A verified access token, and the cache that remembers verified tokens by their SHA-256.

A verified token is remembered until the earlier of its expiry and the freshness of the key set
that verified it (the verifier checks both on every hit), in a cache bounded both in entries
and in bytes.
"""

from __future__ import annotations

import sys
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

import orjson

from .jwks_parse import VerificationKey

#: Claims up to this much JSON stay parsed in the verified-token cache, so a hit returns the
#: verified token as it is; larger ones (RBAC tokens with hundreds of permissions, whose parsed
#: claims and permission set cost about five times their JSON) are kept as compact JSON and parsed
#: again on each hit.
_PARSED_MAX_JSON = 1024
#: Bytes a cache entry costs beyond its own objects (OrderedDict slot and link, the SHA-256 key,
#: the size tuple), measured with tracemalloc by `python -m bench.cache_memory`.
_ENTRY_OVERHEAD = 300


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
class CompactToken:
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
            claims, self.key, self.kid, permissions_of(claims), self.expires_at, self.leeway,
            self.issuer,
        )


def _cache_entry(token: AccessToken) -> tuple[AccessToken | CompactToken, int]:
    """What the cache keeps for a verified token, and the bytes it counts against the budget."""
    claims_json = orjson.dumps(token.claims)
    if len(claims_json) <= _PARSED_MAX_JSON:
        return token, _parsed_size(token)
    # orjson hands back its growable output buffer, often twice the JSON: keep an exact copy.
    exact = bytes(memoryview(claims_json))
    compact = CompactToken(exact, token.key, token.kid, token.expires_at, token.leeway, token.issuer)
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


def permissions_of(claims: dict[str, Any]) -> frozenset[str]:
    """Union of the space-delimited ``scope`` (RFC 8693 §4.2) and Auth0 RBAC ``permissions``."""
    granted = set(claims.get("scope", "").split(" "))
    granted.discard("")
    granted.update(claims.get("permissions") or ())
    return frozenset(granted)


def bound_key(token: AccessToken) -> str | None:
    """The token's RFC 9449 §6.1 ``cnf.jkt`` when it is DPoP-bound, else None."""
    cnf = token.claims.get("cnf")
    jkt = cnf.get("jkt") if isinstance(cnf, dict) else None
    return jkt if isinstance(jkt, str) and jkt else None


class VerifiedTokenCache:
    """Verified tokens by the SHA-256 of their text, bounded in entries and in bytes.

    Insertion-ordered, oldest evicted first; OrderedDict pops its head in O(1) where a plain
    dict's next(iter()) would rescan the slots freed by earlier evictions.
    """

    __slots__ = ("_budget", "_entries", "_lock", "_size", "bytes", "get")

    def __init__(self, size: int, budget: int) -> None:
        self._entries: OrderedDict[bytes, tuple[AccessToken | CompactToken, int]] = OrderedDict()
        self._size = size
        self._budget = budget
        self._lock = threading.Lock()
        #: Bytes the entries count against the budget now.
        self.bytes = 0
        #: The entry and its size for a digest, or None (the dict's own lookup: no Python frame).
        self.get = self._entries.get

    def __len__(self) -> int:
        """Tokens held now."""
        return len(self._entries)

    def remember(self, digest: bytes, token: AccessToken) -> None:
        """Insert a token, evicting the oldest entries beyond the entry or byte bound."""
        entry, size = _cache_entry(token)
        cache = self._entries
        with self._lock:
            replaced = cache.pop(digest, None)
            if replaced is not None:
                self.bytes -= replaced[1]
            while cache and (len(cache) >= self._size or self.bytes + size > self._budget):
                self.bytes -= cache.popitem(last=False)[1][1]
            if size <= self._budget:
                cache[digest] = (entry, size)
                self.bytes += size
