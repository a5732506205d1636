"""The dev issuer's token command mints certificate-bound (RFC 8705) and step-up (RFC 9470) tokens."""

from __future__ import annotations

import base64
import json
import time
from pathlib import Path
from typing import Any

import pytest
from joserfc.jwk import ECKey

from dev_issuer import client
from tests.support import certs
from tests.support.appkit import bearer
from tests.support.appkit import client_for
from tests.support.issuer import LocalIssuer


def _claims(token: str) -> dict[str, Any]:
    segment = token.split(".")[1]
    return json.loads(base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4)))


def _token(issuer: LocalIssuer, capsys: pytest.CaptureFixture[str], *args: str) -> str:
    status = client.main(["token", "--issuer", issuer.url, "--audience", issuer.audience, *args])
    out, err = capsys.readouterr()
    assert (status, err) == (0, ""), err
    return out.strip()


def test_cert_binds_the_token_to_that_certificate(module_issuer, capsys, tmp_path: Path) -> None:
    mine = certs.issue(certs.make_ca(), "client")
    pem, _ = mine.write(tmp_path, "client")
    assert _claims(_token(module_issuer, capsys, "--cert", str(pem)))["cnf"] == {"x5t#S256": mine.thumbprint}


def test_a_token_bound_by_the_issuer_passes_with_its_certificate_only(module_issuer, tmp_path) -> None:
    """The same binding through the Python API (the app is not built under capsys: it logs)."""
    ca = certs.make_ca()
    mine, theirs = certs.issue(ca, "client"), certs.issue(ca, "other")
    pem, _ = mine.write(tmp_path, "client")
    claims = client.certificate_claims({}, pem)
    token = client.mint_token(module_issuer.url, audience=module_issuer.audience, claims=claims)[
        "access_token"
    ]
    api = client_for(module_issuer)
    ok = api.get("/api/private", headers={**bearer(token), "X-Client-Cert": certs.nginx_escaped(mine)})
    assert ok.status_code == 200
    other = api.get("/api/private", headers={**bearer(token), "X-Client-Cert": certs.nginx_escaped(theirs)})
    assert other.status_code == 401


def test_cert_and_a_dpop_key_bind_the_token_both_ways(module_issuer, capsys, tmp_path: Path) -> None:
    mine = certs.issue(certs.make_ca(), "client")
    pem, _ = mine.write(tmp_path, "client")
    token = _token(module_issuer, capsys, "--cert", str(pem), "--key", str(tmp_path / "dpop.pem"))
    key = ECKey.import_key((tmp_path / "dpop.pem").read_bytes())
    assert _claims(token)["cnf"] == {"x5t#S256": mine.thumbprint, "jkt": key.thumbprint()}


def test_acr_and_auth_time_are_minted_as_asked(module_issuer, capsys) -> None:
    before = int(time.time())
    claims = _claims(_token(module_issuer, capsys, "--acr", "urn:example:mfa", "--auth-time", "-600"))
    assert claims["acr"] == "urn:example:mfa"
    assert before - 600 <= claims["auth_time"] <= int(time.time()) - 600
    assert _claims(_token(module_issuer, capsys, "--auth-time", "1700000000"))["auth_time"] == 1700000000
    assert abs(_claims(_token(module_issuer, capsys, "--auth-time", "now"))["auth_time"] - time.time()) < 60


def test_a_cert_file_that_is_not_a_certificate_is_one_line_exit_2(module_issuer, capsys, tmp_path) -> None:
    bad = tmp_path / "bad.pem"
    bad.write_text("hello")
    with pytest.raises(SystemExit) as exit_info:
        client.main(["token", "--issuer", module_issuer.url, "--cert", str(bad)])
    assert exit_info.value.code == 2
    assert "--cert" in capsys.readouterr().err
