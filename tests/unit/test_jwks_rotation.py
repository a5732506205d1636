"""The unknown-kid rule of the JWKS cache during a key rotation, against a real local issuer.

A request with an unknown kid joins a fetch of a healthy issuer that is in flight and is answered
from its result; at most the worker's waiting seats wait, the others (and every unknown kid while
the issuer is failing) get ``KeyPending``: the service cannot tell yet. Outside a fetch and inside
the cooldown an unknown kid is unknown at once.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from typing import Any

from service.jose.jwks_cache import JWKSCache
from service.jose.jwks_cache import KeyPending
from service.jose.wait_seats import WaitSeats
from tests.support.appkit import bearer
from tests.support.appkit import client_for
from tests.support.appkit import settings_for
from tests.support.helpers import eventually
from tests.support.issuer import LocalIssuer


def cache_for(
    issuer: LocalIssuer, *, seats: WaitSeats | None = None, fetches: list[str] | None = None, **env: str
) -> JWKSCache:
    """A cache wired to the issuer with its own seats (two unless given), recording fetch outcomes."""
    record = fetches if fetches is not None else []
    return JWKSCache(
        settings_for(issuer, **env),
        on_fetch=lambda event: record.append(event.outcome),
        seats=seats if seats is not None else WaitSeats(2),
    )


def outcome(fn: Callable[[], Any]) -> Any:
    """What fn returned, or the exception it raised."""
    try:
        return fn()
    except Exception as exc:  # the caller asserts on what came back
        return exc


def at_once(n: int, fn: Callable[[int], Any]) -> list[Any]:
    """Run fn(0..n-1) in n threads released together; the results (or exceptions) in order."""
    results: list[Any] = [None] * n
    barrier = threading.Barrier(n)

    def run(i: int) -> None:
        barrier.wait()
        results[i] = outcome(lambda: fn(i))

    threads = [threading.Thread(target=run, args=(i,)) for i in range(n)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return results


#: How long a test waits for its threads to be where it wants them (generous: a loaded CI box).
HOLD_WAIT = 30
#: A fetch the issuer holds must not time out before the test lets it go.
LONG = {"AUTH0_HTTP_TIMEOUT": "60"}
_RUNNING = object()


def while_held(
    gates: list[threading.Event], n: int, fn: Callable[[int], Any], ready: Callable[[list[Any]], bool]
) -> list[Any]:
    """Run fn(0..n-1) in n threads while the issuers hold their JWKS answers (``hold_jwks``); let
    them go once ``ready(the results of the threads that ended)``. The results (or exceptions)."""
    results: list[Any] = [_RUNNING] * n

    def run(i: int) -> None:
        results[i] = outcome(lambda: fn(i))

    threads = [threading.Thread(target=run, args=(i,)) for i in range(n)]
    try:
        for thread in threads:
            thread.start()
        ended = eventually(lambda: ready([r for r in results if r is not _RUNNING]), timeout=HOLD_WAIT)
        assert ended, results
    finally:
        for gate in gates:
            gate.set()
        for thread in threads:
            thread.join()
    return results


def test_requests_arriving_during_a_kid_refresh_get_the_rotated_key() -> None:
    with LocalIssuer() as issuer:
        cache = cache_for(issuer, AUTH0_JWKS_COOLDOWN="0", **LONG)
        cache.get(issuer.current_key.kid)
        new = issuer.rotate()
        # Both wait before the refresh the first one asked for answers.
        found = while_held([issuer.hold_jwks()], 2, lambda _: cache.get(new.kid),
                           lambda _: cache.seats.taken == 2)
        assert all(key is not None and not isinstance(key, Exception) for key in found), found
        assert issuer.jwks_fetches == 2


def test_an_unknown_kid_joins_a_routine_refresh_in_flight_whatever_the_cooldown() -> None:
    with LocalIssuer() as issuer:
        cache = cache_for(issuer, AUTH0_JWKS_TTL="1", AUTH0_JWKS_COOLDOWN="600", **LONG)
        # The first fetch answers; the refresher's own refresh (a tenth of the TTL before expiry)
        # is held in flight.
        gate = issuer.hold_jwks(from_fetch=2)
        cache.get(issuer.current_key.kid)
        new = issuer.rotate()
        assert issuer.wait_for_fetches(2, timeout=HOLD_WAIT)
        fetches_while_waiting: list[int] = []

        def joined(_: list[Any]) -> bool:
            if cache.seats.taken != 1:
                return False
            fetches_while_waiting.append(issuer.jwks_fetches)
            return True

        found = while_held([gate], 1, lambda _: cache.get(new.kid), joined)
        assert found[0] is not None and not isinstance(found[0], Exception), found
        # It waited for the routine refresh and asked for none of its own.
        assert fetches_while_waiting == [2]


def test_a_kid_the_fetch_does_not_bring_is_unknown_once_it_ends() -> None:
    with LocalIssuer() as issuer:
        cache = cache_for(issuer, AUTH0_JWKS_COOLDOWN="0", **LONG)
        cache.get(issuer.current_key.kid)
        found = while_held([issuer.hold_jwks()], 2, lambda i: cache.get(f"never-published-{i}"),
                           lambda _: cache.seats.taken == 2)
        assert found == [None, None]
        assert issuer.jwks_fetches == 2


def test_past_the_seats_an_unknown_kid_is_pending_at_once_and_one_fetch_serves_the_waiters() -> None:
    with LocalIssuer() as issuer:
        cache = cache_for(issuer, seats=WaitSeats(2), AUTH0_JWKS_COOLDOWN="0", **LONG)
        cache.get(issuer.current_key.kid)
        new = issuer.rotate()
        # Four are answered while the fetch is still held: they did not wait.
        found = while_held([issuer.hold_jwks()], 6, lambda _: cache.get(new.kid),
                           lambda ended: len(ended) == 4 and cache.seats.taken == 2)
        answered = [key for key in found if not isinstance(key, Exception)]
        pending = [error for error in found if isinstance(error, KeyPending)]
        assert len(answered) == 2 and all(key is not None for key in answered), found
        assert len(pending) == 4, found
        assert issuer.jwks_fetches == 2
        # The seats are free again: the next unknown kid may wait for its own refresh.
        assert cache.get("another-unknown") is None


def test_every_issuer_of_a_worker_shares_its_seats() -> None:
    with LocalIssuer() as first, LocalIssuer() as second:
        seats = WaitSeats(1)
        caches = [cache_for(i, seats=seats, AUTH0_JWKS_COOLDOWN="0", **LONG) for i in (first, second)]
        for cache, issuer in zip(caches, (first, second), strict=True):
            cache.get(issuer.current_key.kid)
        found = while_held([first.hold_jwks(), second.hold_jwks()], 2, lambda i: caches[i].get("unknown"),
                           lambda ended: len(ended) == 1 and seats.taken == 1)
        assert sorted(type(result).__name__ for result in found) == ["KeyPending", "NoneType"], found


def test_a_failed_fetch_leaves_its_waiters_pending_not_unknown() -> None:
    with LocalIssuer() as issuer:
        cache = cache_for(issuer, AUTH0_JWKS_COOLDOWN="0", AUTH0_JWKS_RETRY="30")
        cache.get(issuer.current_key.kid)
        issuer.serve_raw(b"down", 500)
        issuer.delay = 0.3
        found = at_once(2, lambda i: cache.get(f"unknown-{i}"))
        assert all(isinstance(result, KeyPending) for result in found), found


def test_unknown_kid_inside_the_cooldown_and_outside_any_fetch_is_unknown_without_a_fetch() -> None:
    with LocalIssuer() as issuer:
        cache = cache_for(issuer, AUTH0_JWKS_COOLDOWN="600")
        cache.get(issuer.current_key.kid)
        new = issuer.rotate()
        # A request that waited for a fetch would hang here for a minute.
        issuer.delay = 60
        assert [cache.get(new.kid) for _ in range(20)] == [None] * 20
        assert issuer.jwks_fetches == 1
        issuer.delay = 0


def test_a_pending_kid_is_a_503_with_retry_after_1_not_a_401() -> None:
    with LocalIssuer() as issuer:
        client = client_for(issuer, AUTH0_JWKS_TTL="1", AUTH0_JWKS_COOLDOWN="0", AUTH0_JWKS_RETRY="30")
        assert client.get("/api/private", headers=bearer(issuer.mint())).status_code == 200
        issuer.serve_raw(b"down", 503)
        stranger = issuer.mint(key=issuer.new_key(), kid="unknown")

        def refused_pending() -> bool:
            return client.get("/api/private", headers=bearer(stranger)).status_code == 503

        assert eventually(refused_pending, timeout=HOLD_WAIT)
        response = client.get("/api/private", headers=bearer(stranger))
        assert response.status_code == 503
        assert response.headers["Retry-After"] == "1"
        assert response.get_json()["error"] == "temporarily_unavailable"
        assert "WWW-Authenticate" not in response.headers
        assert client.get("/api/private", headers=bearer(issuer.mint())).status_code == 200


def test_seats_are_half_the_threads_and_at_least_one() -> None:
    assert [WaitSeats.for_threads(n).limit for n in (1, 2, 3, 4, 8, 9)] == [1, 1, 1, 2, 4, 4]


def test_a_forked_child_has_every_seat_free() -> None:
    seats = WaitSeats(1)
    assert seats.take()
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # child: the parent's waiting threads did not come along
        os.write(write, b"1" if seats.take() else b"0")
        os._exit(0)
    os.waitpid(pid, 0)
    try:
        assert os.read(read, 1) == b"1"
    finally:
        os.close(read)
        os.close(write)
    assert not seats.take()
    seats.give_back()
    assert seats.take()
