"""JOSE building blocks shared by access tokens and DPoP proofs: segments, NumericDate, JWK members.

Compact JWS segments are decoded strictly and canonically (RFC 7515 §2, §7.1; RFC 4648 §3.5), so
no token or proof has a second spelling; a NumericDate is RFC 7519 §2's finite number.
"""

from __future__ import annotations

import binascii
import math
import threading
from typing import Any
from typing import Final
from typing import Generic
from typing import TypeGuard
from typing import TypeVar

import orjson

from .errors import InvalidTokenError

_TO_STANDARD_B64: Final = bytes.maketrans(b"-_", b"+/")
_PADDING: Final = (b"", b"=", b"==", b"=")  # length % 4 == 1 is impossible; strict mode refuses it
#: RFC 4648 §3.5: a canonical encoding leaves the unused low bits of its last character zero.
#: The characters allowed last, by segment length % 4 (2: 4 unused bits, 3: 2 unused bits), so
#: no token has a second spelling (its cache key and any deny-list entry stay unique).
_CANONICAL_LAST: Final = ("", "", "AQgw", "AEIMQUYcgkosw048")
#: JWK members only private or symmetric keys have (RFC 7518 §6.2.2, §6.3.2, §6.4.1; RFC 8037 §2).
PRIVATE_MEMBERS: Final = ("d", "p", "q", "dp", "dq", "qi", "oth", "k")

T = TypeVar("T")


def malformed(description: str) -> InvalidTokenError:
    """An invalid_token error with the ``malformed`` metric reason."""
    return InvalidTokenError(description, reason="malformed")


def is_numeric_date(value: Any) -> TypeGuard[int | float]:
    """A NumericDate (RFC 7519 §2): a finite number, not a boolean."""
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def b64decode(segment: str) -> bytes:
    """Strict, canonical base64url decoding (RFC 7515 §2, RFC 4648 §3.5)."""
    # '+', '/' and '=' would pass the translation below, so they are refused first; strict
    # mode then rejects every other character outside the alphabet (and impossible lengths).
    if not segment or "+" in segment or "/" in segment or "=" in segment:
        raise malformed("The access token is not valid base64url.")
    tail = len(segment) % 4
    if tail > 1 and segment[-1] not in _CANONICAL_LAST[tail]:
        raise malformed("The access token is not canonical base64url.")
    try:
        # bytes.translate runs in C; str.translate would cost a dict lookup per character.
        data = segment.encode("ascii").translate(_TO_STANDARD_B64) + _PADDING[len(segment) % 4]
        return binascii.a2b_base64(data, strict_mode=True)
    except (binascii.Error, ValueError):  # UnicodeEncodeError is a ValueError
        raise malformed("The access token is not valid base64url.") from None


def decode_json(segment: str, part: str) -> dict[str, Any]:
    """Decode a base64url JSON object segment (RFC 7515 §7.1); ``part`` names it in the error."""
    raw = b64decode(segment)
    try:
        value = orjson.loads(raw)
    except (ValueError, RecursionError):  # orjson.JSONDecodeError is a ValueError
        raise malformed(f"The token {part} is not valid JSON.") from None
    if not isinstance(value, dict):
        raise malformed(f"The token {part} is not a JSON object.")
    return value


def has_private_members(jwk: dict[str, Any]) -> bool:
    """Whether a JWK carries private or symmetric key material."""
    return any(member in jwk for member in PRIVATE_MEMBERS)


class HeaderCache(Generic[T]):
    """Checked JOSE headers by their encoded segment, bounded: emptied when full.

    Every token of one signing key (or every proof of one client key) shares its header
    segment, so each distinct header is checked once. ``get`` is the dict's own lookup (no
    Python frame on the hot path); emptying at the bound keeps memory fixed and lets a new
    key's header in even after a flood of distinct ones.
    """

    __slots__ = ("_entries", "_limit", "_lock", "get")

    def __init__(self, limit: int) -> None:
        self._entries: dict[str, T] = {}
        self._limit = limit
        self._lock = threading.Lock()
        self.get = self._entries.get

    def put(self, segment: str, checked: T) -> None:
        """Remember a header that passed its checks."""
        with self._lock:
            if len(self._entries) >= self._limit:
                self._entries.clear()
            self._entries[segment] = checked

    def __len__(self) -> int:
        """Headers held now."""
        return len(self._entries)
