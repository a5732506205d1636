"""The composition root: builds an app's verifier, key caches, replay store and nonces from Settings."""

from __future__ import annotations

import functools
from typing import Any

from flask import Flask
from flask import Response
from flask import g

from .. import metrics
from ..config import Settings
from ..gateway_policy import policy_for
from ..jose import dpop
from ..jose.clock import SYSTEM
from ..jose.clock import Clock
from ..jose.errors import Challenges
from ..jose.jwks_cache import FetchEvent
from ..jose.jwks_cache import JWKSCache
from ..jose.key_shares import shares_for
from ..jose.prefork import Prefork
from ..jose.prefork import from_master
from ..jose.replay import ReplayStore
from ..jose.replay_redis import RedisReplayStore
from ..jose.replay_redis import StateChange
from ..jose.replay_table import ReplayTable
from ..jose.replay_table import table_for
from ..jose.verifier import verifier_for
from ..logs import get_logger
from . import gateway
from . import resource_metadata
from .state import KEY
from .state import AppState
from .state import Schemes
from .state import state_of
from .validators import Auth0BearerTokenValidator
from .validators import DPoPTokenValidator

log = get_logger("service.auth")


def init_app(
    app: Flask, settings: Settings, prefork: Prefork | None = None, clock: Clock = SYSTEM
) -> AppState:
    """Build this app's verifier (a JWKS cache per issuer), validators and DPoP parts; attach them.

    ``prefork`` is what the gunicorn master made before forking (by default, what it handed to
    this process); without one the app makes its own replay table.
    """
    verifier = verifier_for(
        settings, on_fetch=_fetch_logged, on_cache_lookup=metrics.token_cache_lookup, clock=clock
    )
    for cache in verifier.caches:  # every issuer's series exists from the first scrape
        metrics.track_issuer(cache.issuer)
    dpop_on = settings.dpop.enabled
    mtls = {"mtls": settings.mtls.mode, "cert_environ_key": settings.mtls.environ_key}
    validators: dict[str, Auth0BearerTokenValidator] = {
        "bearer": Auth0BearerTokenValidator(verifier, refuse_bound=dpop_on, **mtls)
    }
    store: ReplayStore | None = None
    if dpop_on:
        pod = prefork if prefork is not None else from_master()
        store = replay_store(settings, pod)
        proofs = dpop.verifier_for(settings, store)
        validators["dpop"] = DPoPTokenValidator(verifier, proofs, settings.public_urls, **mtls)
        app.after_request(_send_nonce)
    challenges = Challenges(
        settings.dpop.mode, settings.dpop.algorithms, resource_metadata.metadata_url(settings)
    )
    state = AppState(
        settings=settings,
        verifier=verifier,
        validators=validators,
        challenges=challenges,
        schemes=Schemes(settings.dpop.mode, challenges),
        replay=store,
        gateway=gateway.prepare(settings, policy_for(settings)),
    )
    app.extensions[KEY] = state
    return state


def replay_store(settings: Settings, pod: Prefork | None) -> ReplayStore:
    """The DPoP replay store: Redis when AUTH0_DPOP_REPLAY_URL is set, else the pod-local table.

    ``pod`` holds what the gunicorn master made before the fork (the table, the key shares), so
    every worker shares them; without a master this app makes its own. The Redis store connects
    from each worker on first use, never here.
    """
    redis = settings.dpop.replay_store
    if redis is None:
        table = pod.replay if pod is not None else None
        return table if table is not None else table_for(settings.dpop)
    metrics.track_replay_store()
    fallback: ReplayTable | None = None
    shares = pod.shares if pod is not None else None
    if redis.fail_open:
        # The pod's table decides during an outage; its key shares count Redis's entries too.
        made = pod.replay if pod is not None else None
        fallback = made if isinstance(made, ReplayTable) else table_for(settings.dpop)
        shares = fallback.shares
    return RedisReplayStore(
        redis.url,
        password=redis.password,
        timeout=redis.timeout,
        prefix=redis.prefix,
        shares=shares if shares is not None else shares_for(settings.dpop),
        fallback=fallback,
        on_request=lambda event: metrics.replay_store_request(event.result, event.duration),
        on_state=functools.partial(_replay_store_state, fail="open" if redis.fail_open else "closed"),
    )


def _replay_store_state(change: StateChange, *, fail: str) -> None:
    """One log line per change of a worker's link to Redis: down (warning) and up again (info)."""
    if change.up:
        log.info("dpop_replay_store_up", store="redis")
    else:
        log.warning("dpop_replay_store_down", store="redis", error=change.error, fail=fail)


def replay_store_health(app: Flask) -> dict[str, Any] | None:
    """The replay store's state for /readyz (None with DPoP disabled)."""
    store = state_of(app).replay
    if store is None:
        return None
    if isinstance(store, RedisReplayStore):
        return store.health()
    return {"store": "pod-local"}


def _send_nonce(response: Response) -> Response:
    """Hand the client the next DPoP nonce when its own is about to expire (RFC 9449 §9)."""
    nonce = g.pop("dpop_nonce", None)
    if nonce is not None:
        response.headers["DPoP-Nonce"] = nonce
    return response


def jwks_caches(app: Flask) -> list[JWKSCache]:
    """The JWKS caches this app verifies tokens with (readiness asks each of them)."""
    return list(state_of(app).jwks_caches)


def start_key_fetch(app: Any, threads: int | None = None) -> None:
    """Start every JWKS cache's background refresher in this process: call it after fork.

    ``threads`` is the worker's thread count: half of them may wait for fetches at once.
    """
    if isinstance(app, Flask):
        for cache in jwks_caches(app):
            if threads is not None:
                cache.seats.fit(threads)
            cache.start()


def _fetch_logged(event: FetchEvent) -> None:
    """Count and time every JWKS fetch, and log the failures."""
    metrics.jwks_fetched(event)
    if event.error is not None:
        log.warning("jwks_fetch_failed", issuer=event.issuer, error=event.error)
    else:
        log.info("jwks_fetched", issuer=event.issuer)
