"""The API and health routes."""

from __future__ import annotations

import json
import time
from typing import Any

from flask import Blueprint
from flask import Flask
from flask import Response
from flask import current_app
from flask import jsonify

from ..config import REQUIRED_PERMISSION
from ..jose.jwks_cache import JWKSCache
from .composition import jwks_caches
from .composition import replay_store_health
from .protector import require_auth

#: How often /readyz looks again at several issuers' first fetches.
_READY_SLICE = 0.05

api = Blueprint("api", __name__, url_prefix="/api")
health = Blueprint("health", __name__)


class _FixedJSON:
    """A JSON body that never changes, rendered once as ``jsonify`` would render it."""

    __slots__ = ("body",)

    def __init__(self, **fields: str) -> None:
        # Flask's default provider outside debug: compact separators, a trailing newline.
        self.body = (json.dumps(fields, separators=(",", ":")) + "\n").encode()

    def response(self) -> Response:
        """A fresh response carrying the prepared body."""
        return Response(self.body, mimetype="application/json")


_PUBLIC = _FixedJSON(
    message="Hello from a public endpoint! You don't need to be authenticated to see this."
)
_PRIVATE = _FixedJSON(
    message="Hello from a private endpoint! You need to be authenticated to see this."
)
_PRIVATE_SCOPED = _FixedJSON(
    message=(
        "Hello from a private endpoint! You need to be authenticated and have a scope of "
        f"{REQUIRED_PERMISSION} to see this."
    )
)
_HEALTHY = _FixedJSON(status="ok")


@api.get("/public")
def public() -> Response:
    """Open to anyone."""
    return _PUBLIC.response()


@api.get("/private")
@require_auth()
def private() -> Response:
    """Any valid access token."""
    return _PRIVATE.response()


@api.get("/private-scoped")
@require_auth(REQUIRED_PERMISSION)
def private_scoped() -> Response:
    """A valid access token granting read:messages (scope or RBAC permissions)."""
    return _PRIVATE_SCOPED.response()


@health.get("/healthz")
def healthz() -> Response:
    """Liveness: the process answers; deliberately independent of the issuer."""
    return _HEALTHY.response()


@health.get("/readyz")
def readyz() -> Response | tuple[Response, int]:
    """Readiness: this worker holds usable keys (stale within max-stale) for a trusted issuer.

    Only asks the caches, which fetch in the background from the worker's start. Before any
    issuer's first fetch has ended (a cold start) it waits for them, bounded by the fetch
    timeouts; after that it never waits. One issuer's outage does not fail the readiness of an
    instance that can still verify the others' tokens.
    """
    caches = jwks_caches(current_app)
    _await_first_keys(caches)
    issuers = [_issuer_state(cache) for cache in caches]
    keys = sum(state["keys"] for state in issuers)
    # The DPoP replay store's state is shown, never decisive: a Redis outage fails DPoP requests
    # (503), not the pod, whose Bearer traffic is unaffected.
    store = {"replay_store": state} if (state := replay_store_health(current_app)) else {}
    if any(state["keys"] for state in issuers):
        return jsonify(status="ready", keys=keys, issuers=issuers, **store)
    return jsonify(status="unavailable", reason="no usable signing keys", issuers=issuers, **store), 503


def _await_first_keys(caches: list[JWKSCache]) -> None:
    """On a cold start, wait (bounded) until one issuer holds keys or every first fetch ended.

    The caches fetch in parallel in the background; with several issuers this waits in short
    slices, so a silent issuer never delays the answer once another one holds keys.
    """
    if len(caches) == 1:
        caches[0].await_first_fetch(caches[0].fetch_budget)
        return
    deadline = time.monotonic() + max(cache.fetch_budget for cache in caches)
    while not any(cache.usable() for cache in caches) and time.monotonic() < deadline:
        cold = [cache for cache in caches if cache.cold()]
        if not cold:
            return
        cold[0].await_first_fetch(_READY_SLICE)


def _issuer_state(cache: JWKSCache) -> dict[str, Any]:
    """One issuer's key state for /readyz: ready (fresh), stale (still usable) or unavailable."""
    keyset = cache.keyset
    state: dict[str, Any] = {"issuer": cache.issuer}
    if keyset is None:
        state.update(status="unavailable", keys=0)
    else:
        fresh = time.monotonic() < keyset.fresh_until
        state.update(status="ready" if fresh else "stale", keys=len(keyset.keys))
    if cache.last_error is not None:
        state["error"] = cache.last_error
    return state


def init_app(app: Flask) -> None:
    """Register the route blueprints."""
    app.register_blueprint(api)
    app.register_blueprint(health)
