"""A real local OIDC issuer for tests: serves discovery and a JWKS over HTTP and mints tokens."""

from __future__ import annotations

import base64
import json
import secrets
import threading
import time
from dataclasses import dataclass
from dataclasses import field
from http.server import BaseHTTPRequestHandler
from http.server import ThreadingHTTPServer
from typing import Any

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives import hmac
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import padding
from cryptography.hazmat.primitives.asymmetric import rsa

JWKS_PATH = ".well-known/jwks.json"
DISCOVERY_PATH = ".well-known/openid-configuration"

_HASHES = {"256": hashes.SHA256, "384": hashes.SHA384, "512": hashes.SHA512}


def b64url(data: bytes) -> str:
    """Base64url without padding, as JOSE wants it."""
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _int_b64(value: int) -> str:
    """Big-endian unsigned integer as base64url (JWK n/e encoding)."""
    return b64url(value.to_bytes((value.bit_length() + 7) // 8, "big"))


def json_segment(obj: Any) -> str:
    """Compact JSON then base64url, the way a JWS header or payload is encoded."""
    return b64url(json.dumps(obj, separators=(",", ":")).encode())


@dataclass(frozen=True)
class Key:
    """An RSA signing key with its kid; `public_jwk` is what a JWKS publishes."""

    kid: str
    private: rsa.RSAPrivateKey = field(repr=False)

    @classmethod
    def generate(cls, kid: str | None = None) -> Key:
        """A fresh RSA-2048 key with a random (or given) kid."""
        private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        return cls(kid=kid or secrets.token_hex(8), private=private)

    @property
    def public_jwk(self) -> dict[str, str]:
        """The public half as a JWK, shaped like Auth0's published keys."""
        numbers = self.private.public_key().public_numbers()
        return {
            "kty": "RSA",
            "use": "sig",
            "alg": "RS256",
            "kid": self.kid,
            "n": _int_b64(numbers.n),
            "e": _int_b64(numbers.e),
        }

    @property
    def public_pem(self) -> bytes:
        """SubjectPublicKeyInfo PEM (what an HS256-confusion attacker would use as the secret)."""
        return self.private.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )

    def sign(self, signing_input: bytes, alg: str = "RS256") -> bytes:
        """Sign with RSnnn or PSnnn using this key."""
        family, bits = alg[:2], alg[2:]
        digest = _HASHES[bits]()
        if family == "RS":
            return self.private.sign(signing_input, padding.PKCS1v15(), digest)
        if family == "PS":
            pss = padding.PSS(mgf=padding.MGF1(digest), salt_length=digest.digest_size)
            return self.private.sign(signing_input, pss, digest)
        raise ValueError(f"Key.sign does not do {alg}")


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


class LocalIssuer:
    """An OIDC issuer on 127.0.0.1 with hooks to rotate keys, misbehave, slow down and go down."""

    def __init__(self, audience: str = "https://api.test", *, port: int = 0) -> None:
        """Generate the first signing key; call start() (or use as a context manager) to serve."""
        self.audience = audience
        self._port = port
        self._lock = threading.Lock()
        self._keys: list[Key] = [Key.generate()]
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self._raw: tuple[bytes, int, dict[str, str]] | None = None
        self._raw_discovery: tuple[bytes, int, dict[str, str]] | None = None
        self.cache_control: str | None = None
        self.delay: float = 0.0
        self.jwks_fetches = 0
        self.discovery_fetches = 0
        self.requests: list[tuple[str, dict[str, str]]] = []

    # -- lifecycle -------------------------------------------------------------------------

    @property
    def port(self) -> int:
        """The TCP port (fixed after the first start, kept across go_down/come_up)."""
        if not self._port:
            raise RuntimeError("issuer not started")
        return self._port

    @property
    def url(self) -> str:
        """The issuer identifier, with the trailing slash Auth0 uses."""
        return f"http://127.0.0.1:{self.port}/"

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
        return self._server is not None

    def start(self) -> LocalIssuer:
        """Listen (on an ephemeral port the first time) and serve in a daemon thread."""
        if self._server is not None:
            return self
        server = ThreadingHTTPServer(("127.0.0.1", self._port), _handler_for(self))
        server.daemon_threads = True
        self._port = server.server_address[1]
        self._server = server
        self._thread = threading.Thread(
            target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving and close the listening socket."""
        server, self._server = self._server, None
        if server is not None:
            server.shutdown()
            server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

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
        with self._lock:
            return self._keys[-1]

    @property
    def keys(self) -> list[Key]:
        """The published keys, oldest first."""
        with self._lock:
            return list(self._keys)

    def new_key(self) -> Key:
        """A fresh key that is NOT published (for unknown-kid and wrong-signature cases)."""
        return Key.generate()

    def rotate(self, *, keep_old: bool = True) -> Key:
        """Publish a new current signing key; keep_old=False unpublishes the previous ones."""
        key = Key.generate()
        with self._lock:
            self._keys = [*self._keys, key] if keep_old else [key]
        return key

    def publish(self, key: Key) -> None:
        """Publish an existing key (e.g. one made with new_key())."""
        with self._lock:
            self._keys = [k for k in self._keys if k.kid != key.kid] + [key]

    def unpublish(self, kid: str) -> None:
        """Remove a key from the JWKS."""
        with self._lock:
            self._keys = [k for k in self._keys if k.kid != kid]

    def jwks(self) -> dict[str, Any]:
        """The JWKS document as served (unless serve_raw overrides it)."""
        with self._lock:
            return {"keys": [k.public_jwk for k in self._keys]}

    def discovery(self) -> dict[str, Any]:
        """The OIDC discovery document as served."""
        return {
            "issuer": self.url,
            "jwks_uri": self.jwks_uri,
            "token_endpoint": self.url + "oauth/token",
            "id_token_signing_alg_values_supported": ["RS256"],
            "response_types_supported": ["token"],
            "subject_types_supported": ["public"],
        }

    # -- misbehaviour hooks ----------------------------------------------------------------

    def serve_raw(self, body: bytes | None, status: int = 200, headers: dict[str, str] | None = None) -> None:
        """Override the JWKS response (bad JSON, huge, 500...); None restores the real JWKS."""
        with self._lock:
            self._raw = None if body is None else (body, status, dict(headers or {}))

    def serve_raw_discovery(
        self, body: bytes | None, status: int = 200, headers: dict[str, str] | None = None
    ) -> None:
        """Override the discovery response; None restores the real document."""
        with self._lock:
            self._raw_discovery = None if body is None else (body, status, dict(headers or {}))

    def reset_counts(self) -> None:
        """Zero the fetch counters and the request log."""
        with self._lock:
            self.jwks_fetches = 0
            self.discovery_fetches = 0
            self.requests = []

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


def _handler_for(issuer: LocalIssuer) -> type[BaseHTTPRequestHandler]:
    """A request handler class bound to one issuer."""

    class Handler(BaseHTTPRequestHandler):
        """Serves discovery and JWKS; everything else is 404."""

        # One request per connection so go_down() really refuses the next fetch.
        protocol_version = "HTTP/1.0"

        def do_GET(self) -> None:  # http.server dispatches on this name
            """Route GETs."""
            path = self.path.split("?", 1)[0]
            with issuer._lock:
                issuer.requests.append((path, dict(self.headers.items())))
            if path == "/" + JWKS_PATH:
                with issuer._lock:
                    issuer.jwks_fetches += 1
                    raw = issuer._raw
                if issuer.delay:
                    time.sleep(issuer.delay)
                if raw is not None:
                    self._send(*raw)
                    return
                headers = {"Content-Type": "application/json"}
                if issuer.cache_control:
                    headers["Cache-Control"] = issuer.cache_control
                self._send(json.dumps(issuer.jwks()).encode(), 200, headers)
            elif path == "/" + DISCOVERY_PATH:
                with issuer._lock:
                    issuer.discovery_fetches += 1
                    raw = issuer._raw_discovery
                if raw is not None:
                    self._send(*raw)
                    return
                body = json.dumps(issuer.discovery()).encode()
                self._send(body, 200, {"Content-Type": "application/json"})
            else:
                self._send(b'{"error":"not_found"}', 404, {"Content-Type": "application/json"})

        def _send(self, body: bytes, status: int, headers: dict[str, str]) -> None:
            """Write one response, tolerating a client that already gave up (timeout tests)."""
            try:
                self.send_response(status)
                for name, value in headers.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)
            except (BrokenPipeError, ConnectionResetError):
                pass

        def log_message(self, format: str, *args: Any) -> None:
            """Stay quiet: pytest output is for failures."""

    return Handler
