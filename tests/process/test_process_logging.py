"""Structured logs of a real gunicorn process: JSON lines, auth decisions, request ids, no secrets."""

from __future__ import annotations

import json
import re
import secrets
from typing import Any

import pytest

from tests.support.issuer import LocalIssuer
from tests.support.procs import Response
from tests.support.procs import Server
from tests.support.procs import ServerFactory
from tests.support.procs import read_json_lines

pytestmark = pytest.mark.slow

WELL_FORMED_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")
BASIC_SECRET = "dXNlcjpzdXBlci1zZWNyZXQtcGFzc3dvcmQ="  # base64("user:super-secret-password")


class Traffic:
    """Requests sent once per module, with what each should produce."""

    def __init__(self, server: Server, issuer: LocalIssuer) -> None:
        """Send every request of the scenario and remember the responses."""
        self.server = server
        self.secrets: list[str] = []
        self.sent: dict[str, dict[str, Any]] = {}
        good = issuer.mint()
        expired = issuer.mint(ttl=-600)
        no_scope = issuer.mint(scope=None)
        query_token = issuer.mint({"sub": "auth0|query-user"})
        for token in (good, expired, no_scope, query_token):
            head, payload, signature = token.split(".")
            self.secrets += [token, payload, signature]
        self.secrets.append(BASIC_SECRET)
        self.good = good
        cases: list[tuple[str, str, dict[str, str], bool]] = [
            # name, path, headers, protected
            ("public", "/api/public", {}, False),
            ("missing", "/api/private", {}, True),
            ("allow", "/api/private", {"Authorization": f"Bearer {good}"}, True),
            ("expired", "/api/private", {"Authorization": f"Bearer {expired}"}, True),
            ("scope", "/api/private-scoped", {"Authorization": f"Bearer {no_scope}"}, True),
            ("scoped_ok", "/api/private-scoped", {"Authorization": f"Bearer {good}"}, True),
            ("two_tokens", "/api/private", {"Authorization": f"Bearer {good} {good}"}, True),
            ("basic", "/api/private", {"Authorization": f"Basic {BASIC_SECRET}"}, True),
            ("query", f"/api/private?access_token={query_token}", {}, True),
        ]
        for name, path, headers, protected in cases:
            rid = f"t-{name}-{secrets.token_hex(4)}"
            resp = server.get(path, headers={**headers, "X-Request-ID": rid})
            self.sent[name] = {"rid": rid, "resp": resp, "protected": protected, "path": path}
        # Request ids the service must replace with its own.
        for name, incoming in (
            ("gen_none", None),
            ("gen_space", "has space"),
            ("gen_long", "x" * 129),
            ("gen_quote", 'bad"quote'),
        ):
            headers = {"Authorization": f"Bearer {good}"}
            if incoming is not None:
                headers["X-Request-ID"] = incoming
            resp = server.get("/api/private", headers=headers)
            rid = resp.header("X-Request-ID") or ""
            self.sent[name] = {
                "rid": rid,
                "resp": resp,
                "protected": True,
                "path": "/api/private",
                "incoming": incoming,
            }
        # Every request's access line is written after its response; wait for all of them.
        ids = {case["rid"] for case in self.sent.values()}
        server.wait_for_record(
            lambda r: r.get("event") == "http_request" and r.get("request_id") in ids,
            count=len(ids),
        )

    def records_for(self, name: str) -> list[dict[str, Any]]:
        """Log records carrying this case's request id."""
        rid = self.sent[name]["rid"]
        return [r for r in self.server.records() if r.get("request_id") == rid]


@pytest.fixture(scope="module")
def server(module_issuer: LocalIssuer, module_gunicorn: ServerFactory) -> Server:
    """Two workers logging JSON to stdout."""
    return module_gunicorn(module_issuer, workers=2)


@pytest.fixture(scope="module")
def traffic(server: Server, module_issuer: LocalIssuer) -> Traffic:
    """The scenario's requests, sent once."""
    return Traffic(server, module_issuer)


def _walk_keys(obj: Any) -> list[str]:
    """Every dict key at any depth."""
    if isinstance(obj, dict):
        return [k for k in obj] + [k2 for v in obj.values() for k2 in _walk_keys(v)]
    if isinstance(obj, list):
        return [k for v in obj for k in _walk_keys(v)]
    return []


def test_every_stdout_line_is_a_json_object_with_core_fields(server: Server, traffic: Traffic) -> None:
    """All stdout lines, gunicorn's own included, are JSON objects with event/level/timestamp/logger."""
    records, bad = read_json_lines(server.stdout_path)
    assert not bad, bad[:5]
    assert records
    for record in records:
        for key in ("event", "level", "timestamp", "logger"):
            assert key in record, record
    gunicorn_lines = [r for r in records if str(r.get("logger", "")).startswith("gunicorn")]
    assert gunicorn_lines, "gunicorn's own error-log lines are not in the JSON stdout stream"
    _, bad_err = read_json_lines(server.stderr_path)
    assert not bad_err, f"non-JSON lines on stderr: {bad_err[:5]}"


def test_one_auth_decision_line_per_protected_request(traffic: Traffic) -> None:
    """Each protected request logs exactly one auth_decision; public requests log none."""
    for name, case in traffic.sent.items():
        decisions = [r for r in traffic.records_for(name) if r.get("event") == "auth_decision"]
        if not case["protected"]:
            assert decisions == [], name
            continue
        assert len(decisions) == 1, (name, decisions)
        decision = decisions[0]
        for key in ("outcome", "reason", "route", "request_id"):
            assert key in decision, (name, decision)
        assert decision["outcome"] in ("allow", "deny"), decision
        assert decision["route"] in ("/api/private", "/api/private-scoped"), decision
        resp: Response = case["resp"]
        assert (decision["outcome"] == "allow") == (resp.status == 200), (name, decision)


def test_auth_decision_fields_match_the_outcome(traffic: Traffic) -> None:
    """Reasons follow the contract's vocabulary; sub is logged only for verified tokens."""
    expected = {
        "allow": ("allow", "ok"),
        "scoped_ok": ("allow", "ok"),
        "missing": ("deny", "missing_token"),
        "expired": ("deny", "expired"),
        "scope": ("deny", "insufficient_scope"),
    }
    for name, (outcome, reason) in expected.items():
        (decision,) = [r for r in traffic.records_for(name) if r.get("event") == "auth_decision"]
        assert (decision["outcome"], decision["reason"]) == (outcome, reason), decision
    (allowed,) = [r for r in traffic.records_for("allow") if r.get("event") == "auth_decision"]
    assert allowed["sub"] == "auth0|test-user"
    assert allowed["route"] == "/api/private"
    (missing,) = [r for r in traffic.records_for("missing") if r.get("event") == "auth_decision"]
    assert not missing.get("sub")


def test_request_id_is_reused_or_generated_and_on_the_access_line(traffic: Traffic) -> None:
    """Well-formed ids are echoed; others are replaced; the access line carries the id."""
    for name, case in traffic.sent.items():
        resp: Response = case["resp"]
        echoed = resp.header("X-Request-ID")
        assert echoed and WELL_FORMED_ID.match(echoed), (name, echoed)
        if name.startswith("gen_"):
            assert echoed != case["incoming"], name
        else:
            assert echoed == case["rid"], name
        access = [r for r in traffic.records_for(name) if r.get("event") == "http_request"]
        assert len(access) == 1, (name, access)
        line = access[0]
        assert line["method"] == "GET"
        assert int(line["status"]) == resp.status
        assert isinstance(line["duration_ms"], int | float)
        assert line["path"].split("?")[0] == case["path"].split("?")[0]
    gen_ids = {traffic.sent[n]["rid"] for n in traffic.sent if n.startswith("gen_")}
    assert len(gen_ids) == 4, "generated request ids are not unique"


def test_tokens_and_authorization_never_logged(server: Server, traffic: Traffic) -> None:
    """No token (nor its payload or signature), credential, or Authorization field in any output."""
    output = server.output()
    for secret in traffic.secrets:
        assert secret not in output, f"secret fragment {secret[:12]}... found in logs"
    assert "Bearer ey" not in output
    records, _ = read_json_lines(server.stdout_path)
    for record in records:
        keys = {k.lower() for k in _walk_keys(record)}
        assert not keys & {"authorization", "http_authorization", "token", "access_token"}, record


def test_shutdown_lines_are_json_too(server: Server, traffic: Traffic) -> None:
    """After SIGTERM, the whole stdout (boot to exit) is still JSON lines, secrets still absent."""
    assert server.terminate() == 0
    records, bad = read_json_lines(server.stdout_path)
    assert not bad, bad[:5]
    assert any(str(r.get("logger", "")).startswith("gunicorn") for r in records[-5:]), records[-5:]
    output = server.output()
    for secret in traffic.secrets:
        assert secret not in output
    assert "Traceback" not in output


def test_console_format_is_human_readable(issuer: LocalIssuer, gunicorn: ServerFactory) -> None:
    """LOG_FORMAT=console switches to non-JSON lines that still name the event."""
    server = gunicorn(issuer, workers=1, env={"LOG_FORMAT": "console"})
    token = issuer.mint()
    assert server.get("/api/private", token=token).status == 200
    assert server.terminate() == 0
    out = server.stdout()
    assert "auth_decision" in out
    lines = [line for line in out.splitlines() if line.strip()]
    assert lines
    not_json = 0
    for line in lines:
        try:
            json.loads(line)
        except ValueError:
            not_json += 1
    assert not_json == len(lines), "console format still emits JSON lines"
    assert token not in server.output()


@pytest.fixture(scope="module")
def raw_server(module_issuer: LocalIssuer, module_gunicorn: ServerFactory) -> Server:
    """One worker that the malformed-HTTP tests share (the module's `server` is shut down above)."""
    return module_gunicorn(module_issuer, workers=1)


def test_tokens_echoed_by_gunicorn_parse_errors_are_redacted(raw_server: Server, module_issuer: LocalIssuer):
    """gunicorn quotes rejected request lines and headers in its warnings; credentials are blanked."""
    token = module_issuer.mint()
    for raw in (
        f"GET  /api/private?access_token={token} HTTP/1.1\r\nHost: x\r\n\r\n",
        f"GET /api/private HTTP/1.1\r\nHost: x\r\nAuthorization Bearer {token}\r\n\r\n",
        f"GET /api/private HTTP/1.1\r\nHost: x\r\nX(Bearer{token}): x\r\n\r\n",
    ):
        assert raw_server.send_raw(raw.encode()).startswith(b"HTTP/1.1 400")
    warnings = raw_server.wait_for_record(lambda r: "Invalid" in str(r.get("event")), timeout=5, count=3)
    assert len(warnings) >= 3
    signature = token.rsplit(".", 1)[1]
    assert signature not in raw_server.output()
    assert "authorization" not in raw_server.output().lower()


def test_http_that_gunicorn_rejects_gets_json_with_a_request_id(raw_server: Server, module_issuer):
    """Malformed HTTP never reaches Flask; the answer is still JSON, carries an id, echoes nothing."""
    token = module_issuer.mint()
    request = f"GET /api/private HTTP/1.1\r\nHost: x\r\nAuthorization Bearer {token}\r\n\r\n"
    raw = raw_server.send_raw(request.encode())
    head, _, body = raw.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 400")
    request_id = re.search(rb"X-Request-ID: ([0-9a-f]{32})", head)
    assert request_id is not None
    assert json.loads(body)["error"] == "invalid_request"
    assert token.encode() not in raw
    records = raw_server.wait_for_record(lambda r: r.get("request_id") == request_id.group(1).decode())
    assert records and "Invalid" in records[0]["event"]
