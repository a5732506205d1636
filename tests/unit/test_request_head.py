"""Where a request head ends and when it breaks a limit, byte by byte (service.request_head)."""

from __future__ import annotations

import pytest

from service.server import request_head
from service.server.request_head import COMPLETE
from service.server.request_head import HEAD_TOO_LARGE
from service.server.request_head import INCOMPLETE
from service.server.request_head import MAX_HEAD_BYTES
from service.server.request_head import URI_TOO_LONG

LINE_LIMIT = 4094


@pytest.mark.parametrize(
    ("head", "verdict"),
    [
        (b"", INCOMPLETE),
        (b"GET / HTTP/1.1\r\nHost: x\r\n", INCOMPLETE),
        (b"GET / HTTP/1.1\r\nHost: x\r\n\r", INCOMPLETE),
        (b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", COMPLETE),
        (b"GET / HTTP/1.1\r\nHost: x\r\n\r\nbody after the head", COMPLETE),
        (b"GET / HTTP/1.1\nHost: x", COMPLETE),  # bare LF: the parser refuses it at once
        (b"GET / HTTP/1.1\r\nX: " + b"a" * (MAX_HEAD_BYTES - 23) + b"\r\n\r\n", COMPLETE),
        (b"GET / HTTP/1.1\r\nX: " + b"a" * (MAX_HEAD_BYTES - 22) + b"\r\n\r\n", HEAD_TOO_LARGE),
        (b"GET / HTTP/1.1\r\nX: " + b"a" * MAX_HEAD_BYTES, HEAD_TOO_LARGE),
        (b"GET /" + b"a" * MAX_HEAD_BYTES, URI_TOO_LONG),
    ],
    ids=["empty", "partial", "almost", "complete", "pipelined", "bare-lf", "at-limit", "over-limit",
         "over-limit-incomplete", "endless-request-line"],
)
def test_scan_classifies_buffered_heads(head: bytes, verdict: object) -> None:
    """Complete heads go to a thread, partial ones wait, oversized ones are refused."""
    assert request_head.scan(head, 0, LINE_LIMIT) == verdict


def test_scan_finds_a_head_end_split_across_reads() -> None:
    """The blank line may arrive one byte at a time; each scan looks only at new bytes (linear)."""
    head = b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"
    scanned = 0
    verdicts = []
    for end in range(1, len(head) + 1):
        verdicts.append(request_head.scan(head[:end], scanned, LINE_LIMIT))
        scanned = end
    assert verdicts == [INCOMPLETE] * (len(head) - 1) + [COMPLETE]


def test_crlf_split_across_reads_is_not_a_bare_lf() -> None:
    """A CR at the end of one read and its LF at the start of the next are one line end."""
    head = b"GET / HTTP/1.1\r\nHost: x\r"
    assert request_head.scan(head, 0, LINE_LIMIT) == INCOMPLETE
    assert request_head.scan(head + b"\nX: y", len(head), LINE_LIMIT) == INCOMPLETE


@pytest.mark.parametrize(
    ("head", "method"),
    [(b"GET / HTTP/1.1\r\n", "GET"), (b"\r\nPOST / HTTP/1.1", "POST"), (b"", ""), (b"GARBAGE", "")],
)
def test_method_of_reads_the_first_token(head: bytes, method: str) -> None:
    """The method labels metrics for refused heads ("" when there is none)."""
    assert request_head.method_of(head) == method


@pytest.mark.parametrize(
    ("fields", "undefined"),
    [
        (b"", None),
        (b"Transfer-Encoding: chunked\r\n", None),
        (b"transfer-encoding: gzip, CHUNKED\r\n", None),
        (b"Transfer-Encoding: xchunked\r\n", "xchunked"),
        (b"Transfer-Encoding: identity, chunked\r\n", "identity"),
        (b"Transfer-Encoding: chunked\r\nTransfer-Encoding: identity\r\n", "identity"),
        (b"Transfer-Encoding: chunked,\r\n", ""),
        (b"X-Transfer-Encoding: identity\r\n", None),
    ],
)
def test_undefined_coding_names_codings_rfc9112_does_not_define(fields: bytes, undefined: object) -> None:
    """Every Transfer-Encoding field of the head counts; other fields and the body do not."""
    head = b"POST / HTTP/1.1\r\nHost: x\r\n" + fields + b"\r\nTransfer-Encoding: identity\r\n"
    assert request_head.undefined_coding(head) == undefined


@pytest.mark.parametrize(
    ("head", "malformed"),
    [
        (b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", False),
        (b"\r\nGET / HTTP/1.1\r\n\r\n", False),
        (b"GET  / HTTP/1.1\r\n\r\n", True),
        (b"GET / HTTP/1.1 \r\n\r\n", True),
        (b"GET /a b HTTP/1.1\r\n\r\n", True),
        (b"GET /\r\n\r\n", True),
    ],
)
def test_request_line_must_be_three_parts_split_by_single_spaces(head: bytes, malformed: bool) -> None:
    """Runs of spaces, spaces in the target and missing parts are malformed (RFC 9112 §3)."""
    assert request_head.request_line_malformed(head) is malformed
