"""CORS for ``/api/*`` through flask-cors, evaluated only for requests that carry an Origin."""

from __future__ import annotations

from flask import Flask
from flask import Response
from flask import request
from flask_cors import cross_origin

from ..config import Settings
from .resource_metadata import PATH as METADATA_PATH

#: Where CORS applies; flask-cors would match the same paths with its resource pattern ``/api/*``.
_API_PREFIX = "/api"


def _response(response: Response) -> Response:
    """Hand the response through: flask-cors's decorator adds the headers around it."""
    return response


def init_app(app: Flask, settings: Settings) -> None:
    """Answer CORS for browsers' cross-origin requests (preflights before any auth check)."""
    # Browsers preflight with OPTIONS and no credentials, so the preflight must be answered
    # without a token (Fetch Standard, CORS-preflight request:
    # https://fetch.spec.whatwg.org/#cors-preflight-fetch).
    add_cors_headers = cross_origin(
        origins=list(settings.cors_origins),
        # RFC 9449 §7: browsers send the proof in a DPoP header and read nonces from DPoP-Nonce.
        allow_headers=["Authorization", "Content-Type", "X-Request-ID", "DPoP"],
        expose_headers=["WWW-Authenticate", "X-Request-ID", "Retry-After", "DPoP-Nonce"],
        max_age=600,
        automatic_options=False,
    )(_response)
    # RFC 9728 metadata is public: browser-based OAuth clients read it from any origin.
    add_metadata_cors = cross_origin(origins="*", max_age=600, automatic_options=False)(_response)

    @app.after_request
    def cors(response: Response) -> Response:
        """Add CORS headers to cross-origin /api answers; mark every answer as varying by Origin."""
        # Without an Origin there is nothing for CORS to answer (Fetch Standard, CORS protocol:
        # https://fetch.spec.whatwg.org/#http-cors-protocol); skipping it saves its work on every
        # server-to-server call. Vary: Origin keeps shared caches honest either way.
        if "HTTP_ORIGIN" not in request.environ:
            response.headers.add("Vary", "Origin")
            return response
        if request.path.startswith(_API_PREFIX):
            return add_cors_headers(response)
        if request.path == METADATA_PATH:
            return add_metadata_cors(response)
        return response
