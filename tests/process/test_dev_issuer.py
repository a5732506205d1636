"""The local development issuer, run as a real `python -m dev_issuer` process over real HTTP."""

from __future__ import annotations

import base64
import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from joserfc import jwt
from joserfc.jwk import KeySet
from joserfc.jwk import RSAKey
from joserfc.jwt import JWTClaimsRegistry

from dev_issuer.config import IssuerConfigError
from dev_issuer.config import IssuerSettings
from dev_issuer.keys import SigningKey
from tests.support.procs import free_port

pytestmark = pytest.mark.slow  # starts the issuer as its own process

REPO = Path(__file__).resolve().parents[2]
AUDIENCE = "https://api.dev.local"
GRANT = "client_credentials"
PRIVATE_JWK_MEMBERS = {"d", "p", "q", "dp", "dq", "qi", "oth"}


def _write_pem(path: Path, key: rsa.RSAPrivateKey, fmt: serialization.PrivateFormat) -> None:
    """Write an unencrypted PEM private key, as DEV_ISSUER_KEY_FILE expects."""
    path.write_bytes(key.private_bytes(serialization.Encoding.PEM, fmt, serialization.NoEncryption()))


@dataclass
class Issuer:
    """A running issuer process and where it listens."""

    proc: subprocess.Popen[bytes]
    base: str
    log_path: Path

    def log(self) -> str:
        """Return everything the process wrote so far."""
        return self.log_path.read_text()

    def stop(self) -> int:
        """SIGTERM the process and return its exit status."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout=10)
        finally:
            if self.proc.poll() is None:
                self.proc.kill()
                self.proc.wait()


def _start(tmp: Path, extra_env: dict[str, str] | None = None) -> Issuer:
    """Start `python -m dev_issuer` on a free port and wait until /healthz answers."""
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("DEV_ISSUER_")}
    env.pop("AUTHLIB_INSECURE_TRANSPORT", None)
    env.update({"DEV_ISSUER_PORT": str(port), "PYTHONUNBUFFERED": "1"})
    env.update(extra_env or {})
    log_path = tmp / f"issuer-{port}.log"
    with log_path.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-W", "error", "-m", "dev_issuer"],
            cwd=REPO,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    issuer = Issuer(proc, f"http://127.0.0.1:{port}", log_path)
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"issuer exited {proc.returncode}: {issuer.log()}")
        try:
            if _get(issuer.base + "/healthz")[0] == 200:
                return issuer
        except OSError:
            time.sleep(0.05)
    issuer.stop()
    pytest.fail(f"issuer did not become healthy: {issuer.log()}")


def _request(
    url: str, data: bytes | None = None, headers: dict[str, str] | None = None, method: str = "GET"
) -> tuple[int, dict[str, str], Any]:
    """Do one HTTP request; return status, headers and the JSON body (or None)."""
    req = urllib.request.Request(url, data=data, headers=headers or {}, method=method)
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return resp.status, dict(resp.headers), json.loads(resp.read() or b"null")
    except urllib.error.HTTPError as err:
        with err:
            raw = err.read()
            try:
                body = json.loads(raw) if raw else None
            except ValueError:
                body = None
            return err.code, dict(err.headers), body


def _get(url: str) -> tuple[int, dict[str, str], Any]:
    """GET a URL."""
    return _request(url)


def _token_json(base: str, body: dict[str, Any]) -> tuple[int, dict[str, str], Any]:
    """POST a JSON token request, the way Auth0's docs show it."""
    data = json.dumps(body).encode()
    headers = {"Content-Type": "application/json"}
    return _request(base + "/oauth/token", data, headers, "POST")


def _token_form(
    base: str, fields: list[tuple[str, str]], headers: dict[str, str] | None = None
) -> tuple[int, dict[str, str], Any]:
    """POST a form-encoded token request."""
    data = urllib.parse.urlencode(fields).encode()
    hdrs = {"Content-Type": "application/x-www-form-urlencoded", **(headers or {})}
    return _request(base + "/oauth/token", data, hdrs, "POST")


def _creds(client: str = "dev-client", secret: str = "dev-secret", **extra: str) -> dict[str, str]:
    """Build an Auth0-shaped client-credentials body."""
    return {
        "client_id": client,
        "client_secret": secret,
        "audience": AUDIENCE,
        "grant_type": GRANT,
        **extra,
    }


def _verify(base: str, token: str, issuer: str, audience: str = AUDIENCE) -> tuple[dict, dict]:
    """Verify a token with joserfc against the JWKS the issuer serves; return header, claims."""
    _, _, jwks = _get(base + "/.well-known/jwks.json")
    decoded = jwt.decode(token, KeySet.import_key_set(jwks), algorithms=["RS256"])
    JWTClaimsRegistry(
        iss={"essential": True, "value": issuer},
        aud={"essential": True, "value": audience},
        exp={"essential": True},
        iat={"essential": True},
        sub={"essential": True},
    ).validate(decoded.claims)
    return dict(decoded.header), dict(decoded.claims)


@pytest.fixture(scope="module")
def issuer(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Issuer]:
    """The issuer with its default configuration."""
    proc = _start(tmp_path_factory.mktemp("issuer"))
    yield proc
    assert proc.stop() == 0, proc.log()


@pytest.fixture(scope="module")
def custom(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Issuer, RSAKey]]:
    """An issuer configured through every DEV_ISSUER_* knob, with a key loaded from a PEM file."""
    tmp = tmp_path_factory.mktemp("custom")
    private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = tmp / "key.pem"
    _write_pem(pem, private, serialization.PrivateFormat.PKCS8)
    clients = {
        "svc": {"client_secret": "s3cret", "scopes": ["read:messages", "write:messages"]},
        "only-b": {"client_secret": "b-secret", "audiences": ["https://b.example"]},
    }
    proc = _start(
        tmp,
        {
            "DEV_ISSUER_URL": "http://issuer.example:3011",
            "DEV_ISSUER_AUDIENCE": f"{AUDIENCE}, https://b.example",
            "DEV_ISSUER_TOKEN_TTL": "600",
            "DEV_ISSUER_CLIENTS": json.dumps(clients),
            "DEV_ISSUER_KEY_FILE": str(pem),
        },
    )
    yield proc, RSAKey.import_key(private)
    assert proc.stop() == 0, proc.log()


def test_discovery_document(issuer: Issuer) -> None:
    """Discovery names the issuer and URLs derived from it, Auth0-style with a trailing slash."""
    status, headers, doc = _get(issuer.base + "/.well-known/openid-configuration")
    assert status == 200
    assert headers["Content-Type"] == "application/json"
    assert doc["issuer"] == issuer.base + "/"
    assert doc["jwks_uri"] == issuer.base + "/.well-known/jwks.json"
    assert doc["token_endpoint"] == issuer.base + "/oauth/token"
    assert doc["grant_types_supported"] == ["client_credentials"]
    assert set(doc["token_endpoint_auth_methods_supported"]) == {
        "client_secret_post",
        "client_secret_basic",
    }
    assert doc["id_token_signing_alg_values_supported"] == ["RS256"]
    assert doc["scopes_supported"] == ["read:messages"]


def test_jwks_publishes_only_the_public_key(issuer: Issuer) -> None:
    """One RSA signing key, kid = RFC 7638 thumbprint, no private members."""
    status, _, jwks = _get(issuer.base + "/.well-known/jwks.json")
    assert status == 200
    [key] = jwks["keys"]
    assert key["kty"] == "RSA" and key["use"] == "sig" and key["alg"] == "RS256"
    assert not PRIVATE_JWK_MEMBERS & set(key)
    assert key["kid"] == RSAKey.import_key(key).thumbprint()
    assert len(base64.urlsafe_b64decode(key["n"] + "==")) * 8 == 2048


def test_json_token_request_mints_auth0_shaped_token(issuer: Issuer) -> None:
    """Auth0's JSON request shape gives a Bearer token whose claims match an Auth0 M2M token."""
    before = int(time.time())
    status, headers, body = _token_json(issuer.base, _creds())
    assert status == 200, body
    assert headers["Cache-Control"] == "no-store"
    assert set(body) == {"access_token", "token_type", "expires_in", "scope"}
    assert body["token_type"] == "Bearer"
    assert body["expires_in"] == 86400
    assert body["scope"] == "read:messages"
    header, claims = _verify(issuer.base, body["access_token"], issuer.base + "/")
    _, _, jwks = _get(issuer.base + "/.well-known/jwks.json")
    assert header == {"alg": "RS256", "typ": "JWT", "kid": jwks["keys"][0]["kid"]}
    assert set(claims) == {"iss", "sub", "aud", "iat", "exp", "azp", "gty", "scope"}
    assert claims["sub"] == "dev-client@clients"
    assert claims["aud"] == AUDIENCE
    assert claims["azp"] == "dev-client"
    assert claims["gty"] == "client-credentials"
    assert claims["scope"] == "read:messages"
    assert before <= claims["iat"] <= int(time.time())
    assert claims["exp"] == claims["iat"] + 86400


def test_form_token_request(issuer: Issuer) -> None:
    """The same request form-encoded (client_secret_post) works."""
    status, _, body = _token_form(issuer.base, list(_creds().items()))
    assert status == 200, body
    _, claims = _verify(issuer.base, body["access_token"], issuer.base + "/")
    assert claims["sub"] == "dev-client@clients"


def test_http_basic_client_authentication(issuer: Issuer) -> None:
    """client_secret_basic, as advertised in discovery, works too."""
    basic = base64.b64encode(b"dev-client:dev-secret").decode()
    fields = [("audience", AUDIENCE), ("grant_type", GRANT)]
    status, _, body = _token_form(issuer.base, fields, {"Authorization": f"Basic {basic}"})
    assert status == 200, body
    assert body["scope"] == "read:messages"


def test_noperm_client_gets_token_without_scope(issuer: Issuer) -> None:
    """A client with no granted scopes gets a valid token and no scope claim at all."""
    status, _, body = _token_json(issuer.base, _creds("dev-client-noperm"))
    assert status == 200, body
    assert "scope" not in body
    _, claims = _verify(issuer.base, body["access_token"], issuer.base + "/")
    assert "scope" not in claims
    assert claims["sub"] == "dev-client-noperm@clients"


@pytest.mark.parametrize(
    ("client", "secret"),
    [("dev-client", "wrong"), ("nobody", "dev-secret"), ("dev-client", "")],
)
def test_bad_client_credentials_are_401_invalid_client(issuer: Issuer, client: str, secret: str) -> None:
    """Wrong secret, unknown client and missing secret all answer 401 invalid_client."""
    status, headers, body = _token_json(issuer.base, _creds(client, secret))
    assert status == 401
    assert body["error"] == "invalid_client"
    assert "WWW-Authenticate" in headers


def test_credentials_in_query_string_are_ignored(issuer: Issuer) -> None:
    """Secrets in the URL are not accepted (RFC 6749 section 2.3.1)."""
    query = urllib.parse.urlencode({"client_id": "dev-client", "client_secret": "dev-secret"})
    data = urllib.parse.urlencode({"audience": AUDIENCE, "grant_type": GRANT}).encode()
    url = f"{issuer.base}/oauth/token?{query}"
    headers = {"Content-Type": "application/x-www-form-urlencoded"}
    status, _, body = _request(url, data, headers, "POST")
    assert status == 401 and body["error"] == "invalid_client"


@pytest.mark.parametrize(
    ("extra", "description"),
    [
        ({"audience": "https://unknown.example"}, "Service not found: https://unknown.example"),
        ({"audience": ""}, "No audience parameter was provided"),
        ({"audience": 'https://x"\\\n'}, "Service not found: https://x???"),
    ],
)
def test_unknown_or_missing_audience_is_403_access_denied(
    issuer: Issuer, extra: dict[str, str], description: str
) -> None:
    """Like Auth0: an audience with no API behind it is 403 access_denied."""
    status, _, body = _token_json(issuer.base, _creds(**extra))
    assert status == 403
    assert body["error"] == "access_denied"
    assert body["error_description"].startswith(description)


def test_scope_not_granted_is_403(issuer: Issuer) -> None:
    """Asking for a scope the client was not granted is refused, as Auth0 does."""
    status, _, body = _token_json(issuer.base, _creds(scope="read:messages write:messages"))
    assert status == 403
    assert body == {
        "error": "access_denied",
        "error_description": "Client has not been granted scopes: write:messages",
    }
    status, _, body = _token_json(issuer.base, _creds("dev-client-noperm", scope="read:messages"))
    assert status == 403 and body["error"] == "access_denied"


@pytest.mark.parametrize("grant_type", ["password", "authorization_code", "refresh_token", ""])
def test_unsupported_or_missing_grant_type_is_400(issuer: Issuer, grant_type: str) -> None:
    """Only client_credentials is served."""
    status, _, body = _token_json(issuer.base, _creds(grant_type=grant_type))
    assert status == 400
    assert body["error"] == "unsupported_grant_type"


@pytest.mark.parametrize(
    ("data", "content_type"),
    [
        (b"[1, 2]", "application/json"),
        (b"{not json", "application/json"),
        (json.dumps({**_creds(), "scope": ["read:messages"]}).encode(), "application/json"),
        (
            urllib.parse.urlencode([*_creds().items(), ("audience", "https://b")]).encode(),
            "application/x-www-form-urlencoded",
        ),
    ],
)
def test_malformed_bodies_are_400_invalid_request(issuer: Issuer, data: bytes, content_type: str) -> None:
    """Non-object JSON, non-string values and repeated parameters are rejected, never a 5xx."""
    headers = {"Content-Type": content_type}
    status, _, body = _request(issuer.base + "/oauth/token", data, headers, "POST")
    assert status == 400
    assert body["error"] == "invalid_request"


def test_oversized_body_is_413(issuer: Issuer) -> None:
    """Bodies are bounded."""
    data = json.dumps({**_creds(), "pad": "x" * 100_000}).encode()
    status, _, body = _request(
        issuer.base + "/oauth/token", data, {"Content-Type": "application/json"}, "POST"
    )
    assert status == 413
    assert body["error"] == "invalid_request"


def test_token_endpoint_is_post_only(issuer: Issuer) -> None:
    """GET on the token endpoint is 405."""
    assert _get(issuer.base + "/oauth/token")[0] == 405


def test_healthz(issuer: Issuer) -> None:
    """Liveness answers 200."""
    assert _get(issuer.base + "/healthz")[:3:2] == (200, {"status": "ok"})


def test_log_marks_development_and_never_leaks_secrets_or_tokens(issuer: Issuer) -> None:
    """Startup line says DEVELOPMENT; no secret or token ever reaches the log."""
    _, _, body = _token_json(issuer.base, _creds())
    _token_json(issuer.base, _creds(secret="wrong-secret-value"))
    time.sleep(0.2)
    log = issuer.log()
    assert "DEVELOPMENT ISSUER - not for production" in log
    assert "issued access token client_id=dev-client" in log
    assert body["access_token"] not in log
    assert body["access_token"].split(".")[2] not in log
    assert "dev-secret" not in log and "wrong-secret-value" not in log


def test_custom_configuration(custom: tuple[Issuer, RSAKey]) -> None:
    """DEV_ISSUER_URL, audiences, TTL, clients and key file all take effect."""
    proc, key = custom
    issuer_id = "http://issuer.example:3011/"
    _, _, doc = _get(proc.base + "/.well-known/openid-configuration")
    assert doc["issuer"] == issuer_id
    assert doc["jwks_uri"] == issuer_id + ".well-known/jwks.json"
    assert doc["token_endpoint"] == issuer_id + "oauth/token"
    _, _, jwks = _get(proc.base + "/.well-known/jwks.json")
    assert jwks["keys"][0]["kid"] == key.thumbprint()
    assert jwks["keys"][0]["n"] == key.as_dict()["n"]

    status, _, body = _token_json(proc.base, _creds("svc", "s3cret"))
    assert status == 200, body
    assert body["expires_in"] == 600
    assert body["scope"] == "read:messages write:messages"
    header, claims = _verify(proc.base, body["access_token"], issuer_id)
    assert header["kid"] == key.thumbprint()
    assert claims["exp"] - claims["iat"] == 600
    # The default clients are replaced, not merged.
    assert _token_json(proc.base, _creds())[0] == 401


def test_plain_http_by_service_name(custom: tuple[Issuer, RSAKey]) -> None:
    """Reached as http://issuer:3011 (compose), not loopback, the token endpoint still works."""
    proc, _ = custom
    data = json.dumps(_creds("svc", "s3cret")).encode()
    headers = {"Content-Type": "application/json", "Host": "issuer.example:3011"}
    status, _, body = _request(proc.base + "/oauth/token", data, headers, "POST")
    assert status == 200, body


def test_scope_narrowing(custom: tuple[Issuer, RSAKey]) -> None:
    """Requesting a subset of the granted scopes yields exactly that subset."""
    proc, _ = custom
    status, _, body = _token_json(proc.base, _creds("svc", "s3cret", scope="write:messages"))
    assert status == 200, body
    assert body["scope"] == "write:messages"
    _, claims = _verify(proc.base, body["access_token"], "http://issuer.example:3011/")
    assert claims["scope"] == "write:messages"


def test_second_audience_and_per_client_audiences(custom: tuple[Issuer, RSAKey]) -> None:
    """A client may be limited to some audiences; others get Auth0's client-grant 403."""
    proc, _ = custom
    status, _, body = _token_json(proc.base, _creds("only-b", "b-secret", audience="https://b.example"))
    assert status == 200, body
    _, claims = _verify(proc.base, body["access_token"], "http://issuer.example:3011/", "https://b.example")
    assert claims["aud"] == "https://b.example"
    status, _, body = _token_json(proc.base, _creds("only-b", "b-secret"))
    assert status == 403
    assert body["error_description"].startswith("Client is not authorized to access")


def test_sigterm_exits_cleanly(tmp_path: Path) -> None:
    """SIGTERM stops the issuer promptly with status 0."""
    proc = _start(tmp_path)
    started = time.monotonic()
    assert proc.stop() == 0
    assert time.monotonic() - started < 5
    assert "shutting down" in proc.log()


@pytest.mark.parametrize(
    ("env", "variable"),
    [
        ({"DEV_ISSUER_TOKEN_TTL": "soon"}, "DEV_ISSUER_TOKEN_TTL"),
        ({"DEV_ISSUER_CLIENTS": "{"}, "DEV_ISSUER_CLIENTS"),
        ({"DEV_ISSUER_CLIENTS": '{"a": {"scopes": []}}'}, "DEV_ISSUER_CLIENTS"),
        ({"DEV_ISSUER_URL": "ftp://x/"}, "DEV_ISSUER_URL"),
        ({"DEV_ISSUER_KEY_FILE": "/nonexistent/key.pem"}, "DEV_ISSUER_KEY_FILE"),
        ({"DEV_ISSUER_JWKS_MAX_AGE": "-1"}, "DEV_ISSUER_JWKS_MAX_AGE"),
    ],
)
def test_bad_configuration_exits_with_one_line(env: dict[str, str], variable: str) -> None:
    """Misconfiguration is one clear line naming the variable and exit status 2, no traceback."""
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("DEV_ISSUER_")}
    full_env.update({"DEV_ISSUER_PORT": str(free_port()), **env})
    done = subprocess.run(
        [sys.executable, "-m", "dev_issuer"],
        cwd=REPO,
        env=full_env,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert done.returncode == 2
    assert done.stderr.count("\n") == 1
    assert variable in done.stderr
    assert "Traceback" not in done.stderr + done.stdout


def test_settings_defaults() -> None:
    """With no variables the contract's defaults apply."""
    settings = IssuerSettings.from_env({})
    assert (settings.host, settings.port) == ("127.0.0.1", 3011)
    assert settings.issuer == "http://127.0.0.1:3011/"
    assert settings.audiences == (AUDIENCE,)
    assert settings.token_ttl == 86400
    assert {c.client_id: c.scopes for c in settings.clients} == {
        "dev-client": ("read:messages",),
        "dev-client-noperm": (),
    }


def test_settings_reject_small_key(tmp_path: Path) -> None:
    """Keys under 2048 bits are refused before joserfc would warn about them."""
    small = rsa.generate_private_key(public_exponent=65537, key_size=1024)
    pem = tmp_path / "small.pem"
    _write_pem(pem, small, serialization.PrivateFormat.TraditionalOpenSSL)
    with pytest.raises(IssuerConfigError, match="2048"):
        SigningKey.from_pem_file(str(pem))


def test_log_format_json_gives_the_apis_line_shape(tmp_path: Path) -> None:
    """LOG_FORMAT=json: every line a JSON object with the API's keys; access lines as http_request."""
    proc = _start(tmp_path, {"LOG_FORMAT": "json"})
    try:
        _, _, body = _token_json(proc.base, _creds())
        _get(proc.base + "/healthz?probe=1")
        time.sleep(0.2)
    finally:
        assert proc.stop() == 0, proc.log()
    lines = proc.log().splitlines()
    records = [json.loads(line) for line in lines]
    assert records and all(isinstance(r, dict) for r in records)
    for record in records:
        assert {"event", "level", "logger", "timestamp"} <= set(record), record
    access = [r for r in records if r["event"] == "http_request"]
    assert {"method": "GET", "path": "/healthz", "status": 200}.items() <= access[-1].items()
    assert any(r["path"] == "/oauth/token" and r["method"] == "POST" for r in access)
    assert body["access_token"] not in proc.log() and "dev-secret" not in proc.log()
