"""Stateless DPoP server nonces (RFC 9449 §9): a keyed MAC over the current time step.

Every process holding the same secret derives the same nonce for a step, so gunicorn workers
(and pods sharing ``AUTH0_DPOP_NONCE_SECRET``) agree without talking to each other. A nonce is
accepted during its own step and the next one, so a client is never refused for a nonce it was
handed a moment before the step turned.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import secrets
import time
from collections.abc import MutableMapping

#: The variable holding the secret; the gunicorn master sets it before forking when unset.
SECRET_VARIABLE = "AUTH0_DPOP_NONCE_SECRET"
_CONTEXT = b"dpop-nonce/v1:"


class NonceIssuer:
    """Derives and checks the nonces of a secret."""

    def __init__(self, secret: bytes, step: int) -> None:
        self._secret = secret
        self._step = step
        self._memo: tuple[int, str, str] | None = None

    def _pair(self, now: float | None = None) -> tuple[str, str]:
        """The current step's nonce and the previous one (memoised per step)."""
        counter = int((time.time() if now is None else now) // self._step)
        memo = self._memo
        if memo is None or memo[0] != counter:
            memo = self._memo = (counter, self._derive(counter), self._derive(counter - 1))
        return memo[1], memo[2]

    def _derive(self, counter: int) -> str:
        """The nonce of one time step: 18 MAC bytes, base64url (RFC 9449 §8.1 NQCHAR-safe)."""
        mac = hmac.new(self._secret, _CONTEXT + counter.to_bytes(8, "big", signed=True), hashlib.sha256)
        return base64.urlsafe_b64encode(mac.digest()[:18]).decode("ascii")

    def current(self, now: float | None = None) -> str:
        """The nonce to hand out now."""
        return self._pair(now)[0]

    def check(self, nonce: object, now: float | None = None) -> tuple[bool, bool]:
        """Whether ``nonce`` is acceptable, and whether the client should get a newer one."""
        current, previous = self._pair(now)
        if not isinstance(nonce, str):
            return False, True
        if hmac.compare_digest(nonce.encode("utf-8", "replace"), current.encode()):
            return True, False
        if hmac.compare_digest(nonce.encode("utf-8", "replace"), previous.encode()):
            return True, True
        return False, True


def ensure_secret(environ: MutableMapping[str, str] | None = None) -> None:
    """Put a random secret into the environment when none is set (call before forking)."""
    env = os.environ if environ is None else environ
    if not env.get(SECRET_VARIABLE, "").strip():
        env[SECRET_VARIABLE] = secrets.token_urlsafe(32)


def secret_bytes(value: str) -> bytes:
    """The MAC key for a configured secret string."""
    return hashlib.sha256(_CONTEXT + value.encode("utf-8")).digest()
