"""The Redis replay store against a real redis-server: keys, expiry, atomicity, outages, fail-open."""

from __future__ import annotations

import hashlib
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import pytest

from service.config import default_replay_prefix as default_prefix
from service.jose.key_shares import KeyShares
from service.jose.replay import Verdict
from service.jose.replay_redis import RedisReplayStore
from service.jose.replay_redis import StateChange
from service.jose.replay_redis import StoreEvent
from tests.support.redis_server import RedisServer

JKT = "NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs"
#: Generous: a loaded test machine must not turn a slow answer into an outage; the pause test
#: sets its own short timeout.
TIMEOUT = 2.0


@pytest.fixture(scope="module")
def shared_redis() -> Iterator[RedisServer]:
    """One server for the tests that leave it running (each uses its own key prefix)."""
    with RedisServer() as server:
        yield server


@pytest.fixture
def own_redis() -> Iterator[RedisServer]:
    """A server this test may stop, pause or restart."""
    with RedisServer() as server:
        yield server


_stores: list[RedisReplayStore] = []


@pytest.fixture(autouse=True)
def close_stores() -> Iterator[None]:
    """Every store a test made is closed after it (no socket left to the garbage collector)."""
    yield
    while _stores:
        _stores.pop().close()


class Recorder:
    """Collects the store's request events and state changes."""

    def __init__(self) -> None:
        self.events: list[StoreEvent] = []
        self.changes: list[StateChange] = []

    def results(self) -> list[str]:
        return [e.result for e in self.events]


def make_store(server: RedisServer, recorder: Recorder | None = None, **options: object) -> RedisReplayStore:
    recorder = recorder or Recorder()
    prefix = options.pop("prefix", f"test-{time.monotonic_ns()}")
    store = RedisReplayStore(
        server.url,
        password=options.pop("password", server.password),  # type: ignore[arg-type]
        timeout=options.pop("timeout", TIMEOUT),  # type: ignore[arg-type]
        prefix=str(prefix),
        on_request=recorder.events.append,
        on_state=recorder.changes.append,
        **options,  # type: ignore[arg-type]
    )
    _stores.append(store)
    return store


def test_first_use_then_replay_with_one_hashed_namespaced_key(shared_redis: RedisServer) -> None:
    recorder = Recorder()
    store = make_store(shared_redis, recorder, prefix="dpop-jti:abc")
    now = time.time()
    jti = "the-jti-value"
    assert store.first_use(JKT, jti, now + 60, now) is Verdict.FIRST_USE
    assert store.first_use(JKT, jti, now + 60, now) is Verdict.REPLAY
    assert store.first_use(JKT, "another", now + 60, now) is Verdict.FIRST_USE
    keys = sorted(shared_redis.client().keys("dpop-jti:abc:*"))
    assert len(keys) == 2
    for key in keys:
        prefix, digest = key.rsplit(":", 1)
        assert prefix == "dpop-jti:abc" and len(digest) == 64
        assert jti not in key and JKT not in key and "another" not in key
    expected = hashlib.sha256(f"{JKT}\x00{jti}".encode()).hexdigest()
    assert f"dpop-jti:abc:{expected}" in keys
    assert recorder.results() == ["first", "replay", "first"]
    assert all(e.duration is not None and e.duration > 0 for e in recorder.events)
    assert recorder.changes == []


def test_the_same_jti_under_another_key_or_prefix_is_its_own_entry(shared_redis: RedisServer) -> None:
    now = time.time()
    store = make_store(shared_redis)
    assert store.first_use(JKT, "j", now + 60, now) is Verdict.FIRST_USE
    assert store.first_use("other-thumbprint", "j", now + 60, now) is Verdict.FIRST_USE
    assert make_store(shared_redis).first_use(JKT, "j", now + 60, now) is Verdict.FIRST_USE


def test_default_prefix_is_stable_per_audience_and_differs_between_audiences() -> None:
    assert default_prefix("https://api.example.com") == default_prefix("https://api.example.com")
    assert default_prefix("https://api.example.com") != default_prefix("https://api.other.com")
    assert ":" not in default_prefix("https://api.example.com").removeprefix("dpop-jti:")


def test_key_expires_when_the_iat_window_closes(shared_redis: RedisServer) -> None:
    client = shared_redis.client()
    store = make_store(shared_redis, prefix="ttl")
    now = time.time()
    store.first_use(JKT, "fresh", now + 60, now)  # iat = now, offset 60
    store.first_use(JKT, "future", now + 20 + 60, now)  # iat 20 s ahead
    assert 55_000 <= client.pttl(store.key(JKT, "fresh")) <= 60_000
    assert 75_000 <= client.pttl(store.key(JKT, "future")) <= 80_000
    # A proof at the very edge of its window still gets a key (never an instantly expired one).
    store.first_use(JKT, "edge", now, now)
    assert client.pttl(store.key(JKT, "edge")) > 0


def test_parallel_copies_of_one_proof_on_two_stores_yield_exactly_one_first_use(
    shared_redis: RedisServer,
) -> None:
    prefix = f"race-{time.monotonic_ns()}"
    stores = [make_store(shared_redis, prefix=prefix), make_store(shared_redis, prefix=prefix)]
    now = time.time()
    barrier = threading.Barrier(16)

    def attempt(index: int) -> Verdict:
        barrier.wait()
        return stores[index % 2].first_use(JKT, "raced", now + 60, now)

    with ThreadPoolExecutor(16) as pool:
        verdicts = list(pool.map(attempt, range(16)))
    assert verdicts.count(Verdict.FIRST_USE) == 1
    assert verdicts.count(Verdict.REPLAY) == 15


def test_stopped_redis_is_unavailable_logged_once_then_backs_off(own_redis: RedisServer) -> None:
    recorder = Recorder()
    store = make_store(own_redis, recorder)
    now = time.time()
    assert store.first_use(JKT, "before", now + 60, now) is Verdict.FIRST_USE
    own_redis.stop()
    verdicts = [store.first_use(JKT, f"down-{i}", now + 60, now) for i in range(20)]
    assert set(verdicts) == {Verdict.UNAVAILABLE}
    assert recorder.changes == [StateChange(up=False, error="ConnectionError")]
    errors = [e for e in recorder.events if e.result == "error"]
    assert len(errors) == 20
    # Backoff: after the failure that opened the outage, calls in the backoff window send nothing.
    assert sum(e.duration is not None for e in errors) < 5
    assert store.health()["status"] == "unavailable"


def test_recovers_without_a_new_store_once_redis_is_back(own_redis: RedisServer) -> None:
    recorder = Recorder()
    store = make_store(own_redis, recorder)
    now = time.time()
    own_redis.stop()
    assert store.first_use(JKT, "a", now + 60, now) is Verdict.UNAVAILABLE
    own_redis.start()
    deadline = time.monotonic() + 10
    verdict = Verdict.UNAVAILABLE
    while verdict is Verdict.UNAVAILABLE and time.monotonic() < deadline:
        verdict = store.first_use(JKT, "b", now + 60, now)
        time.sleep(0.02)
    assert verdict is Verdict.FIRST_USE
    assert recorder.changes == [
        StateChange(up=False, error="ConnectionError"),
        StateChange(up=True, error=None),
    ]
    assert store.health() == {"store": "redis", "status": "ready"}


def test_paused_redis_times_out_as_unavailable(own_redis: RedisServer) -> None:
    recorder = Recorder()
    store = make_store(own_redis, recorder, timeout=0.2)
    now = time.time()
    assert store.first_use(JKT, "warm", now + 60, now) is Verdict.FIRST_USE
    own_redis.pause()
    try:
        assert store.first_use(JKT, "stuck", now + 60, now) is Verdict.UNAVAILABLE
        assert recorder.changes == [StateChange(up=False, error="TimeoutError")]
    finally:
        own_redis.resume()
    # The late reply to the timed-out command never answers a later one.
    deadline = time.monotonic() + 10
    verdict = Verdict.UNAVAILABLE
    while verdict is Verdict.UNAVAILABLE and time.monotonic() < deadline:
        verdict = store.first_use(JKT, "stuck", now + 60, now)
        time.sleep(0.02)
    assert verdict in (Verdict.FIRST_USE, Verdict.REPLAY)
    assert store.first_use(JKT, "after", now + 60, now) is Verdict.FIRST_USE


class LocalTable:
    """The pod-local fallback: remembers (jkt, jti) pairs in a set."""

    def __init__(self) -> None:
        self.seen: set[tuple[str, str]] = set()

    def first_use(self, jkt: str, jti: str, expires_at: float, now: float) -> Verdict:
        if (jkt, jti) in self.seen:
            return Verdict.REPLAY
        self.seen.add((jkt, jti))
        return Verdict.FIRST_USE


def test_fail_open_falls_back_to_the_pod_local_store(own_redis: RedisServer) -> None:
    recorder = Recorder()
    store = make_store(own_redis, recorder, fallback=LocalTable())
    now = time.time()
    own_redis.stop()
    assert store.first_use(JKT, "x", now + 60, now) is Verdict.FIRST_USE
    assert store.first_use(JKT, "x", now + 60, now) is Verdict.REPLAY
    assert recorder.changes == [StateChange(up=False, error="ConnectionError")]
    assert store.health() == {
        "store": "redis", "fail": "open", "status": "unavailable", "error": "ConnectionError"
    }


def test_password_is_sent_and_a_wrong_one_is_unavailable() -> None:
    with RedisServer(password="pw-1") as server:
        now = time.time()
        assert make_store(server).first_use(JKT, "p", now + 60, now) is Verdict.FIRST_USE
        recorder = Recorder()
        wrong = make_store(server, recorder, password="nope")
        assert wrong.first_use(JKT, "q", now + 60, now) is Verdict.UNAVAILABLE
        assert recorder.changes == [StateChange(up=False, error="AuthenticationError")]


def test_redis_out_of_memory_is_full_and_not_an_outage(own_redis: RedisServer) -> None:
    client = own_redis.client()
    client.config_set("maxmemory-policy", "noeviction")
    client.config_set("maxmemory", str(client.info("memory")["used_memory"] + 200_000))
    recorder = Recorder()
    store = make_store(own_redis, recorder)
    now = time.time()
    verdicts = [store.first_use(JKT, f"fill-{i}", now + 60, now) for i in range(5000)]
    assert Verdict.FULL in verdicts and Verdict.FIRST_USE in verdicts
    assert recorder.changes == []
    assert store.health()["status"] == "ready"


def test_past_its_share_a_key_writes_nothing_but_replays_are_still_told_apart(
    shared_redis: RedisServer,
) -> None:
    shares = KeyShares(capacity=16, lifetime=90)  # a share of 2 live entries per key
    store = make_store(shared_redis, shares=shares)
    now = time.time()
    assert store.first_use("flooder", "one", now + 60, now) is Verdict.FIRST_USE
    assert store.first_use("flooder", "two", now + 60, now) is Verdict.FIRST_USE
    assert store.first_use("flooder", "three", now + 60, now) is Verdict.FLOOD
    assert shared_redis.client().exists(store.key("flooder", "three")) == 0
    assert store.first_use("flooder", "one", now + 60, now) is Verdict.REPLAY
    assert store.first_use(JKT, "fine", now + 60, now) is Verdict.FIRST_USE
