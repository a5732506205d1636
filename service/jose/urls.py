"""HTTP URI comparison for DPoP's ``htu`` (RFC 9449 §4.3 step 9, RFC 3986 §6.2.2-6.2.3)."""

from __future__ import annotations

import re
from collections.abc import Mapping
from functools import lru_cache
from typing import Any
from urllib.parse import quote
from urllib.parse import urlsplit

_DEFAULT_PORTS = {"http": 80, "https": 443}
_PERCENT = re.compile(r"%([0-9A-Fa-f]{2})")
#: RFC 3986 §2.3: percent-encoded unreserved characters are equivalent to the characters.
_UNRESERVED = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~")
#: What may appear in a path as sent: RFC 3986 pchar plus '/' and '%' (checked separately).
_PATH_CHARS = re.compile(r"[A-Za-z0-9\-._~!$&'()*+,;=:@/%]*")
_BAD_PERCENT = re.compile(r"%(?![0-9A-Fa-f]{2})")


@lru_cache(maxsize=1024)
def normalize(url: str) -> str | None:
    """Return the comparable form of an absolute http(s) URI without query and fragment.

    Syntax- and scheme-based normalisation only (RFC 3986 §6.2.2, §6.2.3): case of scheme,
    host and percent-encodings, default ports, unreserved percent-encodings, dot segments and
    the empty path. None when the value is not an absolute http(s) URI. Memoised: a client
    signs the same few URIs over and over.
    """
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:  # a bad port or an unbalanced IPv6 bracket
        return None
    scheme = parts.scheme.lower()
    host = parts.hostname
    if scheme not in _DEFAULT_PORTS or not host or parts.username is not None:
        return None
    if parts.password is not None or any(c in host for c in "/\\ %@"):
        return None
    path = parts.path
    if not _PATH_CHARS.fullmatch(path) or _BAD_PERCENT.search(path):
        return None
    host = f"[{host}]" if ":" in host else host
    authority = host if port is None or port == _DEFAULT_PORTS[scheme] else f"{host}:{port}"
    return f"{scheme}://{authority}{_remove_dot_segments(_PERCENT.sub(_percent, path)) or '/'}"


def _percent(match: re.Match[str]) -> str:
    """Decode an unreserved octet; upper-case every other percent-encoding (RFC 3986 §6.2.2.1)."""
    char = chr(int(match.group(1), 16))
    return char if char in _UNRESERVED else "%" + match.group(1).upper()


def _remove_dot_segments(path: str) -> str:
    """RFC 3986 §5.2.4 on an absolute path (segment form)."""
    if "." not in path:
        return path
    output: list[str] = []
    segments = path.split("/")
    for index, segment in enumerate(segments):
        last = index == len(segments) - 1
        if segment == ".":
            if last:
                output.append("")
        elif segment == "..":
            if len(output) > 1:
                output.pop()
            if last:
                output.append("")
        else:
            output.append(segment)
    return "/".join(output)


def has_dot_segments(path: str) -> bool:
    """True if a "." or ".." segment appears, also percent-encoded (RFC 3986 §2.3, §3.3)."""
    decoded = _PERCENT.sub(_percent, path) if "%" in path else path
    return "." in decoded and any(segment in (".", "..") for segment in decoded.split("/"))


def request_uris(environ: Mapping[str, Any], public_urls: tuple[str, ...]) -> tuple[str, ...]:
    """The URIs the client may have addressed, without query: one must match a proof's ``htu``.

    The path is the request target as sent (gunicorn's RAW_URI), so percent-encodings survive;
    scheme, host and port come from each of ``public_urls`` when set (a proxy or ingress in
    front, one entry per name the service is reached under), else from what the WSGI server
    derived (Host, and X-Forwarded-Proto from trusted peers only).
    """
    raw = environ.get("RAW_URI") or environ.get("REQUEST_URI") or ""
    if raw.startswith("/"):
        path = raw.partition("?")[0].partition("#")[0]
    elif raw:  # absolute-form request target (RFC 9112 §3.2.2)
        path = urlsplit(raw).path or "/"
    else:
        path = quote(environ.get("SCRIPT_NAME", "") + environ.get("PATH_INFO", ""), safe="/:@!$&'()*+,;=-._~")
    if has_dot_segments(path):
        # RFC 3986 §6.2.2.3 would resolve them, but the app routes the path as sent (a <path:>
        # converter takes "../x" as its value): no proof names the resource this request gets.
        return ()
    if public_urls:
        return tuple(public_url + path for public_url in public_urls)
    host = environ.get("HTTP_HOST") or f"{environ.get('SERVER_NAME', '')}:{environ.get('SERVER_PORT', '')}"
    if any(c in host for c in "/\\@?# "):
        host = ""  # no URI normalises without a host: the htu check refuses
    return (f"{environ.get('wsgi.url_scheme', 'http')}://{host}{path}",)
