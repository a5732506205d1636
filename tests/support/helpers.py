"""Small helpers shared by the process-level tests."""

from __future__ import annotations

import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

from tests.support.issuer import LocalIssuer
from tests.support.procs import Response
from tests.support.procs import Server

T = TypeVar("T")


def parallel(fn: Callable[[int], T], n: int, *, concurrency: int = 25) -> list[T]:
    """Run fn(0..n-1) on a thread pool and return the results in order."""
    with ThreadPoolExecutor(max_workers=concurrency) as pool:
        return list(pool.map(fn, range(n)))


def get_many(server: Server, path: str, tokens: list[str | None], *, concurrency: int = 25) -> list[Response]:
    """GET `path` once per token, in parallel, each on its own connection."""
    return parallel(lambda i: server.get(path, token=tokens[i]), len(tokens), concurrency=concurrency)


def statuses(responses: list[Response]) -> list[int]:
    """Just the status codes."""
    return [r.status for r in responses]


def warm(server: Server, issuer: LocalIssuer, workers: int, *, timeout: float = 15.0) -> None:
    """Send parallel valid requests until every worker has fetched the key set at least once.

    The kernel does not spread connections evenly, so a fixed number of requests can leave a
    worker cold; each worker's jwks_fetches_total in its own multiprocess file says for sure.
    """
    token = issuer.mint()
    deadline = time.monotonic() + timeout
    fetched: dict[int, float] = {}
    while time.monotonic() < deadline:
        got = statuses(get_many(server, "/api/private", [token] * 10 * workers, concurrency=10))
        assert set(got) == {200}, (got, denials(server))
        fetched = server.per_worker("jwks_fetches_total", outcome="success")
        if len(fetched) == workers and all(v >= 1 for v in fetched.values()):
            return
    raise AssertionError(f"not every worker fetched the key set: {fetched}")


def eventually(check: Callable[[], bool], *, timeout: float, interval: float = 0.1) -> bool:
    """Poll `check` until it is true or `timeout` seconds pass."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(interval)
    return check()


def denials(server: Server) -> list[dict[str, object]]:
    """The service's deny decisions and non-info records so far (for assertion messages)."""
    return [
        r for r in server.records() if r.get("outcome") == "deny" or r.get("level") not in ("info", "debug")
    ][-20:]
