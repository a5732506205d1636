"""The replay store: single use across processes, bounded memory, never a second acceptance."""

from __future__ import annotations

import multiprocessing
import time

from service.jose.replay import PROBE
from service.jose.replay import ReplayStore

NOW = 1_000_000.0


def test_a_jti_is_accepted_once_per_key() -> None:
    store = ReplayStore(1024)
    assert store.first_use("key-a", "jti-1", NOW + 300, NOW)
    assert not store.first_use("key-a", "jti-1", NOW + 300, NOW)
    assert store.first_use("key-b", "jti-1", NOW + 300, NOW)


def test_an_entry_is_forgotten_once_its_window_has_passed() -> None:
    store = ReplayStore(1024)
    assert store.first_use("k", "jti", NOW + 10, NOW)
    assert not store.first_use("k", "jti", NOW + 10, NOW + 9)
    assert store.first_use("k", "jti", NOW + 30, NOW + 11)


def _use_in_child(store: ReplayStore, jti: str, results: multiprocessing.Queue) -> None:
    results.put(store.first_use("k", jti, time.time() + 300))


def test_a_proof_used_in_one_forked_process_is_refused_in_another() -> None:
    store = ReplayStore(1024)  # created before the fork, as the gunicorn master does
    ctx = multiprocessing.get_context("fork")
    results = ctx.Queue()
    child = ctx.Process(target=_use_in_child, args=(store, "shared-jti", results))
    child.start()
    child.join(30)
    assert results.get(timeout=5) is True
    assert not store.first_use("k", "shared-jti", time.time() + 300)
    second = ctx.Process(target=_use_in_child, args=(store, "shared-jti", results))
    second.start()
    second.join(30)
    assert results.get(timeout=5) is False


def test_a_flood_of_unique_proofs_never_lets_an_evicted_one_through_again() -> None:
    capacity = 1024
    store = ReplayStore(capacity)
    first = [f"early-{i}" for i in range(capacity)]
    for index, jti in enumerate(first):
        assert store.first_use("k", jti, NOW + 300 + index * 0.001, NOW)
    for index in range(20 * capacity):
        store.first_use("k", f"flood-{index}", NOW + 400, NOW)
    # Some early entries were evicted; every one of them must still be refused (by the floor).
    replays = [store.first_use("k", jti, NOW + 300 + i * 0.001, NOW) for i, jti in enumerate(first)]
    assert not any(replays)
    # A fresh proof whose window ends after the floor is still accepted.
    assert store.first_use("k", "fresh", NOW + 401, NOW)


def test_memory_is_fixed_by_the_capacity() -> None:
    store = ReplayStore(4096)
    size = len(store._map)
    for index in range(50_000):
        store.first_use("k", str(index), NOW + 300, NOW)
    assert len(store._map) == size == 16 + (4096 + PROBE) * 16
