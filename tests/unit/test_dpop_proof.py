"""Each RFC 9449 §4.3 proof check on its own: a valid proof with exactly one thing wrong."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import pytest
from joserfc.jwk import ECKey
from joserfc.jwk import OKPKey
from joserfc.jwk import RSAKey

from dev_issuer.client import make_proof
from service.jose.dpop import ProofVerifier
from service.jose.dpop import access_token_hash
from service.jose.errors import AuthError
from service.jose.errors import InvalidDPoPProofError
from service.jose.errors import UseDPoPNonceError
from service.jose.nonce import NonceIssuer
from service.jose.replay import Verdict
from service.jose.replay_table import ReplayTable
from tests.support.issuer import b64url
from tests.support.issuer import json_segment

URL = "https://api.example.com/api/private"
TOKEN = "header.payload.signature"
KEY = ECKey.generate_key("P-256", private=True)


#: A fixed "now" for the iat window tests: the window's edges are exact, whatever the load.
NOW = 1_800_000_000.25


def verifier(
    algorithms: tuple[str, ...] = ("ES256",),
    nonces: NonceIssuer | None = None,
    clock: Callable[[], float] = time.time,
) -> ProofVerifier:
    table = ReplayTable(1024, 330)
    return ProofVerifier(algorithms, iat_offset=300, iat_leeway=30, replay=table, nonces=nonces, clock=clock)


def check(proof: str, *, v: ProofVerifier | None = None, method: str = "GET", url: str = URL,
          token: str | None = TOKEN, jkt: str | None = None) -> str | None:
    v = v or verifier()
    return v.verify(proof, method=method, url=url, access_token=token, jkt=jkt or KEY.thumbprint())


def reason_of(proof: str, **kwargs: Any) -> str:
    with pytest.raises(InvalidDPoPProofError) as caught:
        check(proof, **kwargs)
    return caught.value.reason


def proof(**kwargs: Any) -> str:
    kwargs.setdefault("access_token", TOKEN)
    return make_proof(kwargs.pop("key", KEY), kwargs.pop("method", "GET"), kwargs.pop("url", URL), **kwargs)


def test_a_valid_proof_is_accepted() -> None:
    assert check(proof()) is None


@pytest.mark.parametrize("typ", ["jwt", "at+jwt", None, 7])
def test_typ_must_be_dpop_jwt(typ: Any) -> None:
    assert reason_of(proof(header={"typ": typ})) == "dpop_typ"


def test_typ_compares_case_insensitively() -> None:
    assert check(proof(header={"typ": "DPoP+JWT"})) is None


@pytest.mark.parametrize("alg", ["none", "HS256", "ES384", "RS256"])
def test_alg_must_be_an_allowed_asymmetric_algorithm(alg: str) -> None:
    token = proof()
    header, rest = token.split(".", 1)
    swapped = json_segment({"typ": "dpop+jwt", "alg": alg, "jwk": KEY.as_dict(private=False)})
    assert reason_of(f"{swapped}.{rest}") == "dpop_alg"


@pytest.mark.parametrize(
    "alg, key",
    [
        ("RS256", RSAKey.generate_key(2048, private=True)),
        ("PS256", RSAKey.generate_key(2048, private=True)),
        ("EdDSA", OKPKey.generate_key("Ed25519", private=True)),
    ],
)
def test_configured_rsa_pss_and_eddsa_proofs_verify(alg: str, key: Any) -> None:
    v = verifier(("ES256", alg))
    token = make_proof(key, "GET", URL, access_token=TOKEN, alg=alg)
    assert v.verify(token, method="GET", url=URL, access_token=TOKEN, jkt=key.thumbprint()) is None


def test_the_jwk_header_must_hold_a_public_key_only() -> None:
    assert reason_of(proof(header={"jwk": KEY.as_dict(private=True)})) == "dpop_jwk"


@pytest.mark.parametrize(
    "jwk",
    [
        None,
        "not-an-object",
        {"kty": "EC", "crv": "P-256"},
        {"kty": "EC", "crv": "P-256", "x": "AAAA", "y": "AAAA"},  # not on the curve
        ECKey.generate_key("P-384").as_dict(private=False),  # wrong curve for ES256
        {"kty": "oct", "k": "c2VjcmV0"},
        RSAKey.generate_key(2048).as_dict(private=False),  # wrong key type for ES256
    ],
)
def test_the_jwk_must_fit_the_algorithm(jwk: Any) -> None:
    assert reason_of(proof(header={"jwk": jwk})) == "dpop_jwk"


def test_short_rsa_keys_are_refused() -> None:
    from cryptography.hazmat.primitives.asymmetric import rsa
    from joserfc.errors import SecurityWarning

    with pytest.warns(SecurityWarning):  # the library warns; the verifier must refuse
        short = RSAKey.import_key(rsa.generate_private_key(65537, 1024))
    v = verifier(("RS256",))
    token = make_proof(short, "GET", URL, access_token=TOKEN, alg="RS256")
    with pytest.raises(InvalidDPoPProofError) as caught:
        v.verify(token, method="GET", url=URL, access_token=TOKEN, jkt=short.thumbprint())
    assert caught.value.reason == "dpop_jwk"


def test_the_signature_must_verify_with_the_jwk() -> None:
    other = ECKey.generate_key("P-256", private=True)
    forged = proof(key=other, header={"jwk": KEY.as_dict(private=False)})
    assert reason_of(forged) == "dpop_signature"


def test_a_tampered_payload_breaks_the_signature() -> None:
    header, _, signature = proof().split(".")
    payload = json_segment({"jti": "x", "htm": "GET", "htu": URL, "iat": int(time.time()),
                            "ath": access_token_hash(TOKEN)})
    assert reason_of(f"{header}.{payload}.{signature}") == "dpop_signature"


def test_htm_must_equal_the_request_method() -> None:
    assert reason_of(proof(method="POST")) == "dpop_htm"
    assert reason_of(proof(method="get")) == "dpop_htm"


@pytest.mark.parametrize(
    "htu",
    [
        "https://api.example.com/api/public",
        "https://api.example.com/api/private/",
        "http://api.example.com/api/private",
        "https://api.example.com:8443/api/private",
        "https://evil.example.com/api/private",
        "/api/private",
        "",
    ],
)
def test_htu_must_equal_the_request_uri(htu: str) -> None:
    assert reason_of(proof(claims={"htu": htu})) == "dpop_htu"


@pytest.mark.parametrize(
    "htu",
    [
        "HTTPS://API.Example.COM/api/private",
        "https://api.example.com:443/api/private",
        "https://api.example.com/api/%70rivate",
        "https://api.example.com/api/private?page=2",
        "https://api.example.com/api/private#section",
        "https://api.example.com/api/./private",
    ],
)
def test_htu_is_compared_after_rfc_3986_normalisation(htu: str) -> None:
    assert check(proof(claims={"htu": htu})) is None


def test_a_missing_htu_is_refused() -> None:
    token = proof(claims={"htu": None})
    assert reason_of(token) == "dpop_htu"


@pytest.mark.parametrize("offset", [-301, -300.5, 30.5, 31])
def test_iat_must_fall_within_the_window(offset: float) -> None:
    frozen = verifier(clock=lambda: NOW)
    assert reason_of(proof(claims={"iat": NOW + offset}), v=frozen) == "dpop_iat"


@pytest.mark.parametrize("offset", [-300, -290, 0, 25, 30])
def test_iat_inside_the_window_is_accepted(offset: float) -> None:
    frozen = verifier(clock=lambda: NOW)
    assert check(proof(claims={"iat": NOW + offset}), v=frozen) is None


@pytest.mark.parametrize("iat", [None, "now", True])
def test_iat_must_be_a_number(iat: Any) -> None:
    assert reason_of(proof(claims={"iat": iat})) == "dpop_iat"


@pytest.mark.parametrize("jti", [None, "", 42, "x" * 257])
def test_jti_must_be_present(jti: Any) -> None:
    assert reason_of(proof(claims={"jti": jti})) == "dpop_jti"


def test_ath_must_hash_the_presented_access_token() -> None:
    assert reason_of(proof(access_token="another.token.value")) == "dpop_ath"
    assert reason_of(proof(access_token=None)) == "dpop_ath"


def test_the_proof_key_must_be_the_one_the_token_is_bound_to() -> None:
    other = ECKey.generate_key("P-256").thumbprint()
    assert reason_of(proof(), jkt=other) == "dpop_jkt"


def test_a_proof_is_accepted_once() -> None:
    v = verifier()
    token = proof()
    assert check(token, v=v) is None
    assert reason_of(token, v=v) == "dpop_replay"


class _Answers:
    """A replay store that always gives one verdict, recording what it was asked."""

    def __init__(self, verdict: Verdict) -> None:
        self.verdict = verdict
        self.asked: list[tuple[str, str, float, float]] = []

    def first_use(self, jkt: str, jti: str, expires_at: float, now: float) -> Verdict:
        self.asked.append((jkt, jti, expires_at, now))
        return self.verdict


@pytest.mark.parametrize(
    "verdict, status, reason, retry_after",
    [
        (Verdict.FLOOD, 429, "dpop_flood", "10"),
        (Verdict.FULL, 503, "dpop_replay_full", "1"),
        (Verdict.UNAVAILABLE, 503, "replay_store_unavailable", "1"),
    ],
)
def test_a_proof_the_store_could_not_record_is_told_to_retry(
    verdict: Verdict, status: int, reason: str, retry_after: str
) -> None:
    store = _Answers(verdict)
    v = ProofVerifier(("ES256",), iat_offset=300, iat_leeway=30, replay=store)
    iat = int(time.time()) + 20
    with pytest.raises(AuthError) as caught:
        check(proof(claims={"iat": iat}), v=v)
    error = caught.value
    assert (error.status_code, error.reason, error.error) == (status, reason, "temporarily_unavailable")
    code, _, headers = error.response_parts()
    assert code == status and ("Retry-After", retry_after) in headers
    assert not any(name == "WWW-Authenticate" for name, _ in headers)
    # Asked once, with the key, the jti and the moment the iat check stops accepting the proof.
    (jkt, _, expires_at, now), = store.asked
    assert jkt == KEY.thumbprint() and expires_at == iat + 300 and iat - 30 <= now <= time.time()


@pytest.mark.parametrize(
    "value",
    ["", "a.b", "a.b.c.d", "!!!.!!!.!!!", f"{b64url(b'[1]')}.{b64url(b'{}')}.AAAA", "x" * 9000],
)
def test_malformed_proofs_are_refused(value: str) -> None:
    assert reason_of(value) == "dpop_malformed"


def test_critical_header_extensions_are_refused() -> None:
    assert reason_of(proof(header={"crit": ["exp"], "exp": 1})) == "dpop_header"


def test_a_missing_nonce_asks_for_the_current_one() -> None:
    nonces = NonceIssuer(b"k" * 32, 60)
    v = verifier(nonces=nonces)
    with pytest.raises(UseDPoPNonceError) as caught:
        check(proof(), v=v)
    assert caught.value.nonce == nonces.current()
    assert check(proof(nonce=nonces.current()), v=v) is None


def test_a_stale_nonce_is_refused_and_the_previous_step_renewed() -> None:
    nonces = NonceIssuer(b"k" * 32, 60)
    v = verifier(nonces=nonces)
    now = time.time()
    previous = nonces.current(now - 60)
    assert check(proof(nonce=previous), v=v) == nonces.current()
    with pytest.raises(UseDPoPNonceError):
        check(proof(nonce=nonces.current(now - 120)), v=v)
    with pytest.raises(UseDPoPNonceError):
        check(proof(nonce="made-up"), v=v)


def test_a_proof_failing_a_check_is_not_recorded_as_used() -> None:
    v = verifier()
    token = proof()
    assert reason_of(token, v=v, jkt=ECKey.generate_key("P-256").thumbprint()) == "dpop_jkt"
    assert check(token, v=v) is None


def test_oversized_rsa_keys_are_refused_before_any_import() -> None:
    v = verifier(("RS256",))
    key = RSAKey.generate_key(2048, private=True)
    huge = {"kty": "RSA", "n": "A" * 1400, "e": "AQAB"}  # 8400 bits
    token = make_proof(key, "GET", URL, access_token=TOKEN, alg="RS256", header={"jwk": huge})
    with pytest.raises(InvalidDPoPProofError) as caught:
        v.verify(token, method="GET", url=URL, access_token=TOKEN, jkt=key.thumbprint())
    assert caught.value.reason == "dpop_jwk"
