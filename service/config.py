"""Settings read once from the environment into a typed, frozen object.

Every default the service chooses is pinned in ``DEFAULTS`` below, each with the reason for its value;
the settings table in docs/settings.md is checked against the same facts.
"""

from __future__ import annotations

import hashlib
import ipaddress
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from dataclasses import field
from typing import Any
from typing import Final
from urllib.parse import urlsplit

#: Algorithms this service can verify at all; HS* is deliberately absent (RFC 8725 §3.1:
#: a resource server that holds only public keys must never accept an HMAC token).
SUPPORTED_ALGORITHMS: Final = frozenset(
    {"RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512"}
)

#: Which JWK key type serves which JWS algorithm family (RFC 7518 §3.1).
_KEY_TYPES: Final = {"RS": "RSA", "PS": "RSA", "ES": "EC"}


def key_type_for(alg: str) -> str:
    """The JWK ``kty`` that can verify a JWS algorithm."""
    return _KEY_TYPES[alg[:2]]


#: DPoP proof algorithms this service can verify (RFC 9449 §4.2: asymmetric only).
SUPPORTED_DPOP_ALGORITHMS: Final = frozenset({"ES256", "RS256", "PS256", "EdDSA"})
#: AUTH0_DPOP modes: accept both schemes, DPoP only, or Bearer only (no DPoP support at all).
DPOP_MODES: Final = ("allowed", "required", "disabled")

#: AUTH0_MTLS modes (RFC 8705 §3): check bound tokens, also refuse unbound ones, or ignore binding.
MTLS_MODES: Final = ("allowed", "required", "disabled")
#: An HTTP field name (RFC 9110 §5.1 token) without '_', which WSGI could not tell from '-'.
_CERT_HEADER_NAME: Final = re.compile(r"[A-Za-z0-9-]{1,64}")
#: A year: AUTH0_MAX_TOKEN_AGE above it limits nothing a token lifetime would not.
_MAX_TOKEN_AGE_LIMIT: Final = 366 * 86400

#: The permission that `/api/private-scoped` requires.
REQUIRED_PERMISSION: Final = "read:messages"

#: (variable, default, why) for every optional setting: the one place defaults live.
DEFAULTS: Final[dict[str, tuple[str, str]]] = {
    "AUTH0_JWKS_TTL": (
        "600",
        "10 min, as jose/express-oauth2-jwt-bearer and Envoy; capped by Cache-Control max-age.",
    ),
    "AUTH0_JWKS_COOLDOWN": (
        "30",
        "at most one unknown-kid refresh per 30 s per worker (jose's cooldown): kid floods stay cheap.",
    ),
    "AUTH0_JWKS_RETRY": (
        "5",
        "seconds between fetch retries while the issuer fails, so an outage is not hammered.",
    ),
    "AUTH0_JWKS_MAX_STALE": (
        "86400",
        "last good keys serve 24 h past their TTL while the issuer fails (outages last hours); "
        "past it a worker answers 503 rather than trust keys that may since have been revoked.",
    ),
    "AUTH0_ALGORITHMS": ("RS256", "Auth0 signs access tokens with RS256; anything else is refused."),
    "AUTH0_LEEWAY": (
        "5",
        "clock skew tolerated on exp/nbf/iat; express-oauth2-jwt-bearer's clockTolerance.",
    ),
    "AUTH0_HTTP_TIMEOUT": ("5", "connect and read timeout for discovery/JWKS fetches (jose's 5 s)."),
    "AUTH0_ALLOW_INSECURE_ISSUER": (
        "0",
        "plain-http issuers and JWKS URIs are refused (keys fetched over http can be swapped on "
        "the way); loopback and the dev issuer's service name `issuer` are exempt; 1 allows any.",
    ),
    "AUTH0_JWKS_MAX_BYTES": ("262144", "a JWKS larger than 256 KiB is a failed fetch, not a parse."),
    "AUTH0_MAX_TOKEN_BYTES": (
        "16384",
        "tokens above 16 KiB are refused before any decoding; Auth0 RBAC tokens stay far below.",
    ),
    "AUTH0_TOKEN_CACHE_SIZE": (
        "10000",
        "verified-token cache entries per worker (~1.3 KiB each for a typical token); 0 turns it off.",
    ),
    "AUTH0_TOKEN_CACHE_BYTES": (
        "16777216",
        "16 MiB of cached tokens per worker: all 10,000 entries of typical tokens fit, while large "
        "RBAC tokens (~11 KiB each) stop at ~1,500 entries instead of growing to ~110 MiB.",
    ),
    "AUTH0_DPOP": (
        "allowed",
        "accept Bearer and DPoP (RFC 9449) tokens, as Auth0's SDKs do by default.",
    ),
    "AUTH0_DPOP_ALGORITHMS": (
        "ES256",
        "the proof algorithm Auth0's SDKs use; RS256, PS256 and EdDSA can be added.",
    ),
    "AUTH0_DPOP_IAT_OFFSET": (
        "300",
        "seconds a proof's iat may lie in the past (auth0-api-python); also how long jti is kept.",
    ),
    "AUTH0_DPOP_IAT_LEEWAY": (
        "30",
        "seconds a proof's iat may lie in the future: client clock skew (auth0-api-python).",
    ),
    "AUTH0_DPOP_NONCE": (
        "0",
        "server nonces (RFC 9449 §9) cost clients a round trip, so they are opt-in.",
    ),
    "AUTH0_DPOP_NONCE_STEP": (
        "60",
        "seconds per nonce; a nonce is accepted for its step and the next (60-120 s).",
    ),
    "AUTH0_DPOP_REPLAY_CAPACITY": (
        "131072",
        "proof ids remembered per pod (3.4 MiB): 384 unique proofs/s measured, one key an eighth.",
    ),
    "AUTH0_DPOP_REPLAY_TIMEOUT": (
        "0.05",
        "seconds per Redis command (connect or reply): many round trips in a region, and an outage's "
        "503 stays fast; never retried.",
    ),
    "AUTH0_DPOP_REPLAY_FAIL": (
        "closed",
        "Redis down: DPoP answers 503 ('closed'), or the pod-local table decides ('open', an explicit "
        "choice: single-use per pod only).",
    ),
    "AUTH0_MTLS": (
        "allowed",
        "check certificate-bound tokens (RFC 8705) and accept unbound ones, as Auth0's SDKs do "
        "once mTLS is on; harmless without a proxy, since no token is bound then.",
    ),
    "AUTH0_MTLS_CERT_HEADER": (
        "X-Client-Cert",
        "the header the TLS-terminating proxy puts the client certificate in (nginx's usual name).",
    ),
    "AUTH0_STRICT_PROFILE": (
        "0",
        "Auth0 issues typ JWT without client_id/jti unless the API opts into RFC 9068: off by default.",
    ),
    "CORS_ALLOWED_ORIGINS": (
        "*",
        "bearer tokens are not cookies, so any origin is safe by default; list origins to narrow.",
    ),
    "LOG_FORMAT": ("json", "JSON lines for log shippers; 'console' for humans."),
    "SERVICE_VERSION": (
        "dev",
        "service_build_info's version; the image stamps its release at build time.",
    ),
    "SERVICE_REVISION": (
        "unknown",
        "service_build_info's revision (the source commit); the image stamps it at build time.",
    ),
    "LOG_LEVEL": ("info", "one auth_decision line per protected request at info."),
    "LOG_ACCESS_PROBES": (
        "0",
        "no access lines for /healthz, /readyz, /metrics answered 2xx: probes would drown the "
        "log; their failures are always logged. 1 logs them too.",
    ),
    "METRICS_PORT": (
        "0",
        "0: /metrics on the app port, as documented. A port: /metrics served there (by the "
        "gunicorn master, over all workers) and 404 on the app port, so clients never see it.",
    ),
    # gunicorn (read by gunicorn.conf.py through server_int below):
    "PORT": ("3010", "the quickstart's port; `--bind` on the command line wins."),
    "WEB_CONCURRENCY": (
        "2",
        "explicit, never cpu_count(): in a container that is the node's cores, not our quota.",
    ),
    "GUNICORN_THREADS": ("4", "gthread threads per worker: overlap the rare JWKS fetch."),
    "GUNICORN_GRACEFUL_TIMEOUT": (
        "20",
        "SIGTERM budget for in-flight requests; Kubernetes grace = preStop 5 + 20 + margin.",
    ),
    "GUNICORN_KEEPALIVE": (
        "5",
        "fine for direct clients; raise above a load balancer's idle timeout (65+ s for 60 s).",
    ),
    "GUNICORN_HEADER_TIMEOUT": (
        "10",
        "seconds a request head may take to arrive (nginx's client_header_timeout is 60); "
        "slow or silent connections wait on the poller, never on a thread, then are closed.",
    ),
}


#: (variable, what it holds) for every setting without a default; with DEFAULTS, every variable read.
NO_DEFAULT: Final[dict[str, str]] = {
    "AUTH0_DOMAIN": "tenant host name(s), comma-separated; issuers https://{domain}/ (or AUTH0_ISSUER).",
    "AUTH0_ISSUER": "exact issuer URL(s), comma-separated, instead of AUTH0_DOMAIN (dev, any OIDC issuer).",
    "AUTH0_AUDIENCE": "required: the API identifier that aud must contain.",
    "AUTH0_JWKS_URI": "the key set URL of a single issuer; unset, OIDC discovery finds it.",
    "PROMETHEUS_MULTIPROC_DIR": "metrics directory shared by workers; gunicorn.conf.py makes one when unset.",
    "AUTH0_DPOP_NONCE_SECRET": "DPoP nonce MAC key; unset, the gunicorn master draws one before forking.",
    "AUTH0_ORGANIZATION": (
        "Auth0 organization ids (org_...) or names, comma-separated: org_id or org_name must match."
    ),
    "AUTH0_MAX_TOKEN_AGE": "seconds: iat is required and may be at most this old (express's maxTokenAge).",
    "PUBLIC_URL": "the external URL(s) clients call, comma-separated: DPoP htu, RFC 9728 metadata.",
    "AUTH0_DPOP_REPLAY_URL": "redis:// or rediss:// URL of the shared DPoP replay store; unset: per pod.",
    "AUTH0_DPOP_REPLAY_PASSWORD_FILE": "file holding the Redis password (a Secret), newline dropped.",
    "AUTH0_DPOP_REPLAY_PREFIX": "Redis key prefix; unset, derived from AUTH0_AUDIENCE (one per API).",
    "RESOURCE_NAME": "RFC 9728 resource_name of the metadata document.",
    "RESOURCE_DOCUMENTATION": "RFC 9728 resource_documentation URL of the metadata document.",
    "GATEWAY_POLICY": "gateway mode: the YAML policy file /auth/check decides by; unset, no /auth/check.",
    "GATEWAY_CLAIM_HEADERS": "gateway mode: claim:Header pairs, comma-separated, sent upstream on an allow.",
}

#: Every environment variable the service and gunicorn.conf.py read.
ENV_VARIABLES: Final = frozenset(DEFAULTS) | frozenset(NO_DEFAULT)


class ConfigError(Exception):
    """A setting is missing or invalid; the message names the variable."""


@dataclass(frozen=True, slots=True)
class Settings:
    """The service's validated configuration."""

    #: The first trusted issuer (the only one in a single-issuer configuration).
    issuer: str
    audience: str
    jwks_uri: str | None
    jwks_ttl: float
    jwks_cooldown: float
    jwks_retry: float
    jwks_max_stale: float
    algorithms: tuple[str, ...]
    leeway: int
    http_timeout: float
    jwks_max_bytes: int
    max_token_bytes: int
    token_cache_size: int
    token_cache_bytes: int
    cors_origins: tuple[str, ...]
    log: LogSettings
    metrics_port: int
    version: str
    revision: str
    dpop: DPoPSettings
    #: The external origins (and path prefixes) clients use: DPoP htu; the first one in RFC 9728
    #: metadata. Empty: the request's own Host decides (start-up warns when DPoP is on).
    public_urls: tuple[str, ...]
    resource_name: str | None
    resource_documentation: str | None
    #: The token's claim rules that Auth0's SDKs have (organizations, token age, RFC 9068 profile).
    claim_rules: ClaimRules = field(default_factory=lambda: ClaimRules())
    #: Certificate-bound tokens (RFC 8705 §3).
    mtls: MtlsSettings = field(default_factory=lambda: MtlsSettings())
    #: Every trusted issuer, exactly as tokens must carry it in ``iss`` (``issuer`` first).
    issuers: tuple[str, ...] = ()
    #: Gateway mode: the policy file's path (None: no /auth/check) and the claim headers.
    gateway_policy: str | None = None
    gateway_claim_headers: tuple[tuple[str, str], ...] = ()

    @property
    def public_url(self) -> str | None:
        """The first PUBLIC_URL: the one RFC 9728 answers name."""
        return self.public_urls[0] if self.public_urls else None

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        """Build settings from an environment mapping (``os.environ`` by default)."""
        env = os.environ if env is None else env
        reader = _Reader(env)
        audience = reader.required("AUTH0_AUDIENCE")
        allow_insecure = reader.flag("AUTH0_ALLOW_INSECURE_ISSUER")
        issuers = _issuers(env, allow_insecure=allow_insecure)
        algorithms = reader.algorithms("AUTH0_ALGORITHMS", SUPPORTED_ALGORITHMS)
        log = log_settings(env)
        jwks_uri = env.get("AUTH0_JWKS_URI", "").strip() or None
        if jwks_uri is not None:
            check_issuer_url("AUTH0_JWKS_URI", jwks_uri, allow_insecure=allow_insecure)
            if len(issuers) > 1:
                raise ConfigError(
                    "AUTH0_JWKS_URI: only for a single issuer; with several issuers each one's "
                    "keys are found by discovery (unset AUTH0_JWKS_URI)"
                )
        public_urls = _public_urls(env)
        origins = tuple(o.strip() for o in reader.get("CORS_ALLOWED_ORIGINS").split(",") if o.strip())
        return cls(
            issuer=issuers[0],
            issuers=issuers,
            audience=audience,
            jwks_uri=jwks_uri,
            jwks_ttl=reader.number("AUTH0_JWKS_TTL", minimum=1),
            jwks_cooldown=reader.number("AUTH0_JWKS_COOLDOWN", minimum=0),
            jwks_retry=reader.number("AUTH0_JWKS_RETRY", minimum=0),
            jwks_max_stale=reader.number("AUTH0_JWKS_MAX_STALE", minimum=0),
            algorithms=algorithms,
            leeway=int(reader.number("AUTH0_LEEWAY", minimum=0, maximum=300)),
            http_timeout=reader.number("AUTH0_HTTP_TIMEOUT", minimum=0.1, maximum=60),
            jwks_max_bytes=int(reader.number("AUTH0_JWKS_MAX_BYTES", minimum=1024)),
            max_token_bytes=int(reader.number("AUTH0_MAX_TOKEN_BYTES", minimum=256)),
            token_cache_size=int(reader.number("AUTH0_TOKEN_CACHE_SIZE", minimum=0)),
            token_cache_bytes=int(reader.number("AUTH0_TOKEN_CACHE_BYTES", minimum=65536)),
            cors_origins=origins or ("*",),
            log=log,
            metrics_port=metrics_port(env),
            version=reader.label("SERVICE_VERSION"),
            revision=reader.label("SERVICE_REVISION"),
            claim_rules=_claim_rules(env, reader),
            mtls=_mtls_settings(reader),
            dpop=dpop_settings(env),
            public_urls=public_urls,
            resource_name=env.get("RESOURCE_NAME", "").strip() or None,
            resource_documentation=_resource_documentation(env),
            **_gateway_settings(env),
        )


@dataclass(frozen=True, slots=True)
class ClaimRules:
    """Claim rules applied to every token, as Auth0's SDKs offer them."""

    #: AUTH0_ORGANIZATION entries starting ``org_``: exact ``org_id`` values.
    organization_ids: frozenset[str] = frozenset()
    #: The other entries, lower-cased: ``org_name`` values, compared case-insensitively.
    organization_names: frozenset[str] = frozenset()
    #: AUTH0_MAX_TOKEN_AGE: ``iat`` required and at most this many seconds old.
    max_token_age: int | None = None
    #: AUTH0_STRICT_PROFILE: RFC 9068 ``typ`` and required claims.
    strict_profile: bool = False

    @property
    def organizations(self) -> bool:
        """Whether AUTH0_ORGANIZATION restricts tokens to some organizations."""
        return bool(self.organization_ids or self.organization_names)


@dataclass(frozen=True, slots=True)
class MtlsSettings:
    """AUTH0_MTLS and the header carrying the client certificate."""

    mode: str = "allowed"
    cert_header: str = "X-Client-Cert"

    @property
    def environ_key(self) -> str:
        """The WSGI environ key of the certificate header (PEP 3333: HTTP_ + upper, '-' to '_')."""
        return "HTTP_" + self.cert_header.upper().replace("-", "_")


def _claim_rules(env: Mapping[str, str], reader: _Reader) -> ClaimRules:
    """AUTH0_ORGANIZATION, AUTH0_MAX_TOKEN_AGE and AUTH0_STRICT_PROFILE."""
    organizations = _entries(env, "AUTH0_ORGANIZATION")
    for entry in organizations:
        if len(entry) > 256 or not entry.isprintable():
            raise ConfigError(f"AUTH0_ORGANIZATION: {entry!r} must be at most 256 printable characters")
    raw_age = env.get("AUTH0_MAX_TOKEN_AGE", "").strip()
    max_age = None
    if raw_age:
        if not raw_age.isdigit() or not 1 <= int(raw_age) <= _MAX_TOKEN_AGE_LIMIT:
            raise ConfigError(
                f"AUTH0_MAX_TOKEN_AGE: {raw_age!r} must be whole seconds from 1 to {_MAX_TOKEN_AGE_LIMIT}"
            )
        max_age = int(raw_age)
    # Auth0 documents org ids as "org_..." and names as lower-case: https://auth0.com/docs/manage-users/organizations/using-tokens
    return ClaimRules(
        organization_ids=frozenset(e for e in organizations if e.startswith("org_")),
        organization_names=frozenset(e.lower() for e in organizations if not e.startswith("org_")),
        max_token_age=max_age,
        strict_profile=reader.flag("AUTH0_STRICT_PROFILE"),
    )


def _mtls_settings(reader: _Reader) -> MtlsSettings:
    """AUTH0_MTLS and AUTH0_MTLS_CERT_HEADER."""
    mode = reader.get("AUTH0_MTLS").lower()
    if mode not in MTLS_MODES:
        raise ConfigError(f"AUTH0_MTLS: {mode!r} must be one of {', '.join(MTLS_MODES)}")
    header = reader.get("AUTH0_MTLS_CERT_HEADER")
    if not _CERT_HEADER_NAME.fullmatch(header):
        raise ConfigError(
            f"AUTH0_MTLS_CERT_HEADER: {header!r} must be an HTTP field name (letters, digits, '-')"
        )
    if header.lower() in ("authorization", "dpop", "host", "cookie"):
        raise ConfigError(f"AUTH0_MTLS_CERT_HEADER: {header!r} is not a certificate header")
    return MtlsSettings(mode, header)


@dataclass(frozen=True, slots=True)
class DPoPSettings:
    """DPoP (RFC 9449): the AUTH0_DPOP_* variables."""

    #: AUTH0_DPOP: "disabled", "allowed" or "required".
    mode: str
    algorithms: tuple[str, ...]
    iat_offset: int
    iat_leeway: int
    nonce: bool
    nonce_secret: str | None = field(repr=False)
    nonce_step: int
    replay_capacity: int
    #: The shared replay store (Redis, AUTH0_DPOP_REPLAY_*); None keeps the pod-local table.
    replay_store: RedisSettings | None = None

    @property
    def enabled(self) -> bool:
        """Whether DPoP-bound tokens are accepted at all."""
        return self.mode != "disabled"


def dpop_settings(env: Mapping[str, str]) -> DPoPSettings:
    """The DPoP (RFC 9449) settings."""
    reader = _Reader(env)
    mode = reader.get("AUTH0_DPOP").lower()
    if mode not in DPOP_MODES:
        raise ConfigError(f"AUTH0_DPOP: {mode!r} must be one of {', '.join(DPOP_MODES)}")
    algorithms = reader.algorithms("AUTH0_DPOP_ALGORITHMS", SUPPORTED_DPOP_ALGORITHMS)
    nonce = reader.get("AUTH0_DPOP_NONCE").lower()
    if nonce not in ("0", "1", "true", "false", "yes", "no", "on", "off"):
        raise ConfigError(f"AUTH0_DPOP_NONCE: {nonce!r} must be 0 or 1")
    return DPoPSettings(
        mode=mode,
        algorithms=algorithms,
        iat_offset=int(reader.number("AUTH0_DPOP_IAT_OFFSET", minimum=1, maximum=3600)),
        iat_leeway=int(reader.number("AUTH0_DPOP_IAT_LEEWAY", minimum=0, maximum=300)),
        nonce=nonce in ("1", "true", "yes", "on"),
        nonce_secret=env.get("AUTH0_DPOP_NONCE_SECRET", "").strip() or None,
        nonce_step=int(reader.number("AUTH0_DPOP_NONCE_STEP", minimum=1, maximum=3600)),
        replay_capacity=int(reader.number("AUTH0_DPOP_REPLAY_CAPACITY", minimum=1024, maximum=1 << 24)),
        replay_store=redis_settings(env, env.get("AUTH0_AUDIENCE", "").strip()),
    )


def _public_urls(env: Mapping[str, str]) -> tuple[str, ...]:
    """PUBLIC_URL: the external origins and path prefixes clients use (DPoP htu, RFC 9728)."""
    public_urls = tuple(
        dict.fromkeys(u.strip().rstrip("/") for u in env.get("PUBLIC_URL", "").split(",") if u.strip())
    )
    for public_url in public_urls:
        parts = urlsplit(public_url)
        _check_url("PUBLIC_URL", public_url)
        try:
            port = parts.port
        except ValueError:
            port = 0
        if parts.query or port == 0:
            raise ConfigError(f"PUBLIC_URL: {public_url!r} must be scheme://host[:port][/prefix]")
    return public_urls


def _resource_documentation(env: Mapping[str, str]) -> str | None:
    """RESOURCE_DOCUMENTATION: a URL for the RFC 9728 metadata document."""
    documentation = env.get("RESOURCE_DOCUMENTATION", "").strip() or None
    if documentation is not None:
        _check_url("RESOURCE_DOCUMENTATION", documentation)
    return documentation


@dataclass(frozen=True, slots=True)
class RedisSettings:
    """The shared DPoP replay store: where it is, how long to wait, what to do when it fails."""

    url: str = field(repr=False)
    password: str | None = field(repr=False)
    timeout: float
    fail_open: bool
    prefix: str


#: URL schemes of Redis (and Valkey): plain TCP and TLS.
_REDIS_SCHEMES = ("redis", "rediss")


def redis_settings(env: Mapping[str, str], audience: str) -> RedisSettings | None:
    """AUTH0_DPOP_REPLAY_*: None without a URL (the pod-local table)."""
    url = env.get("AUTH0_DPOP_REPLAY_URL", "").strip()
    if not url:
        return None
    reader = _Reader(env)
    # The URL may carry a password: errors name the variable and the fault, never the value.
    parts = urlsplit(url)
    if parts.scheme not in _REDIS_SCHEMES:
        raise ConfigError("AUTH0_DPOP_REPLAY_URL: must start with redis:// or rediss:// (TLS)")
    try:
        port = parts.port
    except ValueError:
        port = 0
    database = parts.path.lstrip("/")
    if not parts.hostname or port == 0 or (database and not database.isdigit()) or parts.fragment:
        raise ConfigError("AUTH0_DPOP_REPLAY_URL: must be redis[s]://[[user]:password@]host[:port][/db]")
    password = None
    password_file = env.get("AUTH0_DPOP_REPLAY_PASSWORD_FILE", "").strip()
    if password_file:
        if parts.password is not None:
            raise ConfigError(
                "AUTH0_DPOP_REPLAY_PASSWORD_FILE: the URL carries a password too; keep one of them"
            )
        try:
            with open(password_file, encoding="utf-8") as handle:
                # A Secret written with `echo` ends in a newline that is no part of the password.
                password = handle.read().removesuffix("\n").removesuffix("\r")
        except (OSError, UnicodeDecodeError) as error:
            raise ConfigError(
                f"AUTH0_DPOP_REPLAY_PASSWORD_FILE: cannot read {password_file!r}: {error}"
            ) from None
    fail = reader.get("AUTH0_DPOP_REPLAY_FAIL").lower()
    if fail not in ("closed", "open"):
        raise ConfigError(f"AUTH0_DPOP_REPLAY_FAIL: {fail!r} must be 'closed' or 'open'")
    prefix = env.get("AUTH0_DPOP_REPLAY_PREFIX", "").strip() or default_replay_prefix(audience)
    if len(prefix) > 128 or not prefix.isprintable() or " " in prefix:
        raise ConfigError("AUTH0_DPOP_REPLAY_PREFIX: must be at most 128 printable characters, no spaces")
    return RedisSettings(
        url=url,
        password=password,
        timeout=reader.number("AUTH0_DPOP_REPLAY_TIMEOUT", minimum=0.001, maximum=10),
        fail_open=fail == "open",
        prefix=prefix,
    )


def default_replay_prefix(audience: str) -> str:
    """One API's key prefix: the same on every pod of an audience, another for any other audience."""
    return "dpop-jti:" + hashlib.sha256(audience.encode("utf-8")).hexdigest()[:16]


@dataclass(frozen=True, slots=True)
class LogSettings:
    """Every LOG_* setting, read in one place for gunicorn's logger and the app alike."""

    format: str
    level: str
    access_probes: bool


def log_settings(env: Mapping[str, str]) -> LogSettings:
    """The LOG_* settings alone: gunicorn's logger needs them before the full settings."""
    reader = _Reader(env)
    log_format = reader.get("LOG_FORMAT").lower()
    if log_format not in ("json", "console"):
        raise ConfigError("LOG_FORMAT: must be 'json' or 'console'")
    return LogSettings(log_format, reader.get("LOG_LEVEL").upper(), reader.flag("LOG_ACCESS_PROBES"))


def metrics_port(env: Mapping[str, str]) -> int:
    """METRICS_PORT: 0 keeps /metrics on the app port; it must differ from PORT."""
    port = server_int(env, "METRICS_PORT", minimum=0)
    if port > 65535:
        raise ConfigError(f"METRICS_PORT: {port} is not a TCP port")
    if port and port == server_int(env, "PORT", minimum=1):
        raise ConfigError(f"METRICS_PORT: {port} is the app's PORT; choose another port")
    return port


def server_int(env: Mapping[str, str], name: str, *, minimum: int) -> int:
    """An integer gunicorn setting (PORT, WEB_CONCURRENCY, GUNICORN_*) from ``DEFAULTS``."""
    raw = _Reader(env).get(name)
    try:
        value = int(raw)
    except ValueError:
        value = minimum - 1
    if value < minimum:
        raise ConfigError(f"{name}: {raw!r} must be an integer >= {minimum}")
    return value


class _Reader:
    """Reads variables, falling back to ``DEFAULTS`` and naming the variable on error."""

    def __init__(self, env: Mapping[str, str]) -> None:
        self._env = env

    def get(self, name: str) -> str:
        """Return the variable's value, or its pinned default when unset or empty."""
        value = self._env.get(name, "").strip()
        return value or DEFAULTS[name][0]

    def required(self, name: str) -> str:
        """Return a variable that has no default."""
        value = self._env.get(name, "").strip()
        if not value:
            raise ConfigError(f"{name}: required but not set")
        return value

    def label(self, name: str) -> str:
        """Return a short printable value fit for a metric label."""
        value = self.get(name)
        if len(value) > 128 or not value.isprintable():
            raise ConfigError(f"{name}: must be at most 128 printable characters")
        return value

    def algorithms(self, name: str, supported: frozenset[str]) -> tuple[str, ...]:
        """Return a non-empty comma-separated allow-list drawn from ``supported``."""
        algorithms = tuple(a.strip() for a in self.get(name).split(",") if a.strip())
        unknown = [a for a in algorithms if a not in supported]
        if unknown or not algorithms:
            raise ConfigError(
                f"{name}: {','.join(unknown) or 'empty'} not allowed; "
                f"choose from {','.join(sorted(supported))}"
            )
        return algorithms

    def flag(self, name: str) -> bool:
        """Return a 0/1 switch."""
        raw = self.get(name)
        if raw not in ("0", "1"):
            raise ConfigError(f"{name}: {raw!r} must be 0 or 1")
        return raw == "1"

    def number(self, name: str, *, minimum: float, maximum: float | None = None) -> float:
        """Return a numeric variable within bounds."""
        raw = self.get(name)
        try:
            value = float(raw)
        except ValueError:
            raise ConfigError(f"{name}: {raw!r} is not a number") from None
        if value != value or value < minimum or (maximum is not None and value > maximum):
            bound = f"between {minimum:g} and {maximum:g}" if maximum is not None else f">= {minimum:g}"
            raise ConfigError(f"{name}: {raw!r} must be {bound}")
        return value


def _issuers(env: Mapping[str, str], *, allow_insecure: bool) -> tuple[str, ...]:
    """The exact issuer strings tokens may carry: AUTH0_ISSUER, else AUTH0_DOMAIN, comma-separated.

    Several entries are several custom domains of one tenant (or several tenants), each trusted
    with its own keys: https://auth0.com/docs/customize/custom-domains/multiple-custom-domains
    """
    explicit = _entries(env, "AUTH0_ISSUER")
    if explicit:
        for issuer in explicit:
            check_issuer_url("AUTH0_ISSUER", issuer, allow_insecure=allow_insecure)
        return explicit
    domains = _entries(env, "AUTH0_DOMAIN")
    if not domains:
        raise ConfigError("AUTH0_DOMAIN: required (or AUTH0_ISSUER) but not set")
    return tuple(dict.fromkeys(_domain_issuer(domain) for domain in domains))


#: RFC 9110 §5.1 field-name (token), and the names a claim header may not take: the identity
#: headers, and those HTTP and the gateways give meaning to.
_FIELD_NAME = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")
_RESERVED_HEADERS = frozenset({
    "x-auth-subject", "x-auth-client", "x-auth-scopes", "x-auth-issuer", "content-length",
    "content-type", "cache-control", "www-authenticate", "dpop-nonce", "connection",
    "transfer-encoding", "host", "set-cookie", "location",
})


def _gateway_settings(env: Mapping[str, str]) -> dict[str, Any]:
    """GATEWAY_POLICY (a path; service.gateway_policy reads the file) and GATEWAY_CLAIM_HEADERS."""
    policy = env.get("GATEWAY_POLICY", "").strip() or None
    pairs: list[tuple[str, str]] = []
    for entry in _entries(env, "GATEWAY_CLAIM_HEADERS"):
        claim, _, header = entry.partition(":")
        claim, header = claim.strip(), header.strip()
        if not claim or not _FIELD_NAME.fullmatch(header) or header.lower() in _RESERVED_HEADERS:
            raise ConfigError(
                f"GATEWAY_CLAIM_HEADERS: {entry!r} must be claim:Header-Name "
                "(a header name that is not an identity or HTTP header)"
            )
        if any(header.lower() == seen.lower() for _, seen in pairs):
            raise ConfigError(f"GATEWAY_CLAIM_HEADERS: header {header!r} named twice")
        pairs.append((claim, header))
    if pairs and policy is None:
        raise ConfigError("GATEWAY_CLAIM_HEADERS: only with GATEWAY_POLICY (gateway mode)")
    return {"gateway_policy": policy, "gateway_claim_headers": tuple(pairs)}


def _entries(env: Mapping[str, str], name: str) -> tuple[str, ...]:
    """A comma-separated variable's non-empty entries, in order, without repeats."""
    return tuple(dict.fromkeys(e.strip() for e in env.get(name, "").split(",") if e.strip()))


def _domain_issuer(domain: str) -> str:
    """The issuer of an Auth0 (custom) domain."""
    domain = domain.removeprefix("https://").rstrip("/")
    if not domain or "/" in domain or "@" in domain:
        raise ConfigError(f"AUTH0_DOMAIN: {domain!r} is not a bare host name like tenant.auth0.com")
    # Auth0's issuer is the tenant URL with a trailing slash, compared exactly (RFC 9068 §4).
    return f"https://{domain}/"


#: Host names a plain-http issuer may have without AUTH0_ALLOW_INSECURE_ISSUER=1: this machine
#: (RFC 6761 §6.3) and ``issuer``, the development issuer's service name in docker-compose.yml and
#: in the Kubernetes dev overlay (http://issuer:3011/). Loopback addresses are exempt too.
_PLAIN_HTTP_HOSTS = frozenset({"localhost", "issuer"})


def check_issuer_url(name: str, value: str, *, allow_insecure: bool) -> None:
    """Refuse an issuer (or JWKS) URL that is malformed, or plain http where that is not safe.

    Over plain http anyone on the path can hand the service their own keys (RFC 8414 §3 and
    OIDC Discovery §4 require TLS); only this machine and the dev issuer are trusted without it.
    """
    _check_url(name, value)
    parts = urlsplit(value)
    host = parts.hostname or ""
    if parts.scheme == "https" or allow_insecure or host in _PLAIN_HTTP_HOSTS:
        return
    try:
        if ipaddress.ip_address(host).is_loopback:
            return
    except ValueError:
        pass
    raise ConfigError(
        f"{name}: {value!r} is plain http; use https "
        "(or AUTH0_ALLOW_INSECURE_ISSUER=1 for a development issuer)"
    )


def _check_url(name: str, value: str) -> None:
    """Refuse URLs that could not be an issuer or key endpoint."""
    parts = urlsplit(value)
    if parts.scheme not in ("https", "http") or not parts.hostname:
        raise ConfigError(f"{name}: {value!r} must be an absolute http(s) URL")
    if parts.username or parts.password or parts.fragment:
        raise ConfigError(f"{name}: {value!r} must not carry credentials or a fragment")


def discovery_url(issuer: str) -> str:
    """OIDC discovery document location for an issuer (OIDC Discovery §4)."""
    return issuer.rstrip("/") + "/.well-known/openid-configuration"


def fallback_jwks_url(issuer: str) -> str:
    """Auth0's fixed JWKS location for an issuer."""
    return issuer.rstrip("/") + "/.well-known/jwks.json"
