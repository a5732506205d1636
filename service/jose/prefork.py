"""What the gunicorn master makes before it forks, so that every worker shares it.

The hand-off is explicit: the master calls ``hand_to_workers(make(settings))`` (gunicorn.conf.py,
``on_starting``); each worker inherits this module's memory through fork, and the composition root
reads it back with ``from_master()``. Outside gunicorn there is no master and each app makes its own.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from ..config import DPoPSettings
from . import nonce
from .key_shares import KeyShares
from .key_shares import shares_for
from .replay import ReplayStore
from .replay_table import table_for


@dataclass(frozen=True, slots=True)
class Prefork:
    """Pod-wide state: made once in the master, mapped or inherited by every worker."""

    #: The DPoP replay table (RFC 9449 §11.1) every worker of the pod maps; None without DPoP,
    #: and with a Redis store (AUTH0_DPOP_REPLAY_URL) unless it fails open to this table.
    replay: ReplayStore | None = None
    #: With a Redis store: the per-key shares every worker of the pod counts in.
    shares: KeyShares | None = None


_from_master: Prefork | None = None


def make(dpop: DPoPSettings) -> Prefork:
    """Build the pod-wide state for these settings (call it in the master, before the fork)."""
    if not dpop.enabled:
        return Prefork()
    if dpop.nonce:
        # The nonce secret travels in the environment, not in Prefork: gunicorn's USR2 upgrade
        # re-executes the master with this environment, so the new generation of workers derives
        # the same nonces and the nonces clients hold stay valid across the upgrade (RFC 9449 §9).
        nonce.ensure_secret(os.environ)
    redis = dpop.replay_store
    if redis is None:
        return Prefork(replay=table_for(dpop))
    # Redis itself is reached from the workers only, each after the fork, on first use.
    if redis.fail_open:
        table = table_for(dpop)
        return Prefork(replay=table, shares=table.shares)
    return Prefork(shares=shares_for(dpop))


def hand_to_workers(state: Prefork) -> None:
    """Keep ``state`` in this process's memory for the workers forked from it."""
    global _from_master
    _from_master = state


def from_master() -> Prefork | None:
    """What the gunicorn master handed over before forking this worker (None outside gunicorn)."""
    return _from_master
