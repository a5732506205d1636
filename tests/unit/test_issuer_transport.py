"""Plain-http issuers are refused unless they are this machine, the dev issuer, or allowed."""

from __future__ import annotations

import pytest

from service.config import ConfigError
from service.config import Settings
from service.config import check_issuer_url

AUDIENCE = {"AUTH0_AUDIENCE": "https://api.example"}


@pytest.mark.parametrize(
    "url",
    [
        "https://tenant.eu.auth0.com/",
        "http://127.0.0.1:3011/",
        "http://127.8.9.10/",
        "http://[::1]:3011/",
        "http://localhost:3011/",
        "http://issuer:3011/",
    ],
)
def test_https_loopback_and_the_dev_issuer_name_need_no_flag(url: str) -> None:
    assert Settings.from_env({**AUDIENCE, "AUTH0_ISSUER": url}).issuer == url


@pytest.mark.parametrize(
    "url",
    [
        "http://tenant.eu.auth0.com/",
        "http://10.0.0.7:3011/",
        "http://issuer.example.com/",
        "http://localhost.example.com/",
        "http://[::2]/",
    ],
)
def test_other_plain_http_issuers_are_refused_naming_the_variable(url: str) -> None:
    with pytest.raises(ConfigError, match=r"^AUTH0_ISSUER: .* is plain http"):
        Settings.from_env({**AUDIENCE, "AUTH0_ISSUER": url})


def test_the_insecure_flag_allows_any_plain_http_issuer() -> None:
    env = {**AUDIENCE, "AUTH0_ISSUER": "http://10.0.0.7:3011/", "AUTH0_ALLOW_INSECURE_ISSUER": "1"}
    assert Settings.from_env(env).issuer == "http://10.0.0.7:3011/"


def test_the_insecure_flag_off_is_the_default() -> None:
    env = {**AUDIENCE, "AUTH0_ISSUER": "http://10.0.0.7/", "AUTH0_ALLOW_INSECURE_ISSUER": "0"}
    with pytest.raises(ConfigError, match="AUTH0_ISSUER"):
        Settings.from_env(env)


@pytest.mark.parametrize("value", ["yes", "true", "2", "on"])
def test_the_insecure_flag_takes_only_0_or_1(value: str) -> None:
    env = {**AUDIENCE, "AUTH0_ISSUER": "https://x/", "AUTH0_ALLOW_INSECURE_ISSUER": value}
    with pytest.raises(ConfigError, match="^AUTH0_ALLOW_INSECURE_ISSUER"):
        Settings.from_env(env)


def test_a_plain_http_jwks_uri_is_refused_like_an_issuer() -> None:
    env = {**AUDIENCE, "AUTH0_ISSUER": "https://x/", "AUTH0_JWKS_URI": "http://keys.example/jwks"}
    with pytest.raises(ConfigError, match="^AUTH0_JWKS_URI: .* is plain http"):
        Settings.from_env(env)


def test_the_check_applies_to_one_url_under_any_name() -> None:
    check_issuer_url("AUTH0_ISSUER", "https://a.example/", allow_insecure=False)
    with pytest.raises(ConfigError, match="^AUTH0_ISSUER: 'http://b.example/'"):
        check_issuer_url("AUTH0_ISSUER", "http://b.example/", allow_insecure=False)
    check_issuer_url("AUTH0_ISSUER", "http://b.example/", allow_insecure=True)
    with pytest.raises(ConfigError, match="absolute http"):
        check_issuer_url("AUTH0_ISSUER", "ftp://b.example/", allow_insecure=True)
