"""DPoP proof verification at a resource server: the checks of RFC 9449 §4.3 and §7.1.

A proof is a JWS the client signs per request with the private key its access token is bound
to. Cheap checks come first (shape, header, claims, binding), the signature next, and only a
fully verified proof is recorded against replay, so junk never fills the replay store.
"""

from __future__ import annotations

import base64
import hashlib
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from joserfc.jwk import JWKRegistry
from joserfc.jws import JWSRegistry

from ..config import Settings
from .errors import AuthError
from .errors import DPoPFloodError
from .errors import InvalidDPoPProofError
from .errors import ReplayFullError
from .errors import ReplayStoreUnavailableError
from .errors import UseDPoPNonceError
from .nonce import NonceIssuer
from .nonce import secret_bytes
from .primitives import HeaderCache
from .primitives import b64decode
from .primitives import decode_json
from .primitives import has_private_members
from .primitives import is_numeric_date
from .replay import ReplayStore
from .replay import Verdict
from .urls import normalize

#: A proof is a few hundred bytes (ES256) to ~1.5 KiB (RSA-4096 jwk); more is not a proof.
MAX_PROOF_BYTES = 8192
#: jti values are random identifiers (RFC 9449 §4.2: 96 bits suffice); bound what is hashed.
MAX_JTI_CHARS = 256
#: RFC 9449 §4.2 / RFC 7515 §4.1.9: the proof's media type, compared case-insensitively.
_TYP = "dpop+jwt"
#: Which JWK key type and curves serve each allowed proof algorithm (RFC 7518 §3, RFC 8037 §3.1).
_KEYS = {
    "ES256": ("EC", frozenset({"P-256"})),
    "RS256": ("RSA", None),
    "PS256": ("RSA", None),
    "EdDSA": ("OKP", frozenset({"Ed25519", "Ed448"})),
}
_MIN_RSA_BITS = 2048
#: Larger RSA keys only make each verify slower (cost grows with the square of the size).
_MAX_RSA_BITS = 8192
#: Distinct proof headers remembered checked: one per client key (bounded).
_HEADER_CACHE_SIZE = 1024
#: What each replay-store verdict other than a first use answers.
_NOT_FIRST_USE: dict[Verdict, type[AuthError]] = {
    Verdict.FLOOD: DPoPFloodError,
    Verdict.FULL: ReplayFullError,
    Verdict.UNAVAILABLE: ReplayStoreUnavailableError,
}


@dataclass(frozen=True, slots=True)
class ProofKey:
    """A checked proof header: its algorithm, public key and RFC 7638 thumbprint."""

    alg: str
    key: Any
    thumbprint: str


def refuse(reason: str) -> InvalidDPoPProofError:
    """An invalid_dpop_proof error with its metric reason (the description is fixed)."""
    return InvalidDPoPProofError(reason=reason)


def access_token_hash(access_token: str) -> str:
    """RFC 9449 §4.2 ``ath``: base64url of the SHA-256 of the access token's ASCII octets."""
    digest = hashlib.sha256(access_token.encode("ascii", "replace")).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")


class ProofVerifier:
    """Checks DPoP proofs for one app's settings, replay store and (optional) nonces."""

    def __init__(
        self,
        algorithms: tuple[str, ...],
        *,
        iat_offset: int,
        iat_leeway: int,
        replay: ReplayStore,
        nonces: NonceIssuer | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._algorithms = frozenset(algorithms)
        #: Wall-clock seconds: iat is a NumericDate (RFC 7519 §2).
        self._clock = clock
        self._offset = iat_offset
        self._leeway = iat_leeway
        self._replay = replay
        self._nonces = nonces
        self._headers: HeaderCache[ProofKey] = HeaderCache(_HEADER_CACHE_SIZE)

    def verify(
        self,
        proof: str,
        *,
        method: str,
        url: str | tuple[str, ...],
        access_token: str | None,
        jkt: str | None,
    ) -> str | None:
        """Check ``proof`` for this request; return a fresh nonce to send, if one is due.

        ``url`` is the request URI as the client addressed it (or every URI it may have used,
        one per name the service is reached under); ``access_token`` and ``jkt``
        (the token's ``cnf.jkt``) are None at a token endpoint, where no token exists yet.
        """
        key, claims = self.parse(proof)
        self.check_claims(claims, method=method, url=url, access_token=access_token)
        if jkt is not None and key.thumbprint != jkt:
            raise refuse("dpop_jkt")
        self.check_signature(proof, key)
        fresh_nonce = self._check_nonce(claims)
        # RFC 9449 §11.1: a jti is single-use for as long as its iat would be accepted.
        verdict = self._replay.first_use(
            key.thumbprint, claims["jti"], claims["iat"] + self._offset, self._clock()
        )
        if verdict is Verdict.REPLAY:
            raise refuse("dpop_replay")
        if verdict is not Verdict.FIRST_USE:
            raise _NOT_FIRST_USE[verdict]()
        return fresh_nonce

    def parse(self, proof: str) -> tuple[ProofKey, dict[str, Any]]:
        """Split the compact JWS and check its header; return the key and the claims."""
        if len(proof) > MAX_PROOF_BYTES:
            raise refuse("dpop_malformed")
        parts = proof.split(".")
        if len(parts) != 3 or not parts[2]:
            raise refuse("dpop_malformed")
        key = self._headers.get(parts[0])
        if key is None:
            key = self.check_header(_decode_object(parts[0]))
            self._headers.put(parts[0], key)
        return key, _decode_object(parts[1])

    def check_header(self, header: dict[str, Any]) -> ProofKey:
        """RFC 9449 §4.3 steps 4-7: typ, an allowed asymmetric alg, and a public ``jwk``."""
        typ = header.get("typ")
        if not isinstance(typ, str) or typ.lower() != _TYP:
            raise refuse("dpop_typ")
        alg = header.get("alg")
        if not isinstance(alg, str) or alg not in self._algorithms:
            raise refuse("dpop_alg")
        # RFC 7515 §4.1.11: no extension is understood here, so any 'crit' is refused.
        if "crit" in header:
            raise refuse("dpop_header")
        return ProofKey(alg, *_public_key(header.get("jwk"), alg))

    def check_claims(
        self,
        claims: dict[str, Any],
        *,
        method: str,
        url: str | tuple[str, ...],
        access_token: str | None,
    ) -> None:
        """RFC 9449 §4.3 steps 8-12: jti, htm, htu, iat and (with a token) ath."""
        jti = claims.get("jti")
        if not isinstance(jti, str) or not jti or len(jti) > MAX_JTI_CHARS:
            raise refuse("dpop_jti")
        if claims.get("htm") != method:
            raise refuse("dpop_htm")
        htu = claims.get("htu")
        # normalize() drops query and fragment, which RFC 9449 §4.3 step 9 says to ignore.
        target = normalize(htu) if isinstance(htu, str) else None
        urls = (url,) if isinstance(url, str) else url
        if target is None or all(normalize(expected) != target for expected in urls):
            raise refuse("dpop_htu")
        iat = claims.get("iat")
        if not is_numeric_date(iat):
            raise refuse("dpop_iat")
        now = self._clock()
        if not now - self._offset <= iat <= now + self._leeway:
            raise refuse("dpop_iat")
        if access_token is not None and claims.get("ath") != access_token_hash(access_token):
            raise refuse("dpop_ath")

    def check_signature(self, proof: str, key: ProofKey) -> None:
        """RFC 9449 §4.3 step 6: the signature verifies with the ``jwk`` of the header."""
        signing_input, _, signature_b64 = proof.rpartition(".")
        try:
            signature = b64decode(signature_b64)
            model = JWSRegistry.algorithms[key.alg]
            valid = model.verify(signing_input.encode("ascii"), signature, key.key)
        except (AuthError, ValueError, TypeError):
            valid = False
        if not valid:
            raise refuse("dpop_signature")

    def _check_nonce(self, claims: dict[str, Any]) -> str | None:
        """RFC 9449 §9: with nonces on, the proof must carry a current one."""
        if self._nonces is None:
            return None
        accepted, renew = self._nonces.check(claims.get("nonce"))
        if not accepted:
            raise UseDPoPNonceError(self._nonces.current())
        return self._nonces.current() if renew else None


def verifier_for(settings: Settings, replay: ReplayStore) -> ProofVerifier:
    """The proof verifier of an app's settings (nonces only when AUTH0_DPOP_NONCE is on)."""
    dpop = settings.dpop
    nonces = None
    if dpop.nonce:
        # Without a configured secret (outside gunicorn) the nonces are this process's own.
        secret = dpop.nonce_secret or secrets.token_urlsafe(32)
        nonces = NonceIssuer(secret_bytes(secret), dpop.nonce_step)
    return ProofVerifier(
        dpop.algorithms,
        iat_offset=dpop.iat_offset,
        iat_leeway=dpop.iat_leeway,
        replay=replay,
        nonces=nonces,
    )


def _public_key(jwk: Any, alg: str) -> tuple[Any, str]:
    """Import the header's JWK as a public key fit for ``alg``; return it with its thumbprint."""
    if not isinstance(jwk, dict):
        raise refuse("dpop_jwk")
    kty, curves = _KEYS[alg]
    # RFC 9449 §4.3 step 7: the jwk must not contain a private key.
    if jwk.get("kty") != kty or has_private_members(jwk):
        raise refuse("dpop_jwk")
    if curves is not None and jwk.get("crv") not in curves:
        raise refuse("dpop_jwk")
    # RFC 7517 §4.2-4.3: a key meant for encryption, or whose key_ops leave out "verify", is not
    # one to verify the proof with (joserfc would raise on it in the middle of verifying).
    key_ops = jwk.get("key_ops", ["verify"])
    if jwk.get("use", "sig") != "sig" or not isinstance(key_ops, list) or "verify" not in key_ops:
        raise refuse("dpop_jwk")
    if kty == "RSA":
        modulus = jwk.get("n")
        # Checked before import: short keys only warn inside the library.
        if not isinstance(modulus, str) or not _MIN_RSA_BITS - 6 <= len(modulus) * 6 <= _MAX_RSA_BITS + 6:
            raise refuse("dpop_jwk")
    try:
        key = JWKRegistry.import_key({k: v for k, v in jwk.items() if isinstance(k, str)})
        size = getattr(key.public_key, "key_size", _MIN_RSA_BITS) if kty == "RSA" else _MIN_RSA_BITS
        if key.is_private or size < _MIN_RSA_BITS:
            raise refuse("dpop_jwk")
        return key, key.thumbprint()
    except AuthError:
        raise
    except Exception:  # joserfc and cryptography raise many types for a bad point or member
        raise refuse("dpop_jwk") from None


def _decode_object(segment: str) -> dict[str, Any]:
    """A base64url JSON object segment of the proof."""
    try:
        return decode_json(segment, "proof")
    except AuthError:
        raise refuse("dpop_malformed") from None
