"""What a DPoP replay store answers (RFC 9449 §11.1), and the share of it one key may hold.

A store is asked once per proof, after every other check of the proof passed, with the key
thumbprint (``jkt``), the ``jti`` and when the proof stops being acceptable anyway
(``iat + AUTH0_DPOP_IAT_OFFSET``). Every store keeps the same rules: an entry lives until that
moment, inclusive, and is never dropped earlier; a replay is recognised before any limit is
applied; a key holding its share of live entries gets ``FLOOD`` and nothing is written, so no
key's proofs change the verdict on another key's proof.
"""

from __future__ import annotations

import enum
from typing import Protocol


class Verdict(enum.Enum):
    """The outcome of recording one proof."""

    #: Not seen before, now recorded: the proof may be accepted.
    FIRST_USE = "first_use"
    #: Recorded before and still live: a replay.
    REPLAY = "replay"
    #: Not seen, but its key already holds its share of live entries: not recorded.
    FLOOD = "flood"
    #: Not seen and within its key's share, but the store has no room left: not recorded.
    FULL = "full"
    #: The store could not be asked (unreachable, timed out): not recorded.
    UNAVAILABLE = "unavailable"


class ReplayStore(Protocol):
    """Remembers (key, jti) pairs until their proofs expire."""

    def first_use(self, jkt: str, jti: str, expires_at: float, now: float) -> Verdict:
        """Record the proof if it is new and its key is within its share; say what happened."""
        ...


#: One key may hold this fraction of a store's capacity: up to 7 keys flooding at once still
#: leave room for every other key.
SHARE_DIVISOR = 8


def key_share(capacity: int) -> int:
    """Live entries one key may hold in a store of ``capacity`` entries."""
    return max(1, capacity // SHARE_DIVISOR)
