"""Command-line client of the development issuer: tokens and DPoP request headers (development only).

    python -m dev_issuer.client token [--scope SCOPES] [--claim NAME=VALUE ...] [--audience AUD]
                                      [--cert client.pem] [--acr ACR] [--auth-time WHEN]
    python -m dev_issuer.client [--key FILE] [--issuer URL] METHOD URL

``token`` prints an access token with the scopes and claims asked for (the issuer's ``/dev/token``
endpoint; the default clients stay as they are), ready for ``TOKEN=$(...)``; an error the issuer
answers (for example ``Service not found`` for an audience it does not serve) is printed as one line
on stderr, exit status 1. ``METHOD URL`` gets a DPoP-bound token (client-credentials grant with a
DPoP proof, RFC 9449 §5) and prints ``Authorization: DPoP <token>`` and ``DPoP: <proof>`` for
METHOD and URL, ready for ``curl -H @file``. ``--key`` keeps the EC P-256 key in a PEM file
(created when missing) so that several invocations act as one client; ``--token`` reuses a token
instead of fetching one. ``--cert`` binds the token to a client certificate (RFC 8705 §3.1),
``--acr`` and ``--auth-time`` set the claims step-up authentication (RFC 9470) checks.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import json
import os
import secrets
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from joserfc.jwk import ECKey
from joserfc.jws import JWSRegistry

from service.jose.cert_header import certificate_thumbprint

_TIMEOUT = 10
_DEFAULT_ISSUER = "http://127.0.0.1:3011/"


def make_proof(
    key: Any,
    method: str,
    url: str,
    *,
    access_token: str | None = None,
    nonce: str | None = None,
    alg: str = "ES256",
    header: dict[str, Any] | None = None,
    claims: dict[str, Any] | None = None,
) -> str:
    """Sign a DPoP proof (RFC 9449 §4.2); ``header``/``claims`` override or add members."""
    protected: dict[str, Any] = {"typ": "dpop+jwt", "alg": alg, "jwk": key.as_dict(private=False)}
    protected.update(header or {})
    body: dict[str, Any] = {
        "jti": secrets.token_urlsafe(16),
        "htm": method,
        "htu": url,
        "iat": int(time.time()),
    }
    if access_token is not None:
        digest = hashlib.sha256(access_token.encode("ascii")).digest()
        body["ath"] = _b64(digest)
    if nonce is not None:
        body["nonce"] = nonce
    body.update(claims or {})
    signing_input = f"{_b64json(protected)}.{_b64json(body)}"
    # The algorithm model signs directly: joserfc's registry warns on some names (EdDSA), and
    # a test may ask for an algorithm or header the registry would refuse.
    signature = JWSRegistry.algorithms[alg].sign(signing_input.encode("ascii"), key)
    return f"{signing_input}.{_b64(signature)}"


def _b64(data: bytes) -> str:
    """Unpadded base64url (RFC 7515 §2)."""
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _b64json(value: dict[str, Any]) -> str:
    """A JSON object as a base64url JWS segment."""
    return _b64(json.dumps(value, separators=(",", ":")).encode())


def load_key(path: Path | None) -> ECKey:
    """Load the client's EC P-256 key from a PEM file, creating it (mode 0600) when missing."""
    if path is not None and path.exists():
        return ECKey.import_key(path.read_bytes())
    key = ECKey.generate_key("P-256", private=True)
    if path is not None:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as out:
            out.write(key.as_pem(private=True))
    return key


class IssuerError(Exception):
    """The issuer could not be reached or refused; the message is one line for the user."""


def post_json(url: str, body: dict[str, Any], headers: dict[str, str] | None = None) -> dict[str, Any]:
    """POST a JSON body and return the JSON answer; raise IssuerError with the issuer's reason."""
    request = urllib.request.Request(
        url,
        data=json.dumps(body).encode(),
        method="POST",
        headers={"Content-Type": "application/json", **(headers or {})},
    )
    try:
        with urllib.request.urlopen(request, timeout=_TIMEOUT) as response:
            answer = json.loads(response.read())
    except urllib.error.HTTPError as exc:
        with exc:
            raise IssuerError(f"{url} answered {exc.code}: {_oauth_error(exc)}") from None
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise IssuerError(f"cannot reach {url}: {reason} (is the dev issuer running?)") from None
    except ValueError:
        raise IssuerError(f"{url} answered something other than JSON") from None
    if not isinstance(answer, dict) or not isinstance(answer.get("access_token"), str):
        raise IssuerError(f"{url} answered without an access_token")
    return answer


def _oauth_error(exc: urllib.error.HTTPError) -> str:
    """The RFC 6749 §5.2 ``error: error_description`` of an error answer, else its status text."""
    try:
        body = json.loads(exc.read(64 * 1024))
    except (ValueError, OSError):
        return str(exc.reason)
    if not isinstance(body, dict) or "error" not in body:
        return str(exc.reason)
    return f"{body['error']}: {body.get('error_description', '')}".rstrip(": ")


def fetch_token(
    key: ECKey, issuer: str, client_id: str, client_secret: str, audience: str
) -> dict[str, Any]:
    """Ask the issuer's token endpoint for a DPoP-bound token (RFC 9449 §5)."""
    token_url = issuer.rstrip("/") + "/oauth/token"
    body = {
        "grant_type": "client_credentials",
        "client_id": client_id,
        "client_secret": client_secret,
        "audience": audience,
    }
    return post_json(token_url, body, {"DPoP": make_proof(key, "POST", token_url)})


def mint_token(
    issuer: str,
    *,
    client_id: str = "dev-client",
    client_secret: str = "dev-secret",
    audience: str = "https://api.dev.local",
    scope: str | None = None,
    claims: dict[str, Any] | None = None,
    expires_in: int | None = None,
    key: ECKey | None = None,
) -> dict[str, Any]:
    """Ask the issuer's ``/dev/token`` for a token with these scopes and claims (DPoP-bound with key)."""
    url = issuer.rstrip("/") + "/dev/token"
    body: dict[str, Any] = {
        "client_id": client_id,
        "client_secret": client_secret,
        "audience": audience,
        "claims": claims or {},
    }
    if scope is not None:
        body["scope"] = scope
    if expires_in is not None:
        body["expires_in"] = expires_in
    headers = {} if key is None else {"DPoP": make_proof(key, "POST", url)}
    return post_json(url, body, headers)


def claim_value(text: str) -> Any:
    """A ``--claim`` value: JSON when it parses as JSON (numbers, booleans, lists), else the text."""
    try:
        return json.loads(text)
    except ValueError:
        return text


def _claim(text: str) -> tuple[str, Any]:
    """Parse one ``NAME=VALUE``."""
    name, sep, value = text.partition("=")
    if not sep or not name:
        raise argparse.ArgumentTypeError(f"expected NAME=VALUE, got {text!r}")
    return name, claim_value(value)


def token_parser() -> argparse.ArgumentParser:
    """The ``token`` command's options."""
    parser = argparse.ArgumentParser(
        prog="python -m dev_issuer.client token",
        description="Print an access token from the development issuer with the scopes and "
        "claims given (its /dev/token endpoint).",
    )
    parser.add_argument(
        "--scope",
        action="append",
        help='space-delimited permissions, e.g. "read:orders write:orders" (repeatable; '
        'default: the client\'s own, read:messages for dev-client; "" for none)',
    )
    parser.add_argument(
        "--claim",
        action="append",
        type=_claim,
        default=[],
        metavar="NAME=VALUE",
        help="a claim to add, e.g. org_id=org_123 or roles='[\"admin\"]' (VALUE is JSON when it "
        "parses as JSON, else a string; repeatable; sub, azp, nbf may be replaced)",
    )
    parser.add_argument(
        "--audience",
        default=os.environ.get("AUTH0_AUDIENCE") or "https://api.dev.local",
        help="the aud claim (default: $AUTH0_AUDIENCE, else https://api.dev.local)",
    )
    parser.add_argument("--issuer", default=_DEFAULT_ISSUER, help=f"default {_DEFAULT_ISSUER}")
    parser.add_argument("--client-id", default="dev-client")
    parser.add_argument("--client-secret", default="dev-secret")
    parser.add_argument("--expires-in", type=int, metavar="SECONDS", help="token lifetime")
    parser.add_argument(
        "--key",
        type=Path,
        help="bind the token to this DPoP key (PEM file, created when missing); then "
        "`python -m dev_issuer.client --key FILE --token TOKEN METHOD URL` prints its proofs",
    )
    parser.add_argument(
        "--cert",
        type=Path,
        help="bind the token to this client certificate (PEM file): cnf x5t#S256, RFC 8705 §3.1",
    )
    parser.add_argument("--acr", help="the acr claim (RFC 9470 step-up), e.g. urn:example:mfa")
    parser.add_argument(
        "--auth-time",
        type=_auth_time,
        metavar="WHEN",
        help="the auth_time claim: 'now', -SECONDS (that long ago) or a Unix time",
    )
    parser.add_argument("--json", action="store_true", help="print the whole token response")
    return parser


def _auth_time(text: str) -> int:
    """``--auth-time``: 'now', -SECONDS ago, or an absolute Unix time."""
    if text == "now":
        return int(time.time())
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected 'now', -SECONDS or a Unix time, got {text!r}") from None
    return int(time.time()) + value if value <= 0 else value


def certificate_claims(claims: dict[str, Any], cert: Path) -> dict[str, Any]:
    """``claims`` with ``cnf["x5t#S256"]`` of the PEM certificate in ``cert`` (merged into any cnf)."""
    thumbprint = certificate_thumbprint(cert.read_text())
    cnf = claims.get("cnf")
    return {**claims, "cnf": {**(cnf if isinstance(cnf, dict) else {}), "x5t#S256": thumbprint}}


def token_main(argv: list[str]) -> int:
    """The ``token`` command: print one access token (or the token response as JSON)."""
    parser = token_parser()
    args = parser.parse_args(argv)
    scope = None if args.scope is None else " ".join(args.scope)
    claims = dict(args.claim)
    if args.acr is not None:
        claims["acr"] = args.acr
    if args.auth_time is not None:
        claims["auth_time"] = args.auth_time
    if args.cert is not None:
        try:
            claims = certificate_claims(claims, args.cert)
        except (OSError, ValueError) as exc:
            parser.error(f"--cert {args.cert}: not a PEM certificate ({exc})")
    try:
        answer = mint_token(
            args.issuer,
            client_id=args.client_id,
            client_secret=args.client_secret,
            audience=args.audience,
            scope=scope,
            claims=claims,
            expires_in=args.expires_in,
            key=None if args.key is None else load_key(args.key),
        )
    except IssuerError as exc:
        print(f"dev_issuer.client: {exc}", file=sys.stderr)
        return 1
    print(json.dumps(answer) if args.json else answer["access_token"])
    return 0


def main(argv: list[str] | None = None) -> int:
    """Run ``token`` or print the DPoP request headers (with --json: token and headers as JSON)."""
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["token"]:
        return token_main(argv[1:])
    parser = argparse.ArgumentParser(prog="python -m dev_issuer.client", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("method", help="HTTP method the proof is for, e.g. GET")
    parser.add_argument("url", help="the URL the request goes to, e.g. http://127.0.0.1:3010/api/private")
    parser.add_argument("--key", type=Path, help="PEM file of the client key (created when missing)")
    parser.add_argument("--issuer", default=os.environ.get("DPOP_ISSUER", _DEFAULT_ISSUER))
    parser.add_argument("--client-id", default="dev-client")
    parser.add_argument("--client-secret", default="dev-secret")
    parser.add_argument("--audience", default=os.environ.get("AUTH0_AUDIENCE") or "https://api.dev.local")
    parser.add_argument("--token", help="a DPoP-bound access token to use instead of fetching one")
    parser.add_argument("--nonce", help="the server nonce from a DPoP-Nonce response header")
    parser.add_argument("--json", action="store_true", help="print token and headers as JSON")
    args = parser.parse_args(argv)

    key = load_key(args.key)
    token = args.token
    if token is None:
        try:
            token = fetch_token(key, args.issuer, args.client_id, args.client_secret, args.audience)[
                "access_token"
            ]
        except IssuerError as exc:
            print(f"dev_issuer.client: {exc}", file=sys.stderr)
            return 1
    proof = make_proof(key, args.method.upper(), args.url, access_token=token, nonce=args.nonce)
    if args.json:
        print(json.dumps({"access_token": token, "authorization": f"DPoP {token}", "dpop": proof}))
    else:
        print(f"Authorization: DPoP {token}\nDPoP: {proof}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
