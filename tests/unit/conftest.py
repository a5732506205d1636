"""Shared in-process fixtures: one app and its test client per module, against the module's issuer.

A module that needs other settings overrides ``app`` (e.g. with ``app_for(module_issuer, X="y")``)
and keeps ``client``.
"""

from __future__ import annotations

import pytest
from flask import Flask
from flask.testing import FlaskClient

from tests.support.appkit import app_for
from tests.support.issuer import LocalIssuer


@pytest.fixture(scope="module")
def app(module_issuer: LocalIssuer) -> Flask:
    """One app (with its own JWKS cache) for the module, trusting the module's issuer."""
    return app_for(module_issuer)


@pytest.fixture(scope="module")
def client(app: Flask) -> FlaskClient:
    """A test client of the module's app."""
    return app.test_client()
