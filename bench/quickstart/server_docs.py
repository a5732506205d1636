"""The quickstart's server as Auth0's docs print it: the same three routes, no ``cross_origin``.

Mirrors the Flask API quickstart on auth0.com/docs (Authlib), which differs from the samples
repository's ``server.py`` (beside it) only by leaving CORS out. Run with
`gunicorn --chdir bench/quickstart server_docs:APP`. Reads AUTH0_ISSUER and API_IDENTIFIER.
"""

from __future__ import annotations

from os import environ as env

from authlib.integrations.flask_oauth2 import ResourceProtector
from flask import Flask
from flask import jsonify
from validator import Auth0JWTBearerTokenValidator

ISSUER = env.get("AUTH0_ISSUER") or f"https://{env.get('AUTH0_DOMAIN')}/"
API_IDENTIFIER = env["API_IDENTIFIER"]

require_auth = ResourceProtector()
validator = Auth0JWTBearerTokenValidator(ISSUER, API_IDENTIFIER)
require_auth.register_token_validator(validator)

APP = Flask(__name__)


@APP.route("/api/public")
def public():
    """No access token required."""
    response = "Hello from a public endpoint! You don't need to be authenticated to see this."
    return jsonify(message=response)


@APP.route("/api/private")
@require_auth(None)
def private():
    """A valid access token is required."""
    response = "Hello from a private endpoint! You need to be authenticated to see this."
    return jsonify(message=response)


@APP.route("/api/private-scoped")
@require_auth("read:messages")
def private_scoped():
    """A valid access token and the read:messages scope are required."""
    response = (
        "Hello from a private endpoint! You need to be authenticated and have a scope of "
        "read:messages to see this."
    )
    return jsonify(message=response)
