"""The pod's DPoP replay store: a fixed-size table in memory shared by every gunicorn worker.

Entries are (fingerprint of key thumbprint + jti, expiry), 16 bytes each, in buckets of 16. Each
fingerprint may live in two buckets, chosen by a keyed hash with a per-pod random key (so a
client cannot aim its ``jti`` values at a bucket), and goes to the emptier one. A live entry is
never evicted: when both buckets are full the proof is refused as FULL instead. Each key may hold
only its share of the entries (``key_shares``), so one key's flood fills at most an eighth of the
table and never changes what happens to another key's proofs.
"""

from __future__ import annotations

import os
import struct

from ..config import DPoPSettings
from .key_shares import KeyShares
from .replay import Verdict
from .shared_map import SharedMap
from .shared_map import place

#: Entries per bucket; a fingerprint is looked up in two buckets.
BUCKET = 16
_SLOT = struct.Struct("<Qd")
_BUCKET = struct.Struct("<" + "Qd" * BUCKET)


class ReplayTable:
    """Remembers DPoP proof identifiers until their proofs expire, across the workers of a pod."""

    def __init__(self, capacity: int, lifetime: float) -> None:
        """``lifetime``: the longest an entry lives (iat offset + leeway), for the key shares."""
        self.capacity = capacity
        self.lifetime = lifetime
        self._buckets = max(2, capacity // BUCKET)
        self._secret = os.urandom(32)
        self._map = SharedMap(self._buckets * _BUCKET.size, "api-dpop-replay-")
        self.shares = KeyShares(capacity, lifetime)

    def first_use(self, jkt: str, jti: str, expires_at: float, now: float) -> Verdict:
        """Record the proof unless it is a replay, its key is over its share or there is no room."""
        fingerprint, first, second = place(self._secret, f"{jkt}\x00{jti}", self._buckets)
        with self._map.locked() as table:
            free_slot = None
            most_free = 0
            for bucket in (first, second):
                base = bucket * _BUCKET.size
                window = _BUCKET.unpack_from(table, base)
                free = []
                for index in range(BUCKET):
                    slot_fingerprint, slot_expiry = window[2 * index], window[2 * index + 1]
                    # Live through its expiry instant: the iat check accepts iat == now - offset.
                    if slot_expiry < now or slot_fingerprint == 0:
                        free.append(index)
                    elif slot_fingerprint == fingerprint:
                        return Verdict.REPLAY
                if len(free) > most_free:
                    free_slot, most_free = base + free[0] * _SLOT.size, len(free)
            if free_slot is None:
                return Verdict.FULL
            verdict = self.shares.admit(jkt, expires_at, now)
            if verdict is Verdict.FIRST_USE:
                _SLOT.pack_into(table, free_slot, fingerprint, expires_at)
            return verdict


def table_for(dpop: DPoPSettings) -> ReplayTable:
    """A table sized for these settings (the gunicorn master makes the pod's one: jose.prefork)."""
    # The longest a proof stays acceptable: dated the full leeway ahead, then the whole offset.
    return ReplayTable(dpop.replay_capacity, dpop.iat_offset + dpop.iat_leeway)
