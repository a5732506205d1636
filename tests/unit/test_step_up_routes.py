"""Step-up authentication (RFC 9470) on own routes: the 401 challenge, its order among the checks."""

from __future__ import annotations

import re
import time
from typing import Any

import pytest
from flask import Blueprint
from flask import Flask
from flask import jsonify
from joserfc.jwk import ECKey
from prometheus_client import REGISTRY

from dev_issuer.client import make_proof
from service.auth import require_auth
from service.web.app import create_app
from tests.support.appkit import bearer
from tests.support.appkit import settings_for
from tests.support.issuer import LocalIssuer

MFA = "urn:example:mfa"
HW = "urn:example:hwk"
KEY = ECKey.generate_key("P-256", private=True)

stepped = Blueprint("stepped", __name__, url_prefix="/api/step")


@stepped.get("/both")
@require_auth("read:secrets", acr_values=[MFA, HW], max_age=300)
def both():
    return jsonify(ok=True)


@stepped.get("/acr")
@require_auth(acr_values=MFA)
def acr_only():
    return jsonify(ok=True)


@stepped.get("/recent")
@require_auth(max_age=300)
def recent_only():
    return jsonify(ok=True)


@stepped.get("/acquire")
def acquire():
    with require_auth.acquire(acr_values=[MFA]) as token:
        return jsonify(sub=token.sub)


@pytest.fixture(scope="module")
def app(module_issuer: LocalIssuer) -> Flask:
    app = create_app(settings_for(module_issuer))
    app.register_blueprint(stepped)
    return app


@pytest.fixture(scope="module")
def client(app: Flask):
    return app.test_client()


def strong(issuer: LocalIssuer, **claims: Any) -> str:
    body = {"acr": MFA, "auth_time": int(time.time()) - 10, **claims}
    return issuer.mint(body, scope=claims.pop("scope", "read:secrets"))


def params(challenge: str) -> dict[str, str]:
    """The auth-params of one challenge (quoted or not), for comparing as a client would."""
    return {m[0]: m[1] if m[1] else m[2] for m in re.findall(r'([\w-]+)=(?:"([^"]*)"|([^\s,]*))', challenge)}


def decisions(route: str, reason: str) -> float:
    labels = {"route": route, "outcome": "deny", "reason": reason}
    return sum(
        REGISTRY.get_sample_value("auth_decisions_total", {**labels, "scheme": s}) or 0.0
        for s in ("bearer", "dpop")
    )


def test_a_token_meeting_every_requirement_is_accepted(client, module_issuer) -> None:
    assert client.get("/api/step/both", headers=bearer(strong(module_issuer))).status_code == 200
    assert client.get("/api/step/both", headers=bearer(strong(module_issuer, acr=HW))).status_code == 200


def test_a_weaker_acr_gets_the_step_up_challenge_with_acr_values_only(client, module_issuer) -> None:
    before = decisions("/api/step/both", "step_up")
    response = client.get("/api/step/both", headers=bearer(strong(module_issuer, acr="urn:pwd-only")))
    assert response.status_code == 401
    found = params(response.headers["WWW-Authenticate"])
    assert found["error"] == "insufficient_user_authentication"
    assert set(found["acr_values"].split(" ")) == {MFA, HW}
    assert "max_age" not in found
    assert "urn:pwd-only" not in response.headers["WWW-Authenticate"] + response.get_data(as_text=True)
    assert response.json["error"] == "insufficient_user_authentication"
    assert response.headers["Cache-Control"] == "no-store"
    assert decisions("/api/step/both", "step_up") == before + 1


@pytest.mark.parametrize("auth_time", [None, 0, "recent"])
def test_an_old_or_missing_auth_time_gets_max_age_only(client, module_issuer, auth_time) -> None:
    token = strong(module_issuer, auth_time=int(time.time()) - 1000 if auth_time == 0 else auth_time)
    response = client.get("/api/step/both", headers=bearer(token))
    assert response.status_code == 401
    found = params(response.headers["WWW-Authenticate"])
    assert found["error"] == "insufficient_user_authentication"
    assert found["max_age"] == "300" and "acr_values" not in found


def test_failing_both_names_both(client, module_issuer) -> None:
    token = module_issuer.mint({"acr": "low"}, scope="read:secrets")
    found = params(client.get("/api/step/both", headers=bearer(token)).headers["WWW-Authenticate"])
    assert set(found) >= {"acr_values", "max_age"}


def test_the_description_is_fixed_whatever_the_token_carries(client, module_issuer) -> None:
    texts = {
        client.get("/api/step/both", headers=bearer(strong(module_issuer, acr=acr))).json["error_description"]
        for acr in ("a", "urn:other", 'x"y')
    }
    assert len(texts) == 1


def test_a_challenge_never_names_a_requirement_the_route_does_not_have(client, module_issuer) -> None:
    weak = module_issuer.mint({"acr": "low"})
    acr = params(client.get("/api/step/acr", headers=bearer(weak)).headers["WWW-Authenticate"])
    assert acr["acr_values"] == MFA and "max_age" not in acr
    recent = params(client.get("/api/step/recent", headers=bearer(weak)).headers["WWW-Authenticate"])
    assert recent["max_age"] == "300" and "acr_values" not in recent
    assert client.get("/api/step/acr", headers=bearer(module_issuer.mint({"acr": MFA}))).status_code == 200


def test_a_token_lacking_both_scope_and_acr_gets_the_step_up_answer(client, module_issuer) -> None:
    token = module_issuer.mint({"acr": "low", "auth_time": int(time.time())}, scope="other")
    response = client.get("/api/step/both", headers=bearer(token))
    assert response.status_code == 401
    assert 'error="insufficient_user_authentication"' in response.headers["WWW-Authenticate"]
    # With the user authentication good, the missing permission is the answer.
    strong_but_unscoped = strong(module_issuer, scope="other")
    assert client.get("/api/step/both", headers=bearer(strong_but_unscoped)).status_code == 403


@pytest.mark.parametrize("kind", ["expired", "bad_signature"])
def test_an_invalid_token_gets_invalid_token_not_step_up(client, module_issuer, kind) -> None:
    if kind == "expired":
        token = module_issuer.mint({"acr": "low"}, ttl=-60)
    else:
        header, body, signature = module_issuer.mint({"acr": "low"}).split(".")
        token = f"{header}.{body}.{signature[::-1]}"
    challenge = client.get("/api/step/both", headers=bearer(token)).headers["WWW-Authenticate"]
    assert params(challenge)["error"] == "invalid_token"


def test_the_dpop_scheme_gets_the_challenge_on_dpop(client, module_issuer) -> None:
    token = module_issuer.mint({"acr": "low", "cnf": {"jkt": KEY.thumbprint()}}, scope="read:secrets")
    proof = make_proof(KEY, "GET", "http://localhost/api/step/both", access_token=token)
    response = client.get("/api/step/both", headers={"Authorization": f"DPoP {token}", "DPoP": proof})
    assert response.status_code == 401
    challenges = response.headers.getlist("WWW-Authenticate")
    dpop = next(c for c in challenges if c.startswith("DPoP "))
    assert params(dpop)["error"] == "insufficient_user_authentication"
    assert all("insufficient_user_authentication" not in c for c in challenges if c.startswith("Bearer"))


def test_the_acquire_form_takes_the_same_options(client, module_issuer) -> None:
    token = module_issuer.mint({"acr": MFA})
    assert client.get("/api/step/acquire", headers=bearer(token)).status_code == 200
    weak = client.get("/api/step/acquire", headers=bearer(module_issuer.mint()))
    assert weak.status_code == 401 and "acr_values=" in weak.headers["WWW-Authenticate"]


@pytest.mark.parametrize(
    "options",
    [{"acr_values": []}, {"acr_values": ["a b"]}, {"acr_values": ['"']}, {"max_age": -1},
     {"max_age": "300"}, {"max_age": True}],
)
def test_malformed_step_up_options_are_refused_when_the_route_is_declared(options) -> None:
    with pytest.raises(ValueError, match="require_auth"):
        require_auth(**options)
