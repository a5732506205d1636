"""More than one issuer from one DEVELOPMENT issuer process: ``{issuer}{path}/`` per extra path.

Lets the API's multi-issuer support (several custom domains of one tenant) be tried end to end
locally: each extra issuer has its own signing key, discovery and token endpoint.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from werkzeug.middleware.dispatcher import DispatcherMiddleware

from dev_issuer.app import create_app
from dev_issuer.config import IssuerSettings
from dev_issuer.keys import SigningKey


def extra_issuers(settings: IssuerSettings) -> list[tuple[IssuerSettings, SigningKey]]:
    """Settings and a fresh key for each extra issuer (same clients and audiences)."""
    return [
        (
            dataclasses.replace(
                settings, issuer=f"{settings.issuer}{path}/", key_file=None, extra_paths=()
            ),
            SigningKey.generate(),
        )
        for path in settings.extra_paths
    ]


def with_extra_issuers(app: Any, settings: IssuerSettings) -> Any:
    """Mount each extra issuer's app under ``/{path}`` next to the primary one."""
    if not settings.extra_paths:
        return app
    mounts: dict[str, Any] = {
        f"/{path}": create_app(extra, key)
        for path, (extra, key) in zip(settings.extra_paths, extra_issuers(settings), strict=True)
    }
    return DispatcherMiddleware(app, mounts)
