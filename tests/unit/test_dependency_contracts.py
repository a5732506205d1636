"""Contracts with libraries we lean on beyond their plainest use: each fails by name on an upgrade.

Add an entry when code relies on a library behaviour that is public but easy to change quietly.
"""

from __future__ import annotations

from authlib.oauth2 import OAuth2Error
from flask import Flask
from flask import Response
from flask_cors import cross_origin

from service.errors import AuthError


def test_authlib_oauth2error_init_sets_nothing_autherror_lacks() -> None:
    """service/errors.py skips OAuth2Error.__init__ (it re-validates fixed descriptions per
    refusal); every attribute that __init__ sets must still exist on our errors."""
    reference = OAuth2Error(description="x", status_code=401, uri="https://example.com/")
    ours = AuthError("x")
    missing = sorted(name for name in vars(reference) if not hasattr(ours, name))
    assert not missing, f"authlib OAuth2Error.__init__ now sets {missing}: set them in AuthError"


def test_flask_cors_cross_origin_decorates_a_response_passthrough() -> None:
    """service/cors.py wraps a function returning the response it is given with
    flask_cors.cross_origin; the wrapper must add the CORS headers to that very response."""
    app = Flask(__name__)
    add = cross_origin(origins=["https://spa.example"], automatic_options=False)(
        lambda response: response
    )
    with app.test_request_context("/api/x", headers={"Origin": "https://spa.example"}):
        given = Response("body")
        answered = add(given)
    assert answered is given, "flask_cors.cross_origin no longer returns the wrapped response"
    assert given.headers.get("Access-Control-Allow-Origin") == "https://spa.example", (
        "flask_cors.cross_origin no longer sets Access-Control-Allow-Origin"
    )
