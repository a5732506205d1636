"""Flask application of the DEVELOPMENT issuer: discovery, JWKS, token endpoint, health."""

from __future__ import annotations

import os
from typing import Any

from flask import Flask
from flask import Request
from flask import Response
from flask import g
from flask import jsonify
from flask import request

from dev_issuer.config import IssuerSettings
from dev_issuer.control import CannedResponse
from dev_issuer.control import IssuerControl
from dev_issuer.dpop import ALGORITHMS as DPOP_ALGORITHMS
from dev_issuer.dpop import TokenEndpointProofs
from dev_issuer.keys import ALGORITHM
from dev_issuer.keys import SigningKey
from dev_issuer.mint import mint_token
from dev_issuer.oauth import AUTH_METHODS
from dev_issuer.oauth import DevAuthorizationServer
from service.jose.errors import InvalidDPoPProofError

_MAX_BODY = 64 * 1024
_NO_STORE = {"Cache-Control": "no-store", "Pragma": "no-cache"}


class BadTokenRequest(ValueError):
    """The token request body cannot be read as OAuth parameters."""


class _CannedBody(Response):
    """A canned answer carries exactly the headers it was given (no default Content-Type)."""

    default_mimetype = None


def _canned(answer: CannedResponse) -> Response:
    """Render a canned answer."""
    return _CannedBody(answer.body, answer.status, answer.headers)


def load_key(settings: IssuerSettings) -> SigningKey:
    """Return the key from DEV_ISSUER_KEY_FILE, or a fresh one."""
    if settings.key_file:
        return SigningKey.from_pem_file(settings.key_file)
    return SigningKey.generate()


def create_app(
    settings: IssuerSettings | None = None,
    key: SigningKey | None = None,
    control: IssuerControl | None = None,
) -> Flask:
    """Build the issuer app; settings default to the environment, the key to a fresh one."""
    if settings is None:
        settings = IssuerSettings.from_env(os.environ)
    if control is None:
        control = IssuerControl(
            key or load_key(settings), cache_control=settings.jwks_cache_control
        )
    # Authlib refuses plain-HTTP token requests except on loopback; this dev tool is meant to be
    # reached over plain HTTP on a private network too (e.g. http://issuer:3011 in compose).
    os.environ.setdefault("AUTHLIB_INSECURE_TRANSPORT", "1")

    app = Flask("dev_issuer")
    app.config["MAX_CONTENT_LENGTH"] = _MAX_BODY
    server = DevAuthorizationServer(app, settings, control)
    proofs = TokenEndpointProofs()

    @app.before_request
    def record() -> None:
        """Keep the request log the control asks for."""
        control.record_request(request.path, dict(request.headers.items()))

    @app.get("/.well-known/openid-configuration")
    def discovery() -> Response:
        """Serve the OIDC/RFC 8414 discovery document."""
        canned = control.count_discovery_fetch()
        if canned is not None:
            return _canned(canned)
        return jsonify(discovery_document(settings))

    @app.get("/.well-known/jwks.json")
    def jwks() -> Response:
        """Serve the public signing key set (counted per ?client= tag)."""
        canned = control.count_jwks_fetch(request.args.get("client"))
        if canned is not None:
            return _canned(canned)
        response = jsonify(control.jwks())
        if control.cache_control:
            response.headers["Cache-Control"] = control.cache_control
        return response

    @app.get("/stats")
    def stats() -> Response:
        """Report JWKS fetches per ?client= tag (benchmarks count each target's fetches)."""
        return jsonify(control.fetch_counts())

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
        refused = bind_dpop()
        return refused if refused is not None else server.create_token_response(params)

    @app.post("/dev/token")
    def dev_token() -> Any:
        """Mint a token with the scopes and claims asked for (development only, dev_issuer.mint)."""
        refused = bind_dpop()
        return refused if refused is not None else mint_token(server, request)

    def bind_dpop() -> Any:
        """Note the proof key to bind the token to, or return the 400 for a bad proof."""
        try:
            # RFC 9449 §5: a valid DPoP proof binds the token to its key (token_type DPoP).
            g.dpop_jkt = proofs.thumbprint(request)
        except InvalidDPoPProofError as exc:
            body = {"error": exc.error, "error_description": exc.description}
            return jsonify(body), 400, _NO_STORE
        return None

    @app.errorhandler(413)
    def too_large(_: Exception) -> Any:
        """Answer an oversized body in the OAuth error shape."""
        body = {"error": "invalid_request", "error_description": "Request body too large"}
        return jsonify(body), 413

    return app


def discovery_document(settings: IssuerSettings) -> dict[str, Any]:
    """Return the OIDC Discovery 1.0 / RFC 8414 metadata of this issuer."""
    return {
        "issuer": settings.issuer,
        "jwks_uri": settings.jwks_uri,
        "token_endpoint": settings.token_endpoint,
        "grant_types_supported": ["client_credentials"],
        "token_endpoint_auth_methods_supported": AUTH_METHODS,
        "id_token_signing_alg_values_supported": [ALGORITHM],
        "dpop_signing_alg_values_supported": list(DPOP_ALGORITHMS),
        "response_types_supported": [],
        "subject_types_supported": ["public"],
        "scopes_supported": sorted({s for c in settings.clients for s in c.scopes}),
        "claims_supported": ["iss", "sub", "aud", "iat", "exp", "azp", "gty", "scope"],
    }


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
