"""Settings: read once from the environment, typed, frozen, failing fast with the variable's name."""

from __future__ import annotations

import dataclasses

import pytest

from service.config import DEFAULTS
from service.config import ConfigError
from service.config import Settings

BASE = {"AUTH0_DOMAIN": "tenant.eu.auth0.com", "AUTH0_AUDIENCE": "https://api.example"}


def test_domain_gives_the_auth0_issuer() -> None:
    settings = Settings.from_env(BASE)
    assert settings.issuer == "https://tenant.eu.auth0.com/"
    assert settings.audience == "https://api.example"
    assert settings.jwks_uri is None


def test_explicit_issuer_wins_over_domain() -> None:
    settings = Settings.from_env({**BASE, "AUTH0_ISSUER": "http://127.0.0.1:3011/"})
    assert settings.issuer == "http://127.0.0.1:3011/"


def test_defaults_are_the_pinned_ones() -> None:
    settings = Settings.from_env(BASE)
    assert settings.jwks_ttl == 600 and settings.jwks_cooldown == 30
    assert settings.algorithms == ("RS256",) and settings.leeway == 5
    assert settings.http_timeout == 5 and settings.cors_origins == ("*",)
    assert settings.log.format == "json" and settings.log.access_probes is False
    assert settings.metrics_port == 0
    assert set(DEFAULTS) >= {"AUTH0_JWKS_TTL", "AUTH0_JWKS_COOLDOWN", "AUTH0_LEEWAY", "AUTH0_HTTP_TIMEOUT"}


def test_settings_are_frozen() -> None:
    settings = Settings.from_env(BASE)
    with pytest.raises(dataclasses.FrozenInstanceError):
        settings.audience = "x"  # type: ignore[misc]


@pytest.mark.parametrize(
    "env, variable",
    [
        ({"AUTH0_DOMAIN": "t.auth0.com"}, "AUTH0_AUDIENCE"),
        ({"AUTH0_AUDIENCE": "a"}, "AUTH0_DOMAIN"),
        ({**BASE, "AUTH0_JWKS_TTL": "soon"}, "AUTH0_JWKS_TTL"),
        ({**BASE, "AUTH0_JWKS_TTL": "0"}, "AUTH0_JWKS_TTL"),
        ({**BASE, "AUTH0_ALGORITHMS": "HS256"}, "AUTH0_ALGORITHMS"),
        ({**BASE, "AUTH0_ALGORITHMS": "none"}, "AUTH0_ALGORITHMS"),
        ({**BASE, "AUTH0_ISSUER": "ftp://x/"}, "AUTH0_ISSUER"),
        ({**BASE, "AUTH0_ISSUER": "https://u:p@x/"}, "AUTH0_ISSUER"),
        ({**BASE, "AUTH0_DOMAIN": "x.com/path"}, "AUTH0_DOMAIN"),
        ({**BASE, "AUTH0_LEEWAY": "-1"}, "AUTH0_LEEWAY"),
        ({**BASE, "LOG_FORMAT": "xml"}, "LOG_FORMAT"),
        ({**BASE, "AUTH0_HTTP_TIMEOUT": "nan"}, "AUTH0_HTTP_TIMEOUT"),
    ],
)
def test_bad_or_missing_settings_name_the_variable(env: dict[str, str], variable: str) -> None:
    with pytest.raises(ConfigError, match=variable):
        Settings.from_env(env)


def test_asymmetric_algorithm_lists_are_accepted() -> None:
    assert Settings.from_env({**BASE, "AUTH0_ALGORITHMS": "RS256, PS256"}).algorithms == ("RS256", "PS256")


@pytest.mark.parametrize(
    ("env", "variable"),
    [
        ({"LOG_ACCESS_PROBES": "yes"}, "LOG_ACCESS_PROBES"),
        ({"METRICS_PORT": "x"}, "METRICS_PORT"),
        ({"METRICS_PORT": "65536"}, "METRICS_PORT"),
        ({"METRICS_PORT": "3010"}, "METRICS_PORT"),
        ({"METRICS_PORT": "9100", "PORT": "9100"}, "METRICS_PORT"),
        ({"SERVICE_VERSION": "v" * 129}, "SERVICE_VERSION"),
        ({"SERVICE_REVISION": "abc\x00def"}, "SERVICE_REVISION"),
    ],
)
def test_bad_operations_settings_name_the_variable(env: dict[str, str], variable: str) -> None:
    with pytest.raises(ConfigError, match=variable):
        Settings.from_env({**BASE, **env})


def test_operations_settings() -> None:
    settings = Settings.from_env(
        {**BASE, "LOG_ACCESS_PROBES": "1", "METRICS_PORT": "9100", "SERVICE_VERSION": "1.4.0"}
    )
    assert settings.log.access_probes is True and settings.metrics_port == 9100
    assert (settings.version, settings.revision) == ("1.4.0", "unknown")
