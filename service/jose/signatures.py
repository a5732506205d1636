"""JWS signature schemes (RFC 7518 §3): one verify function per allowed algorithm, resolved once."""

from __future__ import annotations

from collections.abc import Callable
from typing import Final

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding
from joserfc.jws import JWSRegistry

from .jwks_parse import VerificationKey

#: Checks (signing input, signature, key): True when the signature verifies.
SignatureCheck = Callable[[bytes, bytes, VerificationKey], bool]


def _pss(digest: hashes.HashAlgorithm) -> padding.PSS:
    """RSASSA-PSS padding as RFC 7518 §3.5 fixes it: MGF1 with the same hash, salt of hash size."""
    return padding.PSS(mgf=padding.MGF1(digest), salt_length=digest.digest_size)


#: (padding, hash) per RSA JWS algorithm: RFC 7518 §3.3 (RSnnn, RSASSA-PKCS1-v1_5) and §3.5
#: (PSnnn, RSASSA-PSS), on cryptography's public API.
_RSA_SCHEMES: Final[dict[str, tuple[padding.AsymmetricPadding, hashes.HashAlgorithm]]] = {
    "RS256": (padding.PKCS1v15(), hashes.SHA256()),
    "RS384": (padding.PKCS1v15(), hashes.SHA384()),
    "RS512": (padding.PKCS1v15(), hashes.SHA512()),
    "PS256": (_pss(hashes.SHA256()), hashes.SHA256()),
    "PS384": (_pss(hashes.SHA384()), hashes.SHA384()),
    "PS512": (_pss(hashes.SHA512()), hashes.SHA512()),
}


def signature_check(alg: str) -> SignatureCheck:
    """The verify function for ``alg`` (RFC 7518 §3).

    RSA signatures are checked on the pre-resolved public key with our own (padding, hash)
    table: no key re-resolution per call (this is the hot path of every uncached token). Other
    families go through joserfc's public JWS algorithm registry.
    """
    if alg in _RSA_SCHEMES:
        pad, digest = _RSA_SCHEMES[alg]

        def rsa_check(message: bytes, signature: bytes, key: VerificationKey) -> bool:
            try:
                key.native.verify(signature, message, pad, digest)
            except InvalidSignature:
                return False
            return True

        return rsa_check

    model = JWSRegistry.algorithms[alg]

    def generic_check(message: bytes, signature: bytes, key: VerificationKey) -> bool:
        return bool(model.verify(message, signature, key.key))

    return generic_check
