"""A thread lock that a forked child gets anew: one held by another thread at fork stays held there."""

from __future__ import annotations

import os
import threading
import weakref
from types import TracebackType


class ForkSafeLock:
    """``threading.Lock``'s acquire/release/``with``, renewed (unheld) in every forked child.

    https://docs.python.org/3/library/os.html#os.register_at_fork
    """

    __slots__ = ("_lock", "__weakref__")

    def __init__(self) -> None:
        self._lock = threading.Lock()
        _every.add(self)

    def acquire(self, blocking: bool = True, timeout: float = -1) -> bool:
        """Take the lock, as ``threading.Lock.acquire``."""
        return self._lock.acquire(blocking, timeout)

    def release(self) -> None:
        """Give the lock back."""
        self._lock.release()

    def __enter__(self) -> bool:
        return self._lock.acquire()

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._lock.release()


_every: weakref.WeakSet[ForkSafeLock] = weakref.WeakSet()


def _renew_in_child() -> None:
    """Only the forking thread lives on in the child: every lock starts unheld there."""
    for lock in list(_every):
        lock._lock = threading.Lock()


os.register_at_fork(after_in_child=_renew_in_child)
