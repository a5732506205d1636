"""PUBLIC_URL lists every name the service is reached under: DPoP proofs for each pass, others fail."""

from __future__ import annotations

from typing import Any

import pytest
from flask.testing import FlaskClient
from joserfc.jwk import ECKey
from prometheus_client import REGISTRY

from dev_issuer.client import make_proof
from service.config import ConfigError
from service.config import Settings
from tests.support.appkit import client_for
from tests.support.issuer import LocalIssuer

KEY = ECKey.generate_key("P-256", private=True)


def dpop(token: str, url: str, **kwargs: Any) -> dict[str, str]:
    """DPoP request headers with a fresh proof for GET url."""
    proof = make_proof(KEY, "GET", url, access_token=token, **kwargs)
    return {"Authorization": f"DPoP {token}", "DPoP": proof}


def denials(reason: str) -> float:
    """auth_decisions_total for a DPoP refusal of /api/private with this reason."""
    labels = {"route": "/api/private", "outcome": "deny", "reason": reason, "scheme": "dpop"}
    return REGISTRY.get_sample_value("auth_decisions_total", labels) or 0.0


LISTED = ("https://api.example.com", "https://api.example.eu:8443/v1")


@pytest.fixture(scope="module")
def listed(module_issuer: LocalIssuer) -> FlaskClient:
    """An app reached under two names (PUBLIC_URL is a comma-separated list)."""
    return client_for(module_issuer, PUBLIC_URL=" , ".join(LISTED) + ",")


def bound_token(issuer: LocalIssuer) -> str:
    """A token bound to KEY (RFC 9449 §6.1)."""
    return issuer.mint({"cnf": {"jkt": KEY.thumbprint()}})


@pytest.mark.parametrize("public", LISTED)
def test_a_proof_for_each_listed_public_url_passes(
    listed: FlaskClient, module_issuer: LocalIssuer, public: str
) -> None:
    token = bound_token(module_issuer)
    host = public.split("//")[1].split("/")[0]
    response = listed.get("/api/private", headers={**dpop(token, public + "/api/private"), "Host": host})
    assert response.status_code == 200, response.json


@pytest.mark.parametrize("url", ["https://api.other.example/api/private", "http://api.example.com/api/private",
                                 "https://api.example.eu:8443/api/private", "http://localhost/api/private"])
def test_a_proof_for_an_unlisted_url_is_refused_whatever_the_host_header(
    listed: FlaskClient, module_issuer: LocalIssuer, url: str
) -> None:
    token = bound_token(module_issuer)
    before = denials("dpop_htu")
    host = url.split("//")[1].split("/")[0]
    response = listed.get("/api/private", headers={**dpop(token, url), "Host": host})
    assert response.status_code == 401
    assert response.json["error"] == "invalid_dpop_proof"
    assert denials("dpop_htu") == before + 1


def test_rfc9728_answers_name_the_first_listed_public_url(listed: FlaskClient) -> None:
    response = listed.get("/api/private")
    assert response.status_code == 401
    pointer = f'resource_metadata="{LISTED[0]}/.well-known/oauth-protected-resource"'
    assert all(pointer in c for c in response.headers.getlist("WWW-Authenticate"))


BASE = {"AUTH0_ISSUER": "https://tenant.example/", "AUTH0_AUDIENCE": "https://api.example.eu:8443/v1"}


def test_the_list_is_trimmed_and_deduplicated_and_the_audience_entry_is_the_resource() -> None:
    from service.web.resource_metadata import resource_identifier

    settings = Settings.from_env({**BASE, "PUBLIC_URL": "https://a.example/, https://api.example.eu:8443/v1 ,https://a.example"})
    assert settings.public_urls == ("https://a.example", "https://api.example.eu:8443/v1")
    assert settings.public_url == "https://a.example"
    assert resource_identifier(settings) == "https://api.example.eu:8443/v1"
    assert Settings.from_env(BASE).public_urls == ()


@pytest.mark.parametrize("value", ["https://a.example,ftp://b.example", "https://a.example,https://b.example?x=1",
                                   "https://a.example,https://u:p@b.example"])
def test_every_entry_is_checked(value: str) -> None:
    with pytest.raises(ConfigError, match="PUBLIC_URL"):
        Settings.from_env({**BASE, "PUBLIC_URL": value})
