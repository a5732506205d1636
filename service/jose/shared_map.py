"""Hash tables in memory shared by every gunicorn worker of a pod: the map, its lock, the placement.

The map is an unlinked file in the temp directory, created once in the gunicorn master before it
forks, so all workers map the same pages. POSIX record locks (``lockf``) are owned by the process:
they exclude the other workers and are released by the kernel if a worker dies holding one. A
thread lock serialises the threads of one worker; a child gets a fresh one from an
``os.register_at_fork`` hook, before any of its threads can run, because a copied lock may be held.
"""

from __future__ import annotations

import fcntl
import hashlib
import mmap
import os
import tempfile
import threading
import weakref
from collections.abc import Iterator
from contextlib import contextmanager


class SharedMap:
    """``size`` zeroed bytes shared across fork, and the lock that guards them."""

    def __init__(self, size: int, prefix: str) -> None:
        fd, path = tempfile.mkstemp(prefix=prefix)
        try:
            # Unlinked at once: the mapping lives as long as a process holds it, nothing to clean.
            os.unlink(path)
            os.ftruncate(fd, size)
            self.buffer = mmap.mmap(fd, size, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE)
        except BaseException:
            os.close(fd)
            raise
        self._fd = fd
        self._thread_lock = threading.Lock()
        _live.add(self)

    @contextmanager
    def locked(self) -> Iterator[mmap.mmap]:
        """Hold the map exclusively (this thread, this process) and hand it over."""
        with self._thread_lock:
            fcntl.lockf(self._fd, fcntl.LOCK_EX)
            try:
                yield self.buffer
            finally:
                fcntl.lockf(self._fd, fcntl.LOCK_UN)

    def _renew_thread_lock(self) -> None:
        """A fresh, unheld thread lock (in a child just forked: only one thread exists)."""
        self._thread_lock = threading.Lock()


def place(secret: bytes, item: str, buckets: int) -> tuple[int, int, int]:
    """An item's nonzero 64-bit fingerprint and its two distinct buckets, by a keyed BLAKE2b hash."""
    digest = hashlib.blake2b(item.encode("utf-8", "surrogatepass"), key=secret, digest_size=16).digest()
    fingerprint = int.from_bytes(digest[:8], "little") | 1  # 0 marks a never-used slot
    spread = int.from_bytes(digest[8:], "little")
    first = spread % buckets
    second = (first + 1 + (spread // buckets) % (buckets - 1)) % buckets
    return fingerprint, first, second


_live: weakref.WeakSet[SharedMap] = weakref.WeakSet()


def _after_fork_in_child() -> None:
    """Give every map a new thread lock in the child: the parent's may have been held at fork."""
    for shared in list(_live):
        shared._renew_thread_lock()


os.register_at_fork(after_in_child=_after_fork_in_child)
