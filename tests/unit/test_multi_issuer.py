"""Several trusted issuers (custom domains of one tenant): config, selection by iss, isolation."""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator

import pytest
from prometheus_client import REGISTRY

from dev_issuer.config import IssuerConfigError
from dev_issuer.config import IssuerSettings
from dev_issuer.tenants import extra_issuers
from service.app import create_app
from service.config import ConfigError
from service.config import Settings
from tests.support.appkit import bearer
from tests.support.helpers import eventually
from tests.support.issuer import Key
from tests.support.issuer import LocalIssuer

BASE = {"AUTH0_AUDIENCE": "https://api.example"}


@pytest.mark.parametrize(
    "env, issuers",
    [
        ({"AUTH0_DOMAIN": "login.example.com,tenant.eu.auth0.com"},
         ("https://login.example.com/", "https://tenant.eu.auth0.com/")),
        ({"AUTH0_DOMAIN": " login.example.com , ,https://tenant.eu.auth0.com/,login.example.com"},
         ("https://login.example.com/", "https://tenant.eu.auth0.com/")),
        ({"AUTH0_ISSUER": "https://a.example/,https://b.example/tenant/"},
         ("https://a.example/", "https://b.example/tenant/")),
        ({"AUTH0_ISSUER": "https://a.example/", "AUTH0_DOMAIN": "b.example,c.example"},
         ("https://a.example/",)),
        ({"AUTH0_DOMAIN": "tenant.eu.auth0.com"}, ("https://tenant.eu.auth0.com/",)),
    ],
)
def test_comma_separated_domains_or_issuers_are_each_trusted(env, issuers) -> None:
    settings = Settings.from_env({**BASE, **env})
    assert settings.issuers == issuers
    assert settings.issuer == issuers[0]


@pytest.mark.parametrize(
    "env, variable",
    [
        ({"AUTH0_DOMAIN": "a.example,b.example", "AUTH0_JWKS_URI": "https://a.example/jwks"},
         "AUTH0_JWKS_URI"),
        ({"AUTH0_ISSUER": "https://a.example/,https://b.example/", "AUTH0_JWKS_URI": "https://a.example/k"},
         "AUTH0_JWKS_URI"),
        ({"AUTH0_DOMAIN": "a.example,b.example/path"}, "AUTH0_DOMAIN"),
        ({"AUTH0_ISSUER": "https://a.example/,ftp://b.example/"}, "AUTH0_ISSUER"),
        ({"AUTH0_DOMAIN": " , "}, "AUTH0_DOMAIN"),
    ],
)
def test_bad_multi_issuer_configuration_names_the_variable(env, variable) -> None:
    with pytest.raises(ConfigError) as raised:
        Settings.from_env({**BASE, **env})
    assert str(raised.value).startswith(variable)


def test_jwks_uri_stays_allowed_with_one_issuer() -> None:
    settings = Settings.from_env({**BASE, "AUTH0_DOMAIN": "a.example", "AUTH0_JWKS_URI": "https://a.example/k"})
    assert settings.jwks_uri == "https://a.example/k"


@pytest.fixture
def pair() -> Iterator[tuple[LocalIssuer, LocalIssuer]]:
    with LocalIssuer() as a, LocalIssuer() as b:
        yield a, b


def _client(*issuers: LocalIssuer, **overrides: str):
    env = {
        "AUTH0_ISSUER": ",".join(i.url for i in issuers),
        "AUTH0_AUDIENCE": issuers[0].audience,
        "AUTH0_JWKS_RETRY": "0",
        **overrides,
    }
    return create_app(Settings.from_env(env)).test_client()


def test_tokens_of_each_configured_issuer_are_accepted(pair) -> None:
    a, b = pair
    client = _client(a, b)
    for issuer in (a, b):
        response = client.get("/api/private-scoped", headers=bearer(issuer.mint()))
        assert response.status_code == 200


def test_a_token_is_verified_only_with_the_keys_of_the_issuer_it_names(pair) -> None:
    a, b = pair
    client = _client(a, b)
    assert client.get("/api/private", headers=bearer(a.mint())).status_code == 200
    assert client.get("/api/private", headers=bearer(b.mint())).status_code == 200
    # iss is B, signed by A's key under A's kid (which this app holds, as A's).
    claims_b = {"iss": b.url}
    forged = a.mint(claims_b)
    response = client.get("/api/private", headers=bearer(forged))
    assert response.status_code == 401 and response.get_json()["error"] == "invalid_token"
    # iss is A, signed by B's key under B's kid.
    response = client.get("/api/private", headers=bearer(b.mint({"iss": a.url})))
    assert response.status_code == 401


def test_a_kid_shared_by_two_issuers_still_selects_the_named_issuers_key(pair) -> None:
    a, b = pair
    shared = Key.generate("shared-kid")
    other = Key.generate("shared-kid")
    a.publish(shared)
    b.publish(other)
    client = _client(a, b)
    assert client.get("/api/private", headers=bearer(a.mint(key=shared))).status_code == 200
    assert client.get("/api/private", headers=bearer(b.mint(key=other))).status_code == 200
    response = client.get("/api/private", headers=bearer(a.mint({"iss": b.url}, key=shared)))
    assert response.status_code == 401
    assert "signature" in response.get_json()["error_description"]


@pytest.mark.parametrize(
    "iss",
    ["UNKNOWN", "http://127.0.0.1:1/", "{a_bare}", "{a}x", "{a_upper}", " {a}", ["{a}"], None, 7],
)
def test_an_issuer_not_configured_exactly_is_bad_issuer_with_no_fetch(pair, iss) -> None:
    a, b = pair
    with LocalIssuer() as stranger:
        values = {"a": a.url, "a_upper": a.url.upper(), "a_bare": a.url.rstrip("/")}
        if iss == "UNKNOWN":
            iss = stranger.url
        elif isinstance(iss, str):
            iss = iss.format(**values)
        elif isinstance(iss, list):
            iss = [i.format(**values) for i in iss]
        client = _client(a, b)
        before = REGISTRY.get_sample_value(
            "auth_decisions_total",
            {"route": "/api/private", "outcome": "deny", "reason": "bad_issuer", "scheme": "bearer"},
        ) or 0
        token = stranger.mint({"iss": iss}) if iss is not None else stranger.mint(drop=("iss",))
        response = client.get("/api/private", headers=bearer(token))
        assert response.status_code == 401
        assert REGISTRY.get_sample_value(
            "auth_decisions_total",
            {"route": "/api/private", "outcome": "deny", "reason": "bad_issuer", "scheme": "bearer"},
        ) == before + 1
        fetches = [(i.jwks_fetches, i.discovery_fetches) for i in (a, b, stranger)]
        assert fetches == [(0, 0)] * 3


def test_one_issuer_down_never_affects_the_other(pair) -> None:
    a, b = pair
    b.go_down()
    client = _client(a, b)
    ready = client.get("/readyz")
    assert ready.status_code == 200
    states = {s["issuer"]: s for s in ready.get_json()["issuers"]}
    assert states[a.url]["status"] == "ready" and states[a.url]["keys"] == 1
    assert states[b.url]["status"] in ("unavailable",) and states[b.url]["keys"] == 0
    assert client.get("/api/private", headers=bearer(a.mint())).status_code == 200
    assert client.get("/api/private", headers=bearer(b.mint())).status_code == 503
    assert client.get("/api/private", headers=bearer(a.mint())).status_code == 200
    b.come_up()  # b's refresher retries by itself (AUTH0_JWKS_RETRY after its failure)
    token = b.mint()
    assert eventually(
        lambda: client.get("/api/private", headers=bearer(token)).status_code == 200, timeout=3
    )
    states = {s["issuer"]: s for s in client.get("/readyz").get_json()["issuers"]}
    assert states[b.url]["status"] == "ready"


def test_readyz_is_503_only_when_no_issuer_has_keys(pair) -> None:
    a, b = pair
    a.go_down()
    b.go_down()
    client = _client(a, b)
    response = client.get("/readyz")
    assert response.status_code == 503
    body = response.get_json()
    assert body["status"] == "unavailable"
    assert [s["issuer"] for s in body["issuers"]] == [a.url, b.url]
    assert all(s["status"] == "unavailable" and s["error"] for s in body["issuers"])


def test_single_issuer_readyz_keeps_its_fields(issuer: LocalIssuer) -> None:
    body = _client(issuer).get("/readyz").get_json()
    assert body["status"] == "ready" and body["keys"] == 1
    assert body["issuers"] == [{"issuer": issuer.url, "status": "ready", "keys": 1}]


def test_jwks_fetches_are_counted_per_issuer(pair) -> None:
    a, b = pair
    b.go_down()
    # No retry of B's failed fetch while the counts are read: exactly one fetch per issuer.
    client = _client(a, b, AUTH0_JWKS_RETRY="600")

    def count(issuer: LocalIssuer, outcome: str) -> float:
        labels = {"issuer": issuer.url, "outcome": outcome}
        return REGISTRY.get_sample_value("jwks_fetches_total", labels) or 0.0

    assert count(a, "success") == count(b, "error") == 0
    client.get("/api/private", headers=bearer(a.mint()))
    client.get("/api/private", headers=bearer(b.mint()))
    assert count(a, "success") == 1 and count(a, "error") == 0
    assert count(b, "error") == 1 and count(b, "success") == 0
    text = client.get("/metrics").get_data(as_text=True)
    assert f'jwks_fetches_total{{issuer="{b.url}",outcome="error"}}' in text or (
        f'jwks_fetches_total{{outcome="error",issuer="{b.url}"}}' in text
    )


@pytest.mark.parametrize(
    "raw, paths", [("", ()), ("eu", ("eu",)), (" eu, /us/ ,eu", ("eu", "us"))]
)
def test_dev_issuer_extra_paths_name_more_issuers(raw, paths) -> None:
    settings = IssuerSettings.from_env({"DEV_ISSUER_EXTRA_PATHS": raw})
    assert settings.extra_paths == paths
    assert [extra.issuer for extra, _ in extra_issuers(settings)] == [
        f"{settings.issuer}{path}/" for path in paths
    ]


@pytest.mark.parametrize("raw", ["oauth", "a/b", "../x", "e u", "x" * 65])
def test_dev_issuer_refuses_extra_paths_that_are_not_plain_segments(raw) -> None:
    with pytest.raises(IssuerConfigError, match="DEV_ISSUER_EXTRA_PATHS"):
        IssuerSettings.from_env({"DEV_ISSUER_EXTRA_PATHS": raw})


def test_readyz_does_not_wait_for_an_issuer_that_never_answers(issuer: LocalIssuer) -> None:
    # A listening socket nobody accepts from: connections open, requests hang until the timeout.
    with socket.create_server(("127.0.0.1", 0)) as blackhole:
        silent = f"http://127.0.0.1:{blackhole.getsockname()[1]}/"
        env = {
            "AUTH0_ISSUER": f"{silent},{issuer.url}", "AUTH0_AUDIENCE": issuer.audience,
            "AUTH0_HTTP_TIMEOUT": "5",
        }
        client = create_app(Settings.from_env(env)).test_client()
        started = time.monotonic()
        response = client.get("/readyz")
        elapsed = time.monotonic() - started
        assert response.status_code == 200
        # The silent issuer cannot fail before its 5 s timeout: answering sooner means not waiting.
        assert elapsed < 4, elapsed
        states = {s["issuer"]: s["status"] for s in response.get_json()["issuers"]}
        assert states == {silent: "unavailable", issuer.url: "ready"}
        assert client.get("/api/private", headers=bearer(issuer.mint())).status_code == 200
