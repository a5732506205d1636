"""Hostile clients against the logs of real gunicorn: no amplification, no id confusion."""

from __future__ import annotations

import re
from typing import Any

import pytest

from service.logs import MAX_LOGGED_CHARS
from service.logs import TRUNCATED
from tests.support.issuer import LocalIssuer
from tests.support.procs import Server
from tests.support.procs import ServerFactory

pytestmark = pytest.mark.slow

GENERATED_ID = re.compile(r"[0-9a-f]{32}")
#: A log line may exceed the cut value by its other fields, never by the client's text.
MAX_LINE = 4 * MAX_LOGGED_CHARS


@pytest.fixture(scope="module")
def server(module_issuer: LocalIssuer, module_gunicorn: ServerFactory) -> Server:
    """The real gunicorn config with two workers, logging JSON."""
    return module_gunicorn(module_issuer, workers=2)


def access_lines(server: Server, request_id: str, count: int = 1) -> list[dict[str, Any]]:
    """The access lines of requests that carried this id."""
    return server.wait_for_record(
        lambda r: r.get("event") == "http_request" and r.get("request_id") == request_id, count=count
    )


def longest_line(server: Server) -> int:
    """Length of the longest stdout line so far."""
    return max(len(line) for line in server.stdout().splitlines())


def test_a_huge_user_agent_is_cut_in_the_access_line(server: Server) -> None:
    agent = "A" * 8000
    resp = server.get("/api/public", headers={"User-Agent": agent, "X-Request-ID": "ua-huge-1"})
    assert resp.status == 200
    [line] = access_lines(server, "ua-huge-1")
    assert line["user_agent"] == "A" * MAX_LOGGED_CHARS + TRUNCATED
    assert longest_line(server) < MAX_LINE


def test_a_short_user_agent_is_logged_as_sent(server: Server) -> None:
    agent = "curl/8.5.0 " + "x" * (MAX_LOGGED_CHARS - 11)
    server.get("/api/public", headers={"User-Agent": agent, "X-Request-ID": "ua-exact-1"})
    [line] = access_lines(server, "ua-exact-1")
    assert line["user_agent"] == agent


def test_a_huge_path_is_cut_in_the_access_line(server: Server) -> None:
    path = "/api/" + "p" * 3500
    resp = server.get(path, headers={"X-Request-ID": "path-huge-1"})
    assert resp.status == 404
    [line] = access_lines(server, "path-huge-1")
    assert line["path"] == path[:MAX_LOGGED_CHARS] + TRUNCATED
    assert line["route"] == "unmatched"
    assert longest_line(server) < MAX_LINE


def test_a_rejected_request_line_is_logged_cut_and_never_quoted(server: Server) -> None:
    # A request line with a run of spaces is invalid (RFC 9112 §3), whichever HTTP parser
    # gunicorn uses: its access line carries the target cut to the limit, the warning none of it.
    raw = ("GET  /" + "n" * 3000 + " HTTP/1.1\r\nHost: x\r\n\r\n").encode()
    assert server.send_raw(raw).startswith(b"HTTP/1.1 400")
    [access] = server.wait_for_record(
        lambda r: r.get("event") == "http_request" and "nnnn" in str(r.get("path"))
    )
    assert access["path"].endswith(TRUNCATED)
    assert len(access["path"]) == MAX_LOGGED_CHARS + len(TRUNCATED)
    [warning] = server.wait_for_record(lambda r: "Invalid request" in str(r.get("event")))
    assert warning["event"].endswith(": InvalidRequestLine"), warning
    assert longest_line(server) < MAX_LINE


def test_a_client_chosen_request_id_is_logged_with_the_one_the_service_generated(
    server: Server, module_issuer: LocalIssuer
) -> None:
    token = module_issuer.mint()
    reused = "reused-id-42"
    for _ in range(2):
        resp = server.get("/api/private", token=token, headers={"X-Request-ID": reused})
        assert resp.status == 200 and resp.header("X-Request-ID") == reused
    access = access_lines(server, reused, count=2)
    decisions = server.wait_for_record(
        lambda r: r.get("event") == "auth_decision" and r.get("request_id") == reused, count=2
    )
    assert len(access) == 2 and len(decisions) == 2
    server_ids = {line["server_request_id"] for line in access}
    assert len(server_ids) == 2 and all(GENERATED_ID.fullmatch(i) for i in server_ids)
    # Every line of a request carries the same pair.
    assert {line["server_request_id"] for line in decisions} == server_ids


def test_a_generated_request_id_has_no_second_id(server: Server, module_issuer: LocalIssuer) -> None:
    resp = server.get("/api/private", token=module_issuer.mint(), headers={"X-Request-ID": "bad id"})
    assert resp.status == 200
    generated = resp.header("X-Request-ID") or ""
    assert GENERATED_ID.fullmatch(generated)
    access_lines(server, generated)  # written last, after the response
    lines = [r for r in server.records() if r.get("request_id") == generated]
    assert {line["event"] for line in lines} >= {"auth_decision", "http_request"}
    assert all("server_request_id" not in line for line in lines)
