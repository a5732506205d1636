"""Parity with the Auth0 Flask API quickstart's validator tests (pyvnext-rewrite test suite).

The quickstart checks: a valid token, alg none, a wrong signature, a wrong issuer, a wrong audience
and an expired token. Ours must answer each the same way (through the real HTTP route).
"""

from __future__ import annotations

import time

from tests.support import mint as tokens
from tests.support.appkit import bearer


def _get(client, token: str) -> int:
    return client.get("/api/private", headers=bearer(token)).status_code


def test_valid_jwt(client, module_issuer) -> None:
    assert _get(client, module_issuer.mint()) == 200


def test_none_alg(client, module_issuer) -> None:
    assert _get(client, tokens.alg_none(module_issuer)) == 401


def test_wrong_sig(client, module_issuer) -> None:
    assert _get(client, tokens.wrong_signature(module_issuer)) == 401


def test_invalid_iss(client, module_issuer) -> None:
    assert _get(client, module_issuer.mint({"iss": "https://not-the-issuer/"})) == 401


def test_invalid_aud(client, module_issuer) -> None:
    assert _get(client, module_issuer.mint({"aud": "https://not-this-api"})) == 401


def test_expired_jwt(client, module_issuer) -> None:
    past = int(time.time()) - 3600
    assert _get(client, module_issuer.mint({"iat": past - 60, "exp": past})) == 401
