"""Authlib authorization server for the DEVELOPMENT issuer: client-credentials grant, Auth0 shape.

Authlib drives the OAuth 2.0 flow (client authentication, grant dispatch, error responses); this
module only adds what Auth0 does on top: an ``audience`` parameter, client grants per API, and JWT
access tokens with Auth0's M2M claims.
"""

from __future__ import annotations

import hmac
import logging
from typing import Any

from authlib.integrations.flask_oauth2 import AuthorizationServer
from authlib.oauth2.rfc6749 import ClientMixin
from authlib.oauth2.rfc6749 import OAuth2Payload
from authlib.oauth2.rfc6749 import OAuth2Request
from authlib.oauth2.rfc6749.errors import OAuth2Error
from authlib.oauth2.rfc6749.grants import ClientCredentialsGrant
from authlib.oauth2.rfc6749.util import extract_basic_authorization
from flask import Flask
from flask import g
from flask import request as flask_request

from dev_issuer.config import ClientConfig
from dev_issuer.config import IssuerSettings
from dev_issuer.control import IssuerControl
from dev_issuer.keys import now

log = logging.getLogger("dev_issuer")

AUTH_METHODS = ["client_secret_basic", "client_secret_post"]
_MAX_ECHO = 120


class Client(ClientMixin):
    """A registered M2M client backed by a ClientConfig."""

    def __init__(self, config: ClientConfig, audiences: tuple[str, ...]) -> None:
        """Bind the client to the audiences it may request."""
        self.config = config
        self.audiences = config.audiences if config.audiences is not None else audiences

    def get_client_id(self) -> str:
        """Return the client identifier."""
        return self.config.client_id

    def get_default_redirect_uri(self) -> str | None:
        """Return None: M2M clients have no redirect URI."""
        return None

    def get_allowed_scope(self, scope: str | None) -> str:
        """Return the requested scopes this client holds, space-delimited."""
        requested = (scope or "").split()
        return " ".join(s for s in requested if s in self.config.scopes)

    def check_redirect_uri(self, redirect_uri: str) -> bool:
        """Reject every redirect URI: no browser flows here."""
        return False

    def check_client_secret(self, client_secret: str) -> bool:
        """Compare the secret in constant time."""
        return hmac.compare_digest(client_secret.encode(), self.config.client_secret.encode())

    def check_endpoint_auth_method(self, method: str, endpoint: str) -> bool:
        """Allow secret-based authentication at the token endpoint only."""
        return endpoint == "token" and method in AUTH_METHODS

    def check_response_type(self, response_type: str) -> bool:
        """Reject every response type: there is no authorization endpoint."""
        return False

    def check_grant_type(self, grant_type: str) -> bool:
        """Allow only the client-credentials grant."""
        return grant_type == "client_credentials"


class AccessDenied(OAuth2Error):
    """Auth0's 403 answer for an audience or scope the client has no grant for."""

    error = "access_denied"
    status_code = 403


class TokenPayload(OAuth2Payload):
    """Token request parameters taken from the body only (form or JSON), never the query string."""

    def __init__(self, params: dict[str, str]) -> None:
        """Hold the already-parsed body parameters."""
        self._params = params

    @property
    def data(self) -> dict[str, str]:
        """Return the parameters."""
        return self._params

    @property
    def datalist(self) -> dict[str, list[str]]:
        """Return the parameters as lists (duplicates were rejected while parsing)."""
        return {k: [v] for k, v in self._params.items()}


class TokenRequest(OAuth2Request):
    """OAuth2Request whose form is the parsed body, so client_secret_post works for JSON too."""

    def __init__(self, params: dict[str, str]) -> None:
        """Build from the current Flask request and its parsed body."""
        super().__init__(
            method=flask_request.method, uri=flask_request.url, headers=flask_request.headers
        )
        self.payload = TokenPayload(params)

    @property
    def args(self) -> Any:
        """Return the query arguments."""
        return flask_request.args

    @property
    def form(self) -> dict[str, str]:
        """Return the body parameters."""
        return self._params

    @property
    def _params(self) -> dict[str, str]:
        assert isinstance(self.payload, TokenPayload)
        return self.payload.data


def _printable(value: str) -> str:
    """Make a client-supplied value safe for an RFC 6749 error_description."""
    cleaned = "".join(c if 0x20 <= ord(c) <= 0x7E and c not in "\"\\" else "?" for c in value)
    return cleaned if len(cleaned) <= _MAX_ECHO else cleaned[:_MAX_ECHO] + "..."


def check_audience(client: Client, audience: str | None, audiences: tuple[str, ...]) -> str:
    """Return the requested audience, or raise Auth0's 403 for one the client may not have."""
    if not audience:
        raise AccessDenied(
            "No audience parameter was provided, and no default audience has been configured"
        )
    if audience not in audiences:
        raise AccessDenied(f"Service not found: {_printable(audience)}")
    if audience not in client.audiences:
        raise AccessDenied(
            f"Client is not authorized to access {_printable(audience)}. "
            "You need to create a client-grant associated to this API."
        )
    return audience


class Auth0ClientCredentialsGrant(ClientCredentialsGrant):
    """Client-credentials grant with Auth0's ``audience`` parameter and per-client scope grants."""

    TOKEN_ENDPOINT_AUTH_METHODS = AUTH_METHODS

    audience: str
    granted_scopes: tuple[str, ...]

    def validate_token_request(self) -> None:
        """Authenticate the client (Authlib), then check audience and scope like Auth0."""
        super().validate_token_request()
        client = self.request.client
        assert isinstance(client, Client)
        audience = check_audience(
            client, self.request.payload.data.get("audience"), self.server.settings.audiences
        )
        requested = tuple(dict.fromkeys((self.request.payload.scope or "").split()))
        if requested:
            missing = [s for s in requested if s not in client.config.scopes]
            if missing:
                raise AccessDenied(
                    f"Client has not been granted scopes: {_printable(' '.join(missing))}"
                )
            self.granted_scopes = requested
        else:
            self.granted_scopes = client.config.scopes
        self.audience = audience

    def generate_token(
        self,
        user: Any = None,
        scope: str | None = None,
        grant_type: str | None = None,
        expires_in: int | None = None,
        include_refresh_token: bool = True,
    ) -> dict[str, Any]:
        """Mint the JWT access token for the validated request (no refresh token, as Auth0)."""
        server = self.server
        assert isinstance(server, DevAuthorizationServer)
        return server.mint(self.request.client, self.audience, self.granted_scopes)


class DevAuthorizationServer(AuthorizationServer):
    """Flask AuthorizationServer holding the dev clients and the published keys."""

    def __init__(self, app: Flask, settings: IssuerSettings, control: IssuerControl) -> None:
        """Register the client-credentials grant and body-aware client authentication."""
        self.settings = settings
        self.control = control
        self.clients = {c.client_id: Client(c, settings.audiences) for c in settings.clients}
        super().__init__(app, query_client=self.clients.get, save_token=_record_issue)
        self.register_grant(Auth0ClientCredentialsGrant)
        # Replacements for Authlib's built-ins: an unknown client_id must give the same 401
        # invalid_client as a wrong secret (Authlib's post method answers 400 for it).
        self.register_client_auth_method("client_secret_basic", _auth_basic)
        self.register_client_auth_method("client_secret_post", _auth_post)

    def create_oauth2_request(self, request: Any) -> TokenRequest:
        """Wrap the parsed body handed to create_token_response."""
        assert isinstance(request, dict)
        return TokenRequest(request)

    def mint(
        self,
        client: Client,
        audience: str,
        scopes: tuple[str, ...],
        *,
        extra: dict[str, Any] | None = None,
        ttl: int | None = None,
    ) -> dict[str, Any]:
        """Sign an Auth0-style M2M access token and build the token response.

        ``extra`` adds or replaces claims other than iss, aud, iat, exp and scope (an Auth0 Action
        adds custom claims the same way); ``ttl`` replaces DEV_ISSUER_TOKEN_TTL.
        """
        issued_at = now()
        ttl = self.settings.token_ttl if ttl is None else ttl
        claims: dict[str, Any] = {
            "iss": self.settings.issuer,
            "sub": f"{client.get_client_id()}@clients",
            "aud": audience,
            "iat": issued_at,
            "exp": issued_at + ttl,
            "azp": client.get_client_id(),
            "gty": "client-credentials",
            **(extra or {}),
        }
        token: dict[str, Any] = {"token_type": "Bearer", "expires_in": ttl}
        jkt = g.get("dpop_jkt")
        if jkt is not None:
            # RFC 9449 §6.1: the confirmation claim names the proof key's RFC 7638 thumbprint.
            cnf = claims.get("cnf")
            claims["cnf"] = {**(cnf if isinstance(cnf, dict) else {}), "jkt": jkt}
            token["token_type"] = "DPoP"
        if scopes:
            claims["scope"] = " ".join(scopes)
            token["scope"] = claims["scope"]
        token["access_token"] = self.control.current_key.encode_jwt(claims)
        return token


def _auth_basic(query_client: Any, request: OAuth2Request) -> Client | None:
    """Authenticate with HTTP Basic client credentials."""
    client_id, secret = extract_basic_authorization(request.headers)
    return _check(query_client, client_id, secret)


def _auth_post(query_client: Any, request: OAuth2Request) -> Client | None:
    """Authenticate with client_id/client_secret in the (form or JSON) body."""
    return _check(query_client, request.form.get("client_id"), request.form.get("client_secret"))


def _check(query_client: Any, client_id: str | None, secret: str | None) -> Client | None:
    """Return the client when the id exists and the secret matches."""
    if not client_id or not secret:
        return None
    client = query_client(client_id)
    if client is None or not client.check_client_secret(secret):
        return None
    return client


def _record_issue(token: dict[str, Any], request: OAuth2Request) -> None:
    """Log an issued token's metadata (never the token or the secret)."""
    log.info(
        "issued access token client_id=%s audience=%s scope=%r expires_in=%s",
        request.client.get_client_id(),
        request.payload.data.get("audience"),
        token.get("scope", ""),
        token["expires_in"],
    )
