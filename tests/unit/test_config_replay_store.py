"""AUTH0_DPOP_REPLAY_*: the shared replay store's settings, refused at start with the variable named."""

from __future__ import annotations

from pathlib import Path

import pytest

from service.config import ConfigError
from service.config import Settings
from service.config import default_replay_prefix

BASE = {"AUTH0_ISSUER": "https://tenant.example/", "AUTH0_AUDIENCE": "https://api.example.com"}


def settings(**env: str) -> Settings:
    return Settings.from_env({**BASE, **env})


def test_unset_keeps_the_pod_local_table() -> None:
    assert settings().dpop.replay_store is None


def test_defaults_fail_closed_with_a_short_timeout_and_an_audience_prefix() -> None:
    store = settings(AUTH0_DPOP_REPLAY_URL="redis://redis:6379/0").dpop.replay_store
    assert store is not None
    assert (store.timeout, store.fail_open, store.password) == (0.05, False, None)
    assert store.prefix == default_replay_prefix("https://api.example.com")
    assert store.prefix != default_replay_prefix("https://api.other.com")
    assert "redis://" not in repr(store)


@pytest.mark.parametrize(
    "url", ["rediss://:pw@cache.example.com:6380/2", "redis://user:pw@10.0.0.1", "redis://h"]
)
def test_redis_and_rediss_urls_are_accepted(url: str) -> None:
    store = settings(AUTH0_DPOP_REPLAY_URL=url).dpop.replay_store
    assert store is not None and store.url == url


@pytest.mark.parametrize(
    "url",
    ["http://h:6379", "unix:///run/redis.sock", "valkey://h", "redis://:secret@/0", "redis://h:99999",
     "redis://h:6379/zero", "redis:h:6379"],
)
def test_other_urls_stop_the_start_naming_the_variable_not_the_password(url: str) -> None:
    with pytest.raises(ConfigError) as caught:
        settings(AUTH0_DPOP_REPLAY_URL=url)
    assert str(caught.value).startswith("AUTH0_DPOP_REPLAY_URL: ")
    assert "secret" not in str(caught.value)


@pytest.mark.parametrize("content", ["pw-1\n", "pw-1", "pw-1\r\n"])
def test_the_password_file_is_read_without_its_trailing_newline(tmp_path: Path, content: str) -> None:
    path = tmp_path / "password"
    path.write_bytes(content.encode())
    store = settings(
        AUTH0_DPOP_REPLAY_URL="redis://redis:6379/0", AUTH0_DPOP_REPLAY_PASSWORD_FILE=str(path)
    ).dpop.replay_store
    assert store is not None and store.password == "pw-1"


def test_a_password_in_two_places_or_an_unreadable_file_stops_the_start(tmp_path: Path) -> None:
    path = tmp_path / "password"
    path.write_text("pw")
    with pytest.raises(ConfigError, match="^AUTH0_DPOP_REPLAY_PASSWORD_FILE: "):
        settings(AUTH0_DPOP_REPLAY_URL="redis://:pw@redis:6379", AUTH0_DPOP_REPLAY_PASSWORD_FILE=str(path))
    with pytest.raises(ConfigError, match="^AUTH0_DPOP_REPLAY_PASSWORD_FILE: "):
        settings(
            AUTH0_DPOP_REPLAY_URL="redis://redis:6379",
            AUTH0_DPOP_REPLAY_PASSWORD_FILE=str(tmp_path / "missing"),
        )


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("AUTH0_DPOP_REPLAY_FAIL", "maybe"),
        ("AUTH0_DPOP_REPLAY_TIMEOUT", "0"),
        ("AUTH0_DPOP_REPLAY_TIMEOUT", "soon"),
        ("AUTH0_DPOP_REPLAY_PREFIX", "two words"),
    ],
)
def test_bad_values_stop_the_start_naming_the_variable(name: str, value: str) -> None:
    with pytest.raises(ConfigError, match=f"^{name}: "):
        settings(AUTH0_DPOP_REPLAY_URL="redis://redis:6379/0", **{name: value})


def test_fail_open_timeout_and_prefix_are_read() -> None:
    store = settings(
        AUTH0_DPOP_REPLAY_URL="redis://redis",
        AUTH0_DPOP_REPLAY_FAIL="open",
        AUTH0_DPOP_REPLAY_TIMEOUT="0.2",
        AUTH0_DPOP_REPLAY_PREFIX="api-a",
    ).dpop.replay_store
    assert store is not None and (store.fail_open, store.timeout, store.prefix) == (True, 0.2, "api-a")
