"""The one typed object an app keeps under ``app.extensions``: everything a request is checked with."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from dataclasses import field
from typing import TYPE_CHECKING
from typing import Any

from flask import Flask

from ..config import Settings
from ..jose.errors import Challenges
from ..jose.jwks_cache import JWKSCache
from ..jose.replay import ReplayStore
from ..jose.verifier import TokenVerifier
from .validators import Auth0BearerTokenValidator

if TYPE_CHECKING:  # the gateway module reads this state: no import cycle at run time
    from .gateway import Gateway

#: The app.extensions key holding the AppState (Flask's documented place for extension state).
KEY = "service"


@dataclass(frozen=True, slots=True)
class Schemes:
    """Which schemes a decision accepts (AUTH0_DPOP's modes) and how its 401s challenge."""

    mode: str
    challenges: Challenges


@dataclass(frozen=True, slots=True)
class AppState:
    """Built once by the composition root from Settings; read by require_auth and the routes."""

    settings: Settings
    verifier: TokenVerifier
    #: Authlib token type ("bearer", "dpop") -> its validator.
    validators: Mapping[str, Auth0BearerTokenValidator]
    challenges: Challenges
    #: The app's own schemes (a gateway rule may name others).
    schemes: Schemes
    #: The DPoP replay table in use (None without DPoP).
    replay: ReplayStore | None
    #: Gateway mode's prepared policy (None without GATEWAY_POLICY).
    gateway: Gateway | None = None
    #: Values built on first use, once the URL map is complete (the RFC 9728 document).
    lazy: dict[str, Any] = field(default_factory=dict)

    @property
    def dpop_mode(self) -> str:
        """AUTH0_DPOP: "disabled", "allowed" or "required"."""
        return self.settings.dpop.mode

    @property
    def jwks_caches(self) -> tuple[JWKSCache, ...]:
        """Every trusted issuer's key cache."""
        return self.verifier.caches


def state_of(app: Flask) -> AppState:
    """The app's state (KeyError for an app not built by create_app)."""
    state: AppState = app.extensions[KEY]
    return state
