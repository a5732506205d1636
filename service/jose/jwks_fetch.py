"""Fetching an issuer's JWKS over HTTP: OIDC discovery, then the key set, each bounded in time and size."""

from __future__ import annotations

import json
import re
import time
import urllib.error
import urllib.request
from typing import Any

from ..config import discovery_url
from ..config import fallback_jwks_url

_MAX_AGE = re.compile(r"(?:^|,)\s*max-age\s*=\s*\"?(\d+)\"?", re.IGNORECASE)
#: The only URL schemes we fetch from; urllib would otherwise also open file:// and ftp://.
_SCHEMES = ("http://", "https://")


class FetchError(Exception):
    """A discovery or JWKS fetch failed; the message is safe to log."""

    def __init__(self, message: str, *, status: int | None = None) -> None:
        super().__init__(message)
        #: The HTTP status the server answered with, if it answered at all.
        self.status = status


def discover(issuer: str, *, timeout: float, limit: int) -> str:
    """Find jwks_uri via OIDC discovery, falling back to ``{issuer}.well-known/jwks.json``."""
    try:
        body, _ = get(discovery_url(issuer), timeout=timeout, limit=limit)
        doc = json.loads(body)
    except FetchError as exc:
        if not _is_not_found(exc):
            raise
        return fallback_jwks_url(issuer)
    except (ValueError, RecursionError):
        return fallback_jwks_url(issuer)
    if not isinstance(doc, dict):
        return fallback_jwks_url(issuer)
    # OIDC Discovery §4.3: the document's issuer must be identical to the one we trust.
    if doc.get("issuer") != issuer:
        raise FetchError(
            f"discovery names issuer {doc.get('issuer')!r}, not {issuer!r}: AUTH0_ISSUER must "
            "match the issuer exactly, trailing slash included"
        )
    uri = doc.get("jwks_uri")
    if not isinstance(uri, str) or not uri.startswith(_SCHEMES):
        return fallback_jwks_url(issuer)
    if downgrades(issuer, uri):
        raise FetchError(f"discovery names a plain-http jwks_uri {uri!r} for an https issuer")
    return uri


def get(url: str, *, timeout: float, limit: int) -> tuple[bytes, int | None]:
    """GET a URL with timeouts and a size cap; return the body and Cache-Control max-age."""
    if not url.startswith(_SCHEMES):
        raise FetchError("refusing a non-http(s) URL")
    request = urllib.request.Request(url, headers={"Accept": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            body = _read_capped(response, limit, time.monotonic() + timeout)
            cache_control = response.headers.get("Cache-Control", "")
    except urllib.error.HTTPError as exc:
        raise FetchError(f"HTTP {exc.code} from {url}", status=exc.code) from None
    except (urllib.error.URLError, OSError, ValueError) as exc:
        reason = getattr(exc, "reason", exc)
        raise FetchError(f"cannot reach {url}: {reason}") from None
    if body is None:
        raise FetchError(f"response from {url} exceeds {limit} bytes")
    match = _MAX_AGE.search(cache_control)
    return body, int(match.group(1)) if match else None


def _read_capped(response: Any, limit: int, deadline: float) -> bytes | None:
    """Read at most ``limit`` bytes before ``deadline``; None if the body is larger.

    The socket timeout bounds each read; the deadline bounds a server that dribbles bytes.
    """
    chunks: list[bytes] = []
    size = 0
    while chunk := response.read1(65536):
        size += len(chunk)
        if size > limit:
            return None
        chunks.append(chunk)
        if time.monotonic() > deadline:
            raise OSError("body not received within the timeout")
    return b"".join(chunks)


def downgrades(issuer: str, jwks_uri: str) -> bool:
    """An https issuer's keys offered over plain http, where anyone on the path could swap them.

    OpenID Connect Discovery 1.0 §7.1 and RFC 8414 §6 require TLS for the metadata and what it
    points to (https://openid.net/specs/openid-connect-discovery-1_0.html#TLSRequirements).
    """
    return issuer.lower().startswith("https://") and not jwks_uri.lower().startswith("https://")


def _is_not_found(exc: FetchError) -> bool:
    """A 404 from discovery: the issuer publishes no OIDC metadata (Auth0's fixed path then)."""
    return exc.status == 404
