"""Edge cases against real gunicorn: requests without Host, malformed request lines and the log,
dot segments and odd proof keys with DPoP."""

from __future__ import annotations

import json
import secrets
from typing import Any

import pytest
from joserfc.jwk import ECKey

from dev_issuer.client import make_proof
from tests.support.issuer import LocalIssuer
from tests.support.procs import Server
from tests.support.procs import ServerFactory
from tests.support.procs import metric_sum

pytestmark = pytest.mark.slow

KEY = ECKey.generate_key("P-256", private=True)


def _has_c_parser() -> bool:
    """True when gunicorn_h1c is importable (bin/test installs it where a compiler exists)."""
    try:
        import gunicorn_h1c  # noqa: F401
    except ImportError:
        return False
    return True


PARSERS = ["python", pytest.param("fast", marks=pytest.mark.skipif(not _has_c_parser(), reason="no h1c"))]


def status_and_body(answer: bytes) -> tuple[int, bytes]:
    """Status code and body of a raw HTTP/1.1 answer."""
    head, _, body = answer.partition(b"\r\n\r\n")
    return int(head.split(b" ", 2)[1]), body


def unmatched(server: Server, status: str) -> float:
    """http_requests_total of requests refused before any route."""
    return metric_sum(server.metrics(), "http_requests_total", route="unmatched", status=status)


@pytest.mark.parametrize("parser", PARSERS)
def test_http11_without_host_is_400_json_and_counted_like_other_refusals(
    parser: str, module_issuer: LocalIssuer, module_gunicorn: ServerFactory
) -> None:
    """RFC 9112 §3.2: HTTP/1.1 without Host (or with two) is 400; HTTP/1.0 needs none."""
    server = module_gunicorn(module_issuer, workers=1, args=("--http-parser", parser))
    before = unmatched(server, "400")
    for raw in (b"GET /api/public HTTP/1.1\r\n\r\n",
                b"GET /api/public HTTP/1.1\r\nX-Forwarded-Host: a.example\r\n\r\n",
                b"GET /api/public HTTP/1.1\r\nHost: a.example\r\nHost: b.example\r\n\r\n"):
        status, body = status_and_body(server.send_raw(raw))
        assert status == 400, (raw, body)
        assert json.loads(body)["error"] == "invalid_request"
        assert body == json.dumps(json.loads(body), separators=(",", ":")).encode() + b"\n", "as jsonify"
    assert unmatched(server, "400") == before + 3
    status, _ = status_and_body(server.send_raw(b"GET /api/public HTTP/1.0\r\n\r\n"))
    assert status == 200
    with_host = b"GET /api/public HTTP/1.1\r\nHost: a.example\r\nConnection: close\r\n\r\n"
    status, _ = status_and_body(server.send_raw(with_host))
    assert status == 200


#: Request lines no parser accepts, each carrying a query value that must never be logged.
MALFORMED = {
    "extra part": b"GET /api/private?access_token=%s HTTP/1.1 x",
    "two spaces": b"GET  /api/private?access_token=%s HTTP/1.1",
    "trailing space": b"GET /api/private?access_token=%s HTTP/1.1 ",
    "no version": b"GET /api/private?access_token=%s",
    "control character": b"GET /api/pri\x01vate?access_token=%s HTTP/1.1",
    "tab in target": b"GET /api/private?access_token=%s\tHTTP/1.1",
    "broken IPv6 host": b"GET http://[::1/api/private?access_token=%s HTTP/1.1",
    "bad version": b"GET /api/private?access_token=%s HTTP/1.x",
    "bad method": b"G\x01T /api/private?access_token=%s HTTP/1.1",
}


@pytest.mark.parametrize("parser", PARSERS)
def test_malformed_request_lines_never_log_any_part_of_a_query_value(
    parser: str, module_issuer: LocalIssuer, gunicorn: ServerFactory
) -> None:
    """Only method and path (or nothing) of a request that could not be parsed reach the log."""
    server = gunicorn(module_issuer, workers=1, args=("--http-parser", parser))
    values = {}
    for name, line in MALFORMED.items():
        value = secrets.token_hex(16)
        values[name] = value
        answer = server.send_raw(line % value.encode() + b"\r\nHost: a.example\r\n\r\n")
        status, body = status_and_body(answer)
        assert status == 400, (name, answer[:200])
        assert json.loads(body)["error"] == "invalid_request"
    server.wait_for_record(lambda r: r.get("event") == "http_request" and r.get("status") == 400,
                           count=len(MALFORMED))
    output = server.output()
    for name, value in values.items():
        parts = {value[i:i + 8] for i in range(len(value) - 7)}
        leaked = [part for part in parts if part in output]
        assert not leaked, f"{name}: part of the query value logged\n{output[-3000:]}"
    assert "Traceback" not in output


def dpop_headers(token: str, url: str, header: dict[str, Any] | None = None) -> dict[str, str]:
    """DPoP request headers with a fresh proof for GET url."""
    proof = make_proof(KEY, "GET", url, access_token=token, header=header)
    return {"Authorization": f"DPoP {token}", "DPoP": proof}


def test_dot_segments_never_reach_a_route_with_a_proof_for_another_resource(
    module_issuer: LocalIssuer, gunicorn: ServerFactory
) -> None:
    """/api/files/<path:name> routes ../private as a name: a proof for /api/private must not pass there."""
    server = gunicorn(module_issuer, workers=1, args=("tests.support.files_example:create_app()",))
    token = module_issuer.mint({"cnf": {"jkt": KEY.thumbprint()}})
    for path in ("/api/files/../private", "/api/files/%2e%2e/private", "/api/files/./../private"):
        resp = server.get(path, headers=dpop_headers(token, f"{server.base_url}/api/private"))
        assert resp.status in (400, 401), (path, resp.status, resp.body)
    resp = server.get("/api/files/a.txt", headers=dpop_headers(token, f"{server.base_url}/api/files/a.txt"))
    assert resp.status == 200, resp.body


@pytest.mark.parametrize("extra", [{"key_ops": ["sign"]}, {"use": "enc"}], ids=["key_ops", "use_enc"])
def test_a_proof_key_not_for_verifying_is_one_refusal_line_without_a_traceback(
    module_issuer: LocalIssuer, gunicorn: ServerFactory, extra: dict[str, Any]
) -> None:
    server = gunicorn(module_issuer, workers=1)
    token = module_issuer.mint({"cnf": {"jkt": KEY.thumbprint()}})
    jwk = {**KEY.as_dict(private=False), **extra}
    headers = dpop_headers(token, f"{server.base_url}/api/private", {"jwk": jwk})
    resp = server.get("/api/private", headers=headers)
    assert resp.status == 401, resp.body
    assert 'error="invalid_dpop_proof"' in (resp.header("WWW-Authenticate") or ""), resp.headers
    decisions = server.wait_for_record(lambda r: r.get("event") == "auth_decision")
    assert [d["reason"] for d in decisions] == ["dpop_jwk"]
    errors = [r for r in server.records() if r.get("level") in ("error", "critical")]
    assert not [r for r in errors if "exception" in r or "Traceback" in json.dumps(r)], errors
    assert "Traceback" not in server.output()
