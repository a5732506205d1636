"""Request ids: 32 hex digits from a random per-process prefix and a counter."""

from __future__ import annotations

import itertools
import os
import secrets

_ids: tuple[int, str, itertools.count[int]] | None = None


def new_request_id() -> str:
    """A fresh request id.

    As unique as a uuid4 in practice without a getrandom() syscall per request; the prefix is
    drawn again in a forked child so workers never share a sequence.
    """
    global _ids
    ids = _ids
    if ids is None or ids[0] != os.getpid():
        ids = _ids = (os.getpid(), secrets.token_hex(8), itertools.count())
    return f"{ids[1]}{next(ids[2]):016x}"
