"""DPoP proof replay detection shared by every gunicorn worker of one pod (RFC 9449 §11.1).

The store is a fixed-size open-addressing table in a shared memory map: an unlinked file in the
temp directory, created once in the gunicorn master before it forks, so all workers map the same
pages. Entries are (fingerprint of key thumbprint + jti, expiry); a proof stays recorded until its
``iat`` leaves the acceptance window, after which the ``iat`` check refuses it anyway.

Memory is bounded by the capacity. When a probe window is full of live entries the one closest to
expiry is evicted and the table's *floor* rises to its expiry: from then on every proof whose
window ends before the floor is refused. A flood of unique proofs therefore narrows how old an
accepted proof may be, but never lets an evicted proof through a second time.

Mutual exclusion: POSIX record locks (``lockf``) are owned by the process, so they exclude the
other workers and are released by the kernel if a worker dies holding one; a thread lock
serialises the threads of one worker.
"""

from __future__ import annotations

import fcntl
import hashlib
import mmap
import os
import struct
import tempfile
import threading
import time

#: Slots probed per insert (linear probing, never wrapping: the table has this many spare slots).
PROBE = 16
_HEADER = struct.Struct("<d8x")
_SLOT = struct.Struct("<Qd")
_WINDOW = struct.Struct("<" + "Qd" * PROBE)


class ReplayStore:
    """Remembers DPoP proof identifiers until their acceptance window has passed."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        size = _HEADER.size + (capacity + PROBE) * _SLOT.size
        fd, path = tempfile.mkstemp(prefix="api-dpop-replay-")
        try:
            # Unlinked at once: the mapping lives as long as a process holds it, nothing to clean.
            os.unlink(path)
            os.ftruncate(fd, size)
            self._map = mmap.mmap(fd, size, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE)
        except BaseException:
            os.close(fd)
            raise
        self._fd = fd
        self._owner = -1
        self._thread_lock = threading.Lock()

    def _lock(self) -> threading.Lock:
        """This process's thread lock (a fresh one after a fork: a copied lock may be held)."""
        if self._owner != os.getpid():
            self._thread_lock = threading.Lock()
            self._owner = os.getpid()
        return self._thread_lock

    def first_use(self, thumbprint: str, jti: str, expires_at: float, now: float | None = None) -> bool:
        """Record a proof; False when it was seen before (or can no longer be told apart)."""
        now = time.time() if now is None else now
        digest = hashlib.sha256(f"{thumbprint}\x00{jti}".encode("utf-8", "surrogatepass")).digest()
        fingerprint = int.from_bytes(digest[:8], "little") | 1  # 0 marks an empty slot
        start = fingerprint % self.capacity
        offset = _HEADER.size + start * _SLOT.size
        table = self._map
        with self._lock():
            fcntl.lockf(self._fd, fcntl.LOCK_EX)
            try:
                (floor,) = _HEADER.unpack_from(table, 0)
                if expires_at <= floor:
                    return False
                window = _WINDOW.unpack_from(table, offset)
                free = -1
                oldest = 0
                for index in range(PROBE):
                    slot_fingerprint, slot_expiry = window[2 * index], window[2 * index + 1]
                    if slot_expiry <= now:
                        if free < 0:
                            free = index
                    elif slot_fingerprint == fingerprint:
                        return False
                    elif slot_expiry < window[2 * oldest + 1]:
                        oldest = index
                if free < 0:
                    free = oldest
                    _HEADER.pack_into(table, 0, max(floor, window[2 * oldest + 1]))
                _SLOT.pack_into(table, offset + free * _SLOT.size, fingerprint, expires_at)
                return True
            finally:
                fcntl.lockf(self._fd, fcntl.LOCK_UN)


_shared: ReplayStore | None = None


def shared_store(capacity: int) -> ReplayStore:
    """The process-wide store, created on first use (in the gunicorn master: before the fork)."""
    global _shared
    if _shared is None or _shared.capacity != capacity:
        _shared = ReplayStore(capacity)
    return _shared
