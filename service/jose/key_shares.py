"""How many live replay entries each DPoP key holds in a pod, so that no key takes more than its share.

Records live in a shared memory map (see ``shared_map``): per key, a fingerprint and the number of
entries whose expiry falls in each of the last few time *epochs*. An epoch is a sixth of the
longest life of an entry (``AUTH0_DPOP_IAT_OFFSET + AUTH0_DPOP_IAT_LEEWAY``), so eight epochs cover
every live entry. An epoch counts until it has wholly passed, so a key may be over-counted by the
entries that expired earlier in the current epoch: it is refused early, never late.

Records are placed by a keyed hash (a per-pod random key), in the emptier of two buckets of
eight, so a client cannot aim its keys at the records of others.
"""

from __future__ import annotations

import math
import mmap
import os
import struct

from ..config import DPoPSettings
from .replay import Verdict
from .replay import key_share
from .shared_map import SharedMap
from .shared_map import place

#: Time epochs per record; the longest entry life spans at most EPOCHS - 1 of them.
EPOCHS = 8
#: Records per bucket (each fingerprint may live in two buckets).
BUCKET = 8
#: Records per entry of replay capacity: a pod tracks capacity / 4 keys at once.
RECORDS_PER_ENTRY = 0.25
#: fingerprint (0: never used), newest epoch counted, one count per epoch (ring, epoch % EPOCHS).
_RECORD = struct.Struct("<QI" + "I" * EPOCHS)
_BUCKET = struct.Struct("<" + ("QI" + "I" * EPOCHS) * BUCKET)
_FIELDS = 2 + EPOCHS


class KeyShares:
    """Counts each key's live replay entries across the workers of a pod."""

    def __init__(self, capacity: int, lifetime: float) -> None:
        self.share = key_share(capacity)
        self.lifetime = lifetime
        self.epoch_seconds = max(1, math.ceil(lifetime / (EPOCHS - 2)))
        self._buckets = max(2, int(capacity * RECORDS_PER_ENTRY) // BUCKET)
        self._secret = os.urandom(32)
        self._map = SharedMap(self._buckets * _BUCKET.size, "api-dpop-keys-")

    def over_share(self, jkt: str, now: float) -> bool:
        """True when ``jkt`` already holds its share of live entries (nothing is changed)."""
        fingerprint, first, second = self._place(jkt)
        with self._map.locked() as table:
            found = self._find(table, fingerprint, first, second, now)
            return found is not None and self._live(found[1], now) >= self.share

    def admit(self, jkt: str, expires_at: float, now: float) -> Verdict:
        """Count one more entry for ``jkt``: FIRST_USE when counted, FLOOD or FULL when not."""
        fingerprint, first, second = self._place(jkt)
        current = int(now // self.epoch_seconds)
        # Counted in the epoch of its expiry, kept inside the ring (the verifier never asks for
        # more than the longest life; a later expiry would only be counted for shorter).
        epoch = min(max(int(expires_at // self.epoch_seconds), current), current + EPOCHS - 1)
        with self._map.locked() as table:
            found = self._find(table, fingerprint, first, second, now)
            if found is None:
                slot = self._free_slot(table, first, second, current)
                if slot is None:
                    return Verdict.FULL
                record = [fingerprint, epoch] + [0] * EPOCHS
            else:
                slot, record = found
                if self._live(record, now) >= self.share:
                    return Verdict.FLOOD
            newest = record[1]
            if epoch > newest:
                for skipped in range(newest + 1, min(epoch, newest + EPOCHS) + 1):
                    record[2 + skipped % EPOCHS] = 0
                record[1] = epoch
            record[2 + epoch % EPOCHS] += 1
            _RECORD.pack_into(table, slot, *record)
            return Verdict.FIRST_USE

    def _place(self, jkt: str) -> tuple[int, int, int]:
        return place(self._secret, jkt, self._buckets)

    def _find(
        self, table: mmap.mmap, fingerprint: int, first: int, second: int, now: float
    ) -> tuple[int, list[int]] | None:
        """The key's live record and its byte offset, if it has one."""
        current = int(now // self.epoch_seconds)
        for bucket in (first, second):
            base = bucket * _BUCKET.size
            values = _BUCKET.unpack_from(table, base)
            for index in range(BUCKET):
                at = index * _FIELDS
                if values[at] == fingerprint and values[at + 1] >= current:
                    return base + index * _RECORD.size, list(values[at : at + _FIELDS])
        return None

    def _free_slot(self, table: mmap.mmap, first: int, second: int, current: int) -> int | None:
        """A never-used or wholly expired record in the emptier of the two buckets."""
        best: int | None = None
        best_free = 0
        for bucket in (first, second):
            base = bucket * _BUCKET.size
            values = _BUCKET.unpack_from(table, base)
            free = [
                i for i in range(BUCKET) if values[i * _FIELDS] == 0 or values[i * _FIELDS + 1] < current
            ]
            if len(free) > best_free:
                best, best_free = base + free[0] * _RECORD.size, len(free)
        return best

    def _live(self, record: list[int], now: float) -> int:
        """Entries counted for the epochs that have not wholly passed."""
        current = int(now // self.epoch_seconds)
        newest = record[1]
        oldest = max(current, newest - EPOCHS + 1)
        return sum(record[2 + epoch % EPOCHS] for epoch in range(oldest, newest + 1))



def shares_for(dpop: DPoPSettings) -> KeyShares:
    """Key shares sized for these settings, for a store kept elsewhere (Redis): the gunicorn
    master makes the pod's one (jose.prefork), so every worker counts in the same map."""
    return KeyShares(dpop.replay_capacity, dpop.iat_offset + dpop.iat_leeway)
