"""The per-request log lines rendered directly read exactly as structlog's chain renders them."""

from __future__ import annotations

import io
import json
import sys
from collections.abc import Iterator

import pytest
import structlog

from service import logs
from service.config import log_settings


@pytest.fixture
def captured(monkeypatch: pytest.MonkeyPatch) -> Iterator[io.StringIO]:
    """A buffer for stdout; logging configured anew in the test, and again after it."""
    yield io.StringIO()
    structlog.contextvars.clear_contextvars()
    monkeypatch.setattr(logs, "_configured", None)
    logs.configure(log_settings({}))


def _configure(buffer: io.StringIO, env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> None:
    """Configure logging onto ``buffer`` (inside the test: pytest swaps stdout between phases)."""
    monkeypatch.setattr(sys, "stdout", buffer)
    monkeypatch.setattr(logs, "_configured", None)
    logs.configure(log_settings(env))


def _both(name: str, event: str, fields: dict[str, object], buffer: io.StringIO) -> list[dict]:
    """One line through structlog, the same through RequestLine; both parsed, in key order."""
    logs.get_logger(name).info(event, **dict(fields))
    logs.RequestLine(name).info(event, **dict(fields))
    return [json.loads(line) for line in buffer.getvalue().splitlines()]


def test_decision_line_has_the_same_keys_values_and_order(
    captured: io.StringIO, monkeypatch: pytest.MonkeyPatch
) -> None:
    _configure(captured, {}, monkeypatch)
    structlog.contextvars.bind_contextvars(request_id="r1", server_request_id="s1", trace_id="t", span_id="p")
    fields = {"outcome": "allow", "reason": "ok", "route": "/api/private", "scheme": "bearer",
              "sub": "auth0|1", "client": "c1"}
    via_chain, direct = _both("service.auth", "auth_decision", fields, captured)
    assert direct.pop("timestamp").endswith("Z") and via_chain.pop("timestamp").endswith("Z")
    assert list(direct.items()) == list(via_chain.items())


def test_access_line_has_the_same_keys_values_and_order(
    captured: io.StringIO, monkeypatch: pytest.MonkeyPatch
) -> None:
    _configure(captured, {}, monkeypatch)
    fields = {"request_id": "r2", "method": "GET", "path": "/api/public", "route": "/api/public",
              "status": 200, "duration_ms": 0.5, "remote_addr": "127.0.0.1", "user_agent": None,
              "bytes": 92}
    via_chain, direct = _both("gunicorn.access", "http_request", fields, captured)
    via_chain.pop("timestamp"), direct.pop("timestamp")
    assert list(direct.items()) == list(via_chain.items())


def test_console_format_and_a_level_above_info_go_through_structlog(
    captured: io.StringIO, monkeypatch: pytest.MonkeyPatch
) -> None:
    _configure(captured, {"LOG_FORMAT": "console"}, monkeypatch)
    logs.RequestLine("service.auth").info("auth_decision", outcome="deny")
    assert "auth_decision" in captured.getvalue() and not captured.getvalue().startswith("{")
    captured.truncate(0)
    captured.seek(0)
    _configure(captured, {"LOG_LEVEL": "warning"}, monkeypatch)
    logs.RequestLine("service.auth").info("auth_decision", outcome="deny")
    assert captured.getvalue() == ""
