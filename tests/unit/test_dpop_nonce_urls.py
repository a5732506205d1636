"""Stateless nonces and the htu URI normalisation."""

from __future__ import annotations

import pytest

from service.jose.nonce import NonceIssuer
from service.jose.nonce import ensure_secret
from service.jose.nonce import secret_bytes
from service.jose.urls import normalize


def test_processes_sharing_a_secret_agree_on_nonces() -> None:
    a = NonceIssuer(secret_bytes("shared"), 60)
    b = NonceIssuer(secret_bytes("shared"), 60)
    other = NonceIssuer(secret_bytes("other"), 60)
    assert a.current(1000.0) == b.current(1000.0) != other.current(1000.0)
    assert b.check(a.current(1000.0), 1000.0) == (True, False)
    assert other.check(a.current(1000.0), 1000.0) == (False, True)


def test_a_nonce_lives_for_its_step_and_the_next() -> None:
    issuer = NonceIssuer(secret_bytes("s"), 60)
    nonce = issuer.current(600.0)
    assert issuer.check(nonce, 659.0) == (True, False)
    assert issuer.check(nonce, 660.0) == (True, True)
    assert issuer.check(nonce, 720.0) == (False, True)
    assert issuer.check(None, 600.0) == (False, True)


def test_nonces_use_only_nqchar_safe_characters() -> None:
    nonce = NonceIssuer(secret_bytes("s"), 60).current(0.0)
    assert nonce.replace("-", "").replace("_", "").isalnum()


def test_a_missing_secret_is_generated_once() -> None:
    env: dict[str, str] = {}
    ensure_secret(env)
    generated = env["AUTH0_DPOP_NONCE_SECRET"]
    ensure_secret(env)
    assert env["AUTH0_DPOP_NONCE_SECRET"] == generated and len(generated) >= 32
    kept = {"AUTH0_DPOP_NONCE_SECRET": "mine"}
    ensure_secret(kept)
    assert kept["AUTH0_DPOP_NONCE_SECRET"] == "mine"


@pytest.mark.parametrize(
    "url, expected",
    [
        ("HTTPS://Example.COM/a", "https://example.com/a"),
        ("https://example.com:443/a", "https://example.com/a"),
        ("http://example.com:80", "http://example.com/"),
        ("http://example.com:8080/a?b#c", "http://example.com:8080/a"),
        ("https://example.com/%7euser/%2f%41", "https://example.com/~user/%2FA"),
        ("https://example.com/a/b/../c/./d", "https://example.com/a/c/d"),
        ("https://[::1]:8443/x", "https://[::1]:8443/x"),
    ],
)
def test_normalisation_follows_rfc_3986_section_6(url: str, expected: str) -> None:
    assert normalize(url) == expected


@pytest.mark.parametrize(
    "url",
    ["/relative", "ftp://example.com/", "https://user@example.com/", "https://example.com:99999/",
     "https://exa mple.com/", "https://example.com/a b", "https://example.com/%zz", "https://[::1/"],
)
def test_non_http_or_malformed_uris_do_not_normalise(url: str) -> None:
    assert normalize(url) is None
