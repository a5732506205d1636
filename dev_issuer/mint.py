"""``POST /dev/token``: a token with the scopes and claims a developer asks for (development only).

An Auth0 tenant grants a client the scopes of its client grant and adds custom claims through
Actions; trying a route locally needs both without replacing the default clients. The client still
authenticates (Authlib's client authentication) and the audience is checked as at /oauth/token.
"""

from __future__ import annotations

import logging
from typing import Any

from authlib.oauth2.rfc6749.errors import OAuth2Error
from flask import Request
from flask import Response
from flask import jsonify

from dev_issuer.config import MAX_TTL
from dev_issuer.config import SCOPE_TOKEN
from dev_issuer.oauth import AUTH_METHODS
from dev_issuer.oauth import Client
from dev_issuer.oauth import DevAuthorizationServer
from dev_issuer.oauth import TokenRequest
from dev_issuer.oauth import check_audience

log = logging.getLogger("dev_issuer")

#: Claims the issuer sets itself: ``scope`` comes from the ``scope`` parameter, the lifetime
#: from ``expires_in``.
RESERVED_CLAIMS = frozenset({"iss", "aud", "iat", "exp", "scope"})
_PARAMETERS = frozenset({"client_id", "client_secret", "audience", "scope", "claims", "expires_in"})
_NO_STORE = {"Cache-Control": "no-store", "Pragma": "no-cache"}


class BadMintRequest(ValueError):
    """The body is not a mint request; the message says why (no client input echoed)."""


def mint_token(server: DevAuthorizationServer, req: Request) -> Response:
    """Answer one mint request: 200 token response, or the OAuth error Auth0 would give."""
    try:
        params = read_mint_request(req)
    except BadMintRequest as exc:
        body = {"error": "invalid_request", "error_description": str(exc)}
        return _json(body, 400)
    credentials: dict[str, str] = {k: params[k] for k in ("client_id", "client_secret") if k in params}
    oauth_request = TokenRequest(credentials)
    try:
        client = server.authenticate_client(oauth_request, AUTH_METHODS)
        assert isinstance(client, Client)
        audience = check_audience(client, params.get("audience"), server.settings.audiences)
    except OAuth2Error as error:
        response: Response = server.handle_error_response(oauth_request, error)
        return response
    scope = params.get("scope")
    scopes = client.config.scopes if scope is None else tuple(dict.fromkeys(scope.split()))
    claims: dict[str, Any] = params.get("claims", {})
    token = server.mint(client, audience, scopes, extra=claims, ttl=params.get("expires_in"))
    log.info(
        "minted development token client_id=%s audience=%s scope=%r claims=%s expires_in=%s",
        client.get_client_id(),
        audience,
        token.get("scope", ""),
        ",".join(sorted(claims)) or "-",
        token["expires_in"],
    )
    return _json(token, 200)


def read_mint_request(req: Request) -> dict[str, Any]:
    """Read and check the JSON body: strings, a scope of RFC 6749 §3.3 tokens, a claims object."""
    data = req.get_json(silent=True) if req.is_json else None
    if not isinstance(data, dict):
        raise BadMintRequest("Body must be a JSON object (Content-Type: application/json)")
    unknown = sorted(set(data) - _PARAMETERS)
    if unknown:
        raise BadMintRequest(f"Unknown parameters: {', '.join(_names(unknown))}")
    for name in ("client_id", "client_secret", "audience", "scope"):
        if name in data and not isinstance(data[name], str):
            raise BadMintRequest(f"Parameter must be a string: {name}")
    if any(not SCOPE_TOKEN.match(s) for s in data.get("scope", "").split()):
        raise BadMintRequest("scope must be space-delimited scope tokens (RFC 6749 section 3.3)")
    claims = data.get("claims", {})
    if not isinstance(claims, dict):
        raise BadMintRequest("claims must be a JSON object")
    reserved = sorted(RESERVED_CLAIMS & set(claims))
    if reserved:
        raise BadMintRequest(f"Claims the issuer sets itself: {', '.join(reserved)}")
    ttl = data.get("expires_in")
    if ttl is not None and (
        not isinstance(ttl, int) or isinstance(ttl, bool) or not 1 <= ttl <= MAX_TTL
    ):
        raise BadMintRequest(f"expires_in must be an integer from 1 to {MAX_TTL}")
    return data


def _names(names: list[str]) -> list[str]:
    """Parameter names safe to echo: printable ASCII, cut."""
    return ["".join(c if 0x20 < ord(c) < 0x7F and c not in "\"\\" else "?" for c in n)[:40] for n in names]


def _json(body: dict[str, Any], status: int) -> Response:
    """A JSON answer that no cache keeps."""
    response = jsonify(body)
    response.status_code = status
    response.headers.update(_NO_STORE)
    return response
