"""The original request a gateway asks about, read from its headers (forward-auth, ext_authz).

First match wins: ``X-Original-URL`` + ``X-Original-Method`` (nginx, ingress-nginx); then
``X-Forwarded-Method`` + ``X-Forwarded-Uri`` with ``X-Forwarded-Proto`` / ``-Host`` (Traefik,
Caddy); else the path after the decision prefix, with this request's method and Host (Envoy
``ext_authz`` with ``path_prefix``). Whatever is present must be well-formed.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any
from typing import NamedTuple
from urllib.parse import unquote
from urllib.parse import urlsplit

from ..gateway_policy import METHODS
from ..jose.urls import has_dot_segments

#: RFC 3986 §3.2: host (reg-name, IPv4 or bracketed IPv6 literal) and an optional port.
_AUTHORITY = re.compile(r"(?P<host>[A-Za-z0-9._~!$&'()*+,;=-]+|\[[0-9A-Fa-f:.]+\])(?::(?P<port>[0-9]{1,5}))?")
#: A request target as sent: visible ASCII without '#' (RFC 9112 §3.2: no spaces or controls).
#: Lenient beyond RFC 3986 (``filter[a]=1``, ``|``) as servers are.
_TARGET = re.compile(r"/[\x21\x22\x24-\x7e]*")
#: A broken percent-encoding, or an encoded control character (CR, LF, NUL, DEL, ...): header
#: injection at the upstream.
_BAD_ENCODING = re.compile(r"%(?![0-9A-Fa-f]{2})|%[01][0-9A-Fa-f]|%7[Ff]")


class MalformedOriginalRequest(ValueError):
    """The gateway's description of the original request is present but unusable."""


class OriginalRequest(NamedTuple):
    """The request the client sent to the gateway (a tuple: built on every decision, cheaply)."""

    method: str
    scheme: str
    #: Host and port as the client addressed them (the DPoP ``htu`` authority).
    authority: str
    #: Lower-case host without port: what a rule's ``host`` is compared with.
    hostname: str
    #: The path as sent (percent-encodings kept) and the query without '?'.
    path: str
    query: str

    @property
    def url(self) -> str:
        """scheme://authority/path, without query: what a DPoP proof's ``htu`` must match."""
        return f"{self.scheme}://{self.authority}{self.path}"

    @property
    def decoded_path(self) -> str:
        """The path percent-decoded, as Flask matches routes (PATH_INFO)."""
        return unquote(self.path, errors="replace")


def read_original(environ: Mapping[str, Any], prefix: str) -> OriginalRequest:
    """The original request from the gateway's headers in a WSGI environ (see the module doc)."""
    url = environ.get("HTTP_X_ORIGINAL_URL")
    if url is not None:
        return _from_url(url, environ.get("HTTP_X_ORIGINAL_METHOD"))
    method = environ.get("HTTP_X_FORWARDED_METHOD")
    uri = environ.get("HTTP_X_FORWARDED_URI")
    if method is not None or uri is not None:
        if method is None or uri is None:
            raise MalformedOriginalRequest("X-Forwarded-Method and X-Forwarded-Uri come together")
        scheme = environ.get("HTTP_X_FORWARDED_PROTO", "http").strip().lower()
        authority = environ.get("HTTP_X_FORWARDED_HOST") or environ.get("HTTP_HOST", "")
        return _build(method, scheme, authority, uri)
    raw = environ.get("RAW_URI") or environ.get("REQUEST_URI") or ""
    if not raw.startswith("/"):  # absolute-form request target (RFC 9112 §3.2.2)
        parts = urlsplit(raw)
        raw = parts.path + ("?" + parts.query if parts.query else "")
    rest = raw[len(prefix):] if raw.startswith(prefix) else ""
    return _build(
        environ.get("REQUEST_METHOD", ""),
        environ.get("wsgi.url_scheme", "http"),
        environ.get("HTTP_HOST", ""),
        rest if rest.startswith("/") else "/" + rest,  # "/auth/check" alone asks about "/"
    )


def _from_url(url: str, method: str | None) -> OriginalRequest:
    """Mode 1: an absolute URL (RFC 3986 §4.3: scheme "://" authority path-abempty [?query])."""
    if method is None:
        raise MalformedOriginalRequest("X-Original-URL needs X-Original-Method")
    scheme, separator, rest = url.strip().partition("://")
    if not separator:
        raise MalformedOriginalRequest("X-Original-URL must be an absolute http(s) URL")
    # The authority ends at the first '/', '?' or '#' (RFC 3986 §3.2); str.partition is C-fast.
    end = len(rest)
    for delimiter in "/?#":
        found = rest.find(delimiter, 0, end)
        if found != -1:
            end = found
    authority, target = rest[:end], rest[end:]
    if "@" in authority:
        raise MalformedOriginalRequest("X-Original-URL must not carry credentials")
    if not target.startswith("/"):
        target = "/" + target
    return _build(method, scheme, authority, target.partition("#")[0])


def _build(method: str, scheme: str, authority: str, target: str) -> OriginalRequest:
    """Check each part and assemble the original request."""
    method = method.strip()
    if method not in METHODS:
        raise MalformedOriginalRequest("the original method is not an HTTP method")
    scheme = scheme.lower()
    if scheme not in ("http", "https"):
        raise MalformedOriginalRequest("the original scheme must be http or https")
    authority = authority.strip()
    found = _AUTHORITY.fullmatch(authority)
    if found is None or (found["port"] is not None and int(found["port"]) > 65535):
        raise MalformedOriginalRequest("the original host is not a host[:port]")
    if not _TARGET.fullmatch(target) or _BAD_ENCODING.search(target):
        raise MalformedOriginalRequest("the original path or query is not a well-formed request target")
    path, _, query = target.partition("?")
    if has_dot_segments(path):
        # A rule is matched on the path as sent while the upstream may resolve "../" (RFC 3986
        # §5.2.4): the two would disagree on the resource, so no decision is made on such a path.
        raise MalformedOriginalRequest("the original path has dot segments")
    return OriginalRequest(
        method=method,
        scheme=scheme,
        authority=authority,
        hostname=found["host"].lower(),
        path=path,
        query=query,
    )
