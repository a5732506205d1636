"""The API and health routes."""

from __future__ import annotations

from flask import Blueprint
from flask import Flask
from flask import current_app
from flask import jsonify

from .auth import require_auth
from .config import REQUIRED_PERMISSION

api = Blueprint("api", __name__, url_prefix="/api")
health = Blueprint("health", __name__)


@api.get("/public")
def public():
    """Open to anyone."""
    return jsonify(
        message="Hello from a public endpoint! You don't need to be authenticated to see this."
    )


@api.get("/private")
@require_auth()
def private():
    """Any valid access token."""
    return jsonify(
        message="Hello from a private endpoint! You need to be authenticated to see this."
    )


@api.get("/private-scoped")
@require_auth(REQUIRED_PERMISSION)
def private_scoped():
    """A valid access token granting read:messages (scope or RBAC permissions)."""
    return jsonify(
        message=(
            "Hello from a private endpoint! You need to be authenticated and have a scope of "
            f"{REQUIRED_PERMISSION} to see this."
        )
    )


@health.get("/healthz")
def healthz():
    """Liveness: the process answers; deliberately independent of the issuer."""
    return jsonify(status="ok")


@health.get("/readyz")
def readyz():
    """Readiness: this worker holds a usable key set (stale is fine), loading one if needed."""
    jwks = current_app.extensions["auth_verifier"].jwks
    if jwks.ensure_loaded():
        keyset = jwks.keyset
        return jsonify(status="ready", keys=len(keyset.keys) if keyset else 0)
    return jsonify(status="unavailable", reason="no signing keys yet"), 503


def init_app(app: Flask) -> None:
    """Register the route blueprints."""
    app.register_blueprint(api)
    app.register_blueprint(health)
