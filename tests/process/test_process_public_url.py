"""PUBLIC_URL against real gunicorn: DPoP without it warns once per start (not per worker); a list
takes proofs for each listed URL."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest
from joserfc.jwk import ECKey

from dev_issuer.client import make_proof
from tests.support.issuer import LocalIssuer
from tests.support.procs import Server
from tests.support.procs import ServerFactory

pytestmark = pytest.mark.slow


def public_url_warnings(server: Server) -> list[dict[str, Any]]:
    """Warning records that name PUBLIC_URL."""
    return [r for r in server.records() if r.get("level") == "warning" and "PUBLIC_URL" in json.dumps(r)]


@pytest.mark.parametrize(
    ("env", "expected"),
    [({}, 1), ({"PUBLIC_URL": "http://127.0.0.1"}, 0), ({"AUTH0_DPOP": "disabled"}, 0),
     ({"AUTH0_DPOP": "required"}, 1)],
    ids=["unset", "set", "dpop_disabled", "dpop_required"],
)
def test_public_url_unset_with_dpop_warns_once_per_start_not_per_worker(
    module_issuer: LocalIssuer, gunicorn: ServerFactory, env: dict[str, str], expected: int
) -> None:
    server = gunicorn(module_issuer, workers=2, env=env)
    server.wait_for_record(lambda r: "Booting worker" in str(r.get("event", "")), count=2)
    assert server.get("/api/public").status == 200
    warnings = public_url_warnings(server)
    assert len(warnings) == expected, warnings
    if expected:
        assert re.search(r"\bhtu\b|Host", json.dumps(warnings[0])), warnings[0]


def test_each_listed_public_url_takes_proofs_and_an_unlisted_name_gets_401(
    module_issuer: LocalIssuer, gunicorn: ServerFactory
) -> None:
    key = ECKey.generate_key("P-256", private=True)
    token = module_issuer.mint({"cnf": {"jkt": key.thumbprint()}})
    listed = ("https://api.example.com", "http://api.internal:8080")
    server = gunicorn(module_issuer, workers=1, env={"PUBLIC_URL": ",".join(listed)})

    def send(url: str) -> int:
        host = url.split("//")[1].split("/")[0]
        proof = make_proof(key, "GET", url, access_token=token)
        headers = {"Authorization": f"DPoP {token}", "DPoP": proof, "Host": host}
        return server.get("/api/private", headers=headers).status

    assert [send(base + "/api/private") for base in listed] == [200, 200]
    assert send("http://api.other.example/api/private") == 401
    assert send(f"{server.base_url}/api/private") == 401
    assert not public_url_warnings(server)
