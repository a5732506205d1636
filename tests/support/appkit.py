"""In-process app builder for fast tests: a real Flask app against a real local issuer."""

from __future__ import annotations

from typing import Any

from flask import Flask
from flask.testing import FlaskClient

from service.app import create_app
from service.config import Settings
from service.jose.clock import SYSTEM
from service.jose.clock import Clock
from tests.support.issuer import LocalIssuer


def settings_for(issuer: LocalIssuer, **env: str) -> Settings:
    """Settings pointing at the local issuer, with overrides given as environment values."""
    base = {"AUTH0_ISSUER": issuer.url, "AUTH0_AUDIENCE": issuer.audience, "AUTH0_JWKS_RETRY": "0"}
    base.update(env)
    return Settings.from_env(base)


def app_for(issuer: LocalIssuer, clock: Clock = SYSTEM, **env: str) -> Flask:
    """A fresh app (with its own JWKS cache) for the local issuer, on ``clock``."""
    return create_app(settings_for(issuer, **env), clock=clock)


def client_for(issuer: LocalIssuer, clock: Clock = SYSTEM, **env: str) -> FlaskClient:
    """A test client for a fresh app."""
    return app_for(issuer, clock, **env).test_client()


def bearer(token: str) -> dict[str, Any]:
    """Authorization header for a token."""
    return {"Authorization": f"Bearer {token}"}
