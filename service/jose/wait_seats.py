"""The bound on requests of one worker that wait for a JWKS fetch to learn an unknown kid."""

from __future__ import annotations

import os
import threading
import weakref


class WaitSeats:
    """At most ``limit`` requests wait at once; a request finding no seat free does not wait.

    One instance serves every issuer of a worker, so however many issuers and unknown kids
    there are, the other threads stay free for tokens whose key is known.
    """

    def __init__(self, limit: int) -> None:
        if limit < 1:
            raise ValueError("a worker needs at least one seat to wait for a fetch")
        #: How many requests may wait at once.
        self.limit = limit
        self._taken = 0
        self._lock = threading.Lock()
        _every.add(self)

    @classmethod
    def for_threads(cls, threads: int) -> WaitSeats:
        """Seats for a worker with ``threads`` threads: half of them, at least one."""
        return cls(max(1, threads // 2))

    def fit(self, threads: int) -> None:
        """Resize for the worker's real thread count (before it serves; taken seats stay taken)."""
        self.limit = max(1, threads // 2)

    def take(self) -> bool:
        """Take a seat if one is free; False when every seat is taken."""
        with self._lock:
            if self._taken >= self.limit:
                return False
            self._taken += 1
            return True

    def give_back(self) -> None:
        """Free the seat taken by ``take``."""
        with self._lock:
            self._taken -= 1

    @property
    def taken(self) -> int:
        """Seats taken now."""
        return self._taken

    def _after_fork(self) -> None:
        """A forked child has none of its parent's waiting threads, and a fresh lock."""
        self._lock = threading.Lock()
        self._taken = 0


#: Every instance, so a forked child resets each one (a lock held at fork stays held forever).
_every: weakref.WeakSet[WaitSeats] = weakref.WeakSet()


def _reset_after_fork() -> None:
    """Reset every instance in the child."""
    for seats in list(_every):
        seats._after_fork()


os.register_at_fork(after_in_child=_reset_after_fork)
