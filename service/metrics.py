"""Prometheus metric definitions, correct across gunicorn workers (prometheus_client multiprocess mode).

``PROMETHEUS_MULTIPROC_DIR`` must be in the environment before this module is imported:
prometheus_client picks its value store at import (gunicorn.conf.py guarantees it).
Labels are route templates and bounded enums only, never raw paths, subjects or clients.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING
from typing import Any

from prometheus_client import Counter
from prometheus_client import Gauge
from prometheus_client import Histogram

if TYPE_CHECKING:
    from .jose.jwks_cache import FetchEvent

_LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
#: A fetch is a network round trip or two, bounded by AUTH0_HTTP_TIMEOUT (at most 60 s each).
_FETCH_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)

AUTH_DECISIONS = Counter(
    "auth_decisions_total",
    "Authorization decisions on protected routes.",
    ["route", "outcome", "reason", "scheme"],
)
AUTH_DURATION = Histogram(
    "auth_decision_duration_seconds",
    "Time to reach an authorization decision (header parse to allow/deny).",
    ["route"],
    buckets=_LATENCY_BUCKETS,
)
JWKS_FETCHES = Counter(
    "jwks_fetches_total",
    "JWKS (and discovery) fetch attempts by outcome and trusted issuer.",
    ["outcome", "issuer"],
)
# JWKS gauges are labelled by issuer: bounded by configuration, never by client input.
JWKS_FETCH_DURATION = Histogram(
    "jwks_fetch_duration_seconds",
    "Time one JWKS fetch (discovery included) took, successful or not.",
    ["issuer"],
    buckets=_FETCH_BUCKETS,
)
# "max" across workers: the freshest success any worker of this instance has had (0 = never).
JWKS_LAST_SUCCESS = Gauge(
    "jwks_last_success_timestamp_seconds",
    "Unix time of the last successful JWKS fetch (0 = none yet).",
    ["issuer"],
    multiprocess_mode="max",
)
JWKS_KEYS = Gauge(
    "jwks_keys", "Usable keys in the current JWKS.", ["issuer"], multiprocess_mode="max"
)
TOKEN_CACHE = Counter(
    "token_cache_requests_total",
    "Verified-token cache lookups: hit (no signature check) or miss.",
    ["result"],
)
BUILD_INFO = Gauge(
    "service_build_info",
    "Always 1; the labels say which build is running.",
    ["version", "revision"],
    multiprocess_mode="max",
)
HTTP_REQUESTS = Counter(
    "http_requests_total", "HTTP requests by route template, method and status.",
    ["route", "method", "status"],
)
HTTP_DURATION = Histogram(
    "http_request_duration_seconds",
    "HTTP request latency by route template and method.",
    ["route", "method"],
    buckets=_LATENCY_BUCKETS,
)
GATEWAY_HEADERS_OMITTED = Counter(
    "gateway_claim_headers_omitted_total",
    "Identity or claim headers left out of a gateway allow: the value was unfit for a header.",
    ["header"],
)

#: Methods counted by name; anything else is "other" so clients cannot mint label values.
#: One Redis round trip on loopback is ~50 µs, across a zone ~1 ms; AUTH0_DPOP_REPLAY_TIMEOUT caps it.
_REPLAY_STORE_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25)
DPOP_REPLAY_STORE = Counter(
    "dpop_replay_store_requests_total",
    "Shared DPoP replay store (Redis) requests: first (recorded), replay (seen before) or error.",
    ["result"],
)
DPOP_REPLAY_STORE_DURATION = Histogram(
    "dpop_replay_store_duration_seconds",
    "Round trip of one shared DPoP replay store command, answered or timed out.",
    ["store"],
    buckets=_REPLAY_STORE_BUCKETS,
)

_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})


def _resolver(metric: Any) -> Callable[..., Any]:
    """Return a memoised ``metric.labels``: resolving a label set once saves a lock per call."""
    children: dict[tuple[str, ...], Any] = {}

    def child(*labels: str) -> Any:
        found = children.get(labels)
        if found is None:
            found = children[labels] = metric.labels(*labels)
        return found

    return child


auth_decision = _resolver(AUTH_DECISIONS)
auth_duration = _resolver(AUTH_DURATION)
jwks_fetch = _resolver(JWKS_FETCHES)
http_request = _resolver(HTTP_REQUESTS)
http_duration = _resolver(HTTP_DURATION)
gateway_header_omitted = _resolver(GATEWAY_HEADERS_OMITTED)
_token_cache_hit = TOKEN_CACHE.labels("hit")
_token_cache_miss = TOKEN_CACHE.labels("miss")


def token_cache_lookup(hit: bool) -> None:
    """Count one verified-token cache lookup."""
    (_token_cache_hit if hit else _token_cache_miss).inc()


def jwks_fetched(event: FetchEvent) -> None:
    """Record one JWKS fetch: outcome, duration, keys held after it, time of a success."""
    jwks_fetch(event.outcome, event.issuer).inc()
    JWKS_FETCH_DURATION.labels(event.issuer).observe(event.duration)
    JWKS_KEYS.labels(event.issuer).set(event.keys)
    if event.outcome == "success":
        JWKS_LAST_SUCCESS.labels(event.issuer).set_to_current_time()


def method_label(method: str) -> str:
    """A method as a bounded label: known verbs by name, anything else ``other``."""
    return method if method in _METHODS else "other"


def count_unmatched(method: str, status: int) -> None:
    """Count a request answered before routing (gunicorn's parser or the worker's limits)."""
    http_request("unmatched", method_label(method), str(status)).inc()


def precreate(version: str, revision: str) -> None:
    """Pre-create the always-present series: token-cache lookups and the build info."""
    _token_cache_hit.inc(0)
    _token_cache_miss.inc(0)
    BUILD_INFO.labels(version, revision).set(1)


_replay_store_request = _resolver(DPOP_REPLAY_STORE)
_replay_store_duration = _resolver(DPOP_REPLAY_STORE_DURATION)


def track_replay_store() -> None:
    """Pre-create the replay store's series (first, replay, error at 0) when Redis is configured."""
    for result in ("first", "replay", "error"):
        _replay_store_request(result).inc(0)
    _replay_store_duration("redis")


def replay_store_request(result: str, duration: float | None) -> None:
    """Count one replay store request and time its round trip (None: not sent, backing off)."""
    _replay_store_request(result).inc()
    if duration is not None:
        _replay_store_duration("redis").observe(duration)


def track_issuer(issuer: str) -> None:
    """Pre-create an issuer's JWKS series: 0 keys and no success yet, until a fetch succeeds."""
    for outcome in ("success", "error"):
        jwks_fetch(outcome, issuer)
    JWKS_KEYS.labels(issuer).set(0)
    JWKS_LAST_SUCCESS.labels(issuer).set(0)
    JWKS_FETCH_DURATION.labels(issuer)
