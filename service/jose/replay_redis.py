"""DPoP proof replay detection shared by every pod: one Redis (or Valkey) key per accepted proof.

RFC 9449 §11.1: a proof is single-use for as long as its ``iat`` would be accepted, on every pod that
serves the resource. Each accepted proof is written once with ``SET <prefix>:<hash> 1 NX PXAT <ms>``:
one command, so the first writer wins atomically across pods and workers (no ``EXISTS`` before it),
and the key expires exactly when the ``iat`` check would refuse the proof anyway. ``<hash>`` is the
SHA-256 of the key thumbprint and ``jti``, so Redis never holds either.

Redis down or slow: every command has one short timeout and is never retried (a retried ``SET NX``
whose first attempt did land would report a replay). After a failure this worker stops talking to
Redis for a backoff that doubles up to a cap, then lets one request through as a probe: an outage
costs each worker one timeout per backoff step, never a reconnect storm. Meanwhile the answer is
``UNAVAILABLE`` (the service's 503), or with a fallback store (fail-open) that store's verdict.

Connections: one pool per worker process, created on first use after the fork (never in the
gunicorn master, never at import), each thread holding its own pooled connection. The per-call path
uses redis-py's public ``Connection.send_command`` / ``read_response``: ``Redis.set`` costs ~50 µs more
per call in redis-py 8 (retry, pool and observability bookkeeping on every command).
"""

from __future__ import annotations

import hashlib
import math
import os
import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import redis
from redis.backoff import NoBackoff
from redis.connection import ConnectionPool
from redis.exceptions import OutOfMemoryError
from redis.retry import Retry

from .key_shares import KeyShares
from .replay import ReplayStore
from .replay import Verdict

#: Connections one worker may open (one per serving thread; more would only queue at Redis).
MAX_CONNECTIONS = 64
#: Backoff after a failure: the first retry after this many seconds, doubling up to the cap.
BACKOFF_FIRST = 0.1
BACKOFF_CAP = 1.0
#: Never store a key for less than this: a proof at the very edge of its window still gets a key.
_MIN_TTL_MS = 1000


@dataclass(frozen=True, slots=True)
class StoreEvent:
    """One store request: result ``first``, ``replay`` or ``error``, and its round trip (None: not sent)."""

    result: str
    duration: float | None


@dataclass(frozen=True, slots=True)
class StateChange:
    """The worker's link to Redis went down (with the error's type) or came back up."""

    up: bool
    error: str | None


class _Backoff:
    """This worker's view of Redis: up, or down until the next probe is due (thread-safe)."""

    def __init__(self, clock: Callable[[], float]) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        self.down = False
        self.error: str | None = None
        self._delay = BACKOFF_FIRST
        self._retry_at = 0.0
        self._probing = False

    def admit(self) -> bool:
        """May this call talk to Redis? Always while up; while down, one probe once it is due."""
        if not self.down:
            return True
        with self._lock:
            if not self.down:
                return True
            if self._probing or self._clock() < self._retry_at:
                return False
            self._probing = True
            return True

    def succeeded(self) -> bool:
        """Redis answered; True when that ends an outage."""
        if not self.down:
            return False
        with self._lock:
            was_down, self.down, self._probing = self.down, False, False
            self._delay, self.error = BACKOFF_FIRST, None
            return was_down

    def failed(self, error: str) -> bool:
        """Redis failed; True when that starts an outage. The next probe waits a jittered backoff."""
        with self._lock:
            started = not self.down
            if not started:
                self._delay = min(self._delay * 2, BACKOFF_CAP)
            self.down, self.error, self._probing = True, error, False
            # Jitter: the workers of many pods must not probe a recovering Redis in lockstep.
            self._retry_at = self._clock() + self._delay * random.uniform(0.5, 1.0)
            return started


class RedisReplayStore:
    """Remembers accepted DPoP proofs in Redis until their acceptance window has passed."""

    def __init__(
        self,
        url: str,
        *,
        password: str | None,
        timeout: float,
        prefix: str,
        shares: KeyShares | None = None,
        fallback: ReplayStore | None = None,
        on_request: Callable[[StoreEvent], None] = lambda event: None,
        on_state: Callable[[StateChange], None] = lambda change: None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._url = url
        self._password = password
        self._timeout = timeout
        self._prefix = prefix
        self._shares = shares
        self._fallback = fallback
        self._on_request = on_request
        self._on_state = on_state
        self._backoff = _Backoff(clock)
        self._pool: ConnectionPool | None = None
        self._pool_pid = -1
        self._pool_lock = threading.Lock()
        self._local = threading.local()

    @property
    def fail_open(self) -> bool:
        """True when an outage falls back to the pod-local store instead of refusing."""
        return self._fallback is not None

    def key(self, jkt: str, jti: str) -> str:
        """``<prefix>:<sha256 of thumbprint and jti>``: namespaced, and holding neither."""
        digest = hashlib.sha256(f"{jkt}\x00{jti}".encode("utf-8", "surrogatepass")).hexdigest()
        return f"{self._prefix}:{digest}"

    def first_use(self, jkt: str, jti: str, expires_at: float, now: float) -> Verdict:
        """Record a proof unless it was seen before; UNAVAILABLE (or the fallback's verdict) on failure."""
        key = self.key(jkt, jti)
        if self._shares is not None and self._shares.over_share(jkt, now):
            # Past its share a key records nothing more; only a replay is still told apart (read-only).
            found = self._command("EXISTS", key, result=_exists_result)
            if found is _FAILED:
                return self._unavailable(jkt, jti, expires_at, now)
            if isinstance(found, Verdict):
                return found
            return Verdict.REPLAY if found else Verdict.FLOOD
        expiry_ms = max(math.ceil(expires_at * 1000), int(now * 1000) + _MIN_TTL_MS)
        reply = self._command("SET", key, b"1", "NX", "PXAT", expiry_ms, result=_set_result)
        if reply is _FAILED:
            return self._unavailable(jkt, jti, expires_at, now)
        if isinstance(reply, Verdict):
            return reply
        if reply is None:
            return Verdict.REPLAY
        if self._shares is not None:
            # Counted once Redis recorded it: concurrent first uses of one key may pass its share
            # by the requests in flight in this pod, never more (each was checked just before).
            self._shares.admit(jkt, expires_at, now)
        return Verdict.FIRST_USE

    def health(self) -> dict[str, Any]:
        """The store's state for /readyz: a PING when a probe is allowed, else the known outage."""
        state: dict[str, Any] = {"store": "redis"}
        if self.fail_open:
            state["fail"] = "open"
        reply = self._command("PING")
        if reply is _FAILED or isinstance(reply, Verdict):
            state.update(status="unavailable", error=self._backoff.error or "unavailable")
        else:
            state["status"] = "ready"
        return state

    def close(self) -> None:
        """Close this process's connections (tests; a worker's connections die with it)."""
        if self._pool is not None and self._pool_pid == os.getpid():
            self._pool.disconnect()
            self._pool, self._pool_pid = None, -1

    def _unavailable(self, jkt: str, jti: str, expires_at: float, now: float) -> Verdict:
        """Fail closed, or with a fallback (fail-open) let the pod-local store decide."""
        if self._fallback is None:
            return Verdict.UNAVAILABLE
        return self._fallback.first_use(jkt, jti, expires_at, now)

    def _command(self, *args: Any, result: Callable[[Any], str | None] | None = None) -> Any:
        """Send one command on this thread's connection; the reply, a FULL verdict, or _FAILED.

        ``result`` names a reply for the request count (None: not counted); without it (PING) the
        command is not a proof's request and is never counted.
        """
        counted = result is not None
        if not self._backoff.admit():
            if counted:
                self._on_request(StoreEvent("error", None))
            return _FAILED
        started = time.perf_counter()
        try:
            connection = self._connection()
            # On any error redis-py drops the connection (a late reply to a timed-out command can
            # never answer the next one); the next command reconnects.
            connection.send_command(*args)
            reply = connection.read_response()
        except OutOfMemoryError:
            # Redis answered, so it is reachable: no room (maxmemory with noeviction) is a verdict.
            self._reachable()
            if counted:
                self._on_request(StoreEvent("error", time.perf_counter() - started))
            return Verdict.FULL
        except (redis.RedisError, OSError) as error:
            return self._failure(type(error).__name__, time.perf_counter() - started, counted)
        elapsed = time.perf_counter() - started
        self._reachable()
        label = result(reply) if result is not None else None
        if label is not None:
            self._on_request(StoreEvent(label, elapsed))
        return reply

    def _reachable(self) -> None:
        """Redis answered: end an outage (logged once)."""
        if self._backoff.succeeded():
            self._on_state(StateChange(up=True, error=None))

    def _failure(self, error: str, elapsed: float, counted: bool) -> object:
        """Count the failure and start (or extend) the outage; logged once per outage."""
        if counted:
            self._on_request(StoreEvent("error", elapsed))
        if self._backoff.failed(error):
            self._on_state(StateChange(up=False, error=error))
        return _FAILED

    def _connection(self) -> Any:
        """This thread's connection from this process's pool (a new pool after a fork)."""
        pid = os.getpid()
        if self._pool_pid != pid:
            with self._pool_lock:
                if self._pool_pid != pid:
                    self._pool = self._new_pool()
                    self._local = threading.local()
                    self._pool_pid = pid
        connection = getattr(self._local, "connection", None)
        if connection is None:
            assert self._pool is not None
            connection = self._local.connection = self._pool.get_connection()
        return connection

    def _new_pool(self) -> ConnectionPool:
        """A pool for this process: the URL's host, TLS (rediss) and database; no retries."""
        options: dict[str, Any] = {
            "socket_timeout": self._timeout,
            "socket_connect_timeout": self._timeout,
            # One attempt per command: see the module docstring.
            "retry": Retry(NoBackoff(), 0),
            "max_connections": MAX_CONNECTIONS,
            "client_name": "flask-auth0-api-dpop",
        }
        if self._password is not None:
            options["password"] = self._password
        return ConnectionPool.from_url(self._url, **options)


#: The sentinel of a command that got no answer.
_FAILED = object()


def _set_result(reply: Any) -> str:
    """SET NX answers OK when it wrote the key, nothing when the key was there."""
    return "first" if reply is not None else "replay"


def _exists_result(reply: Any) -> str | None:
    """EXISTS (a key past its share): a replay when found; a flood is no store result."""
    return "replay" if reply else None
