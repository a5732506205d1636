"""The replay table: single use across processes, an entry lives exactly as long as its proof, and
no key's proofs ever change the verdict on another key's proof."""

from __future__ import annotations

import multiprocessing
import os
import random
import sys
import threading
import time
from collections import Counter

from service.jose.key_shares import KeyShares
from service.jose.replay import Verdict
from service.jose.replay import key_share
from service.jose.replay_table import ReplayTable

NOW = 1_000_000.0
OFFSET = 300
LEEWAY = 30
LIFETIME = OFFSET + LEEWAY
#: Children forked to race their first calls.
FORKS = 150
FIRST, REPLAY, FLOOD, FULL = Verdict.FIRST_USE, Verdict.REPLAY, Verdict.FLOOD, Verdict.FULL


def table(capacity: int = 1024) -> ReplayTable:
    return ReplayTable(capacity, LIFETIME)


def test_a_jti_is_accepted_once_per_key() -> None:
    store = table()
    assert store.first_use("key-a", "jti-1", NOW + 300, NOW) is FIRST
    assert store.first_use("key-a", "jti-1", NOW + 300, NOW) is REPLAY
    assert store.first_use("key-b", "jti-1", NOW + 300, NOW) is FIRST


def test_an_entry_lives_exactly_until_its_expiry() -> None:
    store = table()
    expiry = NOW + OFFSET + LEEWAY  # a proof dated now + leeway: its iat check accepts it until then
    assert store.first_use("k", "jti", expiry, NOW) is FIRST
    for later in (NOW + 1, NOW + OFFSET, expiry - 0.001, expiry):
        assert store.first_use("k", "jti", expiry, later) is REPLAY, later - NOW
    assert store.first_use("k", "jti", expiry + 300, expiry + 0.001) is FIRST


def test_a_flood_from_one_key_never_refuses_another_key() -> None:
    capacity = 1024
    store = table(capacity)
    flood = [store.first_use("flooder", f"f-{i}", NOW + 25 + OFFSET, NOW) for i in range(3000)]
    counts = Counter(flood)
    assert counts[FIRST] == key_share(capacity) and counts[FLOOD] == 3000 - key_share(capacity)
    # Every other key, old proofs and fresh ones alike, is answered as if the flood never was.
    others = [store.first_use(f"key-{n}", "jti", NOW + OFFSET - n % 300, NOW) for n in range(200)]
    assert set(others) == {FIRST}


def test_a_key_gets_its_share_whatever_its_proofs_are_dated() -> None:
    store = table()
    rng = random.Random(3)
    flood = [store.first_use("f", str(i), NOW + rng.uniform(0, LIFETIME), NOW) for i in range(3000)]
    assert flood.count(FIRST) == key_share(1024)


def test_the_flooding_key_still_gets_replays_refused_as_replays() -> None:
    store = table()
    accepted = [f"f-{i}" for i in range(5000) if store.first_use("f", f"f-{i}", NOW + 325, NOW) is FIRST]
    assert accepted
    assert {store.first_use("f", jti, NOW + 325, NOW + 10) for jti in accepted} == {REPLAY}


def test_a_key_past_its_share_gets_room_again_as_its_entries_expire() -> None:
    store = table()
    share = key_share(1024)
    assert {store.first_use("k", str(i), NOW + 10, NOW) for i in range(share)} == {FIRST}
    assert store.first_use("k", "one-more", NOW + 300, NOW) is FLOOD
    # Refused, so not recorded: once room comes back (while it is still acceptable), it is
    # accepted, once.
    later = NOW + 10 + 2 * store.shares.epoch_seconds
    assert store.first_use("k", "one-more", NOW + 300, later) is FIRST
    assert store.first_use("k", "one-more", NOW + 300, later) is REPLAY


def test_future_dated_proofs_never_change_what_happens_to_other_keys() -> None:
    rng = random.Random(7)
    innocent = [(f"key-{rng.randrange(40)}", f"jti-{rng.randrange(60)}") for _ in range(400)]

    def verdicts(store: ReplayTable) -> list[Verdict]:
        out = []
        for step, (jkt, jti) in enumerate(innocent):
            now = NOW + step * 0.5
            out.append(store.first_use(jkt, jti, now + OFFSET - step % 7, now))
        return out

    quiet = verdicts(table())
    flooded = table()
    for i in range(5000):  # the longest-lived proofs there are, from one key
        flooded.first_use("attacker", f"a-{i}", NOW + OFFSET + LEEWAY, NOW)
    assert verdicts(flooded) == quiet


def test_random_traffic_never_accepts_a_proof_twice_and_refuses_only_past_a_share() -> None:
    """Property: against a model of live entries, REPLAY iff live; FLOOD only past the share."""
    capacity = 1024
    share = key_share(capacity)
    for seed in range(4):
        rng = random.Random(seed)
        store = table(capacity)
        width = store.shares.epoch_seconds
        live: dict[tuple[str, str], float] = {}
        accepted: list[tuple[str, float]] = []
        now = NOW
        for _ in range(6000):
            now += rng.choice((0.0, 0.01, 0.1, 1.0))
            jkt = "heavy" if rng.random() < 0.5 else f"key-{rng.randrange(30)}"
            jti = str(rng.randrange(1000))
            expires = now + rng.uniform(-OFFSET, LEEWAY) + OFFSET
            verdict = store.first_use(jkt, jti, expires, now)
            known = live.get((jkt, jti))
            if known is not None and known >= now:
                assert verdict is REPLAY, (seed, jkt, jti)
                continue
            assert verdict in (FIRST, FLOOD), (seed, verdict)
            if verdict is FLOOD:
                # Counted by epoch: entries whose expiry epoch has not wholly passed.
                held = sum(1 for k, e in accepted if k == jkt and e // width >= now // width)
                assert held >= share, (seed, jkt, held)
            else:
                live[(jkt, jti)] = expires
                accepted.append((jkt, expires))
                # ...and a key never holds more than its share.
                assert sum(1 for k, e in accepted if k == jkt and e >= now) <= share, seed


def test_a_flood_of_unique_proofs_never_lets_an_earlier_one_through_again() -> None:
    capacity = 1024
    store = table(capacity)
    first = [(f"key-{i % 100}", f"early-{i}") for i in range(capacity // 2)]
    for index, (jkt, jti) in enumerate(first):
        assert store.first_use(jkt, jti, NOW + 300 + index * 0.001, NOW) is FIRST
    for index in range(20 * capacity):
        store.first_use(f"flood-{index % 7}", f"flood-{index}", NOW + 330, NOW)
    replays = {store.first_use(k, j, NOW + 300 + i * 0.001, NOW + 5) for i, (k, j) in enumerate(first)}
    assert replays == {REPLAY}


def test_four_flooding_keys_still_leave_room_for_the_others() -> None:
    store = table(1024)
    for attacker in range(4):
        for i in range(1000):
            store.first_use(f"attacker-{attacker}", str(i), NOW + 330, NOW)
    assert {store.first_use(f"key-{n}", "jti", NOW + 300, NOW) for n in range(100)} == {FIRST}


def test_a_full_table_refuses_new_proofs_without_forgetting_old_ones() -> None:
    store = table(1024)
    verdicts = [store.first_use(f"key-{n}", str(i), NOW + 300, NOW) for n in range(64) for i in range(64)]
    accepted = verdicts.count(FIRST)
    assert accepted <= 1024 and FULL in verdicts
    replays = [store.first_use(f"key-{n}", str(i), NOW + 300, NOW) for n in range(64) for i in range(64)]
    assert [r is REPLAY for r in replays] == [v is FIRST for v in verdicts]


def _use_in_child(store: ReplayTable, jti: str, results: multiprocessing.Queue) -> None:
    now = time.time()
    results.put(store.first_use("k", jti, now + 300, now).value)


def test_a_proof_used_in_one_forked_process_is_refused_in_another() -> None:
    store = table()  # created before the fork, as the gunicorn master does
    ctx = multiprocessing.get_context("fork")
    results = ctx.Queue()
    child = ctx.Process(target=_use_in_child, args=(store, "shared-jti", results))
    child.start()
    child.join(30)
    assert results.get(timeout=5) == "first_use"
    now = time.time()
    assert store.first_use("k", "shared-jti", now + 300, now) is REPLAY
    second = ctx.Process(target=_use_in_child, args=(store, "shared-jti", results))
    second.start()
    second.join(30)
    assert results.get(timeout=5) == "replay"


def _race_in_child(store: ReplayTable, results: multiprocessing.Queue) -> None:
    sys.setswitchinterval(1e-6)  # switch threads as often as possible: races show up
    now = time.time()
    outcomes: list[str] = []
    start = threading.Barrier(8)
    # The table is shared with the parent and the other children: a key of this child's own.
    jkt = f"raced-{os.getpid()}"

    def use() -> None:
        start.wait()
        outcomes.append(store.first_use(jkt, "jti", now + 300, now).value)

    threads = [threading.Thread(target=use) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    results.put(outcomes.count("first_use"))


def test_the_first_callers_after_a_fork_share_one_lock() -> None:
    # Each child's first calls are the ones that could race for a lock of their own.
    store = table()
    ctx = multiprocessing.get_context("fork")
    results = ctx.Queue()
    for _ in range(FORKS):
        child = ctx.Process(target=_race_in_child, args=(store, results))
        child.start()
        child.join(60)
    assert [results.get(timeout=5) for _ in range(FORKS)] == [1] * FORKS  # one winner each


def _while_parent_holds_the_lock(store: ReplayTable, results: multiprocessing.Queue) -> None:
    # Renewed by the fork itself, before any caller: nothing is left for first callers to race.
    results.put("held" if store._map._thread_lock.locked() else "free")
    now = time.time()
    results.put(store.first_use("k", "after-fork", now + 300, now).value)


def test_a_child_forked_while_a_thread_held_the_lock_is_not_blocked() -> None:
    store = table()
    ctx = multiprocessing.get_context("fork")
    results = ctx.Queue()
    with store._map._thread_lock:  # another thread of the parent is mid-check when it forks
        child = ctx.Process(target=_while_parent_holds_the_lock, args=(store, results))
        child.start()
        outcome = results.get(timeout=10), results.get(timeout=10)
    child.join(10)
    assert outcome == ("free", "first_use")


def test_memory_is_fixed_by_the_capacity() -> None:
    store = table(4096)
    size = len(store._map.buffer) + len(store.shares._map.buffer)
    for index in range(50_000):
        store.first_use(f"k{index % 300}", str(index), NOW + 300, NOW)
    assert len(store._map.buffer) + len(store.shares._map.buffer) == size
    assert size <= 4096 * 16 + 4096 // 4 * 44


def test_key_shares_alone_count_one_key_up_to_its_share() -> None:
    # How a store without a table of its own (Redis) keeps each key to its share.
    shares = KeyShares(1024, LIFETIME)
    assert not shares.over_share("k", NOW)
    assert {shares.admit("k", NOW + 300, NOW) for _ in range(key_share(1024))} == {FIRST}
    assert shares.over_share("k", NOW) and not shares.over_share("other", NOW)
    assert shares.admit("k", NOW + 300, NOW) is FLOOD
    assert shares.admit("other", NOW + 300, NOW) is FIRST
    later = NOW + 300 + 2 * shares.epoch_seconds
    assert not shares.over_share("k", later)
