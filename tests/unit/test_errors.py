"""RFC 6750 error objects: fixed, spec-safe descriptions and the right headers per status."""

from __future__ import annotations

import ast
import json
from pathlib import Path

import pytest
from authlib.oauth2.base import invalid_error_characters

from service.jose import errors
from service.jose.errors import AuthError

SERVICE = Path(__file__).resolve().parents[2] / "service"


def _all_descriptions() -> list[str]:
    """Every description string the service can send: class defaults and literals passed in."""
    found = [cls.description for cls in vars(errors).values()
             if isinstance(cls, type) and issubclass(cls, AuthError)]
    for path in SERVICE.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Call) and getattr(node.func, "id", "").endswith(("deny", "Error")):
                for arg in node.args:
                    if isinstance(arg, ast.Constant) and isinstance(arg.value, str) and " " in arg.value:
                        found.append(arg.value)
                    if isinstance(arg, ast.JoinedStr):
                        found.append("".join(v.value for v in arg.values if isinstance(v, ast.Constant)))
    return found


@pytest.mark.parametrize("description", _all_descriptions())
def test_descriptions_use_only_rfc6749_error_characters(description: str) -> None:
    # RFC 6749 §5.2: error_description is %x20-21 / %x23-5B / %x5D-7E (no quote, no backslash).
    assert not invalid_error_characters(description)


@pytest.mark.parametrize(
    "cls, status, challenge, retry_after",
    [
        (errors.MissingTokenError, 401, 'Bearer realm="api"', None),
        (errors.InvalidRequestError, 400, 'Bearer realm="api", error="invalid_request"', None),
        (errors.InvalidTokenError, 401, 'Bearer realm="api", error="invalid_token"', None),
        (errors.InsufficientScopeError, 403, 'Bearer realm="api", error="insufficient_scope"', None),
        (errors.KeysUnavailableError, 503, None, "5"),
        (errors.KeysPendingError, 503, None, "1"),
    ],
)
def test_each_error_renders_status_body_and_headers(cls, status, challenge, retry_after) -> None:
    got_status, body, headers = cls().response_parts()
    header_map = dict(headers)
    assert got_status == status
    assert set(json.loads(body)) == {"error", "error_description"}
    if challenge is None:
        assert "WWW-Authenticate" not in header_map
    else:
        assert header_map["WWW-Authenticate"].startswith(challenge)
    assert header_map.get("Retry-After") == retry_after
    assert header_map["Cache-Control"] == "no-store"


def test_missing_token_challenge_carries_no_error_code() -> None:
    _, _, headers = errors.MissingTokenError().response_parts()
    assert dict(headers)["WWW-Authenticate"] == 'Bearer realm="api"'
