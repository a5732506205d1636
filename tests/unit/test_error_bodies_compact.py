"""Every JSON body, refusals included, is rendered alike: compact separators and a newline (jsonify)."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest
from flask.testing import FlaskClient
from joserfc.jwk import ECKey

from dev_issuer.client import make_proof
from service.server.worker import BAD_REQUEST
from service.server.worker import NO_HOST
from tests.support.appkit import bearer
from tests.support.appkit import client_for
from tests.support.issuer import LocalIssuer


def as_jsonify(body: bytes) -> bytes:
    """The bytes Flask's jsonify gives for the same object."""
    return json.dumps(json.loads(body), separators=(",", ":")).encode() + b"\n"


@pytest.fixture(scope="module")
def down() -> Iterator[tuple[FlaskClient, str]]:
    """An app whose issuer never answers (protected routes are 503), and a token it issued."""
    with LocalIssuer() as issuer:
        client = client_for(issuer, AUTH0_HTTP_TIMEOUT="0.5")
        issuer.go_down()
        yield client, issuer.mint()


def test_refusals_are_compact_like_200_404_and_405_bodies(
    client: FlaskClient, module_issuer: LocalIssuer, down: tuple[FlaskClient, str]
) -> None:
    key = ECKey.generate_key("P-256", private=True)
    bound = module_issuer.mint({"cnf": {"jkt": key.thumbprint()}})
    responses = {
        "200": client.get("/api/public"),
        "404": client.get("/nowhere"),
        "405": client.post("/api/public"),
        "401 missing": client.get("/api/private"),
        "401 invalid": client.get("/api/private", headers=bearer("nonsense")),
        "403": client.get("/api/private-scoped", headers=bearer(module_issuer.mint(scope=None))),
        "400": client.get("/api/private", headers={"Authorization": "Bearer a b"}),
        "401 dpop": client.get("/api/private", headers={
            "Authorization": f"DPoP {bound}",
            "DPoP": make_proof(key, "GET", "http://localhost/elsewhere", access_token=bound)}),
        "503": down[0].get("/api/private", headers=bearer(down[1])),
    }
    for name, response in responses.items():
        assert str(response.status_code) == name.split()[0], (name, response.data)
        assert response.data == as_jsonify(response.data), (name, response.data)


@pytest.mark.parametrize("refusal", [BAD_REQUEST, NO_HOST], ids=["malformed", "no_host"])
def test_the_workers_own_refusals_are_compact(refusal) -> None:
    body = refusal.render("rid").partition(b"\r\n\r\n")[2]
    assert body == as_jsonify(body)
