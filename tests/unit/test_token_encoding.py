"""Every token has exactly one spelling: non-canonical base64url (RFC 4648 §3.5) is refused."""

from __future__ import annotations

import base64

import pytest

from tests.support.appkit import bearer
from tests.support.appkit import client_for
from tests.support.issuer import LocalIssuer
from tests.support.issuer import b64url
from tests.support.issuer import json_segment

ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
#: Unused low bits of the last character, by segment length % 4.
UNUSED_BITS = {2: 4, 3: 2}


@pytest.fixture(scope="module")
def client(module_issuer: LocalIssuer):
    """One app (with its verified-token cache on) for the module."""
    return client_for(module_issuer)


def spellings(segment: str) -> list[str]:
    """Every spelling of a segment that decodes to the same bytes, the canonical one first."""
    bits = UNUSED_BITS.get(len(segment) % 4, 0)
    value = ALPHABET.index(segment[-1])
    return [segment[:-1] + ALPHABET[value | low] for low in range(1 << bits)]


def signed(issuer: LocalIssuer, header: str, payload: str) -> str:
    """A token signed over exactly these header and payload segments."""
    signing_input = f"{header}.{payload}".encode()
    return f"{header}.{payload}.{b64url(issuer.current_key.sign(signing_input))}"


def segment_with_unused_bits(obj: dict) -> str:
    """The JSON object's base64url, padded with a filler claim until its last character has
    unused bits."""
    for filler in range(8):
        segment = json_segment({**obj, "x": "y" * filler})
        if len(segment) % 4 in UNUSED_BITS:
            return segment
    raise AssertionError("no length with unused bits")


def status(client, token: str) -> tuple[int, str]:
    """Status and error_description of /api/private for a token."""
    response = client.get("/api/private", headers=bearer(token))
    return response.status_code, (response.get_json(silent=True) or {}).get("error_description", "")


def test_only_the_canonical_signature_spelling_verifies(client, module_issuer: LocalIssuer) -> None:
    header, payload, signature = module_issuer.mint().split(".")
    variants = spellings(signature)
    assert len(variants) == 16  # RS256: 256 bytes, 342 characters, 4 unused bits
    results = [status(client, f"{header}.{payload}.{variant}")[0] for variant in variants]
    assert results == [200] + [401] * 15


def test_a_respelled_signature_is_refused_even_after_the_canonical_one_was_cached(
    client, module_issuer: LocalIssuer
) -> None:
    token = module_issuer.mint()
    assert status(client, token)[0] == 200
    head, _, signature = token.rpartition(".")
    code, description = status(client, f"{head}.{spellings(signature)[1]}")
    assert (code, description) == (401, "The access token is not canonical base64url.")


@pytest.mark.parametrize("part", ["header", "payload"])
def test_a_respelled_header_or_payload_is_refused_even_when_signed_as_sent(
    client, module_issuer: LocalIssuer, part: str
) -> None:
    header_obj = {"alg": "RS256", "typ": "JWT", "kid": module_issuer.current_key.kid}
    claims = module_issuer.claims()
    if part == "header":
        header, payload = segment_with_unused_bits(header_obj), json_segment(claims)
    else:
        header, payload = json_segment(header_obj), segment_with_unused_bits(claims)
    canonical = signed(module_issuer, header, payload)
    assert status(client, canonical)[0] == 200
    original = header if part == "header" else payload
    other = spellings(original)[1]
    # The other spelling decodes to the very same bytes for a lenient decoder.
    assert lenient_decode(other) == lenient_decode(original)
    if part == "header":
        respelled = signed(module_issuer, other, payload)
    else:
        respelled = signed(module_issuer, header, other)
    assert status(client, respelled) == (401, "The access token is not canonical base64url.")


def lenient_decode(segment: str) -> bytes:
    """Python's own base64url decoding, which ignores the unused bits."""
    return base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4))
