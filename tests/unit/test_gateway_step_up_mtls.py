"""Gateway mode in process: rules with acr_values / max_age (RFC 9470), and bound tokens (RFC 8705)."""

from __future__ import annotations

import re
import time
from pathlib import Path

import pytest
from flask.testing import FlaskClient

from service.gateway_policy import PolicyError
from service.gateway_policy import parse_policy
from service.jose.step_up import StepUp
from tests.support import certs
from tests.support.appkit import bearer
from tests.support.appkit import client_for
from tests.support.issuer import LocalIssuer

MFA = "urn:example:mfa"
POLICY = f"""
rules:
  - name: refunds
    path: /api/refunds/<int:id>
    scopes: "write:orders"
    acr_values: [{MFA}, "urn:example:hwk"]
    max_age: 300
  - name: recent
    path: /api/recent
    max_age: 60
  - name: anything
    path: /api/<path:rest>
"""


@pytest.fixture(scope="module")
def client(module_issuer: LocalIssuer, tmp_path_factory: pytest.TempPathFactory) -> FlaskClient:
    path: Path = tmp_path_factory.mktemp("gateway") / "policy.yaml"
    path.write_text(POLICY)
    return client_for(module_issuer, GATEWAY_POLICY=str(path))


def check(client: FlaskClient, path: str, token: str, **headers: str):
    original = {"X-Original-URL": f"https://gw.example{path}", "X-Original-Method": "GET"}
    return client.get("/auth/check", headers={**original, **bearer(token), **headers})


def params(challenge: str) -> dict[str, str]:
    return {m[0]: m[1] or m[2] for m in re.findall(r'([\w-]+)=(?:"([^"]*)"|([^\s,]*))', challenge)}


def test_rule_step_up_keys_are_parsed_like_require_auth() -> None:
    policy = parse_policy(POLICY)
    assert policy.rules[0].step_up == StepUp((MFA, "urn:example:hwk"), 300)
    assert policy.rules[1].step_up == StepUp((), 60)
    assert policy.rules[2].step_up is None


@pytest.mark.parametrize(
    "keys", ["acr_values: []", 'acr_values: ["a b"]', "max_age: -1", 'max_age: "300"', "max_age: true"]
)
def test_malformed_step_up_keys_name_the_rule(keys: str) -> None:
    with pytest.raises(PolicyError, match="^rule 'r': "):
        parse_policy(f"rules:\n  - name: r\n    path: /x\n    {keys}\n")


def test_a_rule_with_step_up_answers_the_rfc9470_challenge(client, module_issuer) -> None:
    now = int(time.time())
    strong = module_issuer.mint({"acr": MFA, "auth_time": now - 10}, scope="write:orders")
    assert check(client, "/api/refunds/7", strong).status_code == 200
    weak = check(client, "/api/refunds/7", module_issuer.mint({"acr": "pwd", "auth_time": now}, scope="x"))
    assert weak.status_code == 401
    found = params(weak.headers["WWW-Authenticate"])
    assert found["error"] == "insufficient_user_authentication"
    assert set(found["acr_values"].split()) == {MFA, "urn:example:hwk"} and "max_age" not in found
    old = check(client, "/api/recent", module_issuer.mint({"auth_time": now - 3600}))
    found = params(old.headers["WWW-Authenticate"])
    assert (old.status_code, found["max_age"], "acr_values" in found) == (401, "60", False)
    assert check(client, "/api/other", module_issuer.mint()).status_code == 200


def test_a_bound_token_needs_its_certificate_on_the_check_request(client, module_issuer) -> None:
    ca = certs.make_ca()
    mine, theirs = certs.issue(ca, "client"), certs.issue(ca, "other")
    token = module_issuer.mint({"cnf": {"x5t#S256": mine.thumbprint}})
    assert check(client, "/api/x", token, **{"X-Client-Cert": certs.nginx_escaped(mine)}).status_code == 200
    assert check(client, "/api/x", token, **{"X-Client-Cert": certs.nginx_escaped(theirs)}).status_code == 401
    assert check(client, "/api/x", token).status_code == 401
