"""Serve a WSGI app on loopback from a daemon thread, able to go down and come back on one port."""

from __future__ import annotations

import threading
from typing import Any

from werkzeug.serving import BaseWSGIServer
from werkzeug.serving import WSGIRequestHandler
from werkzeug.serving import make_server

LOOPBACK = "127.0.0.1"


class _QuietHandler(WSGIRequestHandler):
    """No access lines, and one request per connection so a stopped server refuses the next one."""

    protocol_version = "HTTP/1.0"

    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        """Stay quiet: test and benchmark output is for failures."""


class BackgroundServer:
    """A threaded werkzeug server in a daemon thread; stop() closes the socket, start() reopens."""

    def __init__(self, app: Any, *, host: str = LOOPBACK, port: int = 0) -> None:
        """Remember what to serve; port 0 picks a free port at the first start and keeps it."""
        self.app = app
        self.host = host
        self.port = port
        self._server: BaseWSGIServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def is_up(self) -> bool:
        """Return True while the listening socket is open."""
        return self._server is not None

    def start(self) -> BackgroundServer:
        """Listen (raising OSError if the port is taken) and serve in a daemon thread."""
        if self._server is not None:
            return self
        try:
            server = make_server(
                self.host, self.port, self.app, threaded=True, request_handler=_QuietHandler
            )
        except SystemExit:
            # werkzeug reports a busy address on stderr and exits; a caller in-process wants an error.
            raise OSError(f"cannot listen on {self.host}:{self.port}") from None
        self.port = server.server_port
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
