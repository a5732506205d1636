"""Gateway mode: ``/auth/check``, the decision a gateway asks for before forwarding a request.

nginx ``auth_request``, Traefik ``ForwardAuth``, Caddy ``forward_auth`` and Envoy ``ext_authz``
send the original request's headers here; the decision is the one own routes get (the same
protector, validators, errors, log line and metrics) under the matched policy rule.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from dataclasses import field
from typing import Any

from flask import Flask
from flask import Response
from flask import current_app
from flask import request

from .. import metrics
from ..config import Settings
from ..gateway_policy import UNMATCHED
from ..gateway_policy import Policy
from ..gateway_policy import Rule
from ..jose.access_token import AccessToken
from ..jose.claims import ClaimCheck
from ..jose.claims import compile_claims
from ..jose.errors import Challenges
from ..jose.errors import InvalidRequestError
from ..request_ids import ORIGINAL_REQUEST_ENVIRON_KEY
from .original_request import MalformedOriginalRequest
from .original_request import read_original
from .protector import BearerRequest
from .protector import Schemes
from .protector import error_response
from .protector import record_decision
from .protector import require_auth
from .resource_metadata import metadata_url
from .state import KEY as STATE

PREFIX = "/auth/check"
#: A header value the upstream gets: RFC 9110 §5.5 field-value, bounded.
MAX_HEADER_CHARS = 256
_NO_STORE = [("Cache-Control", "no-store")]
#: Tokens whose allow headers are kept (a cached token's are computed once); cleared when full.
_HEADER_SETS = 1024
_NO_RULE_BODY = (
    b'{"error":"access_denied","error_description":"No gateway policy rule allows this request."}\n'
)


@dataclass(frozen=True, slots=True)
class CompiledRule:
    """What a decision under one rule needs, prepared once."""

    scopes: list[str] | None
    claims: ClaimCheck | None
    schemes: Schemes


@dataclass(frozen=True, slots=True)
class Gateway:
    """The app's policy, its rules prepared, and the claim headers to send."""

    policy: Policy
    rules: dict[str, CompiledRule]
    claim_headers: tuple[tuple[str, str], ...]
    #: id(token) -> (token, allow headers, omitted header names): bounded by _HEADER_SETS.
    headers: dict[int, tuple[Any, list[tuple[str, str]], tuple[str, ...]]] = field(default_factory=dict)


def check(rest: str | None = None) -> Response:
    """Decide about the original request the gateway describes (any method)."""
    gateway = current_app.extensions[STATE].gateway
    assert gateway is not None  # the route exists only with a policy
    started = time.perf_counter()
    environ = request.environ
    try:
        original = read_original(environ, PREFIX)
    except MalformedOriginalRequest:
        error = InvalidRequestError(_MALFORMED, reason="bad_original_request")
        record_decision(UNMATCHED, "deny", error.reason, started, None)
        return error_response(error)
    environ[ORIGINAL_REQUEST_ENVIRON_KEY] = (original.method, original.path)
    rule = gateway.policy.match(original.hostname, original.decoded_path, original.method)
    if rule is None:
        record_decision(UNMATCHED, "deny", "no_rule", started, None)
        return _no_rule()
    compiled = gateway.rules[rule.name]
    outcome = require_auth.decide(
        rule.name,
        BearerRequest(
            environ, compiled.schemes, method=original.method, uri=original.url, query=original.query
        ),
        scopes=compiled.scopes,
        optional=rule.optional,
        claims=compiled.claims,
        step_up=rule.step_up,
        started=started,
    )
    if isinstance(outcome, Response):
        return outcome
    return _allow(outcome, gateway)


_MALFORMED = "The gateway's description of the original request is malformed."


def _no_rule() -> Response:
    """403: no policy rule matches the request (its method, host or path)."""
    return Response(
        _NO_RULE_BODY, status=403, mimetype="application/json", headers={"Cache-Control": "no-store"}
    )


def _allow(token: AccessToken | None, gateway: Gateway) -> Response:
    """200 with an empty body; the identity headers when a token was verified."""
    if token is None:
        return Response(b"", status=200, headers=_NO_STORE)
    found = gateway.headers.get(id(token))
    # The verified-token cache hands out the same AccessToken for the same token string: its
    # headers are computed once. The entry keeps the token alive, so its id is not reused.
    if found is None or found[0] is not token:
        if len(gateway.headers) >= _HEADER_SETS:
            gateway.headers.clear()
        found = gateway.headers[id(token)] = (token, *_identity(token, gateway.claim_headers))
    _, headers, omitted = found
    for name in omitted:
        metrics.gateway_header_omitted(name).inc()
    return Response(b"", status=200, headers=headers)


def _identity(
    token: AccessToken, claim_headers: tuple[tuple[str, str], ...]
) -> tuple[list[tuple[str, str]], tuple[str, ...]]:
    """The allow's headers for a token, and the names of those left out as unfit."""
    headers = list(_NO_STORE)
    omitted: list[str] = []
    for name, value in (
        ("X-Auth-Subject", token.sub),
        ("X-Auth-Client", token.client),
        ("X-Auth-Scopes", " ".join(sorted(token.permissions)) or None),
        ("X-Auth-Issuer", token.issuer or None),
        *((header, token.claims.get(claim)) for claim, header in claim_headers),
    ):
        if value is None:
            continue
        text = header_value(value)
        if text is None:
            omitted.append(name)
        else:
            headers.append((name, text))
    return headers, tuple(omitted)


def header_value(value: Any) -> str | None:
    """A claim value as header text, or None when unfit: not a string or number, a control
    character (CR/LF), over MAX_HEADER_CHARS, or outside Latin-1 (RFC 9110 §5.5 obs-text)."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        text = str(value)
    elif isinstance(value, float):
        if not math.isfinite(value):
            return None
        text = str(int(value)) if value.is_integer() and abs(value) < 2**53 else repr(value)
    elif isinstance(value, str):
        text = value
    else:
        return None
    if len(text) > MAX_HEADER_CHARS or not text.isprintable():
        return None
    try:
        text.encode("latin-1")
    except UnicodeEncodeError:
        return None
    return text


def prepare(settings: Settings, policy: Policy | None) -> Gateway | None:
    """The policy's rules prepared for decisions (None without a policy)."""
    if policy is None:
        return None
    return Gateway(
        policy=policy,
        rules={rule.name: _compile(rule, settings) for rule in policy.rules},
        claim_headers=settings.gateway_claim_headers,
    )


def init_app(app: Flask, gateway: Gateway | None) -> None:
    """With a policy, register /auth/check (and /auth/check/<path>) for every method."""
    if gateway is None:
        return
    # Werkzeug rules without methods match every method (Flask's add_url_rule would default to
    # GET): the original method is what gets checked.
    for path in (PREFIX, f"{PREFIX}/<path:rest>"):
        app.url_map.add(app.url_rule_class(path, endpoint="gateway_check", methods=None))
    app.view_functions["gateway_check"] = check


def _compile(rule: Rule, settings: Settings) -> CompiledRule:
    """A rule's scopes, claim check and DPoP mode, in the forms the protector takes."""
    mode = rule.dpop or settings.dpop.mode
    return CompiledRule(
        scopes=list(rule.scopes) if rule.scopes is not None else None,
        claims=compile_claims(dict(rule.claims)) if rule.claims else None,
        schemes=Schemes(mode, Challenges(mode, settings.dpop.algorithms, metadata_url(settings))),
    )
