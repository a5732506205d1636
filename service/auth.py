"""The resource protector: parses the Authorization header, decides, logs and counts the decision.

Built on Authlib's Flask ``ResourceProtector`` with our bearer-token validator registered; this
module adds RFC 6750 header parsing rules and exactly one ``auth_decision`` event per request.
"""

from __future__ import annotations

import functools
import re
import time
from collections.abc import Callable
from typing import Any

from authlib.integrations.flask_oauth2 import ResourceProtector
from flask import Flask
from flask import Response
from flask import current_app
from flask import g
from flask import request

from . import metrics
from .config import Settings
from .errors import AuthError
from .errors import InsufficientScopeError
from .errors import InvalidRequestError
from .errors import InvalidTokenError
from .errors import MissingTokenError
from .jwks import FetchEvent
from .logging import get_logger
from .tokens import AccessToken
from .tokens import verifier_for
from .validator import Auth0BearerTokenValidator

#: Whitespace or commas inside the credentials mean several tokens: a malformed request
#: (RFC 6750 §2.1, §3.1). Other junk is a token problem: the validator answers invalid_token.
_SEPARATOR = re.compile(r"[\s,]")

log = get_logger("service.auth")


class Protector(ResourceProtector):
    """Authlib's ResourceProtector with strict RFC 6750 header parsing."""

    def parse_request_authorization(self, request: Any) -> tuple[Any, str]:
        """Split ``Authorization: Bearer <token>``; refuse anything ambiguous (RFC 6750 §2.1)."""
        auth = (request.headers.get("Authorization") or "").strip()
        if not auth:
            raise MissingTokenError()
        scheme, _, credentials = auth.replace("\t", " ").partition(" ")
        if scheme.lower() != "bearer":
            # Another scheme carries no bearer credentials: challenge as for a missing token.
            raise MissingTokenError()
        credentials = credentials.strip()
        if not credentials:
            raise InvalidRequestError("The Authorization header has no token after 'Bearer'.")
        if _SEPARATOR.search(credentials):
            raise InvalidRequestError("The Authorization header must carry exactly one token.")
        return self.get_token_validator("bearer"), credentials

    def validate_request(self, scopes: Any, request: Any, **kwargs: Any) -> AccessToken:
        """Authlib's flow, keeping the verified token on a scope refusal for the decision log."""
        validator, token_string = self.parse_request_authorization(request)
        validator.validate_request(request)
        token = validator.authenticate_token(token_string)
        try:
            validator.validate_token(token, scopes, request, **kwargs)
        except InsufficientScopeError as error:
            error.token = token  # type: ignore[attr-defined]
            raise
        return token

    def acquire_token(self, scopes: list[str] | None = None, **kwargs: Any) -> AccessToken:
        """Validate the current request, reading only what bearer authentication needs."""
        environ = request.environ
        # RFC 6750 §2.3 URI tokens leak into logs and caches; only the header is accepted.
        if environ.get("QUERY_STRING") and "access_token" in request.args:
            raise InvalidRequestError("Send the access token in the Authorization header only.")
        token = self.validate_request(scopes, _BearerRequest(environ.get("HTTP_AUTHORIZATION")))
        g.authlib_server_oauth2_token = token
        return token


class _BearerRequest:
    """The slice of a request that bearer validation reads (Authlib's request protocol).

    Authlib's FlaskJsonRequest would build the full URL and copy every header per request; the
    Authorization header is all that RFC 6750 header authentication needs.
    """

    __slots__ = ("headers",)

    def __init__(self, authorization: str | None) -> None:
        self.headers = {"Authorization": authorization} if authorization is not None else {}


def error_response(error: AuthError) -> Response:
    """Turn an auth error into its prepared response."""
    status, body, headers = error.response_parts()
    return Response(body, status=status, headers=list(headers))


def protected(route: str, permission: str | None = None) -> Callable[[Callable[..., Any]], Any]:
    """Require a valid token (and ``permission``) for a view; log and count the decision."""
    scopes = [permission] if permission else None

    def decorator(view: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(view)
        def wrapped(*args: Any, **kwargs: Any) -> Any:
            protector: Protector = current_app.extensions["auth_protector"]
            started = time.perf_counter()
            try:
                token = protector.acquire_token(scopes)
            except AuthError as error:
                token = getattr(error, "token", None)
                _record_decision(route, "deny", error.reason, started, token)
                return error_response(error)
            except Exception:
                # Fail closed: a bug on some odd input must still be a refusal, never a 500.
                log.exception("auth_error", route=route)
                _record_decision(route, "deny", "error", started, None)
                return error_response(InvalidTokenError(reason="error"))
            _record_decision(route, "allow", "ok", started, token)
            return view(*args, **kwargs)

        return wrapped

    return decorator


def _record_decision(
    route: str, outcome: str, reason: str, started: float, token: AccessToken | None
) -> None:
    """Record one decision: a log line and the two metrics."""
    elapsed = time.perf_counter() - started
    metrics.auth_decision(route, outcome, reason).inc()
    metrics.auth_duration(route).observe(elapsed)
    if token is not None:
        log.info(
            "auth_decision", outcome=outcome, reason=reason, route=route,
            sub=token.sub, client=token.client,
        )
    else:
        log.info("auth_decision", outcome=outcome, reason=reason, route=route)


def init_app(app: Flask, settings: Settings) -> None:
    """Build this app's verifier (with its own JWKS cache) and protector."""
    verifier = verifier_for(settings, on_fetch=_fetch_logged)
    protector = Protector()
    protector.register_token_validator(Auth0BearerTokenValidator(verifier))
    app.extensions["auth_protector"] = protector
    app.extensions["auth_verifier"] = verifier


def _fetch_logged(event: FetchEvent) -> None:
    """Count every JWKS fetch and log the failures."""
    metrics.jwks_fetch(event.outcome).inc()
    if event.error is not None:
        log.warning("jwks_fetch_failed", error=event.error)
    else:
        log.info("jwks_fetched")
