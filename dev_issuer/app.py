"""Flask application of the DEVELOPMENT issuer: discovery, JWKS, token endpoint, health."""

from __future__ import annotations

import os
from typing import Any

from flask import Flask
from flask import Request
from flask import Response
from flask import jsonify
from flask import request

from dev_issuer.config import IssuerSettings
from dev_issuer.keys import ALGORITHM
from dev_issuer.keys import SigningKey
from dev_issuer.oauth import AUTH_METHODS
from dev_issuer.oauth import DevAuthorizationServer

_MAX_BODY = 64 * 1024
_NO_STORE = {"Cache-Control": "no-store", "Pragma": "no-cache"}


class BadTokenRequest(ValueError):
    """The token request body cannot be read as OAuth parameters."""


def create_app(settings: IssuerSettings | None = None, key: SigningKey | None = None) -> Flask:
    """Build the issuer app; settings default to the environment, the key to a fresh one."""
    if settings is None:
        settings = IssuerSettings.from_env(os.environ)
    if key is None:
        key = (
            SigningKey.from_pem_file(settings.key_file)
            if settings.key_file
            else SigningKey.generate()
        )
    # Authlib refuses plain-HTTP token requests except on loopback; this dev tool is meant to be
    # reached over plain HTTP on a private network too (e.g. http://issuer:3011 in compose).
    os.environ.setdefault("AUTHLIB_INSECURE_TRANSPORT", "1")

    app = Flask("dev_issuer")
    app.config["MAX_CONTENT_LENGTH"] = _MAX_BODY
    server = DevAuthorizationServer(app, settings, key)
    scopes = sorted({s for c in settings.clients for s in c.scopes})

    @app.get("/.well-known/openid-configuration")
    def discovery() -> Response:
        """Serve the OIDC/RFC 8414 discovery document."""
        return jsonify(
            {
                "issuer": settings.issuer,
                "jwks_uri": settings.jwks_uri,
                "token_endpoint": settings.token_endpoint,
                "grant_types_supported": ["client_credentials"],
                "token_endpoint_auth_methods_supported": AUTH_METHODS,
                "id_token_signing_alg_values_supported": [ALGORITHM],
                "response_types_supported": [],
                "subject_types_supported": ["public"],
                "scopes_supported": scopes,
                "claims_supported": ["iss", "sub", "aud", "iat", "exp", "azp", "gty", "scope"],
            }
        )

    @app.get("/.well-known/jwks.json")
    def jwks() -> Response:
        """Serve the public signing key set."""
        return jsonify(key.jwks())

    @app.get("/healthz")
    def healthz() -> Response:
        """Report liveness."""
        return jsonify({"status": "ok"})

    @app.post("/oauth/token")
    def token() -> Any:
        """Answer the client-credentials grant (Auth0 request shape: JSON or form body)."""
        try:
            params = read_token_params(request)
        except BadTokenRequest as exc:
            body = {"error": "invalid_request", "error_description": str(exc)}
            return jsonify(body), 400, _NO_STORE
        return server.create_token_response(params)

    @app.errorhandler(413)
    def too_large(_: Exception) -> Any:
        """Answer an oversized body in the OAuth error shape."""
        body = {"error": "invalid_request", "error_description": "Request body too large"}
        return jsonify(body), 413

    return app


def read_token_params(req: Request) -> dict[str, str]:
    """Read OAuth parameters from a JSON object or a form body; reject repeats and non-strings."""
    if req.is_json:
        data = req.get_json(silent=True)
        if not isinstance(data, dict):
            raise BadTokenRequest("Body must be a JSON object")
        bad = sorted(k for k, v in data.items() if not isinstance(v, str))
        if bad:
            raise BadTokenRequest(f"Parameters must be strings: {', '.join(bad)}")
        return {k: v for k, v in data.items() if v != ""}
    params: dict[str, str] = {}
    for name in req.form:
        values = req.form.getlist(name)
        if len(values) > 1:
            # RFC 6749 section 3.2: request parameters MUST NOT be included more than once.
            raise BadTokenRequest(f"Parameter repeated: {name}")
        if values[0] != "":
            params[name] = values[0]
    return params
