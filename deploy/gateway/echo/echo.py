"""A sample upstream for gateway mode: answers every request with the method, path and headers it saw.

Standard library only, so the stock ``python`` image runs it: ``python echo.py [PORT]`` (default
8081, all interfaces). ``GET /healthz`` answers 200 for health checks. Development only.
"""

from __future__ import annotations

import json
import signal
import sys
from http.server import BaseHTTPRequestHandler
from http.server import ThreadingHTTPServer


class Echo(BaseHTTPRequestHandler):
    """Answer any method with a JSON echo of the request line and headers."""

    protocol_version = "HTTP/1.1"

    def _echo(self) -> None:
        """Send {"method", "path", "headers"}; header names lower-cased, repeated ones joined."""
        length = int(self.headers.get("Content-Length") or 0)
        if length:
            self.rfile.read(min(length, 1 << 20))
        headers: dict[str, str] = {}
        for name, value in self.headers.items():
            key = name.lower()
            headers[key] = f"{headers[key]}, {value}" if key in headers else value
        body = json.dumps({"method": self.command, "path": self.path, "headers": headers}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    do_GET = do_HEAD = do_POST = do_PUT = do_PATCH = do_DELETE = do_OPTIONS = _echo

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 (the stdlib's name)
        """One line per request on stderr, without headers (they may carry tokens)."""
        sys.stderr.write(f"echo {self.command} {self.path.partition('?')[0]}\n")


def main() -> None:
    """Serve on the port given (default 8081) on all interfaces until interrupted."""
    port = int(sys.argv[1]) if len(sys.argv) > 1 else 8081
    host = sys.argv[2] if len(sys.argv) > 2 else "0.0.0.0"
    server = ThreadingHTTPServer((host, port), Echo)
    server.daemon_threads = True
    # As PID 1 in a container, SIGTERM has no default action: exit on it (compose's stop).
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()


if __name__ == "__main__":
    main()
