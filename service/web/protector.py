"""``require_auth``: the app's Authlib ResourceProtector, deciding, logging and counting every request.

Used exactly as Authlib documents its Flask ``ResourceProtector``
(https://docs.authlib.org/en/latest/flask/2/resource-server.html)::

    from authlib.integrations.flask_oauth2 import current_token
    from service.auth import require_auth

    @bp.get("/orders/<int:order_id>")
    @require_auth("read:orders")
    def order(order_id): ...

On top of Authlib: strict RFC 6750 header parsing, the 403 challenge naming what *this* route
requires, ``claims=`` checks, and exactly one ``auth_decision`` event per decision, labelled
with the Flask URL rule (bounded by the routes the app defines, never the raw path).
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable
from collections.abc import Iterator
from collections.abc import Sequence
from contextlib import contextmanager
from typing import Any
from urllib.parse import parse_qsl

from authlib.integrations.flask_oauth2 import ResourceProtector
from authlib.integrations.flask_oauth2 import current_token
from authlib.integrations.flask_oauth2.signals import token_authenticated
from flask import Response
from flask import abort
from flask import current_app
from flask import g
from flask import request

from .. import metrics
from ..jose.access_token import AccessToken
from ..jose.claims import ClaimCheck
from ..jose.claims import ClaimsSpec
from ..jose.claims import compile_claims
from ..jose.claims import is_scope_list
from ..jose.errors import AuthError
from ..jose.errors import Challenges
from ..jose.errors import InvalidRequestError
from ..jose.errors import InvalidTokenError
from ..jose.errors import MissingTokenError
from ..jose.errors import UseDPoPNonceError
from ..jose.step_up import StepUp
from ..logs import RequestLine
from ..logs import get_logger
from . import resource_metadata
from .state import KEY as STATE
from .state import Schemes
from .validators import Auth0BearerTokenValidator

__all__ = ["Protector", "current_token", "require_auth"]

log = get_logger("service.auth")
#: The decision line: one per decision, rendered directly (same fields as through structlog).
decision_log = RequestLine("service.auth")

View = Callable[..., Any]


class Protector(ResourceProtector):
    """Authlib's Flask ResourceProtector with strict RFC 6750 parsing and one decision record.

    One module-level instance serves every app: the token validator is the current app's
    (built by ``init_app`` from its settings), so each app keeps its own key caches.
    """

    def __call__(
        self,
        scopes: str | Sequence[str] | View | None = None,
        optional: bool = False,
        *,
        claims: ClaimsSpec | None = None,
        acr_values: str | Sequence[str] | None = None,
        max_age: int | None = None,
    ) -> Any:
        """Decorate a view: ``@require_auth()``, ``@require_auth("a b")``, ``@require_auth(["a b", "c"])``.

        ``optional=True`` runs the view without a token when none is sent (``current_token`` is
        None); a token that is sent must still be valid. ``claims`` adds checks on the verified
        claims: a mapping of claim name to the exact value (or a predicate on the value), or one
        predicate over all claims; failing them is 401 ``invalid_token``. ``acr_values`` and
        ``max_age`` ask for step-up authentication (RFC 9470): failing them is 401
        ``insufficient_user_authentication``.
        """
        if callable(scopes):  # bare ``@require_auth``, as Authlib allows
            return self()(scopes)
        required = required_scopes(scopes)
        check = compile_claims(claims)
        step_up = route_step_up(acr_values, max_age)

        def decorator(view: View) -> View:
            @functools.wraps(view)
            def decorated(*args: Any, **kwargs: Any) -> Any:
                refusal = self._authorize(required, optional, check, step_up)
                if refusal is not None:
                    return refusal
                return view(*args, **kwargs)

            # Read by the RFC 9728 metadata document (scopes_supported).
            setattr(decorated, resource_metadata.SCOPES_ATTRIBUTE, tuple(required or ()))
            return decorated

        return decorator

    @contextmanager
    def acquire(
        self,
        scopes: str | Sequence[str] | None = None,
        *,
        claims: ClaimsSpec | None = None,
        acr_values: str | Sequence[str] | None = None,
        max_age: int | None = None,
    ) -> Iterator[AccessToken]:
        """Authlib's ``with require_auth.acquire("scope") as token:`` form, decided and logged alike."""
        refusal = self._authorize(
            required_scopes(scopes), False, compile_claims(claims), route_step_up(acr_values, max_age)
        )
        if refusal is not None:
            abort(refusal)
        yield g.authlib_server_oauth2_token

    def raise_error_response(self, error: Any) -> None:
        """Raise our prepared RFC 6750 response (Authlib's hook for custom error responses)."""
        abort(error_response(error if isinstance(error, AuthError) else InvalidTokenError()))

    def get_token_validator(self, token_type: str) -> Auth0BearerTokenValidator:
        """The current app's validator for a token type (Authlib's registry, kept per app)."""
        validator = current_app.extensions[STATE].validators.get(token_type.lower())
        if validator is None:
            raise MissingTokenError()
        return validator

    def parse_request_authorization(self, request: Any) -> tuple[Any, str]:
        """Split ``Authorization: Bearer|DPoP <token>``; refuse anything ambiguous.

        RFC 6750 §2.1 for Bearer; RFC 9449 §7.1 for DPoP, which also needs exactly one ``DPoP``
        proof header (the WSGI server joins repeated headers with commas, which no JWS contains).
        """
        mode = request.schemes.mode
        auth = (request.headers.get("Authorization") or "").strip()
        scheme, _, credentials = auth.replace("\t", " ").partition(" ")
        token_type = scheme.lower()
        proof = request.environ.get("HTTP_DPOP") if mode != "disabled" else None
        if proof is not None and token_type != "dpop":
            raise _dpop(InvalidRequestError(_PROOF_WITHOUT_TOKEN, reason="dpop_without_token"))
        if not auth:
            raise MissingTokenError(_MISSING_DPOP if mode == "required" else None)
        if token_type == "bearer" and mode == "required":
            raise _dpop(InvalidTokenError(_DPOP_REQUIRED, reason="dpop_required"))
        if token_type not in ("bearer", "dpop") or (token_type == "dpop" and mode == "disabled"):
            # Another scheme carries no credentials we accept: challenge as for a missing token.
            raise MissingTokenError(_MISSING_DPOP if mode == "required" else None)
        credentials = credentials.strip()
        if token_type == "bearer":
            if not credentials:
                raise InvalidRequestError("The Authorization header has no token after 'Bearer'.")
            if _several(credentials):
                raise InvalidRequestError("The Authorization header must carry exactly one token.")
            return self.get_token_validator("bearer"), credentials
        if not credentials:
            raise _dpop(InvalidRequestError("The Authorization header has no token after 'DPoP'."))
        if _several(credentials):
            raise _dpop(InvalidRequestError("The Authorization header must carry exactly one token."))
        if proof is None or not proof.strip():
            raise _dpop(InvalidRequestError(_TOKEN_WITHOUT_PROOF, reason="dpop_missing_proof"))
        if "," in proof:
            raise _dpop(InvalidRequestError(_SEVERAL_PROOFS, reason="dpop_multiple_proofs"))
        return self.get_token_validator("dpop"), credentials

    def validate_request(self, scopes: Any, request: Any, **kwargs: Any) -> AccessToken:
        """Authlib's flow, keeping the verified token on a refusal for the decision log."""
        validator, token_string = self.parse_request_authorization(request)
        request.credentials = token_string
        token = None
        try:
            validator.validate_request(request)
            token = validator.authenticate_token(token_string)
            validator.validate_token(token, scopes, request, **kwargs)
        except AuthError as error:
            error.token = token
            if validator.TOKEN_TYPE == "dpop":
                _dpop(error)  # RFC 9449 §7.1: the error goes on the DPoP challenge
            raise
        return token

    def acquire_token(
        self,
        scopes: str | Sequence[str] | None = None,
        *,
        bearer_request: BearerRequest | None = None,
        **kwargs: Any,
    ) -> AccessToken:
        """Validate the current request (or the one described), reading what bearer auth needs."""
        if isinstance(scopes, str):  # Authlib's acquire_token takes one scope string too
            scopes = [scopes]
        if bearer_request is None:
            bearer_request = BearerRequest(request.environ, current_app.extensions[STATE].schemes)
        # RFC 6750 §2.3 URI tokens leak into logs and caches; only the header is accepted.
        if bearer_request.query and any(
            name == "access_token" for name, _ in parse_qsl(bearer_request.query, keep_blank_values=True)
        ):
            raise InvalidRequestError("Send the access token in the Authorization header only.")
        token = self.validate_request(scopes, bearer_request, **kwargs)
        token_authenticated.send(self, token=token)
        g.authlib_server_oauth2_token = token
        return token

    def _authorize(
        self,
        scopes: list[str] | None,
        optional: bool,
        claims: ClaimCheck | None,
        step_up: StepUp | None = None,
    ) -> Response | None:
        """Authorize the current request: None to run the view, else the refusal to send."""
        started = time.perf_counter()
        rule = request.url_rule
        route = rule.rule if rule is not None else "unmatched"
        outcome = self.decide(
            route,
            BearerRequest(request.environ, current_app.extensions[STATE].schemes),
            scopes=scopes,
            optional=optional,
            claims=claims,
            step_up=step_up,
            started=started,
        )
        return outcome if isinstance(outcome, Response) else None

    def decide(
        self,
        route: str,
        bearer_request: BearerRequest,
        *,
        scopes: list[str] | None,
        optional: bool,
        claims: ClaimCheck | None,
        started: float,
        step_up: StepUp | None = None,
    ) -> Response | AccessToken | None:
        """One decision, recorded under ``route``: the refusal to send, or the verified token
        (None when an optional rule saw no token). Own routes and /auth/check both come here."""
        challenges = bearer_request.schemes.challenges
        try:
            token = self.acquire_token(
                scopes, bearer_request=bearer_request, claims=claims, step_up=step_up
            )
        except MissingTokenError as error:
            if optional and not (bearer_request.environ.get("HTTP_AUTHORIZATION") or "").strip():
                record_decision(route, "allow", "anonymous", started, None)
                return None
            record_decision(route, "deny", error.reason, started, None)
            return error_response(error, challenges)
        except AuthError as error:
            record_decision(route, "deny", error.reason, started, getattr(error, "token", None))
            return error_response(error, challenges)
        except Exception:
            # Fail closed: a bug on some odd input (or in a route's claim predicate) must still
            # be a refusal, never a 500.
            log.exception("auth_error", route=route)
            record_decision(route, "deny", "error", started, None)
            return error_response(InvalidTokenError(reason="error"), challenges)
        record_decision(route, "allow", "ok", started, token)
        return token


def route_step_up(acr_values: str | Sequence[str] | None, max_age: int | None) -> StepUp | None:
    """A route's step-up options (RFC 9470), refused when the route is declared if malformed."""
    try:
        return StepUp.from_options(acr_values, max_age)
    except ValueError as error:
        raise ValueError(f"require_auth: {error}") from None


def required_scopes(scopes: str | Sequence[str] | None) -> list[str] | None:
    """Normalise a route's scopes to Authlib's list of alternatives; refuse malformed ones early."""
    if scopes is None:
        return None
    alternatives = [scopes] if isinstance(scopes, str) else list(scopes)
    for alternative in alternatives:
        if not is_scope_list(alternative):
            raise ValueError(
                f"require_auth: {alternative!r} is not a space-delimited list of scope tokens "
                "(RFC 6749 section 3.3)"
            )
    return alternatives or None


class BearerRequest:
    """The slice of a request that bearer validation reads (Authlib's request protocol).

    Authlib's FlaskJsonRequest would build the full URL and copy every header per request; the
    Authorization header is all that RFC 6750 header authentication needs. A gateway decision
    describes another request: its method, URI and query replace this request's.
    """

    __slots__ = ("credentials", "environ", "headers", "method", "query", "schemes", "uri")

    def __init__(
        self,
        environ: dict[str, Any],
        schemes: Schemes,
        *,
        method: str | None = None,
        uri: str | None = None,
        query: str | None = None,
    ) -> None:
        authorization = environ.get("HTTP_AUTHORIZATION")
        self.headers = {"Authorization": authorization} if authorization is not None else {}
        #: DPoP reads its proof header from here (RFC 9449 §4.3).
        self.environ = environ
        self.schemes = schemes
        #: What a DPoP proof's htm and htu must match: None = this request's own.
        self.method = method
        self.uri = uri
        self.query = environ.get("QUERY_STRING") if query is None else query
        #: The token parsed out of the Authorization header, once parsing has accepted it.
        self.credentials: str | None = None


def _several(credentials: str) -> bool:
    """Whitespace or commas inside (stripped) credentials: several tokens (RFC 6750 §2.1, §3.1).

    Other junk is a token problem, for the validator's invalid_token. ``str.split()`` splits on
    exactly the characters a regex ``\\s`` matches, in C, without a per-character scan.
    """
    return "," in credentials or len(credentials.split(None, 1)) > 1


def _dpop(error: AuthError) -> AuthError:
    """Mark a refusal as answering a DPoP request: its error goes on the DPoP challenge."""
    error.scheme = "dpop"
    return error


_PROOF_WITHOUT_TOKEN = "A DPoP proof must come with 'Authorization: DPoP <token>'."
_TOKEN_WITHOUT_PROOF = "A DPoP token must come with one DPoP proof header."
_SEVERAL_PROOFS = "Send exactly one DPoP proof header."
_DPOP_REQUIRED = "This API accepts DPoP-bound tokens only: send 'Authorization: DPoP <token>'."
_MISSING_DPOP = "An access token is required: send 'Authorization: DPoP <token>' and a DPoP proof."


def error_response(error: AuthError, challenges: Challenges | None = None) -> Response:
    """Turn an auth error into its prepared response, challenging as given (else as the app is
    configured)."""
    status, body, headers = error.response_parts(challenges or current_app.extensions[STATE].challenges)
    response = Response(body, status=status, headers=list(headers))
    if isinstance(error, UseDPoPNonceError):
        response.headers["DPoP-Nonce"] = error.nonce  # RFC 9449 §9
    return response


def record_decision(
    route: str, outcome: str, reason: str, started: float, token: AccessToken | None
) -> None:
    """Record one decision: a log line and the two metrics."""
    elapsed = time.perf_counter() - started
    scheme = _scheme()
    metrics.auth_decision(route, outcome, reason, scheme).inc()
    metrics.auth_duration(route).observe(elapsed)
    if token is not None:
        decision_log.info(
            "auth_decision", outcome=outcome, reason=reason, route=route, scheme=scheme,
            sub=token.sub, client=token.client,
        )
    else:
        decision_log.info("auth_decision", outcome=outcome, reason=reason, route=route, scheme=scheme)


def _scheme() -> str:
    """The request's authentication scheme as a bounded label: bearer, dpop or none."""
    scheme = (request.environ.get("HTTP_AUTHORIZATION") or "").lstrip()[:7].lower()
    if scheme.startswith("bearer"):
        return "bearer"
    if scheme.startswith("dpop"):
        return "dpop"
    return "none"


#: The one way to protect a route (see the module docstring).
require_auth = Protector()
