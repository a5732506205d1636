"""The dev issuer (dev_issuer/) on 127.0.0.1 for tests, plus forging helpers for hostile tokens."""

from __future__ import annotations

import base64
import json
import threading
import time
from typing import Any

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives import hmac

from dev_issuer.app import create_app
from dev_issuer.app import discovery_document
from dev_issuer.config import IssuerSettings
from dev_issuer.control import CannedResponse
from dev_issuer.control import IssuerControl
from dev_issuer.keys import SigningKey
from dev_issuer.server import LOOPBACK
from dev_issuer.server import BackgroundServer

JWKS_PATH = ".well-known/jwks.json"
DISCOVERY_PATH = ".well-known/openid-configuration"

Key = SigningKey

_HASHES = {"256": hashes.SHA256, "384": hashes.SHA384, "512": hashes.SHA512}


def b64url(data: bytes) -> str:
    """Base64url without padding, as JOSE wants it."""
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def json_segment(obj: Any) -> str:
    """Compact JSON then base64url, the way a JWS header or payload is encoded."""
    return b64url(json.dumps(obj, separators=(",", ":")).encode())


def hmac_sign(secret: bytes, signing_input: bytes, alg: str = "HS256") -> bytes:
    """HMAC signature for HSnnn tokens."""
    mac = hmac.HMAC(secret, _HASHES[alg[2:]]())
    mac.update(signing_input)
    return mac.finalize()


def compact(header: dict[str, Any], payload: Any, signer: Key | bytes | None, alg: str) -> str:
    """Build a compact JWS; `payload` may be a dict (JSON-encoded) or raw bytes."""
    raw = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
    signing_input = f"{json_segment(header)}.{b64url(raw)}".encode()
    if alg == "none" or signer is None:
        signature = b""
    elif isinstance(signer, bytes):
        signature = hmac_sign(signer, signing_input, alg)
    else:
        signature = signer.sign(signing_input, alg)
    return f"{signing_input.decode()}.{b64url(signature)}"


def _canned(body: bytes | None, status: int, headers: dict[str, str] | None) -> CannedResponse | None:
    """A canned answer, or None to restore the real document."""
    return None if body is None else CannedResponse(body, status, dict(headers or {}))


class LocalIssuer:
    """The dev issuer on 127.0.0.1 with hooks to rotate keys, misbehave, slow down and go down."""

    def __init__(self, audience: str = "https://api.test", *, port: int = 0) -> None:
        """Generate the first signing key; call start() (or use as a context manager) to serve."""
        self.audience = audience
        self._control = IssuerControl(SigningKey.generate(), log_requests=True)
        self._server = BackgroundServer(self._wsgi, host=LOOPBACK, port=port)
        self._app: Any = None
        self._settings: IssuerSettings | None = None

    def _wsgi(self, environ: dict[str, Any], start_response: Any) -> Any:
        """Forward to the dev issuer app, built once the port (hence the issuer URL) is known."""
        return self._app(environ, start_response)

    # -- lifecycle -------------------------------------------------------------------------

    @property
    def port(self) -> int:
        """The TCP port (fixed after the first start, kept across go_down/come_up)."""
        if not self._server.port:
            raise RuntimeError("issuer not started")
        return self._server.port

    @property
    def url(self) -> str:
        """The issuer identifier, with the trailing slash Auth0 uses."""
        return f"http://{LOOPBACK}:{self.port}/"

    @property
    def jwks_uri(self) -> str:
        """Where the JWKS is served."""
        return self.url + JWKS_PATH

    @property
    def discovery_uri(self) -> str:
        """Where the OIDC discovery document is served."""
        return self.url + DISCOVERY_PATH

    @property
    def is_up(self) -> bool:
        """True while the listening socket is open."""
        return self._server.is_up

    def start(self) -> LocalIssuer:
        """Listen (on an ephemeral port the first time) and serve in a daemon thread."""
        self._server.start()
        if self._app is None:
            self._settings = IssuerSettings(
                host=LOOPBACK, port=self.port, issuer=self.url, audiences=(self.audience,)
            )
            self._app = create_app(self._settings, control=self._control)
        return self

    def stop(self) -> None:
        """Stop serving and close the listening socket (held JWKS answers are let go first)."""
        self._control.release()
        self._server.stop()

    def go_down(self) -> None:
        """Refuse connections (socket closed) while keeping the port for come_up()."""
        self.stop()

    def come_up(self) -> None:
        """Listen again on the same port."""
        self.start()

    def __enter__(self) -> LocalIssuer:
        """Start on entry."""
        return self.start()

    def __exit__(self, *exc: object) -> None:
        """Stop on exit."""
        self.stop()

    # -- keys ------------------------------------------------------------------------------

    @property
    def current_key(self) -> Key:
        """The key mint() signs with by default (the newest published one)."""
        return self._control.current_key

    @property
    def keys(self) -> list[Key]:
        """The published keys, oldest first."""
        return self._control.keys

    def new_key(self) -> Key:
        """A fresh key that is NOT published (for unknown-kid and wrong-signature cases)."""
        return Key.generate()

    def rotate(self, *, keep_old: bool = True) -> Key:
        """Publish a new current signing key; keep_old=False unpublishes the previous ones."""
        return self._control.rotate(keep_old=keep_old)

    def publish(self, key: Key) -> None:
        """Publish an existing key (e.g. one made with new_key())."""
        self._control.publish(key)

    def unpublish(self, kid: str) -> None:
        """Remove a key from the JWKS."""
        self._control.unpublish(kid)

    def jwks(self) -> dict[str, Any]:
        """The JWKS document as served (unless serve_raw overrides it)."""
        return self._control.jwks()

    def discovery(self) -> dict[str, Any]:
        """The OIDC discovery document as served."""
        if self._settings is None:
            raise RuntimeError("issuer not started")
        return discovery_document(self._settings)

    # -- misbehaviour hooks ----------------------------------------------------------------

    @property
    def cache_control(self) -> str | None:
        """The JWKS response's Cache-Control header (None: no header)."""
        return self._control.cache_control

    @cache_control.setter
    def cache_control(self, value: str | None) -> None:
        self._control.cache_control = value

    @property
    def delay(self) -> float:
        """Seconds each JWKS answer waits before it is sent (a slow or hanging issuer)."""
        return self._control.delay

    @delay.setter
    def delay(self, value: float) -> None:
        self._control.delay = value

    def hold_jwks(self, from_fetch: int = 0) -> threading.Event:
        """Hold JWKS answers (counted on arrival) until the returned event is set.

        A fetch then stays in flight exactly as long as a test needs, instead of for a delay
        that a loaded machine may outlast. ``from_fetch``: hold only the fetch with that number
        (``jwks_fetches`` once it is counted) and later ones.
        """
        return self._control.hold(from_fetch)

    @property
    def jwks_fetches(self) -> int:
        """JWKS requests served since the start (or the last reset_counts)."""
        return self._control.jwks_fetches

    @property
    def discovery_fetches(self) -> int:
        """Discovery requests served since the start (or the last reset_counts)."""
        return self._control.discovery_fetches

    @property
    def requests(self) -> list[tuple[str, dict[str, str]]]:
        """Every request as (path without query, headers), oldest first."""
        return self._control.requests

    def serve_raw(self, body: bytes | None, status: int = 200, headers: dict[str, str] | None = None) -> None:
        """Override the JWKS response (bad JSON, huge, 500...); None restores the real JWKS."""
        self._control.jwks_override = _canned(body, status, headers)

    def serve_raw_discovery(
        self, body: bytes | None, status: int = 200, headers: dict[str, str] | None = None
    ) -> None:
        """Override the discovery response; None restores the real document."""
        self._control.discovery_override = _canned(body, status, headers)

    def reset_counts(self) -> None:
        """Zero the fetch counters and the request log."""
        self._control.reset_counts()

    def wait_for_fetches(self, n: int, timeout: float = 5.0) -> bool:
        """Poll until jwks_fetches >= n; True if it got there in time."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.jwks_fetches >= n:
                return True
            time.sleep(0.02)
        return self.jwks_fetches >= n

    # -- tokens ----------------------------------------------------------------------------

    def claims(
        self,
        claims: dict[str, Any] | None = None,
        *,
        scope: str | None = "read:messages",
        permissions: list[str] | None = None,
        drop: tuple[str, ...] = (),
        ttl: int = 300,
    ) -> dict[str, Any]:
        """Default Auth0-shaped access-token claims, overridden by `claims`, minus `drop`."""
        now = int(time.time())
        body: dict[str, Any] = {
            "iss": self.url,
            "sub": "auth0|test-user",
            "aud": self.audience,
            "iat": now,
            "exp": now + ttl,
            "azp": "test-client",
        }
        if scope is not None:
            body["scope"] = scope
        if permissions is not None:
            body["permissions"] = list(permissions)
        body.update(claims or {})
        for name in drop:
            body.pop(name, None)
        return body

    def mint(
        self,
        claims: dict[str, Any] | None = None,
        *,
        scope: str | None = "read:messages",
        permissions: list[str] | None = None,
        key: Key | None = None,
        kid: str | None = None,
        alg: str = "RS256",
        header: dict[str, Any] | None = None,
        drop: tuple[str, ...] = (),
        ttl: int = 300,
    ) -> str:
        """A signed access token; header entries set to None are removed from the header."""
        signer = key or self.current_key
        hdr: dict[str, Any] = {"alg": alg, "typ": "JWT", "kid": kid or signer.kid}
        for name, value in (header or {}).items():
            if value is None:
                hdr.pop(name, None)
            else:
                hdr[name] = value
        body = self.claims(claims, scope=scope, permissions=permissions, drop=drop, ttl=ttl)
        if alg.startswith("HS"):
            return compact(hdr, body, signer.public_pem, alg)
        return compact(hdr, body, None if alg == "none" else signer, alg)
