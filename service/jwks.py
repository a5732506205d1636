"""Per-process JWKS cache: TTL, unknown-kid cooldown, single-flight fetches, last-known-good keys.

Rules (issue 2, "The JWKS cache"):
- a known kid costs no fetch while the key set is fresh; when it goes stale a refresh starts in the
  background and requests keep using the last good set meanwhile;
- an unknown kid triggers at most one refresh per cooldown, single-flight;
- a failed fetch never drops a good key set (stale-if-error), and is retried at most every
  ``jwks_retry`` seconds;
- nothing is fetched at import or in the app factory: the first request (or /readyz) does it.
"""

from __future__ import annotations

import json
import os
import re
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from dataclasses import field
from typing import Any

from joserfc.errors import JoseError
from joserfc.jwk import Key
from joserfc.jwk import import_key

from .config import Settings
from .config import discovery_url
from .config import fallback_jwks_url
from .config import key_type_for

_MAX_AGE = re.compile(r"(?:^|,)\s*max-age\s*=\s*\"?(\d+)\"?", re.IGNORECASE)
#: The only URL schemes we fetch from; urllib would otherwise also open file:// and ftp://.
_SCHEMES = ("http://", "https://")
#: Wait sentinel: fetch on the calling thread and wait for it (bounded by the HTTP timeouts).
FULL_WAIT = float("inf")
#: Longest a request waits on a refresh when stale keys are still usable.
STALE_WAIT = 0.25


class FetchError(Exception):
    """A discovery or JWKS fetch failed; the message is safe to log."""


@dataclass(frozen=True, slots=True)
class FetchEvent:
    """One finished JWKS fetch, as reported to ``on_fetch``."""

    issuer: str
    #: "success" or "error".
    outcome: str
    #: Why the fetch failed (safe to log); None on success.
    error: str | None
    #: Seconds the fetch took (discovery included).
    duration: float
    #: Keys in the set held after the fetch (the last good set's on failure).
    keys: int


@dataclass(frozen=True, slots=True)
class VerificationKey:
    """A published public key with what the validator checks against, resolved once per fetch."""

    key: Key
    kty: str
    alg: str | None
    native: Any

    @classmethod
    def of(cls, key: Key) -> VerificationKey:
        """Resolve the joserfc key's type, pinned algorithm and cryptography public key."""
        alg = key.get("alg")
        return cls(key, key.key_type, alg if isinstance(alg, str) else None, key.public_key)


@dataclass(frozen=True, slots=True)
class KeySet:
    """An immutable snapshot of usable verification keys."""

    keys: dict[str, VerificationKey]
    fetched_at: float
    fresh_until: float
    #: When a background refresh starts: a tenth of the TTL (at most 30 s) before expiry.
    refresh_at: float


@dataclass(slots=True)
class _State:
    """Mutable cache state, guarded by ``JWKSCache._lock``."""

    keyset: KeySet | None = None
    last_attempt: float = float("-inf")
    last_kid_refresh: float = float("-inf")
    last_error: str | None = None
    jwks_uri: str | None = None
    inflight: threading.Event | None = None
    pid: int = field(default_factory=os.getpid)


class JWKSCache:
    """Process-level cache of the issuer's signing keys."""

    def __init__(
        self,
        settings: Settings,
        *,
        issuer: str | None = None,
        on_fetch: Callable[[FetchEvent], None] | None = None,
    ) -> None:
        self._settings = settings
        #: The issuer whose keys this cache holds (one cache per trusted issuer).
        self.issuer = issuer if issuer is not None else settings.issuer
        self._on_fetch = on_fetch or (lambda event: None)
        # Longest anyone waits for a fetch to finish: discovery plus JWKS, each bounded.
        self._fetch_budget = settings.http_timeout * 2 + 1
        self._lock = threading.Lock()
        self._state = _State(jwks_uri=settings.jwks_uri)

    # -- reads -----------------------------------------------------------------------------

    @property
    def keyset(self) -> KeySet | None:
        """The current key set (possibly stale), or None if none was ever fetched."""
        return self._current().keyset

    @property
    def last_error(self) -> str | None:
        """Why the most recent fetch failed, if it did."""
        return self._current().last_error

    def get(self, kid: str) -> VerificationKey | None:
        """Return the key for ``kid``, fetching as the rules allow; None means unknown kid.

        Raises ``FetchError`` when no key set has ever been obtained.
        """
        state = self._current()
        keyset = state.keyset
        now = time.monotonic()
        if keyset is None:
            keyset = self._refresh(now, wait=FULL_WAIT)
            if keyset is None:
                raise FetchError(state.last_error or "no key set")
        elif now >= keyset.refresh_at:
            # Refresh ahead of expiry in the background; once actually stale, give a healthy
            # issuer a brief chance to answer so removed keys stop working on time, but never
            # hold requests hostage to a slow one: the last good set is used meanwhile.
            stale = now >= keyset.fresh_until
            keyset = self._refresh(now, wait=STALE_WAIT if stale else 0.0) or keyset
        key = keyset.keys.get(kid)
        if key is not None:
            return key
        # Unknown kid: maybe the issuer rotated. At most one refresh per cooldown, counted from
        # the last successful fetch of any kind (as jose's cooldownDuration), shared by all
        # threads: those arriving while it runs wait for its answer instead of fetching again.
        cooldown = self._settings.jwks_cooldown
        with self._lock:
            since = max(state.last_kid_refresh, keyset.fetched_at)
            kid_refresh_due = now - since >= cooldown and state.inflight is None
            if kid_refresh_due:
                state.last_kid_refresh = now
        if kid_refresh_due:
            refreshed = self._refresh(now, wait=FULL_WAIT, force=True)
        else:
            refreshed = self._wait_inflight()
        return refreshed.keys.get(kid) if refreshed is not None else None

    def ensure_loaded(self) -> bool:
        """Try to obtain a key set if none is held (rate-limited); report whether one is held."""
        state = self._current()
        if state.keyset is None:
            self._refresh(time.monotonic(), wait=FULL_WAIT)
        return state.keyset is not None

    # -- fetching --------------------------------------------------------------------------

    def _current(self) -> _State:
        """Return this process's state; a forked child starts empty (fork safety)."""
        state = self._state
        if state.pid != os.getpid():
            with self._lock:
                if self._state.pid != os.getpid():
                    self._lock = threading.Lock()
                    self._state = _State(jwks_uri=self._settings.jwks_uri)
            state = self._state
        return state

    def _refresh(self, now: float, *, wait: float, force: bool = False) -> KeySet | None:
        """Start (or join) the single fetch in flight, wait up to ``wait`` s, return the key set.

        ``FULL_WAIT`` runs the fetch on the calling thread (nothing usable is cached, or an
        unknown kid needs it); a finite wait runs it on a background thread.
        """
        state = self._current()
        with self._lock:
            event = state.inflight
            leader = event is None
            if leader:
                retry_due = now - state.last_attempt >= self._settings.jwks_retry
                if not (force or retry_due):
                    return state.keyset
                event = state.inflight = threading.Event()
                state.last_attempt = now
        assert event is not None
        if leader and wait == FULL_WAIT:
            self._fetch_into(state, event)
            return state.keyset
        if leader:
            threading.Thread(
                target=self._fetch_into, args=(state, event), name="jwks-refresh", daemon=True
            ).start()
        if wait > 0:
            event.wait(self._fetch_budget if wait == FULL_WAIT else wait)
        return state.keyset

    def _wait_inflight(self) -> KeySet | None:
        """Wait for a fetch that another thread is running, if any."""
        state = self._current()
        event = state.inflight
        if event is not None:
            event.wait(self._fetch_budget)
        return state.keyset

    def _fetch_into(self, state: _State, event: threading.Event) -> None:
        """Fetch the key set and publish it; on failure keep the last good one."""
        started = time.monotonic()
        try:
            keys, ttl = self._fetch(state)
        except FetchError as exc:
            with self._lock:
                state.last_error = str(exc)
            held = len(state.keyset.keys) if state.keyset is not None else 0
            self._report("error", str(exc), started, held)
        else:
            now = time.monotonic()
            refresh_at = now + ttl - min(ttl * 0.1, 30.0)
            with self._lock:
                state.keyset = KeySet(keys, now, now + ttl, refresh_at)
                state.last_error = None
            self._report("success", None, started, len(keys))
        finally:
            with self._lock:
                state.inflight = None
            event.set()

    def _report(self, outcome: str, error: str | None, started: float, keys: int) -> None:
        """Tell ``on_fetch`` how a fetch ended."""
        duration = time.monotonic() - started
        self._on_fetch(FetchEvent(self.issuer, outcome, error, duration, keys))

    def _fetch(self, state: _State) -> tuple[dict[str, VerificationKey], float]:
        """Resolve the JWKS URI (discovery, then Auth0's fixed path) and fetch the keys."""
        uri = state.jwks_uri
        if uri is None:
            uri = self._discover()
            state.jwks_uri = uri
        body, max_age = self._get(uri)
        keys = parse_jwks(body, self._settings.algorithms)
        ttl = self._settings.jwks_ttl
        if max_age is not None:
            # A shorter Cache-Control max-age wins; one second is the floor so max-age=0
            # cannot turn every request into a fetch.
            ttl = max(1.0, min(ttl, float(max_age)))
        return keys, ttl

    def _discover(self) -> str:
        """Find jwks_uri via OIDC discovery, falling back to ``{issuer}.well-known/jwks.json``."""
        issuer = self.issuer
        try:
            body, _ = self._get(discovery_url(issuer))
            doc = json.loads(body)
        except FetchError as exc:
            if "HTTP 404" not in str(exc):
                raise
            return fallback_jwks_url(issuer)
        except ValueError:
            return fallback_jwks_url(issuer)
        if not isinstance(doc, dict):
            return fallback_jwks_url(issuer)
        # OIDC Discovery §4.3: the document's issuer must be identical to the one we trust.
        if doc.get("issuer") != issuer:
            raise FetchError(
                f"discovery names issuer {doc.get('issuer')!r}, not {issuer!r}: AUTH0_ISSUER must "
                "match the issuer exactly, trailing slash included"
            )
        uri = doc.get("jwks_uri")
        if not isinstance(uri, str) or not uri.startswith(_SCHEMES):
            return fallback_jwks_url(issuer)
        return uri

    def _get(self, url: str) -> tuple[bytes, int | None]:
        """GET a URL with timeouts and a size cap; return the body and Cache-Control max-age."""
        if not url.startswith(_SCHEMES):
            raise FetchError("refusing a non-http(s) URL")
        limit = self._settings.jwks_max_bytes
        request = urllib.request.Request(url, headers={"Accept": "application/json"})
        try:
            with urllib.request.urlopen(request, timeout=self._settings.http_timeout) as response:
                body = response.read(limit + 1)
                cache_control = response.headers.get("Cache-Control", "")
        except urllib.error.HTTPError as exc:
            raise FetchError(f"HTTP {exc.code} from {url}") from None
        except (urllib.error.URLError, OSError, ValueError) as exc:
            reason = getattr(exc, "reason", exc)
            raise FetchError(f"cannot reach {url}: {reason}") from None
        if len(body) > limit:
            raise FetchError(f"response from {url} exceeds {limit} bytes")
        match = _MAX_AGE.search(cache_control)
        return body, int(match.group(1)) if match else None


def parse_jwks(body: bytes, algorithms: tuple[str, ...]) -> dict[str, VerificationKey]:
    """Import the usable public signing keys of a JWKS document (RFC 7517 §5)."""
    try:
        doc = json.loads(body)
    except ValueError:
        raise FetchError("JWKS is not valid JSON") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("keys"), list):
        raise FetchError("JWKS has no 'keys' array")
    wanted_kty = {key_type_for(a) for a in algorithms}
    keys: dict[str, VerificationKey] = {}
    for entry in doc["keys"]:
        key = _usable_key(entry, wanted_kty, algorithms)
        if key is not None and entry["kid"] not in keys:
            keys[entry["kid"]] = VerificationKey.of(key)
    if not keys:
        raise FetchError("JWKS holds no usable signing key")
    return keys


def _usable_key(entry: Any, wanted_kty: set[str], algorithms: tuple[str, ...]) -> Key | None:
    """Return the imported key if the JWK is a public signing key we may use, else None."""
    if not isinstance(entry, dict):
        return None
    kid = entry.get("kid")
    if not isinstance(kid, str) or not kid or entry.get("kty") not in wanted_kty:
        return None
    if entry.get("use", "sig") != "sig":
        return None
    if "alg" in entry and entry["alg"] not in algorithms:
        return None
    # A private member in a published JWKS is a misconfiguration; never hold private keys.
    if any(member in entry for member in ("d", "p", "q", "dp", "dq", "qi", "k")):
        return None
    try:
        key = import_key(entry)
    except (JoseError, ValueError, TypeError):
        return None
    if entry.get("kty") == "RSA" and key.public_key.key_size < 2048:
        return None
    return key
