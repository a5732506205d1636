"""The clock the JWKS cache and the token verifier read: the system's, or one a test moves by hand."""

from __future__ import annotations

import threading
import time as _time
from typing import Protocol


class Clock(Protocol):
    """Wall time for token claims (RFC 7519 NumericDate), monotonic time for cache lifetimes."""

    def time(self) -> float:
        """Seconds since the epoch."""
        ...

    def monotonic(self) -> float:
        """Seconds on a clock that never goes back."""
        ...

    def wait(self, event: threading.Event, timeout: float) -> bool:
        """Sleep until ``event`` is set or ``timeout`` seconds of this clock passed; True if set."""
        ...


class SystemClock:
    """The real clocks (``time.time``, ``time.monotonic``) and a real wait."""

    time = staticmethod(_time.time)
    monotonic = staticmethod(_time.monotonic)

    def wait(self, event: threading.Event, timeout: float) -> bool:
        """``event.wait(timeout)``."""
        return event.wait(timeout)


SYSTEM: Clock = SystemClock()
