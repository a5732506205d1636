"""The quickstart's server: three routes behind Authlib's Flask ResourceProtector.

Mirrors auth0-samples/auth0-python-api-samples (pyvnext-rewrite) `server.py`; run with
`gunicorn --chdir bench/quickstart server:APP`. Reads AUTH0_ISSUER (or AUTH0_DOMAIN) and
API_IDENTIFIER; no dotenv.
"""

from __future__ import annotations

from os import environ as env

from authlib.integrations.flask_oauth2 import ResourceProtector
from flask import Flask
from flask import jsonify
from flask_cors import cross_origin
from validator import Auth0JWTBearerTokenValidator

AUTH0_DOMAIN = env.get("AUTH0_DOMAIN")
ISSUER = env.get("AUTH0_ISSUER") or f"https://{AUTH0_DOMAIN}/"
API_IDENTIFIER = env["API_IDENTIFIER"]

require_oauth = ResourceProtector()
validator = Auth0JWTBearerTokenValidator(ISSUER, API_IDENTIFIER)
require_oauth.register_token_validator(validator)

APP = Flask(__name__)


@APP.route("/api/public")
@cross_origin(headers=["Content-Type", "Authorization"])
def public():
    """No access token required to access this route."""
    response = "Hello from a public endpoint! You don't need to be authenticated to see this."
    return jsonify(message=response)


@APP.route("/api/private")
@cross_origin(headers=["Content-Type", "Authorization"])
@cross_origin(headers=["Access-Control-Allow-Origin", "http://localhost:3000"])
@require_oauth(None)
def private():
    """A valid access token is required to access this route."""
    response = "Hello from a private endpoint! You need to be authenticated to see this."
    return jsonify(message=response)


@APP.route("/api/private-scoped")
@cross_origin(headers=["Content-Type", "Authorization"])
@cross_origin(headers=["Access-Control-Allow-Origin", "http://localhost:3000"])
@require_oauth("read:messages")
def private_scoped():
    """A valid access token and the read:messages scope are required to access this route."""
    response = (
        "Hello from a private endpoint! You need to be authenticated and have a scope of "
        "read:messages to see this."
    )
    return jsonify(message=response)
