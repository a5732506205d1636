"""OAuth 2.0 Protected Resource Metadata (RFC 9728) at /.well-known/oauth-protected-resource."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any
from urllib.parse import urlsplit

from flask import Blueprint
from flask import Flask
from flask import Response
from flask import abort
from flask import current_app
from flask import jsonify

from ..config import Settings
from ..jose.urls import normalize
from .state import state_of

#: RFC 9728 §3: the well-known path of the metadata document.
PATH = "/.well-known/oauth-protected-resource"
#: The document changes only with configuration or a deploy: an hour in client caches is fine.
MAX_AGE = 3600
#: Attribute that require_auth leaves on a view: the scope alternatives it asks for.
SCOPES_ATTRIBUTE = "required_scopes"

bp = Blueprint("resource_metadata", __name__)


def resource_identifier(settings: Settings) -> str:
    """RFC 9728 §2 ``resource``: the audience, spelled as a PUBLIC_URL entry when one names it."""
    audience = normalize(settings.audience)
    for public in settings.public_urls:
        if audience is not None and normalize(public) == audience:
            return public
    return settings.audience


def metadata_url(settings: Settings) -> str | None:
    """Where clients find the document (RFC 9728 §5.1), known only with PUBLIC_URL."""
    return settings.public_url + PATH if settings.public_url else None


def issuers(settings: Settings) -> list[str]:
    """The authorization servers whose tokens this API accepts."""
    return list(settings.issuers or (settings.issuer,))


def scopes_required(app: Flask) -> list[str]:
    """Every scope that some ``require_auth`` of the app's URL map asks for, sorted."""
    scopes: set[str] = set()
    for rule in app.url_map.iter_rules():
        view = app.view_functions.get(rule.endpoint)
        for alternative in getattr(view, SCOPES_ATTRIBUTE, None) or ():
            scopes.update(part for part in alternative.split(" ") if part)
    return sorted(scopes)


def document(settings: Settings, scopes: Iterable[str]) -> dict[str, Any]:
    """The metadata document (RFC 9728 §2) for the settings and the routes' scopes."""
    doc: dict[str, Any] = {
        "resource": resource_identifier(settings),
        "authorization_servers": issuers(settings),
        "scopes_supported": list(scopes),
        "bearer_methods_supported": ["header"],
    }
    if settings.dpop.enabled:
        doc["dpop_signing_alg_values_supported"] = list(settings.dpop.algorithms)
    doc["dpop_bound_access_tokens_required"] = settings.dpop.mode == "required"
    if settings.mtls.mode != "disabled":
        doc["tls_client_certificate_bound_access_tokens"] = True  # RFC 9728 §2
    if settings.resource_name:
        doc["resource_name"] = settings.resource_name
    if settings.resource_documentation:
        doc["resource_documentation"] = settings.resource_documentation
    return doc


@bp.get(PATH)
@bp.get(PATH + "/<path:suffix>")
def protected_resource_metadata(suffix: str | None = None) -> Response:
    """Serve the document, built once per app (the URL map is complete by the first request).

    RFC 9728 §3.1: for a resource identifier with a path, clients insert the well-known path
    before it, so ``/.well-known/oauth-protected-resource/<that path>`` serves it too.
    """
    state = state_of(current_app)
    settings = state.settings
    if suffix is not None and suffix.strip("/") != urlsplit(resource_identifier(settings)).path.strip("/"):
        abort(404)
    cached = state.lazy.get("resource_metadata")
    if cached is None:
        cached = state.lazy["resource_metadata"] = document(settings, scopes_required(current_app))
    response = jsonify(cached)
    response.headers["Cache-Control"] = f"public, max-age={MAX_AGE}"
    return response


def init_app(app: Flask) -> None:
    """Register the metadata route (it reads the settings from the app's state)."""
    app.register_blueprint(bp)
