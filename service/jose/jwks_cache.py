"""Per-process JWKS cache: background refresh, single-flight fetches, bounded last-known-good keys.

The timing guarantees are stated for users in docs/jwks-cache.md; this is how they are kept:
- each process runs one refresher thread per cache, started on first use (never at import or in
  the app factory, and again in a forked child). It fetches at once, then a tenth of the TTL (at
  most 30 s) before the set expires; after a failed fetch, every ``jwks_retry`` seconds until one
  succeeds. Only the refresher fetches, so fetches are single-flight by construction;
- requests read the current set; a known kid never waits while a usable set is held. An
  unknown kid of a healthy issuer joins the fetch in flight, or asks for the one the cooldown
  allows, and is answered from its result; at most the worker's ``WaitSeats`` wait (each for at
  most the HTTP timeout). When the answer cannot be known (issuer failing, no seat, the fetch
  failed or outlasted the wait) it is ``KeyPending``, never "unknown". With no usable set they
  wait for a fetch (bounded by the fetch budget) unless the issuer is known to be failing;
- a failed fetch keeps the last good set until ``jwks_max_stale`` seconds past its expiry (the
  max-stale of RFC 9111 §5.2.1.2), then drops it.
"""

from __future__ import annotations

import logging
import os
import threading
import weakref
from collections.abc import Callable
from dataclasses import dataclass
from dataclasses import field

from ..config import Settings
from ..fork_safe import ForkSafeLock
from . import jwks_fetch
from .clock import SYSTEM
from .clock import Clock
from .jwks_fetch import FetchError
from .jwks_parse import VerificationKey
from .jwks_parse import parse_jwks
from .wait_seats import WaitSeats

#: The refresh starts this share of the TTL (at most _REFRESH_LEAD_MAX s) before expiry, so a
#: healthy issuer's answer replaces the set before it goes stale.
_REFRESH_LEAD = 0.1
_REFRESH_LEAD_MAX = 30.0
#: Even AUTH0_JWKS_RETRY=0 leaves this long between the refresher's attempts: never a busy loop.
_RETRY_FLOOR = 0.1
#: Longest single sleep of the refresher (threading rejects huge timeouts).
_MAX_SLEEP = 3600.0

#: The logger name log lines carry (kept from before the package split).
log = logging.getLogger("service.jwks")


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
class KeySet:
    """An immutable snapshot of usable verification keys (monotonic times)."""

    keys: dict[str, VerificationKey]
    fetched_at: float
    fresh_until: float
    #: Past this (fresh_until + max-stale) the set is dropped.
    usable_until: float


class KeyPending(Exception):
    """Whether a kid is published cannot be told yet: a fetch it could not wait for may bring it."""


@dataclass(slots=True)
class _Flight:
    """One fetch in flight or asked for: ``done`` is set when it ends, ``ok`` says it succeeded."""

    done: threading.Event = field(default_factory=threading.Event)
    ok: bool = False


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
    #: The fetch in flight (or asked for); None when there is none.
    inflight: _Flight | None = None
    #: Wakes the refresher to look at the state again.
    wake: threading.Event = field(default_factory=threading.Event)
    lock: threading.Lock = field(default_factory=threading.Lock)
    refresher: threading.Thread | None = None
    pid: int = field(default_factory=os.getpid)


#: Guards replacing a cache's state in a forked child.
_fork_lock = ForkSafeLock()


class JWKSCache:
    """Process-level cache of one issuer's signing keys."""

    def __init__(
        self,
        settings: Settings,
        *,
        issuer: str | None = None,
        on_fetch: Callable[[FetchEvent], None] | None = None,
        seats: WaitSeats | None = None,
        clock: Clock = SYSTEM,
    ) -> None:
        self._settings = settings
        #: Lifetimes (TTL, cooldown, retry, max-stale) run on this clock; waits for HTTP are real.
        self._clock = clock
        #: How many of this worker's requests may wait for fetches at once (shared by its caches).
        self._seats = seats if seats is not None else WaitSeats(1)
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
    def seats(self) -> WaitSeats:
        """The seats of requests waiting for a fetch to learn an unknown kid (the worker's)."""
        return self._seats

    @property
    def keyset(self) -> KeySet | None:
        """The usable key set (fresh, or stale within max-stale), or None."""
        return _usable(self._current(), self._clock.monotonic())

    def usable(self) -> bool:
        """Whether this process holds a key set it may verify with (what readiness means)."""
        return self.keyset is not None

    def cold(self) -> bool:
        """Nothing usable held and no fetch has failed yet: the first fetch is still to come."""
        state = self._current()
        return _usable(state, self._clock.monotonic()) is None and not state.failing

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

        None means the kid is unknown. Raises ``FetchError`` when no usable key set is held, and
        ``KeyPending`` when whether the kid is published cannot be told yet.
        """
        state = self._current()
        now = self._clock.monotonic()
        keyset = _usable(state, now) or self._load(state)
        key = keyset.keys.get(kid)
        if key is not None:
            return key
        flight = self._flight_for_unknown_kid(state, keyset, now)
        if flight is None:
            return None
        try:
            ended = flight.done.wait(self._kid_wait)
        finally:
            self._seats.give_back()
        refreshed = _usable(state, self._clock.monotonic())
        if not (ended and flight.ok) or refreshed is None:
            raise KeyPending("the fetch that could publish this kid has not succeeded")
        return refreshed.keys.get(kid)

    # -- waiting on the refresher -----------------------------------------------------------

    def _load(self, state: _State) -> KeySet:
        """With nothing usable: wait for a fetch, unless the issuer is known to be failing."""
        if not state.failing:
            self._await_fetch(state, self._fetch_budget)
        keyset = _usable(state, self._clock.monotonic())
        if keyset is None:
            raise FetchError(state.last_error or "no key set yet")
        return keyset

    def _flight_for_unknown_kid(self, state: _State, keyset: KeySet, now: float) -> _Flight | None:
        """The fetch an unknown kid waits for, a seat taken for it; None when it is unknown now.

        It joins the fetch in flight of a healthy issuer (routine, or asked for by another
        request), else asks for one when the cooldown allows: at most one per cooldown, counted
        from the last successful fetch of any kind (as jose's cooldownDuration). While the issuer
        is failing, or with every seat taken, the answer is not known: ``KeyPending``, no 401.
        """
        with state.lock:
            if state.failing:
                raise KeyPending("the issuer's last fetch failed")
            flight = state.inflight
            if flight is None and _cooling_down(state, keyset, now, self._settings.jwks_cooldown):
                return None
            if not self._seats.take():
                raise KeyPending("every waiting seat of this worker is taken")
            if flight is None:
                flight = state.inflight = _Flight()
                state.fetch_now = True
                state.last_kid_refresh = now
        state.wake.set()
        return flight

    def _await_fetch(self, state: _State, timeout: float) -> None:
        """Join the fetch in flight, or ask the refresher for one, and wait up to ``timeout``."""
        with state.lock:
            flight = state.inflight
            if flight is None:
                flight = state.inflight = _Flight()
                state.fetch_now = True
        state.wake.set()
        flight.done.wait(timeout)

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
        now = self._clock.monotonic()
        with state.lock:
            if not state.fetch_now and now < state.next_fetch:
                return min(state.next_fetch - now, _MAX_SLEEP)
            state.fetch_now = False
            if state.inflight is None:
                state.inflight = _Flight()
            return 0.0

    def _fetch_into(self, state: _State) -> None:
        """Fetch the key set and publish it; on failure keep the last good one. Then report."""
        started = self._clock.monotonic()
        ok = False
        try:
            keys, ttl = self._fetch(state)
        except Exception as exc:  # any failure is a failed fetch, never a crash
            error = str(exc) if isinstance(exc, FetchError) else f"unexpected {type(exc).__name__}"
            if not isinstance(exc, FetchError):
                log.exception("jwks_fetch_bug")
            with state.lock:
                state.failing, state.last_error = True, error
                state.next_fetch = self._clock.monotonic() + self._retry
                held = len(state.keyset.keys) if state.keyset is not None else 0
            event = FetchEvent(self.issuer, "error", error, self._clock.monotonic() - started, held)
        else:
            now = self._clock.monotonic()
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
            ok = True
        try:
            self._on_fetch(event)
        except Exception:
            # A broken callback must not stop the refresher or fail the request that waited.
            log.exception("jwks_on_fetch_failed")
        finally:
            with state.lock:
                flight, state.inflight = state.inflight, None
            if flight is not None:
                flight.ok = ok
                flight.done.set()

    # -- fetching --------------------------------------------------------------------------

    def _fetch(self, state: _State) -> tuple[dict[str, VerificationKey], float]:
        """Resolve the JWKS URI (discovery, then Auth0's fixed path) and fetch the keys."""
        timeout, limit = self._settings.http_timeout, self._settings.jwks_max_bytes
        uri = state.jwks_uri
        if uri is None:
            uri = jwks_fetch.discover(self.issuer, timeout=timeout, limit=limit)
            state.jwks_uri = uri
        body, max_age = jwks_fetch.get(uri, timeout=timeout, limit=limit)
        keys = parse_jwks(body, self._settings.algorithms)
        ttl = self._settings.jwks_ttl
        if max_age is not None:
            # A shorter Cache-Control max-age wins; one second is the floor so max-age=0
            # cannot turn every request into a fetch.
            ttl = max(1.0, min(ttl, float(max_age)))
        return keys, ttl

def _refresh_loop(ref: weakref.ReferenceType[JWKSCache], state: _State) -> None:
    """The refresher: fetch whenever due, until the cache is collected or replaced by a fork."""
    while True:
        cache = ref()
        if cache is None or cache._state is not state:
            return
        delay = cache._due_in(state)
        if delay <= 0:
            cache._fetch_into(state)
        clock = cache._clock
        del cache  # hold no strong reference while asleep
        if delay > 0:
            clock.wait(state.wake, delay)
            state.wake.clear()


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
