"""Attack and malformed tokens (RFC 8725 and friends), built against a LocalIssuer."""

from __future__ import annotations

import base64
import datetime
import json
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives import serialization
from cryptography.x509.oid import NameOID

from tests.support.issuer import Key
from tests.support.issuer import LocalIssuer
from tests.support.issuer import b64url
from tests.support.issuer import compact
from tests.support.issuer import json_segment

ATTACKER_HOST = "http://127.0.0.1:9/"  # discard port: a verifier that fetches it gets nothing


def _header(issuer: LocalIssuer, **extra: Any) -> dict[str, Any]:
    """A normal RS256 header naming the issuer's current kid, plus extras."""
    return {"alg": "RS256", "typ": "JWT", "kid": issuer.current_key.kid, **extra}


def alg_none(issuer: LocalIssuer, *, alg: str = "none") -> str:
    """Unsigned token (also try alg "None"/"NONE" via `alg`)."""
    return compact(_header(issuer, alg=alg), issuer.claims(), None, "none")


def alg_none_with_signature(issuer: LocalIssuer) -> str:
    """alg none but carrying the real RS256 signature of the same input."""
    good = issuer.mint()
    hdr = json_segment(_header(issuer, alg="none"))
    _, payload, sig = good.split(".")
    return f"{hdr}.{payload}.{sig}"


def hs256_public_key(issuer: LocalIssuer, *, alg: str = "HS256") -> str:
    """Key confusion: HMAC keyed with the published RSA public key PEM."""
    return issuer.mint(alg=alg)


def hs256_public_jwk_json(issuer: LocalIssuer) -> str:
    """Key confusion variant: HMAC keyed with the JWK JSON of the public key."""
    secret = json.dumps(issuer.current_key.public_jwk).encode()
    return compact(_header(issuer, alg="HS256"), issuer.claims(), secret, "HS256")


def disallowed_alg(issuer: LocalIssuer, alg: str = "RS512") -> str:
    """Correctly signed with the real key, but with an algorithm not on the allow-list."""
    return issuer.mint(alg=alg)


def jku(issuer: LocalIssuer, url: str | None = None) -> str:
    """Signed by an attacker key whose JWKS the header points at (must never be fetched)."""
    attacker = Key.generate(kid=issuer.current_key.kid)
    hdr = _header(issuer, jku=url or ATTACKER_HOST + ".well-known/jwks.json")
    return compact(hdr, issuer.claims(), attacker, "RS256")


def x5u(issuer: LocalIssuer, url: str | None = None) -> str:
    """Signed by an attacker key whose certificate URL the header names."""
    attacker = Key.generate(kid=issuer.current_key.kid)
    hdr = _header(issuer, x5u=url or ATTACKER_HOST + "cert.pem")
    return compact(hdr, issuer.claims(), attacker, "RS256")


def embedded_jwk(issuer: LocalIssuer, *, same_kid: bool = True) -> str:
    """Signed by an attacker key embedded in the header as `jwk` (CVE-2018-0114 style)."""
    attacker = Key.generate(kid=issuer.current_key.kid if same_kid else None)
    hdr = _header(issuer, jwk=attacker.public_jwk)
    if not same_kid:
        hdr["kid"] = attacker.kid
    return compact(hdr, issuer.claims(), attacker, "RS256")


def self_signed_cert(key: Key) -> bytes:
    """DER of a self-signed certificate for `key` (what an x5c attacker ships)."""
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "attacker")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.private.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .sign(key.private, hashes.SHA256())
    )
    return cert.public_bytes(serialization.Encoding.DER)


def x5c(issuer: LocalIssuer) -> str:
    """Signed by an attacker key whose self-signed certificate rides in `x5c`."""
    attacker = Key.generate(kid=issuer.current_key.kid)
    chain = [base64.b64encode(self_signed_cert(attacker)).decode()]
    hdr = _header(issuer, x5c=chain)
    return compact(hdr, issuer.claims(), attacker, "RS256")


def unknown_crit(issuer: LocalIssuer) -> str:
    """Validly signed, but marks an extension the verifier cannot understand as critical."""
    ext = "urn:example:unknown-ext"
    hdr = _header(issuer, crit=[ext], **{ext: True})
    return compact(hdr, issuer.claims(), issuer.current_key, "RS256")


def jwe_shaped(issuer: LocalIssuer) -> str:
    """Five base64url parts, like a compact JWE."""
    hdr = json_segment({"alg": "RSA-OAEP", "enc": "A256GCM", "kid": issuer.current_key.kid})
    parts = [hdr] + [b64url(bytes([i]) * 16) for i in range(1, 5)]
    return ".".join(parts)


def bad_base64(issuer: LocalIssuer) -> str:
    """Characters outside the base64url alphabet in the payload segment."""
    head, _, sig = issuer.mint().split(".")
    return f"{head}.%%%not*base64%%%.{sig}"


def non_json_header(issuer: LocalIssuer) -> str:
    """Header segment decodes to bytes that are not JSON."""
    _, payload, sig = issuer.mint().split(".")
    return f"{b64url(b'this is not json')}.{payload}.{sig}"


def non_json_payload(issuer: LocalIssuer) -> str:
    """Validly signed payload that is not JSON."""
    return compact(_header(issuer), b"definitely not json", issuer.current_key, "RS256")


def json_array_payload(issuer: LocalIssuer) -> str:
    """Validly signed payload that is JSON but not an object."""
    return compact(_header(issuer), b'["not","an","object"]', issuer.current_key, "RS256")


def wrong_signature(issuer: LocalIssuer) -> str:
    """Right kid, signed by a different key."""
    return issuer.mint(key=Key.generate(), kid=issuer.current_key.kid)


def tampered_payload(issuer: LocalIssuer) -> str:
    """Real signature over different claims (e.g. scope escalated)."""
    head, _, sig = issuer.mint(scope="").split(".")
    evil = json_segment(issuer.claims(scope="read:messages admin"))
    return f"{head}.{evil}.{sig}"


def huge(issuer: LocalIssuer, size: int = 64_000) -> str:
    """Validly signed token of about `size` characters; a verifier must cap token length itself."""
    pad = "x" * max(0, int(size * 3 / 4) - 400)
    return issuer.mint({"padding": pad})


def two_parts(issuer: LocalIssuer) -> str:
    """Only header.payload."""
    return ".".join(issuer.mint().split(".")[:2])


def empty_segments() -> str:
    """Three empty parts."""
    return ".."


def all_attacks(issuer: LocalIssuer) -> dict[str, str]:
    """Every attack/malformed token by name, for parametrised tests."""
    return {
        "alg_none": alg_none(issuer),
        "alg_None": alg_none(issuer, alg="None"),
        "alg_none_with_signature": alg_none_with_signature(issuer),
        "hs256_public_key": hs256_public_key(issuer),
        "hs256_public_jwk_json": hs256_public_jwk_json(issuer),
        "rs512_not_allowed": disallowed_alg(issuer, "RS512"),
        "ps256_not_allowed": disallowed_alg(issuer, "PS256"),
        "jku": jku(issuer),
        "x5u": x5u(issuer),
        "embedded_jwk": embedded_jwk(issuer),
        "embedded_jwk_new_kid": embedded_jwk(issuer, same_kid=False),
        "x5c": x5c(issuer),
        "unknown_crit": unknown_crit(issuer),
        "jwe_shaped": jwe_shaped(issuer),
        "bad_base64": bad_base64(issuer),
        "non_json_header": non_json_header(issuer),
        "non_json_payload": non_json_payload(issuer),
        "json_array_payload": json_array_payload(issuer),
        "wrong_signature": wrong_signature(issuer),
        "tampered_payload": tampered_payload(issuer),
        "huge": huge(issuer),
        "two_parts": two_parts(issuer),
        "empty_segments": empty_segments(),
    }
