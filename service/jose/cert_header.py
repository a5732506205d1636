"""The client certificate a TLS-terminating proxy forwards, read into its RFC 8705 thumbprint.

The format is detected from the value (each proxy sends one of these):

- URL-encoded PEM: nginx ``$ssl_client_escaped_cert``, ingress-nginx ``ssl-client-cert``;
- RFC 9440 ``Client-Cert``: a structured-field byte sequence, ``:base64(DER):``;
- Envoy ``X-Forwarded-Client-Cert``: ``Hash=<hex SHA-256>;Cert="<URL-encoded PEM>";...``;
- Traefik ``passTLSClientCert``: base64 of the DER without PEM armour (URL-encoded or not).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import re
from functools import lru_cache
from typing import Final
from urllib.parse import unquote

from cryptography import x509
from cryptography.hazmat.primitives import hashes

#: A leaf certificate is 1-2 KiB of DER; XFCC may add the chain. Longer values are not parsed.
MAX_HEADER_CHARS: Final = 32768
#: RFC 7468 §2: the first certificate of a PEM text (the leaf; a chain may follow).
_PEM: Final = re.compile(
    r"-----BEGIN CERTIFICATE-----([A-Za-z0-9+/=\s]+?)-----END CERTIFICATE-----"
)
#: Envoy's XFCC element keys (https://www.envoyproxy.io/docs/envoy/latest/configuration/http/http_conn_man/headers#x-forwarded-client-cert).
#: A base64 DER certificate always starts "MII", so a leading key tells XFCC apart.
_XFCC_START: Final = re.compile(r"(?i)\s*(by|hash|cert|chain|subject|uri|dns)=")
_WHITESPACE: Final = re.compile(r"\s+")


class CertificateHeaderError(ValueError):
    """The header value is not a client certificate in any accepted format."""


def thumbprint_of(der: bytes) -> str:
    """RFC 8705 §3.1 ``x5t#S256``: base64url (unpadded) of the SHA-256 of the certificate's DER."""
    return _b64url(hashlib.sha256(der).digest())


def certificate_thumbprint(value: str) -> str:
    """The ``x5t#S256`` of the certificate in a forwarded header value, whatever its format.

    Raises ``CertificateHeaderError`` when the value is not a certificate in any accepted format.
    """
    if len(value) <= _CACHED_MAX_CHARS:
        return _cached_thumbprint(value)
    return _thumbprint(value)


#: Header values up to this size are remembered (256 of them, so at most 2 MiB per process): one
#: client sends the same certificate on every request, and parsing it costs more than the rest of
#: the binding check. A leaf certificate as URL-encoded PEM is 1-4 KiB.
_CACHED_MAX_CHARS: Final = 8192


@lru_cache(maxsize=256)
def _cached_thumbprint(value: str) -> str:
    """``_thumbprint``, remembered (failures are not: lru_cache keeps only returned values)."""
    return _thumbprint(value)


def _thumbprint(value: str) -> str:
    """Detect the format and compute the thumbprint."""
    value = value.strip()
    if not value or len(value) > MAX_HEADER_CHARS:
        raise CertificateHeaderError("empty or oversized certificate header")
    if len(value) > 1 and value[0] == ":" and value[-1] == ":":
        return _thumbprint_der(_b64decode(value[1:-1]))
    if _XFCC_START.match(value):
        return _xfcc_thumbprint(value)
    decoded = _unquote(value)
    if "-----BEGIN" in decoded:
        return _thumbprint_der(_pem_der(decoded))
    # Traefik separates several certificates with commas; the client's own comes first.
    return _thumbprint_der(_b64decode(decoded.split(",", 1)[0]))


def _pem_der(text: str) -> bytes:
    """The DER of the first certificate of a PEM text (whitespace inside the body ignored)."""
    match = _PEM.search(text)
    if match is None:
        raise CertificateHeaderError("no PEM certificate")
    return _b64decode(match.group(1))


def _thumbprint_der(der: bytes) -> str:
    """Check that ``der`` is an X.509 certificate (cryptography parses it) and hash it."""
    try:
        certificate = x509.load_der_x509_certificate(der)
    except ValueError:
        raise CertificateHeaderError("not an X.509 certificate") from None
    return _b64url(certificate.fingerprint(hashes.SHA256()))


def _xfcc_thumbprint(value: str) -> str:
    """Envoy XFCC: the first element's ``Cert`` (checked against ``Hash`` when both) or ``Hash``.

    Each proxy appends its element after a comma, so the first one describes the client that
    connected to the edge proxy; the edge must overwrite (SANITIZE_SET) what clients send.
    """
    element = _xfcc_elements(value)[0]
    cert = element.get("cert")
    digest = element.get("hash")
    if digest is not None:
        try:
            raw = bytes.fromhex(digest)
        except ValueError:
            raise CertificateHeaderError("XFCC Hash is not hex") from None
        if len(raw) != 32:
            raise CertificateHeaderError("XFCC Hash is not a SHA-256")
        digest = _b64url(raw)
    if cert is not None:
        thumbprint = _thumbprint_der(_pem_der(_unquote(cert)))
        if digest is not None and not hmac.compare_digest(digest, thumbprint):
            raise CertificateHeaderError("XFCC Hash and Cert disagree")
        return thumbprint
    if digest is None:
        raise CertificateHeaderError("XFCC element without Hash or Cert")
    return digest


def _xfcc_elements(value: str) -> list[dict[str, str]]:
    """Split XFCC into elements of lower-cased key -> value (double quotes and escapes removed)."""
    elements: list[dict[str, str]] = []
    pairs: dict[str, str] = {}
    key, text, quoted, escaped, in_value = "", [], False, False, False
    for char in value + ",":
        if escaped:
            text.append(char)
            escaped = False
        elif quoted:
            if char == "\\":
                escaped = True
            elif char == '"':
                quoted = False
            else:
                text.append(char)
        elif char == '"' and in_value:
            quoted = True
        elif char == "=" and not in_value:
            key, text, in_value = "".join(text).strip().lower(), [], True
        elif char in ";,":
            if in_value:
                if key in pairs:
                    raise CertificateHeaderError("XFCC repeats a key")
                pairs[key] = "".join(text).strip()
            elif "".join(text).strip():
                raise CertificateHeaderError("XFCC pair without '='")
            key, text, in_value = "", [], False
            if char == ",":
                if pairs:
                    elements.append(pairs)
                pairs = {}
        else:
            text.append(char)
    if quoted or not elements:
        raise CertificateHeaderError("malformed XFCC")
    return elements


def _unquote(text: str) -> str:
    """Percent-decoding as nginx escapes (RFC 3986 §2.1); '+' stays '+' (it is base64 here)."""
    try:
        return unquote(text, errors="strict")
    except UnicodeDecodeError:
        raise CertificateHeaderError("percent-encoding is not UTF-8") from None


def _b64decode(text: str) -> bytes:
    """Standard base64 (padding optional, whitespace ignored), strictly decoded."""
    text = _WHITESPACE.sub("", text)
    if not text:
        raise CertificateHeaderError("empty base64")
    try:
        return binascii.a2b_base64(text + "=" * (-len(text) % 4), strict_mode=True)
    except (binascii.Error, ValueError):
        raise CertificateHeaderError("not base64") from None


def _b64url(data: bytes) -> str:
    """Unpadded base64url (RFC 4648 §5)."""
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")
