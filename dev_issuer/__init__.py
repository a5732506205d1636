"""Local DEVELOPMENT issuer: an Auth0-style client-credentials authorization server for offline use.

Development tooling only - never deploy it and never point production at it. It mints RS256 JWT
access tokens shaped like Auth0 machine-to-machine tokens so the API can be exercised without an
Auth0 tenant; the API validates them through its normal path with no bypass.
Run with ``python -m dev_issuer``.
"""

from dev_issuer.app import create_app
from dev_issuer.config import IssuerConfigError
from dev_issuer.config import IssuerSettings

__all__ = ["IssuerConfigError", "IssuerSettings", "create_app"]
