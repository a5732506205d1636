"""RFC 8705 §3: a certificate-bound token is accepted only with the certificate it is bound to."""

from __future__ import annotations

from typing import Any

from .cert_header import CertificateHeaderError
from .cert_header import certificate_thumbprint
from .errors import InvalidTokenError


def bound_certificate(claims: dict[str, Any]) -> str | None:
    """The token's ``cnf["x5t#S256"]`` when it is certificate-bound, else None."""
    cnf = claims.get("cnf")
    x5t = cnf.get("x5t#S256") if isinstance(cnf, dict) else None
    return x5t if isinstance(x5t, str) and x5t else None


def check_binding(claims: dict[str, Any], header: str | None, mode: str) -> None:
    """Refuse the token unless its binding holds under AUTH0_MTLS ``mode`` (401 invalid_token).

    ``header`` is the forwarded certificate header of the request (None when absent).
    """
    if mode == "disabled":
        return
    expected = bound_certificate(claims)
    if expected is None:
        if mode == "required":
            raise InvalidTokenError(_UNBOUND, reason="mtls_required")
        return
    if header is None or not header.strip():
        raise InvalidTokenError(_MISSING, reason="mtls_missing")
    try:
        presented = certificate_thumbprint(header)
    except CertificateHeaderError:
        raise InvalidTokenError(_MALFORMED, reason="mtls_malformed") from None
    if presented != expected:
        raise InvalidTokenError(_MISMATCH, reason="mtls_mismatch")


_UNBOUND = "This API accepts certificate-bound tokens only (RFC 8705)."
_MISSING = "The token is bound to a client certificate, and none was presented."
_MALFORMED = "The client certificate could not be read."
_MISMATCH = "The token is bound to a different client certificate."
