"""The composition root: builds an app's verifier, key caches, replay store and nonces from Settings."""

from __future__ import annotations

from typing import Any

from flask import Flask
from flask import Response
from flask import g

from .. import metrics
from ..config import Settings
from ..jose import dpop
from ..jose.errors import Challenges
from ..jose.jwks_cache import FetchEvent
from ..jose.jwks_cache import JWKSCache
from ..jose.prefork import Prefork
from ..jose.prefork import from_master
from ..jose.replay import ReplayStore
from ..jose.replay_table import table_for
from ..jose.verifier import verifier_for
from ..logs import get_logger
from . import resource_metadata
from .state import KEY
from .state import AppState
from .state import Schemes
from .state import state_of
from .validators import Auth0BearerTokenValidator
from .validators import DPoPTokenValidator

log = get_logger("service.auth")


def init_app(app: Flask, settings: Settings, prefork: Prefork | None = None) -> AppState:
    """Build this app's verifier (a JWKS cache per issuer), validators and DPoP parts; attach them.

    ``prefork`` is what the gunicorn master made before forking (by default, what it handed to
    this process); without one the app makes its own replay table.
    """
    verifier = verifier_for(
        settings, on_fetch=_fetch_logged, on_cache_lookup=metrics.token_cache_lookup
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
        store = pod.replay if pod is not None else None
        if store is None:
            store = table_for(settings.dpop)
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
    )
    app.extensions[KEY] = state
    return state


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
