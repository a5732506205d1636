"""A minimal OIDC issuer for the bench: discovery and a JWKS, with per-client fetch counts."""

from __future__ import annotations

import argparse
import json
import threading
from collections import Counter
from http.server import BaseHTTPRequestHandler
from http.server import ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs
from urllib.parse import urlsplit


class _Handler(BaseHTTPRequestHandler):
    server: IssuerServer
    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:
        """Serve discovery, the JWKS (counting fetches by ?client=) and the counters."""
        url = urlsplit(self.path)
        if url.path == "/.well-known/openid-configuration":
            self._send(self.server.discovery)
        elif url.path == "/.well-known/jwks.json":
            client = parse_qs(url.query).get("client", ["untagged"])[0]
            with self.server.lock:
                self.server.fetches[client] += 1
            self._send(self.server.jwks)
        elif url.path == "/stats":
            with self.server.lock:
                self._send(json.dumps(dict(self.server.fetches)).encode())
        elif url.path == "/healthz":
            self._send(b'{"status":"ok"}')
        else:
            self.send_error(404)

    def _send(self, body: bytes) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "public, max-age=600")
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        """Stay quiet: the bench reads counters, not logs."""


class IssuerServer(ThreadingHTTPServer):
    """Serves one issuer's discovery document and JWKS on loopback."""

    daemon_threads = True

    def __init__(self, port: int, issuer: str, jwks_path: Path) -> None:
        super().__init__(("127.0.0.1", port), _Handler)
        self.lock = threading.Lock()
        self.fetches: Counter[str] = Counter()
        self.jwks = jwks_path.read_bytes()
        self.discovery = json.dumps(
            {
                "issuer": issuer,
                "jwks_uri": f"{issuer}.well-known/jwks.json",
                "id_token_signing_alg_values_supported": ["RS256"],
                "token_endpoint": f"{issuer}oauth/token",
                "response_types_supported": ["token"],
                "subject_types_supported": ["public"],
            }
        ).encode()


def main() -> None:
    """Run the bench issuer until terminated."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--issuer", required=True)
    parser.add_argument("--jwks", type=Path, required=True)
    args = parser.parse_args()
    server = IssuerServer(args.port, args.issuer, args.jwks)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()


if __name__ == "__main__":
    main()
