"""DPoP at the development issuer's token endpoint (RFC 9449 §5): tokens bound to the proof key."""

from __future__ import annotations

from flask import Request

from service.jose.dpop import ProofVerifier
from service.jose.errors import InvalidDPoPProofError
from service.jose.replay_table import ReplayTable

#: Every proof algorithm the API can be configured to accept.
ALGORITHMS = ("ES256", "RS256", "PS256", "EdDSA")


class TokenEndpointProofs:
    """Checks the DPoP header of token requests with the API's own proof checks."""

    def __init__(self) -> None:
        self._verifier: ProofVerifier | None = None

    def thumbprint(self, request: Request) -> str | None:
        """The RFC 7638 thumbprint to bind the token to, or None for a Bearer request.

        Raises ``InvalidDPoPProofError`` for several proofs or a proof that fails a check.
        """
        proofs = request.headers.getlist("DPoP")
        if not proofs:
            return None
        if len(proofs) != 1:
            raise InvalidDPoPProofError(reason="dpop_multiple")
        if self._verifier is None:
            self._verifier = ProofVerifier(
                ALGORITHMS, iat_offset=300, iat_leeway=30, replay=ReplayTable(65536, 330)
            )
        key, _ = self._verifier.parse(proofs[0])
        self._verifier.verify(
            proofs[0], method=request.method, url=request.base_url, access_token=None, jkt=None
        )
        return key.thumbprint
