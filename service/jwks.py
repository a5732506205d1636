"""Per-process JWKS cache: background refresh, single-flight fetches, bounded last-known-good keys.

The timing guarantees are stated for users in docs/jwks-cache.md; this is how they are kept:
- each process runs one refresher thread per cache, started on first use (never at import or in
  the app factory, and again in a forked child). It fetches at once, then a tenth of the TTL (at
  most 30 s) before the set expires; after a failed fetch, every ``jwks_retry`` seconds until one
  succeeds. Only the refresher fetches, so fetches are single-flight by construction;
- requests read the current set and never wait for a fetch while a usable set is held, except
  the one unknown-kid request the cooldown allows while the issuer is healthy (bounded by the
  HTTP timeout). With no usable set they wait for a fetch (bounded by the fetch budget) unless
  the issuer is already known to be failing;
- a failed fetch keeps the last good set until ``jwks_max_stale`` seconds past its expiry (the
  max-stale of RFC 9111 §5.2.1.2), then drops it.
"""

from __future__ import annotations

import json
import logging
import os
import re
import threading
import time
import urllib.error
import urllib.request
import weakref
from collections.abc import Callable
from dataclasses import dataclass
from dataclasses import field
from typing import Any

from joserfc.jwk import Key
from joserfc.jwk import import_key

from .config import Settings
from .config import discovery_url
from .config import fallback_jwks_url
from .config import key_type_for

_MAX_AGE = re.compile(r"(?:^|,)\s*max-age\s*=\s*\"?(\d+)\"?", re.IGNORECASE)
#: The only URL schemes we fetch from; urllib would otherwise also open file:// and ftp://.
_SCHEMES = ("http://", "https://")
#: The refresh starts this share of the TTL (at most _REFRESH_LEAD_MAX s) before expiry, so a
#: healthy issuer's answer replaces the set before it goes stale.
_REFRESH_LEAD = 0.1
_REFRESH_LEAD_MAX = 30.0
#: Even AUTH0_JWKS_RETRY=0 leaves this long between the refresher's attempts: never a busy loop.
_RETRY_FLOOR = 0.1
#: Longest single sleep of the refresher (threading rejects huge timeouts).
_MAX_SLEEP = 3600.0
#: JWK members only private or symmetric keys have (RFC 7518 §6.2.2, §6.3.2, §6.4.1).
_PRIVATE_MEMBERS = ("d", "p", "q", "dp", "dq", "qi", "oth", "k")

log = logging.getLogger(__name__)


class FetchError(Exception):
    """A discovery or JWKS fetch failed; the message is safe to log."""

    def __init__(self, message: str, *, status: int | None = None) -> None:
        super().__init__(message)
        #: The HTTP status the server answered with, if it answered at all.
        self.status = status


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
    """An immutable snapshot of usable verification keys (monotonic times)."""

    keys: dict[str, VerificationKey]
    fetched_at: float
    fresh_until: float
    #: Past this (fresh_until + max-stale) the set is dropped.
    usable_until: float


@dataclass(slots=True)
class _State:
    """One process's cache state; fields are guarded by ``lock``."""

    jwks_uri: str | None
    keyset: KeySet | None = None
    #: The most recent fetch failed: no request waits for the next one.
    failing: bool = False
    last_error: str | None = None
    #: When the refresher fetches next, unless asked earlier.
    next_fetch: float = float("-inf")
    #: A request asked the refresher for a fetch now.
    fetch_now: bool = False
    last_kid_refresh: float = float("-inf")
    #: Set when the fetch in flight (or asked for) ends; None when there is none.
    inflight: threading.Event | None = None
    #: Wakes the refresher to look at the state again.
    wake: threading.Event = field(default_factory=threading.Event)
    lock: threading.Lock = field(default_factory=threading.Lock)
    refresher: threading.Thread | None = None
    pid: int = field(default_factory=os.getpid)


#: Guards replacing a cache's state in a forked child; itself replaced after every fork, since
#: a lock held by another thread at fork time would stay held forever in the child.
_fork_lock = threading.Lock()


def _new_fork_lock() -> None:
    """Give the forked child a fresh, unheld lock."""
    global _fork_lock
    _fork_lock = threading.Lock()


os.register_at_fork(after_in_child=_new_fork_lock)


class JWKSCache:
    """Process-level cache of one issuer's signing keys."""

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
        self._retry = max(settings.jwks_retry, _RETRY_FLOOR)
        # Longest a request waits with nothing usable: discovery plus JWKS, each bounded.
        self._fetch_budget = settings.http_timeout * 2 + 1
        # The unknown-kid wait: the JWKS URI is known once a set is held, so one bounded GET.
        self._kid_wait = settings.http_timeout
        self._state = _State(jwks_uri=settings.jwks_uri)

    # -- reads -----------------------------------------------------------------------------

    def start(self) -> None:
        """Start this process's background refresher (idempotent); its first fetch begins now."""
        self._current()

    @property
    def keyset(self) -> KeySet | None:
        """The usable key set (fresh, or stale within max-stale), or None."""
        return _usable(self._current(), time.monotonic())

    def usable(self) -> bool:
        """Whether this process holds a key set it may verify with (what readiness means)."""
        return self.keyset is not None

    def cold(self) -> bool:
        """Nothing usable held and no fetch has failed yet: the first fetch is still to come."""
        state = self._current()
        return _usable(state, time.monotonic()) is None and not state.failing

    def await_first_fetch(self, timeout: float) -> None:
        """While cold, wait up to ``timeout`` (at most the fetch budget) for the fetch in flight."""
        if self.cold():
            self._await_fetch(self._current(), min(timeout, self.fetch_budget))

    @property
    def fetch_budget(self) -> float:
        """Longest a fetch can keep a waiting request: discovery plus JWKS, each bounded."""
        return self._fetch_budget

    @property
    def last_error(self) -> str | None:
        """Why the most recent fetch failed, if it did."""
        return self._current().last_error

    def current_key(self, kid: str) -> VerificationKey | None:
        """The usable set's key for ``kid``, without fetching or waiting."""
        keyset = self.keyset
        return keyset.keys.get(kid) if keyset is not None else None

    def get(self, kid: str) -> VerificationKey | None:
        """Return the key for ``kid``, waiting for a fetch only as the rules allow.

        None means an unknown kid. Raises ``FetchError`` when no usable key set is held.
        """
        state = self._current()
        now = time.monotonic()
        keyset = _usable(state, now) or self._load(state)
        key = keyset.keys.get(kid)
        if key is not None or not self._claim_kid_refresh(state, keyset, now):
            return key
        self._await_fetch(state, self._kid_wait)
        refreshed = _usable(state, time.monotonic())
        return refreshed.keys.get(kid) if refreshed is not None else None

    # -- waiting on the refresher -----------------------------------------------------------

    def _load(self, state: _State) -> KeySet:
        """With nothing usable: wait for a fetch, unless the issuer is known to be failing."""
        if not state.failing:
            self._await_fetch(state, self._fetch_budget)
        keyset = _usable(state, time.monotonic())
        if keyset is None:
            raise FetchError(state.last_error or "no key set yet")
        return keyset

    def _claim_kid_refresh(self, state: _State, keyset: KeySet, now: float) -> bool:
        """Whether this unknown-kid request is the one refresh allowed now; claims it if so.

        At most one per cooldown, counted from the last successful fetch of any kind (as jose's
        cooldownDuration), never while a fetch is in flight or the issuer is failing: everyone
        else gets their answer from the set already held, at once.
        """
        with state.lock:
            allowed = (
                not state.failing
                and state.inflight is None
                and not _cooling_down(state, keyset, now, self._settings.jwks_cooldown)
            )
            if allowed:
                state.last_kid_refresh = now
        return allowed

    def _await_fetch(self, state: _State, timeout: float) -> None:
        """Join the fetch in flight, or ask the refresher for one, and wait up to ``timeout``."""
        with state.lock:
            event = state.inflight
            if event is None:
                event = state.inflight = threading.Event()
                state.fetch_now = True
        state.wake.set()
        event.wait(timeout)

    # -- the refresher ---------------------------------------------------------------------

    def _current(self) -> _State:
        """This process's state, its refresher running; a forked child starts empty."""
        state = self._state
        if state.pid != os.getpid():
            with _fork_lock:
                if self._state.pid != os.getpid():
                    self._state = _State(jwks_uri=self._settings.jwks_uri)
                state = self._state
        if state.refresher is None:
            self._start_refresher(state)
        return state

    def _start_refresher(self, state: _State) -> None:
        """Start the daemon thread that fetches for ``state`` (once)."""
        with state.lock:
            if state.refresher is not None:
                return
            state.refresher = threading.Thread(
                target=_refresh_loop, args=(weakref.ref(self), state), name="jwks-refresh", daemon=True
            )
        # A collected cache wakes its refresher, which then finds the weak reference dead.
        weakref.finalize(self, state.wake.set)
        state.refresher.start()

    def _due_in(self, state: _State) -> float:
        """Seconds until the next fetch; 0 means it is due and now claimed as in flight."""
        now = time.monotonic()
        with state.lock:
            if not state.fetch_now and now < state.next_fetch:
                return min(state.next_fetch - now, _MAX_SLEEP)
            state.fetch_now = False
            if state.inflight is None:
                state.inflight = threading.Event()
            return 0.0

    def _fetch_into(self, state: _State) -> None:
        """Fetch the key set and publish it; on failure keep the last good one. Then report."""
        started = time.monotonic()
        try:
            keys, ttl = self._fetch(state)
        except Exception as exc:  # any failure is a failed fetch, never a crash
            error = str(exc) if isinstance(exc, FetchError) else f"unexpected {type(exc).__name__}"
            if not isinstance(exc, FetchError):
                log.exception("jwks_fetch_bug")
            with state.lock:
                state.failing, state.last_error = True, error
                state.next_fetch = time.monotonic() + self._retry
                held = len(state.keyset.keys) if state.keyset is not None else 0
            event = FetchEvent(self.issuer, "error", error, time.monotonic() - started, held)
        else:
            now = time.monotonic()
            fresh_until = now + ttl
            keyset = KeySet(
                keys,
                fetched_at=now,
                fresh_until=fresh_until,
                usable_until=fresh_until + self._settings.jwks_max_stale,
            )
            with state.lock:
                state.keyset, state.failing, state.last_error = keyset, False, None
                # The refresher fetches again a little before the set goes stale.
                state.next_fetch = fresh_until - min(ttl * _REFRESH_LEAD, _REFRESH_LEAD_MAX)
            event = FetchEvent(self.issuer, "success", None, now - started, len(keys))
        try:
            self._on_fetch(event)
        except Exception:
            # A broken callback must not stop the refresher or fail the request that waited.
            log.exception("jwks_on_fetch_failed")
        finally:
            with state.lock:
                done, state.inflight = state.inflight, None
            if done is not None:
                done.set()

    # -- fetching --------------------------------------------------------------------------

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
            if not _is_not_found(exc):
                raise
            return fallback_jwks_url(issuer)
        except (ValueError, RecursionError):
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
        if _downgrades(issuer, uri):
            raise FetchError(f"discovery names a plain-http jwks_uri {uri!r} for an https issuer")
        return uri

    def _get(self, url: str) -> tuple[bytes, int | None]:
        """GET a URL with timeouts and a size cap; return the body and Cache-Control max-age."""
        if not url.startswith(_SCHEMES):
            raise FetchError("refusing a non-http(s) URL")
        limit = self._settings.jwks_max_bytes
        timeout = self._settings.http_timeout
        request = urllib.request.Request(url, headers={"Accept": "application/json"})
        try:
            with urllib.request.urlopen(request, timeout=timeout) as response:
                body = _read_capped(response, limit, time.monotonic() + timeout)
                cache_control = response.headers.get("Cache-Control", "")
        except urllib.error.HTTPError as exc:
            raise FetchError(f"HTTP {exc.code} from {url}", status=exc.code) from None
        except (urllib.error.URLError, OSError, ValueError) as exc:
            reason = getattr(exc, "reason", exc)
            raise FetchError(f"cannot reach {url}: {reason}") from None
        if body is None:
            raise FetchError(f"response from {url} exceeds {limit} bytes")
        match = _MAX_AGE.search(cache_control)
        return body, int(match.group(1)) if match else None


def _refresh_loop(ref: weakref.ReferenceType[JWKSCache], state: _State) -> None:
    """The refresher: fetch whenever due, until the cache is collected or replaced by a fork."""
    while True:
        cache = ref()
        if cache is None or cache._state is not state:
            return
        delay = cache._due_in(state)
        if delay <= 0:
            cache._fetch_into(state)
        del cache  # hold no strong reference while asleep
        if delay > 0:
            state.wake.wait(delay)
            state.wake.clear()


def _read_capped(response: Any, limit: int, deadline: float) -> bytes | None:
    """Read at most ``limit`` bytes before ``deadline``; None if the body is larger.

    The socket timeout bounds each read; the deadline bounds a server that dribbles bytes.
    """
    chunks: list[bytes] = []
    size = 0
    while chunk := response.read1(65536):
        size += len(chunk)
        if size > limit:
            return None
        chunks.append(chunk)
        if time.monotonic() > deadline:
            raise OSError("body not received within the timeout")
    return b"".join(chunks)


# -- small predicates on the cache state ------------------------------------------------------


def _usable(state: _State, now: float) -> KeySet | None:
    """The held set if it is still usable; a set past max-stale is dropped."""
    keyset = state.keyset
    if keyset is None or now < keyset.usable_until:
        return keyset
    with state.lock:
        if state.keyset is keyset:
            state.keyset = None
    return None


def _cooling_down(state: _State, keyset: KeySet, now: float, cooldown: float) -> bool:
    """Whether an unknown kid came too soon after the last fetch to refresh again."""
    return now - max(state.last_kid_refresh, keyset.fetched_at) < cooldown


def _downgrades(issuer: str, jwks_uri: str) -> bool:
    """An https issuer's keys offered over plain http, where anyone on the path could swap them.

    OpenID Connect Discovery 1.0 §7.1 and RFC 8414 §6 require TLS for the metadata and what it
    points to (https://openid.net/specs/openid-connect-discovery-1_0.html#TLSRequirements).
    """
    return issuer.lower().startswith("https://") and not jwks_uri.lower().startswith("https://")


def _is_not_found(exc: FetchError) -> bool:
    """A 404 from discovery: the issuer publishes no OIDC metadata (Auth0's fixed path then)."""
    return exc.status == 404


# -- parsing the JWKS -------------------------------------------------------------------------


def parse_jwks(body: bytes, algorithms: tuple[str, ...]) -> dict[str, VerificationKey]:
    """Import the usable public signing keys of a JWKS document (RFC 7517 §5)."""
    try:
        doc = json.loads(body)
    except (ValueError, RecursionError):
        raise FetchError("JWKS is not valid JSON") from None
    entries = doc.get("keys") if isinstance(doc, dict) else None
    if not isinstance(entries, list):
        raise FetchError("JWKS has no 'keys' array")
    wanted_kty = {key_type_for(a) for a in algorithms}
    keys: dict[str, VerificationKey] = {}
    ambiguous: set[str] = set()
    for entry in entries:
        key = _usable_key(entry, wanted_kty, algorithms)
        if key is None:
            continue
        kid = entry["kid"]
        held = keys.get(kid)
        if held is None and kid not in ambiguous:
            keys[kid] = VerificationKey.of(key)
        elif held is not None and held.key.thumbprint() != key.thumbprint():
            # RFC 7517 §4.5: distinct keys get distinct kids. Two keys under one kid leave it
            # unclear which one a token means, so neither verifies anything.
            del keys[kid]
            ambiguous.add(kid)
    if not keys:
        raise FetchError("JWKS holds no usable signing key")
    return keys


def _usable_key(entry: Any, wanted_kty: set[str], algorithms: tuple[str, ...]) -> Key | None:
    """Return the imported key if the JWK is a public signing key we may use, else None."""
    if not (
        isinstance(entry, dict)
        and _has_kid(entry)
        and _is_wanted_type(entry, wanted_kty)
        and _is_for_signatures(entry)
        and _alg_is_allowed(entry, algorithms)
        and not _has_private_members(entry)
    ):
        return None
    key = _import(entry)
    if key is None or _is_too_weak(key):
        return None
    return key


def _has_kid(entry: dict[str, Any]) -> bool:
    """A non-empty string kid: tokens name their key by it."""
    kid = entry.get("kid")
    return isinstance(kid, str) and bool(kid)


def _is_wanted_type(entry: dict[str, Any], wanted_kty: set[str]) -> bool:
    """A key type one of the allowed algorithms can use (RFC 7518 §6.1)."""
    kty = entry.get("kty")
    return isinstance(kty, str) and kty in wanted_kty


def _is_for_signatures(entry: dict[str, Any]) -> bool:
    """``use`` absent or "sig" (RFC 7517 §4.2), ``key_ops`` absent or allowing "verify" (§4.3)."""
    ops = entry.get("key_ops")
    return entry.get("use", "sig") == "sig" and (
        ops is None or (isinstance(ops, list) and "verify" in ops)
    )


def _alg_is_allowed(entry: dict[str, Any], algorithms: tuple[str, ...]) -> bool:
    """No pinned ``alg``, or an allowed one that fits the key type (RFC 7517 §4.4)."""
    if "alg" not in entry:
        return True
    alg = entry["alg"]
    return isinstance(alg, str) and alg in algorithms and key_type_for(alg) == entry["kty"]


def _has_private_members(entry: dict[str, Any]) -> bool:
    """A private member in a published JWKS is a misconfiguration; never hold private keys."""
    return any(member in entry for member in _PRIVATE_MEMBERS)


def _import(entry: dict[str, Any]) -> Key | None:
    """The joserfc key for a JWK, or None if it cannot be imported."""
    try:
        return import_key(entry)
    except Exception:
        # joserfc reports bad members as JoseError, ValueError, TypeError or KeyError (an
        # unknown curve) depending on which one is wrong: whatever it says, the key is unusable.
        return None


def _is_too_weak(key: Key) -> bool:
    """RSA keys under 2048 bits (RFC 7518 §3.3)."""
    return key.key_type == "RSA" and key.public_key.key_size < 2048
