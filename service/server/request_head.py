"""Where an HTTP/1.1 request head ends, and whether it fits the size limits (RFC 9112 §2.1).

The worker's poller reads request heads into a buffer without blocking a thread; these small
predicates say when the buffer holds a whole head (or enough to refuse it). They look only for
the blank line that ends a head, so the request itself is still parsed by gunicorn's parser,
Python or C alike.
"""

from __future__ import annotations

import re
from typing import Final

#: The whole request head (request line and every field) in bytes. The largest legitimate
#: request carries a 16 KiB token plus "Bearer " and a DPoP proof of a few KiB; 64 KiB fits
#: that with room to spare and caps what one connection can make a worker buffer and parse.
MAX_HEAD_BYTES: Final = 65536

#: Verdicts of scan(): hand the connection to a thread, or wait for more bytes.
COMPLETE: Final = "complete"
INCOMPLETE: Final = "incomplete"
#: Refusals, as the HTTP status the client gets.
URI_TOO_LONG: Final = 414
HEAD_TOO_LARGE: Final = 431

_END = b"\r\n\r\n"

#: Transfer codings RFC 9112 defines (§7 chunked, §7.2 compress, deflate, gzip and the x- aliases).
DEFINED_CODINGS: Final = frozenset({b"chunked", b"compress", b"deflate", b"gzip", b"x-compress", b"x-gzip"})
_TRANSFER_ENCODING = re.compile(rb"\r\ntransfer-encoding:([^\r\n]*)", re.IGNORECASE)


def scan(head: bytes | bytearray, scanned: int, line_limit: int) -> str | int:
    """Classify the buffered bytes; ``scanned`` is how many of them an earlier call looked at."""
    end = head.find(_END, max(0, scanned - len(_END) + 1))
    stop = len(head) if end < 0 else end
    if _bare_lf(head, scanned, stop):
        # RFC 9112 §2.2: lines end with CRLF. Such a head never ends the way scan() looks for;
        # both of gunicorn's parsers refuse it at once (400), so hand it over now.
        return COMPLETE
    if end >= 0 and end + len(_END) <= MAX_HEAD_BYTES:
        return COMPLETE
    if end < 0 and len(head) <= MAX_HEAD_BYTES:
        return INCOMPLETE
    first_line_end = head.find(b"\r\n", 0, line_limit + 2)
    return URI_TOO_LONG if line_limit and first_line_end < 0 else HEAD_TOO_LARGE


def _bare_lf(head: bytes | bytearray, scanned: int, stop: int) -> bool:
    """True if an LF not preceded by CR appears in ``head[scanned:stop]``."""
    return head.count(b"\n", scanned, stop) != head.count(b"\r\n", max(0, scanned - 1), stop)


#: RFC 9110 §5.6.2: a method is a token.
_TOKEN = re.compile(rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")


def method_of(head: bytes | bytearray) -> str:
    """The request method a head starts with, or "" when none can be read."""
    start = 2 if head[:2] == b"\r\n" else 0
    space = head.find(b" ", start, start + 21)
    method = head[start:space] if space > start else b""
    return method.decode("latin-1") if _TOKEN.fullmatch(method) else ""


def path_of(head: bytes | bytearray) -> str | None:
    """The request target of a head's first line up to any query or fragment, or None.

    For the log of a request no parser accepted: a query string may carry a secret
    (``?access_token=...``, RFC 6750 §2.3), and an unparsed one is never logged.
    """
    start = 2 if head[:2] == b"\r\n" else 0
    end = head.find(b"\r\n", start)
    parts = [part for part in head[start : end if end >= 0 else len(head)].split(b" ") if part]
    if len(parts) < 2:
        return None
    return re.split(rb"[?#]", parts[1], maxsplit=1)[0].decode("latin-1")


def undefined_coding(head: bytes | bytearray) -> str | None:
    """The first transfer coding in a complete head that RFC 9112 does not define, if any.

    Checked here rather than left to the parser: gunicorn's Python parser still accepts
    "identity" before chunked (gone since RFC 7230), and the C parser answers an unknown coding
    with 400 where RFC 9112 §6.1 asks for 501; this way both parsers answer alike.
    """
    end = head.find(_END)
    for match in _TRANSFER_ENCODING.finditer(head, 0, end + 2 if end >= 0 else len(head)):
        for coding in match.group(1).split(b","):
            name = coding.strip(b" \t").lower()
            if name not in DEFINED_CODINGS:
                return name.decode("latin-1")
    return None


def request_line_malformed(head: bytes | bytearray) -> bool:
    """True unless the request line is three parts split by single spaces (RFC 9112 §3).

    gunicorn's Python parser refuses anything else; its C parser tolerates runs of spaces, so
    the worker checks here and both answer 400 alike.
    """
    start = 2 if head[:2] == b"\r\n" else 0
    end = head.find(b"\r\n", start)
    parts = head[start : end if end >= 0 else len(head)].split(b" ")
    return len(parts) != 3 or not all(parts)
