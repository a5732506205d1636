"""A clock the tests move by hand: real time plus an offset that ``advance`` jumps forward."""

from __future__ import annotations

import threading
import time


class ManualClock:
    """Runs with real time, and jumps ``advance(seconds)`` ahead at once, waking every waiter."""

    def __init__(self) -> None:
        self._offset = 0.0
        self._lock = threading.Lock()
        self._waiting: set[threading.Event] = set()

    def time(self) -> float:
        """Wall time, moved."""
        return time.time() + self._offset

    def monotonic(self) -> float:
        """Monotonic time, moved."""
        return time.monotonic() + self._offset

    def wait(self, event: threading.Event, timeout: float) -> bool:
        """Wait like ``event.wait(timeout)``; ``advance`` wakes the waiter to look at the time again."""
        with self._lock:
            self._waiting.add(event)
        try:
            return event.wait(timeout)
        finally:
            with self._lock:
                self._waiting.discard(event)

    def advance(self, seconds: float) -> None:
        """Move time ``seconds`` ahead and wake every waiter."""
        with self._lock:
            self._offset += seconds
            waiting = list(self._waiting)
        for event in waiting:
            event.set()
