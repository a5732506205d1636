"""A DPoP client for the walk-through: prints the headers of one DPoP request (development only).

    python -m dev_issuer.client [--key FILE] [--issuer URL] METHOD URL

gets a DPoP-bound token from the development issuer (client-credentials grant with a DPoP proof,
RFC 9449 §5) and prints ``Authorization: DPoP <token>`` and ``DPoP: <proof>`` for METHOD and URL,
ready for ``curl -H @file``. ``--key`` keeps the EC P-256 key in a PEM file (created when missing)
so that several invocations act as one client; ``--token`` reuses a token instead of fetching one.
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

_TIMEOUT = 10


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


def fetch_token(
    key: ECKey, issuer: str, client_id: str, client_secret: str, audience: str
) -> dict[str, Any]:
    """Ask the issuer's token endpoint for a DPoP-bound token (RFC 9449 §5)."""
    token_url = issuer.rstrip("/") + "/oauth/token"
    body = json.dumps(
        {
            "grant_type": "client_credentials",
            "client_id": client_id,
            "client_secret": client_secret,
            "audience": audience,
        }
    ).encode()
    request = urllib.request.Request(
        token_url,
        data=body,
        method="POST",
        headers={"Content-Type": "application/json", "DPoP": make_proof(key, "POST", token_url)},
    )
    with urllib.request.urlopen(request, timeout=_TIMEOUT) as response:
        return json.loads(response.read())


def main(argv: list[str] | None = None) -> int:
    """Print the DPoP request headers (or, with --json, the token and headers as JSON)."""
    parser = argparse.ArgumentParser(prog="python -m dev_issuer.client", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("method", help="HTTP method the proof is for, e.g. GET")
    parser.add_argument("url", help="the URL the request goes to, e.g. http://127.0.0.1:3010/api/private")
    parser.add_argument("--key", type=Path, help="PEM file of the client key (created when missing)")
    parser.add_argument("--issuer", default=os.environ.get("DPOP_ISSUER", "http://127.0.0.1:3011/"))
    parser.add_argument("--client-id", default="dev-client")
    parser.add_argument("--client-secret", default="dev-secret")
    parser.add_argument("--audience", default="https://api.dev.local")
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
        except (urllib.error.URLError, OSError, ValueError, KeyError) as exc:
            print(f"dev_issuer.client: cannot get a token from {args.issuer}: {exc}", file=sys.stderr)
            return 1
    proof = make_proof(key, args.method.upper(), args.url, access_token=token, nonce=args.nonce)
    if args.json:
        print(json.dumps({"access_token": token, "authorization": f"DPoP {token}", "dpop": proof}))
    else:
        print(f"Authorization: DPoP {token}\nDPoP: {proof}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
