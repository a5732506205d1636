"""``python -m dev_issuer.client token``: tokens with your own scopes and claims from the dev issuer."""

from __future__ import annotations

import base64
import json
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from joserfc.jwk import ECKey

from dev_issuer import client
from tests.support import orders_example
from tests.support.appkit import bearer
from tests.support.appkit import settings_for
from tests.support.issuer import LocalIssuer
from tests.support.procs import free_port

REPO = Path(__file__).resolve().parents[2]


def _claims(token: str) -> dict[str, Any]:
    """The payload of a compact JWS (the API verifies it; here only its content matters)."""
    segment = token.split(".")[1]
    return json.loads(base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4)))


def _token(issuer: LocalIssuer, capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    """Run the command in process against the issuer; return status, stdout, stderr."""
    status = client.main(["token", "--issuer", issuer.url, "--audience", issuer.audience, *args])
    out, err = capsys.readouterr()
    return status, out, err


def test_token_carries_the_scopes_and_claims_asked_for_and_passes_a_claim_checked_route(
    module_issuer: LocalIssuer, capsys: pytest.CaptureFixture[str]
) -> None:
    """The guide's claim-checked POST /api/orders succeeds with a token from the command."""
    status, out, err = _token(
        module_issuer, capsys, "--scope", "read:orders write:orders", "--claim", "org_id=org_123"
    )
    assert (status, err) == (0, "")
    token = out.strip()
    assert out == token + "\n"
    claims = _claims(token)
    assert claims["scope"] == "read:orders write:orders"
    assert claims["org_id"] == "org_123"
    assert claims["sub"] == "dev-client@clients"
    # Outside capsys: the app's log handler must not keep this test's captured stdout.
    with capsys.disabled():
        app = orders_example.create_app(settings_for(module_issuer)).test_client()
        created = app.post("/api/orders", headers=bearer(token))
        assert created.status_code == 201, created.json
        assert created.json == {"created": True, "org": "org_123"}
        assert app.get("/api/orders/7", headers=bearer(token)).status_code == 200


def test_default_clients_are_kept(module_issuer: LocalIssuer, capsys: pytest.CaptureFixture[str]) -> None:
    """Without --scope the client's own scopes; /oauth/token still refuses scopes not granted."""
    status, out, _ = _token(module_issuer, capsys)
    assert status == 0
    assert _claims(out.strip())["scope"] == "read:messages"
    status, out, _ = _token(module_issuer, capsys, "--scope", "")
    assert status == 0
    assert "scope" not in _claims(out.strip())
    body = {
        "grant_type": "client_credentials",
        "client_id": "dev-client",
        "client_secret": "dev-secret",
        "audience": module_issuer.audience,
        "scope": "read:orders",
    }
    request = urllib.request.Request(
        module_issuer.url + "oauth/token",
        data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json"},
    )
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(request, timeout=5)
    with refused.value:
        assert refused.value.code == 403


def test_claim_values_are_json_when_they_parse_else_strings(
    module_issuer: LocalIssuer, capsys: pytest.CaptureFixture[str]
) -> None:
    """Numbers, booleans and lists keep their JSON type; other text is a string."""
    status, out, _ = _token(
        module_issuer,
        capsys,
        "--claim", "tier=gold",
        "--claim", "level=3",
        "--claim", "verified=true",
        "--claim", 'roles=["admin"]',
        "--claim", "sub=auth0|42",
    )
    assert status == 0
    claims = _claims(out.strip())
    assert (claims["tier"], claims["level"], claims["verified"]) == ("gold", 3, True)
    assert (claims["roles"], claims["sub"]) == (["admin"], "auth0|42")


def test_claims_the_issuer_sets_are_refused_with_one_line(
    module_issuer: LocalIssuer, capsys: pytest.CaptureFixture[str]
) -> None:
    """iss, aud, exp, iat and scope cannot be replaced; the issuer's reason reaches the user."""
    for name in ("iss", "aud", "exp", "iat", "scope"):
        status, out, err = _token(module_issuer, capsys, "--claim", f"{name}=x")
        assert (status, out) == (1, "")
        assert err.count("\n") == 1
        assert "400: invalid_request: Claims the issuer sets itself: " + name in err


def test_token_bound_to_a_dpop_key(
    module_issuer: LocalIssuer, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    """--key binds the token to the key (RFC 9449 §6.1 cnf.jkt), as the METHOD URL form does."""
    key_file = tmp_path / "client.pem"
    status, out, _ = _token(module_issuer, capsys, "--key", str(key_file), "--json")
    assert status == 0
    answer = json.loads(out)
    assert answer["token_type"] == "DPoP"
    key = ECKey.import_key(key_file.read_bytes())
    assert _claims(answer["access_token"])["cnf"] == {"jkt": key.thumbprint()}


def test_the_issuers_refusal_reaches_the_user_without_a_traceback(module_issuer: LocalIssuer) -> None:
    """Another audience: `Service not found` on stderr, exit 1, nothing on stdout, no traceback."""
    done = subprocess.run(
        [sys.executable, "-m", "dev_issuer.client", "token", "--issuer", module_issuer.url,
         "--audience", "https://another.example"],
        cwd=REPO, capture_output=True, text=True, timeout=60, check=False,
    )
    assert (done.returncode, done.stdout) == (1, "")
    assert "Traceback" not in done.stderr
    assert done.stderr.count("\n") == 1
    assert "403: access_denied: Service not found: https://another.example" in done.stderr


def test_an_unreachable_issuer_is_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    """Nothing listening: one line naming the URL, exit 1."""
    url = f"http://127.0.0.1:{free_port()}/"
    assert client.main(["token", "--issuer", url]) == 1
    out, err = capsys.readouterr()
    assert out == ""
    assert err.startswith(f"dev_issuer.client: cannot reach {url}dev/token: ")
    assert err.count("\n") == 1


def test_the_dpop_form_reports_the_issuers_refusal(
    module_issuer: LocalIssuer, capsys: pytest.CaptureFixture[str]
) -> None:
    """METHOD URL with an audience the issuer does not serve: its reason, one line, exit 1."""
    status = client.main(
        ["GET", "http://127.0.0.1:1/api/private", "--issuer", module_issuer.url,
         "--audience", "https://another.example"]
    )
    out, err = capsys.readouterr()
    assert (status, out) == (1, "")
    assert "Service not found: https://another.example" in err
