"""Settings of the DEVELOPMENT issuer, read once from the environment (development tooling only)."""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from dataclasses import field

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 3011
DEFAULT_AUDIENCE = "https://api.dev.local"
DEFAULT_TOKEN_TTL = 86400
MAX_TTL = 30 * 86400

# Scope tokens per RFC 6749 section 3.3 (NQCHAR without space).
SCOPE_TOKEN = re.compile(r"^[\x21\x23-\x5b\x5d-\x7e]+$")


#: An extra issuer's path segment, e.g. "eu" for http://127.0.0.1:3011/eu/.
_PATH_SEGMENT = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
#: Segments the primary issuer already serves.
_RESERVED_PATHS = frozenset({"oauth", "healthz", "stats", "dev"})


class IssuerConfigError(ValueError):
    """A DEV_ISSUER_* variable is missing or malformed; the message names it."""


@dataclass(frozen=True)
class ClientConfig:
    """One registered machine-to-machine client (an Auth0 application with a client grant)."""

    client_id: str
    client_secret: str
    scopes: tuple[str, ...] = ()
    # None means the client is granted every configured audience.
    audiences: tuple[str, ...] | None = None


def default_clients() -> tuple[ClientConfig, ...]:
    """Return the built-in development clients."""
    return (
        ClientConfig("dev-client", "dev-secret", ("read:messages",)),
        ClientConfig("dev-client-noperm", "dev-secret", ()),
    )


@dataclass(frozen=True)
class IssuerSettings:
    """Immutable configuration of one issuer process."""

    host: str = DEFAULT_HOST
    port: int = DEFAULT_PORT
    issuer: str = f"http://{DEFAULT_HOST}:{DEFAULT_PORT}/"
    audiences: tuple[str, ...] = (DEFAULT_AUDIENCE,)
    token_ttl: int = DEFAULT_TOKEN_TTL
    clients: tuple[ClientConfig, ...] = field(default_factory=default_clients)
    key_file: str | None = None
    jwks_max_age: int | None = None
    #: More issuers served by this process, each at ``{issuer}{path}/`` with its own key.
    extra_paths: tuple[str, ...] = ()

    @property
    def jwks_cache_control(self) -> str | None:
        """Return the JWKS response's Cache-Control (RFC 9111 section 5.2.2.1), if any."""
        return None if self.jwks_max_age is None else f"public, max-age={self.jwks_max_age}"

    @property
    def jwks_uri(self) -> str:
        """Return the public JWKS URL derived from the issuer identifier."""
        return f"{self.issuer}.well-known/jwks.json"

    @property
    def token_endpoint(self) -> str:
        """Return the token endpoint URL derived from the issuer identifier."""
        return f"{self.issuer}oauth/token"

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> IssuerSettings:
        """Build settings from DEV_ISSUER_* variables, raising IssuerConfigError on bad input."""
        host = env.get("DEV_ISSUER_HOST", "").strip() or DEFAULT_HOST
        port = _int(env, "DEV_ISSUER_PORT", DEFAULT_PORT, minimum=1, maximum=65535)
        issuer = env.get("DEV_ISSUER_URL", "").strip() or f"http://{_url_host(host)}:{port}/"
        if not re.match(r"^https?://[^/?#\s]+(/[^?#\s]*)?$", issuer):
            raise IssuerConfigError(f"DEV_ISSUER_URL must be an http(s) URL, got {issuer!r}")
        # Auth0 issuer identifiers end with '/', and the API derives '{issuer}.well-known/...'.
        if not issuer.endswith("/"):
            issuer += "/"
        raw_audiences = env.get("DEV_ISSUER_AUDIENCE", "").strip() or DEFAULT_AUDIENCE
        audiences = tuple(dict.fromkeys(a.strip() for a in raw_audiences.split(",") if a.strip()))
        if not audiences:
            raise IssuerConfigError("DEV_ISSUER_AUDIENCE must name at least one audience")
        ttl = _int(env, "DEV_ISSUER_TOKEN_TTL", DEFAULT_TOKEN_TTL, minimum=1, maximum=MAX_TTL)
        raw_clients = env.get("DEV_ISSUER_CLIENTS", "").strip()
        clients = parse_clients(raw_clients, audiences) if raw_clients else default_clients()
        key_file = env.get("DEV_ISSUER_KEY_FILE", "").strip() or None
        max_age = (
            _int(env, "DEV_ISSUER_JWKS_MAX_AGE", 0, minimum=0, maximum=MAX_TTL)
            if env.get("DEV_ISSUER_JWKS_MAX_AGE", "").strip()
            else None
        )
        extra_paths = _extra_paths(env)
        return cls(
            host, port, issuer, audiences, ttl, clients, key_file, max_age, extra_paths=extra_paths
        )


def _extra_paths(env: Mapping[str, str]) -> tuple[str, ...]:
    """DEV_ISSUER_EXTRA_PATHS: comma-separated path segments, one more issuer each."""
    raw = env.get("DEV_ISSUER_EXTRA_PATHS", "")
    paths = tuple(dict.fromkeys(p.strip().strip("/") for p in raw.split(",") if p.strip()))
    bad = [p for p in paths if not _PATH_SEGMENT.match(p) or p in _RESERVED_PATHS]
    if bad:
        raise IssuerConfigError(
            f"DEV_ISSUER_EXTRA_PATHS: {bad} must be plain path segments (letters, digits, - _) "
            f"other than {sorted(_RESERVED_PATHS)}"
        )
    return paths


def _url_host(host: str) -> str:
    """Return host as it must appear in a URL (wildcard binds advertise loopback)."""
    if host in ("0.0.0.0", "::", ""):
        return DEFAULT_HOST
    return f"[{host}]" if ":" in host else host


def _int(env: Mapping[str, str], name: str, default: int, *, minimum: int, maximum: int) -> int:
    """Parse a bounded integer variable."""
    raw = env.get(name, "").strip()
    if not raw:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise IssuerConfigError(f"{name} must be an integer, got {raw!r}") from None
    if not minimum <= value <= maximum:
        raise IssuerConfigError(f"{name} must be between {minimum} and {maximum}, got {value}")
    return value


def parse_clients(raw: str, audiences: tuple[str, ...]) -> tuple[ClientConfig, ...]:
    """Parse DEV_ISSUER_CLIENTS: {"<client_id>": {"client_secret": str, "scopes": [str],
    "audiences": [str]}} (scopes and audiences optional)."""
    name = "DEV_ISSUER_CLIENTS"
    try:
        data = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise IssuerConfigError(f"{name} is not valid JSON: {exc.msg}") from None
    if not isinstance(data, dict) or not data:
        raise IssuerConfigError(f"{name} must be a non-empty JSON object keyed by client_id")
    clients = []
    for client_id, spec in data.items():
        if not client_id or not isinstance(spec, dict):
            raise IssuerConfigError(f"{name}: entry {client_id!r} must be an object")
        unknown = set(spec) - {"client_secret", "scopes", "audiences"}
        if unknown:
            raise IssuerConfigError(f"{name}: {client_id!r} has unknown keys {sorted(unknown)}")
        secret = spec.get("client_secret")
        if not isinstance(secret, str) or not secret:
            raise IssuerConfigError(f"{name}: {client_id!r} needs a non-empty client_secret")
        scopes = _str_list(spec.get("scopes", []), f"{name}: {client_id!r} scopes")
        bad = [s for s in scopes if not SCOPE_TOKEN.match(s)]
        if bad:
            raise IssuerConfigError(f"{name}: {client_id!r} has invalid scope tokens {bad}")
        client_auds: tuple[str, ...] | None = None
        if "audiences" in spec:
            client_auds = _str_list(spec["audiences"], f"{name}: {client_id!r} audiences")
            stray = [a for a in client_auds if a not in audiences]
            if stray:
                raise IssuerConfigError(
                    f"{name}: {client_id!r} audiences {stray} are not in DEV_ISSUER_AUDIENCE"
                )
        clients.append(ClientConfig(client_id, secret, scopes, client_auds))
    return tuple(clients)


def _str_list(value: object, what: str) -> tuple[str, ...]:
    """Validate a JSON list of non-empty strings."""
    if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
        raise IssuerConfigError(f"{what} must be a list of non-empty strings")
    return tuple(dict.fromkeys(value))
