"""Runtime hooks of the DEVELOPMENT issuer: key rotation, canned answers, delays, fetch counts.

Tests and benchmarks drive these to rotate keys, misbehave and slow down; the plain
``python -m dev_issuer`` process only reads its defaults (one key, real documents, no delay).
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from dataclasses import dataclass
from dataclasses import field
from typing import Any

from dev_issuer.keys import SigningKey

UNTAGGED = "untagged"
#: Longest a held JWKS answer waits for its release: a forgotten hold never hangs a thread for good.
_HOLD_MAX = 60.0
# Tags come from the query string; a bound keeps a long-running issuer's memory flat.
_MAX_TAGS = 1000


@dataclass(frozen=True)
class CannedResponse:
    """A response served instead of the real document (bad JSON, 500, huge body...)."""

    body: bytes
    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)


class IssuerControl:
    """Thread-safe state the issuer's JWKS and discovery endpoints serve from."""

    def __init__(
        self, key: SigningKey, *, cache_control: str | None = None, log_requests: bool = False
    ) -> None:
        """Publish one key; cache_control is the JWKS response's Cache-Control (None: none)."""
        self._lock = threading.Lock()
        self.log_requests = log_requests
        self._keys: list[SigningKey] = [key]
        self.jwks_override: CannedResponse | None = None
        self.discovery_override: CannedResponse | None = None
        self.cache_control = cache_control
        self.delay = 0.0
        self._hold: threading.Event | None = None
        self._hold_from = 0
        self.jwks_fetches = 0
        self.discovery_fetches = 0
        self.fetches_by_tag: Counter[str] = Counter()
        self.requests: list[tuple[str, dict[str, str]]] = []

    # -- keys ------------------------------------------------------------------------------

    @property
    def current_key(self) -> SigningKey:
        """Return the newest published key (the one tokens are signed with)."""
        with self._lock:
            return self._keys[-1]

    @property
    def keys(self) -> list[SigningKey]:
        """Return the published keys, oldest first."""
        with self._lock:
            return list(self._keys)

    def rotate(self, *, keep_old: bool = True) -> SigningKey:
        """Publish a new current key; keep_old=False unpublishes the previous ones."""
        key = SigningKey.generate()
        with self._lock:
            self._keys = [*self._keys, key] if keep_old else [key]
        return key

    def publish(self, key: SigningKey) -> None:
        """Publish an existing key as the current one."""
        with self._lock:
            self._keys = [k for k in self._keys if k.kid != key.kid] + [key]

    def unpublish(self, kid: str) -> None:
        """Remove a key from the JWKS."""
        with self._lock:
            self._keys = [k for k in self._keys if k.kid != kid]

    def jwks(self) -> dict[str, Any]:
        """Return the JWK Set of the published keys."""
        with self._lock:
            return {"keys": [k.public_jwk for k in self._keys]}

    # -- requests --------------------------------------------------------------------------

    def record_request(self, path: str, headers: dict[str, str]) -> None:
        """Append one request to the request log, if it is kept."""
        if not self.log_requests:
            return
        with self._lock:
            self.requests.append((path, headers))

    def count_jwks_fetch(self, tag: str | None) -> CannedResponse | None:
        """Count a JWKS fetch (per tag too), wait the configured delay, return any override."""
        with self._lock:
            self.jwks_fetches += 1
            tag = tag or UNTAGGED
            if tag in self.fetches_by_tag or len(self.fetches_by_tag) < _MAX_TAGS:
                self.fetches_by_tag[tag] += 1
            override, delay = self.jwks_override, self.delay
            hold = self._hold if self.jwks_fetches >= self._hold_from else None
        if delay:
            time.sleep(delay)
        if hold is not None:
            hold.wait(_HOLD_MAX)
        return override

    def hold(self, from_fetch: int = 0) -> threading.Event:
        """Hold JWKS answers (counted on arrival) until the returned event is set.

        Only fetches numbered ``from_fetch`` or later (``jwks_fetches`` once counted) are held.
        """
        gate = threading.Event()
        with self._lock:
            self._hold, self._hold_from = gate, from_fetch
        return gate

    def release(self) -> None:
        """Let every held JWKS answer go, and hold no more."""
        with self._lock:
            gate, self._hold = self._hold, None
        if gate is not None:
            gate.set()

    def count_discovery_fetch(self) -> CannedResponse | None:
        """Count a discovery fetch and return any override."""
        with self._lock:
            self.discovery_fetches += 1
            return self.discovery_override

    def fetch_counts(self) -> dict[str, int]:
        """Return JWKS fetches per tag."""
        with self._lock:
            return dict(self.fetches_by_tag)

    def reset_counts(self) -> None:
        """Zero the fetch counters and the request log."""
        with self._lock:
            self.jwks_fetches = 0
            self.discovery_fetches = 0
            self.fetches_by_tag.clear()
            self.requests = []
