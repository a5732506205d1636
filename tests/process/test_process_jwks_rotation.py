"""Key rotation through a real gunicorn worker and the real dev issuer: no false 401s.

While a JWKS fetch of a healthy issuer is in flight, a request with an unknown kid joins it and
gets its answer (200 or 401), or 503 ``temporarily_unavailable`` with ``Retry-After`` when the
worker's waiting seats are taken; never a 401 before the fetch has ended. The rule is stated in
docs/jwks-cache.md.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

import pytest

from tests.support.helpers import parallel
from tests.support.helpers import warm
from tests.support.issuer import LocalIssuer
from tests.support.procs import Response
from tests.support.procs import ServerFactory
from tests.support.procs import metric_sum

pytestmark = pytest.mark.slow

#: Long enough that every concurrent request of a round arrives while the fetch is in flight.
ROUND_DELAY = 1.0
#: The slow fetch of the black-box rule: requests arriving meanwhile must not get a 401.
SLOW_FETCH = 5.0


@dataclass(frozen=True)
class Answer:
    """One response with the monotonic time it was fully received."""

    kind: str
    response: Response
    received: float


def _assert_pending(resp: Response) -> None:
    """A 503 temporarily_unavailable with an integer Retry-After: the service cannot tell yet."""
    assert resp.status == 503, (resp.status, resp.body[:300])
    assert resp.json()["error"] == "temporarily_unavailable", resp.body[:300]
    retry_after = resp.header("Retry-After")
    assert retry_after is not None and retry_after.isdigit(), resp.headers


@pytest.mark.parametrize(
    "threads, concurrent",
    [(None, 2), ("8", 3)],
    ids=["default_threads_2_requests", "8_threads_3_requests"],
)
def test_concurrent_requests_with_a_newly_published_kid_all_get_200(
    issuer: LocalIssuer, gunicorn: ServerFactory, threads: str | None, concurrent: int
) -> None:
    """Five rotations in a row: every request signed with the new key gets 200, one fetch each."""
    env = {"AUTH0_JWKS_COOLDOWN": "0", "AUTH0_HTTP_TIMEOUT": "5", "GUNICORN_THREADS": threads}
    server = gunicorn(issuer, workers=1, env=env)
    warm(server, issuer, 1)
    # The fetch each round's first request starts stays in flight while its siblings arrive.
    issuer.delay = ROUND_DELAY
    for round_no in range(5):
        issuer.rotate(keep_old=True)
        token = issuer.mint()
        before = issuer.jwks_fetches
        barrier = threading.Barrier(concurrent)

        def call(_: int, token: str = token, barrier: threading.Barrier = barrier) -> Response:
            barrier.wait()
            return server.get("/api/private", token=token, timeout=30)

        answers = parallel(call, concurrent, concurrency=concurrent)
        got = [(resp.status, resp.json().get("error_description")) for resp in answers]
        assert [status for status, _ in got] == [200] * concurrent, (round_no, got)
        assert issuer.jwks_fetches == before + 1, "the requests of a round shared one fetch"


def test_unknown_kids_during_a_slow_fetch_get_its_answer_or_503_never_an_early_401(
    issuer: LocalIssuer, gunicorn: ServerFactory
) -> None:
    """A 5 s fetch in flight: unknown kids get 200, 401 after it, or 503; cached tokens are served."""
    env = {"AUTH0_JWKS_COOLDOWN": "0", "AUTH0_HTTP_TIMEOUT": "8"}
    server = gunicorn(issuer, workers=1, env=env)
    warm(server, issuer, 1)
    cached = issuer.mint()
    assert server.get("/api/private", token=cached).status == 200
    stranger = issuer.new_key()
    issuer.delay = SLOW_FETCH
    issuer.rotate(keep_old=True)
    rotated = issuer.mint()
    answers: list[Answer] = []
    lock = threading.Lock()
    triggered = time.monotonic()
    # The fetch starts after this moment, so it cannot end before fetch_ends_after.
    fetch_ends_after = triggered + SLOW_FETCH
    stop = threading.Event()

    def client(kind: str, make_token: Callable[[int], str]) -> None:
        i = 0
        while not stop.is_set():
            resp = server.get("/api/private", token=make_token(i), timeout=30)
            with lock:
                answers.append(Answer(kind, resp, time.monotonic()))
            i += 1
            time.sleep(0.05)  # a client pause, so the 503s do not spin the two shared cores

    clients = [threading.Thread(target=client, args=("rotated", lambda i: rotated))]
    clients += [
        threading.Thread(
            target=client, args=("stranger", lambda i, n=n: issuer.mint(key=stranger, kid=f"s-{n}-{i}"))
        )
        for n in range(4)
    ]
    clients.append(threading.Thread(target=client, args=("cached", lambda i: cached)))
    for thread in clients:
        thread.start()
    # Run the clients through the whole fetch and a little past it.
    time.sleep(SLOW_FETCH + 1.0)
    stop.set()
    for thread in clients:
        thread.join(timeout=30)
    issuer.delay = 0.0

    early = [a for a in answers if a.response.status == 401 and a.received < fetch_ends_after]
    assert not early, [(a.kind, a.received - triggered) for a in early]
    for answer in answers:
        status = answer.response.status
        if answer.kind == "cached":
            assert status == 200, (answer.kind, status, answer.response.body[:200])
        elif answer.kind == "rotated":
            assert status in (200, 503), (status, answer.response.body[:200])
        else:
            assert status in (401, 503), (status, answer.response.body[:200])
        if status == 503:
            _assert_pending(answer.response)
    kinds = {(a.kind, a.response.status) for a in answers}
    assert ("rotated", 200) in kinds, "the rotated key was never accepted"
    # The worker kept threads for tokens it already knows while the fetch was hanging.
    assert any(a.kind == "cached" and a.received < fetch_ends_after for a in answers)
    assert ("stranger", 503) in kinds, "more unknown kids waited than the worker has seats"


def test_unknown_kid_inside_the_cooldown_is_refused_at_once_without_a_fetch(
    issuer: LocalIssuer, gunicorn: ServerFactory
) -> None:
    """After a successful fetch, within AUTH0_JWKS_COOLDOWN: 401 unknown key, no fetch, no 503."""
    server = gunicorn(issuer, workers=1, env={"AUTH0_JWKS_COOLDOWN": "600"})
    warm(server, issuer, 1)
    before = issuer.jwks_fetches
    # Were the refusal to wait for a fetch, this one would hang past the client's timeout.
    issuer.delay = 60.0
    try:
        tokens = [issuer.mint(key=issuer.new_key(), kid=f"unknown-{i}") for i in range(3)]
        for token in tokens:
            resp = server.get("/api/private", token=token, timeout=5)
            assert resp.status == 401, (resp.status, resp.body[:200])
            assert "unknown key" in resp.json()["error_description"]
    finally:
        issuer.delay = 0.0
    assert issuer.jwks_fetches == before
    assert metric_sum(server.metrics(), "auth_decisions_total", reason="unknown_kid") == 3


def test_unknown_kid_while_the_issuer_fails_is_503_with_retry_after_1(
    issuer: LocalIssuer, gunicorn: ServerFactory
) -> None:
    """The last fetch failed: a known kid still gets 200, an unknown one 503 (never a 401)."""
    env = {"AUTH0_JWKS_COOLDOWN": "0", "AUTH0_JWKS_TTL": "1", "AUTH0_JWKS_RETRY": "30"}
    server = gunicorn(issuer, workers=1, env=env)
    warm(server, issuer, 1)
    known = issuer.mint()
    issuer.serve_raw(b"unavailable", 503)
    assert server.wait_for_record(lambda r: r.get("event") == "jwks_fetch_failed", timeout=10)
    assert server.get("/api/private", token=known).status == 200
    resp = server.get("/api/private", token=issuer.mint(key=issuer.new_key(), kid="unknown"))
    _assert_pending(resp)
    assert resp.header("Retry-After") == "1"
    assert metric_sum(server.metrics(), "auth_decisions_total", reason="keys_pending") == 1
